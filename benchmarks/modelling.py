"""Run fusion and every modelling pipeline on a real corpus, for both split strategies.

    python benchmarks/modelling.py --corpus-path ../shared/data/ravdess

In a scratch copy of the project: makes the features once (`--to-outputs` the feature streams;
the CNN defaults to the offline SqueezeNet with its ImageNet weights, as ImageNet weights for the
other backbones cannot be downloaded here), fuses them, then runs `kedro run --pipelines=modelling`
with the random and with the speaker-independent split. Reports each node's time, the peak
memory of the process tree (PSS) and the summary table of every variant and classifier.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _harness import marked_sections, measured_kedro_run, scratch_project


def report(title: str, figures: dict) -> None:
    print(f"\n{title}: {figures['wall_s']:.1f} s wall, {figures['pipeline_s']:.1f} s pipeline, "
          f"peak {figures['peak_pss_mb']:.0f} MB PSS")
    for node, seconds in sorted(figures["node_s"].items(), key=lambda item: -item[1]):
        print(f"  {node:<48} {seconds:7.1f} s")


def summary_of(project: Path, models: list[str], strategy: str) -> pd.DataFrame:
    """The summary table's rows for models trained through --namespaces (the summary node is not
    in their namespaces), from their metrics files."""
    rows = []
    for model in models:
        variant, classifier = model.split(".")
        scores = json.loads((project / f"data/08_reporting/metrics/{variant}/{classifier}.json").read_text())
        rows.append({"variant": variant, "classifier": classifier, "split": strategy,
                     "width": sum(block["width"] for block in scores["features"]),
                     **{key: scores[key] for key in ("folds", "test_clips", "accuracy",
                                                     "unweighted_average_recall", "macro_f1")}})
    return pd.DataFrame(rows).sort_values("unweighted_average_recall", ascending=False)


STRATEGY_TITLES = {"random": "Random split (stratified by emotion, test 30%)",
                   "speaker_independent": "Speaker-independent split (folds of speakers; every clip tested "
                                          "once)"}


def results_page(results: dict, meta: dict, args: argparse.Namespace) -> str:
    """docs/results.md: each strategy's summary table, with the command, backbone and run figures."""
    command = " ".join(["python benchmarks/modelling.py", f"--corpus-path {args.corpus_path}",
                        *([f"--statistics {' '.join(args.statistics)}"] if args.statistics else []),
                        f"--markdown {args.markdown}"])
    lines = ["# Results", "",
             "Written by", "", "```bash", command, "```", "",
             f"on the corpus at `{args.corpus_path}` (reader `{args.reader}`). CNN stream: "
             f"**{meta['backbone']}** with **{meta['weights']}** weights, {meta['width']:,} values per clip "
             f"(layer `{meta['layer']}`, "
             f"pooling `{meta['pooling']}`). MFCC and LPCC clip statistics: "
             f"{', '.join(args.statistics) if args.statistics else 'the project default'}. "
             "Scores are on test clips only; UAR is the unweighted average recall. "
             "[findings.md](findings.md) discusses them. Variants with the CNN stream are named `cnn`, "
             "`mfcc_cnn`, ... whatever the backbone; figures measured before that rename named them "
             "`ir`, `mfcc_ir`, ... (as `--env paper` still does).", "",
             "Every setting behind these scores was chosen on validation clips, never on test clips: "
             "the MFCC and LPCC statistics and the CNN's tapped layers, pooling and PCA size by "
             "`benchmarks/validation_choices.py` (tables in [validation_choices.md](validation_choices.md)); "
             "and, per model and fold, the SVM's `C`, the CNN block weight and the late-fusion weights "
             "by the project's own search (`search` in parameters_modelling.yml), whose choices are in "
             "the last column. In the speaker-independent folds the validation clips are the "
             "next fold's test speakers, never the fold's own.", ""]
    for strategy, result in results.items():
        if strategy not in STRATEGY_TITLES:
            continue
        summary = pd.DataFrame(result["summary"])
        run = result["run"]
        with_cnn = summary[summary["streams"].str.contains("transfer_features")]
        without_cnn = summary[~summary["streams"].str.contains("transfer_features")]
        best, classical = with_cnn.iloc[0], without_cnn.iloc[0]
        alone = summary[summary["variant"] == "cnn"]
        cnn_alone = alone.iloc[0] if len(alone) else None
        lines += [f"## {STRATEGY_TITLES[strategy]}", "",
                  f"{int(summary['test_clips'].iloc[0])} test clips in {int(summary['folds'].iloc[0])} "
                  f"fold(s). The modelling run took {run['wall_s']:.0f} s with a peak of "
                  f"{run['peak_pss_mb'] / 1024:.1f} GB "
                  "(PSS of the process tree) on the machine that wrote this page.", "",
                  f"Best model with the CNN stream: **{best.variant} {best.classifier}**, UAR "
                  f"{best.unweighted_average_recall:.3f}; best without it: **{classical.variant} "
                  f"{classical.classifier}**, UAR {classical.unweighted_average_recall:.3f} "
                  f"({100 * (best.unweighted_average_recall - classical.unweighted_average_recall):+.1f} "
                  "points)."
                  + (f" The CNN stream alone (cnn {cnn_alone.classifier}): "
                     f"accuracy {cnn_alone.accuracy:.3f}, UAR {cnn_alone.unweighted_average_recall:.3f}."
                     if cnn_alone is not None else ""), "",
                  "| variant | classifier | width | accuracy | UAR | macro F1 | reference | UAR gain | "
                  "McNemar p | chosen on validation clips |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {row.variant} | {row.classifier} | {row.width:,} | {row.accuracy:.3f} | "
                  f"{row.unweighted_average_recall:.3f} | {row.macro_f1:.3f} | "
                  + (f"{row.reference} | {100 * row.uar_gain:+.1f} | {row.mcnemar_p:.3g} | "
                     if isinstance(row.reference, str) and row.reference else "| | | ")
                  + f"{row.chosen_on_validation if isinstance(row.chosen_on_validation, str) else ''} |"
                  for row in summary.itertuples()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--backbone", default="squeezenet_v1_1")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--statistics", nargs="+", default=None,
                        help="MFCC and LPCC clip statistics (default: the project's)")
    parser.add_argument("--strategies", nargs="+", default=["random", "speaker_independent"])
    parser.add_argument("--only", nargs="+", metavar="VARIANT.CLASSIFIER",
                        help="train only these models (e.g. mfcc_cnn.svm), through `kedro run --namespaces`")
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder)")
    parser.add_argument("--skip-features", action="store_true", help="reuse the workdir's features")
    parser.add_argument("--json", help="also write the figures and tables to this file")
    parser.add_argument("--markdown", help="also write the results page (docs/results.md) to this file")
    args = parser.parse_args()

    local: dict = {"corpora": ["bench"], "corpus_sources": {"bench": {
        "reader": args.reader, "path": str(Path(args.corpus_path).resolve())}},
        "transfer_features": {"backbone": args.backbone, "weights": args.weights}}
    if args.statistics:
        local |= {"mfcc": {"statistics": args.statistics}, "lpcc": {"statistics": args.statistics}}
    project = scratch_project(local, args.workdir)
    results: dict = {}
    if not args.skip_features:
        results["features"] = measured_kedro_run(project, "--to-outputs=mfcc,lpcc,transfer_features")
        results["features"].pop("log")
        report("features (data_processing, feature_extraction, transfer_features)", results["features"])
    results["fusion"] = measured_kedro_run(project, "--pipelines=fusion")
    results["fusion"].pop("log")
    report("kedro run --pipelines=fusion", results["fusion"])
    meta = json.loads((project / "data/04_feature/transfer_features/metadata.json").read_text())
    for strategy in args.strategies:
        split = f"split.strategy={strategy}"
        if args.only:
            measured_kedro_run(project, "--nodes=split_clips", "--params", split)
            namespaces = ",".join(f"modelling.{model}" for model in args.only)
            figures = measured_kedro_run(project, f"--namespaces={namespaces}", "--params", split)
            summary = summary_of(project, args.only, strategy)
        else:
            figures = measured_kedro_run(project, "--pipelines=modelling", "--params", split)
            summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
        (project / f"modelling_{strategy}.log").write_text(figures.pop("log"))
        report(f"modelling, {strategy} split", figures)
        summary.to_csv(project / f"model_summary_{strategy}.csv", index=False)
        print(f"\n{strategy} split, CNN: {meta['backbone']} ({meta['weights']}), "
              f"{meta['width']} values per clip")
        print(summary[["variant", "classifier", "width", "folds", "test_clips", "accuracy",
                       "unweighted_average_recall", "macro_f1"]].to_string(index=False, float_format="%.3f"))
        results[strategy] = {"run": figures, "summary": summary.to_dict(orient="records")}
    print(f"\nscratch project: {project}")
    if args.markdown:
        page = Path(args.markdown)  # sections other benchmarks wrote into it stay
        page.write_text(results_page(results, meta, args) + marked_sections(page))
        print(f"wrote {args.markdown}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

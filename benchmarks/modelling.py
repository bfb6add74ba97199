"""Run fusion and every modelling pipeline on a real corpus, for both split strategies.

    python benchmarks/modelling.py --corpus-path ../shared/data/ravdess

In a scratch copy of the project: makes the features once (`--to-outputs` the feature streams;
the CNN defaults to the offline SqueezeNet with its ImageNet weights, as ImageNet weights for the
other backbones cannot be downloaded here), fuses them, then runs `kedro run --pipelines=modelling`
with the random and with the speaker-independent split. Reports each node's time, the peak
memory of the process tree (PSS) and the summary table of every variant and classifier. The
project's figures, with their intervals, come from benchmarks/evaluation.py.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
from _harness import measured_kedro_run, scratch_project


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
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

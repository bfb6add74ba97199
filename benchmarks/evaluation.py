"""The project's figures under its evaluation protocol: every choice made on validation clips,
fold by fold; every score with its 95% bootstrap interval.

    python benchmarks/evaluation.py --ravdess ../shared/data/ravdess --urdu ../shared/data/urdu \
        --workdir /tmp/evaluation --markdown docs/results.md

Runs the whole project (`kedro run`, default settings, the offline SqueezeNet as the CNN since
ImageNet weights for Inception-ResNet-V2 cannot be downloaded here) in scratch copies:

1. RAVDESS, speaker independent (6 folds of 4 actors);
2. RAVDESS, the random split (modelling again on the same features);
3. across corpora: trained on RAVDESS (acted English), tested on URDU (natural Urdu talk-show
   speech) on the emotions both have. URDU is read as a `folder` corpus whose `speaker_pattern`
   reads each clip's speaker from its file name (`SM1_F10_A010.wav`: speaker SM1, male).

For each: the model chosen on validation clips and its test scores, whether the CNN stream and
per-speaker normalisation help (the chosen models with and without, the interval of the
difference), and every model's row of model_summary.csv; with each run's time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from _harness import marked_sections, measured_kedro_run, scratch_project

BACKBONE = {"transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"}}
URDU_SPEAKER = r"^(?P<speaker>S(?P<gender>[MF])\d+)_"  # Angry/SM1_F10_A010.flac: male speaker 1
# Across corpora, the default variants and the same streams standardised per corpus: URDU's speakers
# each show mostly one emotion, so per-speaker statistics remove the emotion with the voice.
CORPUS_VARIANTS = {
    "compare_egemaps_mfcc_lpcc_corpus": {"streams": ["compare", "egemaps", "mfcc", "lpcc"],
                                         "speaker_normalisation": "corpus"},
    "compare_egemaps_mfcc_lpcc_cnn_corpus": {"streams": ["compare", "egemaps", "mfcc", "lpcc",
                                                         "transfer_features"],
                                             "speaker_normalisation": "corpus"}}


def run(project: Path, name: str, results: dict, *args: str) -> None:
    """`kedro run ARGS` in `project`; keeps its summary, answers, log and figures under `name`."""
    figures = measured_kedro_run(project, *args)
    (project.parent / f"{name}.log").write_text(figures.pop("log"))
    for table in ("model_summary", "model_answers"):
        shutil.copy(project / f"data/08_reporting/{table}.csv", project.parent / f"{name}_{table}.csv")
    results[name] = {"run": figures,
                     "summary": pd.read_csv(project / "data/08_reporting/model_summary.csv"),
                     "answers": pd.read_csv(project / "data/08_reporting/model_answers.csv")}
    print(f"\n{name}: {figures['wall_s']:.0f} s, peak {figures['peak_pss_mb']:.0f} MB")
    print(answers_text(results[name]["answers"]))


def interval(value: float, low: float, high: float, points: bool = False) -> str:
    """A score (or, with `points`, a difference in points) and its interval."""
    if points:
        return f"{100 * value:+.1f} points ({100 * low:+.1f} to {100 * high:+.1f})"
    return f"{value:.3f} ({low:.3f}–{high:.3f})"


def scored(row: pd.Series | tuple, score: str) -> str:
    """`score` of a model_summary or model_answers row with its interval."""
    values = row._asdict() if isinstance(row, tuple) else row
    return interval(values[score], values[f"{score}_low"], values[f"{score}_high"])


def answers_text(answers: pd.DataFrame) -> str:
    """The run's answers, one Markdown line each."""
    lines = []
    for row in answers.itertuples(index=False):
        scope = "all models" if row.scope == "all" else f"{row.scope} only"
        if row.question == "chosen model":
            lines.append(f"- **Chosen on validation clips ({scope})**: {row.model}; test UAR "
                         f"{scored(row, 'unweighted_average_recall')}, accuracy {scored(row, 'accuracy')}")
        else:
            lines.append(f"- {row.question[0].upper()}{row.question[1:]} ({scope}) {row.model} (UAR "
                         f"{row.unweighted_average_recall:.3f}) against {row.other} "
                         f"(UAR {row.other_uar:.3f}): "
                         f"{interval(row.gain, row.gain_low, row.gain_high, points=True)}, "
                         f"McNemar p = {row.mcnemar_p:.3g}: **{row.answer}**")
    return "\n".join(lines)


TITLES = {"speaker_independent": "RAVDESS, speaker independent (6 folds of 4 actors, every clip tested once)",
          "random": "RAVDESS, random split (stratified by emotion, 30% test)",
          "cross_corpus": "Across corpora: trained on RAVDESS, tested on URDU (angry, happy, neutral, sad)"}


def results_page(results: dict, command: str) -> str:
    lines = ["# Results", "", "Written by", "", "```bash", command, "```", "",
             "Default settings, CNN stream from the offline SqueezeNet with its ImageNet weights. UAR: "
             "unweighted average recall on test clips. Every choice behind a figure was made on "
             "validation clips: per fold, each model's search (SVM `C`, block and late-fusion weights) "
             "on that fold's validation clips, and which model is \"chosen\" on the same clips, fold by "
             "fold (docs/models.md, \"Which model is chosen\"); no mean over folds chose anything. "
             "Intervals are 95% bootstrap intervals, resampling speakers where the split keeps them "
             "apart and clips in the random split; a difference is resampled in pairs. The global "
             "defaults (taps, pooling, PCA size, statistics) come from "
             "[validation_choices.md](validation_choices.md).", ""]
    for name, result in results.items():
        summary, run = result["summary"], result["run"]
        timing = (run["note"] if "note" in run else f"`kedro run` took {run['wall_s']:.0f} s (peak "
                  f"{run['peak_pss_mb'] / 1024:.1f} GB, PSS of the process tree).")
        lines += [f"## {TITLES[name]}", "", f"{int(summary['test_clips'].max())} test clips. {timing}", "",
                  answers_text(result["answers"]), "",
                  "| model (best validation UAR first) | validation UAR | test UAR (95% interval) | "
                  "accuracy | macro F1 | gain over its reference (95% interval) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in summary.itertuples(index=False):
            gain = (f"{row.reference}: {interval(row.uar_gain, row.uar_gain_low, row.uar_gain_high, True)}"
                    if isinstance(row.reference, str) else "")
            lines.append(f"| {row.variant}.{row.classifier} | {row.validation_uar:.3f} | "
                         f"{scored(row, 'unweighted_average_recall')} | {row.accuracy:.3f} | "
                         f"{row.macro_f1:.3f} | {gain} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", default="../shared/data/ravdess")
    parser.add_argument("--urdu", default="../shared/data/urdu")
    parser.add_argument("--workdir", help="folder for the scratch projects (default: a new temp folder)")
    parser.add_argument("--splits", nargs="+", default=list(TITLES), choices=list(TITLES))
    parser.add_argument("--markdown", help="write the results page (docs/results.md) to this file")
    parser.add_argument("--collect", nargs="+", metavar="WORKDIR",
                        help="run nothing: write the page from these workdirs' results.json")
    parser.add_argument("--reuse-features", action="store_true",
                        help="train on the features already in the workdir (RAVDESS: its fused variants too)")
    args = parser.parse_args()

    if args.collect:
        results = {name: {"run": result["run"], **{table: pd.DataFrame(result[table])
                                                   for table in ("summary", "answers")}}
                   for workdir in args.collect
                   for name, result in json.loads(Path(workdir, "results.json").read_text()).items()}
        write_page(results, args)
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emofusion-evaluation-"))
    ravdess = {"ravdess": {"reader": "ravdess", "path": str(Path(args.ravdess).resolve())}}
    results: dict = {}
    within = [split for split in args.splits if split != "cross_corpus"]
    if within:
        project = scratch_project({"corpora": ["ravdess"], "corpus_sources": ravdess, **BACKBONE},
                                  str(workdir / "ravdess"))
        for done, split in enumerate(within):
            run(project, split, results, *(["--pipelines=modelling"] if done or args.reuse_features else []),
                "--params", f"split.strategy={split}")
            if done or args.reuse_features:
                figures = results[split]["run"]
                features = "the run above" if done else "an earlier run"
                figures["note"] = (f"On the stored features of {features}: `kedro run --pipelines=modelling` "
                                   f"took {figures['wall_s']:.0f} s (peak "
                                   f"{figures['peak_pss_mb'] / 1024:.1f} GB, PSS of the process tree).")
    if "cross_corpus" in args.splits:
        project = scratch_project({
            "corpora": ["ravdess", "urdu"], **BACKBONE,
            "corpus_sources": {**ravdess, "urdu": {"reader": "folder", "path": str(Path(args.urdu).resolve()),
                                                   "speaker_pattern": URDU_SPEAKER}},
            "split": {"strategy": "cross_corpus", "train_corpora": ["ravdess"], "test_corpora": ["urdu"]},
            "fusion_variants": CORPUS_VARIANTS}, str(workdir / "cross_corpus"))
        if args.reuse_features:
            fused = measured_kedro_run(project, "--pipelines=fusion")["wall_s"]
            run(project, "cross_corpus", results, "--pipelines=modelling")
            modelled = results["cross_corpus"]["run"]["wall_s"]
            results["cross_corpus"]["run"]["note"] = (
                f"On the features of an earlier run in the same workdir (`--reuse-features`): `kedro run "
                f"--pipelines=fusion` took {fused:.0f} s, then `--pipelines=modelling` {modelled:.0f} s "
                f"(peak {results['cross_corpus']['run']['peak_pss_mb'] / 1024:.1f} GB, PSS of the process "
                "tree).")
        else:
            run(project, "cross_corpus", results)
    (workdir / "results.json").write_text(json.dumps(
        {name: {"run": result["run"], **{table: result[table].to_dict(orient="records")
                                         for table in ("summary", "answers")}}
         for name, result in results.items()}, indent=2, default=str))
    write_page(results, args)


def write_page(results: dict, args: argparse.Namespace) -> None:
    if not args.markdown:
        return
    command = (f"python benchmarks/evaluation.py --ravdess {args.ravdess} --urdu {args.urdu} "
               f"--markdown {args.markdown}")
    page = Path(args.markdown)  # sections other benchmarks wrote into it stay
    ordered = {name: results[name] for name in TITLES if name in results}
    page.write_text(results_page(ordered, command) + marked_sections(page))
    print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()

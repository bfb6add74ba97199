"""Per-speaker normalisation and the openSMILE streams on a real corpus, for both split strategies.

    python benchmarks/classical_side.py --corpus-path ../shared/data/ravdess --markdown docs/results.md

In a scratch copy of the project (as benchmarks/modelling.py): makes every feature stream (MFCC,
LPCC, eGeMAPS, ComParE and the CNN stream, the offline SqueezeNet with its ImageNet weights), fuses
each set of streams twice, as it is and with `speaker_normalisation: speaker`, and trains the
chosen classifiers on every variant with the random and with the speaker-independent split
(`kedro run --namespaces`). Then, outside the pipelines but with the project's own functions: how
many clips a new speaker needs for its statistics, speaker independent, with the SVM on
eGeMAPS+MFCC+LPCC. Writes its own section of docs/results.md, leaving the rest of the page as it is.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from _harness import measured_kedro_run, scratch_project, write_section
from modelling import summary_of
from sklearn.metrics import recall_score

from emofusion.datasets import ClipArrayDataset
from emofusion.instances import pipeline_parameters
from emofusion.learning.assembly import select_and_fit
from emofusion.learning.selection import mcnemar_test
from emofusion.learning.splits import split_clips
from emofusion.standardisation import standardise_by_speaker

# Each set of streams is fused as `<name>` and, standardised per speaker, as `<name>_spk`.
STREAM_SETS = {
    "mfcc": ["mfcc"],
    "lpcc": ["lpcc"],
    "egemaps": ["egemaps"],
    "compare": ["compare"],
    "mfcc_lpcc": ["mfcc", "lpcc"],
    "egemaps_mfcc_lpcc": ["egemaps", "mfcc", "lpcc"],
    "compare_egemaps_mfcc_lpcc": ["compare", "egemaps", "mfcc", "lpcc"],
    "cnn": ["transfer_features"],
    "mfcc_lpcc_cnn": ["mfcc", "lpcc", "transfer_features"],
    "egemaps_mfcc_lpcc_cnn": ["egemaps", "mfcc", "lpcc", "transfer_features"],
    "compare_egemaps_mfcc_lpcc_cnn": ["compare", "egemaps", "mfcc", "lpcc", "transfer_features"],
}
SPLITS = {"random": "random split", "speaker_independent": "speaker independent"}
CLIPS_PER_SPEAKER = [2, 3, 5, 10, 20, 30, 60]


def fusion_variants(sets: list[str], project_parameters: dict) -> dict:
    """Every set plain and per speaker; conf/base's other variants switched off."""
    variants: dict = dict.fromkeys(project_parameters["fusion_variants"])
    for name in sets:
        variants[name] = STREAM_SETS[name]
        variants[f"{name}_spk"] = {"streams": STREAM_SETS[name], "speaker_normalisation": "speaker"}
    return variants


def predictions(project: Path, variant: str, classifier: str) -> pd.DataFrame:
    return pd.read_csv(project / f"data/07_model_output/{variant}/{classifier}_test_predictions.csv",
                       dtype={"clip_id": str})


def clips_needed(project: Path, variant: str, parameters: dict) -> list[dict]:
    """Speaker independent, each test speaker's clips standardised in groups of k, each group by its
    own statistics (as `emofusion predict` does with k files of one speaker); training and validation
    speakers by all their clips, as in training. Also every test clip by the statistics of all clips,
    which is what a speaker with fewer than `min_clips` clips gets."""
    fused = ClipArrayDataset(path=str(project / f"data/05_model_input/fused_features/{variant}")).load()
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv", dtype=str).set_index("clip_id")
    speakers = manifest.loc[fused.clip_ids, "speaker"].to_numpy()
    emotions = manifest.loc[fused.clip_ids, "emotion"].to_numpy()
    raw = np.asarray(fused.values, dtype=np.float32)
    by_own_speaker = raw.copy()
    standardise_by_speaker(by_own_speaker, speakers, min_clips=2)
    random_seed = parameters["random_seed"]
    split, _ = split_clips(manifest.reset_index(), dict(parameters["split"], strategy="speaker_independent"),
                        random_seed)
    rng = np.random.default_rng(random_seed)
    mean, std = raw.mean(axis=0), raw.std(axis=0)
    std[std == 0] = 1
    settings: list[tuple[str, np.ndarray]] = [("statistics of all clips (the fallback)", (raw - mean) / std)]
    for k in CLIPS_PER_SPEAKER:
        grouped = raw.copy()
        for speaker in np.unique(speakers):
            rows = rng.permutation(np.flatnonzero(speakers == speaker))
            for first in range(0, len(rows), k):
                group = rows[first:first + k]
                values = grouped[group]
                standardise_by_speaker(values, [speaker] * len(group), min_clips=2)
                grouped[group] = values
        settings.append((f"{k} clips", grouped))
    position = {clip: i for i, clip in enumerate(fused.clip_ids)}
    results = []
    for label, test_values in settings:
        truth, predicted = [], []
        for _, fold in split.groupby("fold"):
            rows = {subset: np.array([position[c] for c in fold.loc[fold["subset"] == subset, "clip_id"]])
                    for subset in ("train", "validation", "test")}
            model, _ = select_and_fit({"blocks": fused.metadata["blocks"]}, parameters["classifiers"]["svm"],
                                      None, random_seed,
                                      (by_own_speaker[rows["train"]], emotions[rows["train"]]),
                                      (by_own_speaker[rows["validation"]], emotions[rows["validation"]]))
            truth += list(emotions[rows["test"]])
            predicted += list(model.predict(test_values[rows["test"]]))
        results.append({"statistics": label, "uar": recall_score(truth, predicted, average="macro")})
        print(f"  {label:<45} UAR {results[-1]['uar']:.3f}", flush=True)
    return results


def cell(scores: pd.DataFrame, project: Path, split: str, name: str, classifier: str) -> str:
    """`UAR` for a plain variant; `UAR (gain in points, McNemar p)` for its per-speaker twin."""
    if (split, name, classifier) not in scores.index:
        return "not run | not run"  # a split may run fewer sets (--resume)
    plain = scores.loc[(split, name, classifier), "unweighted_average_recall"]
    if (split, f"{name}_spk", classifier) not in scores.index:
        return f"{plain:.3f} | not run"
    spk = scores.loc[(split, f"{name}_spk", classifier), "unweighted_average_recall"]
    p, _, _ = mcnemar_test(predictions(project / split, f"{name}_spk", classifier),
                           predictions(project / split, name, classifier))
    return f"{plain:.3f} | {spk:.3f} ({100 * (spk - plain):+.1f}, p {'<0.001' if p < 0.001 else f'{p:.2g}'})"


def section(results: dict, args: argparse.Namespace) -> str:
    scores = pd.DataFrame(results["models"]).set_index(["split", "variant", "classifier"])
    projects = Path(args.workdir_used)
    present = set(scores.index.get_level_values("variant"))
    names = [name for name in STREAM_SETS if name in present]
    widths = {name: int(scores.xs(name, level="variant")["width"].iloc[0]) for name in names}
    strategies = [split for split in SPLITS if split in results]
    extraction = results["features"]["node_s"]
    lines = ["## The classical side: per-speaker normalisation and openSMILE streams", "",
             "Written by", "", "```bash",
             "python benchmarks/classical_side.py "
             f"--corpus-path {args.corpus_path} --markdown {args.markdown}",
             "```", "",
             "Each set of streams as it is, and standardised per speaker (`speaker_normalisation: speaker`: "
             "every column by the mean and standard deviation of the clip's own speaker's clips). UAR on the "
             "test clips; beside each per-speaker score its gain in points over the same streams as they are "
             "and the exact McNemar p on the same test clips. SVM and DNN as configured in conf/base (the "
             "SVM's `C` and the CNN block weight chosen on validation clips). eGeMAPS is openSMILE's "
             "eGeMAPSv02 functionals (88 values), ComParE its ComParE_2016 functionals (6,373); `cnn` the "
             "CNN stream (SqueezeNet v1.1, ImageNet weights, fire3 and fire5 pooled over time, mean and "
             "standard deviation, PCA 256 inside each model).", ""]
    for classifier in args.classifiers:
        lines += [f"### {classifier.upper()}", "",
                  "| streams | width | " + " | ".join(f"{SPLITS[split]} | {SPLITS[split]}, per speaker"
                                                     for split in strategies) + " |",
                  "| --- | --- |" + " --- | --- |" * len(strategies)]
        lines += [f"| {name} | {widths[name]:,} | "
                  + " | ".join(cell(scores, projects, split, name, classifier) for split in strategies)
                  + " |" for name in names]
        lines.append("")
    lines += ["Per-speaker statistics use no label and no other speaker's clips. For a test speaker they "
              "come from that speaker's own unlabelled test clips: the model never sees a test speaker's "
              "labels, but the features of each test clip depend on the speaker's other recordings. That is "
              "the accepted practice in speaker-independent evaluation, and `emofusion predict` asks for the "
              "same: the speaker of each file, and enough files of each speaker.", ""]
    if results.get("clips_needed"):
        lines += ["### How many clips a speaker needs", "",
                  f"Speaker independent, SVM on {args.clips_variant}: the test speakers' clips standardised "
                  "in groups of k, each group by its own statistics (what `emofusion predict` does with k "
                  "files of one speaker); the training and validation speakers by all their clips, as in "
                  "training. Computed by this script with the project's functions, outside the "
                  "pipelines.", "",
                  "| test speakers' statistics | UAR |", "| --- | --- |"]
        lines += [f"| {row['statistics']} | {row['uar']:.3f} |" for row in results["clips_needed"]]
        fallback, *groups = results["clips_needed"]
        enough = next((row["statistics"] for row in groups if row["uar"] > fallback["uar"]), None)
        lines += ["", f"A speaker's own statistics beat those of all clips from {enough} on. A speaker "
                  "with fewer clips than `speaker_statistics.min_clips` (default "
                  f"{results['min_clips']}) falls back to the statistics of all clips." if enough else
                  "A speaker's own statistics never beat those of all clips here.", ""]
    opensmile = {node.removeprefix("extract_"): seconds for node, seconds in extraction.items()
                 if node in ("extract_egemaps", "extract_compare")}
    clips = results["clips"]
    cost = "".join(f"openSMILE on {clips:,} clips of 3 s, in worker processes on every core: " + ", ".join(
        f"{stream} {seconds:.0f} s ({1000 * seconds / clips:.0f} ms a clip)"
        for stream, seconds in opensmile.items()) + ". " if opensmile else "")
    cost += "The modelling runs took " + ", ".join(
        f"{results[split]['run']['wall_s']:,.0f} s ({SPLITS[split]}, "
        f"{(scores.index.get_level_values('split') == split).sum()} models)" for split in strategies)
    lines += ["### Cost", "", cost + " on the 2-core machine that wrote this page, shared with other jobs "
              "(several benchmarks at once: the times are upper bounds).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--sets", nargs="+", default=list(STREAM_SETS), choices=list(STREAM_SETS))
    parser.add_argument("--classifiers", nargs="+", default=["svm", "dnn"])
    parser.add_argument("--strategies", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--clips-variant", default="egemaps_mfcc_lpcc",
                        help="the set of streams for the clips-per-speaker table ('' to skip it)")
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder)")
    parser.add_argument("--skip-features", action="store_true", help="reuse the workdir's features")
    parser.add_argument("--json", help="also write the figures and tables to this file, after each split")
    parser.add_argument("--resume", action="store_true",
                        help="keep the splits already in --json that --strategies does not name (with "
                             "--skip-features and the same --workdir: a split can run with fewer --sets)")
    parser.add_argument("--markdown", help="also write this benchmark's section of docs/results.md here")
    args = parser.parse_args()

    base = pipeline_parameters(Path(__file__).resolve().parents[1])
    variants = fusion_variants(args.sets, base)
    local = {"corpora": ["bench"], "corpus_sources": {"bench": {
        "reader": args.reader, "path": str(Path(args.corpus_path).resolve())}},
        "transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"},
        "fusion_variants": variants}
    project = scratch_project(local, args.workdir)
    args.workdir_used = str(project)
    results: dict = {}
    if args.resume:
        results = json.loads(Path(args.json).read_text())
        results["models"] = [row for row in results["models"] if row["split"] not in args.strategies]
    streams = sorted({stream for name in args.sets for stream in STREAM_SETS[name]})
    if not args.skip_features:
        results["features"] = measured_kedro_run(project, f"--to-outputs={','.join(streams)}")
        results["features"].pop("log")
        print("features:", json.dumps(results["features"]["node_s"]), flush=True)
    else:
        results.setdefault("features", {"node_s": {}})
    results["clips"] = len(pd.read_csv(project / "data/03_primary/clip_manifest.csv"))
    measured_kedro_run(project, "--pipelines=fusion")
    models = [f"{variant}.{classifier}" for variant in variants if variants[variant] is not None
              for classifier in args.classifiers]
    for strategy in args.strategies:
        split = f"split.strategy={strategy}"
        measured_kedro_run(project, "--nodes=split_clips", "--params", split)
        namespaces = ",".join(f"modelling.{model}" for model in models)
        figures = measured_kedro_run(project, f"--namespaces={namespaces}", "--params", split)
        (project / f"classical_{strategy}.log").write_text(figures.pop("log"))
        # Keep this split's test predictions: the next split overwrites them.
        saved = project / strategy / "data/07_model_output"
        shutil.rmtree(saved, ignore_errors=True)
        saved.parent.mkdir(parents=True, exist_ok=True)
        (project / "data/07_model_output").rename(saved)
        summary = summary_of(project, models, strategy)
        print(f"\n{strategy}: {figures['wall_s']:.0f} s\n"
              + summary.to_string(index=False, float_format="%.3f"), flush=True)
        results[strategy] = {"run": figures}
        results["models"] = results.get("models", []) + summary.to_dict(orient="records")
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    if args.clips_variant and "speaker_independent" in args.strategies:
        print(f"\nclips per speaker, {args.clips_variant} svm:", flush=True)
        results["clips_needed"] = clips_needed(project, args.clips_variant, base)
        results["min_clips"] = base["speaker_statistics"]["min_clips"]
    print(f"\nscratch project: {project}")
    if args.markdown:
        write_section(Path(args.markdown), "benchmarks/classical_side.py", section(results, args))
        print(f"wrote {args.markdown}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()

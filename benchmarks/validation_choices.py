"""Choose the feature settings on validation clips only: MFCC/LPCC statistics, the CNN stream's
tapped layers and pooling, and its PCA size.

    python benchmarks/validation_choices.py --corpus-path ../shared/data/ravdess \
        --markdown docs/validation_choices.md

In a scratch copy of the project, for every candidate it runs the project's pipelines with that
setting (feature_extraction for the statistics; transfer_features with a registry entry of the
offline SqueezeNet for the taps), then scores the stream with the project's own model (block
scaling, optional PCA, an SVM with C 10) fitted on each fold's training clips and scored on that
fold's validation clips: the random split's validation subset, and the validation speakers of
each speaker-independent fold. Test clips are never scored. The score is the mean of the two
splits' validation UAR. Prints one table per stage and writes them as Markdown with --markdown.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _harness import measured_kedro_run, scratch_project
from sklearn.metrics import recall_score

from emofusion.datasets import ClipArrayDataset
from emofusion.pipelines.modelling.classifiers import build_model, fit_model
from emofusion.pipelines.modelling.nodes import split_clips

SPLITS = {"random": {"strategy": "random", "test_size": 0.30, "validation_size": 0.15},
          "speaker_independent": {"strategy": "speaker_independent", "speaker_folds": 6}}
TAPS = [["fire3_concat"], ["fire5_concat"], ["fire7_concat"], ["fire9_concat"],
        ["fire3_concat", "fire5_concat"], ["fire5_concat", "fire9_concat"]]
POOLINGS = ["avg", "max", "time", "time_stats"]


def validation_uar(streams: list[np.ndarray], labels: pd.Series, split: pd.DataFrame, pca: int | None
                   ) -> float:
    """Mean over folds of the unweighted average recall on each fold's validation clips; the last
    stream is the one `pca` reduces."""
    row = {clip: i for i, clip in enumerate(labels.index)}
    features = np.hstack(streams).astype(np.float32)
    stops = np.cumsum([stream.shape[1] for stream in streams])
    blocks = [{"stream": f"s{i}", "start": int(stop - stream.shape[1]), "stop": int(stop), "weight": 1.0}
              for i, (stream, stop) in enumerate(zip(streams, stops, strict=True))]
    blocks[-1]["stream"] = "transfer_features"
    reduction = {"transfer_features": {"pca": pca}} if pca else None
    scores = []
    for _, fold in split.groupby("fold"):
        train = np.array([row[c] for c in fold.loc[fold["subset"] == "train", "clip_id"]])
        validation = np.array([row[c] for c in fold.loc[fold["subset"] == "validation", "clip_id"]])
        model = build_model(blocks, None, {"kind": "svm", "C": 10.0, "probability": False}, reduction,
                            True, 0)
        fit_model(model, features[train], labels.iloc[train].to_numpy())
        scores.append(recall_score(labels.iloc[validation], model.predict(features[validation]),
                                   average="macro"))
    return float(np.mean(scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder)")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()

    local = {"corpora": ["bench"], "corpus_sources": {"bench": {
        "reader": args.reader, "path": str(Path(args.corpus_path).resolve())}},
        "transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"}}
    project = scratch_project(local, args.workdir)
    measured_kedro_run(project, "--to-outputs=clip_manifest,log_mel_spectrogram")
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv",
                           dtype={"clip_id": str, "speaker": str})
    splits = {name: split_clips(manifest, settings, 42)[0] for name, settings in SPLITS.items()}

    def scores(streams: list[np.ndarray], labels: pd.Series, pca: int | None = None) -> dict[str, float]:
        by_split = {name: validation_uar(streams, labels, split, pca) for name, split in splits.items()}
        return by_split | {"mean": float(np.mean(list(by_split.values())))}

    statistics = []
    for chosen in (["mean"], ["mean", "std"]):
        (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(
            local | {"mfcc": {"statistics": chosen}, "lpcc": {"statistics": chosen}}))
        measured_kedro_run(project, "--to-outputs=mfcc,lpcc")
        mfcc, lpcc = (ClipArrayDataset(path=str(project / f"data/04_feature/{name}")).load()
                      for name in ("mfcc", "lpcc"))
        labels = manifest.set_index("clip_id")["emotion"].loc[mfcc.clip_ids]
        statistics.append({"statistics": " + ".join(chosen), "streams": "mfcc + lpcc",
                           **scores([np.asarray(mfcc.values), np.asarray(lpcc.values)[lpcc.positions(
                               list(mfcc.clip_ids))]], labels)})
    statistics = pd.DataFrame(statistics)

    def cnn_features(layers: list[str], pooling: str) -> tuple[np.ndarray, pd.Series]:
        entry = {"layer": None, "layers": layers, "pooling": pooling}
        (project / "conf/local/parameters.yml").write_text(
            yaml.safe_dump(local | {"backbones": {"squeezenet_v1_1": entry}}))
        measured_kedro_run(project, "--pipelines=transfer_features")
        stored = ClipArrayDataset(path=str(project / "data/04_feature/transfer_features")).load()
        labels = manifest.set_index("clip_id")["emotion"].loc[stored.clip_ids]
        return np.asarray(stored.values, dtype=np.float32), labels

    taps = []
    # The former default, fire9 unpooled (86,528 values), as the baseline.
    for layers, pooling in [(["fire9_concat"], "none"), *itertools.product(TAPS, POOLINGS)]:
        features, labels = cnn_features(layers, pooling)
        taps.append({"layers": " + ".join(layers), "pooling": pooling, "width": features.shape[1],
                     **scores([features], labels)})
        print(taps[-1], flush=True)
    taps = pd.DataFrame(taps).sort_values("mean", ascending=False)
    best = taps.iloc[0]
    features, labels = cnn_features(best["layers"].split(" + "), best["pooling"])
    reductions = pd.DataFrame([{"pca": pca or "none", **scores([features], labels, pca)}
                               for pca in (None, 64, 128, 256, 512)])
    tables = {"MFCC and LPCC clip statistics (MFCC+LPCC)": statistics,
              "SqueezeNet taps and pooling, CNN stream alone, no PCA": taps,
              f"PCA size, CNN stream alone ({best['layers']}, {best['pooling']})": reductions}
    for title, table in tables.items():
        print(f"\n{title}: validation UAR, SVM C 10\n" + table.to_string(index=False, float_format="%.3f"))
    if args.markdown:
        Path(args.markdown).write_text(
            "# Settings chosen on validation clips\n\nWritten by `python benchmarks/validation_choices.py "
            f"--corpus-path {args.corpus_path} --markdown {args.markdown}`. Unweighted average recall "
            "on validation clips only (random split: its 15% validation subset; speaker-independent: "
            "each of the 6 folds' validation speakers, averaged); `mean` averages the two.\n\n"
            + "\n\n".join(f"## {title}\n\n{markdown(table)}" for title, table in tables.items()) + "\n")


def markdown(table: pd.DataFrame) -> str:
    cells = table.map(lambda value: f"{value:.3f}" if isinstance(value, float) else str(value))
    return "\n".join(["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns),
                      *("| " + " | ".join(row) + " |" for row in cells.itertuples(index=False))])


if __name__ == "__main__":
    main()

"""Choose the feature settings by nested speaker-independent validation: MFCC/LPCC statistics, the
CNN stream's tapped layers and pooling, and its PCA size.

    PYTHONPATH=src python benchmarks/validation_choices.py --corpus-path ../shared/data/ravdess \
        --workdir /tmp/nested-choices --markdown docs/validation_choices.md

In a scratch copy of the project, for every candidate it runs the project's pipelines with that
setting (feature_extraction for the statistics; transfer_features with a registry entry of the
offline SqueezeNet for the taps), then scores the stream with the project's own model (block
scaling, optional PCA, an SVM with C 10).

The choice is nested in the project's speaker-independent split (6 folds; fold k tests on speaker
group k, validates on group k+1, trains on the rest). For each outer fold k, every candidate is
trained on fold k's training speakers and scored (unweighted average recall) on fold k's
validation speakers only, never on fold k's test speakers; fold k's choice is the best candidate
by that one score (ties: fewer values, then the order listed). Nothing is averaged over folds to
choose: the global default is the candidate most outer folds chose. The PCA stage of fold k uses
fold k's own choice of taps and pooling. The random split is not used: its validation clips are
test clips of the speaker-independent folds.

Test labels are read once per stage and choose nothing: each outer fold's own choice is refitted
on fold k's training + validation speakers (as the project's SVM is) and predicts fold k's test
speakers; the predictions of the 6 folds (every clip once) are pooled into one test UAR, an
estimate of what the nested procedure is worth.

Features and validation scores are cached in --workdir, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _harness import measured_kedro_run, scratch_project
from sklearn.metrics import recall_score

from emofusion.datasets import ClipArrayDataset
from emofusion.learning.assembly import build_model
from emofusion.learning.estimators import fit_model
from emofusion.learning.splits import split_clips

SPLIT = {"strategy": "speaker_independent", "speaker_folds": 6}
STATISTICS = [["mean"], ["mean", "std"]]
TAPS = [["fire3_concat"], ["fire5_concat"], ["fire7_concat"], ["fire9_concat"],
        ["fire3_concat", "fire5_concat"], ["fire5_concat", "fire9_concat"]]
POOLINGS = ["avg", "max", "time", "time_stats"]
# The former default, fire9 unpooled (86,528 values), first, then every tap with every pooling.
CNN_CANDIDATES = [(["fire9_concat"], "none"), *itertools.product(TAPS, POOLINGS)]
PCA_SIZES = [None, 64, 128, 256, 512]
START = time.perf_counter()


def log(message: str) -> None:
    print(f"[{(time.perf_counter() - START) / 60:5.1f} min] {message}", flush=True)


def make_model(streams: list[np.ndarray], pca: int | None):
    """The project's model for these streams side by side: block scaling, PCA of the last stream
    to `pca` components (none if None), an SVM with C 10."""
    stops = np.cumsum([stream.shape[1] for stream in streams])
    blocks = [{"stream": f"s{i}", "start": int(stop - stream.shape[1]), "stop": int(stop), "weight": 1.0}
              for i, (stream, stop) in enumerate(zip(streams, stops, strict=True))]
    blocks[-1]["stream"] = "transfer_features"
    reduction = {"transfer_features": {"pca": pca}} if pca else None
    return build_model(blocks, None, {"kind": "svm", "C": 10.0, "probability": False}, reduction, True, 0)


def uar(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(recall_score(truth, predicted, average="macro"))


class Folds:
    """Rows of each outer fold's training, validation and test speakers in the features' clip order."""

    def __init__(self, split: pd.DataFrame, clip_ids: list[str]):
        row = {clip: i for i, clip in enumerate(clip_ids)}
        self.rows = {
            int(k): {subset: np.array([row[c] for c in fold.loc[fold["subset"] == subset, "clip_id"]])
                     for subset in ("train", "validation", "test")}
            for k, fold in split.groupby("fold")}

    def validation_uar(self, streams: list[np.ndarray], labels: np.ndarray, pca: int | None,
                       only: list[int] | None = None) -> list[float]:
        """Per outer fold (those in `only`, else all; NaN for the others): trained on its training
        speakers, scored on its validation speakers."""
        features = np.hstack(streams).astype(np.float32)
        scores = []
        for k, rows in self.rows.items():
            if only is not None and k not in only:
                scores.append(np.nan)
                continue
            model = make_model(streams, pca)
            fit_model(model, features[rows["train"]], labels[rows["train"]], groups=None)
            scores.append(uar(labels[rows["validation"]], model.predict(features[rows["validation"]])))
        return scores

    def test_predictions(self, fold: int, streams: list[np.ndarray], labels: np.ndarray, pca: int | None
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Fold `fold`'s test speakers: truth and the predictions of a model refitted on its training
        and validation speakers."""
        features = np.hstack(streams).astype(np.float32)
        rows = self.rows[fold]
        fit_rows = np.concatenate([rows["train"], rows["validation"]])
        model = make_model(streams, pca)
        fit_model(model, features[fit_rows], labels[fit_rows], groups=None)
        return labels[rows["test"]], model.predict(features[rows["test"]])


def choose(candidates: list[str], widths: dict[str, int], scores: dict[str, list[float]], fold: int) -> str:
    """Fold `fold`'s choice: the best validation UAR of that fold alone; ties to fewer values, then
    the order listed."""
    def rank(c: str) -> tuple[float, int, int]:  # a candidate not tried on this fold (NaN) ranks last
        score = scores[c][fold]
        return (np.inf if np.isnan(score) else -round(score, 12), widths[c], candidates.index(c))

    return min(candidates, key=rank)


def stage_tables(candidates: list[str], widths: dict[str, int], scores: dict[str, list[float]],
                 name: str, n_folds: int) -> tuple[pd.DataFrame, list[str], str]:
    """The stage's table (each candidate's validation UAR per outer fold and how many folds chose
    it), each fold's choice, and the candidate most folds chose (ties as in `choose`)."""
    chosen = [choose(candidates, widths, scores, k) for k in range(n_folds)]
    counts = {c: chosen.count(c) for c in candidates}
    majority = min(candidates, key=lambda c: (-counts[c], widths[c], candidates.index(c)))
    table = pd.DataFrame([{name: c, "width": widths[c],
                           **{f"fold {k}": scores[c][k] for k in range(n_folds)},
                           "chosen by": f"{counts[c]}/{n_folds}"} for c in candidates])
    return table, chosen, majority


def nested_test(folds: Folds, chosen: list[str], data, labels: np.ndarray) -> tuple[pd.DataFrame, float]:
    """Each outer fold's own choice tested once on its test speakers; the pooled UAR of all folds.
    `data(candidate)` gives (streams, pca)."""
    rows, truth, predicted = [], [], []
    for k, candidate in enumerate(chosen):
        streams, pca = data(candidate)
        t, p = folds.test_predictions(k, streams, labels, pca)
        truth.append(t)
        predicted.append(p)
        rows.append({"outer fold": k, "chosen": candidate, "test clips": len(t), "test UAR": uar(t, p)})
        log(f"  nested test, fold {k}: {candidate}: {rows[-1]['test UAR']:.3f}")
    return pd.DataFrame(rows), uar(np.concatenate(truth), np.concatenate(predicted))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder); "
                                          "features and scores are cached there")
    parser.add_argument("--markdown", help="write the tables to this file")
    args = parser.parse_args()

    local = {"corpora": ["bench"], "corpus_sources": {"bench": {
        "reader": args.reader, "path": str(Path(args.corpus_path).resolve())}},
        "transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"}}
    project = scratch_project(local, args.workdir)
    cache = project / "nested_cache"
    cache.mkdir(exist_ok=True)
    score_file = cache / "validation_scores.json"
    cached_scores = json.loads(score_file.read_text()) if score_file.exists() else {}
    resumed = bool(cached_scores)

    log("clip manifest and log-mel spectrograms")
    if not (score_file.exists() and (project / "data/04_feature/log_mel_spectrogram").exists()):
        measured_kedro_run(project, "--to-outputs=clip_manifest,log_mel_spectrogram")  # else resuming
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv",
                           dtype={"clip_id": str, "speaker": str})
    split = split_clips(manifest, SPLIT, 42)[0]
    n_folds = SPLIT["speaker_folds"]
    emotion = manifest.set_index("clip_id")["emotion"]

    clip_ids: list[str] = []  # every stream is put in this order: the clips of the first MFCC run

    def stored(name: str, parameters: dict, outputs: str, datasets: list[str]) -> list[np.ndarray]:
        """The datasets a kedro run with these parameters writes, cached as .npy, in clip_ids order."""
        files = [cache / f"{name}.{dataset}.npy" for dataset in datasets]
        if not all(file.exists() for file in files):
            (project / "conf/local/parameters.yml").write_text(yaml.safe_dump(local | parameters))
            run = measured_kedro_run(project, outputs)
            log(f"  kedro run for {name}: {run['wall_s']:.0f} s")
            for dataset, file in zip(datasets, files, strict=True):
                array = ClipArrayDataset(path=str(project / f"data/04_feature/{dataset}")).load()
                np.save(file, np.asarray(array.values, dtype=np.float32))
                file.with_suffix(".ids.json").write_text(json.dumps([str(c) for c in array.clip_ids]))
        streams = []
        for file in files:
            ids = json.loads(file.with_suffix(".ids.json").read_text())
            if not clip_ids:
                clip_ids.extend(ids)
            position = {clip: i for i, clip in enumerate(ids)}
            streams.append(np.load(file)[[position[clip] for clip in clip_ids]])
        return streams

    statistics_streams = {}

    def statistics_stream(candidate: str) -> list[np.ndarray]:
        if candidate not in statistics_streams:
            chosen = candidate.split(" + ")
            statistics_streams[candidate] = stored(
                f"statistics_{'+'.join(chosen)}",
                {"mfcc": {"statistics": chosen}, "lpcc": {"statistics": chosen}},
                "--to-outputs=mfcc,lpcc", ["mfcc", "lpcc"])
        return statistics_streams[candidate]

    candidates = [" + ".join(s) for s in STATISTICS]
    statistics_stream(candidates[0])
    labels = emotion.loc[clip_ids].astype(str).to_numpy()
    folds = Folds(split, clip_ids)
    log(f"{len(clip_ids)} clips, {n_folds} outer folds; validation clips per fold: "
        f"{[len(r['validation']) for r in folds.rows.values()]}")

    def validation_scores(key: str, streams: list[np.ndarray], pca: int | None,
                          only: list[int] | None = None) -> list[float]:
        if key not in cached_scores:
            cached_scores[key] = folds.validation_uar(streams, labels, pca, only)
            score_file.write_text(json.dumps(cached_scores, indent=1))
        log(f"  {key}: validation UAR per outer fold {np.round(cached_scores[key], 3).tolist()}")
        return cached_scores[key]

    # Stage 1: MFCC and LPCC clip statistics.
    log("stage 1: MFCC and LPCC statistics")
    scores, widths = {}, {}
    for candidate in candidates:
        streams = statistics_stream(candidate)
        widths[candidate] = sum(s.shape[1] for s in streams)
        scores[candidate] = validation_scores(f"statistics {candidate}", streams, None)
    statistics, statistics_chosen, statistics_default = stage_tables(candidates, widths, scores, "statistics",
                                                                     n_folds)
    statistics_test, statistics_pooled = nested_test(folds, statistics_chosen,
                                                     lambda c: (statistics_stream(c), None), labels)

    # Stage 2: SqueezeNet taps and pooling, CNN stream alone, no PCA.
    def cnn_stream(candidate: str) -> np.ndarray:
        layers, pooling = candidate.split(" | ")
        entry = {"layer": None, "layers": layers.split(" + "), "pooling": pooling}
        return stored(f"cnn_{layers.replace(' + ', '+')}_{pooling}",
                      {"backbones": {"squeezenet_v1_1": entry}},
                      "--pipelines=transfer_features", ["transfer_features"])[0]

    log("stage 2: SqueezeNet taps and pooling")
    candidates = [f"{' + '.join(layers)} | {pooling}" for layers, pooling in CNN_CANDIDATES]
    scores, widths = {}, {}
    for candidate in candidates:
        features = cnn_stream(candidate)
        widths[candidate] = features.shape[1]
        scores[candidate] = validation_scores(f"cnn {candidate}", [features], None)
        del features
    taps, taps_chosen, taps_default = stage_tables(candidates, widths, scores, "layers | pooling", n_folds)
    taps_test, taps_pooled = nested_test(folds, taps_chosen, lambda c: ([cnn_stream(c)], None), labels)

    # Stage 3: PCA size of the CNN stream, each outer fold on its own choice of taps and pooling.
    log("stage 3: PCA size, each fold on its own taps and pooling")
    candidates = ["none" if p is None else str(p) for p in PCA_SIZES]
    scores = {c: [np.nan] * n_folds for c in candidates}
    for tap in dict.fromkeys(taps_chosen):
        features = cnn_stream(tap)
        for candidate, pca in zip(candidates, PCA_SIZES, strict=True):
            # "none" is stage 2's score of these taps (cached, not fitted again).
            # PCA to as many components as the stream has values or more is not tried (NaN).
            if pca is not None and pca >= features.shape[1]:
                continue
            # Only the folds that chose these taps need them.
            only = [k for k, fold_tap in enumerate(taps_chosen) if fold_tap == tap]
            key = f"cnn {tap}" if pca is None else f"cnn {tap} | pca {pca} | folds {only}"
            fold_scores = validation_scores(key, [features], pca, None if pca is None else only)
            for k in only:
                scores[candidate][k] = fold_scores[k]
        del features
    pca_widths = {c: int(c) if c != "none" else 10**9 for c in candidates}
    reductions, pca_chosen, pca_default = stage_tables(candidates, pca_widths, scores, "pca", n_folds)
    reductions = reductions.drop(columns="width")
    pca_test, pca_pooled = nested_test(
        folds, [f"{tap} || {pca}" for tap, pca in zip(taps_chosen, pca_chosen, strict=True)],
        lambda c: ([cnn_stream(c.split(" || ")[0])], None if c.split(" || ")[1] == "none"
                   else int(c.split(" || ")[1])), labels)

    minutes = (time.perf_counter() - START) / 60
    stages = [
        ("MFCC and LPCC clip statistics (MFCC + LPCC streams)", statistics, statistics_chosen,
         statistics_default, statistics_test, statistics_pooled),
        ("SqueezeNet taps and pooling (CNN stream alone, no PCA)", taps, taps_chosen, taps_default,
         taps_test, taps_pooled),
        ("PCA size of the CNN stream (CNN stream alone; each outer fold on its own taps and pooling)",
         reductions, pca_chosen, pca_default, pca_test, pca_pooled),
    ]
    fold_taps = ", ".join(f"fold {k}: {t}" for k, t in enumerate(taps_chosen))
    for title, table, chosen, default, test, pooled in stages:
        print(f"\n{title}: validation UAR per outer fold (SVM C 10)\n"
              + table.to_string(index=False, float_format="%.3f"))
        print(f"choice per outer fold: {chosen}; most often chosen: {default}")
        print(test.to_string(index=False, float_format="%.3f"))
        print(f"nested test UAR, pooled over the {n_folds} outer folds: {pooled:.3f}")
    print(f"\nthe PCA stage's taps per fold: {fold_taps}\nwall time: {minutes:.1f} min")
    if args.markdown:
        Path(args.markdown).write_text(
            page(args, stages, fold_taps, n_folds, len(clip_ids), minutes, resumed))


def page(args: argparse.Namespace, stages: list, fold_taps: str, n_folds: int, n_clips: int,
         minutes: float, resumed: bool) -> str:
    intro = (
        "# Settings chosen by nested validation\n\n"
        "Written by `PYTHONPATH=src python benchmarks/validation_choices.py --corpus-path "
        f"{args.corpus_path} --workdir /tmp/nested-choices --markdown {args.markdown}` "
        f"({n_clips} clips; this run {minutes:.0f} min on 2 shared CPU cores"
        + (", resumed from the features and scores cached in --workdir" if resumed else "") + ").\n\n"
        "**How the choice was made.** The project's speaker-independent split has "
        f"{n_folds} folds: fold k tests on speaker group k, validates on group k+1 and trains on the "
        "others. Each fold below is an *outer* fold. For outer fold k, every candidate is fitted with "
        "the project's model (block scaling, optional PCA, an SVM with C 10) on fold k's training "
        "speakers and scored by unweighted average recall (UAR) on fold k's validation speakers "
        "only, never on fold k's test speakers. Fold k's choice is the best candidate by that one "
        "score (ties: fewer values, then the order listed). Nothing is averaged over folds to choose; "
        "the global default is the candidate that most outer folds chose. The PCA stage of fold k "
        "uses fold k's own choice of taps and pooling. The random split is not used: its validation "
        "clips are test clips of the speaker-independent folds.\n\n"
        "**What saw test labels.** No outer fold's choice used a label of its own test speakers. "
        "The only test labels read are in "
        "the *nested test* lines, which choose nothing: each outer fold's own choice is refitted on "
        "fold k's training and validation speakers (as the project's SVM is) and predicts fold k's "
        "test speakers once; the predictions of all folds, every clip once, are pooled into one UAR. "
        "It estimates what the nested procedure is worth, not the default alone.\n\n"
        "**Caveat on the global defaults.** Fold k's validation speakers are fold k+1's test "
        "speakers, so the union of the folds' validation speakers is every speaker. The most-chosen "
        "candidate that sets a global default has therefore seen every test speaker's labels, through "
        "other folds' choices (fold k's test speakers are fold k-1's validation speakers: one of the "
        "six votes). Figures computed later with a default on these folds can carry that optimism; "
        "the pooled nested test UAR here does not.\n"
    )
    sections = []
    for title, table, chosen, default, test, pooled in stages:
        counts = ", ".join(f"{c}: {chosen.count(c)}/{n_folds}" for c in dict.fromkeys(chosen))
        ties = []
        for k, c in enumerate(chosen):
            column = table.set_index(table.columns[0])[f"fold {k}"].round(12)
            best = column[column == column.loc[c]].index.tolist()
            if len(best) > 1:
                ties.append(f"fold {k}: {' and '.join(best)}")
        if ties:
            counts += (". Exact ties on validation, broken to fewer values then the order listed: "
                       + "; ".join(ties))
        section = (f"## {title}\n\nValidation UAR of each candidate per outer fold (each fold's "
                   f"validation speakers only).\n\n{markdown(table)}\n\n"
                   f"Choices: {counts}. Default: **{default}**.\n\n"
                   f"Nested test (each fold's own choice, on its test speakers; chooses nothing):\n\n"
                   f"{markdown(test)}\n\nPooled nested test UAR: **{pooled:.3f}**.")
        if title.startswith("PCA"):
            section += (f"\n\nTaps and pooling of each outer fold (its stage 2 choice): {fold_taps}. "
                        "—: not tried (PCA to at least as many components as the stream has values).")
        sections.append(section)
    return intro + "\n" + "\n\n".join(sections) + "\n"


def markdown(table: pd.DataFrame) -> str:
    cells = table.map(lambda value: "—" if isinstance(value, float) and np.isnan(value)
                      else f"{value:.3f}" if isinstance(value, float) else str(value).replace("|", "\\|"))
    columns = [str(column).replace("|", "\\|") for column in table.columns]
    return "\n".join(["| " + " | ".join(columns) + " |", "|" + " --- |" * len(table.columns),
                      *("| " + " | ".join(row) + " |" for row in cells.itertuples(index=False))])


if __name__ == "__main__":
    main()

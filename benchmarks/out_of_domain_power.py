"""How well any threshold on a model's distance to its training clips can tell URDU from RAVDESS:
issue 28's out-of-domain bar (at least 80% of URDU files flagged by a RAVDESS model, at most 5% of
RAVDESS test clips) held against what the features allow.

    python benchmarks/out_of_domain_power.py --workdir /tmp/evaluation-cc --markdown docs/results.md

Reads the stored fused features of a `benchmarks/evaluation.py` workdir (its `cross_corpus` project,
which has both corpora's clips) and trains no classifier. For each variant standardised by nothing
(the RAVDESS model `emofusion predict` uses on new files), RAVDESS's speaker-independent folds
(the project's split, 6 folds of 4 actors): per fold, the model's `TrainingDomain` fitted on the
training actors and its threshold set on the validation actors, as `kedro run` does; then every
RAVDESS test clip and every URDU clip scored by its distance over the threshold (above 1: flagged).

- at the threshold: the share of RAVDESS test clips flagged and of URDU clips flagged (mean over
  the folds' models);
- the most any threshold can do: the share of URDU clips flagged by the threshold that flags
  exactly 5% of RAVDESS test clips (set on the test clips themselves, so an upper bound no run can
  reach), and the area under the ROC curve of RAVDESS test against URDU;
- the same for the distance to the nearest training clip in the same scaled space, a detector that
  stores every training clip, to tell the features' limit from the distance's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _harness import PROJECT, write_section
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors

from emofusion.clip_array import read_rows
from emofusion.datasets import ClipArrayDataset
from emofusion.learning.domain import conformal_threshold, describe_domain
from emofusion.learning.splits import split_clips

VARIANTS = ("egemaps_mfcc_lpcc", "compare_egemaps_mfcc_lpcc")
FALSE_FLAGS = 0.05  # the bar for RAVDESS test clips


def parameters(name: str) -> dict:
    return yaml.safe_load((PROJECT / f"conf/base/parameters_{name}.yml").read_text())


def relative_distances(features: np.ndarray, metadata: dict, folds: pd.DataFrame, ravdess_ids: np.ndarray,
                       urdu: np.ndarray, options: dict) -> dict[str, list[np.ndarray]]:
    """Per fold and detector: RAVDESS test clips' and URDU clips' distances over the fold's threshold."""
    position = {clip_id: row for row, clip_id in enumerate(ravdess_ids)}
    found: dict[str, list[np.ndarray]] = {key: [] for key in ("test", "urdu", "test_nearest", "urdu_nearest")}
    for _, fold in folds.groupby("fold"):
        rows = {subset: features[[position[c] for c in fold.loc[fold["subset"] == subset, "clip_id"]]]
                for subset in ("train", "validation", "test")}
        domain = describe_domain(metadata, rows["train"], None, rows["validation"], options)
        found["test"].append(domain.distance(rows["test"]) / domain.threshold_)
        found["urdu"].append(domain.distance(urdu) / domain.threshold_)
        nearest = NearestNeighbors(n_neighbors=1).fit(domain.scaler_.transform(rows["train"]))
        validation, test, other = (nearest.kneighbors(domain.scaler_.transform(X))[0][:, 0]
                                   for X in (rows["validation"], rows["test"], urdu))
        threshold = conformal_threshold(validation, float(options["pass_share"]))  # as the model's
        found["test_nearest"].append(test / threshold)
        found["urdu_nearest"].append(other / threshold)
    return found


def powers(test: list[np.ndarray], urdu: list[np.ndarray]) -> dict[str, float]:
    pooled_test = np.concatenate(test)
    best = np.quantile(pooled_test, 1 - FALSE_FLAGS)  # flags 5% of the pooled test clips
    return {"test_flagged": float((pooled_test > 1).mean()),
            "urdu_flagged": float(np.mean([(fold > 1).mean() for fold in urdu])),
            "urdu_flagged_at_best": float(np.mean([(fold > best).mean() for fold in urdu])),
            "auc": float(np.mean([roc_auc_score(np.r_[np.zeros(len(pooled_test)), np.ones(len(fold))],
                                                np.r_[pooled_test, fold]) for fold in urdu]))}


def measured(workdir: Path) -> dict[str, dict[str, dict[str, float]]]:
    data = workdir / "cross_corpus" / "data"
    manifest = pd.read_csv(data / "03_primary" / "clip_manifest.csv")
    ravdess = manifest[manifest["corpus"] == "ravdess"]
    seed = int(yaml.safe_load((PROJECT / "conf/base/parameters.yml").read_text())["random_seed"])
    folds, _ = split_clips(ravdess, {**parameters("modelling")["split"], "strategy": "speaker_independent"},
                           seed)
    options = parameters("modelling")["out_of_domain"]
    results = {}
    for variant in VARIANTS:
        fused = ClipArrayDataset(path=str(data / "05_model_input" / "fused_features" / variant),
                                 load_args={"mmap_mode": "r"}).load()
        features = np.asarray(read_rows(fused.values, np.arange(len(fused))), dtype=np.float64)
        is_ravdess = np.isin(fused.clip_ids, ravdess["clip_id"].astype(str))
        found = relative_distances(features[is_ravdess], fused.metadata, folds, fused.clip_ids[is_ravdess],
                                   features[~is_ravdess], options)
        results[variant] = {
            "distance to the training clips (the model's)": powers(found["test"], found["urdu"]),
            "distance to the nearest training clip": powers(found["test_nearest"], found["urdu_nearest"])}
        print(variant, results[variant], flush=True)
    return results


def results_text(results: dict, command: str) -> str:
    lines = ["## How far the out-of-domain flag can go (issue 28)", "", "```bash", command, "```", "",
             "RAVDESS, speaker independent (6 folds), each fold's description of its training actors "
             "with its threshold set on its validation actors; the URDU files scored by every fold's "
             "model. \"Best threshold\": the one that flags exactly 5% of the RAVDESS test clips, set "
             "on those test clips, so no run can do better with this distance.", "",
             "| variant | distance | RAVDESS test flagged | URDU flagged | URDU flagged, best threshold "
             "| AUC, RAVDESS test against URDU |", "| --- | --- | --- | --- | --- | --- |"]
    for variant, detectors in results.items():
        for detector, row in detectors.items():
            lines.append(f"| {variant} | {detector} | {100 * row['test_flagged']:.1f}% | "
                         f"{100 * row['urdu_flagged']:.1f}% | {100 * row['urdu_flagged_at_best']:.1f}% | "
                         f"{row['auc']:.3f} |")
    best = max(row["urdu_flagged_at_best"] for detectors in results.values() for row in detectors.values())
    lines += ["", f"A threshold that flags 5% of the RAVDESS test clips flags at most {100 * best:.1f}% of "
              "the URDU files, even set on those test clips and even with the nearest-neighbour distance: "
              "issue 28's pair of bars (at least 80% of URDU, at most 5% of RAVDESS test clips) asks more "
              "than these features separate; no setting of the threshold meets both."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True,
                        help="a workdir of benchmarks/evaluation.py that ran its cross_corpus split")
    parser.add_argument("--markdown", help="write the figures as a section of this page (docs/results.md)")
    args = parser.parse_args()
    command = ("python benchmarks/out_of_domain_power.py --workdir <workdir of benchmarks/evaluation.py> "
               f"--markdown {args.markdown or 'docs/results.md'}")
    text = results_text(measured(Path(args.workdir)), command)
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "out-of-domain-power", text)


if __name__ == "__main__":
    main()

"""The accuracy cost of the methods whose cost grows linearly with the clips, where the exact ones
still run, and their time and memory on a corpus of 10^5 synthetic clips.

    PYTHONPATH=src python benchmarks/approximations.py --features data/05_model_input/fused_features \
        --split data/05_model_input/data_split.csv --variants compare_egemaps_mfcc_lpcc mfcc_lpcc_cnn
    PYTHONPATH=src python benchmarks/approximations.py --synthetic 100000 --columns 6000

On a run's fused features and its speaker-independent split (every clip tested once, by a model
that never heard its speaker), each fold's model is fitted on its training and validation clips,
as the project refits the chosen SVM, with fixed settings (the project's SVM: C 10, gamma scale,
calibrated probabilities; PCA 256 of the CNN stream): nothing is chosen here. For each variant it
compares, on the same test clips, the exact SVM with the Nyström SVM (forced, `--components`
columns) and the exact PCA with the incremental one (forced, batches of `--pca-batches` clips):
test UAR of each, the difference and its paired bootstrap interval over speakers.

`--synthetic N` fits the SVM on N synthetic rows of `--columns` columns (eight emotions), then
PCA 256 of them and the SVM on its output, each by the method the default thresholds choose for
N rows (`--exact`: the exact ones), and reports each one's wall time and the process's peak
resident memory. `--kernel-matrix-min-columns` sets the SVM's: 0 makes the kernel matrix of rows
of any width, the default gives rows under 512 columns to libsvm as they are.

    PYTHONPATH=src python benchmarks/approximations.py --synthetic 16000 --columns 192 --svm-only
    PYTHONPATH=src python benchmarks/approximations.py --synthetic 16000 --columns 192 --svm-only \
        --kernel-matrix-min-columns 0
"""

from __future__ import annotations

import argparse
import resource
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.datasets.clip_array_dataset import ClipArrayDataset
from emofusion.learning.assembly import build_model, cost_paths, fused_layout
from emofusion.learning.folds import fold_rows, read_subset
from emofusion.learning.predictions import prediction_table
from emofusion.learning.uncertainty import bootstrap_scores, paired_bootstrap_difference

SVM = {"kind": "svm", "C": 10.0, "gamma": "scale", "probability": True}
REDUCTION = {"transfer_features": {"pca": 256}}


def fold_predictions(features: Any, split: pd.DataFrame, classifier: Mapping[str, Any],
                     reduce: Mapping[str, Any], seed: int) -> tuple[pd.DataFrame, set[str]]:
    """Every fold's test predictions by a model with these settings, and the paths its steps took."""
    blocks, groups, balanced = fused_layout(features.metadata, features.values.shape[1])
    tables, paths = [], set()
    for fold in sorted(split["fold"].unique()):
        rows, emotion = fold_rows(split, fold)
        X_train, y_train, _ = read_subset(features, rows, emotion, "train")
        X_validation, y_validation, _ = read_subset(features, rows, emotion, "validation")
        model = build_model(blocks, groups, classifier, REDUCTION, balanced, seed)
        if "reduce" in model.named_steps:
            model.set_params(**{f"reduce__{key}": value for key, value in reduce.items()})
        model.fit(np.vstack([X_train, X_validation]), np.concatenate([y_train, y_validation]))
        paths |= {f"{step} {path}" for step, path in cost_paths(model).items()}
        X_test, y_test, test_ids = read_subset(features, rows, emotion, "test")
        tables.append(prediction_table(model, X_test, pd.DataFrame({"fold": fold, "clip_id": test_ids,
                                                                    "emotion": y_test})))
    return pd.concat(tables, ignore_index=True), paths


def compare(features_dir: Path, split: pd.DataFrame, variants: list[str], components: list[int],
            batches: list[int], seed: int) -> pd.DataFrame:
    """One row per variant and approximation: the exact model's and the approximate one's test
    UAR, their difference and its paired bootstrap interval (speakers resampled)."""
    speaker = split.drop_duplicates("clip_id").set_index("clip_id")["speaker"]
    rows = []
    for variant in variants:
        features = ClipArrayDataset(path=str(features_dir / variant)).load()
        started = time.perf_counter()
        exact, _ = fold_predictions(features, split, SVM, {}, seed)
        exact_s = time.perf_counter() - started
        approximations = [(f"Nyström SVM, {m} columns", {**SVM, "exact_kernel_max_clips": 0,
                                                         "approximate_components": m}, {})
                          for m in components]
        if any(block["stream"] in REDUCTION for block in features.metadata.get("blocks", [])):
            approximations += [(f"incremental PCA, batches of {b}", SVM,
                                {"exact_max_clips": 0, "batch_clips": b}) for b in batches]
        for name, classifier, reduce in approximations:
            started = time.perf_counter()
            approximate, paths = fold_predictions(features, split, classifier, reduce, seed)
            units = speaker.loc[approximate["clip_id"]].to_numpy()
            difference = paired_bootstrap_difference(approximate, exact, units, seed=seed)
            uar = "unweighted_average_recall"
            rows.append({"variant": variant, "approximation": name, "paths": ", ".join(sorted(paths)),
                         "exact_uar": bootstrap_scores(exact, units)[uar]["estimate"],
                         "approximate_uar": bootstrap_scores(approximate, units)[uar]["estimate"],
                         "difference": difference[uar]["difference"], "low": difference[uar]["low"],
                         "high": difference[uar]["high"], "exact_s": exact_s,
                         "approximate_s": time.perf_counter() - started})
            print(rows[-1], flush=True)
    return pd.DataFrame(rows)


def synthetic_rows(n: int, columns: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Eight emotions, each a Gaussian around its own centre in a 32-dimensional subspace, float32,
    made block by block so that no float64 copy of the matrix exists."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 8, n)
    basis = rng.standard_normal((32, columns), dtype=np.float32) / np.sqrt(32)
    centres = rng.standard_normal((8, 32), dtype=np.float32)
    X = np.empty((n, columns), dtype=np.float32)
    for start in range(0, n, 4096):
        labels = y[start:start + 4096]
        latent = centres[labels] + 1.5 * rng.standard_normal((len(labels), 32), dtype=np.float32)
        X[start:start + 4096] = latent @ basis + rng.standard_normal((len(labels), columns), dtype=np.float32)
    return X, np.array([f"emotion_{label}" for label in y])


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # Linux: kilobytes


def synthetic(n: int, columns: int, exact: bool, seed: int, svm: Mapping[str, Any], svm_only: bool) -> None:
    """Time and peak memory of the models on `n` synthetic rows: with the default thresholds, or
    with the exact methods forced (`exact`), for their cost at a size both can run."""
    started = time.perf_counter()
    X, y = synthetic_rows(n, columns, seed)
    print(f"{n:,} x {columns:,} rows made: {time.perf_counter() - started:.0f} s, "
          f"peak {peak_rss_gb():.2f} GB")
    blocks = [{"stream": "synthetic", "start": 0, "stop": columns, "weight": 1.0}]
    models = [("SVM", None), ("PCA 256, then SVM", {"synthetic": {"pca": 256}})]
    for name, reduction in models[:1] if svm_only else models:
        started = time.perf_counter()
        model = build_model(blocks, None, {**svm, **({"exact_kernel_max_clips": n} if exact else {})},
                            reduction, True, seed)
        if exact and reduction:
            model.set_params(reduce__exact_max_clips=n)
        model.fit(X[:-2000], y[:-2000])
        accuracy = float((model.predict(X[-2000:]) == y[-2000:]).mean())
        print(f"{name}: {cost_paths(model)}, {time.perf_counter() - started:.0f} s, accuracy on 2,000 "
              f"held-out rows {accuracy:.3f}, peak {peak_rss_gb():.2f} GB", flush=True)


def markdown(table: pd.DataFrame) -> str:
    lines = ["| variant | approximation | exact UAR | approximate UAR | difference [95% interval] | "
             "time exact / approximate |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.approximation} | {r.exact_uar:.3f} | {r.approximate_uar:.3f} | "
              f"{r.difference:+.3f} [{r.low:+.3f}, {r.high:+.3f}] | "
              f"{r.exact_s:.0f} s / {r.approximate_s:.0f} s |"
              for r in table.itertuples()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, help="a run's fused_features folder (one folder a variant)")
    parser.add_argument("--split", type=Path, help="that run's data_split.csv (speaker-independent)")
    parser.add_argument("--variants", nargs="+", default=["compare_egemaps_mfcc_lpcc", "mfcc_lpcc_cnn"])
    parser.add_argument("--components", nargs="*", type=int, default=[250, 500, 1000])
    parser.add_argument("--pca-batches", nargs="*", type=int, default=[256, 512])
    parser.add_argument("--synthetic", type=int, help="instead: this many synthetic rows")
    parser.add_argument("--columns", type=int, default=6000)
    parser.add_argument("--exact", action="store_true", help="--synthetic with the exact methods forced")
    parser.add_argument("--kernel-matrix-min-columns", type=int, help="--synthetic: the SVM's setting")
    parser.add_argument("--svm-only", action="store_true", help="--synthetic: the SVM alone, no PCA")
    parser.add_argument("--seed", type=int, default=42)
    arguments = parser.parse_args()
    if arguments.synthetic:
        matrix = arguments.kernel_matrix_min_columns
        synthetic(arguments.synthetic, arguments.columns, arguments.exact, arguments.seed,
                  {**SVM, **({"kernel_matrix_min_columns": matrix} if matrix is not None else {})},
                  arguments.svm_only)
        return
    if arguments.features is None or arguments.split is None:
        parser.error("--features and --split are needed (or --synthetic N)")
    table = compare(arguments.features, pd.read_csv(arguments.split), arguments.variants,
                    arguments.components, arguments.pca_batches, arguments.seed)
    print(markdown(table))


if __name__ == "__main__":
    main()

"""How sure a score is: percentile bootstrap intervals for a model's accuracy, unweighted average
recall and macro F1, and for the difference between two models on the same test clips.

A test set is one draw of clips, often of a handful of speakers; a score on it is an estimate,
and the interval says how far another draw could move it. Rows are resampled by *unit*: a
unit is drawn with replacement with all its rows. With a speaker-independent split the unit has
to be the speaker, since clips of one speaker succeed or fail together and resampling clips
would make the interval too narrow; with units=None each row is its own unit.

The scores on a resample are those of `evaluate_predictions` (nodes.py) on the resampled table,
so the point estimate and the bootstrap distribution are of one and the same statistic: the
labels are the classes in that resample's truth or predictions; a class predicted but absent
from its truth counts with recall 0 (and F1 0) in the macro averages, as sklearn's
`zero_division=0` does, and a class absent from both is left out.

Pure: no Kedro, no I/O."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

SCORES = ("accuracy", "unweighted_average_recall", "macro_f1")
CLIP_KEYS = ["fold", "clip_id"]


def _unit_codes(units: pd.Series | np.ndarray | None, n_rows: int) -> tuple[np.ndarray, int]:
    """Each row's unit as 0..n_units-1, and n_units; one unit per row when `units` is None."""
    if units is None:
        return np.arange(n_rows), n_rows
    if len(units) != n_rows:
        raise ValueError(f"units gives {len(units)} values for {n_rows} rows: one per row, in their order")
    codes, uniques = pd.factorize(np.asarray(units))
    if (codes < 0).any():
        raise ValueError("units has missing values: every row needs a resampling unit")
    return codes, len(uniques)


def _class_indices(*tables: pd.DataFrame) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """The number of classes that are the truth or the prediction of a row of any of the tables,
    and each table's truths and predictions as indices into them, sorted as
    `evaluate_predictions`'s labels (as strings)."""
    columns = [table[column].to_numpy(dtype=str) for table in tables for column in ("emotion", "predicted")]
    labels, indices = np.unique(np.concatenate(columns), return_inverse=True)
    per_column = np.split(indices, np.cumsum([len(column) for column in columns])[:-1])
    return len(labels), list(zip(per_column[::2], per_column[1::2], strict=True))


def _class_counts(truth: np.ndarray, predicted: np.ndarray, n_classes: int, unit_codes: np.ndarray,
                  n_units: int) -> np.ndarray:
    """Per unit (axis 0) and class (axis 2), the rows whose truth is the class, the correct ones
    and those predicted as the class (axis 1, in that order): every score is a function of these,
    so resampling units is a matrix product."""
    def per_unit(cells: np.ndarray) -> np.ndarray:
        return np.bincount(cells, minlength=n_units * n_classes).reshape(n_units, n_classes)

    truth_cells = unit_codes * n_classes + truth
    return np.stack([per_unit(truth_cells), per_unit(truth_cells[truth == predicted]),
                     per_unit(unit_codes * n_classes + predicted)], axis=1)


def _scores(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, UAR and macro F1 of each table of class counts (axis 0: as `_class_counts`'s,
    summed or resampled; see the module's docstring for the labels that count). F1 = 2 correct /
    (true + predicted), which is 2PR / (P + R) where defined and 0 where sklearn's
    zero_division=0 makes it 0."""
    true, correct, predicted = counts[:, 0], counts[:, 1], counts[:, 2]
    labels_present = (true > 0) | (predicted > 0)
    n_labels = labels_present.sum(axis=-1)
    recall = np.divide(correct, true, out=np.zeros(correct.shape), where=true > 0)
    f1 = np.divide(2 * correct, true + predicted, out=np.zeros(correct.shape), where=labels_present)
    return {"accuracy": correct.sum(axis=-1) / true.sum(axis=-1),
            "unweighted_average_recall": recall.sum(axis=-1) / n_labels,
            "macro_f1": f1.sum(axis=-1) / n_labels}


def _total(counts: np.ndarray) -> np.ndarray:
    """The class counts of all rows, each unit once: for the point estimate."""
    return counts.sum(axis=0, keepdims=True)


def _resampled(counts: np.ndarray, unit_draws: np.ndarray) -> np.ndarray:
    """The class counts of every resample, from how many times each resample drew each unit: one
    matrix product (resamples x units) @ (units x counts). In integers, which is exact and numpy's
    own single-threaded loop: in floats, BLAS's threads spin against whatever else runs on two
    shared cores and made these thin products 10 to 100 times slower."""
    n_units, n_kinds, n_classes = counts.shape
    return (unit_draws @ counts.reshape(n_units, n_kinds * n_classes)).reshape(-1, n_kinds, n_classes)


def _unit_draws(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """A resamples x units matrix of how often each resample draws each unit: each row is
    multinomial(n_units, uniform). Drawn as n_units uniform unit indices per resample and
    counted, which is the same distribution and six times faster than Generator.multinomial
    for thousands of units."""
    drawn = np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))
    drawn += n_units * np.arange(n_resamples)[:, None]  # resample r's units are cells r * n_units + unit
    return np.bincount(drawn.ravel(), minlength=n_resamples * n_units).reshape(n_resamples, n_units)


def _interval(resampled: np.ndarray, confidence: float) -> dict[str, float]:
    """The percentile interval: the central `confidence` of the bootstrap distribution."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"low": float(low), "high": float(high)}


def classification_scores(predictions: pd.DataFrame) -> dict[str, float]:
    """Accuracy, unweighted average recall (the mean of per-emotion recalls, blind to class sizes)
    and macro F1 of a table of `emotion` and `predicted`: sklearn's numbers, from class counts
    (sklearn's own checks take a tenth of a second per call on string labels)."""
    n_classes, [(truth, predicted)] = _class_indices(predictions)
    scores = _scores(_total(_class_counts(truth, predicted, n_classes, np.zeros(len(truth), int), 1)))
    return {score: float(scores[score][0]) for score in SCORES}


def bootstrap_scores(predictions: pd.DataFrame, units: pd.Series | np.ndarray | None,
                     n_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """A model's accuracy, unweighted_average_recall and macro_f1 on all its test rows
    (`estimate`, equal to `evaluate_predictions`'s) with a percentile bootstrap interval (`low`,
    `high`) over `n_resamples` resamples of the units.

    `units` gives each row's resampling unit, one per row in the rows' order (the speaker where
    the split keeps speakers apart); None makes each row its own unit."""
    unit_codes, n_units = _unit_codes(units, len(predictions))
    n_classes, [(truth, predicted)] = _class_indices(predictions)
    counts = _class_counts(truth, predicted, n_classes, unit_codes, n_units)
    estimate = _scores(_total(counts))
    resampled = _scores(_resampled(counts, _unit_draws(n_units, n_resamples, seed)))
    return {score: {"estimate": float(estimate[score][0]), **_interval(resampled[score], confidence)}
            for score in SCORES}


def _aligned_reference(predictions: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """`reference`'s rows in the order of `predictions`'s, matched on (fold, clip_id); refuses
    tables of different clips (different splits) and tables that disagree on a clip's truth."""
    reference_rows = predictions[CLIP_KEYS].astype({"clip_id": str}).merge(
        reference[CLIP_KEYS].astype({"clip_id": str}).assign(reference_row=np.arange(len(reference))),
        on=CLIP_KEYS, how="left", validate="one_to_one")["reference_row"]
    shared = int(reference_rows.notna().sum())
    if not shared == len(predictions) == len(reference):
        raise ValueError(f"two models' test predictions share {shared} of their {len(predictions)} and "
                         f"{len(reference)} clips: they come from different splits; run `kedro run` again")
    aligned = reference.iloc[reference_rows.astype(int).to_numpy()]
    if not (aligned["emotion"].astype(str).to_numpy() == predictions["emotion"].astype(str).to_numpy()).all():
        raise ValueError("two models' test predictions give different true emotions for the same clips")
    return aligned


def paired_bootstrap_difference(predictions: pd.DataFrame, reference: pd.DataFrame,
                                units: pd.Series | np.ndarray | None, n_resamples: int = 1000,
                                seed: int = 0, confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """The difference of each score, `predictions`'s model minus `reference`'s, on all test rows
    (`difference`) with a percentile bootstrap interval (`low`, `high`).

    The tables are matched on (fold, clip_id) and every resample draws the same units for both
    models, so the interval is that of the difference itself: what the two share (hard clips,
    hard speakers) cancels, and it is narrower than the two models' own intervals suggest.
    `units` is as in `bootstrap_scores`, one per row of `predictions`."""
    aligned_reference = _aligned_reference(predictions, reference)
    unit_codes, n_units = _unit_codes(units, len(predictions))
    n_classes, indices = _class_indices(predictions, aligned_reference)
    counts = [_class_counts(truth, predicted, n_classes, unit_codes, n_units) for truth, predicted in indices]
    unit_draws = _unit_draws(n_units, n_resamples, seed)
    estimate, reference_estimate = (_scores(_total(table_counts)) for table_counts in counts)
    resampled, reference_resampled = (_scores(_resampled(table_counts, unit_draws))
                                      for table_counts in counts)
    return {score: {"difference": float(estimate[score][0] - reference_estimate[score][0]),
                    **_interval(resampled[score] - reference_resampled[score], confidence)}
            for score in SCORES}


def verdict(low: float, high: float) -> Literal["better", "worse", "the data cannot tell"]:
    """In words, what an interval of a difference (model minus reference) says: `better` or
    `worse` only when it excludes 0."""
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "the data cannot tell"

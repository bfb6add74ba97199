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

from typing import Literal, NamedTuple

import numpy as np
import pandas as pd

SCORES = ("accuracy", "unweighted_average_recall", "macro_f1")
CLIP_KEYS = ["fold", "clip_id"]


class ClassCounts(NamedTuple):
    """Rows per class (last axis) whose truth is the class, that are correct, and whose prediction
    is the class. Per unit these are units x classes; summed or resampled, resamples x classes.
    Every score is a function of these three, so resampling units is a matrix product."""

    true: np.ndarray
    correct: np.ndarray
    predicted: np.ndarray

    def total(self) -> ClassCounts:
        """The counts of all rows, each unit once: for the point estimate."""
        return ClassCounts(*(counts.sum(axis=0, keepdims=True) for counts in self))

    def resampled(self, unit_draws: np.ndarray) -> ClassCounts:
        """The counts of every resample, from how many times each resample drew each unit."""
        return ClassCounts(*(unit_draws @ counts for counts in self))


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


def _class_counts(predictions: pd.DataFrame, labels: list[str], unit_codes: np.ndarray,
                  n_units: int) -> ClassCounts:
    """Per unit and class, the rows whose truth is the class, the correct ones and those predicted
    as the class (floats, so that the resampling product goes to BLAS; integers up to 2**53
    are exact)."""
    label_codes = {label: code for code, label in enumerate(labels)}
    truth = predictions["emotion"].astype(str).map(label_codes).to_numpy()
    predicted = predictions["predicted"].astype(str).map(label_codes).to_numpy()
    size = n_units * len(labels)

    def per_unit(class_codes: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        cells = unit_codes * len(labels) + class_codes
        return np.bincount(cells, weights, minlength=size).astype(float).reshape(n_units, len(labels))

    return ClassCounts(per_unit(truth), per_unit(truth, (truth == predicted).astype(float)),
                       per_unit(predicted))


def _scores(counts: ClassCounts) -> dict[str, np.ndarray]:
    """Accuracy, UAR and macro F1 of each row of class counts (see the module's docstring for
    the labels that count). F1 = 2 correct / (true + predicted), which is 2PR / (P + R) where
    defined and 0 where sklearn's zero_division=0 makes it 0."""
    true, correct, predicted = counts
    labels_present = (true > 0) | (predicted > 0)
    n_labels = labels_present.sum(axis=-1)
    recall = np.divide(correct, true, out=np.zeros_like(correct), where=true > 0)
    f1 = np.divide(2 * correct, true + predicted, out=np.zeros_like(correct), where=labels_present)
    return {"accuracy": correct.sum(axis=-1) / true.sum(axis=-1),
            "unweighted_average_recall": recall.sum(axis=-1) / n_labels,
            "macro_f1": f1.sum(axis=-1) / n_labels}


def _unit_draws(n_units: int, n_resamples: int, seed: int) -> np.ndarray:
    """A resamples x units matrix of how often each resample draws each unit: each row is
    multinomial(n_units, uniform). Drawn as n_units uniform unit indices per resample and
    counted, which is the same distribution and six times faster than Generator.multinomial
    for thousands of units."""
    drawn = np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))
    cells = (drawn + n_units * np.arange(n_resamples)[:, None]).ravel()
    return np.bincount(cells, minlength=n_resamples * n_units).reshape(n_resamples, n_units).astype(float)


def _interval(resampled: np.ndarray, confidence: float) -> dict[str, float]:
    """The percentile interval: the central `confidence` of the bootstrap distribution."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")
    low, high = np.quantile(resampled, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"low": float(low), "high": float(high)}


def _labels(*tables: pd.DataFrame) -> list[str]:
    """Every class that is the truth or the prediction of a row of any of the tables."""
    return sorted(set().union(*(set(table[column].astype(str)) for table in tables
                                for column in ("emotion", "predicted"))))


def bootstrap_scores(predictions: pd.DataFrame, units: pd.Series | np.ndarray | None,
                     n_resamples: int = 1000, seed: int = 0,
                     confidence: float = 0.95) -> dict[str, dict[str, float]]:
    """A model's accuracy, unweighted_average_recall and macro_f1 on all its test rows
    (`estimate`, equal to `evaluate_predictions`'s) with a percentile bootstrap interval (`low`,
    `high`) over `n_resamples` resamples of the units.

    `units` gives each row's resampling unit, one per row in the rows' order (the speaker where
    the split keeps speakers apart); None makes each row its own unit."""
    unit_codes, n_units = _unit_codes(units, len(predictions))
    counts = _class_counts(predictions, _labels(predictions), unit_codes, n_units)
    estimate = _scores(counts.total())
    resampled = _scores(counts.resampled(_unit_draws(n_units, n_resamples, seed)))
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
    labels = _labels(predictions, aligned_reference)
    counts = [_class_counts(table, labels, unit_codes, n_units) for table in (predictions, aligned_reference)]
    unit_draws = _unit_draws(n_units, n_resamples, seed)
    estimate, reference_estimate = (_scores(model_counts.total()) for model_counts in counts)
    resampled, reference_resampled = (_scores(model_counts.resampled(unit_draws)) for model_counts in counts)
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

"""Which model a run's figures and `emofusion predict` stand for, chosen on validation clips only.

Across speaker folds every speaker is a test speaker of some fold, so a choice made on the mean
validation score over folds has seen every test label. A figure for "the model chosen on validation
clips" is therefore made fold by fold: in each fold, the candidate with the best score on that
fold's validation clips, scored on that fold's test clips; the folds' test predictions pooled. Ties
go to fewer streams, then to the name: never to a test score."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emofusion.learning.uncertainty import classification_scores, paired_bootstrap_difference


def fold_validation_uar(model_selection: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Each fold's validation UAR, from a model's record of its choices (metrics' `model_selection`)."""
    return {int(fold["fold"]): float(fold["validation_uar"]) for fold in model_selection
            if "validation_uar" in fold}


def choose_per_fold(candidates: Sequence[str], validation_uar: Mapping[str, Mapping[int, float]],
                    streams: Mapping[str, int]) -> dict[int, str]:
    """Per fold, the candidate of best validation UAR in that fold; ties to fewer `streams`, then
    to the first name. Folds some candidate lacks a score for are left out."""
    folds = set.intersection(*(set(validation_uar[candidate]) for candidate in candidates))
    return {fold: min(candidates, key=lambda c: (-validation_uar[c][fold], streams[c], c))
            for fold in sorted(folds)}


def chosen_predictions(choice: Mapping[int, str], predictions: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The test predictions of each fold's chosen model, pooled."""
    return pd.concat([predictions[model][predictions[model]["fold"] == fold]
                      for fold, model in choice.items()], ignore_index=True)


def describe_choice(choice: Mapping[int, str]) -> str:
    """`a.svm` when every fold chose model `a__svm`, else `a.svm (4 of 6 folds), b.svm (2)`."""
    ranked = Counter(model.replace("__", ".", 1) for model in choice.values()).most_common()
    if len(ranked) == 1:
        return ranked[0][0]
    (first, n), *rest = ranked
    return f"{first} ({n} of {len(choice)} folds), " + ", ".join(f"{model} ({k})" for model, k in rest)


def by_speaker(data_split: pd.DataFrame, data_split_settings: Mapping[str, Any]) -> bool:
    """Whether the clips of (part of) a split are to be treated by speaker (held out whole to stop
    early, resampled whole for an interval): the split keeps speakers apart and every clip has one
    (the split writes a missing speaker as text)."""
    if data_split_settings.get("split.strategy", "random") == "random":
        return False
    speakers = data_split["speaker"]
    return bool(speakers.notna().all() and not speakers.astype(str).isin(["nan", "None", ""]).any())


def resampling_units(data_split: pd.DataFrame, data_split_settings: Mapping[str, Any]) -> dict[str, str]:
    """What a bootstrap resamples, by clip id: the speaker, where the clips are treated by speaker
    (`by_speaker`: clips of one speaker are not independent); else the clip itself."""
    if by_speaker(data_split, data_split_settings):
        speakers = data_split.drop_duplicates("clip_id").set_index("clip_id")["speaker"]
        return {str(clip): f"speaker {speaker}" for clip, speaker in speakers.items()}
    return {str(clip): str(clip) for clip in data_split["clip_id"].unique()}


def stream_counts(summary: pd.DataFrame) -> pd.Series:
    """How many streams each model of a summary reads (its `streams`, joined by " + ")."""
    return summary["streams"].str.count(r" \+ ") + 1


def units_of(predictions: pd.DataFrame, units: Mapping[str, str]) -> np.ndarray:
    return predictions["clip_id"].astype(str).map(units).to_numpy()


def mcnemar_test(predictions: pd.DataFrame, reference: pd.DataFrame) -> tuple[float, int, int]:
    """Exact McNemar test of two models on the same test clips, matched on (fold, clip_id): only
    the clips that one model got right and the other wrong say which is better, and under "no
    difference" each is equally likely to go either way (a two-sided binomial test).

    Returns the p-value, the clips only `predictions` got right and the clips only `reference`
    got right (p = 1 when there are none)."""
    from scipy.stats import binomtest  # a second of imports, for the summary only: not in every run's process

    keys = ["fold", "clip_id"]
    right = [frame[keys].astype({"clip_id": str}).assign(
        right=(frame["predicted"].astype(str) == frame["emotion"].astype(str)).to_numpy())
        for frame in (predictions, reference)]
    paired = right[0].merge(right[1], on=keys, suffixes=("", "_reference"), validate="one_to_one")
    if not len(paired) == len(predictions) == len(reference):
        raise ValueError(f"two models' test predictions share {len(paired)} of their {len(predictions)} and "
                         f"{len(reference)} clips: they come from different splits; run `kedro run` again")
    won = int((paired["right"] & ~paired["right_reference"]).sum())
    lost = int((~paired["right"] & paired["right_reference"]).sum())
    return (binomtest(won, won + lost).pvalue if won + lost else 1.0), won, lost


def uar_of(predictions: pd.DataFrame) -> float:
    return classification_scores(predictions)["unweighted_average_recall"]


def compare_choices(candidates: Sequence[str], others: Sequence[str],
                    validation_uar: Mapping[str, Mapping[int, float]], streams: Mapping[str, int],
                    predictions: Mapping[str, pd.DataFrame], units: Mapping[str, str], seed: int
                    ) -> dict[str, Any]:
    """The model chosen on validation clips among `candidates` against the one chosen among
    `others`, fold by fold, on the same test clips: both choices, both UARs, the difference with
    its paired bootstrap interval, and McNemar's test. Empty when either side has no model."""
    if not candidates or not others:
        return {}
    choice, other_choice = (choose_per_fold(group, validation_uar, streams) for group in (candidates, others))
    chosen, other = chosen_predictions(choice, predictions), chosen_predictions(other_choice, predictions)
    difference = paired_bootstrap_difference(chosen, other, units_of(chosen, units), seed=seed)
    p, won, lost = mcnemar_test(chosen, other)
    uar = "unweighted_average_recall"
    return {"model": describe_choice(choice), "other": describe_choice(other_choice),
            "uar": uar_of(chosen), "other_uar": uar_of(other),
            "gain": difference[uar]["difference"], "gain_low": difference[uar]["low"],
            "gain_high": difference[uar]["high"], "p": p, "won": won, "lost": lost}


def model_rank(summary: pd.DataFrame) -> pd.Series:
    """Each model's place by validation UAR, ties to fewer streams, then to the name: the order of
    the summary, and the default model of `emofusion predict` first. Test scores play no part."""
    order = pd.DataFrame({"validation": -summary["validation_uar"].fillna(-np.inf),
                          "streams": stream_counts(summary),
                          "name": summary["variant"] + "." + summary["classifier"]})
    ranked = order.sort_values(["validation", "streams", "name"], kind="stable").index
    return pd.Series(np.arange(len(ranked)), index=ranked).reindex(summary.index)

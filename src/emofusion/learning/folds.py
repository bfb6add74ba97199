"""One fold of the shared split: its rows and clips, its inputs checked against the run's settings,
and the split and model card that record it; the fold loop of modelling and fine-tuning alike."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ClipArray, read_rows
from emofusion.errors import MissingClipsError
from emofusion.finished_folds import FinishedFolds, fold_fingerprint, resumed_folds
from emofusion.learning.selection import by_speaker
from emofusion.provenance import check_made_with


def fold_rows(data_split: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """One fold's rows of the split, and its clips' emotions: from the fold's own rows, since a clip
    tested here is a training clip of another fold."""
    rows = data_split[data_split["fold"] == fold]
    return rows, dict(zip(rows["clip_id"], rows["emotion"], strict=True))


def read_subset(features: ClipArray, rows: pd.DataFrame, emotion: Mapping[str, str], subset: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values, emotions and clip ids of one subset (train, validation, test) of a fold's
    `rows`, in file order (faster reads from a memory map)."""
    try:
        positions = np.sort(features.positions(list(rows.loc[rows["subset"] == subset, "clip_id"])))
    except MissingClipsError as error:
        raise KeyError(f"{len(error.missing)} clips of the split have no fused features (first: "
                       f"{error.missing[:3]}); the split and the features come from different runs: "
                       "run `kedro run` again") from error
    clip_ids = features.clip_ids[positions]
    return read_rows(features.values, positions), np.array([emotion[c] for c in clip_ids]), clip_ids


def speakers_apart(rows: pd.DataFrame, clip_ids: np.ndarray, data_split_settings: Mapping[str, Any]
                   ) -> np.ndarray | None:
    """Each of these clips' speaker, when the split keeps speakers apart and every clip has one: a
    network then holds whole training speakers out to stop early, as the split tests on unheard
    speakers."""
    if not by_speaker(rows, data_split_settings):
        return None
    return rows.set_index("clip_id")["speaker"].loc[clip_ids].astype(str).to_numpy()


def corpora_of(rows: pd.DataFrame, clip_ids: np.ndarray) -> np.ndarray:
    """Each of these clips' corpus (a split without corpora: one)."""
    if "corpus" not in rows:
        return np.full(len(clip_ids), "corpus")
    return rows.drop_duplicates("clip_id").set_index("clip_id")["corpus"].astype(str).loc[clip_ids].to_numpy()


def check_model_inputs(fused_features: ClipArray, data_split_settings: Mapping[str, Any], fusion_variant: Any,
                       parameters: Mapping[str, Any]) -> None:
    """Stop before training when the stored split or fused features were made with other settings
    than the run's `parameters` (their nodes are not part of a run such as `kedro run
    --namespaces=modelling.mfcc.svm`, so they are not remade). The fused features record their
    streams' settings too, and their variant as `fusion_variant`."""
    check_made_with("data_split", data_split_settings, parameters,
                    remake="`kedro run --nodes=split_clips`, then this run again; or `kedro run "
                           "--pipelines=modelling`")
    check_made_with("fused_features", fused_features.metadata.get("made_with", {}),
                    {**parameters, "fusion_variant": fusion_variant},
                    remake="`kedro run --pipelines=fusion` (which names any feature stream to make again "
                           "first), then this run again; or plain `kedro run`")


def split_used(data_split: pd.DataFrame, data_split_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The split a model is scored on, from the split itself: its folds, and the strategy, sizes and
    seed it was made with (no seed for speaker-independent folds)."""
    return {**{key.removeprefix("split."): value for key, value in data_split_settings.items()
               if key.startswith("split.")},
            "folds": int(data_split["fold"].nunique()), "seed": data_split_settings.get("random_seed")}


def stamp_fit_id(model: Any, model_card: dict[str, Any]) -> dict[str, Any]:
    """The card with `fit_id`, a hash of its own content, also set on the model as `fit_id_`: what
    `emofusion predict` compares to know that the model and card it read belong together while a run
    rewrites them. The same inputs give the same id, so a resumed run's files equal an
    uninterrupted one's."""
    fit_id = hashlib.sha256(json.dumps(model_card, sort_keys=True, default=str).encode()).hexdigest()[:16]
    model.fit_id_ = fit_id
    return {**model_card, "fit_id": fit_id}


def fold_results(data_split: pd.DataFrame, made_with: Mapping[str, Any], parameters: Mapping[str, Any],
                 finished_folds: FinishedFolds | None,
                 make: Callable[[list[int], Mapping[int, tuple[pd.DataFrame, dict[str, str]]]],
                                Iterable[tuple[int, Any]]]) -> tuple[list[int], list[Any]]:
    """The fold loop of every model: the folds (in order) and each one's result, stored by an earlier
    run with the same settings (`made_with` and the fold's clips) or made now by `make(folds to make,
    every fold's (rows, emotion by clip))`, which yields `(fold, result)` as each is done; each is
    stored as it comes (`finished_folds`, in a run), and the store reports what it reused."""
    folds = sorted(data_split["fold"].unique())
    inputs = {fold: fold_rows(data_split, fold) for fold in folds}
    by_fold = resumed_folds(finished_folds, {fold: {**made_with, "clips": fold_fingerprint(rows)}
                                             for fold, (rows, _) in inputs.items()},
                            parameters, lambda todo: make(todo, inputs))
    if finished_folds is not None:
        finished_folds.report(len(folds))
    return folds, [by_fold[fold] for fold in folds]

"""A fold's model, assembled from the fused features' layout and chosen over its validation clips:
`build_classifier` names a classifier kind, `build_model` puts block scaling, reduction and the
classifier in one sklearn Pipeline (the label order in `classes_`), and `select_and_fit` tries each
candidate setting and late-fusion weight and fits the best."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.metrics import recall_score
from sklearn.pipeline import Pipeline

from emofusion.errors import ClassifierConfigError
from emofusion.learning.blocks import BlockReducer, BlockScaler
from emofusion.learning.estimators import (
    LateFusionClassifier,
    fit_model,
    refits_on_validation,
)
from emofusion.learning.late_fusion import SCORE_TOLERANCE, best_late_weights, late_weight_candidates
from emofusion.learning.validators import SEARCHABLE_STREAM_SETTINGS
from emofusion.registry import BUILT_IN_CLASSIFIER_KINDS, estimator_class


def build_classifier(settings: Mapping[str, Any], random_seed: int) -> BaseEstimator:
    """`kind` picks the estimator (a built-in kind, or the import path under `estimator` that
    `registry.with_estimator` adds for a project's own); the other keys are its parameters. The
    seed goes to every estimator that takes one."""
    settings = {key: value for key, value in settings.items() if key != "search"}
    kind, path = settings.pop("kind", None), settings.pop("estimator", None)
    estimator = estimator_class(kind, {kind: path} if path else BUILT_IN_CLASSIFIER_KINDS)
    known = set(estimator().get_params())
    settable = known - {"random_state"}
    unknown = sorted(set(settings) - settable)
    if unknown:
        raise ClassifierConfigError(f"{kind} does not take {unknown}; it takes {sorted(settable)}")
    return estimator(**settings, **({"random_state": random_seed} if "random_state" in known else {}))


def _early_model(blocks: Sequence[Mapping[str, Any]], classifier: Mapping[str, Any], balanced: bool,
                 reduction: Mapping[str, Any], random_seed: int) -> Pipeline:
    """Block scaling, the optional per-stream PCA, the classifier: one Pipeline, so everything
    fitted on training clips travels with the model to `predict`. With a PCA step, the block
    weights are applied after it (see BlockReducer)."""
    ranges = [(int(b["start"]), int(b["stop"])) for b in blocks]
    weights = [float(b["weight"]) for b in blocks]
    components = [(reduction.get(b["stream"]) or {}).get("pca") for b in blocks]
    if all(c is None for c in components):
        steps: list[tuple[str, Any]] = [("scale", BlockScaler(ranges, weights, balanced))]
    else:
        steps = [("scale", BlockScaler(ranges, [1.0] * len(blocks), balanced)),
                 ("reduce", BlockReducer(ranges, components, weights))]
    steps.append(("classify", build_classifier(classifier, random_seed)))
    return Pipeline(steps)


def build_model(blocks: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[str]] | None,
                classifier: Mapping[str, Any], reduction: Mapping[str, Any] | None, balanced: bool,
                random_seed: int) -> Pipeline:
    """The unfitted model for a fused matrix with these blocks: one early-fusion Pipeline, or, when
    `groups` has several groups of streams, late fusion of one such Pipeline per group."""
    reduction = reduction or {}
    if not groups or len(groups) == 1:
        return _early_model(blocks, classifier, balanced, reduction, random_seed)
    by_stream = {b["stream"]: b for b in blocks}
    columns, models = [], []
    for group in groups:
        members, start = [], 0
        for stream in group:  # the group's blocks, renumbered from its own first column
            block = by_stream[stream]
            width = block["stop"] - block["start"]
            members.append({**block, "start": start, "stop": start + width})
            start += width
        columns.append([(by_stream[stream]["start"], by_stream[stream]["stop"]) for stream in group])
        models.append(_early_model(members, classifier, balanced, reduction, random_seed))
    return Pipeline([("classify", LateFusionClassifier(columns, models))])


def cost_paths(model: Pipeline) -> dict[str, str]:
    """Which method each fitted step used, chosen by its number of training clips: the SVM's kernel
    (`kernel`: exact, nystroem or linear) and the PCA's (`pca`: exact or incremental); for late
    fusion, per group of streams (`kernel.0`, ...)."""
    last = model[-1]
    pipelines = last.models_ if isinstance(last, LateFusionClassifier) else [model]
    paths = {}
    for group, pipeline in enumerate(pipelines):
        suffix = f".{group}" if len(pipelines) > 1 else ""
        for name, step, attribute in (("pca", "reduce", "path_"), ("kernel", "classify", "kernel_path_")):
            path = getattr(pipeline.named_steps.get(step), attribute, None)
            if path is not None:
                paths[name + suffix] = path
    return paths


def search_candidates(search: Mapping[str, Sequence[Any]] | None, groups: Sequence[Sequence[str]]
                      ) -> list[dict[str, Any]]:
    """Every combination of the search grid that applies to a variant with these groups of streams
    (one group per model): a `pca.<stream>` key counts only where the variant has that stream, a
    `block_weights.<stream>` key only where the stream shares its model with another (alone, its
    weight changes nothing: the kernel width follows the features' scale)."""
    grid = {}
    for key, values in (search or {}).items():
        setting, _, stream = key.partition(".")
        group = next((group for group in groups if stream in group), [])
        alone = setting == "block_weights" and len(group) < 2
        if setting in SEARCHABLE_STREAM_SETTINGS and (not group or alone):
            continue
        grid[key] = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else [values]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def _apply_candidate(candidate: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]],
                     classifier: Mapping[str, Any], reduction: Mapping[str, Any] | None
                     ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    blocks = [dict(block) for block in blocks]
    settings = {key: value for key, value in classifier.items() if key != "search"}
    reduction = {stream: dict(options or {}) for stream, options in (reduction or {}).items()}
    for key, value in candidate.items():
        setting, _, stream = key.partition(".")
        if setting == "block_weights":
            for block in blocks:
                if block["stream"] == stream:
                    block["weight"] = float(value)
        elif setting == "pca":
            reduction[stream] = {"pca": value}
        else:
            settings[key] = value
    return blocks, settings, reduction


def _fit_signature(preprocess: Pipeline) -> str:
    """What fitting the preprocessing depends on: candidates with equal signatures share one fit
    (the reducer's block weights act only when transforming)."""
    return repr([(name, sorted((key, repr(value)) for key, value in step.get_params(deep=False).items()
                               if not (isinstance(step, BlockReducer) and key == "weights")))
                 for name, step in preprocess.steps])


def fused_layout(metadata: Mapping[str, Any], width: int
                 ) -> tuple[list[Mapping[str, Any]], list[list[str]] | None, bool]:
    """The blocks, the groups of streams (late fusion, else None) and whether blocks are balanced,
    as fused features' metadata records them; features without blocks are one block."""
    blocks = metadata.get("blocks") or [{"stream": "features", "start": 0, "stop": width, "weight": 1.0}]
    return list(blocks), metadata.get("groups"), metadata.get("block_scaling", "balanced") == "balanced"


def _uar(validation: tuple[np.ndarray, np.ndarray], model: Any) -> float:
    """The validation clips' unweighted average recall of `model`'s answers (its most probable class)."""
    return float(recall_score(validation[1], model.predict(validation[0]), average="macro", zero_division=0))


def _late_uar(model: Pipeline, validation: tuple[np.ndarray, np.ndarray], weights: tuple[float, ...]
              ) -> float:
    model[-1].set_params(weights=list(weights))
    return _uar(validation, model)


def _fit_early(model: Pipeline, preprocessed: dict[str, tuple[Pipeline, np.ndarray, np.ndarray]],
               train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
               train_groups: np.ndarray | None) -> tuple[float, Any, Pipeline]:
    """An early-fusion candidate fitted and scored: its scaling and PCA fitted, and the training and
    validation clips transformed, once per signature (`preprocessed`, shared by the candidates that
    differ only after them), its classifier on the transformed clips. Returns the score, the
    classifier and the shared preprocessing."""
    preprocess, estimator = model[:-1], model[-1]
    signature = _fit_signature(preprocess)
    if signature not in preprocessed:  # with a PCA step, the clips transformed once, without weights
        fitted = preprocess.fit(*train)
        if "reduce" in fitted.named_steps:
            fitted.named_steps["reduce"].set_params(weights=[])
        preprocessed[signature] = (fitted, fitted.transform(train[0]), fitted.transform(validation[0]))
    shared, train_rows, validation_rows = preprocessed[signature]
    if "reduce" in model.named_steps:
        reducer = shared.named_steps["reduce"].set_params(weights=model.named_steps["reduce"].weights)
        train_rows, validation_rows = reducer.reweighted(train_rows), reducer.reweighted(validation_rows)
    fit_model(estimator, train_rows, train[1], train_groups)
    return _uar((validation_rows, validation[1]), estimator), estimator, shared


def _voting_while_searching(classifier_options: Mapping[str, Any], random_seed: int, late: bool,
                            candidates: int) -> dict[str, Any]:
    """A classifier that calibrates probabilities by extra fits (the SVM) compares the candidates of
    early fusion by its vote, without them; the chosen one is then scored as it answers (its most
    probable class)."""
    calibrates = (classifier_options.get("probability", True)
                  and "probability" in build_classifier(classifier_options, random_seed).get_params())
    return {"probability": False} if not late and candidates > 1 and calibrates else {}


def select_and_fit(features_metadata: Mapping[str, Any], classifier_options: Mapping[str, Any],
                   reduction_options: Mapping[str, Any] | None, random_seed: int,
                   train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
                   train_groups: np.ndarray | None = None) -> tuple[Pipeline, dict[str, Any]]:
    """One fold's fitted model (block scaling, optional PCA, classifier; for late fusion one such
    model per group of streams) for fused features with this metadata (`fused_layout`).

    Every candidate of the classifier's `search` grid (and, for late fusion, each combiner weight)
    is fitted on the training clips alone (a network holds some of them out, whole speakers given
    `train_groups`, to stop early) and scored by unweighted average recall on the validation
    clips, which no model has seen; the score recorded is that of the chosen candidate's answers
    (its most probable class, as in testing and `emofusion predict`), so the scores of all kinds of
    model are comparable.
    The chosen model is then fitted again on training and validation clips together, except
    networks (`refits_on_validation`). Test clips play no part.

    Returns the fitted model and a record of the choice."""
    blocks, groups, balanced = fused_layout(features_metadata, train[0].shape[1])
    groups = groups or [[b["stream"] for b in blocks]]
    candidates = search_candidates(classifier_options.get("search"), groups)
    late = len(groups) > 1
    combiner_weights: list[Any] = late_weight_candidates(len(groups)) if late else [None]

    def build(candidate: Mapping[str, Any], **overrides: Any) -> Pipeline:
        candidate_blocks, settings, candidate_reduction = _apply_candidate(
            candidate, blocks, classifier_options, reduction_options)
        return build_model(candidate_blocks, groups, {**settings, **overrides}, candidate_reduction, balanced,
                           random_seed)

    voting = _voting_while_searching(classifier_options, random_seed, late, len(candidates))
    best: tuple[float, dict[str, Any], Any, Pipeline] | None = None
    preprocessed: dict[str, tuple[Pipeline, np.ndarray, np.ndarray]] = {}
    for candidate in candidates:
        model = build(candidate, **voting)
        if late:  # the combiner weights act at prediction: one fit serves them all
            fit_model(model, *train, train_groups)
            score, weights, _ = best_late_weights(partial(_late_uar, model, validation), len(groups))
            if best is None or score > best[0] + SCORE_TOLERANCE:
                best = (score, candidate, weights, None if refits_on_validation(model) else model)
            continue
        score, estimator, shared = _fit_early(model, preprocessed, train, validation, train_groups)
        if best is None or score > best[0] + SCORE_TOLERANCE:
            best = (score, candidate, None, None if refits_on_validation(estimator)
                    else Pipeline([*copy.deepcopy(shared).steps, ("classify", estimator)]))
    score, candidate, weights, model = best
    if voting:
        score = _uar(validation, fit_model(build(candidate), *train))
    if model is None:  # refitted on training and validation clips; no network is, so no groups
        model = fit_model(build(candidate), np.vstack([train[0], validation[0]]),
                          np.concatenate([train[1], validation[1]]))
    chosen = dict(candidate)
    if weights is not None:
        model[-1].set_params(weights=list(weights))
        chosen["late_weights"] = [round(w, 4) for w in weights]
    return model, {"candidates": len(candidates) * len(combiner_weights), "chosen": chosen,
                   "validation_uar": score}



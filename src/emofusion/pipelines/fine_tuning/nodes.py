"""Fine-tune a network per fold of the shared split, predict its test clips once, and late-fuse its
class probabilities with a classical model; outputs in modelling's formats (test predictions, model
card, then modelling's own `evaluate_predictions`), so the summary, the report and `emofusion
predict` take these models as they take modelling's."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from emofusion.clip_array import ClipArray
from emofusion.finished_folds import FinishedFolds
from emofusion.instances import fused_features_name
from emofusion.learning.folds import (
    check_model_inputs,
    fold_results,
    fold_rows,
    read_subset,
    speakers_apart,
    split_used,
    stamp_fit_id,
)
from emofusion.learning.late_fusion import best_late_weights
from emofusion.learning.network_settings import network_input
from emofusion.learning.predictions import combined_predictions, prediction_table
from emofusion.learning.uncertainty import classification_scores
from emofusion.provenance import check_made_with
from emofusion.registry import with_estimator

if TYPE_CHECKING:
    from .estimators import FineTunedNetwork, InputLateFusion

logger = logging.getLogger(__name__)

SPLIT_REMAKE = "`kedro run --nodes=split_clips`, then this run again; or `kedro run --pipelines=modelling`"


def _uar(emotions: np.ndarray, predicted: np.ndarray) -> float:
    scores = classification_scores(pd.DataFrame({"emotion": np.asarray(emotions),
                                                 "predicted": np.asarray(predicted)}))
    return float(scores["unweighted_average_recall"])


def _network_block(spectrograms: ClipArray, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The spectrogram stream (by its dataset's name) as modelling's metrics describe a block, with
    the backbone."""
    source = (
        {
            "backbone": settings["backbone"]["name"],
            "weights": settings["weights"] or "random initialisation (not pretrained)",
            "pretrained": settings["weights"] is not None,
        }
        if settings["kind"] == "cnn"
        else {}
    )
    return {
        "stream": network_input(settings),
        "start": 0,
        "stop": int(np.prod(spectrograms.values.shape[1:])),
        "weight": 1.0,
        "source": source,
    }


def fine_tune_and_predict(
    spectrograms: ClipArray,
    data_split: pd.DataFrame,
    data_split_settings: Mapping[str, Any],
    parameters: Mapping[str, Any],
    finished_folds: FinishedFolds | None = None,
    *,
    settings: Mapping[str, Any],
) -> tuple[FineTunedNetwork, dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Per fold: fine-tune the network on its training clips, stopping early on its validation
    clips, then predict its validation clips (for late fusion) and its test clips once. Returns the
    first fold's network, its model card (inputs' settings, the epoch kept per fold, the training
    history per fold, the split), the test predictions, and the validation and test predictions
    with their `subset` (held-out predictions, which late fusion reads). Each fold is stored as it
    finishes (`finished_folds`, in a run), and a rerun reuses those made with the same settings.

    `spectrograms` is `log_mel_spectrogram`, or with `speaker_normalisation: speaker`
    `log_mel_spectrogram_spk`; the model card then records the normalisation, with the training
    run's fallback statistics, under `features.speaker_normalisation`, so that `emofusion predict`
    asks for the speakers of new files and standardises them as in training. `settings`: the entry
    as the run specification checked it (`network_settings`), bound when the pipeline is built."""
    name, normalisation = _checked_inputs(spectrograms, data_split_settings, settings, parameters)
    made_with = {"input": spectrograms.metadata.get("made_with", {}), "data_split": data_split_settings,
                 "settings": settings}
    # One fold at a time: a fine-tuned network uses every core, and the memory of one.
    folds, results = fold_results(
        data_split, made_with, parameters, finished_folds,
        lambda todo, inputs: ((fold, _fine_tune_fold(spectrograms, *inputs[fold], fold, len(inputs), settings,
                                                     data_split_settings, keep_network=fold == min(inputs)))
                              for fold in todo))
    first = results[0]["network"]
    tests = [result["test"] for result in results]
    validations = [result["validation"] for result in results]
    model_card = {
        "classes": [str(label) for label in first.classes_], "classifier": settings, "fold": int(folds[0]),
        "ran_with": first.ran_with_, "inputs": {name: spectrograms.metadata},
        "features": {"blocks": [_network_block(spectrograms, settings)],
                     "speaker_normalisation": normalisation},
        "model_selection": [result["selection"] for result in results],
        "history": [result["history"] for result in results],
        "split": split_used(data_split, data_split_settings),
    }
    held_out = [frame.assign(subset=subset)
                for subset, frames in (("validation", validations), ("test", tests)) for frame in frames]
    return first, stamp_fit_id(first, model_card), combined_predictions(tests), combined_predictions(held_out)


def _checked_inputs(spectrograms: ClipArray, data_split_settings: Mapping[str, Any],
                    settings: Mapping[str, Any], parameters: Mapping[str, Any]) -> tuple[str, Any]:
    """The split and the spectrograms refused if made with other settings than the run's, or if the
    spectrograms' speaker normalisation is not the entry's; returns their dataset name and
    normalisation record."""
    check_made_with("data_split", data_split_settings, parameters, remake=SPLIT_REMAKE)
    name = network_input(settings)
    check_made_with(name, spectrograms.metadata.get("made_with", {}), parameters,
                    remake=f"`kedro run --to-outputs={name}`, then this run again")
    normalisation = spectrograms.metadata.get("speaker_normalisation")
    if (settings["speaker_normalisation"] == "speaker") != bool(normalisation):
        raise ValueError(
            f"this entry says speaker_normalisation: {settings['speaker_normalisation']}, but its "
            f"input {name} is {'' if normalisation else 'not '}standardised per speaker: it is wired "
            "to the wrong dataset"
        )
    return name, normalisation


def _fine_tune_fold(
    spectrograms: ClipArray,
    rows: pd.DataFrame,
    emotion: Mapping[str, str],
    fold: int,
    folds: int,
    settings: Mapping[str, Any],
    data_split_settings: Mapping[str, Any],
    keep_network: bool,
) -> dict[str, Any]:
    """One fold's network, its choice and history, and its validation and test predictions; the
    network itself only where the node returns it."""
    # scikit-learn and TensorFlow: not imported by every run's process, which builds this pipeline
    from .estimators import FineTunedNetwork

    started = time.perf_counter()
    X_train, y_train, train_ids = read_subset(spectrograms, rows, emotion, "train")
    network = FineTunedNetwork(settings).fit(
        X_train, y_train, speakers_apart(rows, train_ids, data_split_settings)
    )
    del X_train
    validation, test = (_predicted_subset(network, spectrograms, rows, emotion, subset, fold)
                        for subset in ("validation", "test"))
    score = _uar(validation["emotion"], validation["predicted"])
    selection = {
        "fold": int(fold),
        "candidates": 1,
        "validation_uar": score,
        "chosen": {
            "epoch": network.best_epoch(),
            **({"image_size": network.history_["image_size"][-1]} if settings["kind"] == "cnn" else {}),
        },
    }
    accuracy = float((test["emotion"] == test["predicted"]).mean())
    logger.info("Fold %d/%d: kept epoch %d of %d, validation UAR %.3f; tested on %d clips: "
                "accuracy %.3f (%.1f s)", fold + 1, folds, network.best_epoch(),
                len(network.history_["loss"]), score, len(test), accuracy, time.perf_counter() - started)
    return {"network": network if keep_network else None, "selection": selection,
            "history": {"fold": int(fold), **network.history_}, "test": test, "validation": validation}


def _predicted_subset(network: FineTunedNetwork, spectrograms: ClipArray, rows: pd.DataFrame,
                      emotion: Mapping[str, str], subset: str, fold: int) -> pd.DataFrame:
    """One forward pass over a fold's subset: the prediction is the most probable class."""
    X, y, clip_ids = read_subset(spectrograms, rows, emotion, subset)
    return prediction_table(network, X, pd.DataFrame({"fold": fold, "clip_id": clip_ids, "emotion": y}),
                            probabilities=network.predict_proba(X))


def late_fuse_and_predict(
    fused_features: ClipArray,
    data_split: pd.DataFrame,
    data_split_settings: Mapping[str, Any],
    network: FineTunedNetwork,
    network_card: Mapping[str, Any],
    network_held_out: pd.DataFrame,
    model_options: Mapping[str, Any],
    parameters: Mapping[str, Any],
) -> tuple[InputLateFusion, dict[str, Any], pd.DataFrame]:
    """Late fusion of the fine-tuned network's class probabilities with a classical model of a
    fusion variant (`model_options`: its `variant` and modelling `classifier`). Per fold, the classical
    model (the classifier's settings as they are, its `search` aside) is fitted on the training
    clips only, so that its validation probabilities are honest; the weights of the two
    (modelling's late-fusion grid) are chosen by unweighted average recall on the validation clips;
    the test clips are predicted once.

    The network is the one already fine-tuned per fold: its validation and test predictions
    (`network_held_out`) are read, not recomputed. When the network's spectrograms or the variant's
    features are standardised per speaker, the model card says so under
    `features.speaker_normalisation` (`emofusion predict` then needs the speakers), and each input
    keeps its own fallback statistics in its metadata under `inputs`."""
    # scikit-learn: not imported by every run's process, which builds this pipeline
    from emofusion.learning.assembly import build_model, fused_layout

    from .estimators import InputLateFusion  # scikit-learn's estimator interface

    variant, random_seed = model_options["variant"], parameters["random_seed"]
    check_model_inputs(
        fused_features, data_split_settings, parameters["fusion_variants"][variant], parameters
    )
    classifier = parameters["classifiers"][model_options["classifier"]]
    metadata = fused_features.metadata
    blocks, groups, balanced = fused_layout(metadata, fused_features.values.shape[1])
    settings = {key: value for key, value in classifier.items() if key != "search"}
    first, selections, tests = None, [], []
    (network_name,) = network_card["inputs"]
    by_clip = {
        name: frame.set_index(["fold", "clip_id"]) for name, frame in network_held_out.groupby("subset")
    }
    for fold in sorted(data_split["fold"].unique()):
        rows, emotion = fold_rows(data_split, fold)
        classical = build_model(blocks, groups, with_estimator(settings, parameters),
                                parameters.get("reduction"), balanced, random_seed)
        weights, test, selection = _late_fuse_fold(fused_features, rows, emotion, fold, classical,
                                                   network.classes_, by_clip, data_split_settings,
                                                   settings.get("kind"))
        tests.append(test)
        selections.append(selection)
        if first is None:
            first = InputLateFusion({network_name: network, fused_features_name(variant): classical},
                                    list(weights))
    normalisation = (network_card["features"].get("speaker_normalisation")
                     or metadata.get("speaker_normalisation"))
    model_card = {
        "classes": [str(label) for label in first.classes_], "classifier": settings,
        "fold": network_card["fold"],
        "inputs": {**network_card["inputs"], fused_features_name(variant): metadata},
        "features": {"blocks": [*network_card["features"]["blocks"], *blocks], "fusion": "late",
                     "speaker_normalisation": normalisation},
        "model_selection": selections, "split": split_used(data_split, data_split_settings),
    }
    return first, stamp_fit_id(first, model_card), combined_predictions(tests)


def _late_fuse_fold(fused_features: ClipArray, rows: pd.DataFrame, emotion: Mapping[str, str], fold: int,
                    classical: Any, network_classes: np.ndarray, held_out: Mapping[str, pd.DataFrame],
                    data_split_settings: Mapping[str, Any], kind: str | None
                    ) -> tuple[tuple[float, ...], pd.DataFrame, dict[str, Any]]:
    """One fold of late fusion: the classical model fitted on the training clips, the two weights
    chosen on the validation clips, the test clips predicted once. Returns the weights, the test
    predictions and the record of the choice."""
    # scikit-learn: not imported by every run's process, which builds this pipeline
    from emofusion.learning.estimators import fit_model

    from .estimators import combined_probabilities  # a module of scikit-learn estimators

    X_train, y_train, train_ids = read_subset(fused_features, rows, emotion, "train")
    X_validation, y_validation, validation_ids = read_subset(fused_features, rows, emotion, "validation")
    fit_model(classical, X_train, y_train, speakers_apart(rows, train_ids, data_split_settings))
    if list(classical.classes_) != list(network_classes):
        raise ValueError(f"fold {fold}: the network and the {kind} model know different emotions")
    columns = [f"p_{label}" for label in classical.classes_]

    def network_probabilities(subset: str, clip_ids: np.ndarray) -> np.ndarray:
        return held_out[subset].loc[[(fold, c) for c in clip_ids], columns].to_numpy(np.float64)

    candidates = [network_probabilities("validation", validation_ids), classical.predict_proba(X_validation)]
    score, weights, tried = best_late_weights(lambda w: _uar(
        y_validation, classical.classes_[combined_probabilities(candidates, w).argmax(axis=1)]), 2)
    X_test, y_test, test_ids = read_subset(fused_features, rows, emotion, "test")
    probabilities = combined_probabilities(
        [network_probabilities("test", test_ids), classical.predict_proba(X_test)], weights)
    clips = pd.DataFrame({"fold": fold, "clip_id": test_ids, "emotion": y_test})
    test = prediction_table(classical, X_test, clips, probabilities=probabilities)
    logger.info("Fold %d: late weights %s (network, %s), validation UAR %.3f", fold, weights, kind, score)
    return weights, test, {"fold": int(fold), "candidates": tried, "validation_uar": score,
                           "chosen": {"late_weights": [round(w, 4) for w in weights]}}


def training_curves_figure(model_card: Mapping[str, Any]) -> go.Figure:
    """Loss and accuracy per epoch, training and validation, one line per fold; the kept epoch marked."""
    figure = make_subplots(rows=1, cols=2, subplot_titles=("Loss", "Accuracy"), horizontal_spacing=0.1)
    for history in model_card["history"]:
        epochs = list(range(1, len(history["loss"]) + 1))
        for column, metric in ((1, "loss"), (2, "accuracy")):
            for prefix, dash in (("", "dot"), ("val_", "solid")):
                figure.add_trace(
                    go.Scatter(
                        x=epochs,
                        y=history[f"{prefix}{metric}"],
                        mode="lines",
                        line={"dash": dash},
                        name=f"fold {history['fold']} {'validation' if prefix else 'training'}",
                        legendgroup=f"{history['fold']}{prefix}",
                        showlegend=column == 1,
                    ),
                    1,
                    column,
                )
    for selection in model_card["model_selection"]:
        figure.add_vline(x=selection["chosen"]["epoch"], line={"color": "grey", "width": 1})
    figure.update_xaxes(title_text="epoch")
    figure.update_layout(
        title=f"Training curves ({model_card['split']['strategy']} split; grey: epochs kept; "
        "training scores are on augmented batches)",
        height=420,
        width=980,
    )
    return figure

"""Emotions of new recordings from a trained model.

The new files go through the project's own pipelines, the same nodes and wiring that made the
training features (data_processing from the manifest on, feature_extraction, transfer_features and
the model's fusion variant, or the spectrograms a fine-tuned network reads), on an in-memory
catalog. The features' recorded settings, from the
audio preprocessing to the CNN, are then compared with those in the model card: a model trained on
features made differently is refused rather than fed features it has never seen."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from emofusion.clip_array import ClipArray
from emofusion.pipelines.data_processing.corpora import AUDIO_EXTENSIONS, CLIP_COLUMNS, list_audio

# Facts about a run, not settings: they differ between runs that make identical features.
RUN_FACTS = frozenset({"seconds", "clips_per_second", "fingerprint", "device", "batch_size", "versions",
                       "offline_fallback"})
# The same settings again, by parameter path, for the checks between pipelines (emofusion.provenance):
# compared here under their own keys, and absent from model cards written before it.
RESTATED = frozenset({"made_with"})
FEATURE_PIPELINES = ("data_processing", "feature_extraction", "transfer_features", "fusion")


class ModelMismatchError(ValueError):
    """A trained model that cannot be applied to features made with the project's settings now."""


def audio_files(paths: Sequence[Path]) -> list[Path]:
    """The files given, and every audio file under the folders given."""
    files = []
    for path in paths:
        if path.is_dir():
            found = [path / relative for relative in list_audio(str(path), path)]
            if not found:
                raise FileNotFoundError(
                    f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) under {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return files


def setting_differences(trained: Any, now: Any, where: str = "") -> list[str]:
    """Every setting that differs between two feature metadata trees, as 'path: trained -> now'."""
    if isinstance(trained, Mapping) and isinstance(now, Mapping):
        return [difference for key in sorted(set(trained) | set(now), key=str)
                if key not in RUN_FACTS | RESTATED
                for difference in setting_differences(trained.get(key), now.get(key),
                                                      f"{where}.{key}" if where else str(key))]
    if isinstance(trained, list) and isinstance(now, list) and len(trained) == len(now):
        return [difference for i, (a, b) in enumerate(zip(trained, now, strict=True))
                for difference in setting_differences(a, b, f"{where}[{i}]")]
    return [] if trained == now else [f"{where}: {trained!r} when trained, {now!r} now"]


def _parameter(parameters: Mapping[str, Any], name: str) -> Any:
    """A node's parameter input: `params:a.b`, or `parameters`, all of them."""
    if name == "parameters":
        return parameters
    value: Any = parameters
    for key in name.removeprefix("params:").split("."):
        value = value[key]
    return value


def features_of(files: Sequence[Path], datasets: Sequence[str], pipelines: Mapping[str, Pipeline],
                parameters: Mapping[str, Any]) -> tuple[dict[str, ClipArray], pd.DataFrame]:
    """These files' features as the named datasets (`fusion.<variant>.fused_features`,
    `log_mel_spectrogram`...), and the files rejected (silent, unreadable, too short) with the
    reason, through the project's pipelines. Empty when every file was rejected."""
    steps = sum((pipelines[name] for name in FEATURE_PIPELINES), Pipeline([]))
    steps = steps.from_inputs("corpus_manifest").to_outputs(*datasets, "audio_rejections")
    names = [str(f) for f in files]
    manifest = pd.DataFrame({"clip_id": names, "corpus": "new", "path": names}).reindex(columns=CLIP_COLUMNS)
    catalog = DataCatalog({"corpus_manifest": MemoryDataset(manifest),
                           "stored_transfer_features": MemoryDataset(None)})
    for name in steps.inputs() - {"corpus_manifest", "stored_transfer_features"}:
        catalog[name] = _parameter(parameters, name)
    outputs = SequentialRunner().run(steps, catalog)
    rejected = outputs["audio_rejections"].load()
    if any(name not in outputs for name in datasets):  # every file was rejected: nothing got that far
        return {}, rejected
    return {name: outputs[name].load() for name in datasets}, rejected


def model_inputs(variant: str, model_card: Mapping[str, Any]) -> dict[str, Any]:
    """The datasets a model reads, with the metadata they had in training: those its card names
    (fine-tuned networks and their late fusion), else its fusion variant's features."""
    return dict(model_card.get("inputs") or {f"fusion.{variant}.fused_features": model_card["features"]})


def predict_emotions(files: Sequence[Path], variant: str, model: Any, model_card: Mapping[str, Any],
                     pipelines: Mapping[str, Pipeline], parameters: Mapping[str, Any]
                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per readable file: its predicted emotion and the probability of each emotion; and
    the rejected files with the reason. A model of one input takes that input's rows; a model of
    several (late fusion of a network and a fusion variant) takes them by dataset name."""
    if list(map(str, model.classes_)) != list(model_card["classes"]):
        raise ModelMismatchError("the model and its model card name different emotions: they come from "
                                 "different runs; run `kedro run --pipeline=modelling` again")
    trained = model_inputs(variant, model_card)
    features, rejected = features_of(files, list(trained), pipelines, parameters)
    if not features or len(next(iter(features.values())).clip_ids) == 0:
        return pd.DataFrame(columns=["file", "emotion"]), rejected
    clip_ids = next(iter(features.values())).clip_ids
    # Through JSON, as the model card was, so that a tuple and a list of the same values are equal.
    differences = [difference for name, metadata in trained.items()
                   for difference in setting_differences(metadata,
                                                         json.loads(json.dumps(features[name].metadata)))]
    if differences:
        raise ModelMismatchError(
            f"this {variant} model was trained on features made with other settings than the project "
            "has now:\n  " + "\n  ".join(differences[:20]) + "\nRestore those settings, or train again "
            "with these (`kedro run`).")
    values = {name: array.select(list(clip_ids)).values for name, array in features.items()}
    X = values if "inputs" in model_card and len(values) > 1 else next(iter(values.values()))
    table = pd.DataFrame({"file": clip_ids, "emotion": model.predict(X)})
    if hasattr(model, "predict_proba"):  # not an SVM trained with probability: false
        table = table.join(pd.DataFrame(model.predict_proba(X),
                                        columns=[f"p_{label}" for label in model.classes_]))
    return table, rejected

"""Checked fine-tuning entries, without importing TensorFlow, so that a bad entry fails when the
pipelines are built, before anything runs.

An entry of `fine_tuning.models` is merged over `fine_tuning.defaults` (key by key, one level of
nesting), then checked; the result is plain JSON-able data that travels to the training process."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emofusion.errors import FineTuningConfigError
from emofusion.fusion_layout import SPEAKER_NORMALISED_SPECTROGRAMS
from emofusion.imagenet.config import backbone_spec

NETWORK_KINDS = ("cnn", "lstm")
LATE_FUSION = "late_fusion"
# The spectrograms a network can read: as they are, or standardised per speaker by the fusion
# pipeline (log_mel_spectrogram_spk).
NETWORK_NORMALISATIONS = ("none", "speaker")
FINE_TUNING_PRECISIONS = ("auto", "float32", "mixed_bfloat16")  # no float16: two optimizers, no loss scaling
SEQUENCE_FEATURES = ("mfcc", "log_mel")
AUGMENTATION_KEYS = (
    "mixup_alpha",
    "time_masks",
    "time_mask_width",
    "frequency_masks",
    "frequency_mask_width",
    "time_shift",
)
NETWORK_INPUT = "log_mel_spectrogram"  # the dataset a network reads (see `network_input`)


def network_input(settings: Mapping[str, Any]) -> str:
    """The spectrogram dataset a checked network entry trains, validates, tests and predicts on: with
    `speaker_normalisation: speaker`, the fusion pipeline's spectrograms with each mel band
    standardised by the clip's own speaker's statistics."""
    by_speaker = settings["speaker_normalisation"] == "speaker"
    return SPEAKER_NORMALISED_SPECTROGRAMS if by_speaker else NETWORK_INPUT


def merged_entry(defaults: Mapping[str, Any] | None, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry over the defaults; mappings (augmentation, optimizer, lstm) merge key by key."""
    merged = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in (defaults or {}).items()
    }
    for key, value in entry.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _positive(name: str, value: Any, kind: type = int, zero: bool = False) -> Any:
    ok = (
        isinstance(value, int | float) and not isinstance(value, bool) and (value >= 0 if zero else value > 0)
    )
    if not ok or (kind is int and not isinstance(value, int)):
        raise FineTuningConfigError(
            f"{name} must be a {'non-negative' if zero else 'positive'} "
            f"{'integer' if kind is int else 'number'}, got {value!r}"
        )
    return kind(value)


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise FineTuningConfigError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


def _stages(name: str, image_size: Any, epochs: int) -> list[dict[str, Any]]:
    """`image_size` [h, w] (one stage of `epochs`), or a progressive schedule: a list of
    {size: [h, w], epochs: n}, smallest images first."""

    def size(value: Any) -> list[int]:
        if (
            not isinstance(value, list | tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and v >= 32 for v in value)
        ):
            raise FineTuningConfigError(
                f"{name}: an image size is [height, width] of at least 32 pixels, got {value!r}"
            )
        return [int(v) for v in value]

    if isinstance(image_size, list | tuple) and image_size and isinstance(image_size[0], Mapping):
        return [
            {
                "size": size(stage.get("size")),
                "epochs": _positive(f"{name}: stage epochs", stage.get("epochs")),
            }
            for stage in image_size
        ]
    return [{"size": size(image_size), "epochs": epochs}]


def _configuration(name: str, value: Any) -> int | list[str] | None:
    """`frozen` (C1: None) or {unfreeze: N last layers | [layer-name prefixes]} (C2)."""
    if value == "frozen":
        return None
    unfreeze = value.get("unfreeze") if isinstance(value, Mapping) and set(value) == {"unfreeze"} else None
    if isinstance(unfreeze, int) and not isinstance(unfreeze, bool) and unfreeze > 0:
        return unfreeze
    if isinstance(unfreeze, list | tuple) and unfreeze and all(isinstance(n, str) and n for n in unfreeze):
        return list(unfreeze)
    raise FineTuningConfigError(
        f"{name}: configuration must be `frozen` or {{unfreeze: N}} (the last N layers) "
        f"or {{unfreeze: [block names]}} (layers whose name starts with one), got {value!r}"
    )


# The keys a network entry may have (after merging over `fine_tuning.defaults`).
ENTRY_KEYS = frozenset({
    "kind", "backbone", "weights", "configuration", "head", "image_size", "epochs", "batch_size", "patience",
    "early_stopping_fraction", "optimizer", "augmentation", "precision", "jit_compile", "lstm",
    "speaker_normalisation",
})


def network_settings(
    name: str, entry: Mapping[str, Any], backbones: Mapping[str, Mapping[str, Any]], random_seed: int
) -> dict[str, Any]:
    """A checked network entry (kind cnn or lstm) as the training process gets it."""
    kind = entry.get("kind")
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise FineTuningConfigError(
            f"fine_tuning model '{name}' does not take {unknown}; it takes {sorted(ENTRY_KEYS)}"
        )
    settings = _common_settings(name, entry, random_seed)
    if kind == "cnn":
        return settings | _cnn_settings(name, entry, backbones, settings["epochs"])
    if kind == "lstm":
        return settings | _lstm_settings(name, entry, settings["epochs"])
    raise FineTuningConfigError(
        f"fine_tuning model '{name}': kind '{kind}' is not one of: "
        f"{', '.join((*NETWORK_KINDS, LATE_FUSION))}"
    )


def _augmentation(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    augmentation = dict(entry.get("augmentation") or {})
    if set(augmentation) - set(AUGMENTATION_KEYS):
        raise FineTuningConfigError(
            f"{name}: augmentation takes {list(AUGMENTATION_KEYS)}, got {sorted(augmentation)}"
        )
    return {key: _positive(f"{name}: augmentation.{key}", augmentation.get(key, 0),
                           float if key == "mixup_alpha" else int, zero=True)
            for key in AUGMENTATION_KEYS}


def _head(name: str, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
    head = [dict(layer) for layer in entry.get("head") or []]
    for layer in head:
        _positive(f"{name}: head units", layer.get("units"))
        if not 0 <= float(layer.get("dropout", 0.0)) < 1:
            raise FineTuningConfigError(
                f"{name}: head dropout must be in [0, 1), got {layer.get('dropout')!r}")
    return head


def _common_settings(name: str, entry: Mapping[str, Any], random_seed: int) -> dict[str, Any]:
    """The settings of every kind of network, checked in the order a user reads them."""
    epochs = _positive(f"{name}: epochs", entry.get("epochs"))
    optimizer = dict(entry.get("optimizer") or {})
    augmentation, head = _augmentation(name, entry), _head(name, entry)
    precision, jit = entry.get("precision", "auto"), entry.get("jit_compile", "auto")
    if precision not in FINE_TUNING_PRECISIONS:
        raise FineTuningConfigError(
            f"{name}: precision '{precision}' is not one of: {', '.join(FINE_TUNING_PRECISIONS)}")
    if jit not in ("auto", True, False):
        raise FineTuningConfigError(f"{name}: jit_compile must be auto, true or false, got {jit!r}")
    normalisation = entry.get("speaker_normalisation", "none")
    if normalisation not in NETWORK_NORMALISATIONS:
        raise FineTuningConfigError(
            f"fine_tuning model '{name}': speaker_normalisation '{normalisation}' is not one of: "
            f"{', '.join(NETWORK_NORMALISATIONS)}"
        )
    return {
        "name": name,
        "kind": entry.get("kind"),
        "head": head,
        "epochs": epochs,
        "batch_size": _positive(f"{name}: batch_size", entry.get("batch_size")),
        "patience": _positive(f"{name}: patience", entry.get("patience")),
        "early_stopping_fraction": _fraction(
            f"{name}: early_stopping_fraction", entry.get("early_stopping_fraction")
        ),
        "learning_rate": _positive(f"{name}: optimizer.learning_rate", optimizer.get("learning_rate"), float),
        "augmentation": augmentation,
        "precision": precision,
        "jit_compile": jit,
        "random_seed": random_seed,
        "speaker_normalisation": normalisation,
    }


def _cnn_settings(name: str, entry: Mapping[str, Any], backbones: Mapping[str, Mapping[str, Any]],
                  epochs: int) -> dict[str, Any]:
    """A CNN's backbone, its unfrozen layers and image sizes, checked against the backbone's pooling."""
    spec = backbone_spec(entry.get("backbone"), backbones)
    weights = entry.get("weights")
    unfreeze = _configuration(name, entry.get("configuration"))
    backbone_rate = (None if unfreeze is None else _positive(
        f"{name}: optimizer.backbone_learning_rate",
        dict(entry.get("optimizer") or {}).get("backbone_learning_rate"), float))
    settings = {
        # The registry's entry but its input size: its tapped layers and their pooling.
        "backbone": {"name": spec.name, "application": spec.application,
                     "preprocess_input": spec.preprocess_input, "layers": list(spec.layers),
                     "pooling": spec.pooling},
        "weights": None if weights is None or str(weights).lower() == "none" else str(weights),
        "unfreeze": unfreeze,
        "backbone_learning_rate": backbone_rate,
        "stages": _stages(name, entry.get("image_size"), epochs),
    }
    sizes = {tuple(stage["size"]) for stage in settings["stages"]}
    if spec.pooling not in ("avg", "max") and len({size[0] if spec.pooling != "none" else size
                                                   for size in sizes}) > 1:
        raise FineTuningConfigError(
            f"{name}: backbone '{spec.name}' pools its maps with `{spec.pooling}`, which keeps "
            f"{'each frequency row' if spec.pooling != 'none' else 'every position'}, "
            "so the head's width follows the image "
            + ("height: a progressive schedule may change only the width (time)" if spec.pooling != "none"
               else "size: a progressive schedule cannot change it")
            + "; avg or max pooling allows any sizes"
        )
    return settings


def _lstm_settings(name: str, entry: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    lstm = dict(entry.get("lstm") or {})
    if lstm.get("features") not in SEQUENCE_FEATURES:
        raise FineTuningConfigError(
            f"{name}: lstm.features must be one of {list(SEQUENCE_FEATURES)}, got {lstm.get('features')!r}"
        )
    return {
        "lstm": {
            "features": lstm["features"],
            "n_mfcc": _positive(f"{name}: lstm.n_mfcc", lstm.get("n_mfcc", 40)),
            "units": _positive(f"{name}: lstm.units", lstm.get("units")),
            "bidirectional": bool(lstm.get("bidirectional", False)),
            "dropout": float(lstm.get("dropout", 0.0)),
        },
        "stages": [{"size": None, "epochs": epochs}],
    }


def model_entries(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every entry of `fine_tuning.models` that is not null, merged over the defaults and checked:
    name -> the entry (late fusion entries as they are, networks as `network_settings`); their names
    are emofusion.instances' to check. None unless `fine_tuning.enabled`: networks train for minutes
    per fold, too long for the demo run."""
    fine_tuning = parameters.get("fine_tuning") or {}
    if not fine_tuning.get("enabled"):
        return {}
    entries = {
        name: merged_entry(fine_tuning.get("defaults"), entry)
        for name, entry in (fine_tuning.get("models") or {}).items()
        if entry is not None
    }
    backbones, random_seed = parameters.get("backbones") or {}, parameters.get("random_seed", 0)
    checked = {
        name: network_settings(name, entry, backbones, random_seed)
        for name, entry in entries.items()
        if entry.get("kind") != LATE_FUSION
    }
    for name, entry in entries.items():
        if entry.get("kind") != LATE_FUSION:
            continue
        network, variant, classifier = entry.get("network"), entry.get("variant"), entry.get("classifier")
        if entries.get(network, {}).get("kind") not in NETWORK_KINDS:
            raise FineTuningConfigError(
                f"late fusion '{name}': network '{network}' is not a cnn or lstm entry of fine_tuning.models"
            )
        if (parameters.get("fusion_variants") or {}).get(variant) is None:
            raise FineTuningConfigError(f"late fusion '{name}': variant '{variant}' is not a fusion variant")
        if (parameters.get("classifiers") or {}).get(classifier) is None:
            raise FineTuningConfigError(
                f"late fusion '{name}': classifier '{classifier}' is not in classifiers"
            )
        checked[name] = {
            "kind": LATE_FUSION,
            "network": network,
            "network_input": network_input(checked[network]),
            "variant": variant,
            "classifier": classifier,
        }
    return {name: checked[name] for name in entries}

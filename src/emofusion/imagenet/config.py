"""Checked transfer-feature settings and their fingerprint, without importing Keras (5 s), so that a
bad setting fails at once and an unchanged run can reuse its stored features cheaply."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.clip_array import ClipArray
from emofusion.errors import TransferConfigError
from emofusion.keras_cache import keras_cache_dir

POOLINGS = ("none", "avg", "max", "time", "time_stats")
BACKBONE_PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
OUTPUT_DTYPES = ("float32", "float16")
REGISTRY_FILE = "conf/base/parameters_transfer_features.yml"


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to build the network and what it expects."""

    name: str
    application: str  # dotted path to a constructor with the Keras-applications signature
    preprocess_input: str  # dotted path to its input scaling, applied to 0-255 RGB pixels
    input_size: tuple[int, int]
    layers: tuple[str | None, ...]  # tapped in this order; (None,) taps the output of the headless network
    pooling: str  # applied to each tapped map before the pooled maps are concatenated


@dataclass(frozen=True)
class TransferSettings:
    """Everything the transfer features depend on, besides the spectrograms."""

    backbone: BackboneSpec
    weights: str | None  # "imagenet", a weights file path, or None for random initialisation
    weights_digest: str | None  # content hash of a weights file, so a changed file recomputes
    offline_fallback: BackboneSpec | None
    precision: str
    output_dtype: str
    batch_size: int
    random_seed: int

    def identity(self) -> dict[str, Any]:
        """The parts that change the features (the batch size does not)."""
        identity = asdict(self)
        identity.pop("batch_size")
        if self.weights is not None:
            identity.pop("random_seed")  # it only matters for random weights
        identity["versions"] = {package: importlib.metadata.version(package)
                                for package in ("keras", "tensorflow")}
        return identity


def backbone_spec(name: str, backbones: Mapping[str, Mapping[str, Any]]) -> BackboneSpec:
    if name not in backbones:
        raise TransferConfigError(
            f"Unknown backbone '{name}'. Known backbones: {', '.join(sorted(backbones))}. "
            f"To use another, add an entry under `backbones` in {REGISTRY_FILE}."
        )
    entry = dict(backbones[name])
    required = ("application", "preprocess_input", "input_size", "pooling")
    missing = [key for key in required if key not in entry]
    if missing:
        raise TransferConfigError(f"Backbone '{name}' in {REGISTRY_FILE} lacks {', '.join(missing)}")
    pooling = str(entry["pooling"]).lower()
    if pooling not in POOLINGS:
        raise TransferConfigError(
            f"Backbone '{name}': pooling '{entry['pooling']}' is not one of {', '.join(POOLINGS)}"
        )
    size = entry["input_size"]
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise TransferConfigError(f"Backbone '{name}': input_size must be [height, width], got {size}")
    return BackboneSpec(name=name, application=entry["application"],
                        preprocess_input=entry["preprocess_input"], input_size=tuple(size),
                        layers=_tapped_layers(name, entry.get("layer"), entry.get("layers")),
                        pooling=pooling)


def _tapped_layers(name: str, layer: Any, layers: Any) -> tuple[str | None, ...]:
    """`layer` (one name, or null for the network's output) or `layers` (several names) as one tuple.

    A null value counts as unset, because conf/local is merged into conf/base key by key: an
    override can add `layers` to an entry whose base says `layer: null`, but cannot delete a key."""
    if layers is None:
        if layer is not None and not isinstance(layer, str):
            raise TransferConfigError(f"Backbone '{name}': layer must be a layer name or null, got {layer!r}")
        return (layer,)
    if layer is not None:
        raise TransferConfigError(
            f"Backbone '{name}' sets both layer ({layer!r}) and layers ({layers!r}): set layer for one "
            "tapped layer, or layers for several (and layer to null)")
    if not isinstance(layers, list | tuple) or not layers:
        raise TransferConfigError(
            f"Backbone '{name}': layers must be a non-empty list of layer names, got {layers!r}")
    if not all(isinstance(tapped, str) for tapped in layers):
        raise TransferConfigError(f"Backbone '{name}': layers must all be layer names, got {layers!r}")
    repeated = sorted({tapped for tapped in layers if layers.count(tapped) > 1})
    if repeated:
        raise TransferConfigError(f"Backbone '{name}': layers names {', '.join(repeated)} more than once")
    return tuple(layers)


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise TransferConfigError(f"transfer_features.{name} '{value}' is not one of {', '.join(choices)}")
    return value


def transfer_settings(params: Mapping[str, Any], backbones: Mapping[str, Mapping[str, Any]],
                      random_seed: int) -> TransferSettings:
    """Validate ``transfer_features`` parameters against the ``backbones`` registry."""
    weights = params.get("weights")
    weights = None if weights is None or str(weights).lower() == "none" else str(weights)
    digest = None
    if weights not in (None, "imagenet"):
        path = Path(weights)
        if not path.is_file():
            raise TransferConfigError(
                f"transfer_features.weights is '{weights}', which is neither 'imagenet', 'none' nor "
                "an existing weights file"
            )
        with path.open("rb") as file:
            digest = hashlib.file_digest(file, "blake2b").hexdigest()
    fallback = params.get("offline_fallback")
    batch_size = params.get("batch_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise TransferConfigError(
            f"transfer_features.batch_size must be a positive integer, got {batch_size}")
    return TransferSettings(
        backbone=backbone_spec(params["backbone"], backbones),
        weights=weights,
        weights_digest=digest,
        offline_fallback=None if fallback is None else backbone_spec(fallback, backbones),
        precision=_choice("precision", params.get("precision", "float32"), BACKBONE_PRECISIONS),
        output_dtype=_choice("output_dtype", params.get("output_dtype", "float32"), OUTPUT_DTYPES),
        batch_size=batch_size,
        random_seed=random_seed,
    )


def fingerprint(spectrograms: ClipArray, settings: TransferSettings) -> str:
    """A digest of the spectrograms (ids, values, shape) and the settings that shape the features.

    It answers another question than `made_with` (emofusion.provenance), which says with which
    settings a dataset was made and is what every check of a stale input compares: whether the
    stored features are exactly what the CNN would make now, so that it need not run. That takes
    the content of the inputs, which no setting says (which clips, their values, the bytes of a
    weights file, the Keras and TensorFlow versions); it is never compared with a run's settings."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(settings.identity(), sort_keys=True).encode())
    digest.update(json.dumps(spectrograms.clip_ids.tolist()).encode())
    digest.update(str((spectrograms.values.shape, spectrograms.values.dtype.str)).encode())
    chunk = 256  # clips at a time, so a memory-mapped array is never read whole into memory
    for start in range(0, len(spectrograms), chunk):
        digest.update(np.ascontiguousarray(spectrograms.values[start:start + chunk]).data)
    return digest.hexdigest()


def weights_now_reachable(url: str, timeout_s: float = 10.0) -> bool:
    """Whether ImageNet weights that were unavailable before are in Keras's cache or downloadable."""
    if (keras_cache_dir() / url.rsplit("/", 1)[-1]).is_file():
        return True
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout_s):
            return True
    except (urllib.error.URLError, OSError):
        return False

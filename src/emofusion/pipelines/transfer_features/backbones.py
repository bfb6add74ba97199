"""Build the headless, frozen backbone a registry entry describes, with the weights asked for, and
fall back to the offline SqueezeNet when ImageNet weights cannot be downloaded."""

from __future__ import annotations

import contextlib
import importlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers

from .config import BackboneSpec, TransferConfigError, TransferSettings, keras_cache_dir

logger = logging.getLogger(__name__)

_POOLING_LAYERS = {"none": layers.Flatten, "avg": layers.GlobalAveragePooling2D,
                   "max": layers.GlobalMaxPooling2D}


class ImageNetWeightsUnavailable(RuntimeError):
    """Keras could not download a backbone's ImageNet weights (typically: no network)."""

    def __init__(self, backbone: str, url: str, reason: str, consequence: str = "") -> None:
        self.backbone, self.url, self.reason = backbone, url, reason
        self.file = keras_cache_dir() / url.rsplit("/", 1)[-1]
        super().__init__(
            f"ImageNet weights for backbone '{backbone}' could not be downloaded ({reason}). "
            f"Keras wanted the file {self.file.name} from {url}. Download it on a machine with "
            f"internet and put it in {self.file.parent}/, or set transfer_features.weights to its "
            f"path. {consequence}".strip()
        )


@dataclass
class Backbone:
    """A ready network (image batch -> (batch, width) features) and what it really is."""

    model: keras.Model
    spec: BackboneSpec
    preprocess_input: Callable[[Any], Any]
    layer: str  # the layer whose output is tapped
    feature_shape: tuple[int, ...]
    provenance: dict[str, Any] = field(default_factory=dict)


def import_object(dotted_path: str) -> Any:
    module_name, _, attribute = dotted_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise TransferConfigError(f"Cannot import '{dotted_path}' named in the backbones registry: {error}"
                                  ) from error


@contextlib.contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras's dtype policy is global; set it only while the backbone's layers are created."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def build_backbone(spec: BackboneSpec, weights: str | None, precision: str = "float32") -> Backbone:
    """The registry's network without its head, tapped at ``spec.layer`` and pooled (or flattened)."""
    application = import_object(spec.application)
    with dtype_policy(precision):
        try:
            base = application(include_top=False, weights=weights, input_shape=(*spec.input_size, 3))
        except Exception as error:
            download = re.match(r"URL fetch failure on (\S+): (.*)", str(error))
            if download:
                raise ImageNetWeightsUnavailable(spec.name, download[1], download[2]) from error
            if isinstance(error, ValueError):
                raise TransferConfigError(f"Backbone '{spec.name}' cannot be built: {error}") from error
            raise
        if spec.layer is None:
            tapped, layer = base.output, base.layers[-1].name
        else:
            layer = spec.layer
            try:
                tapped = base.get_layer(spec.layer).output
            except ValueError as error:
                names = ", ".join(candidate.name for candidate in base.layers[-5:])
                raise TransferConfigError(
                    f"Backbone '{spec.name}' has no layer '{spec.layer}' (its last layers: {names})"
                ) from error
        features = _POOLING_LAYERS[spec.pooling](name=f"{spec.pooling}_features")(tapped)
        model = keras.Model(base.input, features, name=f"{spec.name}_features")
    model.trainable = False
    return Backbone(model=model, spec=spec, preprocess_input=import_object(spec.preprocess_input),
                    layer=layer, feature_shape=tuple(int(d) for d in tapped.shape[1:]))


def load_backbone(settings: TransferSettings) -> Backbone:
    """Build the configured backbone; if its ImageNet weights cannot be downloaded, build the offline
    fallback instead (with a warning), or stop when there is none. Never silently random."""
    spec = settings.backbone
    keras.utils.set_random_seed(settings.random_seed)
    if settings.weights is None:
        logger.warning(
            "RANDOM WEIGHTS: transfer_features.weights is none, so backbone '%s' is NOT pretrained; "
            "its features are random projections, useful for tests but not for results.", spec.name)
        backbone = build_backbone(spec, None, settings.precision)
        backbone.provenance = {"weights": "random initialisation (not pretrained)", "pretrained": False}
        return backbone
    try:
        backbone = build_backbone(spec, settings.weights, settings.precision)
    except ImageNetWeightsUnavailable as unavailable:
        fallback = settings.offline_fallback
        if fallback is None:
            raise ImageNetWeightsUnavailable(
                spec.name, unavailable.url, unavailable.reason,
                "transfer_features.offline_fallback is null, so the run stops here; set it to "
                "squeezenet_v1_1 to go on with offline ImageNet weights.") from unavailable.__cause__
        logger.warning("%s Going on with the offline backbone '%s' (transfer_features.offline_fallback)"
                       "; its features differ from '%s' ones.", unavailable, fallback.name, spec.name)
        backbone = build_backbone(fallback, "imagenet", settings.precision)
        backbone.provenance = {"weights": "imagenet", "pretrained": True,
                               "fallback_reason": str(unavailable), "wanted_weights_url": unavailable.url}
        return backbone
    source = "imagenet" if settings.weights == "imagenet" else f"file {settings.weights}"
    backbone.provenance = {"weights": source, "pretrained": True}
    return backbone

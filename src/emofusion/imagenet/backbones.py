"""Build the headless, frozen backbone a registry entry describes, with the weights asked for, and
fall back to the offline SqueezeNet when ImageNet weights cannot be downloaded."""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import keras
from keras import layers, ops

from emofusion.errors import ImageNetWeightsUnavailable, TransferConfigError
from emofusion.keras_cache import keras_cache_dir

from .config import BackboneSpec, TransferSettings

logger = logging.getLogger(__name__)


class TimePooling(layers.Layer):
    """(batch, frequency, time, channels) maps -> (batch, frequency * channels) means over time,
    followed, with ``with_std``, by the (population) standard deviations over time in the same order.

    A spectrogram image's rows are frequencies and its columns time: averaging over columns keeps
    where in frequency the energy lies and drops when it came, which global pooling would also
    drop. It runs in float32 under any dtype policy, as float16 squares overflow above 256."""

    def __init__(self, with_std: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.with_std = with_std

    def call(self, maps: Any) -> Any:
        maps = ops.cast(maps, "float32")
        _, height, _, channels = maps.shape
        statistics = [ops.mean(maps, axis=2)]
        if self.with_std:
            # sqrt's gradient at 0 is infinite: a channel constant over time (a dead ReLU, a narrow
            # map) would make a fine-tuned network's weights NaN after one step. The same values,
            # with a zero gradient there.
            variance = ops.var(maps, axis=2)
            varies = variance > 0
            statistics.append(ops.where(varies, ops.sqrt(ops.where(varies, variance, 1.0)), 0.0))
        return ops.concatenate([ops.reshape(s, (-1, height * channels)) for s in statistics], axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "with_std": self.with_std}


_POOLING_LAYERS: dict[str, Callable[..., layers.Layer]] = {
    "none": layers.Flatten, "avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
    "time": TimePooling, "time_stats": functools.partial(TimePooling, with_std=True)}


@dataclass(frozen=True)
class Tap:
    """One tapped layer: the shape of its map (height, width, channels) and its values once pooled."""

    layer: str
    shape: tuple[int, ...]
    width: int


@dataclass
class Backbone:
    """A ready network (image batch -> (batch, width) features) and what it really is."""

    model: keras.Model
    spec: BackboneSpec
    preprocess_input: Callable[[Any], Any]
    taps: tuple[Tap, ...]  # in the order their pooled values are concatenated
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
    """The registry's network without its head, tapped at ``spec.layers``, each map pooled (or
    flattened) and the results concatenated in that order."""
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
        taps, pooled = [], []
        for name in spec.layers:
            layer = base.layers[-1] if name is None else _layer(base, spec, name)
            pool = _POOLING_LAYERS[spec.pooling](name=f"{spec.pooling}_pooled_{layer.name}")
            pooled.append(pool(layer.output))
            taps.append(Tap(layer=layer.name, shape=tuple(int(d) for d in layer.output.shape[1:]),
                            width=int(pooled[-1].shape[-1])))
        # float32, so that float32 time statistics are not cast back to float16 under a mixed policy.
        features = (pooled[0] if len(pooled) == 1
                    else layers.Concatenate(name="features", dtype="float32")(pooled))
        model = keras.Model(base.input, features, name=f"{spec.name}_features")
    model.trainable = False
    return Backbone(model=model, spec=spec, preprocess_input=import_object(spec.preprocess_input),
                    taps=tuple(taps))


def _layer(base: keras.Model, spec: BackboneSpec, name: str) -> layers.Layer:
    try:
        return base.get_layer(name)
    except ValueError as error:
        names = [candidate.name for candidate in base.layers]
        close = difflib.get_close_matches(name, names, n=3)
        raise TransferConfigError(
            f"Backbone '{spec.name}' has no layer '{name}' ("
            + (f"close names: {', '.join(close)}; " if close else "")
            + f"its last layers: {', '.join(names[-5:])})"
        ) from error


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
    known = _known_unavailable(spec.name) if settings.weights == "imagenet" else None
    try:
        if known is not None:
            raise known
        backbone = build_backbone(spec, settings.weights, settings.precision)
    except ImageNetWeightsUnavailable as unavailable:
        if unavailable is not known:
            _remember_unavailable(unavailable)
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


RETRY_DOWNLOAD_AFTER_S = 3600
_UNAVAILABLE_RECORD = "emofusion-unavailable-weights.json"  # beside Keras's models/ folder


def _known_unavailable(backbone: str) -> ImageNetWeightsUnavailable | None:
    """The failed download of this backbone's weights in the last hour, unless the file has appeared
    since: every `emofusion predict` would otherwise wait for the same failure again."""
    try:
        record = json.loads((keras_cache_dir().parent / _UNAVAILABLE_RECORD).read_text())[backbone]
    except (OSError, ValueError, KeyError):
        return None
    if time.time() - record["at"] > RETRY_DOWNLOAD_AFTER_S:
        return None
    when = time.strftime("%H:%M", time.localtime(record["at"]))
    failure = ImageNetWeightsUnavailable(backbone, record["url"], f"{record['reason']}; the download failed "
                                         f"at {when} and is tried again an hour later")
    return None if failure.file.is_file() else failure


def _remember_unavailable(failure: ImageNetWeightsUnavailable) -> None:
    path = keras_cache_dir().parent / _UNAVAILABLE_RECORD
    try:
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[failure.backbone] = {"url": failure.url, "reason": failure.reason, "at": time.time()}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1))
    except (OSError, ValueError):  # a read-only home: the next run just tries again
        pass

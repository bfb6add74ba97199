"""transfer_features node: log-mel spectrograms -> ImageNet-CNN features, reused while unchanged."""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections.abc import Mapping
from typing import Any

from emofusion.clip_array import ClipArray
from emofusion.imagenet.config import TransferSettings, fingerprint, transfer_settings, weights_now_reachable
from emofusion.quiet_tensorflow import import_tensorflow

logger = logging.getLogger(__name__)

_POOLING_WORDS = {"none": "flattened", "avg": "average-pooled", "max": "max-pooled",
                 "time": "averaged over time", "time_stats": "mean and std over time"}


def _reusable(stored: ClipArray | None, digest: str) -> bool:
    if stored is None:
        return False
    if stored.metadata.get("fingerprint") != digest:
        logger.info("The spectrograms or the backbone settings changed since the stored transfer "
                    "features were made: recomputing them.")
        return False
    url = stored.metadata.get("wanted_weights_url")
    if url and weights_now_reachable(url):
        logger.info("The stored transfer features came from the offline fallback, and the ImageNet "
                    "weights it stood in for can now be had (%s): recomputing them.", url)
        return False
    return True


def _made_with(log_mel_spectrogram: ClipArray, transfer_features_options: Mapping[str, Any],
               backbones: Mapping[str, Mapping[str, Any]], settings: TransferSettings) -> dict[str, Any]:
    """The parameters the features are made from, by path, the spectrograms' included: fusion checks
    them against its run's (emofusion.provenance). As in the fingerprint, the batch size does not
    count, and the seed counts only for random weights."""
    made_with = {**log_mel_spectrogram.metadata.get("made_with", {}),
                 **{f"transfer_features.{key}": value for key, value in transfer_features_options.items()
                    if key != "batch_size"}}
    for spec in (settings.backbone, settings.offline_fallback):
        if spec is not None:
            made_with[f"backbones.{spec.name}"] = backbones[spec.name]
    if settings.weights is None:
        made_with["random_seed"] = settings.random_seed
    return made_with


def extract_transfer_features(log_mel_spectrogram: ClipArray, stored_transfer_features: ClipArray | None,
                              transfer_features_options: Mapping[str, Any],
                              backbones: Mapping[str, Mapping[str, Any]], random_seed: int) -> ClipArray:
    """(clips, width) features of a headless ImageNet CNN applied to spectrogram images.

    The CNN is the expensive step of the whole project, so when neither the spectrograms nor the
    settings changed, the stored features (``stored_transfer_features``, the previous output) are
    returned, their values untouched."""
    settings = transfer_settings(transfer_features_options, backbones, random_seed)
    digest = fingerprint(log_mel_spectrogram, settings)
    made_with = _made_with(log_mel_spectrogram, transfer_features_options, backbones, settings)
    if _reusable(stored_transfer_features, digest):
        meta = stored_transfer_features.metadata
        logger.info("Transfer features are up to date (fingerprint %s): reusing the stored %d x %d "
                    "features of backbone '%s' without running the CNN.", digest,
                    *stored_transfer_features.values.shape, meta["backbone"])
        # The same features as these parameters make: they now record these parameters (a
        # different spelling of the same settings, e.g. weights none or null, is not a change).
        return ClipArray(stored_transfer_features.clip_ids, stored_transfer_features.values,
                         {**meta, "made_with": made_with})

    # Keras and TensorFlow take seconds to import: only a run that computes features pays for that.
    # Their C++ start-up chatter is hidden unless the user sets TF_CPP_MIN_LOG_LEVEL; the device is
    # logged below.
    import_tensorflow()
    from emofusion.imagenet.backbones import load_backbone  # TensorFlow: only in the process that extracts
    from emofusion.imagenet.images import compute_device, extract_features  # TensorFlow, likewise

    backbone = load_backbone(settings)
    device = compute_device()
    if settings.precision == "mixed_float16" and device == "CPU":
        logger.warning("precision mixed_float16 is meant for GPUs; on a CPU it is slower than float32.")
    spec = backbone.spec
    width = int(backbone.model.output_shape[-1])
    taps = " + ".join(f"{tap.layer} ({'x'.join(map(str, tap.shape))} -> {tap.width:,})"
                      for tap in backbone.taps)
    logger.info("Transfer features: backbone '%s' (%s), input %dx%d, %s %s %s: %s values per clip, "
                "%s, batch %d, on %s.", spec.name, backbone.provenance["weights"], *spec.input_size,
                "layer" if len(backbone.taps) == 1 else "layers", taps, _POOLING_WORDS[spec.pooling],
                f"{width:,}", settings.precision, settings.batch_size, device)
    start = time.perf_counter()
    values = extract_features(backbone, log_mel_spectrogram.values, settings.batch_size,
                              settings.output_dtype)
    seconds = time.perf_counter() - start
    metadata = _transfer_metadata(backbone, settings, log_mel_spectrogram, width=width, device=device,
                                  seconds=seconds, clips=len(values), digest=digest, made_with=made_with)
    return ClipArray(log_mel_spectrogram.clip_ids, values, metadata)


def _transfer_metadata(backbone: Any, settings: TransferSettings, log_mel_spectrogram: ClipArray, *,
                       width: int, device: str, seconds: float, clips: int, digest: str,
                       made_with: Mapping[str, Any]) -> dict[str, Any]:
    """What the features are (backbone, taps, pooling, dtype), how they were made and how fast."""
    spec = backbone.spec
    return {
        "feature": "transfer",
        "backbone": spec.name,
        "backbone_requested": settings.backbone.name,
        **backbone.provenance,
        "layer": "+".join(tap.layer for tap in backbone.taps),
        "pooling": spec.pooling,
        "input_size": list(spec.input_size),
        # One tap: its map's shape, as before taps came; several: one shape per tap.
        "feature_shape": (list(backbone.taps[0].shape) if len(backbone.taps) == 1
                          else [list(tap.shape) for tap in backbone.taps]),
        "taps": [{"layer": tap.layer, "shape": list(tap.shape), "pooling": spec.pooling, "width": tap.width}
                 for tap in backbone.taps],
        "width": width,
        "dtype": settings.output_dtype,
        "precision": settings.precision,
        "batch_size": settings.batch_size,
        "device": device,
        "seconds": round(seconds, 2),
        "clips_per_second": round(clips / seconds, 2),
        "fingerprint": digest,
        "settings": settings.identity(),
        "made_with": made_with,
        "spectrogram": {key: log_mel_spectrogram.metadata.get(key)
                        for key in ("sample_rate", "parameters", "audio")},
        "versions": {package: importlib.metadata.version(package)
                     for package in ("emofusion", "tensorflow", "keras", "numpy")},
    }

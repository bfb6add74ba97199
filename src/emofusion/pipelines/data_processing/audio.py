"""Decoding and preprocessing of one clip. Anything wrong with a clip raises ``ClipRejected``
with a reason a person can act on; the caller records it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import librosa
import numpy as np
import soundfile as sf
import soxr

# What preprocess_clip reports about each clip it accepts, for the clip manifest.
CLIP_INFO_COLUMNS = ["source_sample_rate", "source_channels", "source_duration_s", "speech_duration_s"]


class ClipRejected(ValueError):
    """The clip cannot be used; the message is the reason recorded in rejected_clips."""


def decode(path: str) -> tuple[np.ndarray, int]:
    """Samples as float32 of shape (frames, channels), and the file's sample rate."""
    try:
        samples, sample_rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises several types for corrupt files
        raise ClipRejected(f"unreadable: {error}") from error
    if samples.size == 0:
        raise ClipRejected("empty: the file holds no samples")
    if not np.isfinite(samples).all():
        raise ClipRejected("non-finite: the file holds NaN or infinite samples")
    return samples, sample_rate


def to_mono(samples: np.ndarray) -> np.ndarray:
    return samples.mean(axis=1) if samples.ndim == 2 else samples


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate:
        return signal
    return soxr.resample(signal, source_rate, target_rate, quality="HQ").astype(np.float32)


def trim_silence(signal: np.ndarray, top_db: float, frame_length: int, hop_length: int
                 ) -> np.ndarray:
    """Cut leading and trailing stretches quieter than ``top_db`` below the loudest frame."""
    trimmed, _ = librosa.effects.trim(signal, top_db=top_db, frame_length=frame_length,
                                      hop_length=hop_length)
    return trimmed


def normalise(signal: np.ndarray, method: str, level_db: float) -> np.ndarray:
    """Peak or RMS to ``level_db`` dBFS; RMS gain is limited so that the peak stays at 0 dBFS."""
    peak = float(np.abs(signal).max())
    if method == "peak":
        gain = 10 ** (level_db / 20) / peak
    elif method == "rms":
        gain = min(10 ** (level_db / 20) / float(np.sqrt(np.mean(signal**2))), 1.0 / peak)
    else:
        raise ValueError(f"audio.normalise must be 'peak' or 'rms', got '{method}'")
    return (signal * gain).astype(np.float32)


def fix_duration(signal: np.ndarray, length: int, crop: str, pad: str) -> np.ndarray:
    """Crop (keep start, centre or end) or zero-pad (at the end or both sides) to ``length``."""
    excess = len(signal) - length
    if excess > 0:
        offset = {"start": 0, "centre": excess // 2, "end": excess}.get(crop)
        if offset is None:
            raise ValueError(f"audio.crop must be start, centre or end, got '{crop}'")
        return signal[offset : offset + length]
    if pad == "end":
        before = 0
    elif pad == "centre":
        before = -excess // 2
    else:
        raise ValueError(f"audio.pad must be end or centre, got '{pad}'")
    return np.pad(signal, (before, -excess - before))


def preprocess_clip(path: str, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, down-mix, resample, trim, normalise and fix the duration of one clip; also return
    what the source was, for the manifest."""
    samples, source_rate = decode(path)
    source = {"source_sample_rate": source_rate, "source_channels": samples.shape[1],
              "source_duration_s": round(samples.shape[0] / source_rate, 3)}
    rate = params["sample_rate"]
    signal = resample(to_mono(samples), source_rate, rate)
    peak_db = 20 * np.log10(float(np.abs(signal).max()) + 1e-20)
    if peak_db < params["silence_threshold_db"]:
        raise ClipRejected(
            f"silent: peak {peak_db:.0f} dBFS is below {params['silence_threshold_db']} dBFS"
        )
    frame = int(params["trim_frame_ms"] * rate / 1000)
    signal = trim_silence(signal, params["trim_top_db"], frame, frame // 4)
    speech_s = len(signal) / rate
    if speech_s < params["min_duration_s"]:
        raise ClipRejected(
            f"too short: {speech_s:.2f} s after trimming silence "
            f"(minimum audio.min_duration_s = {params['min_duration_s']} s)"
        )
    signal = normalise(signal, params["normalise"], params["level_db"])
    signal = fix_duration(signal, int(round(params["duration_s"] * rate)), params["crop"],
                          params["pad"])
    return signal, source | {"speech_duration_s": round(speech_s, 3)}

"""Decoding and preprocessing of one clip. Anything wrong with a clip raises ``ClipRejected``
with a reason a person can act on; the caller records it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import soundfile as sf
import soxr

from emofusion.errors import ClipRejected

# What preprocess_clip reports about each clip it accepts, for the clip manifest.
# `window_start_s` and `kept_duration_s`: the part of the trimmed speech that was kept (a crop of a
# long clip, or one of its windows).
CLIP_INFO_COLUMNS = ["source_sample_rate", "source_channels", "source_duration_s", "speech_duration_s",
                     "window_start_s", "kept_duration_s"]


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
    """Cut leading and trailing stretches quieter than ``top_db`` below the loudest frame.

    librosa.effects.trim's rule and arithmetic (centred, zero-padded frames; their RMS in dB below
    the loudest; the same float32 operations in the same order, so the same samples are kept),
    without importing librosa's feature modules: they cost seconds of start-up, which a one-file
    `emofusion predict` of a model without MFCCs would pay for this alone."""
    padded = np.pad(signal, frame_length // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop_length]
    frames = np.moveaxis(frames, -1, -2)  # (frame_length, frames), as librosa.util.frame lays them out
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float32), axis=-2, keepdims=True))[0]
    power = np.square(np.abs(rms))
    reference = np.max(np.abs(rms)) ** 2
    db = 10.0 * np.log10(np.maximum(1e-10, power)) - 10.0 * np.log10(np.maximum(1e-10, reference))
    loud = np.flatnonzero(db > -top_db)
    if loud.size == 0:
        return signal[:0]
    return signal[loud[0] * hop_length:min(len(signal), (loud[-1] + 1) * hop_length)]


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
        offset = crop_offset(excess, crop)
        return signal[offset : offset + length]
    if pad == "end":
        before = 0
    elif pad == "centre":
        before = -excess // 2
    else:
        raise ValueError(f"audio.pad must be end or centre, got '{pad}'")
    return np.pad(signal, (before, -excess - before))


def _speech(path: str, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, down-mix, resample and trim one clip, rejecting silent and too short ones; also return
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
    return signal, source | {"speech_duration_s": round(speech_s, 3)}


def crop_offset(excess: int, crop: str) -> int:
    """Where a crop of a signal ``excess`` samples too long starts."""
    offset = {"start": 0, "centre": excess // 2, "end": excess}.get(crop)
    if offset is None:
        raise ValueError(f"audio.crop must be start, centre or end, got '{crop}'")
    return max(offset, 0)


def window_starts(n_samples: int, length: int, hop: int, crop: str) -> list[int]:
    """Starts of the windows of ``length`` samples that cover a signal: one more for each ``hop``
    of excess length (rounded), spread evenly from its start to its end. A signal at most half a hop
    too long is one window, where ``crop`` puts it, as a cropped training clip."""
    excess = n_samples - length
    if excess <= 0:
        return [0]
    n = 1 + round(excess / hop)
    if n == 1:
        return [crop_offset(excess, crop)]
    return [round(i * excess / (n - 1)) for i in range(n)]


def _kept(signal: np.ndarray, info: dict[str, Any], params: Mapping[str, Any]
          ) -> tuple[np.ndarray, dict[str, Any]]:
    """The clip normalised, then cropped or padded to ``duration_s``, and which part was kept."""
    rate, length = params["sample_rate"], int(round(params["duration_s"] * params["sample_rate"]))
    offset = crop_offset(len(signal) - length, params["crop"])
    signal = fix_duration(normalise(signal, params["normalise"], params["level_db"]), length, params["crop"],
                          params["pad"])
    kept = min(info["speech_duration_s"], params["duration_s"])
    return signal, info | {"window_start_s": round(offset / rate, 3), "kept_duration_s": round(kept, 3)}


def preprocess_clip(path: str, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """Decode, down-mix, resample, trim, normalise and fix the duration of one clip; also return
    what the source was and which part of it was kept, for the manifest."""
    return _kept(*_speech(path, params), params)


def preprocess_windows(path: str, params: Mapping[str, Any]) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """One clip as ``preprocess_clip`` makes it, or, with ``long_clips: windows``, a clip longer than
    ``duration_s`` by more than half of ``window_hop_s`` as windows of that duration about every
    ``window_hop_s`` (``window_starts``), each normalised as a clip of its own; windows quieter than
    the silence threshold are left out."""
    if params.get("long_clips", "crop") != "windows":
        return [preprocess_clip(path, params)]
    signal, info = _speech(path, params)
    rate, length = params["sample_rate"], int(round(params["duration_s"] * params["sample_rate"]))
    starts = window_starts(len(signal), length, max(1, int(round(params["window_hop_s"] * rate))),
                           params["crop"])
    if len(starts) == 1:
        return [_kept(signal, info, params)]
    windows = []
    for start in starts:
        window = signal[start:start + length]
        if 20 * np.log10(float(np.abs(window).max()) + 1e-20) < params["silence_threshold_db"]:
            continue
        windows.append((normalise(window, params["normalise"], params["level_db"]),
                        info | {"window_start_s": round(start / rate, 3),
                                "kept_duration_s": params["duration_s"]}))
    return windows

"""Per-clip features: MFCC and LPCC frame matrices, clip-level statistics, log-mel spectrograms,
openSMILE functionals."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
from python_speech_features import sigproc

STATISTICS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}


def frame_lengths(params: Mapping[str, Any], sample_rate: int) -> tuple[int, int, int]:
    """Window and hop in samples from milliseconds, and the FFT size (next power of two)."""
    window = int(round(params["window_ms"] * sample_rate / 1000))
    hop = int(round(params["hop_ms"] * sample_rate / 1000))
    return window, hop, int(2 ** np.ceil(np.log2(window)))


def active_frames(energy: np.ndarray, top_db: float | None) -> np.ndarray:
    """Frames within ``top_db`` of the loudest; statistics over padding or pauses would describe
    the silence rather than the voice."""
    if top_db is None:
        return np.ones(len(energy), dtype=bool)
    return energy > energy.max() * 10 ** (-top_db / 10)


def clip_statistics(frames: np.ndarray, statistics: Sequence[str]) -> np.ndarray:
    """(frames, coefficients) -> one vector: each statistic over frames, concatenated."""
    unknown = sorted(set(statistics) - set(STATISTICS))
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; choose from {sorted(STATISTICS)}")
    return np.concatenate([STATISTICS[name](frames, axis=0) for name in statistics])


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    # Building the filter bank costs as much as the STFT of a 3 s clip: build it once.
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def mel_power(signal: np.ndarray, sample_rate: int, params: Mapping[str, Any]) -> np.ndarray:
    """(n_mels, frames) mel power spectrogram, as librosa.feature.melspectrogram computes it."""
    window, hop, n_fft = frame_lengths(params, sample_rate)
    stft = librosa.stft(signal, n_fft=n_fft, hop_length=hop, win_length=window,
                        window=params["window"])
    return _mel_filters(sample_rate, n_fft, params["n_mels"]) @ (np.abs(stft) ** 2)


def mfcc_frames(signal: np.ndarray, sample_rate: int, params: Mapping[str, Any]) -> np.ndarray:
    """(active frames, n_mfcc) MFCCs."""
    power = mel_power(signal, sample_rate, params)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=params["n_mfcc"])
    return mfcc.T[active_frames(power.sum(axis=0), params["active_frame_top_db"])]


def lpc(frames: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials [1, a1..ap] per frame by the autocorrelation method (Levinson-Durbin),
    so that x[n] ~ -sum(a_k x[n-k]).

    The autocorrelation method always yields a stable all-pole filter and, vectorised over
    frames, costs well under a millisecond per clip; librosa.lpc (Burg) needs a 36 s numba
    compilation on first use and seconds in every new worker process.
    """
    length = frames.shape[-1]
    # Only order + 1 lags are needed: direct products beat an FFT of the whole frame.
    r = np.stack([np.einsum("ij,ij->i", frames[:, : length - k], frames[:, k:])
                  for k in range(order + 1)], axis=1)
    r[:, 0] = r[:, 0] * (1 + 1e-9) + 1e-12  # white-noise floor keeps silent frames finite
    a = np.zeros((len(frames), order + 1))
    a[:, 0] = 1.0
    error = r[:, 0].copy()
    for i in range(1, order + 1):
        reflection = -(a[:, :i] * r[:, i:0:-1]).sum(axis=1) / error
        a[:, 1:i] = a[:, 1:i] + reflection[:, None] * a[:, i - 1 : 0 : -1]
        a[:, i] = reflection
        error = error * (1 - reflection**2)
    return a


def lpc_to_lpcc(a: np.ndarray, n_ceps: int) -> np.ndarray:
    """Cepstrum c1..cN of the all-pole model 1/A(z) by the standard recursion
    c_n = -a_n - sum_{k=1}^{n-1} (k/n) c_k a_{n-k}, with a_n = 0 beyond the order."""
    order = a.shape[1] - 1
    c = np.zeros((len(a), n_ceps + 1))
    for n in range(1, n_ceps + 1):
        acc = -a[:, n] if n <= order else np.zeros(len(a))
        for k in range(max(1, n - order), n):
            acc = acc - (k / n) * c[:, k] * a[:, n - k]
        c[:, n] = acc
    return c[:, 1:]


def lpcc_frames(signal: np.ndarray, sample_rate: int, params: Mapping[str, Any]) -> np.ndarray:
    """(active frames, n_ceps) LPCCs from pre-emphasised, windowed, overlapping frames."""
    window, hop, _ = frame_lengths(params, sample_rate)
    emphasised = sigproc.preemphasis(signal.astype(np.float64), params["pre_emphasis"])
    frames = sigproc.framesig(emphasised, window, hop,
                              winfunc=lambda n: librosa.filters.get_window(params["window"], n))
    active = active_frames((frames**2).sum(axis=1), params["active_frame_top_db"])
    return lpc_to_lpcc(lpc(frames[active], params["order"]), params["n_ceps"])


def log_mel_spectrogram(signal: np.ndarray, sample_rate: int, params: Mapping[str, Any]
                        ) -> np.ndarray:
    """(n_mels, frames) in dB relative to the clip's loudest bin (0 dB), floored ``top_db`` below
    it: clips are level-normalised already, and a fixed range maps straight onto image pixels."""
    return librosa.power_to_db(mel_power(signal, sample_rate, params), ref=np.max,
                               top_db=params["top_db"])


@lru_cache(maxsize=4)
def _smile(feature_set: str) -> Any:
    """One openSMILE extractor per feature set and process: building one parses its configuration
    (about 0.2 s), and opensmile is imported only by runs that use it."""
    import opensmile

    if feature_set not in opensmile.FeatureSet.__members__:
        raise ValueError(f"unknown openSMILE feature set '{feature_set}'; choose from "
                         f"{', '.join(opensmile.FeatureSet.__members__)}")
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel.Functionals)


def opensmile_feature_names(feature_set: str) -> list[str]:
    """The names of the set's functionals, in the order of `opensmile_functionals`."""
    return list(_smile(feature_set).feature_names)


def opensmile_functionals(signal: np.ndarray, sample_rate: int, feature_set: str) -> np.ndarray:
    """openSMILE's functionals of the whole clip (e.g. eGeMAPSv02: 88 values): its low-level
    descriptors (pitch, loudness, jitter, formants, spectral slopes...) summarised over the clip."""
    with warnings.catch_warnings():
        # A clip too short for its windows gets NaN, which extract_opensmile_functionals reports.
        warnings.filterwarnings("ignore", message="Segment too short")
        return _smile(feature_set).process_signal(signal, sample_rate).to_numpy()[0]

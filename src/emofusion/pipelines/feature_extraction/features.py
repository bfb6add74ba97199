"""Per-clip features: MFCC and LPCC frame matrices, clip-level statistics, log-mel spectrograms,
openSMILE functionals."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import librosa
import numpy as np
from python_speech_features import sigproc

STATISTICS = {"mean": np.mean, "std": np.std, "min": np.min, "max": np.max, "median": np.median}


def frame_lengths(sample_rate: int, *, window_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """Window and hop in samples from milliseconds, and the FFT size (next power of two)."""
    window = int(round(window_ms * sample_rate / 1000))
    hop = int(round(hop_ms * sample_rate / 1000))
    return window, hop, int(2 ** np.ceil(np.log2(window)))


def active_frames(energy: np.ndarray, top_db: float | None) -> np.ndarray:
    """Frames within ``top_db`` of the loudest; statistics over padding or pauses would describe
    the silence rather than the voice."""
    if top_db is None:
        return np.ones(len(energy), dtype=bool)
    return energy > energy.max() * 10 ** (-top_db / 10)


def clip_statistics(frames: np.ndarray, statistics: Sequence[str]) -> np.ndarray:
    """One clip's frames summarised: each statistic over frames, concatenated.

    Parameters
    ----------
    frames : np.ndarray
        (frames, coefficients), e.g. from `mfcc_frames`.
    statistics : sequence of str
        Names from `STATISTICS`, in the order their values are wanted.

    Returns
    -------
    np.ndarray
        (coefficients x statistics,): all coefficients' first statistic, then the second...
    """
    unknown = sorted(set(statistics) - set(STATISTICS))
    if unknown:
        raise ValueError(f"unknown statistics {unknown}; choose from {sorted(STATISTICS)}")
    return np.concatenate([STATISTICS[name](frames, axis=0) for name in statistics])


@lru_cache(maxsize=8)
def _mel_filters(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    # Building the filter bank costs as much as the STFT of a 3 s clip: build it once.
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels)


def mel_power(signal: np.ndarray, sample_rate: int, *, n_mels: int, window: str, window_ms: float,
              hop_ms: float) -> np.ndarray:
    """Mel power spectrogram, as librosa.feature.melspectrogram computes it.

    Parameters
    ----------
    signal : np.ndarray
        One clip's samples.
    sample_rate : int
        Its sampling rate in Hz.
    n_mels : int
        Mel bands.
    window : str
        Window function, a name ``librosa.filters.get_window`` knows (e.g. ``"hamming"``).
    window_ms, hop_ms : float
        Window length and hop in milliseconds; the FFT is the next power of two of the window.

    Returns
    -------
    np.ndarray
        (n_mels, frames) power.
    """
    window_length, hop, n_fft = frame_lengths(sample_rate, window_ms=window_ms, hop_ms=hop_ms)
    stft = librosa.stft(signal, n_fft=n_fft, hop_length=hop, win_length=window_length, window=window)
    return _mel_filters(sample_rate, n_fft, n_mels) @ (np.abs(stft) ** 2)


def mfcc_frames(signal: np.ndarray, sample_rate: int, *, n_mfcc: int, n_mels: int, window: str,
                window_ms: float, hop_ms: float, active_frame_top_db: float | None) -> np.ndarray:
    """MFCCs of the clip's active frames: the DCT of the log-mel power (`mel_power`).

    Parameters
    ----------
    signal : np.ndarray
        One clip's samples.
    sample_rate : int
        Its sampling rate in Hz.
    n_mfcc : int
        Coefficients per frame.
    n_mels, window, window_ms, hop_ms
        The mel spectrogram's, as for `mel_power`.
    active_frame_top_db : float or None
        Frames quieter than this many dB below the loudest are left out (`active_frames`); None
        keeps every frame.

    Returns
    -------
    np.ndarray
        (active frames, n_mfcc) MFCCs.
    """
    power = mel_power(signal, sample_rate, n_mels=n_mels, window=window, window_ms=window_ms,
                      hop_ms=hop_ms)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(power), n_mfcc=n_mfcc)
    return mfcc.T[active_frames(power.sum(axis=0), active_frame_top_db)]


def lpc(frames: np.ndarray, order: int) -> np.ndarray:
    """LPC polynomials by the autocorrelation method (Levinson-Durbin), so that
    x[n] ~ -sum(a_k x[n-k]).

    The autocorrelation method always yields a stable all-pole filter and, vectorised over
    frames, costs well under a millisecond per clip; librosa.lpc (Burg) needs a 36 s numba
    compilation on first use and seconds in every new worker process.

    Parameters
    ----------
    frames : np.ndarray
        (frames, samples), windowed.
    order : int
        The model's order p.

    Returns
    -------
    np.ndarray
        (frames, p + 1): [1, a1..ap] per frame.
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
    """Cepstrum of the all-pole model 1/A(z) by the standard recursion
    c_n = -a_n - sum_{k=1}^{n-1} (k/n) c_k a_{n-k}, with a_n = 0 beyond the order.

    Parameters
    ----------
    a : np.ndarray
        (frames, p + 1) LPC polynomials, as `lpc` gives them.
    n_ceps : int
        Coefficients N wanted; more than p is fine.

    Returns
    -------
    np.ndarray
        (frames, N): c1..cN per frame.
    """
    order = a.shape[1] - 1
    c = np.zeros((len(a), n_ceps + 1))
    for n in range(1, n_ceps + 1):
        acc = -a[:, n] if n <= order else np.zeros(len(a))
        for k in range(max(1, n - order), n):
            acc = acc - (k / n) * c[:, k] * a[:, n - k]
        c[:, n] = acc
    return c[:, 1:]


def lpcc_frames(signal: np.ndarray, sample_rate: int, *, order: int, n_ceps: int, pre_emphasis: float,
                window: str, window_ms: float, hop_ms: float, active_frame_top_db: float | None
                ) -> np.ndarray:
    """LPCCs of the clip's active frames, from pre-emphasised, windowed, overlapping frames.

    Parameters
    ----------
    signal : np.ndarray
        One clip's samples.
    sample_rate : int
        Its sampling rate in Hz.
    order : int
        LPC order per frame (`lpc`).
    n_ceps : int
        Cepstral coefficients per frame (`lpc_to_lpcc`).
    pre_emphasis : float
        Coefficient of the first-order pre-emphasis filter.
    window, window_ms, hop_ms
        The frames' window function, length and hop, as for `mel_power`.
    active_frame_top_db : float or None
        Frames quieter than this many dB below the loudest are left out; None keeps every frame.

    Returns
    -------
    np.ndarray
        (active frames, n_ceps) LPCCs.
    """
    window_length, hop, _ = frame_lengths(sample_rate, window_ms=window_ms, hop_ms=hop_ms)
    emphasised = sigproc.preemphasis(signal.astype(np.float64), pre_emphasis)
    frames = sigproc.framesig(emphasised, window_length, hop,
                              winfunc=lambda n: librosa.filters.get_window(window, n))
    active = active_frames((frames**2).sum(axis=1), active_frame_top_db)
    return lpc_to_lpcc(lpc(frames[active], order), n_ceps)


def log_mel_spectrogram(signal: np.ndarray, sample_rate: int, *, n_mels: int, window: str,
                        window_ms: float, hop_ms: float, top_db: float) -> np.ndarray:
    """Log-mel spectrogram relative to the clip's loudest bin: clips are level-normalised already,
    and a fixed range maps straight onto image pixels.

    Parameters
    ----------
    signal : np.ndarray
        One clip's samples.
    sample_rate : int
        Its sampling rate in Hz.
    n_mels, window, window_ms, hop_ms
        The mel spectrogram's, as for `mel_power`.
    top_db : float
        The floor, in dB below the loudest bin.

    Returns
    -------
    np.ndarray
        (n_mels, frames) in dB, from -top_db to 0.
    """
    power = mel_power(signal, sample_rate, n_mels=n_mels, window=window, window_ms=window_ms,
                      hop_ms=hop_ms)
    return librosa.power_to_db(power, ref=np.max, top_db=top_db)


@lru_cache(maxsize=4)
def _smile(feature_set: str) -> Any:
    """One openSMILE extractor per feature set and process: building one parses its configuration
    (about 0.2 s), and opensmile is imported only by runs that use it."""
    import opensmile  # openSMILE: only in runs that use its streams

    if feature_set not in opensmile.FeatureSet.__members__:
        raise ValueError(f"unknown openSMILE feature set '{feature_set}'; choose from "
                         f"{', '.join(opensmile.FeatureSet.__members__)}")
    return opensmile.Smile(feature_set=opensmile.FeatureSet[feature_set],
                           feature_level=opensmile.FeatureLevel.Functionals)


def opensmile_feature_names(feature_set: str) -> list[str]:
    """The names of the set's functionals, in the order of `opensmile_functionals`."""
    return list(_smile(feature_set).feature_names)


def opensmile_functionals(signal: np.ndarray, sample_rate: int, feature_set: str) -> np.ndarray:
    """openSMILE's functionals of the whole clip: its low-level descriptors (pitch, loudness,
    jitter, formants, spectral slopes...) summarised over the clip.

    Parameters
    ----------
    signal : np.ndarray
        One clip's samples.
    sample_rate : int
        Its sampling rate in Hz.
    feature_set : str
        A member of ``opensmile.FeatureSet``, e.g. ``"eGeMAPSv02"`` (88 values).

    Returns
    -------
    np.ndarray
        (functionals,), named by `opensmile_feature_names`; NaN where the clip is too short.
    """
    with warnings.catch_warnings():
        # A clip too short for its windows gets NaN, which extract_opensmile_functionals reports.
        warnings.filterwarnings("ignore", message="Segment too short")
        return _smile(feature_set).process_signal(signal, sample_rate).to_numpy()[0]

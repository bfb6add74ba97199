"""feature_extraction nodes: preprocessed audio -> MFCC, LPCC, openSMILE functionals and log-mel
spectrogram arrays."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib.metadata import version
from typing import Any

import numpy as np

from emofusion.clip_array import ClipArray, RowPart, row_parts, rows_per_part
from emofusion.parallel import imap_chunks

from .features import (
    clip_statistics,
    log_mel_spectrogram,
    lpcc_frames,
    mfcc_frames,
    opensmile_feature_names,
    opensmile_functionals,
)

# librosa's submodules that the feature functions use and librosa loads on first use: a per-clip
# worker imports them as it starts (emofusion.engine.with_worker_imports).
WORKER_IMPORTS = ("librosa.feature.spectral", "librosa.filters")


def _audio_settings(audio: ClipArray) -> dict[str, Any]:
    """The preprocessing behind a feature, kept in its metadata so that a trained model can check
    that new audio is prepared the same way."""
    return dict(audio.metadata.get("preprocessing", {}))


def _made_with(audio: ClipArray, name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters a feature is made from, the audio's included, by parameter path: fusion
    checks them against its run's (emofusion.provenance)."""
    return {**audio.metadata.get("made_with", {}), name: dict(options)}


def _all_but(options: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The options a feature function takes: all of a parameter group but the one its node uses."""
    return {name: value for name, value in options.items() if name != key}


def _clip_vectors(chunk: np.ndarray, frames: Callable[..., np.ndarray], sample_rate: int,
                  statistics: Sequence[str], frame_options: Mapping[str, Any]) -> list[np.ndarray]:
    return [clip_statistics(frames(signal, sample_rate, **frame_options), statistics) for signal in chunk]


def _per_clip_statistics(audio: ClipArray, frames: Callable[..., np.ndarray], name: str,
                         width: int, options: Mapping[str, Any], n_jobs: int) -> ClipArray:
    """`options`: the frame function's keyword arguments and the `statistics` taken over frames."""
    rows = imap_chunks(_clip_vectors, audio.values, n_jobs=n_jobs,
                       description=f"Extracting {name.upper()}", frames=frames,
                       sample_rate=audio.metadata["sample_rate"], statistics=options["statistics"],
                       frame_options=_all_but(options, "statistics"))
    values = np.stack(list(rows)).astype(np.float32)
    columns = [f"{name}_{stat}_{i:02d}" for stat in options["statistics"] for i in range(width)]
    return ClipArray(audio.clip_ids, values, {"feature": name, "columns": columns,
                                              "parameters": dict(options), "audio": _audio_settings(audio),
                                              "made_with": _made_with(audio, name, options)})


def extract_mfcc(preprocessed_audio: ClipArray, mfcc_options: Mapping[str, Any], n_jobs: int
                 ) -> ClipArray:
    """Clip-level statistics of per-frame MFCCs (`mfcc_frames`): (clips, n_mfcc x statistics)."""
    return _per_clip_statistics(preprocessed_audio, mfcc_frames, "mfcc", mfcc_options["n_mfcc"],
                                mfcc_options, n_jobs)


def extract_lpcc(preprocessed_audio: ClipArray, lpcc_options: Mapping[str, Any], n_jobs: int
                 ) -> ClipArray:
    """Clip-level statistics of per-frame LPCCs (`lpcc_frames`): (clips, n_ceps x statistics)."""
    return _per_clip_statistics(preprocessed_audio, lpcc_frames, "lpcc", lpcc_options["n_ceps"],
                                lpcc_options, n_jobs)


def _functionals(chunk: np.ndarray, sample_rate: int, feature_set: str) -> list[np.ndarray]:
    return [opensmile_functionals(np.asarray(signal), sample_rate, feature_set) for signal in chunk]


def extract_opensmile_functionals(preprocessed_audio: ClipArray, opensmile_options: Mapping[str, Any],
                                  n_jobs: int, *, stream: str) -> ClipArray:
    """(clips, functionals) of an openSMILE feature set (`opensmile_options["feature_set"]`, e.g.
    eGeMAPSv02 or ComParE_2016), one row per clip, computed from the preprocessed audio so that they
    describe the same clips, at the same rate and level, as every other stream. `stream` is the
    entry of `opensmile` the options come from: its settings are recorded under `opensmile.<stream>`,
    so that fusion refuses a stored stream made with other ones."""
    feature_set = opensmile_options["feature_set"]
    columns = opensmile_feature_names(feature_set)  # also checks the name before workers start
    rows = imap_chunks(_functionals, preprocessed_audio.values, n_jobs=n_jobs,
                       description=f"openSMILE {feature_set}", isolated=True,
                       sample_rate=preprocessed_audio.metadata["sample_rate"], feature_set=feature_set)
    values = np.stack(list(rows)).astype(np.float32)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():  # openSMILE fills a clip too short for its windows with NaN
        raise ValueError(f"openSMILE {feature_set} gave non-finite values for {bad.sum()} clips (first: "
                         f"{preprocessed_audio.clip_ids[bad][:3].tolist()}): clips of "
                         f"{preprocessed_audio.metadata.get('duration_s')} s are too short for it; "
                         "raise audio.duration_s")
    return ClipArray(preprocessed_audio.clip_ids, values, {
        "feature": feature_set, "feature_level": "functionals", "columns": columns,
        "parameters": dict(opensmile_options), "audio": _audio_settings(preprocessed_audio),
        "versions": {"opensmile": version("opensmile")},
        "made_with": _made_with(preprocessed_audio, f"opensmile.{stream}", opensmile_options)})


def _spectrograms(chunk: np.ndarray, sample_rate: int, dtype: str, spectrogram_options: Mapping[str, Any]
                  ) -> list[np.ndarray]:
    return [log_mel_spectrogram(signal, sample_rate, **spectrogram_options).astype(dtype) for signal in chunk]


def extract_log_mel_spectrogram(preprocessed_audio: ClipArray,
                                log_mel_spectrogram_options: Mapping[str, Any], n_jobs: int
                                ) -> Iterator[RowPart]:
    """(clips, n_mels, frames) log-mel spectrograms (`log_mel_spectrogram`) at native resolution,
    stored as `dtype`; turning them into CNN images is transfer_features' job. Yielded part by part
    (`clip_array.PART_BYTES`), as preprocess_audio's audio: the spectrograms of a corpus are as
    large as its audio."""
    sample_rate = preprocessed_audio.metadata["sample_rate"]
    dtype = log_mel_spectrogram_options["dtype"]
    spectrograms = imap_chunks(_spectrograms, preprocessed_audio.values, n_jobs=n_jobs,
                               description="Log-mel spectrograms", sample_rate=sample_rate, dtype=dtype,
                               spectrogram_options=_all_but(log_mel_spectrogram_options, "dtype"))
    metadata = {"feature": "log_mel_spectrogram", "unit": "dB re the clip's loudest bin",
                "axes": ["clip", "mel", "frame"],
                "sample_rate": sample_rate, "parameters": dict(log_mel_spectrogram_options),
                "audio": _audio_settings(preprocessed_audio),
                "made_with": _made_with(preprocessed_audio, "log_mel_spectrogram",
                                        log_mel_spectrogram_options)}
    for (part,) in row_parts(_spectrogram_blocks(preprocessed_audio.clip_ids, spectrograms, dtype, metadata)):
        yield part


def _spectrogram_blocks(clip_ids: np.ndarray, rows: Iterator[np.ndarray], dtype: str,
                        metadata: dict[str, Any]) -> Iterator[tuple[ClipArray]]:
    """Consecutive rows as ClipArrays of a part's size, the first fixing it; one empty ClipArray for
    no clips."""
    first = next(rows, None)
    if first is None:
        yield (ClipArray(clip_ids, np.empty((0, 0, 0), dtype=dtype), metadata),)
        return
    size = rows_per_part(first.shape, dtype)
    block, start = [first], 0
    for row in rows:
        if len(block) == size:
            yield (ClipArray(clip_ids[start : start + size], np.stack(block), metadata),)
            block, start = [], start + size
        block.append(row)
    yield (ClipArray(clip_ids[start:], np.stack(block), metadata),)

"""Features standardised by their own speaker's (or corpus's) statistics, chunk by chunk so that a
large memory-mapped stream is never copied whole: the one rule of the fusion pipeline, the domain
record of a trained model and `emofusion predict`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ROWS_PER_COPY
from emofusion.errors import FusionConfigError
from emofusion.fused_columns import GroupStatistics


def _chunks(values: np.ndarray, rows: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), ROWS_PER_COPY):
        yield np.asarray(values[rows[start:start + ROWS_PER_COPY]], dtype=np.float64)


def feature_statistics(values: np.ndarray, pooled_axes: tuple[int, ...] = (), rows: np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation in float64 over the rows (axis 0; only `rows`, if given) and
    the `pooled_axes` (a spectrogram's frames, axis 2: one value per mel band), computed over chunks
    of rows so that a wide or large float32/float16 array is never copied whole. They keep the
    pooled axes as length 1, so they broadcast against rows. A constant feature gets 1, so it
    standardises to 0, not NaN."""
    rows = np.arange(len(values)) if rows is None else rows
    axes = (0, *pooled_axes)
    count = len(rows) * int(np.prod([values.shape[axis] for axis in pooled_axes]))
    mean = sum(chunk.sum(axis=axes, keepdims=True) for chunk in _chunks(values, rows))[0] / count
    std = np.sqrt(sum(np.square(chunk - mean).sum(axis=axes, keepdims=True)
                      for chunk in _chunks(values, rows))[0] / count)
    std[std <= 1e-6 * np.abs(mean)] = 1.0
    return mean, std


def relative_spread(std: np.ndarray, reference_std: np.ndarray) -> float:
    """How widely a group of rows varies against a reference, one number: the median over features of
    its standard deviation over the reference's. A group that lacks what the reference varies with
    (a batch of recordings of one emotion, against corpora of many) is far below the reference's
    corpora; a gain or a microphone moves the features' means, not this."""
    return float(np.median(np.asarray(std).ravel() / np.asarray(reference_std).ravel()))


def _standardise_rows(values: np.ndarray, rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    for first in range(0, len(rows), ROWS_PER_COPY):
        chunk = rows[first:first + ROWS_PER_COPY]
        values[chunk] = ((values[chunk] - mean) / std).astype(values.dtype)


def has_own_statistics(speakers: Sequence[Any], min_clips: int, sources: Sequence[Any] | None = None
                       ) -> np.ndarray:
    """Per row, whether it is standardised by its own speaker's statistics: whether its speaker has
    at least `min_clips` recordings. Recordings, not rows: the windows cut from one long recording
    (`sources`, their `source_clip_id`) count once, so that one recording is never standardised by
    itself; without `sources` each row is a recording of its own. Rows without a speaker never are.
    The one rule of training and `emofusion predict`, which also says how many files fell back."""
    table = pd.DataFrame({"speaker": pd.Series(list(speakers), dtype=object),
                          "source": range(len(speakers)) if sources is None else list(sources)})
    recordings = table.groupby("speaker")["source"].nunique()
    return (table["speaker"].map(recordings) >= min_clips).to_numpy()


def group_statistics(values: np.ndarray, speakers: Sequence[Any], min_clips: int,
                     fallback: Mapping[str, Sequence[float]] | None = None,
                     pooled_axes: tuple[int, ...] = (), sources: Sequence[Any] | None = None
                     ) -> tuple[GroupStatistics, dict[str, list[float]], dict[str, int]]:
    """The statistics that standardise `values` feature by feature (a column; with `pooled_axes`,
    e.g. a spectrogram's frames, a mel band over all its frames): each row by the mean and standard
    deviation of its own speaker's rows. That removes what is constant in a voice (its pitch range,
    timbre, recording level) and keeps how each clip departs from it. A row depends on its
    speaker's rows only, never on a label or another speaker's clips.

    Rows without a speaker, or whose speaker has fewer than `min_clips` recordings (too few for
    stable statistics; `sources` says which recording each row was cut from, see
    `has_own_statistics`), are standardised by `fallback` ({"mean": [...], "std": [...]}, one value
    per feature), by default the statistics of all rows: the last group. Returns the statistics,
    the fallback used and the counts of rows, with each group's `spread` against the fallback's
    (`relative_spread`): what `emofusion predict` compares a batch of one domain with."""
    if min_clips < 2:
        raise FusionConfigError(f"speaker_statistics.min_clips must be at least 2, got {min_clips}")
    own = has_own_statistics(speakers, min_clips, sources)
    speakers = pd.Series(list(speakers), dtype=object)
    shape = tuple(1 if axis in pooled_axes else size for axis, size in enumerate(values.shape) if axis)
    if fallback is None:
        mean, std = feature_statistics(values, pooled_axes)
        fallback = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    mean, std = np.asarray(fallback["mean"]), np.asarray(fallback["std"])
    features = int(np.prod(shape))
    if mean.size != features or std.shape != mean.shape:
        raise ValueError(f"the fallback statistics have {mean.size} values for {features} features: "
                         "they come from features made with other settings")
    own_speakers = speakers[own].unique()
    group = np.full(len(speakers), len(own_speakers))
    means, stds, spread = [], [], {}
    for index, speaker in enumerate(own_speakers):
        rows = np.flatnonzero((speakers == speaker).to_numpy())
        own_mean, own_std = feature_statistics(values, pooled_axes, rows)
        spread[str(speaker)] = relative_spread(own_std, std)
        group[rows] = index
        means.append(own_mean)
        stds.append(own_std)
    statistics = GroupStatistics(group, np.stack([*means, mean.reshape(shape)]),
                                 np.stack([*stds, std.reshape(shape)]))
    return statistics, dict(fallback), {"speakers": len(own_speakers), "normalised": int(own.sum()),
                                        "fallback": int((~own).sum()), "spread": spread}


def standardise_by_speaker(values: np.ndarray, speakers: Sequence[Any], min_clips: int,
                           fallback: Mapping[str, Sequence[float]] | None = None,
                           pooled_axes: tuple[int, ...] = (), sources: Sequence[Any] | None = None
                           ) -> tuple[dict[str, list[float]], dict[str, int]]:
    """`values` standardised in place by `group_statistics`; returns its fallback and counts."""
    statistics, fallback, counts = group_statistics(values, speakers, min_clips, fallback, pooled_axes,
                                                    sources)
    apply_group_statistics(values, statistics)
    return fallback, counts


def apply_group_statistics(values: np.ndarray, statistics: GroupStatistics) -> None:
    """Standardise `values` in place, each row by its group's statistics."""
    for group in range(len(statistics.mean)):
        _standardise_rows(values, np.flatnonzero(statistics.group == group), statistics.mean[group],
                          statistics.std[group])

"""The columns of several feature streams side by side, read row by row: what a fusion variant is,
without a copy of its streams. A run's CNN columns are stored once however many variants fuse them,
so disk grows with the number of streams, not with streams x variants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emofusion.clip_array import ROWS_PER_COPY, portable, read_rows, rebuilt


@dataclass(frozen=True)
class StreamColumns:
    """One stream's part of a fused variant: for each fused row, the row of `values` it reads."""

    values: np.ndarray
    rows: np.ndarray

    @property
    def width(self) -> int:
        return int(np.prod(self.values.shape[1:]))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return rebuilt, (StreamColumns, *map(portable, (self.values, self.rows)))


@dataclass(frozen=True)
class GroupStatistics:
    """Standardisation by group (a speaker, a corpus): each row's group, and per group the mean
    and standard deviation of every column (float64, as they were computed)."""

    group: np.ndarray
    mean: np.ndarray
    std: np.ndarray

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return rebuilt, (GroupStatistics, *map(portable, (self.group, self.mean, self.std)))


class FusedColumns:
    """A read-only float32 matrix of `streams` side by side, optionally standardised by group,
    computed for the rows asked for. It answers what the models ask of a fused matrix (`shape`,
    `len`, rows by index or slice); `np.asarray` makes the whole matrix."""

    dtype = np.dtype(np.float32)
    ndim = 2

    def __init__(self, streams: Sequence[StreamColumns], standardisation: GroupStatistics | None = None
                 ) -> None:
        lengths = {len(stream.rows) for stream in streams}
        if len(lengths) != 1:
            raise ValueError(f"fused streams of different numbers of rows: {sorted(lengths)}")
        self.streams = tuple(streams)
        self.standardisation = standardisation
        self.shape = (lengths.pop(), sum(stream.width for stream in streams))
        if standardisation is not None and (len(standardisation.group) != self.shape[0]
                                            or standardisation.mean.shape[1:] != (self.shape[1],)):
            raise ValueError("the group statistics do not fit the fused columns")

    def __len__(self) -> int:
        return self.shape[0]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return FusedColumns, (self.streams, self.standardisation)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            raise TypeError("fused columns are read by rows; select columns from the rows read")
        rows = np.arange(self.shape[0])[key]
        if rows.ndim == 0:
            return self[rows.reshape(1)][0]
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        start = 0
        for stream in self.streams:
            stop = start + stream.width
            for first in range(0, len(rows), ROWS_PER_COPY):
                chunk = stream.rows[rows[first:first + ROWS_PER_COPY]]
                out[first:first + len(chunk), start:stop] = read_rows(stream.values, chunk).reshape(
                    len(chunk), stream.width)
            start = stop
        if self.standardisation is not None:
            statistics = self.standardisation
            groups = statistics.group[rows]
            for group in np.unique(groups):
                members = np.flatnonzero(groups == group)
                for first in range(0, len(members), ROWS_PER_COPY):
                    chunk = members[first:first + ROWS_PER_COPY]
                    out[chunk] = ((out[chunk] - statistics.mean[group]) / statistics.std[group]
                                  ).astype(self.dtype)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        values = self[:]
        return values if dtype is None else values.astype(dtype)

    def standardised(self, standardisation: GroupStatistics) -> FusedColumns:
        """The same columns standardised by group."""
        return FusedColumns(self.streams, standardisation)

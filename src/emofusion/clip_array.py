"""A per-clip array that carries its clip ids, so streams are joined by id, never by position."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import MissingClipsError

ROWS_PER_COPY = 256  # rows copied at a time from a memory-mapped array, so that no step copies it whole
# The rows a generator node hands Kedro at a time (about 350 clips of 3 s of 16 kHz audio): with the
# part it looks ahead to, the most of a stage's output the run's process holds.
PART_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ClipArray:
    """Rows of ``values`` belong to ``clip_ids`` in the same order; ``metadata`` says how they were made."""

    clip_ids: np.ndarray
    values: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = np.asarray(self.clip_ids, dtype=str)
        object.__setattr__(self, "clip_ids", ids)
        if ids.ndim != 1 or len(ids) != len(self.values):
            raise ValueError(
                f"ClipArray has {len(ids)} clip ids for {len(self.values)} rows of values"
            )
        if len(np.unique(ids)) != len(ids):
            raise ValueError("ClipArray clip ids must be unique")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return rebuilt, (ClipArray, (np.asarray, (self.clip_ids,)), portable(self.values),
                         (dict, (self.metadata,)))

    def __len__(self) -> int:
        return len(self.clip_ids)

    def positions(self, clip_ids: Sequence[str]) -> np.ndarray:
        """Row numbers of ``clip_ids`` in that order; a missing id is an error, not a silent gap."""
        position = {clip_id: i for i, clip_id in enumerate(self.clip_ids)}
        missing = [clip_id for clip_id in clip_ids if clip_id not in position]
        if missing:
            raise MissingClipsError(missing)
        return np.fromiter((position[c] for c in clip_ids), dtype=np.int64, count=len(clip_ids))

    def select(self, clip_ids: Sequence[str]) -> ClipArray:
        """Rows for ``clip_ids`` in that order."""
        rows = self.positions(clip_ids)
        return ClipArray(np.asarray(clip_ids, dtype=str), self.values[rows], dict(self.metadata))


class RowPart:
    """Consecutive rows of one output of a generator node, which Kedro saves part by part as they are
    yielded: `first` starts the output anew, `last` completes it. A ClipArray's parts go to its file
    as they come (emofusion.datasets.ClipArrayDataset), so that no process holds every clip's rows;
    a table's (a row per clip) are joined and saved whole.

    A dataset takes the rows (`taken`) and the part lets go of them: Kedro's runner keeps the parts
    of a node with several outputs until it has saved them all (itertools.tee keeps up to 57), which
    would otherwise hold every part of a corpus's audio."""

    def __init__(self, data: ClipArray | pd.DataFrame, first: bool, last: bool) -> None:
        self._data: ClipArray | pd.DataFrame | None = data
        self.first, self.last = first, last

    @property
    def data(self) -> ClipArray | pd.DataFrame:
        if self._data is None:
            raise ValueError("this part's rows were taken by the dataset that saved them")
        return self._data

    def taken(self) -> ClipArray | pd.DataFrame:
        data, self._data = self.data, None
        return data


def joined(parts: Sequence[RowPart]) -> ClipArray | pd.DataFrame:
    """The whole output from its parts, in memory: for `emofusion predict`'s few files, and for
    callers of a generator node outside a Kedro run."""
    return concatenated([part.data for part in parts])


def concatenated(data: Sequence[ClipArray | pd.DataFrame]) -> ClipArray | pd.DataFrame:
    """Consecutive rows as one ClipArray or table."""
    if isinstance(data[0], ClipArray):
        return ClipArray(np.concatenate([piece.clip_ids for piece in data]),
                         np.concatenate([piece.values for piece in data]), data[-1].metadata)
    return pd.concat([piece for piece in data if len(piece)] or data[:1], ignore_index=True)


def rows_per_part(row_shape: Sequence[int], dtype: np.dtype | str) -> int:
    """How many rows of this shape and type make a part of about PART_BYTES."""
    return max(1, PART_BYTES // (int(np.prod(row_shape)) * np.dtype(dtype).itemsize))


def row_parts(blocks: Iterable[tuple[Any, ...]]) -> Iterator[tuple[RowPart, ...]]:
    """Each output of each block (a tuple, one item per output) as a RowPart marked first or last,
    a block looked ahead to know the last; `blocks` yields at least one, if only an empty one."""
    iterator = iter(blocks)
    held, first = next(iterator), True
    for block in iterator:
        yield tuple(RowPart(data, first, False) for data in held)
        held, first = block, False
    yield tuple(RowPart(data, first, True) for data in held)


def joined_outputs(yielded: Iterable[tuple[RowPart, ...]]) -> tuple[ClipArray | pd.DataFrame, ...]:
    """Each output of a generator node that yields one RowPart per output at a time, whole."""
    return tuple(joined(parts) for parts in zip(*yielded, strict=True))


def is_whole_file_map(values: np.ndarray) -> bool:
    """Whether `values` is a whole memory map of its file, not a view of part of one."""
    if not isinstance(values, np.memmap) or values.filename is None:
        return False
    root = values
    while isinstance(root.base, np.ndarray):
        root = root.base
    return (values.ctypes.data == root.ctypes.data and values.shape == root.shape
            and values.strides == root.strides)


def map_arguments(values: np.memmap) -> tuple[Any, ...]:
    """What `reopen_map` needs to map the same file in another process."""
    return values.filename, values.dtype.str, values.offset, values.shape, values.flags.f_contiguous


def reopen_map(filename: str, dtype: str, offset: int, shape: tuple[int, ...], fortran_order: bool
               ) -> np.memmap:
    return np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape,
                     order="F" if fortran_order else "C")


def portable(values: np.ndarray) -> tuple[Any, tuple[Any, ...]]:
    """How `values` travels to another process (a fold's worker), as a maker and its arguments: a
    whole-file memory map as its file's name, mapped again there, so that the worker reads the
    rows it needs, not hundreds of megabytes each; anything else as itself."""
    if is_whole_file_map(values):
        return reopen_map, map_arguments(values)
    return np.asarray, (values,)


def rebuilt(kind: type, *parts: tuple[Any, tuple[Any, ...]]) -> Any:
    """`kind` of its parts, each made by its maker (`portable`) in the process that unpickles it."""
    return kind(*(make(*arguments) for make, arguments in parts))


def read_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of these rows. From a memory map, through a map of the same file that is closed
    right after, so the pages read do not stay mapped in (and counted against) this process for
    the rest of the node."""
    if is_whole_file_map(values):
        return reopen_map(*map_arguments(values))[rows]
    return values[rows]

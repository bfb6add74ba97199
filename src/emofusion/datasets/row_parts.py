"""Datasets that take a generator node's output in parts (emofusion.clip_array.RowPart) and save it
whole: a table with a row per clip is small beside the clips' audio, which ClipArrayDataset writes
part by part instead."""

from __future__ import annotations

from typing import Any

from kedro.io import MemoryDataset
from kedro_datasets.pandas import CSVDataset

from emofusion.clip_array import RowPart, concatenated


class JoinedParts:
    """Parts kept until the last has come, then saved joined as one output; anything else as usual."""

    _parts: list[Any]

    def save(self, data: Any) -> None:
        if not isinstance(data, RowPart):
            super().save(data)  # type: ignore[misc]
            return
        if data.first:
            self._parts = []
        self._parts.append(data.taken())
        if data.last:
            parts, self._parts = self._parts, []
            super().save(concatenated(parts))  # type: ignore[misc]


class ClipTableDataset(JoinedParts, CSVDataset):
    """kedro-datasets' pandas.CSVDataset, taking a clip table in parts too."""


class JoinedPartsMemoryDataset(JoinedParts, MemoryDataset):
    """An in-memory output (`emofusion predict`'s) of a generator node, whole."""

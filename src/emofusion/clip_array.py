"""A per-clip array that carries its clip ids, so streams are joined by id, never by position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emofusion.errors import MissingClipsError


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

"""Kedro dataset for a :class:`ClipArray`: a folder with ``values.npy``, ``clip_ids.json`` and
``metadata.json``. The values are a plain ``.npy`` file so they can be memory-mapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from emofusion.clip_array import ClipArray


class ClipArrayDataset(AbstractDataset[ClipArray, ClipArray]):
    """Saves and loads a ClipArray on the local file system.

    Example catalog entry::

        log_mel_spectrogram:
          type: emofusion.datasets.ClipArrayDataset
          path: data/04_feature/log_mel_spectrogram
          load_args:
            mmap_mode: r
    """

    def __init__(
        self,
        *,
        path: str,
        load_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, local_path = get_protocol_and_path(path)
        if protocol != "file":
            raise DatasetError(f"ClipArrayDataset only supports local paths, got '{path}'")
        self._path = Path(local_path)
        self._load_args = dict(load_args or {})
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args}

    def _exists(self) -> bool:
        return (self._path / "values.npy").is_file() and (self._path / "clip_ids.json").is_file()

    def load(self) -> ClipArray:
        if not self._exists():
            raise DatasetError(f"No clip array at '{self._path}'")
        values = np.load(self._path / "values.npy", mmap_mode=self._load_args.get("mmap_mode"))
        clip_ids = json.loads((self._path / "clip_ids.json").read_text())
        metadata_file = self._path / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        return ClipArray(np.asarray(clip_ids, dtype=str), values, metadata)

    def save(self, data: ClipArray) -> None:
        if not isinstance(data, ClipArray):
            raise DatasetError(f"ClipArrayDataset saves a ClipArray, got {type(data).__name__}")
        # Write beside the target and swap, so an interrupted save never leaves a mixed folder.
        staging = self._path.with_name(self._path.name + ".saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        np.save(staging / "values.npy", np.ascontiguousarray(data.values))
        (staging / "clip_ids.json").write_text(json.dumps(data.clip_ids.tolist()))
        (staging / "metadata.json").write_text(json.dumps(data.metadata, indent=2, default=str))
        shutil.rmtree(self._path, ignore_errors=True)
        staging.rename(self._path)

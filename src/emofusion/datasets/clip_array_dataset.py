"""Kedro dataset for a :class:`ClipArray`: a folder with ``values.npy``, ``clip_ids.json`` and
``metadata.json``. The values are a plain ``.npy`` file so they can be memory-mapped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path

from emofusion.clip_array import ClipArray, is_whole_file_map
from emofusion.errors import DamagedDatasetError


class ClipArrayDataset(AbstractDataset[ClipArray, ClipArray]):
    """Saves and loads a ClipArray on the local file system.

    Example catalog entry::

        log_mel_spectrogram:
          type: emofusion.datasets.ClipArrayDataset
          path: data/04_feature/log_mel_spectrogram
          load_args:
            mmap_mode: r

    ``optional: true`` makes ``load`` return None while nothing is saved yet: a node can then read
    its own previous output (under a second catalog name) and decide whether it is still valid.
    Saving a memory-mapped array loaded from this very folder rewrites only the JSON files.
    """

    def __init__(
        self,
        *,
        path: str,
        load_args: dict[str, Any] | None = None,
        optional: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        protocol, local_path = get_protocol_and_path(path)
        if protocol != "file":
            raise DatasetError(f"ClipArrayDataset only supports local paths, got '{path}'")
        self._path = Path(local_path)
        self._load_args = dict(load_args or {})
        self._optional = optional
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args, "optional": self._optional}

    def _exists(self) -> bool:
        return (self._path / "values.npy").is_file() and (self._path / "clip_ids.json").is_file()

    def damage(self) -> str | None:
        """What is wrong with the stored files, if anything: values cut short or padded against the
        shape in their own header, or a number of rows other than the number of clip ids. Reads the
        header and the ids, not the values."""
        if not self._exists():
            return None
        values_file = self._path / "values.npy"
        try:
            with values_file.open("rb") as stream:
                version = np.lib.format.read_magic(stream)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(stream)
                header_bytes = stream.tell()
            clip_ids = json.loads((self._path / "clip_ids.json").read_text())
        except (ValueError, OSError) as error:  # JSONDecodeError is a ValueError
            return f"its files cannot be read ({error})"
        expected = header_bytes + int(np.prod(shape)) * dtype.itemsize
        size = values_file.stat().st_size
        if size != expected:
            return (f"values.npy holds {size:,} bytes where its header's shape {tuple(shape)} of {dtype} "
                    f"needs {expected:,}")
        if not shape or shape[0] != len(clip_ids):
            return f"values.npy has shape {tuple(shape)} for {len(clip_ids)} clip ids"
        return None

    def load(self) -> ClipArray | None:
        if not self._exists():
            if self._optional:
                return None
            raise DatasetError(f"No clip array at '{self._path}'")
        damage = self.damage()
        if damage:
            raise DamagedDatasetError(f"The stored clip array '{self._path}' is damaged: {damage}. "
                                      "Remake it by running the pipeline that makes it again.")
        values = np.load(self._path / "values.npy", mmap_mode=self._load_args.get("mmap_mode"))
        clip_ids = json.loads((self._path / "clip_ids.json").read_text())
        metadata_file = self._path / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        return ClipArray(np.asarray(clip_ids, dtype=str), values, metadata)

    def save(self, data: ClipArray) -> None:
        if not isinstance(data, ClipArray):
            raise DatasetError(f"ClipArrayDataset saves a ClipArray, got {type(data).__name__}")
        if _maps_whole_file(data.values, self._path / "values.npy"):
            # Values read from here unchanged (a reused result): the file already holds them.
            self._write_json(self._path, data)
            return
        # Write beside the target and swap, so an interrupted save never leaves a mixed folder.
        staging = self._path.with_name(self._path.name + ".saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        np.save(staging / "values.npy", np.ascontiguousarray(data.values))
        self._write_json(staging, data)
        shutil.rmtree(self._path, ignore_errors=True)
        staging.rename(self._path)

    @staticmethod
    def _write_json(folder: Path, data: ClipArray) -> None:
        (folder / "clip_ids.json").write_text(json.dumps(data.clip_ids.tolist()))
        (folder / "metadata.json").write_text(json.dumps(data.metadata, indent=2, default=str))


def _maps_whole_file(values: np.ndarray, values_file: Path) -> bool:
    """Whether ``values`` is the whole memory-mapped ``values_file``, not a view of part of it."""
    return (is_whole_file_map(values) and values_file.exists()
            and Path(values.filename).resolve() == values_file.resolve())

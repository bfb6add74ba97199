"""Kedro dataset for a :class:`ClipArray`: a folder with ``values.npy``, ``clip_ids.json`` and
``metadata.json``. The values are a plain ``.npy`` file so they can be memory-mapped. A generator
node's output comes in parts (:class:`RowPart`), whose rows are written as they come.

A ClipArray of :class:`FusedColumns` (a fusion variant) is stored as what it reads, not as a copy:
``columns.json`` names each stream's folder (relative to this one) with a fingerprint of its clip ids
and settings, ``stream_rows.npy`` the stream's row for each clip, and ``group*.npy`` the statistics
of a variant standardised per speaker or corpus. A stream that is not a memory map of a stored
array (made in memory, or stored another way) is kept here as ``stream_<i>.npy``. Loading checks
the fingerprints: a stream made again with other clips or settings since is reported as damage,
never read in the wrong order."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from kedro.io.core import AbstractDataset, DatasetError

from emofusion.clip_array import ClipArray, RowPart, is_whole_file_map
from emofusion.datasets.local_paths import local_paths
from emofusion.errors import DamagedDatasetError
from emofusion.fused_columns import FusedColumns, GroupStatistics, StreamColumns

COLUMNS_FILE = "columns.json"


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
    Saving :class:`RowPart` s (a generator node's output, part by part) appends each part's rows to
    the values file; the folder is swapped in when the last part has come, as a whole save's is.
    """

    def __init__(
        self,
        *,
        path: str,
        load_args: dict[str, Any] | None = None,
        optional: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        [self._path] = local_paths("ClipArrayDataset", path)
        self._load_args = dict(load_args or {})
        self._optional = optional
        self.metadata = metadata
        self._writer: _RowWriter | None = None

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_args": self._load_args, "optional": self._optional}

    def _exists(self) -> bool:
        return (((self._path / "values.npy").is_file() or (self._path / COLUMNS_FILE).is_file())
                and (self._path / "clip_ids.json").is_file())

    def damage(self) -> str | None:
        """What is wrong with the stored files, if anything: values cut short or padded against the
        shape in their own header, or a number of rows other than the number of clip ids. Reads the
        header and the ids, not the values."""
        if not self._exists():
            return None
        if (self._path / COLUMNS_FILE).is_file():
            return _changed_streams(self._path)
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
        if (self._path / COLUMNS_FILE).is_file():
            values = _load_fused_columns(self._path)
        else:
            values = np.load(self._path / "values.npy", mmap_mode=self._load_args.get("mmap_mode"))
        clip_ids = json.loads((self._path / "clip_ids.json").read_text())
        metadata_file = self._path / "metadata.json"
        metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else {}
        return ClipArray(np.asarray(clip_ids, dtype=str), values, metadata)

    def save(self, data: ClipArray | RowPart) -> None:
        if isinstance(data, RowPart) and isinstance(data.data, ClipArray):
            self._save_part(data)
            return
        if not isinstance(data, ClipArray):
            raise DatasetError(f"ClipArrayDataset saves a ClipArray, got {type(data).__name__}")
        if _maps_whole_file(data.values, self._path / "values.npy"):
            # Values read from here unchanged (a reused result): the file already holds them.
            _write_json(self._path, data.clip_ids, data.metadata)
            return
        staging = self._new_staging()
        if isinstance(data.values, FusedColumns):
            _save_fused_columns(data.values, staging, self._path)
        else:
            np.save(staging / "values.npy", np.ascontiguousarray(data.values))
        _write_json(staging, data.clip_ids, data.metadata)
        self._swap_in(staging)

    def _save_part(self, part: RowPart) -> None:
        if part.first:
            if self._writer is not None:  # a run that stopped between parts
                self._writer.discard()
            self._writer = _RowWriter(self._new_staging() / "values.npy", part.data.values)
        elif self._writer is None:
            raise DatasetError(f"'{self._path}': a part other than the first came first")
        rows = part.taken()
        self._writer.append(rows)
        if part.last:
            writer, self._writer = self._writer, None
            clip_ids = writer.close()
            if len(np.unique(clip_ids)) != len(clip_ids):
                raise DatasetError(f"'{self._path}': its parts repeat clip ids")
            _write_json(writer.file.parent, clip_ids, rows.metadata)
            self._swap_in(writer.file.parent)

    def _new_staging(self) -> Path:
        """An empty folder beside the target, swapped in when written: an interrupted save never
        leaves a mixed folder."""
        staging = self._path.with_name(self._path.name + ".saving")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        return staging

    def _swap_in(self, staging: Path) -> None:
        shutil.rmtree(self._path, ignore_errors=True)
        staging.rename(self._path)


class _RowWriter:
    """values.npy written part by part: NumPy sizes its header for a row count of any length, so
    the real count is written over it when the last part has come. Each part is written in a
    thread while the run makes the next one, one part at a time (a part's write waits for the one
    before): on the 2-core machine, where the disk takes writes at about 250 MB/s, each 55 MB part of
    RAVDESS's audio held the run's process 0.28 s, and the workers, their results not collected,
    waited with it."""

    def __init__(self, file: Path, first_rows: np.ndarray) -> None:
        self.file = file
        self._row_shape, self._dtype = first_rows.shape[1:], first_rows.dtype
        self._stream = file.open("wb")
        self._header_bytes = self._write_header(0)
        self._rows = 0
        self._clip_ids: list[np.ndarray] = []
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="row-writer")
        self._writing: Future | None = None

    def _write_header(self, rows: int) -> int:
        self._stream.seek(0)
        np.lib.format.write_array_header_1_0(self._stream, {
            "descr": np.lib.format.dtype_to_descr(self._dtype), "fortran_order": False,
            "shape": (rows, *self._row_shape)})
        return self._stream.tell()

    def append(self, part: ClipArray) -> None:
        if part.values.shape[1:] != self._row_shape or part.values.dtype != self._dtype:
            raise DatasetError(f"'{self.file}': a part of rows {part.values.shape[1:]} {part.values.dtype} "
                               f"after rows {self._row_shape} {self._dtype}")
        self._written()
        self._writing = self._thread.submit(self._write, np.ascontiguousarray(part.values))
        self._rows += len(part)
        self._clip_ids.append(part.clip_ids)

    def _write(self, values: np.ndarray) -> None:
        self._stream.seek(0, os.SEEK_END)
        self._stream.write(values.data)

    def _written(self) -> None:
        """Wait for the part being written; raise what its write raised."""
        writing, self._writing = self._writing, None
        if writing is not None:
            writing.result()

    def close(self) -> np.ndarray:
        """The clip ids of every row, the header's row count written."""
        try:
            self._written()
        finally:
            self._thread.shutdown()
        if self._write_header(self._rows) != self._header_bytes:
            raise DatasetError(f"'{self.file}': {self._rows:,} rows do not fit its header")
        self._stream.close()
        return np.concatenate(self._clip_ids)

    def discard(self) -> None:
        self._thread.shutdown(wait=True)
        self._stream.close()
        shutil.rmtree(self.file.parent, ignore_errors=True)


def _write_json(folder: Path, clip_ids: np.ndarray, metadata: dict[str, Any]) -> None:
    (folder / "clip_ids.json").write_text(json.dumps(clip_ids.tolist()))
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2, default=str))


def _maps_whole_file(values: np.ndarray, values_file: Path) -> bool:
    """Whether ``values`` is the whole memory-mapped ``values_file``, not a view of part of it."""
    return (is_whole_file_map(values) and values_file.exists()
            and Path(values.filename).resolve() == values_file.resolve())


def _stream_fingerprint(folder: Path) -> str:
    """What a fused view relies on in a stored stream: its clip ids (the rows it reads) and the
    settings that made its values."""
    metadata_file = folder / "metadata.json"
    made_with = json.loads(metadata_file.read_text()).get("made_with", {}) if metadata_file.is_file() else {}
    digest = hashlib.sha256((folder / "clip_ids.json").read_bytes())
    digest.update(json.dumps(made_with, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _stored_stream_folder(values: np.ndarray) -> Path | None:
    """The folder of the stored ClipArray that `values` maps whole, if it is one."""
    if not is_whole_file_map(values):
        return None
    file = Path(values.filename).resolve()
    return file.parent if file.name == "values.npy" and (file.parent / "clip_ids.json").is_file() else None


def _save_fused_columns(columns: FusedColumns, staging: Path, final: Path) -> None:
    """`columns` as references to the stored streams it reads (paths relative to `final`, where
    `staging` will be renamed to), and its statistics."""
    streams = []
    for index, stream in enumerate(columns.streams):
        folder = _stored_stream_folder(stream.values)
        if folder is None:
            np.save(staging / f"stream_{index}.npy", np.ascontiguousarray(stream.values))
            streams.append({"file": f"stream_{index}.npy"})
        else:
            streams.append({"folder": os.path.relpath(folder, final.resolve()),
                            "fingerprint": _stream_fingerprint(folder)})
    np.save(staging / "stream_rows.npy", np.stack([stream.rows for stream in columns.streams]))
    statistics = columns.standardisation
    if statistics is not None:
        np.save(staging / "group.npy", statistics.group)
        np.save(staging / "group_mean.npy", statistics.mean)
        np.save(staging / "group_std.npy", statistics.std)
    (staging / COLUMNS_FILE).write_text(json.dumps({"streams": streams,
                                                    "standardised": statistics is not None}, indent=2))


def _changed_streams(path: Path) -> str | None:
    """Which streams a stored fused view reads are gone, damaged or made again since, if any."""
    changed = []
    for stream in json.loads((path / COLUMNS_FILE).read_text())["streams"]:
        if "folder" not in stream:
            continue
        folder = (path / stream["folder"]).resolve()
        source = ClipArrayDataset(path=str(folder))
        if not source.exists():
            changed.append(f"the stream it reads at '{folder}' is gone")
        elif source.damage():
            changed.append(f"the stream it reads at '{folder}' is damaged ({source.damage()}): make that "
                           "stream again first")
        elif _stream_fingerprint(folder) != stream["fingerprint"]:
            changed.append(f"the stream it reads at '{folder}' was made again since, with other clips or "
                           "settings")
    return "; ".join(changed) or None


def _load_fused_columns(path: Path) -> FusedColumns:
    description = json.loads((path / COLUMNS_FILE).read_text())
    rows = np.load(path / "stream_rows.npy")
    files = [path / stream["folder"] / "values.npy" if "folder" in stream else path / stream["file"]
             for stream in description["streams"]]
    streams = [StreamColumns(np.load(file, mmap_mode="r"), stream_rows)
               for file, stream_rows in zip(files, rows, strict=True)]
    statistics = None
    if description["standardised"]:
        statistics = GroupStatistics(*(np.load(path / f"group{part}.npy", mmap_mode="r")
                                       for part in ("", "_mean", "_std")))
    return FusedColumns(streams, statistics)

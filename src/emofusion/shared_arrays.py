"""Model files whose large arrays are stored once, by content, in a folder they share.

A run's models repeat large arrays: the CNN stream's PCA (256 x up to 98,304 values, 100 MB) is
fitted on the same training clips with the same settings for every variant that fuses the stream
and for both classifiers, and a model's first fold is kept in its fold file and as the trained
model. Pickled inline, each copy is written again; here an array of at least `MIN_SHARED_BYTES`
is written once as `<sha256>.npy` in the shared folder, and the pickle holds its name. The folder
keeps, for each file written with `dump`, the list of arrays it names (`references/`), and an
array that no existing file names is removed when a file is written, so that the folder holds
what the model files need and no more. A copy of a model file made by hand is not counted: keep a
model by logging it to MLflow (self-contained) or copy the folder with it. Writers on this machine
take the folder's lock (a model's folds are written by several worker processes at once)."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from emofusion.errors import DamagedDatasetError, JoblibWrittenFile

MIN_SHARED_BYTES = 1 << 20
LOCK_FILE = ".lock"
REFERENCES = "references"


def _digest(values: np.ndarray) -> str:
    digest = hashlib.sha256(f"{values.dtype.str}{values.shape}".encode())
    digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BufferedIOBase, arrays: dict[str, np.ndarray]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.arrays = arrays

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject is False and obj.nbytes >= MIN_SHARED_BYTES:
            values = np.ascontiguousarray(obj)
            name = _digest(values)
            self.arrays[name] = values
            return name
        return None


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream: io.BufferedIOBase, file: Path, folder: Path) -> None:
        super().__init__(stream)
        self.file, self.folder = file, folder

    def find_class(self, module: str, name: str) -> Any:
        if module == "joblib.numpy_pickle":  # joblib's wrapper of the arrays it writes after the pickle
            raise JoblibWrittenFile(self.file)
        return super().find_class(module, name)

    def persistent_load(self, name: str) -> np.ndarray:
        try:
            return np.load(self.folder / f"{name}.npy")
        except FileNotFoundError:
            raise DamagedDatasetError(
                f"{self.file} needs the array {name}.npy in {self.folder}, which is gone (the folder was "
                "not copied with the model file?): train the model again") from None


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def dump(value: Any, file: Path, folder: Path) -> None:
    """Pickle `value` to `file`, its large arrays to `folder`; each written beside and renamed, so a
    kill mid-write leaves the old file or none, never half of one."""
    stream, arrays = io.BytesIO(), {}
    _Pickler(stream, arrays).dump(value)
    file.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder):
        (folder / REFERENCES).mkdir(exist_ok=True)
        _replace(_references(file, folder), json.dumps({"file": str(file.resolve()), "arrays": sorted(arrays)}
                                                       ).encode())
        for name, values in arrays.items():
            target = folder / f"{name}.npy"
            if not target.exists():
                staging = target.with_suffix(".saving")
                with open(staging, "wb") as out:
                    np.save(out, values)
                os.replace(staging, target)
        _replace(file, stream.getvalue())
        _remove_unreferenced(folder)


def load(file: Path, folder: Path) -> Any:
    """What `dump` wrote; a file that `joblib.dump` wrote (an earlier version's) is read by joblib."""
    try:
        with open(file, "rb") as stream:
            return _Unpickler(stream, file, folder).load()
    except JoblibWrittenFile:
        return joblib.load(file)


def _references(file: Path, folder: Path) -> Path:
    return folder / REFERENCES / f"{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:32]}.json"


def _replace(file: Path, data: bytes) -> None:
    staging = file.with_name(file.name + ".saving")
    staging.write_bytes(data)
    os.replace(staging, file)


def _remove_unreferenced(folder: Path) -> None:
    """Remove the arrays that no existing file written with `dump` names, and the lists of files
    that are gone."""
    named = set()
    for references in (folder / REFERENCES).glob("*.json"):
        entry = json.loads(references.read_text())
        if Path(entry["file"]).exists():
            named.update(entry["arrays"])
        else:
            references.unlink(missing_ok=True)
    for array in folder.glob("*.npy"):
        if array.stem not in named:
            array.unlink(missing_ok=True)

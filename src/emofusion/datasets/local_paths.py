"""The project's own datasets read and write through NumPy's and pickle's file calls (memory maps,
renames, locks), which need paths on this machine."""

from __future__ import annotations

from pathlib import Path

from kedro.io.core import DatasetError, get_protocol_and_path


def local_paths(dataset: str, *paths: str) -> list[Path]:
    """`paths` as local paths; a URL (s3://, gs://...) is refused naming `dataset`."""
    parsed = [get_protocol_and_path(path) for path in paths]
    if any(protocol != "file" for protocol, _ in parsed):
        raise DatasetError(f"{dataset} only supports local paths, got {', '.join(repr(p) for p in paths)}")
    return [Path(path) for _, path in parsed]

"""A scratch copy of a project, to run `kedro` there without touching the project's data/ or conf/local.

The tests and the benchmarks run Kedro the way a user does, in such a copy. It lives in the package
(rather than beside the tests) because the benchmarks run as scripts (`python benchmarks/x.py`),
which can import the installed package but not the tests."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def scratch_project(source: Path, root: Path, local_parameters: Mapping[str, Any] | None = None) -> Path:
    """Copy `source`'s conf/ (without conf/local), pyproject.toml and .telemetry (the project's
    answer to Kedro's telemetry: no data sent) into `root`, with `local_parameters`
    as conf/local/parameters.yml. `root` may hold an earlier copy: its conf/ is replaced, its data/ kept.

    Kedro wants a source folder, so `root` gets an empty src/: the package itself is the installed one."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "conf", ignore_errors=True)
    shutil.copytree(source / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    if local_parameters is not None:
        (root / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(dict(local_parameters)))
    shutil.copy(source / "pyproject.toml", root)
    shutil.copy(source / ".telemetry", root)
    (root / "src").mkdir(exist_ok=True)
    return root

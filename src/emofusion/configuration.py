"""Parameters read while pipelines are built, so that fusion variants and classifiers are YAML.

Kedro hands parameters to nodes only when they run; the namespaced pipelines, though, must exist
before that. They are generated from the same files (`conf/base`, then `conf/local` or the
environment named by KEDRO_ENV). Values given with `kedro run --params` reach the nodes but do not
add or remove pipelines."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.framework.project import settings


def pipeline_parameters(project_path: Path | None = None) -> dict[str, Any]:
    conf_source = Path(project_path or Path.cwd()) / settings.CONF_SOURCE
    loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=os.environ.get("KEDRO_ENV"),
                                          **settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]

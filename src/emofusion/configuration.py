"""Parameters read while pipelines are built, so that fusion variants and classifiers are YAML.

Kedro hands parameters to nodes only when they run; the namespaced pipelines, though, must exist
before that. Kedro builds its pipeline registry lazily, at the first look-up of a pipeline, and
every command with a session (`kedro run`, `emofusion predict`, `kedro viz`, notebooks) creates the
session's context before that look-up. So the context hands its configuration loader, which knows
the environment (`--env`, KEDRO_ENV or the default `local`) and the `--params`, to
`pipeline_parameters()`: the pipelines are built from the same parameters as the nodes get. The
context also checks every parameter (emofusion.validation) before anything is built or run.
Without a session (`kedro registry list`, tests), the environment is the one in KEDRO_ENV."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.context import KedroContext
from kedro.framework.project import pipelines, settings

from emofusion.validation import validate_parameters

# The configuration loader of the latest context in this process, and where the pipelines were last
# read from (conf_source, env, runtime parameters).
_session_loader: AbstractConfigLoader | None = None
_last_read: tuple[str, str | None, dict[str, Any]] | None = None


class ProjectContext(KedroContext):
    """Kedro's context, which also decides the configuration the pipelines are built from.

    A context class rather than an `after_context_created` hook because kedro-viz creates its
    context with hooks switched off (unless `--include-hooks`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        global _session_loader
        if _last_read is not None and _last_read != _source(self.config_loader):
            # Pipelines built earlier in this process (another session, another environment) are
            # cached by Kedro's registry: have it build them again.
            pipelines.configure(f"{self._package_name}.pipeline_registry")
        _session_loader = self.config_loader
        # Every setting, --params included, before a pipeline is built or a node runs (the loader's
        # parameters: Kedro's `params` would build every pipeline first).
        validate_parameters(self.config_loader["parameters"], self.project_path)


def pipeline_parameters(project_path: Path | None = None) -> dict[str, Any]:
    """The parameters the pipelines are built from: those of the session's context, or, given a
    `project_path` or without a session, `conf/base` merged with the environment in KEDRO_ENV
    (default `local`)."""
    global _last_read
    loader = _session_loader
    if project_path is not None or loader is None:
        conf_source = Path(project_path or Path.cwd()) / settings.CONF_SOURCE
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=os.environ.get("KEDRO_ENV"),
                                              **settings.CONFIG_LOADER_ARGS)
    _last_read = _source(loader)
    return loader["parameters"]


def _source(loader: AbstractConfigLoader) -> tuple[str, str | None, dict[str, Any]]:
    return str(loader.conf_source), loader.env, loader.runtime_params

"""The project's context class: it checks every parameter before anything is built or run, and has
the pipelines built from its configuration (emofusion.instances)."""

from __future__ import annotations

from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.project import pipelines

from emofusion.instances import use_session_configuration
from emofusion.validation import validate_parameters


class ProjectContext(KedroContext):
    """Kedro's context, which also decides the configuration the pipelines are built from: the
    session's environment and `--params` (see emofusion.instances).

    A context class rather than an `after_context_created` hook because kedro-viz creates its
    context with hooks switched off (unless `--include-hooks`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if use_session_configuration(self.config_loader):
            # Pipelines built earlier in this process (another session, another environment) are
            # cached by Kedro's registry: have it build them again.
            pipelines.configure(f"{self._package_name}.pipeline_registry")
        # Every setting, --params included, before a pipeline is built or a node runs (the loader's
        # parameters: Kedro's `params` would build every pipeline first).
        validate_parameters(self.config_loader["parameters"], self.project_path)

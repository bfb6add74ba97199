"""The project's context and configuration loader classes: the context checks every parameter before
anything is built or run and has the pipelines built from its configuration (emofusion.instances);
the loader reads the parameters once per session."""

from __future__ import annotations

import copy
from typing import Any

from kedro.config import OmegaConfigLoader
from kedro.framework.context import KedroContext
from kedro.framework.project import pipelines

from emofusion.instances import use_session_configuration
from emofusion.registry import with_stream_weights
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

    @property
    def params(self) -> dict[str, Any]:
        """The parameters, `--params` included, without Kedro's check of them against the type
        hints of every node. Kedro builds every pipeline for that check whenever `params` is read
        outside a run (a one-file `emofusion predict`, a notebook), and no node here takes a typed
        settings object: they take mappings, which emofusion.validation has checked already."""
        return self.config_loader["parameters"]


class ProjectConfigLoader(OmegaConfigLoader):
    """Kedro's OmegaConfigLoader, reading and merging the parameter files once per session instead
    of at every look-up: the context, its catalog, the validation and each pipeline's
    `create_pipeline` all ask for them, which cost a one-file `emofusion predict` about half a
    second. Each caller gets its own copy, since Kedro merges `--params` into the one it gets.
    `block_weights` gets the weight of each known stream it does not name (`with_stream_weights`)."""

    def __getitem__(self, key: str) -> Any:
        if key != "parameters" or key in self:  # other files, or parameters set on the loader
            return super().__getitem__(key)
        if "_parameters" not in self.__dict__:
            self._parameters = with_stream_weights(super().__getitem__(key))
        return copy.deepcopy(self._parameters)

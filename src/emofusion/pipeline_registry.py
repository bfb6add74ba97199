"""Project pipelines: the top of the package, above every pipeline (which instances.py, below them,
cannot import)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection

from kedro.pipeline import Pipeline

import emofusion.pipelines as package
from emofusion.run_spec import RunSpec, run_spec


def register_pipelines() -> dict[str, Pipeline]:
    """Every folder under ``pipelines/`` is a pipeline, built from the session's run specification;
    ``kedro run`` runs them all."""
    pipelines = every_pipeline()
    pipelines["__default__"] = sum(pipelines.values())
    return pipelines


def pipeline_names() -> list[str]:
    """The project's pipelines: the folders of emofusion.pipelines."""
    return [module.name for module in pkgutil.iter_modules(package.__path__) if module.ispkg]


def every_pipeline(names: Collection[str] | None = None, spec: RunSpec | None = None) -> dict[str, Pipeline]:
    """Each folder of emofusion.pipelines (or those `names`), built from `spec` (default: the
    session's configuration's): during a run Kedro's own registry holds only the pipelines that
    were asked for, and `emofusion predict` needs only the feature pipelines, not the cost of
    building every model's."""
    spec = spec or run_spec()
    return {name: importlib.import_module(f"{package.__name__}.{name}").create_pipeline(spec)
            for name in pipeline_names() if names is None or name in names}

"""What a `kedro run` does as the command starts, before Kedro builds its session: its per-clip
workers start (emofusion.cli_hooks calls `start_run_workers`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import kedro.framework.project as kedro_project
from kedro.framework.project import settings
from kedro.utils import find_kedro_project

from emofusion.engine import open_engine
from emofusion.parallel import start_engine_workers
from emofusion.run_lock import holder_of, lock_path
from emofusion.validation import Execution, validate_parameters
from emofusion.worker_server import PER_CLIP_NODE_MODULES, may_run_per_clip_nodes, run_options, run_parameters

logger = logging.getLogger(__name__)


def start_run_workers(arguments: Sequence[str]) -> bool:
    """Start a `kedro run`'s per-clip workers (a local pool, or a Dask cluster on this machine) as
    the command starts, by its `execution` and `n_jobs` settings, each importing every per-clip
    node's module; whether it started them. Kedro imports its CLI hooks once it has read the
    project's settings, before it loads the plugins' commands (kedro-mlflow's import MLflow) and
    builds the session and the pipeline (1.4 s); the workers are forked from the server the command
    started before (emofusion.worker_server) and start meanwhile instead of after. The run's hook
    (emofusion.hooks.ExecutionHooks) keeps them where the run has per-clip nodes and the same
    settings, and stops them otherwise. A run of pipelines without per-clip nodes, settings the run
    will refuse, and a project whose lock another run holds start nothing here: the run reads the
    settings again and says what is wrong.
    The command's CLI hook ends them with the command, however it ends."""
    if (arguments[:1] != ["run"] or {"-h", "--help"} & set(arguments)
            or kedro_project.PACKAGE_NAME != "emofusion"):  # the hooks of every Kedro project here
        return False
    project = find_kedro_project(Path.cwd())
    if project is None:
        return False
    if holder_of(lock_path(project)) is not None:  # refused at once by the project's `run`
        return False
    options = run_options(arguments[1:])
    if not may_run_per_clip_nodes(options["pipelines"]):
        return False
    try:
        parameters = run_parameters(project, options, settings.CONFIG_LOADER_CLASS)
        validate_parameters(parameters, project)
        execution = Execution.model_validate(parameters.get("execution") or {})
    except Exception as error:  # the run reads them again, and refuses them with its own message
        logger.debug("Per-clip workers not started with the command: %s", error)
        return False
    if execution.scheduler_address is not None:  # joined, with a timeout, when the run opens its engine
        return False
    start_engine_workers(open_engine(**execution.model_dump()), parameters.get("n_jobs", 1),
                         PER_CLIP_NODE_MODULES)
    return True

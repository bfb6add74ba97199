"""The server process that the per-clip workers on this machine are forked from (multiprocessing's
forkserver), and its start as a `kedro run` command starts (`start_for_kedro_run`, a `kedro.init`
entry point, which Kedro's CLI calls before anything else). Kept light: the command imports this
module first, and the server should start before the command has imported much."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kedro.utils import find_kedro_project
from threadpoolctl import threadpool_limits

from emofusion.configuration_files import CONF_SOURCE, CONFIG_LOADER_ARGUMENTS
from emofusion.run_lock import holder_of, lock_path

logger = logging.getLogger(__name__)

# The modules of the project's per-clip nodes (a test checks them against the pipelines): what the
# workers started before a run's pipeline is built import (emofusion.worker_preload, run_start).
PER_CLIP_NODE_MODULES = ("emofusion.pipelines.data_processing.nodes",
                         "emofusion.pipelines.feature_extraction.nodes")
# What the server a `kedro run` starts at once imports: PER_CLIP_NODE_MODULES and their WORKER_IMPORTS.
PRELOAD_MODULE = "emofusion.worker_preload"
# The `kedro run` options `run_options` reads, and the key each value goes under.
RUN_OPTIONS = {"--pipeline": "pipelines", "-p": "pipelines", "--pipelines": "pipelines", "--env": "env",
               "-e": "env", "--params": "params", "--conf-source": "conf_source"}
# The pipelines that have per-clip nodes, and the default one, which has all.
PER_CLIP_PIPELINES = frozenset({*(module.split(".")[2] for module in PER_CLIP_NODE_MODULES), "__default__"})


def may_run_per_clip_nodes(pipelines: Iterable[str | None]) -> bool:
    """Whether a run of `pipelines` (`--pipeline`, `--pipelines`; none named: the default) may have
    per-clip nodes: a run of the modelling pipeline alone needs no workers."""
    named = {name for name in pipelines if name}
    return not named or bool(named & PER_CLIP_PIPELINES)


def run_options(arguments: Sequence[str]) -> dict[str, list[str]]:
    """The values of the `kedro run` options read here (--pipeline(s), --env, --params,
    --conf-source), each pipeline a value of its own; read without Kedro's CLI (0.45 s to import)."""
    values: dict[str, list[str]] = {key: [] for key in set(RUN_OPTIONS.values())}
    for position, argument in enumerate(arguments):
        option, equals, value = argument.partition("=")
        if option in RUN_OPTIONS:
            if not equals:
                value = arguments[position + 1] if position + 1 < len(arguments) else ""
            key = RUN_OPTIONS[option]
            values[key].extend(value.split(",") if key == "pipelines" else [value])
    return values


def local_workers(n_jobs: int | None) -> int:
    """``-1`` (or none) means every core; never more workers than cores."""
    cores = os.cpu_count() or 1
    return cores if n_jobs is None or n_jobs <= 0 else min(n_jobs, cores)


def run_parameters(project: Path, options: Mapping[str, list[str]], loader_class: type | None = None
                   ) -> dict[str, Any]:
    """The parameters a `kedro run` with these `options` (`run_options`: --env, --conf-source,
    --params) gets, read as its session will read them: with the project's config loader class
    once Kedro has read the project's settings, with Kedro's own before."""
    # Here, not at the top: the workers import this module, and need no configuration loader.
    from kedro.config import OmegaConfigLoader
    from kedro.framework.cli.utils import _split_params

    loader = (loader_class or OmegaConfigLoader)(
        conf_source=(options["conf_source"] or [str(project / CONF_SOURCE)])[-1],
        env=(options["env"] or [os.getenv("KEDRO_ENV")])[-1],
        runtime_params=_split_params(None, None, options["params"][-1]) if options["params"] else {},
        **CONFIG_LOADER_ARGUMENTS)
    return loader["parameters"]


def cluster_workers(workers: int | None) -> int:
    """The workers of a Dask cluster started on this machine: `execution.workers`, else one per core."""
    return workers or os.cpu_count() or 1


def server_settings(project: Path, options: Mapping[str, list[str]]) -> tuple[list[str], int] | None:
    """What the workers' server of a run with these options imports and for how many workers on
    this machine, from the run's `execution` and `n_jobs` (the run checks them later, and says
    what is wrong); None when no worker of this machine will be forked from it (one job, or a Dask
    cluster at an address)."""
    parameters = run_parameters(project, options)
    execution = parameters.get("execution") or {}
    if execution.get("engine", "local") == "dask":
        if execution.get("scheduler_address") is not None:
            return None
        return [PRELOAD_MODULE, "distributed"], cluster_workers(execution.get("workers"))
    workers = local_workers(parameters.get("n_jobs", 1))
    return ([PRELOAD_MODULE], workers) if workers > 1 else None


# The variables through which numerical libraries (OpenBLAS, MKL, OpenMP, numba) take their thread
# counts: joblib's own list, which it sets in the workers of `joblib.Parallel`.
# TensorFlow reads its own two (TF_NUM_*) when it starts: a worker's network trains on its share too.
THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                          "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                          "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def worker_thread_environment(workers: int) -> dict[str, str]:
    """Thread counts for each of `workers` processes that share this machine's cores: the cores
    divided among them, as `joblib.Parallel` does, unless this process's environment sets them.
    Without, each worker's BLAS starts a thread per core and they fight for the cores (RAVDESS's
    MFCC node took 2.5 to 5 times as long with 2 threads in each of 2 workers on 2 cores)."""
    threads = str(max((os.cpu_count() or 1) // max(workers, 1), 1))
    return {name: os.environ.get(name, threads) for name in THREAD_COUNT_VARIABLES}


def limit_threads(environment: Mapping[str, str]) -> None:
    """Give this worker's BLAS and OpenMP the thread counts of `environment`
    (`worker_thread_environment`) now that it runs: a worker forked from a server started before
    the run's worker count was known has the server's."""
    threadpool_limits({"blas": int(environment["OPENBLAS_NUM_THREADS"]),
                       "openmp": int(environment["OMP_NUM_THREADS"])})


def forkserver_context(preload: Sequence[str], environment: Mapping[str, str]) -> Any:
    """multiprocessing's forkserver context, its server started now (one per process, by the first
    caller) with `environment` set and `preload` imported, so that each worker forked from it
    starts with those imports made and NumPy's thread counts read, instead of importing them anew
    in every worker; None where the system has no forkserver (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    from multiprocessing import forkserver

    context = multiprocessing.get_context("forkserver")
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    try:
        context.set_forkserver_preload(list(preload))
        forkserver.ensure_running()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return context


def start_for_kedro_run() -> bool:
    """Start the per-clip workers' server as a `kedro run` of this project starts (Kedro's CLI calls
    its `kedro.init` entry points first of all, 0.2 s in), importing the per-clip nodes' modules in
    its own process (`PRELOAD_MODULE`, 2 s) while the command reads the project's settings, loads
    the plugins' commands and builds the session (2 s more). Whether it started it. It is started
    for the run's `execution` settings (Dask, on a cluster started on this machine, is imported
    too) and with its workers' thread counts; the workers are forked from it once Kedro has read
    the project's settings (emofusion.run_start). Nothing starts for another command, another
    project, a run of pipelines without per-clip nodes, settings that cannot be read, one job, a
    cluster at an address, or a project whose lock another run holds."""
    arguments = sys.argv[1:]
    if arguments[:1] != ["run"] or {"-h", "--help"} & set(arguments):
        return False
    # Kedro's CLI runs this before every `kedro` command of every project here, and does not catch
    # what it raises: whatever goes wrong (an unreadable file, settings that cannot be read, a server
    # that cannot start) only means the run starts its workers itself, later, and says what is wrong.
    try:
        return _start_for_run(run_options(arguments[1:]))
    except Exception as error:
        logger.debug("The per-clip workers' server was not started with the command: %s", error)
        return False


def _start_for_run(options: Mapping[str, list[str]]) -> bool:
    if not may_run_per_clip_nodes(options["pipelines"]):
        return False
    project = find_kedro_project(Path.cwd())
    if project is None:
        return False
    metadata = tomllib.loads((project / "pyproject.toml").read_text())
    if metadata.get("tool", {}).get("kedro", {}).get("package_name") != "emofusion":
        return False
    if holder_of(lock_path(project)) is not None:  # refused at once by the project's `run`
        return False
    settings = server_settings(project, options)
    if settings is None:
        return False
    preload, workers = settings
    return forkserver_context(preload, worker_thread_environment(workers)) is not None

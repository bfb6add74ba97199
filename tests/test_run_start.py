"""A `kedro run` starts its per-clip workers as the command starts (emofusion.run_start), by the
settings its session will read; the run's hook keeps them when it finds the same settings and
per-clip nodes, and stops them otherwise."""

import json
import os
import subprocess
import sys

import pytest
from kedro.framework.project import configure_project
from kedro.pipeline import Pipeline, node

from emofusion import parallel
from emofusion.engine import PER_CLIP_TAG, current_engine
from emofusion.hooks import ExecutionHooks, function_module
from emofusion.parallel import stop_engine_workers
from emofusion.pipeline_registry import every_pipeline
from emofusion.run_lock import acquire, lock_path, release
from emofusion.run_spec import run_spec
from emofusion.run_start import start_run_workers
from emofusion.worker_server import (
    PER_CLIP_NODE_MODULES,
    start_for_kedro_run,
)


class Context:
    def __init__(self, **params):
        self.params = params


def row_sums(chunk):
    return [sum(row) for row in chunk]


PER_CLIP = Pipeline([node(row_sums, "values", "sums", name="sums", tags=PER_CLIP_TAG)])
NO_PER_CLIP = Pipeline([node(row_sums, "values", "sums", name="sums")])


@pytest.fixture
def in_a_project(scratch_project, monkeypatch):
    """This process as a `kedro` command in a scratch project: Kedro's CLI has bootstrapped it."""
    monkeypatch.chdir(scratch_project())
    configure_project("emofusion")
    stop_engine_workers()  # those an earlier test in this process left
    yield
    stop_engine_workers()


def started(hooks: ExecutionHooks, pipeline: Pipeline, **params) -> None:
    hooks.after_context_created(Context(**params))
    next(hooks.before_pipeline_run({}, pipeline, None))  # a wrapper: its part before the others'


def test_the_command_starts_the_workers_of_the_run_s_settings_and_the_run_keeps_them(in_a_project):
    assert start_run_workers(["run", "--params", "n_jobs=2,execution.chunk_clips=5"])
    engine = current_engine()
    assert engine.chunk_clips == 5
    parallel._start.wait()
    workers = parallel._chunk_executor
    assert workers is not None and workers._max_workers == 2
    hooks = ExecutionHooks()
    started(hooks, PER_CLIP, n_jobs=2, execution={"chunk_clips": 5})
    assert current_engine() is engine and parallel._chunk_executor is workers
    hooks.after_pipeline_run({}, PER_CLIP, None)
    assert parallel._chunk_executor is None


def test_a_run_with_other_settings_or_without_per_clip_nodes_does_not_keep_them(in_a_project):
    assert start_run_workers(["run", "--params", "n_jobs=2"])
    parallel._start.wait()
    workers = parallel._chunk_executor
    processes = list(workers._processes.values())
    hooks = ExecutionHooks()
    started(hooks, NO_PER_CLIP, n_jobs=2, execution={})
    assert parallel._chunk_executor is None  # ended, not left idle through the run
    assert not any(process.is_alive() for process in processes)
    hooks.after_pipeline_run({}, NO_PER_CLIP, None)

    assert start_run_workers(["run", "--params", "n_jobs=2"])
    engine = current_engine()
    started(hooks, PER_CLIP, n_jobs=2, execution={"chunk_clips": 7})  # the run's own settings win
    assert current_engine() is not engine and current_engine().chunk_clips == 7
    hooks.after_pipeline_run({}, PER_CLIP, None)


@pytest.mark.parametrize("arguments", [
    ["viz"],
    ["run", "--help"],
    ["run", "--params", "execution.chunk_clips=0"],  # refused by the run itself, with its message
    ["run", "--params", "execution.engine=dask,execution.scheduler_address=tcp://127.0.0.1:9"],
    ["run", "--env", "no_such_environment"],
    ["run", "--pipelines", "modelling,reporting"],  # no per-clip node to start workers for
])
def test_nothing_starts_for_other_commands_settings_the_run_refuses_or_a_cluster_to_join(in_a_project,
                                                                                         arguments):
    assert not start_run_workers(arguments)
    assert current_engine().settings is None and parallel._chunk_executor is None


def test_nothing_starts_outside_a_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not start_run_workers(["run"])


def test_the_modules_started_with_the_command_are_those_of_every_per_clip_node(parameters):
    """Every per-clip node's function (a stream's extractor included) lives in a module the command's
    workers import; were one elsewhere, the run would start its workers again, later."""
    modules = {function_module(step) for pipeline in every_pipeline(spec=run_spec(parameters)).values()
               for step in pipeline.only_nodes_with_tags(PER_CLIP_TAG).nodes}
    assert modules == set(PER_CLIP_NODE_MODULES)


def test_the_workers_import_a_pipeline_s_nodes_without_its_wiring():
    """The per-clip workers import the nodes' modules; the pipeline's wiring, Kedro's project
    settings and the run's configuration stay out of them."""
    script = ("import sys\n"
              f"for name in {list(PER_CLIP_NODE_MODULES)!r}: __import__(name)\n"
              "print(sorted(name for name in sys.modules if name.endswith('.pipeline')\n"
              "             or name in ('kedro.framework.project', 'emofusion.run_spec')))\n"
              "from emofusion.pipelines.data_processing import create_pipeline\n"
              "print(create_pipeline.__module__)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    imported, wiring = run.stdout.strip().splitlines()
    assert imported == "[]"
    assert wiring == "emofusion.pipelines.data_processing.pipeline"  # still there when asked for


COMMAND_ENDING = """
import sys
from kedro.framework.startup import bootstrap_project
from pathlib import Path

bootstrap_project(Path.cwd())  # as Kedro's CLI does before it imports the CLI hooks
sys.argv = ["kedro", "run", "--params", "n_jobs=2"]
import emofusion.cli_hooks as hooks  # the workers start here
from emofusion import parallel

assert parallel._started_for[0] == 2
{end}
"""


def test_workers_still_starting_end_with_the_command_without_a_trace(scratch_project):
    """A command that ends while its workers start (a run refused before its pipeline, Ctrl-C)
    ends them first: left to the process's exit, a worker forked as it ends fails with a traceback."""
    script = COMMAND_ENDING.format(end="hooks.cli_hooks.after_command_run(None, sys.argv[1:], 1)\n"
                                       "assert parallel._chunk_executor is None")
    run = subprocess.run([sys.executable, "-c", script], cwd=scratch_project(), capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]


SERVER_STARTED = """
import json, multiprocessing, os, sys
sys.argv = ["kedro", "run", *sys.argv[1:]]
os.cpu_count = lambda: 2  # two workers, on a machine of one core too
from emofusion.worker_server import start_for_kedro_run
from probe import imported

started = start_for_kedro_run()
queue = multiprocessing.get_context("forkserver").SimpleQueue()
worker = multiprocessing.get_context("forkserver").Process(target=imported, args=(queue,))
worker.start()
worker.join()
print(json.dumps({"started": started, "worker": queue.get(),
                  "command": "librosa.feature.spectral" in sys.modules}))
"""
IMPORTED = """
import os, sys

def imported(queue):
    queue.put([name in sys.modules for name in ("emofusion.pipelines.data_processing.nodes",
                                                "emofusion.pipelines.feature_extraction.nodes",
                                                "librosa.feature.spectral", "distributed")]
              + [os.environ.get("OMP_NUM_THREADS")])
"""


@pytest.mark.parametrize(("arguments", "dask", "threads"), [
    ([], False, "1"),  # n_jobs -1: a worker per core, a thread each
    (["--params", "execution.engine=dask,execution.workers=1"], True, "2"),
])
def test_a_kedro_run_starts_its_workers_server_first_with_their_modules(scratch_project, tmp_path, arguments,
                                                                        dask, threads):
    """Kedro's CLI calls the `kedro.init` entry point first of all: the server the workers are forked
    from starts there, by the run's settings, and imports the per-clip modules (and Dask, for a
    cluster on this machine) in its own process, not in the command's."""
    (tmp_path / "probe.py").write_text(IMPORTED)
    environment = {name: value for name, value in os.environ.items() if not name.endswith("_NUM_THREADS")}
    environment["PYTHONPATH"] = os.pathsep.join([str(tmp_path),
                                                 *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run([sys.executable, "-c", SERVER_STARTED, *arguments], cwd=scratch_project(),
                         capture_output=True, text=True, timeout=120, env=environment)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {
        "started": True, "worker": [True, True, True, dask, threads], "command": False}


def test_no_server_starts_for_another_command_project_pipeline_or_a_held_lock(scratch_project, tmp_path,
                                                                             monkeypatch):
    project = scratch_project()
    monkeypatch.chdir(project)
    for arguments in (["kedro", "viz"], ["kedro", "run", "--help"], ["kedro", "run", "-p", "modelling"],
                      ["kedro", "run", "--pipelines=modelling,reporting"]):
        monkeypatch.setattr(sys, "argv", arguments)
        assert not start_for_kedro_run()
    monkeypatch.setattr(sys, "argv", ["kedro", "run"])
    acquire(lock_path(project))  # another run's, as far as the command can tell
    try:
        assert not start_for_kedro_run()
    finally:
        release(lock_path(project))
    other = tmp_path / "other"
    other.mkdir()
    (other / "pyproject.toml").write_text('[tool.kedro]\npackage_name = "spaceflights"\n')
    monkeypatch.chdir(other)
    assert not start_for_kedro_run()
    monkeypatch.chdir(tmp_path)  # no project at all
    assert not start_for_kedro_run()


def test_the_first_step_never_stops_a_command(scratch_project, tmp_path, monkeypatch):
    """Kedro's CLI calls the `kedro.init` entry point before every command and does not catch what it
    raises: a server that cannot start, or a project file that cannot be read, starts nothing."""
    from emofusion import worker_server

    def no_server(*arguments):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(sys, "argv", ["kedro", "run"])
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.chdir(scratch_project())
    monkeypatch.setattr(worker_server, "forkserver_context", no_server)
    assert not start_for_kedro_run()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "pyproject.toml").write_text("[tool.kedro]\npackage_name = \n")
    monkeypatch.chdir(broken)
    assert not start_for_kedro_run()

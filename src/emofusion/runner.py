"""`kedro run --runner=emofusion.runner.DaskRunner`: each node of the run a task on a Dask cluster,
submitted with the tasks of the nodes it needs, so that it starts when they end and nodes that need
nothing of each other (the namespaced models, the fine-tuned networks) train side by side on the
cluster's workers. Kedro's documented Dask deployment pattern on Kedro 1.7's runner API: a task
loads its node's inputs and saves its outputs through the run's catalog on its worker, so the
workers must see the project's data folder at the same path (shared storage); what one node hands
another in memory travels through the scheduler.

The cluster is the run's own when `execution.engine` is dask (opened by ExecutionHooks before the
runner runs: nodes and per-clip chunks share it, and the hook closes it); else the runner opens one
of the same `execution` settings (`scheduler_address`, or `workers` and `worker_memory` here) for
its nodes alone, and closes it when they end."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from itertools import chain
from typing import Any

from kedro.framework.hooks.manager import _NullPluginManager
from kedro.io import AbstractDataset, CatalogProtocol, MemoryDataset
from kedro.pipeline import Pipeline
from kedro.pipeline.node import Node
from kedro.runner import AbstractRunner
from kedro.runner.task import Task

from emofusion.engine import DaskEngine, current_engine
from emofusion.parallel import one_job_at_a_time
from emofusion.validation import Execution


class _SchedulerDataset(AbstractDataset):
    """What one node hands another in memory, published on the scheduler: every task has its own
    copy of the catalog, so a MemoryDataset saved in one is empty in the next."""

    def __init__(self, name: str) -> None:
        self._name = name

    def load(self) -> Any:
        # Imported here, as everywhere: a process that runs no Dask work does without it.
        import distributed

        return distributed.get_client().get_dataset(self._name)

    def save(self, data: Any) -> None:
        import distributed  # see load

        distributed.get_client().publish_dataset(data, name=self._name, override=True)

    def _release(self) -> None:
        import distributed  # see load

        distributed.get_client().unpublish_dataset(self._name)

    def _describe(self) -> dict[str, Any]:
        return {"name": self._name}


def _run_node(node: Node, catalog: CatalogProtocol, is_async: bool, run_id: str | None,
              *needed: Any) -> float:
    """Run `node` on a worker, its folds and chunks one at a time (emofusion.parallel); returns its
    seconds. `needed`, the results of the tasks of the nodes it needs, only makes Dask wait for
    them. The project's hooks run where the run runs, not here (the docs' pattern): they time,
    lock and record the run as a whole."""
    started = time.perf_counter()
    with one_job_at_a_time():
        Task(node=node, catalog=catalog, is_async=is_async, hook_manager=_NullPluginManager(),
             run_id=run_id).execute()
    return time.perf_counter() - started


class DaskRunner(AbstractRunner):
    """Runs a pipeline's nodes as tasks on a Dask cluster (see the module's docstring). Made with no
    arguments by `kedro run --runner=emofusion.runner.DaskRunner`: where it runs is the run's
    `execution` settings, which a cluster's address in conf/ or `--params` gives."""

    def __init__(self, is_async: bool = False) -> None:
        super().__init__(is_async=is_async)

    def _get_executor(self, max_workers: int) -> None:
        return None  # the cluster's scheduler places the tasks; `_run` is this runner's own

    def _run(self, pipeline: Pipeline, catalog: CatalogProtocol, hook_manager: Any = None,
             run_id: str | None = None) -> None:
        engine = current_engine().dask
        own = None
        if engine is None:
            parameters = catalog.load("parameters") if "parameters" in catalog else {}
            settings = Execution.model_validate(parameters.get("execution") or {})
            engine = own = DaskEngine(settings.scheduler_address, settings.workers, settings.worker_memory)
        try:
            self._run_on(engine.client(), pipeline, catalog, run_id)
        finally:
            if own is not None:
                own.close()

    def _run_on(self, client: Any, pipeline: Pipeline, catalog: CatalogProtocol, run_id: str | None) -> None:
        """Submit every node at once, each with the tasks of the nodes it needs (nodes are in
        topological order), and follow them as they end; the first error stops the run."""
        # Imported here: DaskRunner is importable, and `kedro run --help` quick, without Dask.
        import distributed

        handed_on = pipeline.all_outputs() & pipeline.all_inputs()
        for name in sorted(handed_on):
            if isinstance(catalog.get(name), MemoryDataset):
                catalog[name] = _SchedulerDataset(name)
        load_counts = Counter(chain.from_iterable(node.inputs for node in pipeline.nodes))
        run = uuid.uuid4().hex[:8]  # keys name the node on the cluster's dashboard
        tasks: dict[Node, Any] = {}
        for node in pipeline.nodes:
            needed = [tasks[before] for before in pipeline.node_dependencies[node]]
            tasks[node] = client.submit(_run_node, node, catalog, self._is_async, run_id, *needed,
                                        key=f"{node.name}-{run}", pure=False)
        node_of = {task: node for node, task in tasks.items()}
        done: set[Node] = set()
        try:
            for task in distributed.as_completed(tasks.values()):
                node = node_of[task]
                try:
                    seconds = task.result()
                except Exception as error:
                    self._logger.error("Node %s failed on a Dask worker: %s", node.name, error)
                    self._suggest_resume_scenario(pipeline, done, catalog)
                    raise
                done.add(node)
                self._logger.info("Completed node %s on a Dask worker in %.1f s (%d of %d)", node.name,
                                  seconds, len(done), len(tasks))
                self._release_datasets(node, catalog, load_counts, pipeline)
        finally:  # a failed run: the tasks left are not wanted
            client.cancel([task for task in tasks.values() if not task.done()])

"""Project hooks."""

from __future__ import annotations

import inspect
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from emofusion.clip_array import RowPart
from emofusion.datasets import ClipArrayDataset
from emofusion.datasets.row_parts import JoinedParts
from emofusion.engine import PER_CLIP_TAG, open_engine
from emofusion.errors import CatalogEntryError, DamagedDatasetError, MissingInputError
from emofusion.instances import check_classifier_options, pipeline_parameters
from emofusion.parallel import start_engine_workers, stop_engine_workers
from emofusion.pipeline_registry import every_pipeline
from emofusion.pipelines.modelling.nodes import summary_text
from emofusion.run_lock import acquire, describe, lock_path, release
from emofusion.run_spec import run_spec
from emofusion.validation import Execution

logger = logging.getLogger(__name__)

MODEL_PIPELINES = ("modelling", "fine_tuning")  # the pipelines that fit models


class NodeTimingHooks:
    """Log each node's wall time, so a run says where its minutes went: at INFO from a second on, at
    DEBUG below (dozens of quick figure, fusion and scoring nodes would fill the log). A generator
    node (preprocess_audio) is timed to the save of its last part, not its first."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        if not inspect.isgeneratorfunction(node.func):
            self._log(node)

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any, node: Node) -> None:
        if isinstance(data, RowPart) and data.last and dataset_name == node.outputs[-1]:
            self._log(node)

    def _log(self, node: Node) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name)
        logger.log(logging.INFO if seconds >= 1 else logging.DEBUG, "Node %s took %.1f s", node.name, seconds)


class RunLockHooks:
    """One run at a time per project data folder (emofusion.run_lock): taken before the first node,
    given back when the run ends, however it ends; a lock left by a killed run is taken over."""

    def __init__(self) -> None:
        self._path: Path | None = None

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._path = lock_path(Path(run_params["project_path"]))
        gone = acquire(self._path)
        if gone:
            logger.warning("Took over the lock of a run that is gone (%s)", describe(gone))

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        self._release()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline,
                          catalog: Any) -> None:
        self._release()

    def _release(self) -> None:
        if self._path is not None:
            release(self._path)
            self._path = None


def function_module(step: Node) -> str:
    """The module of a node's function: of the function a partial wraps (a stream's extractor with
    keywords), which a worker imports, not functools."""
    function = step.func
    while isinstance(function, partial):
        function = function.func
    return function.__module__


class ExecutionHooks:
    """The run's engine for its per-clip stages (`execution`, emofusion.engine): opened as the run
    begins, before the other before_pipeline_run hooks (tryfirst), so that a Dask scheduler that
    does not answer stops the run before any work; and where the run has per-clip nodes, its
    workers (a local pool, or a cluster on this machine) start then, in the background, while
    the other hooks open the MLflow store and check the run's inputs: their start-up, a second or
    more of imports per worker, is then no longer in front of the first chunk. A `kedro run`
    started them earlier still (emofusion.run_start): they are kept if the run has per-clip nodes
    and the same settings. Closed when the run ends, however it ends, which ends a cluster started
    for it."""

    def __init__(self) -> None:
        self._settings = Execution()
        self._n_jobs = 1

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        self._settings = Execution.model_validate(context.params.get("execution") or {})
        self._n_jobs = context.params.get("n_jobs", 1)

    @hook_impl(wrapper=True, tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> Any:
        per_clip = pipeline.only_nodes_with_tags(PER_CLIP_TAG).nodes
        if not per_clip:  # those the `kedro run` command started before it knew the run's nodes
            stop_engine_workers()
        engine = open_engine(**self._settings.model_dump())  # or the command's, if the same
        if per_clip:
            start_engine_workers(engine, self._n_jobs, sorted({function_module(node) for node in per_clip}))
        try:
            return (yield)
        except Exception:  # a run stopped by another hook (its lock, its inputs) ends its engine
            stop_engine_workers()
            raise

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        stop_engine_workers()

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline,
                          catalog: Any) -> None:
        stop_engine_workers()


def _check_part_outputs(pipeline: Pipeline, catalog: Any) -> None:
    entries = {name: catalog.get(name) for step in pipeline.nodes
               if inspect.isgeneratorfunction(step.func) for name in step.outputs}
    wrong = [f"{name} ({type(entry).__name__})" for name, entry in entries.items()
             if not isinstance(entry, ClipArrayDataset | JoinedParts)]
    if wrong:
        raise CatalogEntryError(
            f"These outputs are made in parts, and their catalog entries take each part as the whole: "
            f"{', '.join(wrong)}. Declare them as conf/base/catalog.yml does: a clip table as "
            "emofusion.datasets.ClipTableDataset, an array as emofusion.datasets.ClipArrayDataset.")


class SummaryLastHooks:
    """The model summary as the last lines of a run that made it, after the report's nodes."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        if "model_summary" in pipeline.all_outputs():
            answers = catalog.load("model_answers") if catalog.exists("model_answers") else None
            logger.info("%s", summary_text(catalog.load("model_summary"), answers))


class StoredInputHooks:
    """Stop a run before it starts when an input that another pipeline makes is not there yet, or
    is damaged, and say how to make it: `kedro run --pipelines=modelling` on a fresh project says to
    make the features first, and a fused-features file cut short names itself and the node that
    remakes it, instead of failing in a node with NumPy's error. Likewise an output that a generator
    node yields in parts whose catalog entry would take each part as the whole (a plain CSV dataset
    fails at the first part; an in-memory one would keep the last part alone), and, in a run that
    fits models, a classifier option its estimator does not take."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        _check_part_outputs(pipeline, catalog)
        made = every_pipeline()
        fitting = {node.name for name in MODEL_PIPELINES for node in made[name].nodes}
        if any(node.name in fitting for node in pipeline.nodes):
            check_classifier_options(pipeline_parameters(), run_spec().streams)
        made_by = {output: name for name, steps in made.items() for output in steps.all_outputs()}
        missing, damaged = {}, []
        for dataset in sorted(pipeline.inputs()):
            if dataset not in made_by:
                continue
            if not catalog.exists(dataset):
                missing.setdefault(made_by[dataset], []).append(dataset)
                continue
            damage = getattr(catalog.get(dataset), "damage", lambda: None)()
            if damage:
                maker = made[made_by[dataset]].only_nodes_with_outputs(dataset).nodes[0].name
                damaged.append(f"{dataset} ({damage}); remake it with `kedro run --nodes={maker}`")
        if damaged:
            raise DamagedDatasetError("This run's stored input is damaged: " + "; ".join(damaged))
        if missing:
            needs = "; ".join(f"{', '.join(names)} (made by `kedro run --pipelines={maker}`)"
                              for maker, names in missing.items())
            raise MissingInputError(f"This run needs data that is not there yet: {needs}. Run those "
                                    "pipelines first, or plain `kedro run` to make everything.")



"""Project hooks."""

from __future__ import annotations

import logging
import time
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Node, Pipeline

from emofusion.errors import MissingInputError
from emofusion.instances import every_pipeline

logger = logging.getLogger(__name__)


class NodeTimingHooks:
    """Log each node's wall time, so a run says where its minutes went: at INFO from a second on, at
    DEBUG below (dozens of quick figure, fusion and scoring nodes would fill the log)."""

    def __init__(self) -> None:
        self._started: dict[str, float] = {}

    @hook_impl
    def before_node_run(self, node: Node, inputs: dict[str, Any]) -> None:
        self._started[node.name] = time.perf_counter()

    @hook_impl
    def after_node_run(self, node: Node, outputs: dict[str, Any]) -> None:
        seconds = time.perf_counter() - self._started.pop(node.name)
        logger.log(logging.INFO if seconds >= 1 else logging.DEBUG, "Node %s took %.1f s", node.name, seconds)


class SummaryLastHooks:
    """The model summary as the last lines of a run that made it, after the report's nodes."""

    @hook_impl
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        if "model_summary" in pipeline.all_outputs():
            from emofusion.pipelines.modelling.nodes import summary_text

            answers = catalog.load("model_answers") if catalog.exists("model_answers") else None
            logger.info("%s", summary_text(catalog.load("model_summary"), answers))


class MissingInputHooks:
    """Stop a run before it starts when an input that another pipeline makes is not there yet,
    and name that pipeline: `kedro run --pipelines=modelling` on a fresh project says to make the
    features first instead of failing in its first node."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        made_by = {output: name for name, made in every_pipeline().items() for output in made.all_outputs()}
        missing = {}
        for dataset in sorted(pipeline.inputs()):
            if dataset in made_by and not catalog.exists(dataset):
                missing.setdefault(made_by[dataset], []).append(dataset)
        if missing:
            needs = "; ".join(f"{', '.join(names)} (made by `kedro run --pipelines={maker}`)"
                              for maker, names in missing.items())
            raise MissingInputError(f"This run needs data that is not there yet: {needs}. Run those "
                                    "pipelines first, or plain `kedro run` to make everything.")



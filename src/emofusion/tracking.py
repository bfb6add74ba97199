"""Every `kedro run` that trains, scores or reports as one MLflow run (one that only prepares audio
and features is not recorded), through kedro-mlflow's hook: its tags (git commit, corpora,
split, backbones requested and used, what it ran), every parameter as Kedro resolved them (flattened,
`--params` included), each model's scores from model_summary.csv as metrics named
`<variant>.<classifier>.<score>`, the report, the summary and the confusion matrices as artefacts,
and the chosen model as an MLflow model that `mlflow models serve` serves (emofusion.serving).

Where runs go: conf/base/mlflow.yml (kedro-mlflow's file; conf/local/mlflow.yml overrides it), else
MLFLOW_TRACKING_URI, else the project's own store, `mlruns/mlflow.db` with artefacts in
`mlruns/artifacts/`. Whether, what and what if the server is down: the `tracking` parameters
(conf/base/parameters_tracking.yml). Only a run opens the store, and imports MLflow: `emofusion
predict`, `kedro viz` and notebooks make Kedro sessions too, and neither write nor wait for it."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pandas as pd
from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline

from emofusion import __version__
from emofusion.errors import TrackingError
from emofusion.inference import default_model
from emofusion.pipeline_registry import every_pipeline
from emofusion.run_spec import run_spec
from emofusion.validation import Tracking

if TYPE_CHECKING:  # MLflow takes seconds to import: only where a run is recorded
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook
    from mlflow.entities import Metric

logger = logging.getLogger(__name__)

# The project's own store, relative to the project folder.
STORE = Path("mlruns")
# model_summary.csv's scores recorded per model, with the bounds of their intervals where they have them.
SCORES = ("accuracy", "unweighted_average_recall", "macro_f1")
METRIC_COLUMNS = ("validation_uar",
                  *(f"{score}{bound}" for score in SCORES for bound in ("", "_low", "_high")))
# The outputs recorded as artefacts: the report, the summary, each model's confusion matrix.
ARTEFACTS = re.compile(r"html_report|model_summary|reporting\..+\.confusion_matrix")
# How long a tracking server has to answer before the run is told it cannot be reached.
REACH_TIMEOUT_S = 5.0


class TrackingHooks:
    """kedro-mlflow's hook, driven by the project: the store is opened when a run starts, not with
    every session; every parameter is logged once, not node by node; what the run made is recorded
    when it ends. (The project declares no kedro-mlflow datasets, whose names that hook would set.)"""

    def __init__(self) -> None:
        # Under the name of kedro-mlflow's own hook, which Kedro then does not load (its plugin hooks
        # are loaded by name, skipping names taken): a session that records nothing imports no MLflow.
        # settings.py also switches it off, should it be loaded all the same.
        self.__name__ = "mlflow_hook"
        self._context: KedroContext | None = None
        self._settings = Tracking()
        self._configuration: dict[str, Any] = {}
        self._hook: MlflowHook | None = None

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        """This session's tracking settings and where its runs go; nothing is opened or written."""
        self._context, self._hook = context, None
        self._settings = Tracking.model_validate(context.params.get("tracking") or {})
        self._configuration = _mlflow_configuration(context)
        if "kedro_mlflow" in sys.modules:  # kedro-mlflow's commands (`kedro mlflow ui`) read it
            from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig

            context.__setattr__("mlflow", KedroMlflowConfig.model_validate(self._configuration))

    @hook_impl(wrapper=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
                            ) -> Generator[None, Any, Any]:
        """Around the project's other before_pipeline_run hooks: the server is checked and the store
        opened before them (a run stopped for it takes no lock), and the MLflow run starts after them
        (a run refused for its lock or its inputs records nothing)."""
        self._hook = None
        if self._settings.enabled and not makes_results(pipeline):
            logger.info("Not recorded in MLflow: this run only prepares audio and features (runs that "
                        "train, score or report are)")
        elif self._settings.enabled and self._reachable():
            self._open(Path(run_params["project_path"]))
        result = yield
        if self._hook is not None:
            self._start(run_params, pipeline, catalog)
        return result

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        """Record what the run made while it still holds the project's lock, then end the MLflow run;
        before the summary, the log's last lines."""
        if self._hook is None:
            return
        if self._hook.run_id is None:  # kedro-mlflow's disable_tracking.pipelines
            self._hook.after_pipeline_run(run_params, pipeline, catalog)
            return
        import mlflow  # MLflow: only where a run is recorded
        from mlflow.entities import RunStatus
        from mlflow.exceptions import MlflowException

        try:
            model_uri = self._record(pipeline, catalog, Path(run_params["project_path"]))
        except (MlflowException, OSError) as error:
            problem = (f"Could not finish recording this run in MLflow at {mlflow.get_tracking_uri()} "
                       f"({str(error).splitlines()[0]}); its results are in data/")
            with contextlib.suppress(MlflowException, OSError):  # the store may be what failed
                mlflow.end_run(RunStatus.to_string(RunStatus.FAILED))
            if self._settings.unreachable == "stop":
                raise TrackingError(problem) from error
            logger.warning("%s. The MLflow run is marked failed.", problem)
            return
        self._hook.after_pipeline_run(run_params, pipeline, catalog)
        logger.info("Recorded as MLflow run %s (experiment '%s') in %s%s; `kedro mlflow ui` compares runs",
                    self._hook.run_id, self._hook.mlflow_config.tracking.experiment.name,
                    mlflow.get_tracking_uri(), f", its model as {model_uri}" if model_uri else "")

    @hook_impl
    def on_pipeline_error(self, error: Exception, run_params: dict[str, Any], pipeline: Pipeline,
                          catalog: Any) -> None:
        """The MLflow run, if one was started, marked failed (kedro-mlflow's)."""
        if self._hook is not None:
            self._hook.on_pipeline_error(error, run_params, pipeline, catalog)

    def _reachable(self) -> bool:
        """Whether the tracking server answers (a store that is no server always does); if not, said
        once, and the run goes on unrecorded or stops, as `tracking.unreachable` says."""
        uri = self._configuration["server"]["mlflow_tracking_uri"]
        if urlparse(uri).scheme not in ("http", "https"):
            return True
        import requests

        try:
            requests.get(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S)
            return True  # any answer, even a refusal to a login, is a server
        except requests.RequestException as error:
            found = re.search(r"\[Errno -?\d+\] ([^'\")]+)", str(error))
            reason = found.group(1).strip() if found else type(error).__name__
        if self._settings.unreachable == "stop":
            raise TrackingError(
                f"The MLflow tracking server {uri} cannot be reached ({reason}), and tracking.unreachable is "
                "stop: start it, point MLFLOW_TRACKING_URI or conf/local/mlflow.yml at another, or run with "
                "--params tracking.enabled=false")
        logger.warning("The MLflow tracking server %s cannot be reached (%s): this run goes on without being "
                       "recorded (tracking.unreachable: continue; stop would stop it)", uri, reason)
        return False

    def _open(self, project: Path) -> None:
        """kedro-mlflow's set-up: the store (made, for the project's own) and the experiment."""
        if self._configuration["server"]["mlflow_tracking_uri"] == _own_store_uri(project):
            (project / STORE).mkdir(exist_ok=True)
        self._context.config_loader["mlflow"] = self._configuration  # what kedro-mlflow reads
        self._hook = kedro_mlflow_hook_class()()
        self._hook.after_context_created(self._context)

    def _start(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        """Start the MLflow run (kedro-mlflow tags it with Kedro's run parameters: pipelines,
        namespaces, nodes...) and log the parameters and the project's tags at once."""
        import mlflow  # MLflow: only where a run is recorded
        from mlflow.entities import Param, RunTag

        self._hook.before_pipeline_run(run_params, pipeline, catalog)
        if self._hook.run_id is None:  # kedro-mlflow's disable_tracking.pipelines
            return
        parameters = self._context.params
        tags = {"emofusion.version": __version__, "corpora": ", ".join(parameters["corpora"]),
                "split": parameters["split"]["strategy"], **_git_tags(Path(run_params["project_path"]))}
        mlflow.MlflowClient().log_batch(
            self._hook.run_id, params=[Param(key, str(value)) for key, value in flattened(parameters)],
            tags=[RunTag(key, value) for key, value in tags.items()])

    def _record(self, pipeline: Pipeline, catalog: Any, project: Path) -> str | None:
        """Metrics, tags, artefacts and model of what the run made; the model's URI if one was logged."""
        import mlflow  # MLflow: only where a run is recorded
        from mlflow.entities import RunTag

        client, made, run_id = mlflow.MlflowClient(), pipeline.all_outputs(), self._hook.run_id
        files = {name: project / entry["filepath"] for name, entry in catalog.to_config()[0].items()
                 if name in made and ARTEFACTS.fullmatch(name) and "filepath" in entry}
        if files:
            root = Path(os.path.commonpath([file.parent for file in files.values()]))
            for file in files.values():
                relative = file.parent.relative_to(root).as_posix()
                client.log_artifact(run_id, str(file), None if relative == "." else relative)
        if "model_summary" not in made:
            return None
        summary = catalog.load("model_summary")
        client.log_batch(run_id, metrics=list(summary_metrics(summary)),
                         tags=[RunTag(key, value) for key, value in backbone_tags(summary).items()])
        return self._log_model(catalog, summary, project)

    def _log_model(self, catalog: Any, summary: pd.DataFrame, project: Path) -> str | None:
        """The model `tracking.model` names (`chosen`: predict's default) as an MLflow model."""
        import mlflow  # MLflow: only where a run is recorded

        from emofusion.serving import log_emotion_model  # MLflow: only where a model is logged

        parameters = self._context.params
        name = self._settings.model
        if name is None:
            return None
        if name == "chosen":
            name = default_model(summary, run_spec(parameters).speaker_normalised_models)
        variant, _, classifier = name.partition(".")
        model = log_emotion_model(catalog, project, variant, classifier, parameters)
        mlflow.set_tags({"emofusion.model": name, "emofusion.model_uri": model.model_uri})
        return model.model_uri


def makes_results(pipeline: Pipeline) -> bool:
    """Whether a run does more than the feature pipelines (`emofusion predict`'s: audio to fused
    features): one that only prepares features has no scores, report or model to compare, and
    opening the store would cost more than the per-clip work of a small corpus."""
    spec = run_spec()
    features = {node.name for part in every_pipeline(spec.feature_pipelines, spec).values()
                for node in part.nodes}
    return any(node.name not in features for node in pipeline.nodes)


def kedro_mlflow_hook_class() -> type[MlflowHook]:
    """kedro-mlflow's hook class, its module imported without the warning it prints: kedro-mlflow's
    pipeline model, which the project does not use, warns about its own type hints when imported,
    under a filter of MLflow's that no warnings filter can override. `kedro` commands import
    kedro-mlflow for its commands, after emofusion.cli_hooks, which calls this first."""
    with contextlib.redirect_stderr(io.StringIO()):
        from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

    return MlflowHook


def _own_store_uri(project: Path) -> str:
    return f"sqlite:///{(project / STORE / 'mlflow.db').as_posix()}"


def _mlflow_configuration(context: KedroContext) -> dict[str, Any]:
    """mlflow.yml as kedro-mlflow reads it, the project's own store filled in where neither the file
    nor MLFLOW_TRACKING_URI names a tracking URI (kedro-mlflow's default, a folder of files, is a
    store MLflow 3 refuses)."""
    try:
        configuration = dict(context.config_loader["mlflow"])
    except MissingConfigException:
        configuration = {}
    server = configuration.setdefault("server", {})
    if server.get("mlflow_tracking_uri") is None and os.environ.get("MLFLOW_TRACKING_URI"):
        server["mlflow_tracking_uri"] = os.environ["MLFLOW_TRACKING_URI"]
    elif server.get("mlflow_tracking_uri") is None:
        server["mlflow_tracking_uri"] = _own_store_uri(Path(context.project_path))
        experiment = configuration.setdefault("tracking", {}).setdefault("experiment", {})
        created = experiment.setdefault("create_experiment_kwargs", {})
        if created.get("artifact_location") is None:
            created["artifact_location"] = (STORE / "artifacts").as_posix()  # kedro-mlflow: from the project
    return configuration


def flattened(parameters: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every parameter by its dotted path (`split.strategy`), as `--params` names them."""
    for key, value in parameters.items():
        if isinstance(value, Mapping) and value:
            yield from flattened(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def summary_metrics(summary: pd.DataFrame) -> Iterator[Metric]:
    """Each model's scores in model_summary.csv as metrics `<variant>.<classifier>.<column>`."""
    from mlflow.entities import Metric  # MLflow: only where a run is recorded

    now = int(time.time() * 1000)
    for row in summary.itertuples(index=False):
        for column in METRIC_COLUMNS:
            value = getattr(row, column)
            if pd.notna(value):
                yield Metric(f"{row.variant}.{row.classifier}.{column}", float(value), now, 0)


def backbone_tags(summary: pd.DataFrame) -> dict[str, str]:
    """The CNN backbones the models asked for and those they used (another when ImageNet weights could
    not be had offline), from the summary; none when no model reads a CNN."""
    tags = {}
    for tag, column in (("backbone_requested", "backbone_requested"), ("backbone_used", "backbone")):
        names = sorted(summary[column].dropna().astype(str).unique()) if column in summary else []
        if names:
            tags[tag] = ", ".join(names)
    return tags


def _git_tags(project: Path) -> dict[str, str]:
    """The project's git commit, as MLflow's UI shows it, and whether files differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True,
                              timeout=30).stdout.strip()

    try:
        commit = git("rev-parse", "--verify", "--quiet", "HEAD")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not commit:
        return {}
    changed = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"mlflow.source.git.commit": commit, "git_commit": commit, "git_uncommitted_changes": str(changed)}

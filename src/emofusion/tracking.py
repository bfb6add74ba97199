"""Every `kedro run` as one MLflow run, through kedro-mlflow's hook: its tags (git commit, corpora,
split, backbones requested and used, what it ran), every parameter as Kedro resolved them (flattened,
`--params` included), each model's scores from model_summary.csv as metrics named
`<variant>.<classifier>.<score>`, the report, the summary and the confusion matrices as artefacts,
and the chosen model as an MLflow model that `mlflow models serve` serves (emofusion.serving).

Where runs go: conf/base/mlflow.yml (kedro-mlflow's file; conf/local/mlflow.yml overrides it), else
MLFLOW_TRACKING_URI, else the project's own store, `mlruns/mlflow.db` with artefacts in
`mlruns/artifacts/`. Whether, what and what if the server is down: the `tracking` parameters
(conf/base/parameters_tracking.yml). Only a run opens the store: `emofusion predict`, `kedro viz` and
notebooks make Kedro sessions too, and write nothing."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import subprocess
import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
import requests
from kedro.config import MissingConfigException
from kedro.framework.context import KedroContext
from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException

from emofusion import __version__
from emofusion.errors import TrackingError
from emofusion.validation import Tracking

# kedro-mlflow's pipeline model, which the project does not use, warns about its own type hints when
# it is imported, under a filter of MLflow's that no warnings filter of ours can override. The
# project imports it first, here (cli_hooks.py has `kedro` commands import this module first).
with contextlib.redirect_stderr(io.StringIO()):
    from kedro_mlflow.config.kedro_mlflow_config import KedroMlflowConfig
    from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook

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


class TrackingHooks(MlflowHook):
    """kedro-mlflow's hook (settings.py switches off its own instance), opening the store when a run
    starts rather than with every session, and recording what a run made once, when it ends."""

    # kedro-mlflow logs each node's parameters as the node starts: a database write per parameter and
    # node. Every parameter is logged once instead, with the run's start (log_batch).
    before_node_run = None

    def __init__(self) -> None:
        super().__init__()
        self._is_mlflow_enabled = False  # until a run is started
        self._context: KedroContext | None = None
        self._settings = Tracking()

    @hook_impl
    def after_context_created(self, context: KedroContext) -> None:
        """Where runs go (`context.mlflow`, which `kedro mlflow ui` reads) and this session's tracking
        settings; nothing is opened or written yet."""
        self._context = context
        self._settings = Tracking.model_validate(context.params.get("tracking") or {})
        configuration = _mlflow_configuration(context)
        context.config_loader["mlflow"] = configuration  # what kedro-mlflow reads when the run starts
        context.__setattr__("mlflow", KedroMlflowConfig.model_validate(configuration))

    @hook_impl(wrapper=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any
                            ) -> Generator[None, Any, Any]:
        """Around the project's other before_pipeline_run hooks: the server is checked before them (a
        run stopped for it takes no lock) and the MLflow run starts after them (a run refused for its
        lock or its inputs records nothing)."""
        self._is_mlflow_enabled, self.run_id = False, None
        track = self._settings.enabled and self._reachable()
        if track:
            self._open(Path(run_params["project_path"]))
        result = yield
        if track:
            self._start(run_params, pipeline, catalog)
        return result

    @hook_impl(tryfirst=True)
    def after_pipeline_run(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        """Record what the run made while it still holds the project's lock, then end the MLflow run;
        before the summary, the log's last lines."""
        if not self._is_mlflow_enabled:
            return super().after_pipeline_run(run_params, pipeline, catalog)
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
            return None
        super().after_pipeline_run(run_params, pipeline, catalog)
        logger.info("Recorded as MLflow run %s (experiment '%s') in %s%s; `kedro mlflow ui` compares runs",
                    self.run_id, self.mlflow_config.tracking.experiment.name, mlflow.get_tracking_uri(),
                    f", its model as {model_uri}" if model_uri else "")
        return None

    def _reachable(self) -> bool:
        """Whether the tracking server answers (a store that is no server always does); if not, said
        once, and the run goes on unrecorded or stops, as `tracking.unreachable` says."""
        uri = self._context.mlflow.server.mlflow_tracking_uri
        if urlparse(uri).scheme not in ("http", "https"):
            return True
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
        """kedro-mlflow's set-up: the store (made, for the project's own) and the experiment. Before
        the other hooks, so that a store that cannot be opened stops the run before it takes the lock."""
        if self._context.mlflow.server.mlflow_tracking_uri == _own_store_uri(project):
            (project / STORE).mkdir(exist_ok=True)
        super().after_context_created(self._context)

    def _start(self, run_params: dict[str, Any], pipeline: Pipeline, catalog: Any) -> None:
        """Start the MLflow run (kedro-mlflow tags it with Kedro's run parameters: pipelines,
        namespaces, nodes...) and log the parameters and the project's tags at once."""
        project = Path(run_params["project_path"])
        super().before_pipeline_run(run_params, pipeline, catalog)
        if not self._is_mlflow_enabled:  # kedro-mlflow's disable_tracking.pipelines
            return
        parameters = self._context.params
        tags = {"emofusion.version": __version__, "corpora": ", ".join(parameters["corpora"]),
                "split": parameters["split"]["strategy"], **_git_tags(project)}
        mlflow.MlflowClient().log_batch(
            self.run_id, params=[Param(key, str(value)) for key, value in flattened(parameters)],
            tags=[RunTag(key, value) for key, value in tags.items()])

    def _record(self, pipeline: Pipeline, catalog: Any, project: Path) -> str | None:
        """Metrics, tags, artefacts and model of what the run made; the model's URI if one was logged."""
        client, made = mlflow.MlflowClient(), pipeline.all_outputs()
        files = {name: project / entry["filepath"] for name, entry in catalog.to_config()[0].items()
                 if name in made and ARTEFACTS.fullmatch(name) and "filepath" in entry}
        if files:
            root = Path(os.path.commonpath([file.parent for file in files.values()]))
            for file in files.values():
                relative = file.parent.relative_to(root).as_posix()
                client.log_artifact(self.run_id, str(file), None if relative == "." else relative)
        if "model_summary" not in made:
            return None
        summary = catalog.load("model_summary")
        client.log_batch(self.run_id, metrics=list(summary_metrics(summary)),
                         tags=[RunTag(key, value) for key, value in backbone_tags(summary).items()])
        return self._log_model(catalog, summary, project)

    def _log_model(self, catalog: Any, summary: pd.DataFrame, project: Path) -> str | None:
        """The model `tracking.model` names (`chosen`: predict's default) as an MLflow model."""
        from emofusion.inference import default_model, needs_speakers
        from emofusion.serving import log_emotion_model

        parameters = self._context.params
        name = self._settings.model
        if name is None:
            return None
        if name == "chosen":
            name = default_model(summary, needs_speakers(parameters))
        variant, _, classifier = name.partition(".")
        model = log_emotion_model(catalog, project, variant, classifier, parameters)
        mlflow.set_tags({"emofusion.model": name, "emofusion.model_uri": model.model_uri})
        return model.model_uri


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

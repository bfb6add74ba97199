"""Every `kedro run` that trains, scores or reports recorded in MLflow, and the chosen model logged as
an MLflow model that answers as `emofusion predict` does, in process and over HTTP. One small trained
project (the tiny demo corpus, two SVMs) is shared by every test; the later runs train one namespace
from its stored features."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from emofusion.errors import ParameterError
from emofusion.tracking import METRIC_COLUMNS, backbone_tags, flattened
from emofusion.validation import validate_parameters
from tests.conftest import project_parameters
from tests.test_end_to_end import TINY_DEMO, kedro, predict

# Two fusion variants, one classifier: every other variant and the DNN switched off.
KEPT = ("mfcc", "mfcc_lpcc")
LOCAL = {"fusion_variants": {variant: None for variant in project_parameters("base")["fusion_variants"]
                             if variant not in KEPT},
         "classifiers": {"dnn": None}}
# No CNN stream is read: the transfer_features pipeline (the CNN) is left out.
PIPELINES = "data_processing,feature_extraction,fusion,modelling,reporting"
ONE_MODEL = ("--namespaces", "modelling.mfcc.svm")
# The project's own store, and the tests' runs told nothing else by the environment.
NO_SERVER = {"MLFLOW_TRACKING_URI": ""}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def store_files(project: Path) -> dict[str, tuple[int, int]]:
    return {str(path.relative_to(project)): (path.stat().st_size, path.stat().st_mtime_ns)
            for path in (project / "mlruns").rglob("*") if path.is_file()}


def recorded_runs(result: subprocess.CompletedProcess) -> list[str]:
    """The MLflow run ids the log says it recorded."""
    return [line.split("Recorded as MLflow run ", 1)[1].split()[0]
            for line in result.stderr.splitlines() if "Recorded as MLflow run " in line]


@pytest.fixture(scope="module")
def project(scratch_project) -> Path:
    project = scratch_project(LOCAL)
    git = ["git", "-C", str(project), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    for command in (["init", "-q"], ["add", "conf", "pyproject.toml"], ["commit", "-qm", "settings"]):
        subprocess.run([*git, *command], check=True, capture_output=True)
    return project


@pytest.fixture(scope="module")
def client(project) -> MlflowClient:
    return MlflowClient(f"sqlite:///{(project / 'mlruns' / 'mlflow.db').as_posix()}")


@pytest.fixture(scope="module")
def first_run(project) -> subprocess.CompletedProcess:
    return kedro(project, "run", "--pipelines", PIPELINES, "--params", TINY_DEMO, env=NO_SERVER)


@pytest.fixture(scope="module")
def first_run_id(first_run) -> str:
    assert first_run.returncode == 0, first_run.stderr[-3000:]
    (run_id,) = recorded_runs(first_run)  # one line, one run
    return run_id


def test_a_run_records_its_parameters_tags_scores_and_artefacts(first_run, first_run_id, project, client):
    run = client.get_run(first_run_id)
    assert run.info.status == "FINISHED"
    assert [found.info.run_id for found in client.search_runs([run.info.experiment_id])] == [first_run_id]
    # Every parameter as Kedro resolved it, --params included.
    assert run.data.params["demo_corpus.speakers"] == "4" and run.data.params["audio.duration_s"] == "1.0"
    assert run.data.params["split.strategy"] == "random" and run.data.params["tracking.enabled"] == "True"
    assert run.data.params["fusion_variants.mfcc"] == "['mfcc']"
    commit = subprocess.run(["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    tags = run.data.tags
    assert (tags["git_commit"], tags["mlflow.source.git.commit"]) == (commit, commit)
    assert (tags["corpora"], tags["split"]) == ("demo", "random")
    assert PIPELINES.split(",")[0] in tags["pipeline_names"]
    # Each model's scores, as model_summary.csv has them.
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    expected = {f"{row['variant']}.{row['classifier']}.{column}": row[column]
                for _, row in summary.iterrows() for column in METRIC_COLUMNS}
    assert set(run.data.metrics) == set(expected) and len(expected) == 2 * 10
    for name, value in expected.items():
        assert run.data.metrics[name] == pytest.approx(value, rel=1e-12), name
    artefacts = {item.path for item in client.list_artifacts(first_run_id)}
    assert artefacts == {"report.html", "model_summary.csv", "confusion_matrices"}
    assert {item.path for item in client.list_artifacts(first_run_id, "confusion_matrices/mfcc_lpcc")} == {
        "confusion_matrices/mfcc_lpcc/svm.json"}
    # The validation-chosen model (the summary's first row), logged as an MLflow model.
    assert tags["emofusion.model"] == f"{summary['variant'][0]}.{summary['classifier'][0]}"
    assert tags["emofusion.model_uri"].startswith("models:/")


def test_the_log_says_where_in_one_line_without_mlflow_s_noise(first_run, first_run_id):
    lines = first_run.stderr.splitlines()
    recorded = [i for i, line in enumerate(lines) if first_run_id in line]
    assert len(recorded) == 1 and "mlruns/mlflow.db" in lines[recorded[0]]
    assert recorded[0] < max(i for i, line in enumerate(lines) if "Model summary (" in line)  # summary last
    for noise in ("alembic", "mlflow.store", "Creating initial", "type hints", "CloudPickle", "input example",
                  "km.random_name", "Mlflow run", "Downloading artifacts", "Traceback", "WARNING"):
        assert noise not in first_run.stderr, noise


def test_two_runs_with_different_settings_are_both_listed(first_run_id, project, client):
    second = kedro(project, "run", *ONE_MODEL, "--params", f"{TINY_DEMO},evaluation.bootstrap_resamples=200",
                   env=NO_SERVER)
    assert second.returncode == 0, second.stderr[-3000:]
    (second_id,) = recorded_runs(second)
    mlflow.set_tracking_uri(client.tracking_uri)
    runs = mlflow.search_runs(experiment_names=["emofusion"]).set_index("run_id")
    assert {first_run_id, second_id} <= set(runs.index)
    assert runs.loc[first_run_id, "params.evaluation.bootstrap_resamples"] == "1000"
    assert runs.loc[second_id, "params.evaluation.bootstrap_resamples"] == "200"
    assert "modelling.mfcc.svm" in runs.loc[second_id, "tags.namespaces"]  # what it ran


def test_a_run_with_tracking_off_writes_nothing_under_the_store(first_run_id, project):
    before = store_files(project)
    run = kedro(project, "run", *ONE_MODEL, "--params", f"{TINY_DEMO},tracking.enabled=false", env=NO_SERVER)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "mfcc.svm: 1 of 1 folds reused" in run.stderr  # it did run
    assert not recorded_runs(run) and "MLflow" not in run.stderr
    assert store_files(project) == before


def test_a_run_that_only_prepares_features_is_not_recorded(first_run_id, project):
    before = store_files(project)
    run = kedro(project, "run", "--to-nodes", "extract_mfcc,extract_lpcc", "--params", TINY_DEMO,
                env=NO_SERVER)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Corpus 'demo': " in run.stderr  # it did run
    said = [line for line in run.stderr.splitlines() if "MLflow" in line]
    assert len(said) == 1 and "Not recorded in MLflow: this run only prepares audio and features" in said[0]
    assert not recorded_runs(run) and store_files(project) == before
    assert "WARNING" not in run.stderr  # kedro-viz's note on partial runs is not the run's news


def test_an_unreachable_server_is_said_once_and_the_run_goes_on_or_stops_as_configured(first_run_id,
                                                                                       project):
    server = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    before = store_files(project)
    went_on = kedro(project, "run", *ONE_MODEL, "--params", TINY_DEMO, env={"MLFLOW_TRACKING_URI": server})
    assert went_on.returncode == 0, went_on.stderr[-3000:]
    said = [line for line in went_on.stderr.splitlines() if server in line]
    assert len(said) == 1 and "cannot be reached" in said[0] and "goes on without being recorded" in said[0]
    assert "mfcc.svm: 1 of 1 folds reused" in went_on.stderr and not recorded_runs(went_on)

    stopped = kedro(project, "run", *ONE_MODEL, "--params", f"{TINY_DEMO},tracking.unreachable=stop",
                    env={"MLFLOW_TRACKING_URI": server})
    assert stopped.returncode == 1
    assert f"Error: The MLflow tracking server {server} cannot be reached" in stopped.stderr
    assert "Traceback" not in stopped.stderr and "folds reused" not in stopped.stderr  # before any node
    assert not (project / "data/.run.lock").exists()  # stopped before it took the project's lock
    assert store_files(project) == before


PREDICT_IN_A_FRESH_PROCESS = """
import json, sys
import mlflow, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
answer = model.predict(pd.DataFrame({"path": sys.argv[2:]}))
print(answer.to_json(orient="records", double_precision=15))
"""


def test_the_logged_model_answers_as_predict_does_in_a_fresh_process(first_run_id, project, client, tmp_path):
    tested = pd.read_csv(project / "data/05_model_input/data_split.csv").query("subset == 'test'")["clip_id"]
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv").set_index("clip_id")
    files = [str(project / manifest.loc[clip, "path"]) for clip in tested[:2]]
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    files.append(str(tmp_path / "broken.wav"))

    output = tmp_path / "predictions.csv"
    predicted = predict(project, "--output", str(output), *files)  # its default model
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    model = client.get_run(first_run_id).data.tags["emofusion.model"]
    assert f"Model {model}; 3 file(s)." in predicted.stderr

    env = dict(os.environ, MLFLOW_TRACKING_URI=client.tracking_uri, PYTHONWARNINGS="ignore")
    loaded = subprocess.run([sys.executable, "-c", PREDICT_IN_A_FRESH_PROCESS,
                             f"runs:/{first_run_id}/emotion_model", *files],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    served = pd.DataFrame(json.loads(loaded.stdout.strip().splitlines()[-1])).set_index("file")
    expected = pd.read_csv(output).set_index("file")
    assert list(served.index) == list(expected.index) == files
    assert served["emotion"][:2].tolist() == expected["emotion"][:2].tolist()
    probabilities = [column for column in expected if column.startswith("p_")]
    assert len(probabilities) == 8 and list(served[probabilities].columns) == probabilities
    assert served[probabilities][:2].to_numpy(dtype=float) == pytest.approx(
        expected[probabilities][:2].to_numpy(dtype=float), abs=1e-12)
    assert served.loc[files[2], "reason"] == expected.loc[files[2], "reason"]
    assert expected.loc[files[2], "reason"].startswith("unreadable")


def test_the_served_model_answers_http_for_a_good_and_an_unreadable_file(first_run_id, project, client,
                                                                          tmp_path):
    good = str(project / pd.read_csv(project / "data/03_primary/clip_manifest.csv")["path"].iloc[0])
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=client.tracking_uri, MLFLOW_DISABLE_TELEMETRY="true",
               PYTHONWARNINGS="ignore")
    with (tmp_path / "server.log").open("w") as log:
        server = subprocess.Popen(
            [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m",
             f"runs:/{first_run_id}/emotion_model", "--env-manager", "local", "-h", "127.0.0.1",
             "-p", str(port)], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the server's workers end with it
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not start in 180 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=5) as ping:
                    if ping.status == 200:
                        break
            except OSError:
                time.sleep(1)
        records = [{"path": good},
                   {"audio": base64.b64encode(b"not audio at all").decode(), "name": "broken.wav"}]
        body = json.dumps({"dataframe_records": records}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=180) as response:
            assert response.status == 200
            answer = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    assert [row["file"] for row in answer] == [good, "broken.wav"]
    probabilities = {key: value for key, value in answer[0].items() if key.startswith("p_")}
    assert len(probabilities) == 8 and sum(probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert answer[0]["emotion"] == max(probabilities, key=probabilities.get).removeprefix("p_")
    assert answer[0]["windows"] == 1 and answer[0]["reason"] is None
    assert answer[1]["emotion"] is None and answer[1]["reason"].startswith("unreadable: ")
    assert "broken.wav" in answer[1]["reason"] and "emofusion-" not in answer[1]["reason"]  # its name given


KEDRO_HELP = """
import json, runpy, sys

class FirstImports:  # notes the order in which the two packages are first imported, finds nothing
    order = []

    def find_spec(self, name, path=None, target=None):
        if name in ("emofusion", "mlflow") and name not in self.order:
            self.order.append(name)

sys.meta_path.insert(0, FirstImports())
sys.argv = ["kedro", "--help"]
try:
    runpy.run_module("kedro", run_name="__main__")
except SystemExit:
    pass
from mlflow.environment_variables import MLFLOW_DISABLE_TELEMETRY
print(json.dumps({"order": FirstImports.order, "telemetry_off": MLFLOW_DISABLE_TELEMETRY.get()}))
"""


def test_mlflow_is_imported_after_the_project_has_switched_its_telemetry_off(project):
    """`kedro` commands import kedro-mlflow, so MLflow, before the project's settings: the package,
    which every command imports first, switches MLflow's telemetry off before that."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK")}
    run = subprocess.run([sys.executable, "-c", KEDRO_HELP], cwd=project, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"order": ["emofusion", "mlflow"],
                                                               "telemetry_off": True}


SESSION_WITHOUT_A_RUN = """
import json, sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

bootstrap_project(Path.cwd())
with KedroSession.create(project_path=Path.cwd()) as session:
    session.load_context().catalog.load("model_summary")
print(json.dumps(sorted(name for name in sys.modules if name.split(".")[0] in ("mlflow", "kedro_mlflow"))))
"""


def test_a_session_that_runs_nothing_imports_no_mlflow(first_run_id, project):
    """`emofusion predict` and notebooks make sessions: MLflow, seconds to import, only for a run."""
    before = store_files(project)
    session = subprocess.run([sys.executable, "-c", SESSION_WITHOUT_A_RUN], cwd=project, capture_output=True,
                             text=True, timeout=300, env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
    assert session.returncode == 0, session.stderr[-3000:]
    assert json.loads(session.stdout.strip().splitlines()[-1]) == []
    assert store_files(project) == before


def test_tracking_settings_are_checked_before_anything_runs(parameters, tmp_path):
    parameters["tracking"] = {"enabled": "sometimes", "unreachable": "retry", "model": "mfcc.nope"}
    with pytest.raises(ParameterError) as refused:
        validate_parameters(parameters, tmp_path)
    assert "tracking.enabled" in str(refused.value) and "tracking.unreachable" in str(refused.value)
    parameters["tracking"] = {"model": "mfcc.nope"}
    with pytest.raises(ParameterError, match=r"tracking.model: 'mfcc.nope' is not a model this configuration "
                                             r"trains; give chosen .* or one of: .*mfcc\.svm"):
        validate_parameters(parameters, tmp_path)
    for model in ("chosen", None, "mfcc.svm"):
        parameters["tracking"] = {"model": model}
        validate_parameters(parameters, tmp_path)


def test_parameters_are_flattened_by_path_and_backbones_read_from_the_summary():
    assert dict(flattened({"split": {"strategy": "random", "train_corpora": []}, "seed": 1, "none": {}})) == {
        "split.strategy": "random", "split.train_corpora": [], "seed": 1, "none": {}}
    summary = pd.DataFrame({"backbone": ["squeezenet_v1_1", None, "squeezenet_v1_1"],
                            "backbone_requested": ["inception_resnet_v2", None, "squeezenet_v1_1"]})
    assert backbone_tags(summary) == {"backbone_requested": "inception_resnet_v2, squeezenet_v1_1",
                                      "backbone_used": "squeezenet_v1_1"}
    assert backbone_tags(summary.iloc[[1]]) == {}

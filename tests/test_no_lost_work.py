"""No lost work and no mixed-up outputs, as a user meets them: a run refuses stored inputs made with
other settings or damaged, a second run waits for none and changes nothing, and a run killed in its
last fold resumes with that fold alone. They share one small trained project (the tiny demo corpus,
the MFCC and LPCC variants, no CNN), apart from the demo run of test_end_to_end.py, so that the two
can be made side by side."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_end_to_end import TINY_DEMO, kedro, log_of, trained, variants_switched_off_but

KEPT = ("mfcc", "lpcc")
LOCAL = {"fusion_variants": variants_switched_off_but(*KEPT),
         "classifiers": {"dnn": {"epochs": 40, "patience": 5}},
         "tracking": {"enabled": False}}
PIPELINES = "data_processing,feature_extraction,fusion,modelling"


@pytest.fixture(scope="module")
def project(scratch_project) -> Path:
    return scratch_project(LOCAL)


@pytest.fixture(scope="module")
def finished_run(project: Path) -> subprocess.CompletedProcess:
    return trained(project, PIPELINES)


def test_a_run_refuses_stored_inputs_made_with_other_settings_before_training(finished_run, project):
    """A namespace run does not remake the split or the fused features, so a run that asks for other
    settings than they were made with stops, naming them, instead of scoring on them."""
    assert finished_run.returncode == 0
    metrics = project / "data/08_reporting/metrics/mfcc/svm.json"
    written = metrics.stat().st_mtime_ns
    run = kedro(project, "run", "--namespaces=modelling.mfcc.svm", "--params",
                f"{TINY_DEMO},split.strategy=speaker_independent")
    assert run.returncode != 0
    assert ("data_split was made with split.strategy=random; this run asks for "
            "split.strategy=speaker_independent") in log_of(run)
    assert ("`kedro run --nodes=split_clips`, then this run again; or `kedro run --pipelines=modelling`"
            in log_of(run))
    run = kedro(project, "run", "--namespaces=modelling.mfcc.svm", "--params",
                f"{TINY_DEMO},block_weights.mfcc=2")
    assert run.returncode != 0
    assert ("fused_features was made with block_weights.mfcc=1.0; this run asks for block_weights.mfcc=2"
            in log_of(run))
    assert metrics.stat().st_mtime_ns == written  # nothing was trained
    assert json.loads(metrics.read_text())["split"] == {"strategy": "random", "test_size": 0.3,
                                                        "validation_size": 0.15, "repeats": 1, "folds": 1,
                                                        "seed": 42}


def test_a_truncated_stream_is_named_with_the_fused_features_that_read_it(finished_run, project):
    values = project / "data/04_feature/mfcc/values.npy"
    whole = values.read_bytes()
    try:
        values.write_bytes(whole[: len(whole) // 2])
        run = kedro(project, "run", "--namespaces=modelling.mfcc.svm", "--params", TINY_DEMO)
    finally:
        values.write_bytes(whole)
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    log = " ".join(run.stderr.split())
    assert "This run's stored input is damaged: fusion.mfcc.fused_features (the stream it reads at" in log
    assert "04_feature/mfcc' is damaged (values.npy holds " in log


def test_a_second_run_during_a_run_is_refused_at_once_and_changes_nothing(finished_run, project):
    lock = project / "data/.run.lock"
    untouched = project / "data/08_reporting/metrics/lpcc/svm.json"
    written = untouched.stat().st_mtime_ns
    # resume=false: the first run trains again what the finished run stored, so it lasts a while.
    first = subprocess.Popen([sys.executable, "-m", "kedro", "run", "--namespaces=modelling.mfcc.dnn",
                              "--params", f"{TINY_DEMO},resume=false"], cwd=project, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
    deadline = time.monotonic() + 300
    while not lock.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    second = kedro(project, "run", "--namespaces=modelling.lpcc.svm", "--params", TINY_DEMO)
    # At once: while the first still runs. (Not a number of seconds: a `kedro` command takes seconds
    # to start, importing MLflow through kedro-mlflow's commands, more on a machine busy training.)
    first_was_running = first.poll() is None
    first.communicate(timeout=600)
    assert first.returncode == 0
    assert second.returncode == 1
    assert f"Another run is using this project's data folder (process {first.pid} on " in second.stderr
    assert "--namespaces=modelling.mfcc.dnn" in second.stderr
    assert first_was_running
    assert untouched.stat().st_mtime_ns == written
    assert not lock.exists()  # given back when the first run ended


MFCC_DNN_OUTPUTS = ("data/06_models/mfcc/dnn.pkl", "data/06_models/mfcc/dnn.json",
                    "data/07_model_output/mfcc/dnn_test_predictions.csv",
                    "data/08_reporting/metrics/mfcc/dnn.json")


def test_a_run_killed_in_its_last_fold_resumes_with_that_fold_alone(finished_run, project, tmp_path):
    backup = tmp_path / "data"
    shutil.copytree(project / "data", backup)  # this test's 2-fold split is put back afterwards
    folds = project / "data/06_models/mfcc/dnn_folds"
    # One fold at a time (n_jobs=1), so that the kill comes in the last fold: side by side, both
    # folds would end together.
    two_folds = f"{TINY_DEMO},split.repeats=2,n_jobs=1"
    try:
        assert kedro(project, "run", "--nodes=split_clips", "--params", two_folds).returncode == 0
        model_run = ["run", "--namespaces=modelling.mfcc.dnn", "--params", two_folds]
        uninterrupted = kedro(project, *model_run)
        assert uninterrupted.returncode == 0
        expected = {name: (project / name).read_bytes() for name in MFCC_DNN_OUTPUTS}
        shutil.rmtree(folds)
        killed = subprocess.Popen([sys.executable, "-m", "kedro", *model_run], cwd=project,
                                  start_new_session=True, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL,
                                  env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
        deadline = time.monotonic() + 300
        while not (folds / "fold_0.joblib").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(killed.pid, signal.SIGKILL)  # the run and the process training its network
        killed.wait()
        assert sorted(path.name for path in folds.iterdir()) == ["fold_0.joblib"]
        resumed = kedro(project, *model_run)
        assert resumed.returncode == 0
        log = log_of(resumed)
        assert "Took over the lock of a run that is gone" in log
        assert "mfcc.dnn: 1 of 2 folds reused from an earlier run" in log
        trained = [line for line in log.splitlines() if "Fold " in line and "/2:" in line]
        assert len(trained) == 1 and "Fold 2/2:" in trained[0]  # the last fold alone
        assert {name: (project / name).read_bytes() for name in MFCC_DNN_OUTPUTS} == expected
        # A changed setting retrains the folds it affects: tests/pipelines/modelling/test_nodes.py.
    finally:
        shutil.rmtree(project / "data")
        shutil.copytree(backup, project / "data")



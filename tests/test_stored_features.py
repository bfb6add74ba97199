"""The CNN step on stored features, as a user reruns it: an unchanged rerun reuses them, a changed
backbone setting recomputes them, offline ImageNet falls back to SqueezeNet (or stops, naming the
file to download), and one modelling namespace runs alone from stored features. One small trained
project (the tiny demo corpus, the default backbone without weights at its smallest input, three
variants, SVMs only), apart from the demo run of test_end_to_end.py, so that the two are made side
by side."""

import subprocess
from pathlib import Path

import pytest

from tests.test_end_to_end import LOCAL as DEMO_RUN_LOCAL
from tests.test_end_to_end import (
    TINY_DEMO,
    kedro,
    log_of,
    trained,
    transfer_features,
    variants_switched_off_but,
)

KEPT = ("mfcc", "lpcc", "mfcc_cnn")
LOCAL = {"transfer_features": {"weights": "none", "batch_size": 8}, "backbones": DEMO_RUN_LOCAL["backbones"],
         "fusion_variants": variants_switched_off_but(*KEPT),
         "classifiers": {"dnn": None},
         "tracking": {"enabled": False}}
PIPELINES = "data_processing,feature_extraction,transfer_features,fusion,modelling"


@pytest.fixture(scope="module")
def project(scratch_project) -> Path:
    return scratch_project(LOCAL)


@pytest.fixture(scope="module")
def finished_run(project: Path) -> subprocess.CompletedProcess:
    return trained(project, PIPELINES)


def offline(project: Path) -> dict[str, str]:
    """No route to the weights' host, whether or not this machine has one, and an empty Keras cache."""
    return {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
            "https_proxy": "http://127.0.0.1:9", "KERAS_HOME": str(project / "keras_home")}


@pytest.fixture(scope="module")
def transfer_reruns(finished_run, project) -> dict:
    """Runs of the transfer step after the first run, in this order; each test reads some of them."""
    values = project / "data/04_feature/transfer_features/values.npy"
    first_mtime = values.stat().st_mtime_ns
    unchanged = kedro(project, "run", "--pipelines", "transfer_features")
    runs = {"unchanged": unchanged, "rewritten": values.stat().st_mtime_ns != first_mtime}
    runs["pooling"] = kedro(project, "run", "--pipelines", "transfer_features",
                            "--params", "backbones.inception_resnet_v2.pooling=avg")
    runs["pooled"] = transfer_features(project)
    runs["fallback"] = kedro(project, "run", "--pipelines", "transfer_features", "--params",
                             "transfer_features.weights=imagenet", env=offline(project))
    runs["fallen_back"] = transfer_features(project)
    runs["no_fallback"] = kedro(
        project, "run", "--pipelines", "transfer_features", "--params",
        "transfer_features.weights=imagenet,transfer_features.offline_fallback=null", env=offline(project))
    return runs


def test_unchanged_rerun_reuses_the_stored_features(transfer_reruns):
    run = transfer_reruns["unchanged"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Transfer features are up to date" in log_of(run)
    assert "without running the CNN" in log_of(run)
    assert "features:" not in run.stderr  # no progress bar: the CNN did not run
    assert not transfer_reruns["rewritten"]


def test_changed_backbone_setting_recomputes(transfer_reruns):
    run = transfer_reruns["pooling"]
    assert run.returncode == 0, run.stderr[-3000:]
    assert "backbone settings changed" in log_of(run)
    assert transfer_reruns["pooled"].values.shape == (96, 320 + 1088)
    assert transfer_reruns["pooled"].metadata["pooling"] == "avg"


def test_offline_imagenet_falls_back_to_squeezenet_and_records_it(transfer_reruns):
    run = transfer_reruns["fallback"]
    assert run.returncode == 0, run.stderr[-3000:]
    wanted = "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert f"Keras wanted the file {wanted}" in log_of(run)
    assert "Going on with the offline backbone 'squeezenet_v1_1'" in log_of(run)
    meta = transfer_reruns["fallen_back"].metadata
    assert (meta["backbone_requested"], meta["backbone"], meta["weights"]) == (
        "inception_resnet_v2", "squeezenet_v1_1", "imagenet")
    assert wanted in meta["fallback_reason"]
    # fire3 (15 x 15 x 128 at 64 x 64) and fire5 (7 x 7 x 256), mean and std over time
    assert transfer_reruns["fallen_back"].values.shape == (96, 2 * (15 * 128 + 7 * 256))


def test_offline_imagenet_without_fallback_stops_with_what_to_download(transfer_reruns, project):
    run = transfer_reruns["no_fallback"]
    assert run.returncode != 0
    assert "ImageNet weights for backbone 'inception_resnet_v2' could not be downloaded" in run.stderr
    assert "Traceback" not in run.stderr  # what the project refused is its message alone
    assert f"put it in {project / 'keras_home' / 'models'}/" in log_of(run)
    assert "offline_fallback is null, so the run stops here" in log_of(run)


def test_one_modelling_namespace_runs_alone_from_stored_features(transfer_reruns, project):
    # The settings the stored features were made with (the tiny demo's audio), or they are refused.
    metrics = project / "data/08_reporting/metrics"
    others = ("mfcc/svm.json", "mfcc_cnn/svm.json")
    before = {model: (metrics / model).stat().st_mtime_ns for model in ("lpcc/svm.json", *others)}
    one = kedro(project, "run", "--namespaces", "modelling.lpcc.svm", "--params", TINY_DEMO)
    assert one.returncode == 0, one.stderr[-3000:]
    # Only that namespace's outputs are made again (node times under a second are not logged,
    # so the outputs, not the log, say which nodes ran).
    assert (metrics / "lpcc/svm.json").stat().st_mtime_ns != before["lpcc/svm.json"]
    assert all((metrics / model).stat().st_mtime_ns == before[model] for model in others)

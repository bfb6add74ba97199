"""A feature stream and a classifier kind of a project's own, each added by one registration in the
project's configuration (`feature_streams`, `classifier_kinds`) plus the fusion variant and the
classifier entry that use them: both reach the fused variants, the summary, the report and
`emofusion predict`, with no edit of EmoFusion's code. The stream's extractor lives in the project's
own module, as a user's would."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from emofusion.registry import feature_streams, with_stream_weights
from tests.test_end_to_end import TINY_DEMO, kedro, variants_switched_off_but

# The project's own stream: the zero-crossing rate of each frame, its mean and spread over the clip.
STREAM_MODULE = '''
import numpy as np

from emofusion.clip_array import ClipArray


def extract_zero_crossings(preprocessed_audio, settings, n_jobs):
    frame = int(preprocessed_audio.metadata["sample_rate"] * settings["frame_ms"] / 1000)
    rows = []
    for signal in preprocessed_audio.values:
        frames = np.asarray(signal)[: len(signal) // frame * frame].reshape(-1, frame)
        rate = (np.diff(np.signbit(frames), axis=1) != 0).mean(axis=1)
        rows.append([rate.mean(), rate.std()])
    made_with = {**preprocessed_audio.metadata.get("made_with", {}), "zero_crossings": dict(settings)}
    return ClipArray(preprocessed_audio.clip_ids, np.asarray(rows, dtype=np.float32),
                     {"feature": "zero_crossings", "made_with": made_with})
'''

LOCAL = {
    "feature_streams": {"zero_crossings": {"pipeline": "feature_extraction",
                                           "extractor": "zero_crossing_stream.extract_zero_crossings",
                                           "settings": "zero_crossings", "block_weight": 0.5}},
    "zero_crossings": {"frame_ms": 20},
    "classifier_kinds": {"nearest_neighbours": "sklearn.neighbors.KNeighborsClassifier"},
    "classifiers": {"dnn": None, "neighbours": {"kind": "nearest_neighbours", "n_neighbors": 3}},
    "fusion_variants": {**variants_switched_off_but("mfcc"), "zcr_mfcc": ["zero_crossings", "mfcc"]},
    "tracking": {"enabled": False},
}
CATALOG = {"zero_crossings": {"type": "emofusion.datasets.ClipArrayDataset",
                              "path": "data/04_feature/zero_crossings"}}
MODELS = {("mfcc", "svm"), ("mfcc", "neighbours"), ("zcr_mfcc", "svm"), ("zcr_mfcc", "neighbours")}


def own_module(project: Path) -> dict[str, str]:
    """The environment of a command that imports the project's own module, as a user's package would."""
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(project), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="module")
def project(scratch_project) -> Path:
    project = scratch_project(LOCAL)
    (project / "zero_crossing_stream.py").write_text(STREAM_MODULE)
    (project / "conf" / "local" / "catalog.yml").write_text(yaml.safe_dump(CATALOG))
    return project


@pytest.fixture(scope="module")
def finished_run(project: Path) -> subprocess.CompletedProcess:
    pipelines = "data_processing,feature_extraction,fusion,modelling,reporting"
    return kedro(project, "run", "--pipelines", pipelines, "--params", TINY_DEMO, env=own_module(project))


def test_a_registered_stream_is_made_fused_at_its_own_weight_and_modelled_by_a_registered_kind(
        finished_run, project):
    assert finished_run.returncode == 0, finished_run.stderr[-3000:]
    assert (project / "data/04_feature/zero_crossings").is_dir()
    fused = json.loads((project / "data/05_model_input/fused_features/zcr_mfcc/metadata.json").read_text())
    assert [(block["stream"], block["weight"]) for block in fused["blocks"]] == [("zero_crossings", 0.5),
                                                                              ("mfcc", 1.0)]
    assert fused["made_with"]["zero_crossings"] == {"frame_ms": 20}
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    assert set(zip(summary["variant"], summary["classifier"], strict=True)) == MODELS
    report = (project / "data/08_reporting/report.html").read_text()
    assert "zcr_mfcc" in report and "neighbours" in report
    card = json.loads((project / "data/06_models/zcr_mfcc/neighbours.json").read_text())
    assert card["classifier"] == {"kind": "nearest_neighbours", "n_neighbors": 3}


def test_predict_answers_with_the_registered_stream_and_kind_as_in_the_test_predictions(finished_run,
                                                                                       project):
    assert finished_run.returncode == 0
    tested = pd.read_csv(project / "data/07_model_output/zcr_mfcc/neighbours_test_predictions.csv")
    probabilities = [column for column in tested if column.startswith("p_")]
    top_two = np.sort(tested[probabilities].to_numpy(), axis=1)[:, -2:]
    tested = tested[top_two[:, 1] > top_two[:, 0]].iloc[0]  # a clip with one most likely emotion
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv").set_index("clip_id")
    clip = project / manifest.loc[tested["clip_id"], "path"]
    run = subprocess.run([str(Path(sys.executable).with_name("emofusion")), "predict", "--params", TINY_DEMO,
                          "--model", "zcr_mfcc.neighbours", "--format", "csv", str(clip)], cwd=project,
                         env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", **own_module(project)),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    written = pd.read_csv(io.StringIO(run.stdout))  # probabilities to 4 decimals
    assert written["emotion"].iloc[0] == tested["predicted"]
    assert np.allclose(written[probabilities].iloc[0].astype(float), tested[probabilities].astype(float),
                       atol=1e-4)


def test_a_registration_fills_block_weights_and_an_unknown_stream_or_kind_is_named(parameters):
    parameters = {**parameters, **LOCAL}
    assert with_stream_weights(parameters)["block_weights"]["zero_crossings"] == 0.5
    assert with_stream_weights({**parameters, "block_weights": {"zero_crossings": 2.0}}
                               )["block_weights"]["zero_crossings"] == 2.0
    assert feature_streams(parameters)["zero_crossings"].predict_needs == ("feature_extraction",)
    from emofusion.errors import ClassifierConfigError, FusionConfigError
    from emofusion.registry import estimator_class
    with pytest.raises(ClassifierConfigError, match="classifier_kinds.x: cannot import 'sklearn.nothing"):
        estimator_class("x", {"x": "sklearn.nothing.Here"})
    with pytest.raises(ClassifierConfigError, match="'forest' is not one of"):
        estimator_class("forest", {"svm": "emofusion.learning.estimators.KernelSVC"})
    with pytest.raises(FusionConfigError, match="feature_streams.zcr: give at least the pipeline"):
        feature_streams({"feature_streams": {"zcr": {"extractor": "a.b"}}})
    with pytest.raises(FusionConfigError, match="feature_streams.zcr: block_weight: Input should be greater"):
        feature_streams({"feature_streams": {"zcr": {"pipeline": "feature_extraction", "block_weight": -1}}})

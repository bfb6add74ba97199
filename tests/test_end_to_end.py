"""`kedro run` as a user runs it, in a copy of the project with a tiny demo corpus."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.io
import pytest
import soundfile as sf
import soxr
import yaml
from omegaconf import OmegaConf

from emofusion.datasets import ClipArrayDataset, ModelDataset
from tests.conftest import project_parameters

PROJECT = Path(__file__).resolve().parents[1]
# 4 speakers x 8 emotions x 3 clips: enough for a split with every emotion in each subset.
TINY_DEMO = ("demo_corpus.speakers=4,demo_corpus.clips_per_emotion=3,demo_corpus.duration_s=1.5,"
             "audio.duration_s=1.0")


# The finished run's conf/local: a second corpus beside the demo, and everything small.
LOCAL = {
    "corpora": ["demo", "mine"],
    "corpus_sources": {"mine": {"reader": "folder", "path": "mine"}},
    # The offline backbone, small and without weights, to stay fast (the default one runs end to end in
    # the paper environment's test and in test_stored_features.py).
    "transfer_features": {"backbone": "squeezenet_v1_1", "weights": "none", "batch_size": 8},
    "backbones": {"inception_resnet_v2": {"input_size": [75, 75]},
                  "squeezenet_v1_1": {"input_size": [64, 64]}},
    "classifiers": {"dnn": {"epochs": 40, "patience": 5}},
    # Every kind of fine-tuned model, on small images for 2 epochs; C2 on a progressive schedule.
    "fine_tuning": {"enabled": True,
                    "defaults": {"image_size": [48, 48], "epochs": 2, "patience": 2, "batch_size": 16},
                    "models": {"squeezenet_c2": {"image_size": [{"size": [48, 40], "epochs": 1},
                                                                {"size": [48, 48], "epochs": 1}]},
                               "lstm": {"lstm": {"units": 8}, "head": [{"units": 16}], "epochs": 2}}},
}


def kedro(project: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # A wide console, so that rich does not wrap the log lines the tests look for.
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore", COLUMNS="400",
               **(env or {}))
    return subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)



def variants_switched_off_but(*kept: str) -> dict[str, None]:
    """conf/local's fusion_variants for a small project: every variant of conf/base but `kept` null."""
    return {variant: None for variant in project_parameters("base")["fusion_variants"] if variant not in kept}


def trained(project: Path, pipelines: str) -> subprocess.CompletedProcess:
    """A small project's first `kedro run` on the tiny demo corpus, which its module's tests then read."""
    run = kedro(project, "run", "--pipelines", pipelines, "--params", TINY_DEMO)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def project(scratch_project) -> Path:
    return scratch_project()


@pytest.fixture(scope="module")
def finished_run(project: Path) -> subprocess.CompletedProcess:
    # A second corpus in the user's folder layout, with one clip of each kind of trouble.
    mine = project / "mine"
    rng = np.random.default_rng(0)
    for label in ("angry", "sad"):
        for take in range(2):
            (mine / label).mkdir(parents=True, exist_ok=True)
            sf.write(mine / label / f"{take}.flac", 0.3 * rng.standard_normal(24000), 24000)
    sf.write(mine / "angry" / "silent.wav", np.zeros(16000), 16000)
    (mine / "sad" / "broken.wav").write_bytes(b"not audio at all")
    (mine / "furious").mkdir()
    sf.write(mine / "furious" / "x.wav", 0.3 * rng.standard_normal(16000), 16000)
    (project / "conf" / "local" / "parameters.yml").write_text(yaml.safe_dump(LOCAL))
    return kedro(project, "run", "--params", TINY_DEMO)


def test_run_succeeds_and_reports_clip_counts(finished_run):
    assert finished_run.returncode == 0, finished_run.stderr[-3000:]
    log = " ".join((finished_run.stdout + finished_run.stderr).split())
    assert "Corpus 'demo': 96 clips used, 0 rejected" in log
    assert "Corpus 'mine': 4 clips used, 3 rejected" in log


def test_run_writes_manifests_rejections_and_features(finished_run, project):
    assert finished_run.returncode == 0
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv")
    assert len(manifest) == 100
    assert set(manifest["emotion"]) == {"neutral", "calm", "happy", "sad", "angry", "fearful",
                                        "disgust", "surprised"}
    assert (manifest["source_sample_rate"].loc[manifest["corpus"] == "demo"] == 22050).all()
    rejected = pd.read_csv(project / "data/03_primary/rejected_clips.csv").set_index("clip_id")
    assert rejected.loc["mine/angry/silent", "reason"].startswith("silent")
    assert rejected.loc["mine/sad/broken", "reason"].startswith("unreadable")
    assert "no emotion" in rejected.loc["mine/furious/x", "reason"]

    features = {name: ClipArrayDataset(path=str(project / "data/04_feature" / name)).load()
                for name in ("mfcc", "lpcc", "egemaps", "compare", "log_mel_spectrogram")}
    assert features["mfcc"].values.shape == (100, 80)  # 40 MFCCs: clip mean and std
    assert features["lpcc"].values.shape == (100, 24)
    assert features["egemaps"].values.shape == (100, 88)
    assert features["compare"].values.shape == (100, 6373)
    assert features["egemaps"].metadata["feature"] == "eGeMAPSv02"
    assert features["log_mel_spectrogram"].values.shape == (100, 128, 81)
    for feature in features.values():
        assert list(feature.clip_ids) == manifest["clip_id"].tolist()
        assert np.isfinite(feature.values.astype(np.float32)).all()


# SqueezeNet's fire3 (15 x 15 x 128 at 64 x 64) and fire5 (7 x 7 x 256), mean and std over time.
CNN_WIDTH = 2 * (15 * 128 + 7 * 256)


def transfer_features(project: Path) -> ClipArrayDataset:
    return ClipArrayDataset(path=str(project / "data/04_feature/transfer_features")).load()


def test_run_extracts_transfer_features_and_says_the_weights_are_random(finished_run, project):
    assert finished_run.returncode == 0
    features = transfer_features(project)
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv")
    assert list(features.clip_ids) == manifest["clip_id"].tolist()
    assert features.values.shape == (100, CNN_WIDTH) and features.values.dtype == np.float32
    assert np.isfinite(features.values).all() and features.values.std() > 0
    meta = features.metadata
    assert (meta["backbone"], meta["pretrained"], meta["feature_shape"]) == (
        "squeezenet_v1_1", False, [[15, 15, 128], [7, 7, 256]])
    assert "RANDOM WEIGHTS" in log_of(finished_run) and "NOT pretrained" in log_of(finished_run)


def test_run_fuses_streams_and_trains_every_variant_and_classifier_above_chance(finished_run, project,
                                                                                  parameters):
    assert finished_run.returncode == 0
    fused = ClipArrayDataset(path=str(project / "data/05_model_input/fused_features/mfcc_lpcc_cnn")).load()
    assert fused.values.shape == (100, 80 + 24 + CNN_WIDTH)
    assert [b["stream"] for b in fused.metadata["blocks"]] == ["mfcc", "lpcc", "transfer_features"]

    # Standardised per speaker: the 4 demo speakers' clips by their own; the 4 clips of the corpus
    # without speakers by the statistics of all clips.
    normalised = ClipArrayDataset(
        path=str(project / "data/05_model_input/fused_features/compare_egemaps_mfcc_lpcc_spk")).load()
    assert normalised.values.shape == (100, 6373 + 88 + 80 + 24)
    counts = normalised.metadata["speaker_normalisation"]["clip_counts"]
    assert counts | {"spread": None} == {"speakers": 4, "normalised": 96, "fallback": 4, "spread": None}
    assert len(counts["spread"]) == 4  # each speaker's spread, for `emofusion predict` to compare with
    assert ("4 clips without a speaker or with fewer than 5 recordings of theirs fell back"
            in log_of(finished_run))

    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    assert set(zip(summary["variant"], summary["classifier"], strict=True)) == {
        (variant, classifier) for variant in parameters["fusion_variants"] for classifier in ("svm", "dnn")
    } | FINE_TUNED
    split = pd.read_csv(project / "data/05_model_input/data_split.csv")
    assert (summary["test_clips"] == (split["subset"] == "test").sum()).all()
    assert (summary["split"] == "random").all() and (summary["split_seed"] == 42).all()  # from the split
    # Eight emotions: chance is 1/8. The demo's emotions differ in pitch, energy and tempo, but
    # these clips are 1 s long and there are 32 test clips.
    by_model = summary.set_index(["variant", "classifier"]).drop(list(FINE_TUNED))  # trained for 2 epochs
    assert by_model.loc[("mfcc_lpcc_cnn", "svm"), "accuracy"] > 0.4
    assert by_model["accuracy"].max() > 0.5 and by_model["accuracy"].median() > 0.3
    metrics = json.loads((project / "data/08_reporting/metrics/mfcc_cnn/dnn.json").read_text())
    assert metrics["features"][1] | {"width": 0} == {
        "stream": "transfer_features", "width": 0, "weight": 1.0, "backbone": "squeezenet_v1_1",
        "weights": "random initialisation (not pretrained)", "pretrained": False,
        "backbone_requested": "squeezenet_v1_1", "fallback_reason": None}
    assert (project / "data/06_models/mfcc_cnn/dnn.pkl").is_file()


SPK_LATE = ("compare_egemaps_mfcc_lpcc_spk_spectrogram_spk_late",  # both inputs standardised per speaker
            "squeezenet_c2_spk_compare_egemaps_mfcc_lpcc_spk")
FINE_TUNED = {("log_mel_spectrogram", "squeezenet_c1"), ("log_mel_spectrogram", "squeezenet_c2"),
              ("log_mel_spectrogram", "lstm"), ("mfcc_lpcc_spectrogram_late", "squeezenet_c2_mfcc_lpcc"),
              ("log_mel_spectrogram_spk", "squeezenet_c2_spk"), SPK_LATE}


def test_fine_tuned_models_are_scored_and_described_as_modelling_s_with_training_curves(finished_run,
                                                                                        project):
    assert finished_run.returncode == 0
    split = pd.read_csv(project / "data/05_model_input/data_split.csv")
    tested = split.loc[split["subset"] == "test", "clip_id"]
    for variant, name in FINE_TUNED:
        predictions = pd.read_csv(project / f"data/07_model_output/{variant}/{name}_test_predictions.csv")
        assert sorted(predictions["clip_id"]) == sorted(tested)  # the shared split's test clips, once
        assert np.allclose(predictions.filter(regex="^p_").sum(axis=1), 1.0, atol=1e-5)
        metrics = json.loads((project / f"data/08_reporting/metrics/{variant}/{name}.json").read_text())
        assert metrics["split"]["strategy"] == "random" and metrics["test_clips"] == len(tested)
    card = json.loads((project / "data/06_models/log_mel_spectrogram/squeezenet_c2.json").read_text())
    assert list(card["inputs"]) == ["log_mel_spectrogram"]
    assert [history["image_size"] for history in card["history"]] == [[[48, 40], [48, 48]]]  # progressive
    assert card["model_selection"][0]["chosen"]["image_size"] == [48, 48]
    metrics = json.loads(
        (project / "data/08_reporting/metrics/log_mel_spectrogram/squeezenet_c1.json").read_text())
    assert metrics["features"][0] | {"width": 0} == {
        "stream": "log_mel_spectrogram", "width": 0, "weight": 1.0, "backbone": "squeezenet_v1_1",
        "backbone_requested": "squeezenet_v1_1", "fallback_reason": None, "weights": "imagenet",
        "pretrained": True}
    # On spectrograms standardised per speaker, as the fused variants ending in _spk are.
    spk = json.loads((project / "data/06_models/log_mel_spectrogram_spk/squeezenet_c2_spk.json").read_text())
    assert list(spk["inputs"]) == ["log_mel_spectrogram_spk"]
    assert spk["features"]["speaker_normalisation"]["clip_counts"] | {"spread": None} == {
        "speakers": 4, "normalised": 96, "fallback": 4, "spread": None}
    assert len(spk["features"]["speaker_normalisation"]["fallback"]["mean"]) == 128  # one per mel band
    assert "Standardised 96 clips (each mel band over its frames)" in log_of(finished_run)
    late = json.loads((project / f"data/06_models/{SPK_LATE[0]}/{SPK_LATE[1]}.json").read_text())
    assert set(late["inputs"]) == {"log_mel_spectrogram_spk",
                                   "fusion.compare_egemaps_mfcc_lpcc_spk.fused_features"}
    assert late["features"]["speaker_normalisation"]["by"] == "speaker"
    late = json.loads(
        (project / "data/06_models/mfcc_lpcc_spectrogram_late/squeezenet_c2_mfcc_lpcc.json").read_text())
    assert set(late["inputs"]) == {"log_mel_spectrogram", "fusion.mfcc_lpcc.fused_features"}
    assert len(late["model_selection"][0]["chosen"]["late_weights"]) == 2
    for name in ("squeezenet_c1", "squeezenet_c2", "lstm"):
        curves = plotly.io.read_json(project / f"data/08_reporting/training_curves/{name}.json")
        assert {trace.name for trace in curves.data} == {"fold 0 training", "fold 0 validation"}
        assert len(curves.data[0].y) == 2  # loss per epoch
    log = log_of(finished_run)
    assert "squeezenet_v1_1 epoch 2/2" in log and "lstm epoch 1/2" in log


def test_run_writes_figures_and_a_report_of_every_model(finished_run, project):
    assert finished_run.returncode == 0
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    report = (project / "data/08_reporting/report.html").read_text()
    assert "100 clips used, 3 rejected" in report and "mine/sad/broken" in report
    assert report.count("Plotly.newPlot") == 2 + len(summary)
    for variant, classifier in zip(summary["variant"], summary["classifier"], strict=True):
        figure = plotly.io.read_json(
            project / f"data/08_reporting/confusion_matrices/{variant}/{classifier}.json")
        scores = json.loads((project / f"data/08_reporting/metrics/{variant}/{classifier}.json").read_text())
        assert np.array_equal(figure.data[0].z, scores["confusion_matrix"]["counts"])
        assert f"{variant} · {classifier}" in report
    log = log_of(finished_run)
    assert "Model summary (random split" in log


def test_the_log_is_short_quiet_and_ends_with_the_summary(finished_run, project):
    assert finished_run.returncode == 0
    # Lines as a terminal shows them: a progress bar redraws its line with carriage returns.
    lines = [line for line in (finished_run.stdout + finished_run.stderr).split("\n") if line.strip()]
    # A progress bar's redraws grow with the machine's slowness (one a second): the report's own
    # lines are counted (158 on 3 December 2026, with 150 bar lines on a loaded machine).
    report = [line for line in lines if not re.search(r"\d+%\|", line)]
    assert len(report) < 180, len(report)
    log = "\n".join(lines)
    for noise in ("E0000", "I0000", "absl", "cuInit", "Loading data from", "Saving data to", "DNN epoch",
                  "register_new_resolver", "shuffle", "rich_logging.yml", "--pipeline=", "Traceback",
                  "anonymous usage data", "retracing"):
        assert noise not in log, noise
    # The summary is last: its header, one row per model, then the run's answers and nothing else.
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    header = max(i for i, line in enumerate(lines) if "Model summary (random split" in line)
    assert lines[header + 2 + len(summary)].startswith("Chosen on validation clips: ")
    answers = lines[header + 3 + len(summary):]
    assert [line.split(" ")[0] for line in answers] == ["Does", "Does"], lines[header:]
    assert max(len(line) for line in lines[header:]) <= 100


NOTEBOOK_RUNNER = """
import json, sys
from pathlib import Path
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

bootstrap_project(Path.cwd())
with KedroSession.create(project_path=Path.cwd()) as session:
    namespace = {"catalog": session.load_context().catalog}  # as `kedro jupyter` provides it
    for cell in json.loads(Path(sys.argv[1]).read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "cell", "exec"), namespace)
print(json.dumps({"spectrogram": list(namespace["spectrogram_figure"].data[0].z.shape),
                  "mfcc_rows": list(namespace["stream_figures"]["mfcc"].data[0].y),
                  "summary_rows": len(namespace["model_summary"])}))
"""


def test_the_notebook_runs_on_the_catalog_of_a_finished_run(finished_run, project):
    assert finished_run.returncode == 0
    notebook = PROJECT / "notebooks/explore_results.ipynb"
    run = subprocess.run([sys.executable, "-c", NOTEBOOK_RUNNER, str(notebook)], cwd=project,
                         capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    shown = json.loads(run.stdout.strip().splitlines()[-1])
    assert shown["spectrogram"] == [128, 81]
    assert set(shown["mfcc_rows"]) == {"neutral", "calm", "happy", "sad", "angry", "fearful", "disgust",
                                       "surprised"}
    assert shown["summary_rows"] == len(pd.read_csv(project / "data/08_reporting/model_summary.csv"))


def predict(project: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore", COLUMNS="400")
    return subprocess.run([str(Path(sys.executable).with_name("emofusion")), "predict", "--params", TINY_DEMO,
                           *args], cwd=project, env=env, capture_output=True, text=True, timeout=600)


def test_predict_repeats_the_training_run_on_its_own_test_clip_in_any_format(finished_run, project, tmp_path):
    assert finished_run.returncode == 0
    tested = pd.read_csv(project / "data/07_model_output/mfcc_lpcc_cnn/svm_test_predictions.csv").iloc[0]
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv").set_index("clip_id")
    original = project / manifest.loc[tested["clip_id"], "path"]  # relative to the project
    signal, rate = sf.read(original)
    # The same speech at 44.1 kHz, in stereo, between silences: another rate, channel count and length.
    resampled = soxr.resample(signal, rate, 44100)
    silence = np.zeros(int(0.4 * 44100))
    sf.write(tmp_path / "stereo.flac", np.stack([np.concatenate([silence, resampled, silence])] * 2, axis=1),
             44100)
    shutil.copy(original, tmp_path / "original.wav")
    (tmp_path / "notes.txt").write_text("not audio: skipped, as a folder may hold such files")

    run = predict(project, "--model", "mfcc_lpcc_cnn.svm", str(tmp_path))
    assert run.returncode == 0, run.stderr[-3000:]
    written = pd.read_csv(project / "predictions.csv").set_index("file")
    assert len(written) == 2
    probability_columns = [column for column in written if column.startswith("p_")]
    assert np.allclose(written[probability_columns].sum(axis=1), 1.0)
    same = written.loc[str(tmp_path / "original.wav")]
    # The same file gives the same probabilities as in the training run's test predictions.
    assert np.allclose(same[probability_columns].astype(float), tested[probability_columns].astype(float),
                       atol=1e-6)
    converted = written.loc[str(tmp_path / "stereo.flac")]
    assert np.abs(converted[probability_columns].astype(float) - same[probability_columns].astype(float)
                  ).max() < 0.1
    assert str(tmp_path / "original.wav") in run.stdout and same["emotion"] in run.stdout


@pytest.mark.parametrize("model", ["mfcc_lpcc_cnn_late.svm", "cnn.dnn", "log_mel_spectrogram.squeezenet_c2",
                                   "mfcc_lpcc_spectrogram_late.squeezenet_c2_mfcc_lpcc"])
def test_predict_with_late_fusion_and_pca_models_repeats_their_test_predictions(finished_run, project, model):
    assert finished_run.returncode == 0
    variant, classifier = model.split(".")
    tested = pd.read_csv(project / f"data/07_model_output/{variant}/{classifier}_test_predictions.csv")[:2]
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv").set_index("clip_id")
    files = [str(project / manifest.loc[clip, "path"]) for clip in tested["clip_id"]]
    output = project / f"{variant}_predictions.csv"
    run = predict(project, "--model", model, "--output", str(output), *files)
    assert run.returncode == 0, run.stderr[-3000:]
    written = pd.read_csv(output).set_index("file").loc[files]
    probabilities = [column for column in tested if column.startswith("p_")]
    assert np.allclose(written[probabilities].to_numpy(float), tested[probabilities].to_numpy(float),
                       atol=1e-5)
    fitted = ModelDataset(filepath=str(project / f"data/06_models/{variant}/{classifier}.pkl"),
                          arrays=str(project / "data/06_models/shared_arrays")).load()
    if variant == "cnn":  # its CNN block is projected by the PCA fitted in training
        assert fitted.named_steps["reduce"].projections_[0] is not None
    elif "squeezenet" in classifier:  # a fine-tuned network, alone or late-fused with the SVM
        assert set(getattr(fitted, "models", {"log_mel_spectrogram": fitted})) >= {"log_mel_spectrogram"}
    else:
        assert len(fitted.named_steps["classify"].models_) == 2


@pytest.mark.parametrize("model", ["compare_egemaps_mfcc_lpcc_spk.svm",
                                   "log_mel_spectrogram_spk.squeezenet_c2_spk", ".".join(SPK_LATE)])
def test_predict_with_a_speaker_normalised_model_needs_the_speakers_then_repeats_its_test_predictions(
        finished_run, project, tmp_path, model):
    assert finished_run.returncode == 0
    variant, classifier = model.split(".")
    tested = pd.read_csv(project / f"data/07_model_output/{variant}/{classifier}_test_predictions.csv",
                         dtype={"clip_id": str})
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv", dtype=str).set_index("clip_id")
    speaker = manifest.loc[tested["clip_id"].iloc[0], "speaker"]
    clips = manifest[manifest["speaker"] == speaker]
    files = [str(project / path) for path in clips["path"]]

    refused = predict(project, "--model", model, files[0])
    assert refused.returncode != 0
    assert "standardised per speaker" in refused.stderr and "--same-speaker" in refused.stderr

    # All the speaker's clips, standardised together as in training.
    output = tmp_path / "predictions.csv"
    run = predict(project, "--model", model, "--same-speaker", "--output", str(output), *files)
    assert run.returncode == 0, run.stderr[-3000:]
    ours = tested[tested["clip_id"].isin(clips.index)]
    written = pd.read_csv(output).set_index("file").loc[[str(project / clips.loc[clip, "path"])
                                                         for clip in ours["clip_id"]]]
    probabilities = [column for column in tested if column.startswith("p_")]
    assert np.allclose(written[probabilities].to_numpy(float), ours[probabilities].to_numpy(float), atol=1e-5)


def test_predict_refuses_a_model_trained_on_other_settings_or_missing_parts(finished_run, project, tmp_path,
                                                                             parameters):
    clip = str(project / pd.read_csv(project / "data/03_primary/clip_manifest.csv")["path"].iloc[0])
    other = project / "conf" / "fewer_mfccs"
    other.mkdir()
    fewer_mfccs = LOCAL | {"mfcc": parameters["mfcc"] | {"n_mfcc": 20}}
    (other / "parameters.yml").write_text(yaml.safe_dump(fewer_mfccs))
    run = predict(project, "--model", "mfcc.svm", "--env", "fewer_mfccs", clip)
    assert run.returncode != 0
    assert "mfcc.svm" in run.stderr and "n_mfcc: 40 when trained, 20 now" in " ".join(run.stderr.split())

    shutil.copy(project / "data/06_models/mfcc/svm.pkl", project / "data/06_models/mfcc/orphan.pkl")
    run = predict(project, "--model", "mfcc.orphan", clip)  # no classifier of that name
    assert run.returncode != 0 and "there is no trained model 'mfcc.orphan'" in run.stderr
    card = project / "data/06_models/lpcc/svm.json"
    card.rename(card.with_suffix(".away"))
    try:
        run = predict(project, "--model", "lpcc.svm", clip)
    finally:
        card.with_suffix(".away").rename(card)
    assert run.returncode != 0 and "model 'lpcc.svm' is incomplete or missing" in run.stderr


def test_predict_gives_every_file_a_row_on_stdout_and_never_a_traceback(finished_run, project, tmp_path):
    assert finished_run.returncode == 0
    clip = project / pd.read_csv(project / "data/03_primary/clip_manifest.csv")["path"].iloc[0]
    given = tmp_path / "given"
    given.mkdir()
    shutil.copy(clip, given / "a.wav")
    (given / "junk.wav").write_bytes(b"junk")
    sf.write(given / "silent.wav", np.zeros(16000), 16000)
    signal, rate = sf.read(clip)
    sf.write(given / "long.wav", np.tile(signal, 120 * rate // len(signal) + 1)[:120 * rate], rate)  # 2 min
    output = tmp_path / "not" / "yet" / "predictions.csv"
    # The folder, one of its files again, and a path that is not there.
    run = predict(project, "--model", "mfcc.svm", "--format", "csv", "--output", str(output), str(given),
                  str(given / "a.wav"), str(tmp_path / "nowhere.wav"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    table = pd.read_csv(io.StringIO(run.stdout)).set_index("file")  # stdout holds the answer alone
    names = {name: str(given / name) for name in ("a.wav", "junk.wav", "silent.wav", "long.wav")}
    assert sorted(table.index) == sorted([*names.values(), str(tmp_path / "nowhere.wav")])  # a.wav once
    assert table.loc[names["junk.wav"], "reason"].startswith("unreadable")
    assert table.loc[names["silent.wav"], "reason"].startswith("silent")
    assert table.loc[str(tmp_path / "nowhere.wav"), "reason"] == "no such file or folder"
    assert table.loc[names["a.wav"], "windows"] == 1 and pd.isna(table.loc[names["a.wav"], "reason"])
    assert 78 <= table.loc[names["long.wav"], "windows"] <= 80  # 1 s windows about every 1.5 s of 2 min
    assert len(pd.read_csv(output)) == 5

    windows = predict(project, "--model", "cnn.svm", "--windows", "--hop", "10", "--format", "json",
                      names["long.wav"])
    assert windows.returncode == 0, windows.stderr[-3000:]
    rows = pd.DataFrame(json.loads(windows.stdout))
    assert len(rows) == 13 and rows["start_s"].iloc[0] == 0  # 1 s windows from start to end, 119 s
    assert np.diff(rows["start_s"]) == pytest.approx(10, abs=0.5)
    assert {"emotion", "p_angry"} <= set(rows.columns)
    for noise in ("I0000", "E0000", "absl", "INFO"):  # quiet unless --verbose
        assert noise not in windows.stderr

    unknown = predict(project, "--model", "mfcc", names["a.wav"])
    assert unknown.returncode != 0 and "Traceback" not in unknown.stderr
    assert "there is no trained model 'mfcc'; --model takes one of:" in unknown.stderr
    assert "mfcc.svm" in unknown.stderr and "mfcc_lpcc_cnn_late.dnn" in unknown.stderr


def log_of(run: subprocess.CompletedProcess) -> str:
    return " ".join((run.stdout + run.stderr).split())


def test_missing_corpus_stops_with_instructions(scratch_project):
    result = kedro(scratch_project(), "run", "--params", "corpora=[ravdess]")
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "Corpus 'ravdess': folder 'data/01_raw/ravdess' does not exist" in message
    assert "Actor_01" in message and "corpus_sources.ravdess.path" in message


def test_kedro_viz_build_draws_the_pipeline_with_layers(scratch_project):
    project = scratch_project()
    result = kedro(project, "viz", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    graph = json.loads((project / "build" / "api" / "main").read_text())
    names = {node["name"] for node in graph["nodes"]}
    assert {"build_corpus_manifest", "preprocess_audio", "extract_lpcc", "log_mel_spectrogram",
            "rejected_clips"} <= names
    assert graph["layers"][:4] == ["intermediate", "primary", "feature", "model_input"]
    assert set(graph["layers"][4:]) == {"models", "model_output", "reporting"}
    assert {"fusion.mfcc_cnn.fused_features", "modelling.mfcc_cnn.svm.trained_model",
            "model_summary"} <= names
    namespaces = set(graph["modular_pipelines"])
    assert {"fusion.mfcc_cnn", "modelling.mfcc_cnn.svm", "modelling.mfcc_cnn.dnn"} <= namespaces


def test_speaker_independent_split_refuses_clips_without_a_speaker(finished_run, project):
    # The folder corpus 'mine' has <label>/clip.wav names: its speakers are unknown.
    run = kedro(project, "run", "--pipelines", "modelling", "--params",
                "split.strategy=speaker_independent,split.speaker_folds=4")
    assert run.returncode != 0
    assert "4 clips have no speaker (corpora: mine)" in log_of(run)


def test_modelling_before_the_features_says_which_pipelines_to_run(scratch_project):
    run = kedro(scratch_project(), "run", "--pipelines", "modelling")
    assert run.returncode != 0
    log = log_of(run)
    assert "This run needs data that is not there yet" in log
    assert "clip_manifest (made by `kedro run --pipelines=data_processing`)" in log
    assert "(made by `kedro run --pipelines=fusion`)" in log


def with_lpcc_only_environment(project: Path, base_variants: dict) -> Path:
    """conf/lpcc_only: a variant conf/base lacks, `lpcc_only`, and every variant of conf/base
    (`base_variants`) and the DNN switched off with null."""
    (project / "conf/lpcc_only").mkdir()
    (project / "conf/lpcc_only/parameters.yml").write_text(yaml.safe_dump({
        "fusion_variants": dict.fromkeys(base_variants) | {"lpcc_only": ["lpcc"]},
        "classifiers": {"dnn": None}}))
    return project


SESSIONS_RUNNER = """
import json, sys
from pathlib import Path
from kedro.framework.project import pipelines
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

bootstrap_project(Path.cwd())
namespaces = []
for env in sys.argv[1:]:  # one session after another in this process; "" gives no env
    with KedroSession.create(project_path=Path.cwd(), env=env or None) as session:
        session.load_context()
        namespaces.append(sorted({node.namespace for node in pipelines["fusion"].nodes}))
print(json.dumps(namespaces))
"""


def fusion_namespaces_by_session(project: Path, *envs: str, kedro_env: str | None = None) -> list[list[str]]:
    env = {key: value for key, value in os.environ.items() if key != "KEDRO_ENV"}
    env["KEDRO_DISABLE_TELEMETRY"] = "1"
    if kedro_env:
        env["KEDRO_ENV"] = kedro_env
    run = subprocess.run([sys.executable, "-c", SESSIONS_RUNNER, *envs], cwd=project, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_pipelines_follow_the_environment_of_each_session(scratch_project, parameters):
    project = with_lpcc_only_environment(scratch_project(), parameters["fusion_variants"])
    local, lpcc_only, local_again = fusion_namespaces_by_session(project, "", "lpcc_only", "")
    assert "fusion.mfcc_lpcc_cnn" in local and "fusion.lpcc_only" not in local
    assert lpcc_only == ["fusion.lpcc_only"]
    assert local_again == local  # Kedro's registry, built once per process, is built again
    assert fusion_namespaces_by_session(project, "", kedro_env="lpcc_only") == [["fusion.lpcc_only"]]


def test_run_and_predict_with_env_build_that_environments_pipelines(scratch_project, parameters):
    project = with_lpcc_only_environment(scratch_project(), parameters["fusion_variants"])
    run = kedro(project, "run", "--env", "lpcc_only", "--params", TINY_DEMO,
                "--pipelines", "data_processing,feature_extraction,fusion,modelling")
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = project / "data/08_reporting/metrics"
    assert [path.relative_to(metrics).as_posix() for path in metrics.rglob("*.json")] == [
        "lpcc_only/svm.json"]

    clip = str(project / pd.read_csv(project / "data/03_primary/clip_manifest.csv")["path"].iloc[0])
    predicted = predict(project, "--env", "lpcc_only", "--model", "lpcc_only.svm", clip)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert "Model lpcc_only.svm; 1 file(s)." in predicted.stderr


PAPER_VARIANTS = {"ir", "mfcc_ir", "lpcc_ir", "mfcc_lpcc_ir", "mfcc", "lpcc", "mfcc_lpcc"}


def test_the_paper_environment_trains_exactly_the_reference_models(scratch_project):
    project = scratch_project()
    # The tiny corpus, a small random-weights CNN and short training, as nested parameters in a
    # `kedro run --config` file: `--params` cannot give a list of two sizes.
    fast = OmegaConf.merge(OmegaConf.from_dotlist(TINY_DEMO.split(",")), {
        "transfer_features": {"weights": "none", "batch_size": 8},
        "backbones": {"inception_resnet_v2": {"input_size": [75, 75]}},
        "classifiers": {"dnn": {"epochs": 10, "patience": 3}}})
    (project / "fast.yml").write_text(yaml.safe_dump({"run": {"params": OmegaConf.to_container(fast)}}))
    run = kedro(project, "run", "--env", "paper", "--config", "fast.yml")
    assert run.returncode == 0, run.stderr[-3000:]

    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    assert set(zip(summary["variant"], summary["classifier"], strict=True)) == {
        (variant, classifier) for variant in PAPER_VARIANTS for classifier in ("svm", "dnn")}
    metrics = project / "data/08_reporting/metrics"
    assert {path.name for path in metrics.iterdir()} == PAPER_VARIANTS
    fused = ClipArrayDataset(path=str(project / "data/05_model_input/fused_features/mfcc_lpcc_ir")).load()
    assert fused.values.shape == (96, 40 + 12 + 1536)  # unpooled: 1 x 1 x 1536 at 75 x 75
    assert [block["weight"] for block in fused.metadata["blocks"]] == [1.0, 1.0, 1.0]
    # Plain concatenation, every column at full width: no PCA, no search.
    model = ModelDataset(filepath=str(project / "data/06_models/mfcc_lpcc_ir/svm.pkl"),
                         arrays=str(project / "data/06_models/shared_arrays")).load()
    assert list(model.named_steps) == ["scale", "classify"] and not model.named_steps["scale"].balanced
    metrics = json.loads((project / "data/08_reporting/metrics/mfcc_lpcc_ir/svm.json").read_text())
    assert [(fold["candidates"], fold["chosen"]) for fold in metrics["model_selection"]] == [(1, {})]


def test_a_small_run_flags_clips_out_of_domain_and_predict_standardises_a_batch_as_one_domain(
        scratch_project, parameters):
    # One variant and one classifier (the others switched off): the domain description,
    # corpus_scores, the report and predict's --same-domain and in_domain, wired as a user runs them.
    variants = {variant: None for variant in parameters["fusion_variants"] if variant != "mfcc"}
    project = scratch_project({"fusion_variants": variants,
                               "classifiers": {"dnn": None, "svm": {"search": None}}})
    run = kedro(project, "run", "--params", TINY_DEMO)
    assert run.returncode == 0, run.stderr[-3000:]
    scores = pd.read_csv(project / "data/08_reporting/corpus_scores.csv")
    assert list(scores["corpus"]) == ["demo"] and 0 <= scores.loc[0, "out_of_domain"] <= 0.3
    assert 'id="corpora"' in (project / "data/08_reporting/report.html").read_text()
    demo = project / "data/01_raw/demo"
    batch = predict(project, "--model", "mfcc.svm", "--same-domain", "--format", "csv", str(demo))
    assert batch.returncode == 0, batch.stderr[-3000:]
    table = pd.read_csv(io.StringIO(batch.stdout))
    assert len(table) == 96 and table["in_domain"].mean() > 0.7
    assert re.search(r"\d+ of the 96 usable file\(s\) out of this model's domain", batch.stderr)

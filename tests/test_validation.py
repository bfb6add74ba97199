"""Every setting is checked before anything runs, and a bad one is named with what it may be."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emofusion.errors import ParameterError
from emofusion.validation import validate_parameters

PROJECT = Path(__file__).resolve().parents[1]


def changed(parameters: dict, path: str, value) -> dict:
    changed = copy.deepcopy(parameters)
    *parents, last = path.split(".")
    place = changed
    for key in parents:
        place = place[key]
    place[last] = value
    return changed


def test_the_project_settings_pass(parameters, paper_parameters):
    validate_parameters(parameters, PROJECT)
    validate_parameters(paper_parameters, PROJECT)


@pytest.mark.parametrize(("path", "value", "message"), [
    ("audio.crop", "middle", "audio.crop: Input should be 'start', 'centre' or 'end' (got 'middle')"),
    ("corpus_sources.ravdess.reader", "ravdes", "corpus_sources.ravdess.reader: Value error, unknown reader "
                                                "'ravdes'"),
    ("corpus_sources.crema_d.sample_fraction", 25, "corpus_sources.crema_d.sample_fraction: Input should be "
                                                   "less than or equal to 1 (got 25)"),
    ("corpus_sources.savee.folder", "x", "corpus_sources.savee.folder: Extra inputs are not permitted"),
    ("audio.long_clips", "loop", "audio.long_clips: Input should be 'crop' or 'windows'"),
    ("classifiers.dnn.batch_size", 0, "classifiers.dnn.batch_size: Input should be greater than 0 (got 0)"),
    ("classifiers.dnn.epochs", "many", "classifiers.dnn.epochs: Input should be a valid integer"),
    ("classifiers.svm.C", -1, "classifiers.svm.C: Input should be greater than 0"),
    ("block_weights.mfcc", -1, "block_weights.mfcc: Input should be greater than or equal to 0 (got -1)"),
    ("fusion_variants.mfcc", ["chroma"],
     "fusion variant 'mfcc' names unknown feature stream(s) ['chroma']; known streams (built in, `opensmile` "
     "entries and `feature_streams`)"),
    ("split.strategy", "speakers", "split.strategy: Input should be 'random', 'speaker_independent', "),
    ("split.test_size", 0.9, "split.test_size + split.validation_size: must leave clips to train on"),
    ("mfcc.statistics", ["mean", "mode"], "mfcc.statistics.1: Input should be 'mean', 'std'"),
    ("transfer_features.backbone", "alexnet", "alexnet"),
    ("execution.engine", "spark", "execution.engine: Input should be 'local' or 'dask' (got 'spark')"),
    ("execution.chunk_clips", 0, "execution.chunk_clips: Input should be greater than 0 (got 0)"),
    ("execution.worker_memory", "lots", "execution.worker_memory: String should match pattern"),
    ("execution", {"engine": "dask", "scheduler_address": "tcp://cluster:8786", "workers": 4},
     "execution: Value error, workers and worker_memory size a cluster started on this machine"),
    ("corpus_sources.demo.path", "data/01_raw/dmeo", "corpus_sources.demo.path: 'data/01_raw/dmeo' holds no "
                                                     "demo corpus"),
])
def test_each_bad_setting_is_named_with_what_it_may_be(parameters, path, value, message):
    with pytest.raises(ParameterError) as refused:
        validate_parameters(changed(parameters, path, value), PROJECT)
    assert message in str(refused.value)


def test_a_missing_setting_is_named_in_one_short_line(parameters):
    # As in a project whose conf/base was copied from an older version.
    del parameters["out_of_domain"]
    with pytest.raises(ParameterError) as refused:
        validate_parameters(parameters, PROJECT)
    line = next(line for line in str(refused.value).splitlines() if "out_of_domain" in line)
    assert line.strip().startswith("out_of_domain: not set") and "conf/base" in line
    assert len(line) < 200  # not the whole section it is missing from


def test_a_fine_tuning_entry_s_speaker_normalisation_is_named_with_its_values(parameters):
    parameters["fine_tuning"]["enabled"] = True
    validate_parameters(parameters, PROJECT)  # squeezenet_c2_spk says speaker
    with pytest.raises(ParameterError) as refused:
        validate_parameters(changed(parameters, "fine_tuning.models.squeezenet_c2_spk.speaker_normalisation",
                                    "corpus"), PROJECT)
    assert ("fine_tuning model 'squeezenet_c2_spk': speaker_normalisation: Input should be 'none' or "
            "'speaker' (got 'corpus')") in str(refused.value)


def test_an_invalid_speaker_pattern_is_refused_before_anything_runs(parameters):
    parameters["corpus_sources"]["mine"] = {"reader": "folder", "path": "nowhere",
                                            "speaker_pattern": "spk\\d+"}
    parameters["corpora"] = ["mine"]
    with pytest.raises(ParameterError, match=r"corpus_sources.mine.speaker_pattern: 'spk.d\+' has no named"):
        validate_parameters(parameters, PROJECT)


def test_a_demo_corpus_elsewhere_is_accepted_where_one_was_written(parameters, tmp_path):
    (tmp_path / "demo_corpus.json").write_text("{}")
    validate_parameters(changed(parameters, "corpus_sources.demo.path", str(tmp_path)), PROJECT)


def test_kedro_run_stops_on_bad_params_before_any_node_runs(scratch_project):
    project = scratch_project()
    run = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--params",
         "audio.crop=middle,classifiers.dnn.batch_size=0,block_weights.mfcc=-1"],
        cwd=project, env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"), capture_output=True, text=True,
        timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode != 0
    for named in ("audio.crop", "classifiers.dnn.batch_size", "block_weights.mfcc"):
        assert named in log
    assert not (project / "data").exists()  # not even the demo corpus was written
    assert "Traceback" not in log  # a user error reads as its message


def test_a_wrong_setting_is_its_message_alone_on_stderr_and_the_traceback_is_asked_for(scratch_project):
    project = scratch_project()
    environment = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1")
    runs = [subprocess.run([sys.executable, "-m", "kedro", "run", "--params", "audio.crop=middle", *verbose],
                           cwd=project, env=environment, capture_output=True, text=True, timeout=300)
            for verbose in ([], ["--verbose"])]
    assert [run.returncode for run in runs] == [1, 1]
    lines = runs[0].stderr.strip().splitlines()
    assert len(lines) <= 3, runs[0].stderr
    assert "audio.crop: Input should be 'start', 'centre' or 'end' (got 'middle')" in runs[0].stderr
    assert "Traceback" in runs[1].stderr


def test_kedro_viz_with_a_wrong_setting_stops_with_its_message(scratch_project):
    run = subprocess.run([sys.executable, "-m", "kedro", "viz", "run", "--no-browser", "--params",
                          "audio.crop=middle"], cwd=scratch_project(), capture_output=True, text=True,
                         env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"), timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].endswith("(got 'middle')")
    assert "Traceback" not in run.stderr


def test_kedro_run_of_a_pipeline_the_project_lacks_names_those_it_has(scratch_project, monkeypatch):
    from click.testing import CliRunner

    from emofusion.cli import kedro_run

    monkeypatch.chdir(scratch_project())
    for option in (["--pipelines", "data_processing,feature_extration"], ["--pipeline", "modeling"]):
        result = CliRunner().invoke(kedro_run(), option)
        assert result.exit_code == 1
        assert "No pipeline named" in result.output and "its pipelines: data_processing," in result.output
        assert "Traceback" not in result.output

"""Fine-tuning's pipeline: one namespace per entry, with outputs named as modelling's."""

import pytest

from emofusion.errors import FineTuningConfigError
from emofusion.learning.network_settings import model_entries
from emofusion.pipelines.fine_tuning.pipeline import create_pipeline
from emofusion.run_spec import run_spec


def test_each_entry_is_a_namespaced_pipeline_whose_outputs_are_modelling_s(parameters):
    parameters["fine_tuning"]["enabled"] = True
    pipeline = create_pipeline(run_spec(parameters))
    assert {node.namespace for node in pipeline.nodes} == {
        f"fine_tuning.{name}" for name in parameters["fine_tuning"]["models"]
    }
    assert "modelling.log_mel_spectrogram.squeezenet_c2.trained_model" in pipeline.all_outputs()
    assert "fine_tuning.squeezenet_c2.training_curves" in pipeline.all_outputs()
    late = "modelling.mfcc_lpcc_spectrogram_late.squeezenet_c2_mfcc_lpcc"
    assert f"{late}.classification_metrics" in pipeline.all_outputs()
    assert {"fusion.mfcc_lpcc.fused_features", "log_mel_spectrogram", "data_split"} <= pipeline.inputs()
    assert ("log_mel_spectrogram", "squeezenet_c1") in run_spec(parameters).every_model
    parameters["fine_tuning"]["models"]["squeezenet_c1"] = None  # switched off
    assert ("log_mel_spectrogram", "squeezenet_c1") not in run_spec(parameters).every_model
    parameters["fine_tuning"]["enabled"] = False  # the default: none at all
    assert not create_pipeline(run_spec(parameters)).nodes
    assert run_spec(parameters).every_model == run_spec(parameters | {"fine_tuning": None}).every_model


def test_an_entry_standardised_per_speaker_reads_its_own_spectrograms_under_names_of_its_own(parameters):
    parameters["fine_tuning"]["enabled"] = True
    models = parameters["fine_tuning"]["models"]
    assert models["squeezenet_c2_spk"] == models["squeezenet_c2"] | {"speaker_normalisation": "speaker"}
    nodes = {node.name: node for node in create_pipeline(run_spec(parameters)).nodes}
    assert nodes["fine_tuning.squeezenet_c2.fine_tune_and_predict"].inputs[0] == "log_mel_spectrogram"
    tuned = nodes["fine_tuning.squeezenet_c2_spk.fine_tune_and_predict"]
    assert tuned.inputs[0] == "log_mel_spectrogram_spk"
    assert tuned.outputs[:3] == [f"modelling.log_mel_spectrogram_spk.squeezenet_c2_spk.{output}"
                                 for output in ("trained_model", "model_card", "test_predictions")]
    late = nodes["fine_tuning.squeezenet_c2_spk_compare_egemaps_mfcc_lpcc_spk.late_fuse_and_predict"]
    assert late.inputs[:4] == ["fusion.compare_egemaps_mfcc_lpcc_spk.fused_features", "data_split",
                               "data_split_settings",
                               "modelling.log_mel_spectrogram_spk.squeezenet_c2_spk.trained_model"]
    assert late.outputs[0] == ("modelling.compare_egemaps_mfcc_lpcc_spk_spectrogram_spk_late."
                               "squeezenet_c2_spk_compare_egemaps_mfcc_lpcc_spk.trained_model")
    assert {("log_mel_spectrogram", "squeezenet_c2"), ("log_mel_spectrogram_spk", "squeezenet_c2_spk"),
            ("mfcc_lpcc_spectrogram_late", "squeezenet_c2_mfcc_lpcc")
            } <= set(run_spec(parameters).every_model)


def test_a_bad_speaker_normalisation_is_refused_with_the_parameter_and_its_values(parameters):
    parameters["fine_tuning"]["enabled"] = True
    parameters["fine_tuning"]["models"]["lstm"]["speaker_normalisation"] = "corpus"
    with pytest.raises(FineTuningConfigError, match="fine_tuning model 'lstm': speaker_normalisation: "
                                                    "Input should be 'none' or 'speaker' \\(got 'corpus'\\)"):
        model_entries(parameters)

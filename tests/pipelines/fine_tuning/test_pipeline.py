"""Fine-tuning's pipeline: one namespace per entry, with outputs named as modelling's."""

from emofusion.instances import every_model
from emofusion.pipelines.fine_tuning.pipeline import create_pipeline


def test_each_entry_is_a_namespaced_pipeline_whose_outputs_are_modelling_s(parameters):
    parameters["fine_tuning"]["enabled"] = True
    pipeline = create_pipeline(parameters=parameters)
    assert {node.namespace for node in pipeline.nodes} == {
        f"fine_tuning.{name}" for name in parameters["fine_tuning"]["models"]
    }
    assert "modelling.log_mel_spectrogram.squeezenet_c2.trained_model" in pipeline.all_outputs()
    assert "fine_tuning.squeezenet_c2.training_curves" in pipeline.all_outputs()
    late = "modelling.mfcc_lpcc_spectrogram_late.squeezenet_c2_mfcc_lpcc"
    assert f"{late}.classification_metrics" in pipeline.all_outputs()
    assert {"fusion.mfcc_lpcc.fused_features", "log_mel_spectrogram", "data_split"} <= pipeline.inputs()
    assert ("log_mel_spectrogram", "squeezenet_c1") in every_model(parameters)
    parameters["fine_tuning"]["models"]["squeezenet_c1"] = None  # switched off
    assert ("log_mel_spectrogram", "squeezenet_c1") not in every_model(parameters)
    parameters["fine_tuning"]["enabled"] = False  # the default: none at all
    assert not create_pipeline(parameters=parameters).nodes
    assert every_model(parameters) == every_model(parameters | {"fine_tuning": None})

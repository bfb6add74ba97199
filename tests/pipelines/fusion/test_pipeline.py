"""fusion's pipeline: one namespace per variant of the parameters."""

from emofusion.instances import validated_fusion_variants
from emofusion.pipelines.fusion import create_pipeline
from emofusion.run_spec import run_spec


def test_one_namespaced_pipeline_per_variant_with_its_streams_as_inputs(parameters):
    assert set(parameters["fusion_variants"]) >= {"cnn", "mfcc_cnn", "lpcc_cnn", "mfcc_lpcc_cnn"}
    fusion = create_pipeline(run_spec(parameters))
    for variant, layout in validated_fusion_variants(parameters["fusion_variants"],
                                                     parameters["block_weights"]).items():
        (node,) = fusion.only_nodes_with_namespaces([f"fusion.{variant}"]).nodes
        assert node.name == f"fusion.{variant}.fuse_feature_streams"
        assert node.inputs == ["clip_manifest", f"params:fusion_variants.{variant}", "params:block_weights",
                               "params:block_scaling", "params:speaker_statistics", "parameters",
                               *layout["streams"]]
        assert node.outputs == [f"fusion.{variant}.fused_features"]

    extra = dict(parameters, fusion_variants={"mfcc_only": ["mfcc"]})
    names = [n.name for n in create_pipeline(run_spec(extra)).nodes]
    assert names == ["fusion.mfcc_only.fuse_feature_streams"]


def test_spectrograms_standardised_per_speaker_are_made_only_when_a_network_reads_them(parameters):
    def makers(parameters: dict) -> list[str]:
        return [node.name for node in create_pipeline(run_spec(parameters)).nodes
                if node.outputs == ["log_mel_spectrogram_spk"]]

    assert makers(parameters) == []  # fine-tuning is off by default
    parameters["fine_tuning"]["enabled"] = True
    assert makers(parameters) == ["standardise_spectrograms_by_speaker"]
    (node,) = create_pipeline(run_spec(parameters)).only_nodes_with_outputs("log_mel_spectrogram_spk").nodes
    assert node.inputs == ["clip_manifest", "log_mel_spectrogram", "params:speaker_statistics", "parameters"]
    for name in ("squeezenet_c2_spk", "squeezenet_c2_spk_compare_egemaps_mfcc_lpcc_spk"):
        parameters["fine_tuning"]["models"][name] = None
    assert makers(parameters) == []

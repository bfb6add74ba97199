from kedro.pipeline import Pipeline, node, pipeline

from emofusion.fusion_layout import SPEAKER_NORMALISED_SPECTROGRAMS
from emofusion.run_spec import RunSpec

from .nodes import fuse_feature_streams, standardise_spectrograms_by_speaker


def fusion_template(streams: list[str]) -> Pipeline:
    return Pipeline([node(
        fuse_feature_streams,
        inputs=["clip_manifest", "params:fusion_variant", "params:block_weights", "params:block_scaling",
                "params:speaker_statistics", "parameters", *streams],
        outputs="fused_features", name="fuse_feature_streams")])


def spectrograms_by_speaker(spec: RunSpec) -> Pipeline:
    """The spectrograms standardised per speaker, when an enabled fine-tuning entry reads them
    (`speaker_normalisation: speaker`): as openSMILE's streams, nothing is made that no model uses."""
    if SPEAKER_NORMALISED_SPECTROGRAMS not in spec.fine_tuned_inputs:
        return Pipeline([])
    return Pipeline([node(
        standardise_spectrograms_by_speaker,
        inputs=["clip_manifest", "log_mel_spectrogram", "params:speaker_statistics", "parameters"],
        outputs=SPEAKER_NORMALISED_SPECTROGRAMS, name="standardise_spectrograms_by_speaker")])


def create_pipeline(spec: RunSpec) -> Pipeline:
    """`fusion.<variant>` for every entry of `fusion_variants` in parameters_fusion.yml, and the
    spectrograms standardised per speaker when a fine-tuned network reads them."""
    return sum((pipeline(fusion_template(layout["streams"]), namespace=f"fusion.{variant}",
                         inputs={"clip_manifest", *layout["streams"]},
                         parameters={"params:fusion_variant": f"params:fusion_variants.{variant}",
                                     "params:block_weights": "params:block_weights",
                                     "params:block_scaling": "params:block_scaling",
                                     "params:speaker_statistics": "params:speaker_statistics"})
                for variant, layout in spec.variants.items()), spectrograms_by_speaker(spec))

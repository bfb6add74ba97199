from kedro.pipeline import Pipeline, node, pipeline

from emofusion.instances import pipeline_parameters, validated_fusion_variants

from .nodes import fuse_feature_streams


def fusion_template(streams: list[str]) -> Pipeline:
    return Pipeline([node(
        fuse_feature_streams,
        inputs=["clip_manifest", "params:fusion_variant", "params:block_weights", "params:block_scaling",
                "params:speaker_statistics", "parameters", *streams],
        outputs="fused_features", name="fuse_feature_streams")])


def create_pipeline(**kwargs) -> Pipeline:
    """`fusion.<variant>` for every entry of `fusion_variants` in parameters_fusion.yml (or in the
    `parameters` given, as tests do)."""
    parameters = kwargs.get("parameters") or pipeline_parameters()
    variants = validated_fusion_variants(parameters["fusion_variants"], parameters["block_weights"])
    return sum((pipeline(fusion_template(layout["streams"]), namespace=f"fusion.{variant}",
                         inputs={"clip_manifest", *layout["streams"]},
                         parameters={"params:fusion_variant": f"params:fusion_variants.{variant}",
                                     "params:block_weights": "params:block_weights",
                                     "params:block_scaling": "params:block_scaling",
                                     "params:speaker_statistics": "params:speaker_statistics"})
                for variant, layout in variants.items()), Pipeline([]))

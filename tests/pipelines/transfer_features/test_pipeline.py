"""transfer_features's pipeline: the CNN runs only for a variant that reads its stream."""

from emofusion.pipelines.transfer_features import create_pipeline
from emofusion.run_spec import run_spec


def test_the_cnn_step_is_made_only_when_a_variant_reads_its_stream(parameters):
    (node,) = create_pipeline(run_spec(parameters)).nodes
    assert node.outputs == ["transfer_features"]
    classical = dict(parameters, fusion_variants={"mfcc_lpcc": ["mfcc", "lpcc"]})
    assert create_pipeline(run_spec(classical)).nodes == []

from kedro.pipeline import Pipeline, node

from emofusion.run_spec import RunSpec

from .nodes import extract_transfer_features


def create_pipeline(spec: RunSpec) -> Pipeline:
    return Pipeline([
        node(extract_transfer_features,
             inputs=["log_mel_spectrogram", "stored_transfer_features", "params:transfer_features",
                     "params:backbones", "params:random_seed"],
             outputs="transfer_features", name="extract_transfer_features"),
    ])

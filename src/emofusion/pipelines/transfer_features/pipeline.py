from kedro.pipeline import Pipeline, node

from emofusion.run_spec import RunSpec

from .nodes import extract_transfer_features


def create_pipeline(spec: RunSpec) -> Pipeline:
    """The CNN step, when a fusion variant reads its stream: as the other streams, nothing is made
    that no model uses (a run of classical variants never pays for the CNN)."""
    if "transfer_features" not in spec.used_streams:
        return Pipeline([])
    return Pipeline([
        node(extract_transfer_features,
             inputs=["log_mel_spectrogram", "stored_transfer_features", "params:transfer_features",
                     "params:backbones", "params:random_seed"],
             outputs="transfer_features", name="extract_transfer_features"),
    ])

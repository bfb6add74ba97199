from kedro.pipeline import Pipeline, node

from emofusion.engine import PER_CLIP_TAG
from emofusion.run_spec import RunSpec

from .nodes import extract_log_mel_spectrogram


def create_pipeline(spec: RunSpec) -> Pipeline:
    """A node per per-clip stream this pipeline makes (`registry.feature_streams`: MFCC, LPCC, each
    openSMILE set, a project's own) that a fusion variant uses: a wide set such as ComParE costs
    nothing until a variant names it. And the log-mel spectrograms, which the CNN and the
    fine-tuned networks read."""
    streams = [spec.streams[name] for name in spec.used_streams]
    return Pipeline([
        *(node(stream.extract(), inputs=["preprocessed_audio", f"params:{stream.settings}", "params:n_jobs"],
               outputs=stream.name, name=f"extract_{stream.name}", tags=PER_CLIP_TAG)
          for stream in streams if stream.pipeline == "feature_extraction"),
        node(extract_log_mel_spectrogram,
             inputs=["preprocessed_audio", "params:log_mel_spectrogram", "params:n_jobs"],
             outputs="log_mel_spectrogram", name="extract_log_mel_spectrogram", tags=PER_CLIP_TAG),
    ])

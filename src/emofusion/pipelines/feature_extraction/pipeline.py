from kedro.pipeline import Pipeline, node

from .nodes import extract_log_mel_spectrogram, extract_lpcc, extract_mfcc


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(extract_mfcc, inputs=["preprocessed_audio", "params:mfcc", "params:n_jobs"],
             outputs="mfcc", name="extract_mfcc"),
        node(extract_lpcc, inputs=["preprocessed_audio", "params:lpcc", "params:n_jobs"],
             outputs="lpcc", name="extract_lpcc"),
        node(extract_log_mel_spectrogram,
             inputs=["preprocessed_audio", "params:log_mel_spectrogram", "params:n_jobs"],
             outputs="log_mel_spectrogram", name="extract_log_mel_spectrogram"),
    ])

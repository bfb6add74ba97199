from functools import partial

from kedro.pipeline import Pipeline, node

from emofusion.instances import pipeline_parameters, validated_fusion_variants

from .nodes import (
    extract_log_mel_spectrogram,
    extract_lpcc,
    extract_mfcc,
    extract_opensmile_functionals,
)


def opensmile_streams(parameters: dict) -> list[str]:
    """The entries of `opensmile` that a fusion variant uses: only those are computed, so a wide
    set such as ComParE costs nothing until a variant names it."""
    used = {stream for layout in validated_fusion_variants(parameters["fusion_variants"],
                                                           parameters["block_weights"]).values()
            for stream in layout["streams"]}
    return [stream for stream, settings in (parameters.get("opensmile") or {}).items()
            if settings is not None and stream in used]


def create_pipeline(**kwargs) -> Pipeline:
    """MFCC, LPCC and log-mel spectrograms, and every openSMILE stream a fusion variant uses (from
    the run's parameters, or the `parameters` given, as tests do)."""
    parameters = kwargs.get("parameters") or pipeline_parameters()
    return Pipeline([
        node(extract_mfcc, inputs=["preprocessed_audio", "params:mfcc", "params:n_jobs"],
             outputs="mfcc", name="extract_mfcc"),
        node(extract_lpcc, inputs=["preprocessed_audio", "params:lpcc", "params:n_jobs"],
             outputs="lpcc", name="extract_lpcc"),
        *(node(partial(extract_opensmile_functionals, stream=stream),
               inputs=["preprocessed_audio", f"params:opensmile.{stream}", "params:n_jobs"],
               outputs=stream, name=f"extract_{stream}")
          for stream in opensmile_streams(parameters)),
        node(extract_log_mel_spectrogram,
             inputs=["preprocessed_audio", "params:log_mel_spectrogram", "params:n_jobs"],
             outputs="log_mel_spectrogram", name="extract_log_mel_spectrogram"),
    ])

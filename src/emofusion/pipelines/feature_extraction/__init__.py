"""Preprocessed audio to MFCC, LPCC and log-mel spectrogram features."""

from typing import Any

__all__ = ["create_pipeline"]


def __getattr__(name: str) -> Any:
    if name == "create_pipeline":
        # The wiring, imported when it is asked for rather than with the nodes: the per-clip workers
        # import the nodes alone, without Kedro's settings and the project's configuration (a third
        # of a second of each worker server's start-up).
        from .pipeline import create_pipeline

        return create_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

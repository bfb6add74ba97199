"""modelling: every classifier on every fusion variant, as namespaced pipelines, on one shared split."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

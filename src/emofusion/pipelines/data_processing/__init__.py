"""Corpora to labelled, preprocessed fixed-length audio."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

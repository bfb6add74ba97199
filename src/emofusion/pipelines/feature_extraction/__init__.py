"""Preprocessed audio to MFCC, LPCC and log-mel spectrogram features."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

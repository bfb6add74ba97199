"""reporting: confusion matrices, score comparisons and one HTML report over every model."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

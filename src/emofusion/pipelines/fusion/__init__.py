"""fusion: feature streams side by side, one namespaced instance per fusion variant."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]

"""Custom Kedro datasets."""

from .clip_array_dataset import ClipArrayDataset

__all__ = ["ClipArrayDataset"]

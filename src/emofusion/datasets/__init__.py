"""Custom Kedro datasets."""

from .clip_array_dataset import ClipArrayDataset
from .finished_folds_dataset import FinishedFoldsDataset

__all__ = ["ClipArrayDataset", "FinishedFoldsDataset"]

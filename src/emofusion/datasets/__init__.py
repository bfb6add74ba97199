"""Custom Kedro datasets."""

from .clip_array_dataset import ClipArrayDataset
from .finished_folds_dataset import FinishedFoldsDataset
from .model_dataset import ModelDataset

__all__ = ["ClipArrayDataset", "FinishedFoldsDataset", "ModelDataset"]

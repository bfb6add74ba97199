"""Custom Kedro datasets."""

from .clip_array_dataset import ClipArrayDataset
from .finished_folds_dataset import FinishedFoldsDataset
from .model_dataset import ModelDataset
from .row_parts import ClipTableDataset, JoinedPartsMemoryDataset

__all__ = ["ClipArrayDataset", "ClipTableDataset", "FinishedFoldsDataset", "JoinedPartsMemoryDataset",
           "ModelDataset"]

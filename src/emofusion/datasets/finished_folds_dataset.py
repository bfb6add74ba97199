"""Kedro dataset that hands a model's node the store of its finished folds (emofusion.finished_folds).
Loading it reads nothing yet: the node asks for each fold as it comes to it, and stores each as it
finishes, which a dataset saved once at the node's end could not do."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset, DatasetError

from emofusion.datasets.local_paths import local_paths
from emofusion.finished_folds import FinishedFolds


class FinishedFoldsDataset(AbstractDataset[None, FinishedFolds]):
    """Example catalog entry::

        "modelling.{variant}.{classifier}.finished_folds":
          type: emofusion.datasets.FinishedFoldsDataset
          path: data/06_models/{variant}/{classifier}_folds
          arrays: data/06_models/shared_arrays   # large arrays stored once (emofusion.shared_arrays)
    """

    def __init__(self, *, path: str, arrays: str, metadata: dict[str, Any] | None = None) -> None:
        self._path, self._arrays = local_paths("FinishedFoldsDataset", path, arrays)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "arrays": str(self._arrays)}

    def _exists(self) -> bool:
        return True  # an empty store is a store: the first run finds no folds to reuse

    def load(self) -> FinishedFolds:
        model = self._path.name.removesuffix("_folds")
        return FinishedFolds(self._path, model=f"{self._path.parent.name}.{model}", arrays=self._arrays)

    def save(self, data: None) -> None:
        raise DatasetError("FinishedFoldsDataset is written fold by fold through the FinishedFolds it loads")

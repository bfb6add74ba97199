"""Kedro dataset of a trained model: a pickle whose large arrays are stored once, by content, in a
folder shared by the run's model files (emofusion.shared_arrays), so that the PCA of a stream that
several variants and both classifiers fit alike is on disk once, not once per model."""

from __future__ import annotations

from typing import Any

from kedro.io.core import AbstractDataset

from emofusion import shared_arrays
from emofusion.datasets.local_paths import local_paths


class ModelDataset(AbstractDataset[Any, Any]):
    """Example catalog entry::

        "modelling.{variant}.{classifier}.trained_model":
          type: emofusion.datasets.ModelDataset
          filepath: data/06_models/{variant}/{classifier}.pkl
          arrays: data/06_models/shared_arrays
    """

    def __init__(self, *, filepath: str, arrays: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath, self._arrays = local_paths("ModelDataset", filepath, arrays)
        self.metadata = metadata

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "arrays": str(self._arrays)}

    def _exists(self) -> bool:
        return self._filepath.is_file()

    def load(self) -> Any:
        return shared_arrays.load(self._filepath, self._arrays)

    def save(self, data: Any) -> None:
        shared_arrays.dump(data, self._filepath, self._arrays)

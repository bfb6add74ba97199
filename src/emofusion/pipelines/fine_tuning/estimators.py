"""Fine-tuned networks and their late fusion as scikit-learn style classifiers, so that a trained
model is one pickle with `classes_`, `predict` and `predict_proba`, as modelling's are.

TensorFlow never runs in this process: networks train and predict in modelling's training process
(`run_in_training_process`); spectrograms travel to it as .npy files."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from emofusion.learning.training_process import early_stopping_rows, run_in_training_process, save_rows

logger = logging.getLogger(__name__)


def _in_networks(function: str, *args: Any) -> Any:
    """Call `networks.<function>` in the training process: the module (and TensorFlow) is
    imported there, not here."""
    from . import networks  # TensorFlow: only in the training process

    return getattr(networks, function)(*args)


class FineTunedNetwork(ClassifierMixin, BaseEstimator):
    """A network fine-tuned on spectrograms (kind cnn: images; lstm: frame sequences), trained on
    the training clips given, stopping early on a share of them held out (whole speakers given
    their `groups`), so that no validation or test clip of the split chooses its epoch. `settings`
    is a checked entry (`config.network_settings`). Fitted: `classes_`, the architecture and
    weights, `history_`."""

    refit_on_validation = False  # minutes per fold: trained once, on the training clips

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = settings

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> FineTunedNetwork:
        self.classes_ = np.unique(y)
        fitted_rows, stopping_rows = early_stopping_rows(
            np.asarray(y), groups, self.settings["early_stopping_fraction"], self.settings["random_seed"]
        )
        code = np.searchsorted(self.classes_, y)
        with tempfile.TemporaryDirectory(prefix="emofusion-fine-tuning-") as folder:
            train_path, stopping_path = Path(folder, "train.npy"), Path(folder, "stopping.npy")
            save_rows(train_path, X, fitted_rows)
            save_rows(stopping_path, X, stopping_rows)
            trained = run_in_training_process(
                _in_networks,
                "train_network",
                dict(self.settings),
                len(self.classes_),
                train_path,
                code[fitted_rows],
                stopping_path,
                code[stopping_rows],
            )
        self.architecture_, self.weights_ = trained["architecture"], trained["weights"]
        self.history_, self.ran_with_ = trained["history"], trained["ran_with"]
        return self

    def best_epoch(self) -> int:
        """The epoch whose weights were kept: the lowest held-out loss of the last stage."""
        sizes, losses = self.history_["image_size"], self.history_["val_loss"]
        last = [i for i, size in enumerate(sizes) if size == sizes[-1]]
        return min(last, key=lambda i: losses[i]) + 1

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        with tempfile.TemporaryDirectory(prefix="emofusion-fine-tuning-") as folder:
            np.save(path := Path(folder, "clips.npy"), np.asarray(X))
            return run_in_training_process(
                _in_networks, "predict_network", dict(self.settings), self.architecture_, self.weights_, path
            )

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class InputLateFusion(ClassifierMixin, BaseEstimator):
    """Class probabilities of fitted models that read different inputs (a fusion variant's
    features, the spectrograms), averaged with `weights`. `X` maps each input's dataset name to its
    rows, the clips in the same order."""

    def __init__(self, models: Mapping[str, Any] | None = None, weights: Sequence[float] = ()) -> None:
        self.models = models
        self.weights = weights

    @property
    def classes_(self) -> np.ndarray:
        return next(iter(self.models.values())).classes_

    def predict_proba(self, X: Mapping[str, np.ndarray]) -> np.ndarray:
        return combined_probabilities(
            [self.models[name].predict_proba(X[name]) for name in self.models], self.weights
        )

    def predict(self, X: Mapping[str, np.ndarray]) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def combined_probabilities(probabilities: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * p for w, p in zip(weights, probabilities, strict=True)) / float(np.sum(weights))

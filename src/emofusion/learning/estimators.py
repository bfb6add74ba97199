"""Classifiers with the scikit-learn interface: a kernel SVM with its own validated kernel, late
fusion of per-group models' probabilities, and a dense network trained in the training process."""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from emofusion.errors import ClassifierConfigError
from emofusion.learning.kernel_map import fit_kernel_map, linear_one_vs_one, mapped
from emofusion.learning.training_process import (
    DNN_FOLDER_PREFIX,
    early_stopping_rows,
    remove_stranded_folders,
    run_in_training_process,
    save_rows,
)
from emofusion.quiet_tensorflow import import_tensorflow

logger = logging.getLogger(__name__)

FRESH_PROCESS_WEIGHTS = 10_000_000  # first-layer weights from which a network trains in a process of its own
# The dense network's Keras dtype policies.
DENSE_NETWORK_PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
# The SVM's exact kernel up to this many training clips (its n x n matrix: 3.2 GB in float64 at
# 20,000), a Nyström map of this many columns above; both chosen in docs/speed.md.
EXACT_KERNEL_MAX_CLIPS = 20_000
APPROXIMATE_COMPONENTS = 2_000
# Rows narrower than this go to libsvm as they are: it evaluates the kernel from them in memory
# linear in the clips, 1.5 to 2.5 times the time of the BLAS-made n x n matrix at 192 columns and
# 5,000 to 14,000 clips, far slower on wider rows (docs/speed.md).
KERNEL_MATRIX_MIN_COLUMNS = 512
HeldOutScores = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (train rows, held-out rows) -> scores


class KernelSVC(ClassifierMixin, BaseEstimator):
    """One-vs-one SVC (libsvm) on a kernel matrix computed with BLAS matrix products.

    Given 98,304-wide rows, libsvm would evaluate every kernel value with its own scalar loop; one
    matrix product makes the whole training kernel in about a second. Only the support vectors are
    kept for prediction. With `probability`, class probabilities come from a multinomial logistic
    calibration of the SVM's scores, fitted on cross-validated scores of the training clips
    (Platt's idea; scikit-learn deprecates SVC's own `probability`).

    Rows narrower than `kernel_matrix_min_columns` are given to libsvm as they are (its own
    kernel evaluations take somewhat longer there, but need no n x n matrix). Otherwise the exact
    kernel is an n x n matrix: above `exact_kernel_max_clips` training clips, the rows are mapped
    by Nyström's approximation of the same kernel (`approximate_components` columns) and
    classified by linear one-vs-one SVMs, so time and memory grow linearly with the clips; the
    scores, their calibration and the answers are made alike (the linear kernel needs no map).
    `kernel_path_` says which was used: exact (the kernel matrix), exact_libsvm (libsvm's own
    evaluations), nystroem or linear."""

    def __init__(self, kernel: str = "rbf", C: float = 1.0, gamma: float | str = "scale",
                 probability: bool = True, exact_kernel_max_clips: int = EXACT_KERNEL_MAX_CLIPS,
                 approximate_components: int = APPROXIMATE_COMPONENTS,
                 kernel_matrix_min_columns: int = KERNEL_MATRIX_MIN_COLUMNS,
                 random_state: int | None = None) -> None:
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.probability = probability
        self.exact_kernel_max_clips = exact_kernel_max_clips
        self.approximate_components = approximate_components
        self.kernel_matrix_min_columns = kernel_matrix_min_columns
        self.random_state = random_state

    def _kernel(self, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
        if self.kernel == "linear":
            return linear_kernel(X, Y)
        return rbf_kernel(X, Y, gamma=self.gamma_)

    def fit(self, X: np.ndarray, y: np.ndarray) -> KernelSVC:
        if self.kernel not in ("rbf", "linear"):
            raise ClassifierConfigError(f"svm kernel '{self.kernel}' is not one of: rbf, linear")
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        if len(np.unique(y)) < 2:
            raise ValueError("the svm needs clips of at least 2 emotions, got 1 class")
        self.gamma_ = 1.0 / (X.shape[1] * float(X.var())) if self.gamma == "scale" else float(self.gamma)
        if len(X) > self.exact_kernel_max_clips:
            scores_of = self._fit_approximate(X, y)
        elif X.shape[1] < self.kernel_matrix_min_columns:
            scores_of = self._fit_on_rows(X, y)
        else:
            scores_of = self._fit_exact(X, y)
        self.classes_ = self.svc_.classes_
        if self.probability:
            scores = self._cross_validated_scores(y, scores_of)
            self.calibrator_ = LogisticRegression(max_iter=1000).fit(scores, y)
        return self

    def _fit_exact(self, X: np.ndarray, y: np.ndarray) -> HeldOutScores:
        """libsvm on the whole kernel matrix; returns how held-out rows are scored by an SVM fitted
        on the others, cut from that one matrix."""
        kernel = self._kernel(X, X)
        self.kernel_path_ = "exact"
        self.svc_ = SVC(kernel="precomputed", C=self.C).fit(kernel, y)
        self.support_vectors_ = X[self.svc_.support_]
        self.n_training_rows_ = len(X)

        def scores_of(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
            svc = SVC(kernel="precomputed", C=self.C).fit(kernel[np.ix_(train, train)], y[train])
            return svc.decision_function(kernel[np.ix_(held_out, train)])
        return scores_of

    def _fit_on_rows(self, X: np.ndarray, y: np.ndarray) -> HeldOutScores:
        """libsvm with its own kernel evaluations (in its cache of 200 MB), the rows as they are."""
        self.kernel_path_ = "exact_libsvm"
        rows = X.astype(np.float64)
        self.svc_ = self._svc_on_rows().fit(rows, y)

        def scores_of(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
            return self._svc_on_rows().fit(rows[train], y[train]).decision_function(rows[held_out])
        return scores_of

    def _svc_on_rows(self) -> SVC:
        return SVC(kernel=self.kernel, C=self.C, gamma=self.gamma_)

    def _fit_approximate(self, X: np.ndarray, y: np.ndarray) -> HeldOutScores:
        """Linear one-vs-one SVMs on the Nyström map of the RBF kernel (the rows themselves for the
        linear kernel), made once; held-out rows are scored by SVMs fitted on the others' images
        (the map's landmark rows are drawn from all training clips, as `gamma_` is computed from
        all of them)."""
        self.kernel_path_ = "nystroem" if self.kernel == "rbf" else "linear"
        self.kernel_map_ = (fit_kernel_map(X, self.gamma_, self.approximate_components, self.random_state)
                            if self.kernel == "rbf" else None)
        features = mapped(self.kernel_map_, X)
        self.svc_ = linear_one_vs_one(self.C, self.random_state).fit(features, y)

        def scores_of(train: np.ndarray, held_out: np.ndarray) -> np.ndarray:
            svc = linear_one_vs_one(self.C, self.random_state).fit(features[train], y[train])
            return svc.decision_function(features[held_out])
        return scores_of

    def _cross_validated_scores(self, y: np.ndarray, scores_of: HeldOutScores) -> np.ndarray:
        """Scores of each training clip from an SVM that did not see it, for the probability
        calibration."""
        folds = min(5, int(np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            raise ValueError("svm probabilities need at least 2 training clips of every emotion")
        scores = np.zeros((len(y), len(self.classes_) if len(self.classes_) > 2 else 1))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        for train, held_out in splitter.split(y, y):
            scores[held_out] = scores_of(train, held_out).reshape(len(held_out), -1)
        return scores

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        """What the fitted SVMs score: the rows themselves, their Nyström images, or their kernel
        with the training rows. libsvm indexes a precomputed kernel by training row; rows that are
        not support vectors have no weight, so their columns can stay zero."""
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        path = getattr(self, "kernel_path_", "exact")  # models fitted before it had no path
        if path == "exact_libsvm":
            return X.astype(np.float64)
        if path != "exact":
            return mapped(self.kernel_map_, X)
        kernel = np.zeros((len(X), self.n_training_rows_))
        kernel[:, self.svc_.support_] = self._kernel(X, self.support_vectors_)
        return kernel

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Per-class scores aggregated from the one-vs-one votes (scikit-learn's 'ovr' shape)."""
        inputs = self._inputs(X)
        return self.svc_.decision_function(inputs)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class when the SVM gives probabilities, so that scored predictions,
        late fusion and `emofusion predict` answer alike; else the one-vs-one vote."""
        if self.probability:
            most_probable = self.predict_proba(X).argmax(axis=1)
            return self.classes_[most_probable]
        inputs = self._inputs(X)
        return self.svc_.predict(inputs)

    @available_if(lambda self: self.probability)
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        scores = self.decision_function(X)
        return self.calibrator_.predict_proba(scores.reshape(len(scores), -1))


class LateFusionClassifier(ClassifierMixin, BaseEstimator):
    """Late fusion: one model per group of streams, each on its own columns, and their class
    probabilities averaged with `weights` (chosen on validation clips by `select_and_fit`).

    `columns[i]` lists the (start, stop) column ranges of group i in the fused matrix; `models[i]`
    is the unfitted model for those columns. The weights act only at prediction, so candidates
    for them are scored on one fit."""

    predict_time_params = ("weights",)

    def __init__(self, columns: Sequence[Sequence[tuple[int, int]]] = (), models: Sequence[Any] = (),
                 weights: Sequence[float] | None = None) -> None:
        self.columns = columns
        self.models = models
        self.weights = weights

    @property
    def refit_on_validation(self) -> bool:
        return all(refits_on_validation(model) for model in self.models)

    def _group(self, X: np.ndarray, group: int) -> np.ndarray:
        return np.hstack([np.asarray(X[:, start:stop]) for start, stop in self.columns[group]])

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> LateFusionClassifier:
        self.models_ = [fit_model(clone(model), self._group(X, group), y, groups)
                        for group, model in enumerate(self.models)]
        self.classes_ = self.models_[0].classes_
        if not hasattr(self.models_[0], "predict_proba"):
            raise ClassifierConfigError("late fusion combines class probabilities: its classifier must "
                                        "give them (svm: probability: true)")
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        weights = np.ones(len(self.models_)) if self.weights is None else np.asarray(self.weights, float)
        combined = sum(weight * model.predict_proba(self._group(X, group))
                       for group, (model, weight) in enumerate(zip(self.models_, weights, strict=True))
                       if weight > 0)
        return combined / weights.sum()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class DenseNetworkClassifier(ClassifierMixin, BaseEstimator):
    """The reference head as a classifier: dense layers (ReLU, optional dropout), softmax, Adam,
    early stopping on clips held out of the training clips it is given (`early_stopping_fraction`,
    as scikit-learn's `validation_fraction`; whole speakers when `fit` gets their `groups`), so
    that its stopping epoch never depends on a validation or test clip of the split.

    Networks train in a separate process (`run_in_training_process`), so this one never loads
    TensorFlow. Small networks share one such process; a network of tens of millions of weights
    (98,304-wide inputs) gets a fresh one, since TensorFlow keeps about half a gigabyte after such
    a fit that only the end of the process returns. The fitted classifier keeps the weights, and
    the architecture as Keras JSON (`keras.models.model_from_json`), and predicts without
    TensorFlow."""

    refit_on_validation = False  # a second training per fold would double the networks' time

    def __init__(self, layers: Sequence[Mapping[str, Any]] = ({"units": 512, "dropout": 0.5}, {"units": 256}),
                 learning_rate: float = 1e-3, epochs: int = 100, batch_size: int = 32,
                 patience: int = 10, early_stopping_fraction: float = 0.15, precision: str = "float32",
                 random_state: int | None = None) -> None:
        self.layers = layers
        self.precision = precision
        self.learning_rate = learning_rate
        self.epochs = epochs
        self.batch_size = batch_size
        self.patience = patience
        self.early_stopping_fraction = early_stopping_fraction
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> DenseNetworkClassifier:
        if self.precision not in DENSE_NETWORK_PRECISIONS:
            raise ClassifierConfigError(
                f"dnn precision '{self.precision}' is not one of: {', '.join(DENSE_NETWORK_PRECISIONS)}")
        X, y = validate_data(self, X, y, ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        fitted_rows, stopping_rows = early_stopping_rows(y, groups, self.early_stopping_fraction,
                                                         self.random_state)
        code = np.searchsorted(self.classes_, y)
        remove_stranded_folders()
        with tempfile.TemporaryDirectory(prefix=f"{DNN_FOLDER_PREFIX}{os.getpid()}-",
                                         ignore_cleanup_errors=True) as folder:
            # The matrices travel as files the training process maps, not as pickles through a pipe.
            train_path, stopping_path = Path(folder, "train.npy"), Path(folder, "stopping.npy")
            save_rows(train_path, X, fitted_rows, np.float32)
            save_rows(stopping_path, X, stopping_rows, np.float32)
            del X
            self.architecture_, self.weights_, history = run_in_training_process(
                train_dense_network, self.get_params(), len(self.classes_),
                train_path, code[fitted_rows], stopping_path, code[stopping_rows],
                fresh=self.n_features_in_ * int(self.layers[0]["units"] if self.layers else 1)
                >= FRESH_PROCESS_WEIGHTS)
        self.epochs_run_ = len(history["loss"])
        self.best_epoch_ = int(np.argmin(history["val_loss"])) + 1
        logger.info("DNN: %d epochs, kept the weights of epoch %d (loss %.3f on %d training clips held "
                    "out for early stopping)", self.epochs_run_, self.best_epoch_,
                    history["val_loss"][self.best_epoch_ - 1], len(stopping_rows))
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """The trained network's forward pass (dropout is off at inference) in NumPy, batch by
        batch: predicting needs neither TensorFlow nor its memory in this process."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False)
        *hidden, (last_kernel, last_bias) = zip(self.weights_[::2], self.weights_[1::2], strict=True)
        probabilities = np.empty((len(X), len(self.classes_)), dtype=np.float32)
        for start in range(0, len(X), 256):
            activations = np.asarray(X[start:start + 256], np.float32)
            for kernel, bias in hidden:
                activations = np.maximum(activations @ kernel + bias, 0.0)
            logits = activations @ last_kernel + last_bias
            exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
            probabilities[start:start + len(logits)] = exponentials / exponentials.sum(axis=1, keepdims=True)
        return probabilities

    def predict(self, X: np.ndarray) -> np.ndarray:
        probabilities = self.predict_proba(X)
        return self.classes_[probabilities.argmax(axis=1)]


def train_dense_network(params: Mapping[str, Any], n_classes: int, train_path: Path, y: np.ndarray,
                        stopping_path: Path, stopping_y: np.ndarray
                        ) -> tuple[str, list[np.ndarray], dict[str, list[float]]]:
    """Build, train and early-stop the network on the held-out training clips (`stopping_path`);
    returns its architecture, weights and history (`val_*`: the held-out clips' scores)."""
    tf = import_tensorflow()  # no C++ start-up chatter unless asked for
    import keras  # TensorFlow's: only in the training process

    keras.backend.clear_session()  # the process may have trained others: fresh layer names and state
    keras.utils.set_random_seed(params["random_state"] or 0)
    X = np.load(train_path, mmap_mode="r")
    network = [keras.Input((X.shape[1],))]
    for layer in params["layers"]:
        network.append(keras.layers.Dense(int(layer["units"]), activation="relu", dtype=params["precision"]))
        if layer.get("dropout"):
            network.append(keras.layers.Dropout(float(layer["dropout"])))
    # The softmax stays float32 whatever the precision, for a stable loss.
    network.append(keras.layers.Dense(n_classes, activation="softmax", dtype="float32"))
    model = keras.Sequential(network)
    model.compile(optimizer=keras.optimizers.Adam(params["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # Each batch is read from the memory-mapped training file by shuffled row numbers: memory holds
    # a batch, not the training matrix, whatever the corpus's size.
    stopping = tf.data.Dataset.from_tensor_slices((np.load(stopping_path), stopping_y)).batch(256)

    def read_batch(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(X[rows]), y[rows]

    width = X.shape[1]
    train = (tf.data.Dataset.range(len(y))
             .shuffle(len(y), seed=params["random_state"], reshuffle_each_iteration=True)
             .batch(params["batch_size"])
             .map(lambda rows: tuple(tf.ensure_shape(part, shape) for part, shape in zip(
                 tf.numpy_function(read_batch, [rows], (tf.as_dtype(X.dtype), tf.as_dtype(y.dtype))),
                 ((None, width), (None,)), strict=True)))
             .prefetch(1))

    # One progress bar per network on stderr; each epoch's scores at DEBUG.
    progress = tqdm(total=params["epochs"], desc=f"Dense network, {width:,} inputs",
                    unit="epoch", mininterval=1.0)

    def log_epoch(epoch: int, logs: Mapping[str, float]) -> None:
        logger.debug("DNN epoch %d/%d: loss %.3f, accuracy %.3f, held-out loss %.3f, accuracy %.3f",
                     epoch + 1, params["epochs"], logs["loss"], logs["accuracy"], logs["val_loss"],
                     logs["val_accuracy"])
        progress.set_postfix_str(f"held-out loss {logs['val_loss']:.3f}", refresh=False)
        progress.update()

    try:
        with progress:
            # shuffle=False: the dataset shuffles itself (Keras ignores the flag for a dataset, and warns).
            history = model.fit(
                train, validation_data=stopping, epochs=params["epochs"], verbose=0, shuffle=False,
                callbacks=[keras.callbacks.EarlyStopping(patience=params["patience"],
                                                         restore_best_weights=True),
                           keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)])
    finally:  # the file goes (its pages with the map): nothing is left for a kill to strand
        shutil.rmtree(train_path.parent, ignore_errors=True)
    return model.to_json(), model.get_weights(), history.history


def refits_on_validation(model: Any) -> bool:
    """Whether the chosen model is fitted again on training and validation clips together. Networks
    are not (their time would double): they stay as fitted, and scored, on the training clips."""
    return bool(getattr(model[-1] if isinstance(model, Pipeline) else model, "refit_on_validation", True))


def fit_model(model: Any, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None = None) -> Any:
    """Fit a model, passing each training clip's speaker (`groups`) to a classifier that holds
    clips out for early stopping, so that it holds out whole speakers."""
    estimator = model[-1] if isinstance(model, Pipeline) else model
    if groups is None or "groups" not in inspect.signature(estimator.fit).parameters:
        return model.fit(X, y)
    if isinstance(model, Pipeline):
        return model.fit(X, y, **{f"{model.steps[-1][0]}__groups": groups})
    return model.fit(X, y, groups=groups)

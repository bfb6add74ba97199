"""Estimators with the scikit-learn interface, so a fitted model is one sklearn Pipeline: its
block scaling, then the classifier, with the label order in `classes_`. `select_and_fit` makes a
fold's model from the fused features' layout; `prediction_table` is the one format of what any
fitted model predicts."""

from __future__ import annotations

import atexit
import copy
import hashlib
import inspect
import itertools
import logging
import os
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from tqdm import tqdm

from emofusion.errors import ClassifierConfigError
from emofusion.parallel import LoggingProcessPool

logger = logging.getLogger(__name__)

ROWS_PER_CHUNK = 256  # rows scaled at a time, so no float64 copy of a 98,304-wide matrix is made


class BlockScaler(TransformerMixin, BaseEstimator):
    """Standardise every column, then weight each block by weight / sqrt(width) (`balanced`).

    A block's total variance becomes weight², so the 40 MFCC columns count as much as the 98,304
    CNN columns at equal weights. With `balanced=False` each column is only standardised and
    multiplied by its block's weight: plain concatenation, as in the reference design. Fitted on
    training rows only; float32 in and out."""

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), weights: Sequence[float] = (),
                 balanced: bool = True) -> None:
        self.blocks = blocks
        self.weights = weights
        self.balanced = balanced

    def fit(self, X: np.ndarray, y: Any = None) -> BlockScaler:
        X = validate_data(self, X)
        width = X.shape[1]

        def chunks() -> Any:
            for start in range(0, len(X), ROWS_PER_CHUNK):
                yield np.asarray(X[start:start + ROWS_PER_CHUNK], dtype=np.float64)

        # Two passes, and "constant" judged column by column: ComParE has columns around 1e11 beside
        # columns of unit scale, whose variance a sum of squares would lose, or a shared threshold
        # would call constant.
        mean = sum(chunk.sum(axis=0) for chunk in chunks()) / len(X)
        std = np.sqrt(sum(np.square(chunk - mean).sum(axis=0) for chunk in chunks()) / len(X))
        std[std < 1e-8 * np.maximum(1.0, np.abs(mean))] = 1.0  # constant columns stay 0
        factor = np.ones(width)
        for (start, stop), weight in zip(self.blocks or [(0, width)], self.weights or [1.0], strict=True):
            factor[start:stop] = weight / np.sqrt(stop - start) if self.balanced else weight
        self.mean_ = mean.astype(np.float32)
        self.multiplier_ = (factor / std).astype(np.float32)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self)
        if len(getattr(X, "shape", ())) == 2 and X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but BlockScaler is expecting "
                             f"{self.n_features_in_} features as input: features made with other settings "
                             "than this model was trained on")
        X = validate_data(self, X, reset=False)
        out = np.empty(X.shape, dtype=np.float32)
        for start in range(0, len(X), ROWS_PER_CHUNK):
            chunk = np.asarray(X[start:start + ROWS_PER_CHUNK], dtype=np.float32)
            out[start:start + len(chunk)] = (chunk - self.mean_) * self.multiplier_
        return out


class BlockReducer(TransformerMixin, BaseEstimator):
    """PCA of chosen blocks, fitted on the training rows only, then each block multiplied by its
    weight.

    `components[i]` is the number of principal components kept of block i (None: the block as it
    is), never more than the block has columns or the training rows can give. The weights act
    after the projection (a rotation and a cut, which commutes with scaling), so candidates that
    differ only in block weights share one fitted PCA. `projections_[i]` is (mean, components) of
    block i, or None."""

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), components: Sequence[int | None] = (),
                 weights: Sequence[float] = ()) -> None:
        self.blocks = blocks
        self.components = components
        self.weights = weights

    def fit(self, X: np.ndarray, y: Any = None) -> BlockReducer:
        self.projections_ = []
        for (start, stop), wanted in zip(self.blocks, self.components, strict=True):
            kept = None if wanted is None else min(int(wanted), stop - start, len(X) - 1)
            if kept is not None and kept < 1:
                raise ClassifierConfigError(f"pca must keep at least one component, got {wanted} "
                                            f"(with {len(X)} training clips)")
            self.projections_.append(None if kept is None or kept == stop - start
                                     else principal_components(X[:, start:stop], kept))
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        weights = self.weights or [1.0] * len(self.blocks)
        return np.hstack([
            weight * (np.asarray(X[:, start:stop], np.float32) if projection is None
                      else (np.asarray(X[:, start:stop], np.float32) - projection[0]) @ projection[1].T)
            for (start, stop), projection, weight in zip(self.blocks, self.projections_, weights,
                                                         strict=True)])


_principal_components: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
PRINCIPAL_COMPONENTS_KEPT = 8


def principal_components(rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the top `n` principal axes (n x width, float32) of these rows.

    Exact, from the eigenvectors of the rows' Gram matrix when there are fewer rows than columns
    (1,000 clips x 28,160 CNN values: one matrix product and a 1,000 x 1,000 eigendecomposition,
    about a second, where randomized SVD's QR steps on 28,160-long vectors take tens of seconds),
    else of their covariance. Each axis's largest entry is positive, so the result is unique.
    Remembered by the rows' content: in a fold, every variant with the CNN stream and each of its
    classifiers standardise the same training rows of that stream alike, and would otherwise
    compute the same axes a dozen times."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    digest = hashlib.blake2b(rows.data, digest_size=16)
    digest.update(repr((rows.shape, n)).encode())
    key = digest.hexdigest()
    if key in _principal_components:
        _principal_components.move_to_end(key)
        return _principal_components[key]
    mean = rows.mean(axis=0, dtype=np.float64).astype(np.float32)
    centred = rows - mean
    wide = len(rows) < rows.shape[1]
    gram = centred @ centred.T if wide else centred.T @ centred
    values, vectors = np.linalg.eigh(gram.astype(np.float64))
    order = np.argsort(values)[::-1][:n]
    values, vectors = np.maximum(values[order], 0.0), vectors[:, order]
    if wide:  # axes from the rows' space: X^T u / |X^T u|, zero for a null direction
        axes = centred.T @ vectors.astype(np.float32)
        norms = np.sqrt(values).astype(np.float32)
        axes = np.divide(axes, norms, out=np.zeros_like(axes), where=norms > 1e-6 * max(norms[0], 1e-30))
    else:
        axes = vectors.astype(np.float32)
    axes = axes.T
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    result = (mean, np.ascontiguousarray(axes * np.where(signs == 0, 1.0, signs)[:, None], dtype=np.float32))
    _principal_components[key] = result
    while len(_principal_components) > PRINCIPAL_COMPONENTS_KEPT:
        _principal_components.popitem(last=False)
    return result


class KernelSVC(ClassifierMixin, BaseEstimator):
    """One-vs-one SVC (libsvm) on a kernel matrix computed with BLAS matrix products.

    Given 98,304-wide rows, libsvm would evaluate every kernel value with its own scalar loop; one
    matrix product makes the whole training kernel in about a second. Only the support vectors are
    kept for prediction. With `probability`, class probabilities come from a multinomial logistic
    calibration of the SVM's scores, fitted on cross-validated scores of the training clips
    (Platt's idea; scikit-learn deprecates SVC's own `probability`)."""

    def __init__(self, kernel: str = "rbf", C: float = 1.0, gamma: float | str = "scale",
                 probability: bool = True, random_state: int | None = None) -> None:
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.probability = probability
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
        self.gamma_ = 1.0 / (X.shape[1] * float(X.var())) if self.gamma == "scale" else float(self.gamma)
        kernel = self._kernel(X, X)
        self.svc_ = SVC(kernel="precomputed", C=self.C).fit(kernel, y)
        self.support_vectors_ = X[self.svc_.support_]
        self.n_training_rows_ = len(X)
        self.classes_ = self.svc_.classes_
        if self.probability:
            self.calibrator_ = LogisticRegression(max_iter=1000).fit(
                self._cross_validated_scores(kernel, y), y)
        return self

    def _cross_validated_scores(self, kernel: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Scores of each training clip from an SVM that did not see it, cut from the one kernel
        matrix already computed, for the probability calibration."""
        folds = min(5, int(np.unique(y, return_counts=True)[1].min()))
        if folds < 2:
            raise ValueError("svm probabilities need at least 2 training clips of every emotion")
        scores = np.zeros((len(y), len(self.classes_) if len(self.classes_) > 2 else 1))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=self.random_state)
        for train, held_out in splitter.split(y, y):
            svc = SVC(kernel="precomputed", C=self.C).fit(kernel[np.ix_(train, train)], y[train])
            held_out_scores = svc.decision_function(kernel[np.ix_(held_out, train)])
            scores[held_out] = held_out_scores.reshape(len(held_out), -1)
        return scores

    def _test_kernel(self, X: np.ndarray) -> np.ndarray:
        # libsvm indexes a precomputed kernel by training row; rows that are not support vectors
        # have no weight, so their columns can stay zero.
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float32, reset=False)
        kernel = np.zeros((len(X), self.n_training_rows_))
        kernel[:, self.svc_.support_] = self._kernel(X, self.support_vectors_)
        return kernel

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Per-class scores aggregated from the one-vs-one votes (scikit-learn's 'ovr' shape)."""
        kernel = self._test_kernel(X)
        return self.svc_.decision_function(kernel)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The most probable class when the SVM gives probabilities, so that scored predictions,
        late fusion and `emofusion predict` answer alike; else the one-vs-one vote."""
        if self.probability:
            most_probable = self.predict_proba(X).argmax(axis=1)
            return self.classes_[most_probable]
        return self.svc_.predict(self._test_kernel(X))

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
        if self.precision not in PRECISIONS:
            raise ClassifierConfigError(
                f"dnn precision '{self.precision}' is not one of: {', '.join(PRECISIONS)}")
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
    from emofusion.quiet_tensorflow import import_tensorflow

    tf = import_tensorflow()  # no C++ start-up chatter unless asked for
    import keras

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
    # One copy of the training matrix in TensorFlow; batches are gathered from it by shuffled row
    # numbers, so no shuffle buffer holds a second copy.
    features, labels = tf.constant(X), tf.constant(y)
    stopping = tf.data.Dataset.from_tensor_slices((np.load(stopping_path), stopping_y)).batch(256)
    del X  # unmaps the file: TensorFlow holds the only copy
    shutil.rmtree(train_path.parent, ignore_errors=True)  # read: nothing is left for a kill to strand
    train = (tf.data.Dataset.range(len(y))
             .shuffle(len(y), seed=params["random_state"], reshuffle_each_iteration=True)
             .batch(params["batch_size"])
             .map(lambda rows: (tf.gather(features, rows), tf.gather(labels, rows)))
             .prefetch(1))

    # One progress bar per network on stderr; each epoch's scores at DEBUG.
    progress = tqdm(total=params["epochs"], desc=f"Dense network, {int(features.shape[1]):,} inputs",
                    unit="epoch", mininterval=1.0)

    def log_epoch(epoch: int, logs: Mapping[str, float]) -> None:
        logger.debug("DNN epoch %d/%d: loss %.3f, accuracy %.3f, held-out loss %.3f, accuracy %.3f",
                     epoch + 1, params["epochs"], logs["loss"], logs["accuracy"], logs["val_loss"],
                     logs["val_accuracy"])
        progress.set_postfix_str(f"held-out loss {logs['val_loss']:.3f}", refresh=False)
        progress.update()

    with progress:
        # shuffle=False: the dataset shuffles itself (Keras ignores the flag for a dataset, and warns).
        history = model.fit(
            train, validation_data=stopping, epochs=params["epochs"], verbose=0, shuffle=False,
            callbacks=[keras.callbacks.EarlyStopping(patience=params["patience"], restore_best_weights=True),
                       keras.callbacks.LambdaCallback(on_epoch_end=log_epoch)])
    return model.to_json(), model.get_weights(), history.history


DNN_FOLDER_PREFIX = "emofusion-dnn-"  # then the pid of the process that made the folder


def remove_stranded_folders() -> None:
    """Remove the training matrices' folders of processes that no longer exist (killed before their
    training process read them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{DNN_FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(DNN_FOLDER_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _import_tensorflow() -> None:
    # TensorFlow is what the training process is for: imported at its start, quietly, before a
    # function's module (the fine-tuning networks) imports it at the top with its start-up chatter.
    from emofusion.quiet_tensorflow import import_tensorflow

    import_tensorflow()


_training_process: LoggingProcessPool | None = None


def _stop_training_process() -> None:
    global _training_process
    if _training_process is not None:
        _training_process.stop()
        _training_process = None


atexit.register(_stop_training_process)


def run_in_training_process(function: Callable[..., Any], *args: Any, fresh: bool = False) -> Any:
    """`function(*args)` in the training process. It is kept for the next call, which then skips
    TensorFlow's start-up (seconds per network, most of a small network's fit), unless `fresh`:
    TensorFlow keeps memory after a fit of tens of millions of weights that only the end of its
    process gives back."""
    global _training_process
    if _training_process is None:
        _training_process = LoggingProcessPool(1, initializer=_import_tensorflow)
    try:
        return _training_process.result(_training_process.submit(function, *args))
    except BrokenProcessPool as error:
        fresh = True
        raise RuntimeError(f"the process running {function.__name__} ended abruptly, most likely killed "
                           "for lack of memory") from error
    finally:
        if fresh:
            _stop_training_process()


FRESH_PROCESS_WEIGHTS = 10_000_000  # first-layer weights from which a network trains in a process of its own


PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
CLASSIFIER_KINDS = {"svm": KernelSVC, "dnn": DenseNetworkClassifier}


def build_classifier(settings: Mapping[str, Any], random_seed: int) -> BaseEstimator:
    """`kind` picks the estimator; the other keys are its parameters."""
    settings = {key: value for key, value in settings.items() if key != "search"}
    kind = settings.pop("kind", None)
    if kind not in CLASSIFIER_KINDS:
        raise ClassifierConfigError(f"classifier kind '{kind}' is not one of: {sorted(CLASSIFIER_KINDS)}")
    estimator = CLASSIFIER_KINDS[kind]
    known = set(estimator().get_params()) - {"random_state"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ClassifierConfigError(f"{kind} does not take {unknown}; it takes {sorted(known)}")
    return estimator(**settings, random_state=random_seed)


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


def early_stopping_rows(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The rows to fit on and the rows to stop early on, both from the training clips given: whole
    speakers (`groups`, at least one, never all), else a stratified `fraction` of each emotion."""
    if not 0 < fraction < 1:
        raise ClassifierConfigError(f"early_stopping_fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    if groups is not None and len(units := np.unique(np.asarray(groups))) >= 2:
        held = rng.choice(units, min(len(units) - 1, max(1, round(fraction * len(units)))), replace=False)
        stopping = np.isin(groups, held)
    else:
        if groups is not None:
            logger.warning("The training clips have one speaker: clips, not speakers, are held out for "
                           "early stopping")
        stopping = np.zeros(len(y), dtype=bool)
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            if len(members) >= 2:
                stopping[members[:min(len(members) - 1, max(1, round(fraction * len(members))))]] = True
        if not stopping.any():
            raise ValueError("too few training clips to hold any out for early stopping: every emotion "
                             "has 1 sample")
    return np.flatnonzero(~stopping), np.flatnonzero(stopping)


def save_rows(path: Path, X: np.ndarray, rows: np.ndarray, dtype: Any = None) -> None:
    """These rows of X as a .npy file (of X's dtype unless `dtype` says), written chunk by chunk: no
    copy of the whole matrix."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype or X.dtype, shape=(len(rows), *X.shape[1:]))
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        out[start:start + ROWS_PER_CHUNK] = X[rows[start:start + ROWS_PER_CHUNK]]
    out.flush()
    del out


def _early_model(blocks: Sequence[Mapping[str, Any]], classifier: Mapping[str, Any], balanced: bool,
                 reduction: Mapping[str, Any], random_seed: int) -> Pipeline:
    """Block scaling, the optional per-stream PCA, the classifier: one Pipeline, so everything
    fitted on training clips travels with the model to `predict`. With a PCA step, the block
    weights are applied after it (see BlockReducer)."""
    ranges = [(int(b["start"]), int(b["stop"])) for b in blocks]
    weights = [float(b["weight"]) for b in blocks]
    components = [(reduction.get(b["stream"]) or {}).get("pca") for b in blocks]
    if all(c is None for c in components):
        steps: list[tuple[str, Any]] = [("scale", BlockScaler(ranges, weights, balanced))]
    else:
        steps = [("scale", BlockScaler(ranges, [1.0] * len(blocks), balanced)),
                 ("reduce", BlockReducer(ranges, components, weights))]
    steps.append(("classify", build_classifier(classifier, random_seed)))
    return Pipeline(steps)


def build_model(blocks: Sequence[Mapping[str, Any]], groups: Sequence[Sequence[str]] | None,
                classifier: Mapping[str, Any], reduction: Mapping[str, Any] | None, balanced: bool,
                random_seed: int) -> Pipeline:
    """The unfitted model for a fused matrix with these blocks: one early-fusion Pipeline, or, when
    `groups` has several groups of streams, late fusion of one such Pipeline per group."""
    reduction = reduction or {}
    if not groups or len(groups) == 1:
        return _early_model(blocks, classifier, balanced, reduction, random_seed)
    by_stream = {b["stream"]: b for b in blocks}
    columns, models = [], []
    for group in groups:
        members, start = [], 0
        for stream in group:  # the group's blocks, renumbered from its own first column
            block = by_stream[stream]
            width = block["stop"] - block["start"]
            members.append({**block, "start": start, "stop": start + width})
            start += width
        columns.append([(by_stream[stream]["start"], by_stream[stream]["stop"]) for stream in group])
        models.append(_early_model(members, classifier, balanced, reduction, random_seed))
    return Pipeline([("classify", LateFusionClassifier(columns, models))])


SEARCHABLE_STREAM_SETTINGS = ("block_weights", "pca")
LATE_WEIGHT_STEP = 0.25


def search_candidates(search: Mapping[str, Sequence[Any]] | None, groups: Sequence[Sequence[str]]
                      ) -> list[dict[str, Any]]:
    """Every combination of the search grid that applies to a variant with these groups of streams
    (one group per model): a `pca.<stream>` key counts only where the variant has that stream, a
    `block_weights.<stream>` key only where the stream shares its model with another (alone, its
    weight changes nothing: the kernel width follows the features' scale)."""
    grid = {}
    for key, values in (search or {}).items():
        setting, _, stream = key.partition(".")
        group = next((group for group in groups if stream in group), [])
        alone = setting == "block_weights" and len(group) < 2
        if setting in SEARCHABLE_STREAM_SETTINGS and (not group or alone):
            continue
        grid[key] = list(values) if isinstance(values, Sequence) and not isinstance(values, str) else [values]
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


def late_weight_candidates(groups: int) -> list[tuple[float, ...]]:
    """Combiner weights on a simplex grid (step LATE_WEIGHT_STEP), equal weights first."""
    steps = round(1 / LATE_WEIGHT_STEP)
    grid = [tuple(k / steps for k in combination)
            for combination in itertools.product(range(steps + 1), repeat=groups)
            if sum(combination) == steps]
    equal = tuple(1 / groups for _ in range(groups))
    return [equal, *[weights for weights in grid if not np.allclose(weights, equal)]]


def _apply_candidate(candidate: Mapping[str, Any], blocks: Sequence[Mapping[str, Any]],
                     classifier: Mapping[str, Any], reduction: Mapping[str, Any] | None
                     ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    blocks = [dict(block) for block in blocks]
    settings = {key: value for key, value in classifier.items() if key != "search"}
    reduction = {stream: dict(options or {}) for stream, options in (reduction or {}).items()}
    for key, value in candidate.items():
        setting, _, stream = key.partition(".")
        if setting == "block_weights":
            for block in blocks:
                if block["stream"] == stream:
                    block["weight"] = float(value)
        elif setting == "pca":
            reduction[stream] = {"pca": value}
        else:
            settings[key] = value
    return blocks, settings, reduction


def validated_reduction(reduction: Mapping[str, Any] | None, streams: Sequence[str]) -> None:
    """`reduction` maps known streams to {pca: N}, N a positive number of components or null."""
    if reduction is None:
        return
    if not isinstance(reduction, Mapping):
        raise ClassifierConfigError(f"reduction must map streams to {{pca: N}}, got {reduction!r}")
    for stream, options in reduction.items():
        if stream not in streams:
            raise ClassifierConfigError(
                f"reduction names unknown stream '{stream}'; known: {sorted(streams)}")
        if options is None:
            continue
        if not isinstance(options, Mapping) or set(options) - {"pca"}:
            raise ClassifierConfigError(f"reduction.{stream} must be {{pca: N}}, got {options!r}")
        n = options.get("pca")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ClassifierConfigError(f"reduction.{stream}.pca must be a positive integer, got {n!r}")


def validated_search(classifier: Mapping[str, Any], streams: Sequence[str]) -> None:
    """A `search` grid names settings this classifier or the streams have, each with candidates."""
    search = classifier.get("search") or {}
    if not isinstance(search, Mapping):
        raise ClassifierConfigError(f"search must map settings to lists of candidates, got {search!r}")
    known = set(CLASSIFIER_KINDS.get(classifier.get("kind"), KernelSVC)().get_params()) - {"random_state"}
    for key, values in search.items():
        setting, _, stream = key.partition(".")
        if setting in SEARCHABLE_STREAM_SETTINGS:
            if stream not in streams:
                raise ClassifierConfigError(f"search key '{key}' names no known stream ({sorted(streams)})")
        elif key not in known:
            raise ClassifierConfigError(
                f"search key '{key}' is neither a setting of {classifier.get('kind')} ({sorted(known)}) "
                f"nor block_weights.<stream> or pca.<stream>")
        if isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 0:
            raise ClassifierConfigError(f"search key '{key}' has no candidates")


def _fit_signature(preprocess: Pipeline) -> str:
    """What fitting the preprocessing depends on: candidates with equal signatures share one fit
    (the reducer's block weights act only when transforming)."""
    return repr([(name, sorted((key, repr(value)) for key, value in step.get_params(deep=False).items()
                               if not (isinstance(step, BlockReducer) and key == "weights")))
                 for name, step in preprocess.steps])


def fused_layout(metadata: Mapping[str, Any], width: int
                 ) -> tuple[list[Mapping[str, Any]], list[list[str]] | None, bool]:
    """The blocks, the groups of streams (late fusion, else None) and whether blocks are balanced,
    as fused features' metadata records them; features without blocks are one block."""
    blocks = metadata.get("blocks") or [{"stream": "features", "start": 0, "stop": width, "weight": 1.0}]
    return list(blocks), metadata.get("groups"), metadata.get("block_scaling", "balanced") == "balanced"


def select_and_fit(features_metadata: Mapping[str, Any], classifier_options: Mapping[str, Any],
                   reduction_options: Mapping[str, Any] | None, random_seed: int,
                   train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
                   train_groups: np.ndarray | None = None) -> tuple[Pipeline, dict[str, Any]]:
    """One fold's fitted model (block scaling, optional PCA, classifier; for late fusion one such
    model per group of streams) for fused features with this metadata (`fused_layout`).

    Every candidate of the classifier's `search` grid (and, for late fusion, each combiner weight)
    is fitted on the training clips alone (a network holds some of them out, whole speakers given
    `train_groups`, to stop early) and scored by unweighted average recall on the validation
    clips, which no model has seen; the score recorded is that of the chosen candidate's answers
    (its most probable class, as in testing and `emofusion predict`), so the scores of all kinds of
    model are comparable.
    The chosen model is then fitted again on training and validation clips together, except
    networks (`refits_on_validation`). Test clips play no part.

    Returns the fitted model and a record of the choice."""
    blocks, groups, balanced = fused_layout(features_metadata, train[0].shape[1])
    groups = groups or [[b["stream"] for b in blocks]]
    candidates = search_candidates(classifier_options.get("search"), groups)
    late = len(groups) > 1
    combiner_weights: list[Any] = late_weight_candidates(len(groups)) if late else [None]

    def build(candidate: Mapping[str, Any], **overrides: Any) -> Pipeline:
        candidate_blocks, settings, candidate_reduction = _apply_candidate(
            candidate, blocks, classifier_options, reduction_options)
        return build_model(candidate_blocks, groups, {**settings, **overrides}, candidate_reduction, balanced,
                           random_seed)

    def uar(model: Any, X: np.ndarray) -> float:
        return float(recall_score(validation[1], model.predict(X), average="macro", zero_division=0))

    # An SVM of early fusion compares its candidates by its vote, without five calibration fits
    # each; the chosen one is then scored as it answers (its most probable class).
    voting = ({"probability": False} if classifier_options.get("kind") == "svm" and not late
              and len(candidates) > 1 and classifier_options.get("probability", True) else {})
    best: tuple[float, dict[str, Any], Any, Pipeline] | None = None
    preprocessed: dict[str, Pipeline] = {}
    for candidate in candidates:
        model = build(candidate, **voting)
        if late:
            fit_model(model, *train, train_groups)
            for weights in combiner_weights:  # act at prediction: one fit serves them all
                if weights is not None:
                    model[-1].set_params(weights=list(weights))
                score = uar(model, validation[0])
                if best is None or score > best[0] + 1e-12:
                    best = (score, candidate, weights, None if refits_on_validation(model) else model)
            continue
        # Early fusion: the scaling and PCA are fitted once per signature, each candidate's
        # classifier on the transformed clips.
        preprocess, estimator = model[:-1], model[-1]
        signature = _fit_signature(preprocess)
        if signature not in preprocessed:
            preprocessed[signature] = preprocess.fit(*train)
        shared = preprocessed[signature]
        if "reduce" in model.named_steps:
            shared.named_steps["reduce"].set_params(weights=model.named_steps["reduce"].weights)
        fit_model(estimator, shared.transform(train[0]), train[1], train_groups)
        score = uar(estimator, shared.transform(validation[0]))
        if best is None or score > best[0] + 1e-12:
            best = (score, candidate, None, None if refits_on_validation(estimator)
                    else Pipeline([*copy.deepcopy(shared).steps, ("classify", estimator)]))
    score, candidate, weights, model = best
    if voting:
        score = uar(fit_model(build(candidate), *train), validation[0])
    if model is None:  # refitted on training and validation clips; no network is, so no groups
        model = fit_model(build(candidate), np.vstack([train[0], validation[0]]),
                          np.concatenate([train[1], validation[1]]))
    chosen = dict(candidate)
    if weights is not None:
        model[-1].set_params(weights=list(weights))
        chosen["late_weights"] = [round(w, 4) for w in weights]
    return model, {"candidates": len(candidates) * len(combiner_weights), "chosen": chosen,
                   "validation_uar": score}


def prediction_table(model: Any, features: Any, clips: pd.DataFrame, probabilities: np.ndarray | None = None,
                     column: str = "predicted") -> pd.DataFrame:
    """`clips`, one row per row of `features`, with the model's prediction in `column` and, for a
    model that gives class probabilities, `p_<emotion>` for each of its classes (`classes_`): the
    one format of test predictions, held-out predictions and `emofusion predict`'s windows.

    The prediction is the most probable class wherever the model gives probabilities: the one
    decision rule of every model, here and in `emofusion predict`. `probabilities`, when the caller
    already has them (a network's forward pass, run once; late fusion's weighted mean of two
    models'), stand for `model.predict_proba(features)`, which is then not called."""
    if probabilities is None and hasattr(model, "predict_proba"):  # not an SVM with probability: false
        probabilities = model.predict_proba(features)
    predicted = (model.predict(features) if probabilities is None
                 else model.classes_[probabilities.argmax(axis=1)])
    table = clips.reset_index(drop=True).assign(**{column: predicted})
    if probabilities is None:
        return table
    return table.join(pd.DataFrame(probabilities, columns=[f"p_{label}" for label in model.classes_]))

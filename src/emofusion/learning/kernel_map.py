"""The SVM's cost linear in the training clips, for corpora where its exact n x n kernel cannot be
held: an approximate RBF kernel map and linear one-vs-one SVMs on it."""

from __future__ import annotations

import numpy as np
from sklearn.kernel_approximation import Nystroem
from sklearn.multiclass import OneVsOneClassifier
from sklearn.svm import LinearSVC

ROWS_PER_MAP = 4096  # rows mapped at a time, in float64, so a row's image does not depend on its batch


def fit_kernel_map(X: np.ndarray, gamma: float, components: int, random_state: int | None) -> Nystroem:
    """Nyström's map of the RBF kernel of width `gamma` from `components` training rows drawn at
    random (all of them when there are fewer): the map's dot products approximate the kernel, at
    a cost linear in the rows."""
    return Nystroem(kernel="rbf", gamma=gamma, n_components=min(int(components), len(X)),
                    random_state=random_state).fit(X)


def mapped(kernel_map: Nystroem | None, X: np.ndarray) -> np.ndarray:
    """The rows' images under the map (None: the rows), a few thousand rows at a time."""
    if kernel_map is None:
        return X
    out = np.empty((len(X), kernel_map.components_.shape[0]))
    for start in range(0, len(X), ROWS_PER_MAP):
        out[start:start + ROWS_PER_MAP] = kernel_map.transform(np.asarray(X[start:start + ROWS_PER_MAP],
                                                                          dtype=np.float64))
    return out


def linear_one_vs_one(C: float, random_state: int | None) -> OneVsOneClassifier:
    """One linear SVM per pair of classes, voting as libsvm's do. The squared hinge, solved in the
    primal (Newton steps, each linear in the rows): libsvm's own hinge, by liblinear's dual, did
    not converge in 1,000 passes on RAVDESS's folds and scored lower there (docs/speed.md)."""
    return OneVsOneClassifier(LinearSVC(C=C, dual=False, random_state=random_state))

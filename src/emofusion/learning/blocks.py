"""Per-block scaling and reduction of fused features, inside the fitted model: each stream's block
scaled (and optionally reduced by PCA) on the training clips only."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import IncrementalPCA
from sklearn.utils import gen_batches
from sklearn.utils.validation import check_is_fitted, validate_data

from emofusion.errors import ClassifierConfigError

ROWS_PER_CHUNK = 256  # rows scaled at a time, so no float64 copy of a 98,304-wide matrix is made
# Exact principal axes up to this many training clips (their n x n Gram matrix: 1.6 GB in float64
# at 20,000), axes found batch by batch of PCA_BATCH_CLIPS above; chosen in docs/speed.md.
PCA_EXACT_MAX_CLIPS = 20_000
PCA_BATCH_CLIPS = 2_048


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
    block i, or None. Above `exact_max_clips` training rows the axes are found batch by batch
    (`incremental_axes`), so memory does not grow with the square of the rows; `path_` says which
    was used."""

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), components: Sequence[int | None] = (),
                 weights: Sequence[float] = (), exact_max_clips: int = PCA_EXACT_MAX_CLIPS,
                 batch_clips: int = PCA_BATCH_CLIPS) -> None:
        self.blocks = blocks
        self.components = components
        self.weights = weights
        self.exact_max_clips = exact_max_clips
        self.batch_clips = batch_clips

    def fit(self, X: np.ndarray, y: Any = None) -> BlockReducer:
        self.path_ = "exact" if len(X) <= self.exact_max_clips else "incremental"
        self.projections_ = []
        for (start, stop), wanted in zip(self.blocks, self.components, strict=True):
            kept = None if wanted is None else min(int(wanted), stop - start, len(X) - 1)
            if kept is not None and kept < 1:
                raise ClassifierConfigError(f"pca must keep at least one component, got {wanted} "
                                            f"(with {len(X)} training clips)")
            self.projections_.append(None if kept is None or kept == stop - start
                                     else principal_components(X[:, start:stop], kept)
                                     if self.path_ == "exact"
                                     else incremental_axes(X[:, start:stop], kept, self.batch_clips))
        self.n_features_in_ = X.shape[1]
        return self

    def _widths(self) -> list[int]:
        """Each block's columns in the output."""
        return [stop - start if projection is None else len(projection[1])
                for (start, stop), projection in zip(self.blocks, self.projections_, strict=True)]

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Row chunk by row chunk, so that no centred copy of a whole block (a CNN block of
        98,304 columns) is made beside the input."""
        weights = self.weights or [1.0] * len(self.blocks)
        widths = self._widths()
        out = np.empty((len(X), sum(widths)), dtype=np.float32)
        for first in range(0, len(X), ROWS_PER_CHUNK):
            rows = slice(first, first + ROWS_PER_CHUNK)
            column = 0
            for (start, stop), projection, weight, width in zip(self.blocks, self.projections_, weights,
                                                                widths, strict=True):
                block = np.asarray(X[rows, start:stop], np.float32)
                out[rows, column:column + width] = weight * (
                    block if projection is None else (block - projection[0]) @ projection[1].T)
                column += width
        return out

    def reweighted(self, unweighted: np.ndarray) -> np.ndarray:
        """`transform`'s output with this reducer's weights, from its output with weights 1 (the
        same numbers: `transform` multiplies each block by its weight last), so that candidates
        differing only in block weights transform the clips once."""
        weights = self.weights or [1.0] * len(self.blocks)
        out = np.empty_like(unweighted)
        column = 0
        for weight, width in zip(weights, self._widths(), strict=True):
            out[:, column:column + width] = weight * unweighted[:, column:column + width]
            column += width
        return out


PRINCIPAL_COMPONENTS_KEPT = 8
_principal_components: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()


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
    result = (mean, _signed(axes.T))
    _principal_components[key] = result
    while len(_principal_components) > PRINCIPAL_COMPONENTS_KEPT:
        _principal_components.popitem(last=False)
    return result


def incremental_axes(rows: np.ndarray, n: int, batch_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """As `principal_components`, from batches of `batch_rows` rows (IncrementalPCA): memory grows
    with the batch and the width, time linearly with the rows, where the exact axes need the
    rows' n x n Gram matrix (40 GB in float32 at 10^5 clips)."""
    pca = IncrementalPCA(n)
    # gen_batches merges a short last batch into the one before: each batch needs n rows.
    for batch in gen_batches(len(rows), max(int(batch_rows), n), min_batch_size=n):
        pca.partial_fit(np.asarray(rows[batch], dtype=np.float64))
    return pca.mean_.astype(np.float32), _signed(pca.components_)


def _signed(axes: np.ndarray) -> np.ndarray:
    """The axes (rows) with each one's largest entry positive, so that the result is unique."""
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])
    return np.ascontiguousarray(axes * np.where(signs == 0, 1.0, signs)[:, None], dtype=np.float32)

"""What a model's training features looked like, so that `emofusion predict` can say when new
recordings fall outside it (`in_domain`), and put a batch of recordings of another domain on the
training clips' scale (`--same-domain`).

The description is fitted on a fold's training clips only, in the space of the model's own block
scaling (`BlockScaler`, the variant's blocks and weights): the top principal axes of the scaled
training clips, a clip's Mahalanobis distance within them (how unusual it is along the directions
the training clips vary in) plus its squared distance off them (how much of it the training clips
never showed), each divided by its mean over the training clips. The threshold is set on the
fold's validation clips, which the description never saw: the smallest distance that at least
`pass_share` of them pass, with the finite-sample margin of a conformal quantile, so that a new
clip of the training distribution passes with at least that probability. The test clips are then
flagged once, and their flag rate is the run's measured check of the threshold, not its input."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from emofusion.learning.assembly import fused_layout
from emofusion.learning.blocks import ROWS_PER_CHUNK, BlockScaler, principal_components
from emofusion.standardisation import feature_statistics, relative_spread

TINY = 1e-12


def conformal_threshold(distances: np.ndarray, pass_share: float) -> float:
    """The ceil((n + 1) * pass_share)-th smallest of n held-out distances (the largest, when n is
    too small): a new clip like them is at most this far with probability at least `pass_share`."""
    distances = np.sort(distances)
    return float(distances[min(math.ceil((len(distances) + 1) * pass_share), len(distances)) - 1])


class TrainingDomain(BaseEstimator):
    """The training clips' distribution, in the model's scaled space, with a threshold on the
    distance to it (`distance`, `in_domain`). Also the training clips' raw statistics (`mean_`,
    `std_`), onto which `--same-domain` maps a batch standardised by its own, and each training
    corpus's spread relative to them (`corpus_spread_`), which a batch's spread is compared with."""

    def __init__(self, blocks: Sequence[tuple[int, int]] = (), weights: Sequence[float] = (),
                 balanced: bool = True, components: int = 16, pass_share: float = 0.95) -> None:
        self.blocks = blocks
        self.weights = weights
        self.balanced = balanced
        self.components = components
        self.pass_share = pass_share

    def fit(self, X: np.ndarray, corpora: Sequence[Any] | None = None, raw_statistics: bool = True
            ) -> TrainingDomain:
        """Fitted on training clips only; `corpora` (one per row, no label) gives each training
        corpus's spread. The threshold passes `pass_share` of these clips until `calibrate`.
        Without `raw_statistics` (a fold's description that only flags its test clips, which no
        stored model keeps), no `mean_`, `std_` or `corpus_spread_` for `--same-domain`."""
        if raw_statistics:
            mean, std = feature_statistics(X)
            self.mean_, self.std_ = mean.ravel(), std.ravel()
            corpora = np.asarray(corpora if corpora is not None else ["training"] * len(X), dtype=str)
            self.corpus_spread_ = {str(corpus): relative_spread(feature_statistics(X[corpora == corpus])[1],
                                                                std)
                                   for corpus in np.unique(corpora)}
        self.scaler_ = BlockScaler(self.blocks, self.weights, self.balanced).fit(X)
        scaled = self.scaler_.transform(X)
        kept = max(1, min(int(self.components), scaled.shape[1], len(X) - 1))
        self.centre_, self.axes_ = principal_components(scaled, kept)
        projected, squared_norms = self._coordinates(scaled)
        self.variances_ = np.maximum(projected.var(axis=0), TINY)
        within, off = self._parts(projected, squared_norms)
        self.within_scale_ = max(float(within.mean()), TINY)
        off_mean = float(off.mean())
        self.off_scale_ = off_mean if off_mean > TINY * max(float(np.square(scaled).mean()), 1.0) else None
        return self._threshold(self._scaled_distance(within, off), len(X))

    def _coordinates(self, scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, centred on the training clips: its coordinates on the principal axes and its
        squared length; in float64, ROWS_PER_CHUNK rows at a time (a float64 copy of a whole
        fold's CNN-wide rows is 0.2 GB)."""
        axes = self.axes_.T.astype(np.float64)
        projected = np.empty((len(scaled), axes.shape[1]))
        squared_norms = np.empty(len(scaled))
        for start in range(0, len(scaled), ROWS_PER_CHUNK):
            centred = np.asarray(scaled[start:start + ROWS_PER_CHUNK], dtype=np.float64) - self.centre_
            projected[start:start + len(centred)] = centred @ axes
            squared_norms[start:start + len(centred)] = np.square(centred).sum(axis=1)
        return projected, squared_norms

    def _parts(self, projected: np.ndarray, squared_norms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row (`_coordinates`): the squared Mahalanobis distance within the principal axes, and
        the squared distance off them (0 when the axes span every column)."""
        within = np.square(projected) / self.variances_
        off = np.maximum(squared_norms - np.square(projected).sum(axis=1), 0.0)
        return within.sum(axis=1), off

    def _scaled_distance(self, within: np.ndarray, off: np.ndarray) -> np.ndarray:
        return within / self.within_scale_ + (off / self.off_scale_ if self.off_scale_ else 0.0)

    def distance(self, X: np.ndarray) -> np.ndarray:
        """Per row, its distance to the training clips: about 2 for a typical training clip (1 within
        the principal axes, 1 off them), more the further out."""
        return self._scaled_distance(*self._parts(*self._coordinates(self.scaler_.transform(X))))

    def calibrate(self, X: np.ndarray) -> TrainingDomain:
        """Set the threshold on these clips (a fold's validation clips, which `fit` never saw): the
        ceil((n + 1) * pass_share)-th smallest distance, so that a new clip like them passes with
        probability at least `pass_share` (a conformal quantile; the largest, when n is too small)."""
        return self._threshold(self.distance(X), len(X))

    def _threshold(self, distances: np.ndarray, clips: int) -> TrainingDomain:
        self.threshold_ = conformal_threshold(distances, float(self.pass_share))
        self.calibration_clips_ = clips
        return self

    def in_domain(self, X: np.ndarray) -> np.ndarray:
        """Per row, whether it is as close to the training clips as `pass_share` of held-out ones."""
        return self.distance(X) <= self.threshold_

    def record(self) -> dict[str, Any]:
        """What the model card says of it."""
        return {"components": int(len(self.axes_)), "pass_share": float(self.pass_share),
                "threshold": self.threshold_, "calibration_clips": self.calibration_clips_,
                "corpus_spread": self.corpus_spread_}


def describe_domain(features_metadata: Mapping[str, Any], X_train: np.ndarray, train_corpora: Sequence[Any],
                    X_validation: np.ndarray, options: Mapping[str, Any], raw_statistics: bool = True
                    ) -> TrainingDomain:
    """A fold's `TrainingDomain`: fitted on its training clips, in the block scaling of the fused
    features' layout (`fused_layout`), its threshold set on its validation clips (on the training
    clips where a fold has none)."""
    blocks, _, balanced = fused_layout(features_metadata, X_train.shape[1])
    domain = TrainingDomain([(int(b["start"]), int(b["stop"])) for b in blocks],
                            [float(b["weight"]) for b in blocks], balanced, int(options["components"]),
                            float(options["pass_share"])).fit(X_train, train_corpora, raw_statistics)
    return domain.calibrate(X_validation) if len(X_validation) else domain

"""Late fusion's weights: the combiner weights of several models' class probabilities, chosen on
the validation clips over one grid, for modelling's late variants and fine-tuning's late fusion
alike."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

LATE_WEIGHT_STEP = 0.25
# Scores closer than this are equal: the first of them (equal weights come first) is kept.
SCORE_TOLERANCE = 1e-12


def late_weight_candidates(groups: int) -> list[tuple[float, ...]]:
    """Combiner weights on a simplex grid (step LATE_WEIGHT_STEP), equal weights first."""
    steps = round(1 / LATE_WEIGHT_STEP)
    grid = [tuple(k / steps for k in combination)
            for combination in itertools.product(range(steps + 1), repeat=groups)
            if sum(combination) == steps]
    equal = tuple(1 / groups for _ in range(groups))
    return [equal, *[weights for weights in grid if not np.allclose(weights, equal)]]


def best_late_weights(score: Callable[[tuple[float, ...]], float], groups: int
                      ) -> tuple[float, tuple[float, ...], int]:
    """The best-scoring combiner weights of `groups` models (`score(weights)`: the validation
    clips' unweighted average recall), the first of equal scores: (score, weights, candidates tried)."""
    candidates = late_weight_candidates(groups)
    best: tuple[float, tuple[float, ...]] | None = None
    for weights in candidates:
        value = score(weights)
        if best is None or value > best[0] + SCORE_TOLERANCE:
            best = (value, weights)
    return best[0], best[1], len(candidates)

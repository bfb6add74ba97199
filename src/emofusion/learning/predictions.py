"""The one format of what any fitted model predicts: one row per clip, the predicted emotion and
its class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


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


def combined_predictions(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The folds' prediction tables as one. A fold whose training clips lacked an emotion gives it
    no probability column: it had none."""
    predictions = pd.concat(tables, ignore_index=True)
    return predictions.fillna({column: 0.0 for column in predictions if column.startswith("p_")})

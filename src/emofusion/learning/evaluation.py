"""A model's scores from its test predictions and model card: modelling's models and the fine-tuned
ones alike, so that the summary and the report compare them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
from kedro.pipeline import Node, node

from emofusion.learning.selection import resampling_units, units_of
from emofusion.learning.uncertainty import bootstrap_scores, classification_scores


def describe_features(features: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each block's stream and width and, for CNN features, the backbone and weights really used."""
    described = []
    for block in features.get("blocks", []):
        source = block.get("source", {})
        entry = {"stream": block["stream"], "width": block["stop"] - block["start"],
                 "weight": block["weight"]}
        if "backbone" in source:
            entry |= {"backbone": source["backbone"], "weights": source.get("weights"),
                      "pretrained": source.get("pretrained"),
                      "backbone_requested": source.get("backbone_requested", source["backbone"]),
                      "fallback_reason": source.get("fallback_reason")}
        described.append(entry)
    return described


def out_of_domain_share(predictions: pd.DataFrame) -> float | None:
    """The share of these test clips flagged out of the training clips' domain; None for a model
    that flags none (a fine-tuned network)."""
    if "in_domain" not in predictions:
        return None
    return float(1.0 - predictions["in_domain"].astype(bool).mean())


def evaluate_predictions(test_predictions: pd.DataFrame, model_card: Mapping[str, Any],
                         data_split: pd.DataFrame, data_split_settings: Mapping[str, Any],
                         evaluation_options: Mapping[str, Any], random_seed: int) -> dict[str, Any]:
    """Accuracy, unweighted average recall, macro F1, each with its bootstrap interval (resampling
    speakers where the split keeps them apart, else clips: `resampling_units`), per-class
    precision, recall and F1 and the confusion matrix, over all test clips; each fold's scores and
    each test corpus's with their intervals (leave_one_corpus_out: each corpus as scored by the
    models that never saw it); the share of test clips flagged out of the training clips' domain,
    overall and per corpus; with the split used, the features used and what was chosen on each
    fold's validation clips."""
    # scikit-learn: not imported by every run's process, which builds the pipelines with this node
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    truth, predicted = test_predictions["emotion"].astype(str), test_predictions["predicted"].astype(str)
    labels = sorted(set(truth) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    units = resampling_units(data_split, data_split_settings)

    def with_intervals(rows: pd.DataFrame) -> dict[str, Any]:
        intervals = bootstrap_scores(rows, units_of(rows, units),
                                     n_resamples=int(evaluation_options["bootstrap_resamples"]),
                                     seed=random_seed, confidence=float(evaluation_options["confidence"]))
        return {**classification_scores(rows),
                "intervals": {score: {"low": interval["low"], "high": interval["high"]}
                              for score, interval in intervals.items()}}

    corpus = data_split.drop_duplicates("clip_id").set_index("clip_id")["corpus"].astype(str) \
        if "corpus" in data_split else None
    test_corpora = (test_predictions["clip_id"].astype(str).map(corpus) if corpus is not None
                    else pd.Series("", index=test_predictions.index))
    return {
        "split": model_card["split"],
        "test_clips": len(test_predictions),
        "folds": int(test_predictions["fold"].nunique()),
        **with_intervals(test_predictions),
        "confidence": float(evaluation_options["confidence"]),
        "resampled": "speakers" if any(unit.startswith("speaker ") for unit in units.values()) else "clips",
        "out_of_domain": out_of_domain_share(test_predictions),
        "per_fold": {str(fold): classification_scores(rows)
                     for fold, rows in test_predictions.groupby("fold")},
        "per_test_corpus": {name: {"test_clips": len(rows), **with_intervals(rows),
                                   "out_of_domain": out_of_domain_share(rows)}
                            for name, rows in test_predictions.groupby(test_corpora.to_numpy())},
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)},
        "confusion_matrix": {"labels": labels,
                             "counts": confusion_matrix(truth, predicted, labels=labels).tolist()},
        "features": describe_features(model_card.get("features", {})),
        "fusion": model_card.get("features", {}).get("fusion", "early"),
        "model_selection": model_card.get("model_selection", []),
    }


def evaluation_node() -> Node:
    """Every model's scores from its test predictions and model card: modelling's and the
    fine-tuned ones alike, so that the summary and the report compare them."""
    return node(evaluate_predictions,
                inputs=["test_predictions", "model_card", "data_split", "data_split_settings",
                        "params:evaluation", "params:random_seed"],
                outputs="classification_metrics", name="evaluate_predictions")

"""Split, train, predict and score. The split is made once and shared by every variant and
classifier, so their scores are on the same test clips."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    recall_score,
)
from sklearn.pipeline import Pipeline

from emofusion.clip_array import ClipArray
from emofusion.errors import MissingClipsError
from emofusion.provenance import check_made_with

from .classifiers import prediction_table, select_and_fit

logger = logging.getLogger(__name__)

CNN_STREAM = "transfer_features"
# The summary node's keyword inputs: `<variant>__<classifier>` is a model's metrics, the same with
# this suffix its test predictions.
PREDICTIONS_KEY_SUFFIX = "__test_predictions"


def fold_rows(data_split: pd.DataFrame, fold: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """One fold's rows of the split, and its clips' emotions: from the fold's own rows, since a clip
    tested here is a training clip of another fold."""
    rows = data_split[data_split["fold"] == fold]
    return rows, dict(zip(rows["clip_id"], rows["emotion"], strict=True))


def read_subset(features: ClipArray, rows: pd.DataFrame, emotion: Mapping[str, str], subset: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The values, emotions and clip ids of one subset (train, validation, test) of a fold's
    `rows`, in file order (faster reads from a memory map)."""
    try:
        positions = np.sort(features.positions(list(rows.loc[rows["subset"] == subset, "clip_id"])))
    except MissingClipsError as error:
        raise KeyError(f"{len(error.missing)} clips of the split have no fused features (first: "
                       f"{error.missing[:3]}); the split and the features come from different runs: "
                       "run `kedro run` again") from error
    clip_ids = features.clip_ids[positions]
    return _read_rows(features.values, positions), np.array([emotion[c] for c in clip_ids]), clip_ids


def speakers_apart(rows: pd.DataFrame, clip_ids: np.ndarray, data_split_settings: Mapping[str, Any]
                   ) -> np.ndarray | None:
    """Each of these clips' speaker, when the split keeps speakers apart and every clip has one: a
    network then holds whole training speakers out to stop early, as the split tests on unheard
    speakers."""
    if data_split_settings.get("split.strategy", "random") == "random":
        return None
    speakers = rows.set_index("clip_id")["speaker"].loc[clip_ids]
    if speakers.isna().any() or speakers.astype(str).isin(["nan", "None", ""]).any():
        return None
    return speakers.astype(str).to_numpy()


def _read_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A copy of these rows. From a memory map, through a map of the same file that is closed
    right after, so the pages read do not stay mapped in (and counted against) this process for
    the rest of the node."""
    if isinstance(values, np.memmap) and values.filename:
        fresh = np.memmap(values.filename, dtype=values.dtype, mode="r", offset=values.offset,
                          shape=values.shape)
        return fresh[rows]
    return values[rows]


def combined_predictions(tables: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """The folds' prediction tables as one. A fold whose training clips lacked an emotion gives it
    no probability column: it had none."""
    predictions = pd.concat(tables, ignore_index=True)
    return predictions.fillna({column: 0.0 for column in predictions if column.startswith("p_")})


def check_model_inputs(fused_features: ClipArray, data_split_settings: Mapping[str, Any], fusion_variant: Any,
                       parameters: Mapping[str, Any]) -> None:
    """Stop before training when the stored split or fused features were made with other settings
    than the run's `parameters` (their nodes are not part of a run such as `kedro run
    --namespaces=modelling.mfcc.svm`, so they are not remade). The fused features record their
    streams' settings too, and their variant as `fusion_variant`."""
    check_made_with("data_split", data_split_settings, parameters,
                    remake="`kedro run --nodes=split_clips`, then this run again; or `kedro run "
                           "--pipelines=modelling`")
    check_made_with("fused_features", fused_features.metadata.get("made_with", {}),
                    {**parameters, "fusion_variant": fusion_variant},
                    remake="`kedro run --pipelines=fusion` (which names any feature stream to make again "
                           "first), then this run again; or plain `kedro run`")


def split_used(data_split: pd.DataFrame, data_split_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The split a model is scored on, from the split itself: its folds, and the strategy, sizes and
    seed it was made with (no seed for speaker-independent folds)."""
    return {**{key.removeprefix("split."): value for key, value in data_split_settings.items()
               if key.startswith("split.")},
            "folds": int(data_split["fold"].nunique()), "seed": data_split_settings.get("random_seed")}


def fit_and_predict(fused_features: ClipArray, data_split: pd.DataFrame,
                    data_split_settings: Mapping[str, Any], classifier_options: Mapping[str, Any],
                    reduction_options: Mapping[str, Any] | None, random_seed: int,
                    fusion_variant_options: Any, parameters: Mapping[str, Any]
                    ) -> tuple[Pipeline, dict[str, Any], pd.DataFrame]:
    """Per fold: the model chosen on that fold's validation clips and fitted on its training clips
    only (`select_and_fit`), then its predictions of the fold's test clips, made once. Returns the
    first fold's fitted pipeline, its model card and every test prediction (with
    speaker-independent folds, each clip is predicted once, by a model that never heard its
    speaker). Inputs made with other settings than the run's `parameters` are refused first
    (`check_model_inputs`).

    The model card holds what predicting new audio must reproduce, the label order and how every
    feature stream was made, what was chosen on each fold's validation clips and the split used."""
    check_model_inputs(fused_features, data_split_settings, fusion_variant_options, parameters)
    metadata = fused_features.metadata
    first_model, model_card, predictions, selections = None, {}, [], []
    folds = sorted(data_split["fold"].unique())
    for fold in folds:
        started = time.perf_counter()
        rows, emotion = fold_rows(data_split, fold)
        X_train, y_train, train_ids = read_subset(fused_features, rows, emotion, "train")
        model, selection = select_and_fit(metadata, classifier_options, reduction_options, random_seed,
                                          (X_train, y_train),
                                          read_subset(fused_features, rows, emotion, "validation")[:2],
                                          speakers_apart(rows, train_ids, data_split_settings))
        del X_train
        selections.append({"fold": int(fold), **selection})
        X_test, y_test, test_ids = read_subset(fused_features, rows, emotion, "test")
        table = prediction_table(model, X_test, pd.DataFrame({"fold": fold, "clip_id": test_ids,
                                                              "emotion": y_test}))
        predictions.append(table)
        chosen = ", ".join(f"{key} {value}" for key, value in selection["chosen"].items())
        logger.info("Fold %d/%d: %svalidation UAR %.3f; tested on %d clips: accuracy %.3f (%.1f s)",
                    fold + 1, len(folds),
                    f"chose {chosen} of {selection['candidates']} candidates, " if chosen else "",
                    selection["validation_uar"], len(test_ids),
                    float((table["emotion"] == table["predicted"]).mean()), time.perf_counter() - started)
        if first_model is None:
            first_model = model
            model_card = {"classes": [str(label) for label in model.classes_],
                          "classifier": dict(classifier_options), "reduction": dict(reduction_options or {}),
                          "fold": int(fold), "features": metadata}
    model_card["model_selection"] = selections
    model_card["split"] = split_used(data_split, data_split_settings)
    return first_model, model_card, combined_predictions(predictions)


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


def evaluate_predictions(test_predictions: pd.DataFrame, model_card: Mapping[str, Any]) -> dict[str, Any]:
    """Accuracy, unweighted average recall (the mean of per-emotion recalls, blind to class sizes),
    macro F1, per-class precision, recall and F1 and the confusion matrix, over all test clips;
    with the split used, the features used and what was chosen on each fold's validation clips."""
    truth, predicted = test_predictions["emotion"].astype(str), test_predictions["predicted"].astype(str)
    labels = sorted(set(truth) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, labels=labels,
                                                                     zero_division=0)
    return {
        "split": model_card["split"],
        "test_clips": len(test_predictions),
        "folds": int(test_predictions["fold"].nunique()),
        "accuracy": accuracy_score(truth, predicted),
        "unweighted_average_recall": recall_score(truth, predicted, labels=labels, average="macro",
                                                  zero_division=0),
        "macro_f1": f1_score(truth, predicted, labels=labels, average="macro", zero_division=0),
        "per_class": {label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)},
        "confusion_matrix": {"labels": labels,
                             "counts": confusion_matrix(truth, predicted, labels=labels).tolist()},
        "features": describe_features(model_card.get("features", {})),
        "fusion": model_card.get("features", {}).get("fusion", "early"),
        "model_selection": model_card.get("model_selection", []),
    }


def variant_streams(variant: Sequence[Any] | Mapping[str, Any]) -> frozenset[str]:
    """The streams a fusion variant reads, however it combines them: a list of streams (early
    fusion) or a mapping whose `streams` items are streams or lists of streams (late fusion). Two
    variants are compared by these sets, whatever their fusion."""
    items = variant["streams"] if isinstance(variant, Mapping) else variant
    return frozenset(stream for item in items for stream in ([item] if isinstance(item, str) else item))


def variant_normalisation(variant: Sequence[Any] | Mapping[str, Any]) -> str:
    """`speaker` for a variant standardised per speaker, else `none`."""
    return variant.get("speaker_normalisation", "none") if isinstance(variant, Mapping) else "none"


def mcnemar_test(predictions: pd.DataFrame, reference: pd.DataFrame) -> tuple[float, int, int]:
    """Exact McNemar test of two models on the same test clips, matched on (fold, clip_id): only
    the clips that one model got right and the other wrong say which is better, and under "no
    difference" each is equally likely to go either way (a two-sided binomial test).

    Returns the p-value, the clips only `predictions` got right and the clips only `reference`
    got right (p = 1 when there are none)."""
    keys = ["fold", "clip_id"]
    right = [frame[keys].astype({"clip_id": str}).assign(
        right=(frame["predicted"].astype(str) == frame["emotion"].astype(str)).to_numpy())
        for frame in (predictions, reference)]
    paired = right[0].merge(right[1], on=keys, suffixes=("", "_reference"), validate="one_to_one")
    if not len(paired) == len(predictions) == len(reference):
        raise ValueError(f"two models' test predictions share {len(paired)} of their {len(predictions)} and "
                         f"{len(reference)} clips: they come from different splits; run `kedro run` again")
    won = int((paired["right"] & ~paired["right_reference"]).sum())
    lost = int((~paired["right"] & paired["right_reference"]).sum())
    return (binomtest(won, won + lost).pvalue if won + lost else 1.0), won, lost


def compare_with_references(summary: pd.DataFrame, test_predictions: Mapping[str, pd.DataFrame],
                            fusion_variants: Mapping[str, Any]) -> pd.DataFrame:
    """`summary` with three comparisons per model, against models of the same classifier on the same
    test clips, so that each fused stream, and each lever, has to earn its place.

    - Its reference (`reference`, `reference_uar`, `uar_gain`, `mcnemar_p`, `clips_gained`,
      `clips_lost`), for a variant of two or more streams: the best (by unweighted average recall)
      of the variants whose streams are a strict subset of its own, single streams included, and
      normalised as it is (per speaker or not), so that one lever is judged at a time. Empty for
      single-stream variants and for variants none of whose subsets was trained.
    - Without the CNN (`without_cnn`, `without_cnn_uar`, `cnn_gain`, `cnn_mcnemar_p`), for a model
      that uses the `transfer_features` stream: the best variant without it, normalised or not:
      the best classical model of the run. It may be the reference too; it is what answers "does
      the CNN stream help?".
    - Without speaker normalisation (`without_speaker_normalisation`, `..._uar`,
      `speaker_normalisation_gain`, `speaker_normalisation_mcnemar_p`), for a variant standardised
      per speaker: the best variant of the same streams as they are.

    Gains are this model's UAR minus the other's; `clips_gained` / `clips_lost` are the test clips
    only this model / only the reference got right. Ties in UAR go to fewer streams, then to the
    alphabetically first variant. `test_predictions` is keyed `<variant>__<classifier>`; variants
    set to null in `fusion_variants` are switched off and ignored."""
    streams = {variant: variant_streams(value) for variant, value in fusion_variants.items()
               if value is not None}
    uar = summary.set_index(["variant", "classifier"])["unweighted_average_recall"]

    def against(variant: str, classifier: str, candidates: list[str]) -> dict[str, Any]:
        trained = [other for other in candidates if (other, classifier) in uar.index]
        if not trained:
            return {}
        best = min(trained, key=lambda other: (-uar[(other, classifier)], len(streams[other]), other))
        p, won, lost = mcnemar_test(test_predictions[f"{variant}__{classifier}"],
                                    test_predictions[f"{best}__{classifier}"])
        return {"variant": best, "uar": uar[(best, classifier)],
                "gain": uar[(variant, classifier)] - uar[(best, classifier)], "p": p,
                "won": won, "lost": lost}

    normalisation = {variant: variant_normalisation(fusion_variants[variant]) for variant in streams}
    classical = [other for other in streams if CNN_STREAM not in streams[other]]
    rows = []
    for variant, classifier in zip(summary["variant"], summary["classifier"], strict=True):
        own = streams[variant]
        reference = against(variant, classifier,
                            [other for other in streams if streams[other] < own
                             and normalisation[other] == normalisation[variant]] if len(own) >= 2 else [])
        without = against(variant, classifier, classical if CNN_STREAM in own else [])
        as_they_are = against(variant, classifier, [
            other for other in streams if streams[other] == own and normalisation[other] == "none"]
            if normalisation[variant] == "speaker" else [])
        rows.append({"speaker_normalisation": normalisation[variant],
                     "reference": reference.get("variant"), "reference_uar": reference.get("uar", np.nan),
                     "uar_gain": reference.get("gain", np.nan), "mcnemar_p": reference.get("p", np.nan),
                     "clips_gained": reference.get("won"), "clips_lost": reference.get("lost"),
                     "without_cnn": without.get("variant"), "without_cnn_uar": without.get("uar", np.nan),
                     "cnn_gain": without.get("gain", np.nan), "cnn_mcnemar_p": without.get("p", np.nan),
                     "without_speaker_normalisation": as_they_are.get("variant"),
                     "without_speaker_normalisation_uar": as_they_are.get("uar", np.nan),
                     "speaker_normalisation_gain": as_they_are.get("gain", np.nan),
                     "speaker_normalisation_mcnemar_p": as_they_are.get("p", np.nan)})
    compared = pd.DataFrame(rows, index=summary.index).astype(
        {"reference": object, "without_cnn": object, "without_speaker_normalisation": object,
         "clips_gained": "Int64", "clips_lost": "Int64"})
    return summary.join(compared)


def describe_choices(model_selection: Sequence[Mapping[str, Any]]) -> str:
    """What was chosen on the validation clips, e.g. `C 10; block_weights.transfer_features 0.5 (4
    of 6 folds), 2.0 (2)`: each setting once, its values by how many folds chose them."""
    values: dict[str, Counter] = {}
    for fold in model_selection:
        for key, value in fold.get("chosen", {}).items():
            values.setdefault(key, Counter())[json.dumps(value)] += 1
    described = []
    for key, counts in values.items():
        ranked = counts.most_common()
        if len(ranked) == 1:
            described.append(f"{key} {ranked[0][0]}")
        else:
            first, *rest = ranked
            described.append(f"{key} {first[0]} ({first[1]} of {len(model_selection)} folds), "
                             + ", ".join(f"{value} ({n})" for value, n in rest))
    return "; ".join(described)


def summarise_classification_metrics(fusion_variant_options: Mapping[str, Any], **models: Any
                                     ) -> pd.DataFrame:
    """One row per model, best unweighted average recall first, each compared with its reference
    and with the best model without the CNN stream (`compare_with_references`). The split of each
    row is the one its model was scored on, from its metrics, not from this run's parameters.
    `models` holds `<variant>__<classifier>`: its classification metrics, and the same key with
    PREDICTIONS_KEY_SUFFIX: its test predictions."""
    predictions = {key.removesuffix(PREDICTIONS_KEY_SUFFIX): value for key, value in models.items()
                   if key.endswith(PREDICTIONS_KEY_SUFFIX)}
    rows = []
    for instance, scores in models.items():
        if instance.endswith(PREDICTIONS_KEY_SUFFIX):
            continue
        variant, classifier = instance.split("__", 1)
        cnn = next((block for block in scores["features"] if "backbone" in block), {})
        rows.append({
            "variant": variant, "classifier": classifier,
            "streams": " + ".join(block["stream"] for block in scores["features"]),
            "width": sum(block["width"] for block in scores["features"]),
            "split": scores["split"]["strategy"], "split_seed": scores["split"]["seed"],
            "folds": scores["folds"], "test_clips": scores["test_clips"],
            "accuracy": scores["accuracy"], "unweighted_average_recall": scores["unweighted_average_recall"],
            "macro_f1": scores["macro_f1"], "fusion": scores.get("fusion", "early"),
            "validation_uar": np.mean([fold["validation_uar"] for fold in scores.get("model_selection", [])
                                       if "validation_uar" in fold] or [np.nan]),
            "chosen_on_validation": describe_choices(scores.get("model_selection", [])),
            "backbone": cnn.get("backbone", ""), "weights": cnn.get("weights", ""),
            "backbone_requested": cnn.get("backbone_requested", cnn.get("backbone", "")),
            "fallback_reason": cnn.get("fallback_reason") or "",
        })
    summary = (pd.DataFrame(rows).astype({"split_seed": "Int64"})
               .sort_values("unweighted_average_recall", ascending=False, kind="stable"))
    # A model on inputs that are no fusion variant (a fine-tuned network) reads the streams its
    # metrics name.
    variants = {instance.split("__", 1)[0]: [block["stream"] for block in scores["features"]]
                for instance, scores in models.items() if not instance.endswith(PREDICTIONS_KEY_SUFFIX)}
    summary = compare_with_references(summary.reset_index(drop=True), predictions,
                                      {**variants, **fusion_variant_options})
    return summary


MODEL_NAME_COLUMNS = 50  # of the log's summary: the scores take the other 50 of 100 columns


def _within(name: str, width: int = MODEL_NAME_COLUMNS) -> str:
    """A long model name cut in its middle (`…`), its start and end kept: model_summary.csv has it whole."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[head + 1 - width:]}"


def summary_text(summary: pd.DataFrame) -> str:
    """`model_summary` as the log's last lines, within 100 columns: each model's validation and test
    scores, and its gain over its reference (the best model on a subset of its streams)."""
    shown = pd.DataFrame({
        "model": (summary["variant"] + "." + summary["classifier"]).map(_within),
        "val_uar": summary["validation_uar"],
        "accuracy": summary["accuracy"], "uar": summary["unweighted_average_recall"],
        "f1": summary["macro_f1"], "vs_reference": summary["uar_gain"], "p": summary["mcnemar_p"]})
    table = shown.to_string(index=False, float_format="%.3f", na_rep="", formatters={
        "vs_reference": lambda gain: "" if pd.isna(gain) else f"{gain:+.3f}",
        "p": lambda p: "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"})
    splits = ", ".join(summary["split"].unique())
    return (f"Model summary ({splits} split, {summary['test_clips'].max()} test clips; every column in "
            "model_summary.csv):\n" + table)

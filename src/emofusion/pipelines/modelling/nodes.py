"""Split, train, predict and score. The split is made once and shared by every variant and
classifier, so their scores are on the same test clips."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ClipArray
from emofusion.finished_folds import FinishedFolds
from emofusion.fusion_layout import CNN_STREAM
from emofusion.learning.folds import (
    check_model_inputs,
    corpora_of,
    fold_results,
    read_subset,
    speakers_apart,
    split_used,
    stamp_fit_id,
)
from emofusion.learning.predictions import combined_predictions, prediction_table
from emofusion.learning.selection import (
    choose_per_fold,
    chosen_predictions,
    compare_choices,
    describe_choice,
    fold_validation_uar,
    model_rank,
    resampling_units,
    stream_counts,
    units_of,
)
from emofusion.learning.uncertainty import SCORES, bootstrap_scores, verdict
from emofusion.parallel import finished_in_processes
from emofusion.registry import with_estimator

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

logger = logging.getLogger(__name__)

# The summary node's keyword inputs: `<variant>__<classifier>` is a model's metrics, the same with
# this suffix its test predictions.
PREDICTIONS_KEY_SUFFIX = "__test_predictions"


def fit_and_predict(fused_features: ClipArray, data_split: pd.DataFrame,
                    data_split_settings: Mapping[str, Any], classifier_options: Mapping[str, Any],
                    reduction_options: Mapping[str, Any] | None, random_seed: int,
                    fusion_variant_options: Any, parameters: Mapping[str, Any],
                    finished_folds: FinishedFolds | None = None
                    ) -> tuple[Pipeline, dict[str, Any], pd.DataFrame]:
    """Per fold: the model chosen on that fold's validation clips and fitted on its training clips
    only (`select_and_fit`), then its predictions of the fold's test clips, made once; folds run
    side by side in `parameters["n_jobs"]` processes. Returns the
    first fold's fitted pipeline, its model card and every test prediction (with
    speaker-independent folds, each clip is predicted once, by a model that never heard its
    speaker). Inputs made with other settings than the run's `parameters` are refused first
    (`check_model_inputs`). Each fold is stored as it finishes (`finished_folds`, in a run), and a
    rerun reuses the folds made with the same settings unless `parameters["resume"]` is false.

    The model card holds what predicting new audio must reproduce, the label order and how every
    feature stream was made, what was chosen on each fold's validation clips, the methods its size
    chose (`costs`: the exact kernel and PCA, or their linear-cost approximations) and the split used."""
    check_model_inputs(fused_features, data_split_settings, fusion_variant_options, parameters)
    metadata = fused_features.metadata
    out_of_domain = parameters["out_of_domain"]
    made_with = {"fused_features": metadata.get("made_with", {}), "fusion_variant": fusion_variant_options,
                 "data_split": data_split_settings, "classifier": classifier_options,
                 "reduction": reduction_options, "random_seed": random_seed, "out_of_domain": out_of_domain}

    def train(todo: list[int], inputs: Mapping[int, tuple[pd.DataFrame, dict[str, str]]]) -> Any:
        # The folds to train run side by side, one per worker process (`n_jobs`), each stored as it ends;
        # one after another in a Dask task (emofusion.runner), where the models are side by side.
        first = min(inputs)
        # The kind's estimator by import path: the worker processes get no parameters to find it in.
        classifier = with_estimator(classifier_options, parameters)
        jobs = {fold: (fused_features, *inputs[fold], fold, len(inputs), classifier,
                       reduction_options, random_seed, data_split_settings, out_of_domain, fold == first)
                for fold in todo}
        return finished_in_processes(_fit_fold, jobs, n_jobs=parameters.get("n_jobs", 1), description="Folds")

    folds, results = fold_results(data_split, made_with, parameters, finished_folds, train)
    first_model = results[0]["model"]
    first_model.domain_ = results[0]["domain"]
    model_card = {"classes": [str(label) for label in first_model.classes_],
                  "classifier": dict(classifier_options), "reduction": dict(reduction_options or {}),
                  "fold": int(folds[0]), "features": metadata,
                  "model_selection": [result["selection"] for result in results],
                  "split": split_used(data_split, data_split_settings),
                  "training_domain": first_model.domain_.record()}
    return (first_model, stamp_fit_id(first_model, model_card),
            combined_predictions([result["predictions"] for result in results]))


def _fit_fold(fused_features: ClipArray, rows: pd.DataFrame, emotion: Mapping[str, str], fold: int,
              folds: int, classifier_options: Mapping[str, Any], reduction_options: Mapping[str, Any] | None,
              random_seed: int, data_split_settings: Mapping[str, Any],
              out_of_domain_options: Mapping[str, Any], keep_model: bool) -> dict[str, Any]:
    """One fold's choice, fit and test predictions, each test clip flagged in or out of the domain
    of the fold's training clips (`describe_domain`); its model and domain only where the node
    returns them."""
    # scikit-learn: not imported by every run's process, which builds this pipeline
    from emofusion.learning.assembly import cost_paths, select_and_fit
    from emofusion.learning.domain import describe_domain  # scikit-learn too

    started = time.perf_counter()
    X_train, y_train, train_ids = read_subset(fused_features, rows, emotion, "train")
    validation = read_subset(fused_features, rows, emotion, "validation")[:2]
    model, selection = select_and_fit(fused_features.metadata, classifier_options, reduction_options,
                                      random_seed, (X_train, y_train), validation,
                                      speakers_apart(rows, train_ids, data_split_settings))
    domain = describe_domain(fused_features.metadata, X_train, corpora_of(rows, train_ids), validation[0],
                             out_of_domain_options, raw_statistics=keep_model)
    del X_train
    X_test, y_test, test_ids = read_subset(fused_features, rows, emotion, "test")
    table = prediction_table(model, X_test, pd.DataFrame({"fold": fold, "clip_id": test_ids,
                                                          "emotion": y_test}))
    table["in_domain"] = domain.in_domain(X_test)
    chosen = ", ".join(f"{key} {value}" for key, value in selection["chosen"].items())
    logger.info("Fold %d/%d: %svalidation UAR %.3f; tested on %d clips: accuracy %.3f (%.1f s)",
                fold + 1, folds,
                f"chose {chosen} of {selection['candidates']} candidates, " if chosen else "",
                selection["validation_uar"], len(test_ids),
                float((table["emotion"] == table["predicted"]).mean()), time.perf_counter() - started)
    costs = cost_paths(model)
    approximate = {step: path for step, path in costs.items() if not path.startswith("exact")}
    if approximate:
        logger.info("Fold %d/%d: more training clips than the exact methods take: %s", fold + 1, folds,
                    ", ".join(f"{step} {path}" for step, path in approximate.items()))
    return {"model": model if keep_model else None, "domain": domain if keep_model else None,
            "selection": {"fold": int(fold), **selection, "costs": costs}, "predictions": table}


def corpus_scores(**metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per model and test corpus, from each model's metrics (`<variant>__<classifier>`):
    its test clips, accuracy, UAR and macro F1 with their intervals, and the share of them flagged
    out of the training clips' domain. With leave_one_corpus_out, each corpus's row is the score
    of models trained on the other corpora alone."""
    rows = [{"variant": instance.split("__", 1)[0], "classifier": instance.split("__", 1)[1],
             "corpus": name, "test_clips": scores["test_clips"],
             **{column: value for score in SCORES for column, value in (
                 (score, scores[score]), (f"{score}_low", scores["intervals"][score]["low"]),
                 (f"{score}_high", scores["intervals"][score]["high"]))},
             "out_of_domain": scores["out_of_domain"]}
            for instance, metric in metrics.items()
            for name, scores in metric.get("per_test_corpus", {}).items()]
    columns = [f"{score}{end}" for score in SCORES for end in ("", "_low", "_high")]
    return pd.DataFrame(rows, columns=["variant", "classifier", "corpus", "test_clips", *columns,
                                       "out_of_domain"])


def variant_streams(variant: Sequence[Any] | Mapping[str, Any]) -> frozenset[str]:
    """The streams a fusion variant reads, however it combines them: a list of streams (early
    fusion) or a mapping whose `streams` items are streams or lists of streams (late fusion). Two
    variants are compared by these sets, whatever their fusion."""
    items = variant["streams"] if isinstance(variant, Mapping) else variant
    return frozenset(stream for item in items for stream in ([item] if isinstance(item, str) else item))


def variant_normalisation(variant: Sequence[Any] | Mapping[str, Any]) -> str:
    """`speaker` (or `corpus`) for a variant standardised per speaker (per corpus), else `none`."""
    return variant.get("speaker_normalisation", "none") if isinstance(variant, Mapping) else "none"


def compare_with_references(summary: pd.DataFrame, validation_uar: Mapping[str, Mapping[int, float]],
                            test_predictions: Mapping[str, pd.DataFrame], fusion_variants: Mapping[str, Any],
                            units: Mapping[str, str], random_seed: int) -> pd.DataFrame:
    """`summary` with three comparisons per model, against models of the same classifier on the same
    test clips, so that each fused stream, and each lever, has to earn its place. The other side
    is chosen fold by fold on validation clips (`selection.compare_choices`) among:

    - `reference`: the variants whose streams are a strict subset of its own (single streams
      included), normalised as it is, so that one lever is judged at a time; for variants of two
      or more streams of which a subset was trained.
    - `without_cnn`: the variants without the `transfer_features` stream, normalised or not, for a
      model that uses it: what answers "does the CNN stream help?".
    - `without_speaker_normalisation`: the same streams as they are, for a variant standardised
      per speaker or per corpus.

    Each gives the other side's choice and UAR, the gain (this model's UAR minus the other's) with
    its paired bootstrap interval (`_low`, `_high`), McNemar's p and, for the reference, the test
    clips only this model / only the reference got right. `test_predictions` and
    `validation_uar` are keyed `<variant>__<classifier>`; variants set to null in
    `fusion_variants` are switched off and ignored."""
    streams = {variant: variant_streams(value) for variant, value in fusion_variants.items()
               if value is not None}
    normalisation = {variant: variant_normalisation(fusion_variants[variant]) for variant in streams}
    classical = [other for other in streams if CNN_STREAM not in streams[other]]
    trained = set(test_predictions)
    sizes = {f"{variant}__{classifier}": len(streams[variant]) for variant in streams
             for classifier in summary["classifier"].unique()}

    def against(instance: str, classifier: str, variants: list[str]) -> dict[str, Any]:
        others = [f"{other}__{classifier}" for other in variants if f"{other}__{classifier}" in trained]
        compared = compare_choices([instance], others, validation_uar, sizes, test_predictions, units,
                                   random_seed)
        if compared:
            compared["other"] = compared["other"].replace(f".{classifier}", "")
        return compared

    rows = []
    for variant, classifier in zip(summary["variant"], summary["classifier"], strict=True):
        own, instance = streams[variant], f"{variant}__{classifier}"
        subsets = [other for other in streams
                   if streams[other] < own and normalisation[other] == normalisation[variant]]
        reference = against(instance, classifier, subsets if len(own) >= 2 else [])
        without = against(instance, classifier, classical if CNN_STREAM in own else [])
        as_they_are = against(instance, classifier, [
            other for other in streams if streams[other] == own and normalisation[other] == "none"]
            if normalisation[variant] != "none" else [])
        row = {"speaker_normalisation": normalisation[variant],
               "clips_gained": reference.get("won"), "clips_lost": reference.get("lost")}
        for prefix, gain, p, compared in (("reference", "uar_gain", "mcnemar_p", reference),
                                          ("without_cnn", "cnn_gain", "cnn_mcnemar_p", without),
                                          ("without_speaker_normalisation", "speaker_normalisation_gain",
                                           "speaker_normalisation_mcnemar_p", as_they_are)):
            row |= {prefix: compared.get("other"), f"{prefix}_uar": compared.get("other_uar", np.nan),
                    gain: compared.get("gain", np.nan), f"{gain}_low": compared.get("gain_low", np.nan),
                    f"{gain}_high": compared.get("gain_high", np.nan), p: compared.get("p", np.nan)}
        rows.append(row)
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


VERDICTS = {"better": "helps", "worse": "hurts", "the data cannot tell": "the data cannot tell"}


def answer_questions(summary: pd.DataFrame, validation_uar: Mapping[str, Mapping[int, float]],
                     test_predictions: Mapping[str, pd.DataFrame], units: Mapping[str, str],
                     random_seed: int) -> pd.DataFrame:
    """The run's answers, each from models chosen fold by fold on validation clips, for all
    classifiers together and for each alone: which model is chosen and its test UAR (`chosen
    model`); and whether the CNN stream, per-speaker and per-corpus normalisation help (where the
    run has models with and without the lever): the chosen model with the lever against the chosen
    model without it, the gain with its paired bootstrap interval and McNemar's p. The verdict says
    "the data cannot tell" where the interval spans 0."""
    instance = summary["variant"] + "__" + summary["classifier"]
    sizes = dict(zip(instance, stream_counts(summary), strict=True))
    cnn = dict(zip(instance, summary["streams"].str.split(" + ", regex=False).map(
        lambda names: CNN_STREAM in names), strict=True))
    speaker = dict(zip(instance, summary["speaker_normalisation"] == "speaker", strict=True))
    corpus = dict(zip(instance, summary["speaker_normalisation"] == "corpus", strict=True))
    rows = []
    for scope in ["all", *dict.fromkeys(summary["classifier"])]:
        members = [m for m, classifier in zip(instance, summary["classifier"], strict=True)
                   if scope in ("all", classifier)]
        choice = choose_per_fold(members, validation_uar, sizes)
        chosen = chosen_predictions(choice, test_predictions)
        scores = bootstrap_scores(chosen, units_of(chosen, units), seed=random_seed)
        rows.append({"scope": scope, "question": "chosen model", "model": describe_choice(choice),
                     **{name: value for score, interval in scores.items()
                        for name, value in ((score, interval["estimate"]), (f"{score}_low", interval["low"]),
                                            (f"{score}_high", interval["high"]))}})
        for question, lever in (("does the CNN stream help?", cnn),
                                ("does per-speaker normalisation help?", speaker),
                                ("does per-corpus normalisation help?", corpus)):
            compared = compare_choices([m for m in members if lever[m]], [m for m in members if not lever[m]],
                                       validation_uar, sizes, test_predictions, units, random_seed)
            if compared:
                rows.append({"scope": scope, "question": question, "model": compared["model"],
                             "unweighted_average_recall": compared["uar"], "other": compared["other"],
                             "other_uar": compared["other_uar"], "gain": compared["gain"],
                             "gain_low": compared["gain_low"], "gain_high": compared["gain_high"],
                             "mcnemar_p": compared["p"],
                             "answer": VERDICTS[verdict(compared["gain_low"], compared["gain_high"])]})
    return pd.DataFrame(rows)


def summarise_classification_metrics(fusion_variant_options: Mapping[str, Any], data_split: pd.DataFrame,
                                     data_split_settings: Mapping[str, Any], random_seed: int, **models: Any
                                     ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per model, ranked by validation UAR (`model_rank`), each with its test scores and
    their intervals and compared with its reference, the best model without the CNN stream and the
    same streams without speaker normalisation (`compare_with_references`); and the run's answers
    (`answer_questions`). The split of each row is the one its model was scored on, from its
    metrics. `models` holds `<variant>__<classifier>`: its classification metrics, and the same
    key with PREDICTIONS_KEY_SUFFIX: its test predictions."""
    predictions = {key.removesuffix(PREDICTIONS_KEY_SUFFIX): value for key, value in models.items()
                   if key.endswith(PREDICTIONS_KEY_SUFFIX)}
    metrics = {key: value for key, value in models.items() if not key.endswith(PREDICTIONS_KEY_SUFFIX)}
    rows = []
    for instance, scores in metrics.items():
        variant, classifier = instance.split("__", 1)
        cnn = next((block for block in scores["features"] if "backbone" in block), {})
        fold_uar = [fold["unweighted_average_recall"] for fold in scores.get("per_fold", {}).values()]
        per_corpus = scores.get("per_test_corpus", {})
        rows.append({
            "variant": variant, "classifier": classifier,
            "streams": " + ".join(block["stream"] for block in scores["features"]),
            "width": sum(block["width"] for block in scores["features"]),
            "split": scores["split"]["strategy"], "split_seed": scores["split"]["seed"],
            "folds": scores["folds"], "test_clips": scores["test_clips"],
            "validation_uar": np.mean(list(fold_validation_uar(scores.get("model_selection", [])).values())
                                      or [np.nan]),
            **{name: value for score in SCORES for name, value in (
                (score, scores[score]), (f"{score}_low", scores["intervals"][score]["low"]),
                (f"{score}_high", scores["intervals"][score]["high"]))},
            # over folds (repeated random splits: over repeats)
            "fold_uar_mean": float(np.mean(fold_uar)) if fold_uar else np.nan,
            "fold_uar_sd": float(np.std(fold_uar, ddof=1)) if len(fold_uar) > 1 else np.nan,
            "uar_per_test_corpus": "; ".join(
                f"{name} {corpus['unweighted_average_recall']:.3f}" for name, corpus in per_corpus.items())
            if len(per_corpus) > 1 else "",
            "out_of_domain": scores.get("out_of_domain"),
            "fusion": scores.get("fusion", "early"),
            "chosen_on_validation": describe_choices(scores.get("model_selection", [])),
            "backbone": cnn.get("backbone", ""), "weights": cnn.get("weights", ""),
            "backbone_requested": cnn.get("backbone_requested", cnn.get("backbone", "")),
            "fallback_reason": cnn.get("fallback_reason") or "",
        })
    summary = pd.DataFrame(rows).astype({"split_seed": "Int64"})
    summary = summary.loc[model_rank(summary).sort_values().index].reset_index(drop=True)
    validation_uar = {instance: fold_validation_uar(scores.get("model_selection", []))
                      for instance, scores in metrics.items()}
    units = resampling_units(data_split, data_split_settings)
    # A model on inputs that are no fusion variant (a fine-tuned network) reads the streams its
    # metrics name.
    variants = {instance.split("__", 1)[0]: [block["stream"] for block in scores["features"]]
                for instance, scores in metrics.items()}
    summary = compare_with_references(summary, validation_uar, predictions,
                                      {**variants, **fusion_variant_options}, units, random_seed)
    return summary, answer_questions(summary, validation_uar, predictions, units, random_seed)


MODEL_NAME_COLUMNS = 50  # of the log's summary: the scores take the other 50 of 100 columns


def _within(name: str, width: int = MODEL_NAME_COLUMNS) -> str:
    """A long model name cut in its middle (`…`), its start and end kept: model_summary.csv has it whole."""
    if len(name) <= width:
        return name
    head = (width - 1) // 2
    return f"{name[:head]}…{name[head + 1 - width:]}"


def _interval(low: float, high: float) -> str:
    return f"{low:.3f}-{high:.3f}"


def summary_text(summary: pd.DataFrame, answers: pd.DataFrame | None = None) -> str:
    """`model_summary` as the log's last lines, within 100 columns, best validation UAR first: each
    model's validation UAR, test UAR with its interval, and its gain over its reference (the model
    chosen on validation among those on a subset of its streams); then the run's `answers`."""
    shown = pd.DataFrame({
        "model": (summary["variant"] + "." + summary["classifier"]).map(_within),
        "val_uar": summary["validation_uar"], "uar": summary["unweighted_average_recall"],
        "uar_95%": list(map(_interval, summary["unweighted_average_recall_low"],
                            summary["unweighted_average_recall_high"])),
        "vs_reference": summary["uar_gain"], "p": summary["mcnemar_p"]})
    table = shown.to_string(index=False, float_format="%.3f", na_rep="", formatters={
        "vs_reference": lambda gain: "" if pd.isna(gain) else f"{gain:+.3f}",
        "p": lambda p: "" if pd.isna(p) else "<0.001" if p < 0.001 else f"{p:.3f}"})
    splits = ", ".join(summary["split"].unique())
    text = (f"Model summary ({splits} split, {summary['test_clips'].max()} test clips), best validation UAR "
            "first:\n" + table)
    if answers is None:
        return text
    lines = []
    for row in answers[answers["scope"] == "all"].itertuples(index=False):
        if row.question == "chosen model":
            low, high = row.unweighted_average_recall_low, row.unweighted_average_recall_high
            chosen = f"Chosen on validation clips: {row.model}"
            scored = f"test UAR {row.unweighted_average_recall:.3f} ({_interval(low, high)})"
            lines += ([f"{chosen}; {scored}"] if len(chosen) + len(scored) < MODEL_NAME_COLUMNS * 2 - 2
                      else [chosen, f"  {scored}"])
        else:
            lines.append(f"{row.question[0].upper()}{row.question[1:]} {100 * row.gain:+.1f} points "
                         f"({100 * row.gain_low:+.1f} to {100 * row.gain_high:+.1f}): {row.answer}")
    return text + "\n" + "\n".join(lines)

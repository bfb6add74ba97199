"""modelling's nodes: scaling fitted on training clips only, classifiers, metrics."""

import logging
import os
import pickle
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from emofusion.clip_array import ClipArray
from emofusion.errors import ClassifierConfigError, StaleInputError
from emofusion.finished_folds import FinishedFolds
from emofusion.learning.assembly import build_classifier
from emofusion.learning.estimators import DenseNetworkClassifier
from emofusion.learning.evaluation import evaluate_predictions
from emofusion.learning.selection import mcnemar_test, model_rank
from emofusion.learning.splits import split_clips
from emofusion.pipelines.fusion.nodes import fuse_feature_streams
from emofusion.pipelines.modelling.nodes import (
    compare_with_references,
    corpus_scores,
    fit_and_predict,
    summarise_classification_metrics,
    summary_text,
    variant_streams,
)
from tests.conftest import project_parameters
from tests.pipelines.modelling.test_splits import EMOTIONS, RANDOM_SPLIT, manifest


def fused(n_per_emotion: int = 30, width: int = 6, seed: int = 0, speakers: int = 6
          ) -> tuple[ClipArray, pd.DataFrame]:
    """Clips whose first column says the emotion, plus noise columns."""
    rng = np.random.default_rng(seed)
    clips = manifest(speakers=speakers, clips_per_emotion=n_per_emotion // speakers)
    values = rng.normal(0, 1, (len(clips), width)).astype(np.float32)
    values[:, 0] += 4 * clips["emotion"].map({e: i for i, e in enumerate(EMOTIONS)}).to_numpy()
    blocks = [{"stream": "a", "start": 0, "stop": 2, "weight": 1.0},
              {"stream": "b", "start": 2, "stop": width, "weight": 1.0}]
    return ClipArray(clips["clip_id"].to_numpy(), values, {"blocks": blocks}), clips


def fit(features: ClipArray, made_split: tuple[pd.DataFrame, dict], classifier: dict,
        reduction: dict | None = None, finished_folds: FinishedFolds | None = None, **parameters: Any
        ) -> tuple[Any, dict, pd.DataFrame]:
    """fit_and_predict with seed 0, in a run whose parameters are those the split was made with
    (`split_clips`' second output), changed by `parameters` (`split`, `random_seed`, `fusion_variant`...)."""
    data_split, made_with = made_split
    run: dict = {"out_of_domain": project_parameters("base")["out_of_domain"]}
    for path, value in made_with.items():
        *parents, key = path.split(".")
        run_part = run
        for parent in parents:
            run_part = run_part.setdefault(parent, {})
        run_part[key] = value
    run |= parameters
    return fit_and_predict(features, data_split, made_with, classifier, reduction, 0,
                           run.pop("fusion_variant", None), run, finished_folds)


EVALUATION = {"bootstrap_resamples": 200, "confidence": 0.95}


def evaluate(predictions: pd.DataFrame, card: dict, made_split: tuple[pd.DataFrame, dict] | None = None
             ) -> dict[str, Any]:
    """evaluate_predictions on the split the predictions come from (by default a random split of
    one speaker)."""
    data_split, made_with = made_split or (predictions[["fold", "clip_id"]].assign(speaker="s", corpus="c"),
                                           {"split.strategy": "random"})
    return evaluate_predictions(predictions, card, data_split, made_with, EVALUATION, 0)


def test_no_statistic_is_fitted_on_test_clips():
    features, clips = fused()
    split = split_clips(clips, {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}, 0)
    test_ids = set(split[0].loc[split[0]["subset"] == "test", "clip_id"])
    is_test = np.array([c in test_ids for c in features.clip_ids])
    poisoned = features.values.copy()
    poisoned[is_test] += 1000.0  # would move any mean or scale that saw a test clip
    model, card, predictions = fit(ClipArray(features.clip_ids, poisoned, features.metadata), split,
                                   {"kind": "svm", "C": 1.0})
    train = poisoned[~is_test]
    assert np.allclose(model.named_steps["scale"].mean_, train.mean(axis=0), atol=1e-3)
    assert set(predictions["clip_id"]) == test_ids
    assert list(model.classes_) == EMOTIONS
    # The description of the training clips never saw a test clip either: every shifted one is flagged.
    training = (split[0]["subset"] == "train").to_numpy()
    train_rows = features.positions(split[0].loc[training, "clip_id"])
    assert np.allclose(model.domain_.mean_, poisoned[np.sort(train_rows)].mean(axis=0), atol=1e-3)
    assert not predictions["in_domain"].any()
    assert card["training_domain"]["calibration_clips"] == (split[0]["subset"] == "validation").sum()


NO_TRAINING = {"kind": "forest"}  # fails if training starts: a refusal must come before it


def test_a_model_refuses_a_split_made_with_other_settings_before_training():
    features, clips = fused()
    split = split_clips(clips, RANDOM_SPLIT, 0)
    with pytest.raises(StaleInputError) as refused:
        fit(features, split, NO_TRAINING, split=RANDOM_SPLIT | {"strategy": "speaker_independent"})
    assert str(refused.value).startswith(
        "data_split was made with split.strategy=random; this run asks for "
        "split.strategy=speaker_independent. Make it again with this run's settings")
    assert "`kedro run --nodes=split_clips`" in str(refused.value)
    with pytest.raises(StaleInputError, match="made with split.test_size=0.3, random_seed=0; this run asks "
                                              "for split.test_size=0.2, random_seed=1"):
        fit(features, split, NO_TRAINING, split=RANDOM_SPLIT | {"test_size": 0.2}, random_seed=1)
    # Speaker-independent folds draw no seed: another seed does not make them stale.
    folds = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 3}, 0)
    _, card, predictions = fit(features, folds, {"kind": "svm", "C": 1.0}, random_seed=5)
    assert card["split"] == {"strategy": "speaker_independent", "speaker_folds": 3, "folds": 3, "seed": None}
    metrics = evaluate(predictions, card, folds)
    assert metrics["split"] == card["split"]
    assert metrics["resampled"] == "speakers"  # a speaker's clips are not independent
    assert list(metrics["per_fold"]) == ["0", "1", "2"]


def folds_in(folder):
    return FinishedFolds(folder, "m.svm", arrays=folder / "arrays")


def test_a_rerun_reuses_the_stored_folds_and_retrains_those_a_changed_setting_affects(tmp_path, caplog):
    features, clips = fused()
    folds = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 3}, 0)
    svm = {"kind": "svm", "C": 1.0}
    model, card, predictions = fit(features, folds, svm, finished_folds=folds_in(tmp_path))
    assert sorted(path.name for path in tmp_path.glob("fold_*")) == [f"fold_{k}.joblib" for k in range(3)]
    (tmp_path / "fold_2.joblib").unlink()  # as a run killed in its last fold leaves them
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emofusion"):
        again = fit(features, folds, svm, finished_folds=folds_in(tmp_path))
    assert "m.svm: 2 of 3 folds reused" in caplog.text
    trained = [record.getMessage()[:8] for record in caplog.records if record.getMessage().startswith("Fold")]
    assert trained == ["Fold 3/3"]
    assert joblib.hash(again[0]) == joblib.hash(model) and again[1] == card
    pd.testing.assert_frame_equal(again[2], predictions, check_exact=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emofusion"):
        fit(features, folds, {"kind": "svm", "C": 2.0}, finished_folds=folds_in(tmp_path))
        fit(features, folds, {"kind": "svm", "C": 2.0}, finished_folds=folds_in(tmp_path),
            evaluation={"bootstrap_resamples": 500})  # a setting the folds do not depend on
    assert "m.svm: 3 stored folds were made with other settings (classifier.C)" in caplog.text
    assert "m.svm: 3 of 3 folds reused" in caplog.text


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: folds run one after another")
@pytest.mark.parametrize("classifier", [
    {"kind": "svm", "C": 1.0, "search": {"C": [1.0, 10.0]}},
    {"kind": "dnn", "layers": [{"units": 16}], "epochs": 5, "patience": 5, "batch_size": 64},
])
def test_folds_side_by_side_in_worker_processes_give_what_one_at_a_time_gives(classifier, caplog):
    features, clips = fused(speakers=9)
    folds = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 3}, 0)
    alone = fit(features, folds, classifier, n_jobs=1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="emofusion"):
        side_by_side = fit(features, folds, classifier, n_jobs=2)
    fold_lines = [record for record in caplog.records if record.getMessage().startswith("Fold")]
    assert len(fold_lines) == 3 and {record.process for record in fold_lines}.isdisjoint({os.getpid()})
    # The same model as it comes back from another process (a round trip changes a few pickled bytes).
    assert joblib.hash(side_by_side[0]) == joblib.hash(pickle.loads(pickle.dumps(alone[0])))
    assert side_by_side[1] == alone[1]
    pd.testing.assert_frame_equal(side_by_side[2], alone[2], check_exact=True)


def test_the_model_card_and_metrics_record_the_split_as_it_was_made():
    features, clips = fused()
    split = split_clips(clips, RANDOM_SPLIT, 3)
    _, card, predictions = fit(features, split, {"kind": "svm", "C": 1.0})
    assert card["split"] == {"strategy": "random", "test_size": 0.3, "validation_size": 0.15, "repeats": 1,
                             "folds": 1, "seed": 3}
    metrics = evaluate(predictions, card, split)
    assert metrics["split"] == card["split"] and metrics["resampled"] == "clips"
    interval = metrics["intervals"]["unweighted_average_recall"]
    assert interval["low"] <= metrics["unweighted_average_recall"] <= interval["high"]


def test_the_model_card_and_the_log_say_which_fold_used_an_approximation(caplog):
    features, clips = fused(n_per_emotion=36, width=40)
    split = split_clips(clips, RANDOM_SPLIT, 0)
    _, card, _ = fit(features, split, {"kind": "svm", "C": 1.0}, {"b": {"pca": 5}})
    assert [fold["costs"] for fold in card["model_selection"]] == [{"pca": "exact", "kernel": "exact_libsvm"}]
    with caplog.at_level(logging.INFO, logger="emofusion"):
        _, card, _ = fit(features, split, {"kind": "svm", "C": 1.0, "exact_kernel_max_clips": 0})
    assert [fold["costs"] for fold in card["model_selection"]] == [{"kernel": "nystroem"}]
    assert any("exact methods take: kernel nystroem" in record.getMessage() for record in caplog.records)


def test_a_model_refuses_fused_features_made_with_other_fusion_or_stream_settings():
    features, clips = fused()
    mfcc = ClipArray(features.clip_ids, features.values[:, :2], {"made_with": {"mfcc": {"n_mfcc": 40}}})
    lpcc = ClipArray(features.clip_ids, features.values[:, 2:], {"made_with": {"lpcc": {"order": 12}}})
    made = {"fusion_variant": ["mfcc", "lpcc"], "block_weights": {"mfcc": 1.0, "lpcc": 1.0},
            "block_scaling": "balanced", "mfcc": {"n_mfcc": 40}, "lpcc": {"order": 12}}
    fused_features = fuse_feature_streams(clips, made["fusion_variant"], made["block_weights"],
                                          made["block_scaling"], {"min_clips": 5}, made, mfcc, lpcc)
    assert fused_features.metadata["made_with"] == {
        "mfcc": {"n_mfcc": 40}, "lpcc": {"order": 12}, "fusion_variant": ["mfcc", "lpcc"],
        "block_scaling": "balanced", "block_weights.mfcc": 1.0, "block_weights.lpcc": 1.0}
    split = split_clips(clips, RANDOM_SPLIT, 0)
    for changed, message in [
            ({"block_weights": {"mfcc": 1.0, "lpcc": 2.0}},
             "block_weights.lpcc=1.0; this run asks for block_weights.lpcc=2.0"),
            ({"fusion_variant": ["mfcc"]}, 'fusion_variant=["mfcc", "lpcc"]; this run asks for '
                                           'fusion_variant=["mfcc"]'),
            ({"block_scaling": "standard"},
             "block_scaling=balanced; this run asks for block_scaling=standard"),
            ({"mfcc": {"n_mfcc": 20}}, "mfcc.n_mfcc=40; this run asks for mfcc.n_mfcc=20")]:
        with pytest.raises(StaleInputError) as refused:
            fit(fused_features, split, NO_TRAINING, **made | changed)
        assert str(refused.value).startswith(f"fused_features was made with {message}. Make it again")
        assert "`kedro run --pipelines=fusion`" in str(refused.value)
    _, card, _ = fit(fused_features, split, {"kind": "svm", "C": 1.0}, **made)
    assert card["features"]["made_with"] == fused_features.metadata["made_with"]


@pytest.mark.parametrize("classifier", [
    {"kind": "svm", "kernel": "rbf", "C": 10.0},
    {"kind": "dnn", "layers": [{"units": 32, "dropout": 0.5}, {"units": 16}], "learning_rate": 0.01,
     "epochs": 60, "patience": 10},
])
def test_classifiers_learn_a_separable_problem_in_both_split_strategies(classifier):
    # 12 speakers: 4 per fold, so that a network trains on 3 and holds 1 out to stop early.
    features, clips = fused(n_per_emotion=72, speakers=12)
    for split in ({"strategy": "random", "test_size": 0.3, "validation_size": 0.15},
                  {"strategy": "speaker_independent", "speaker_folds": 3}):
        _, _, predictions = fit(features, split_clips(clips, split, 0), classifier)
        assert (predictions["emotion"] == predictions["predicted"]).mean() > 0.8
        probabilities = predictions.filter(regex="^p_").to_numpy()
        assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-4)


def test_a_fitted_dense_network_survives_pickling():
    features, clips = fused()
    model, card, _ = fit(features, split_clips(
        clips, {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}, 0),
        {"kind": "dnn", "layers": [{"units": 8}], "epochs": 3})
    restored = pickle.loads(pickle.dumps(model))
    assert np.allclose(restored.predict_proba(features.values[:5]), model.predict_proba(features.values[:5]))
    assert card["classes"] == EMOTIONS == list(restored.classes_)
    # The NumPy forward pass is the Keras network's.
    import keras

    network = keras.models.model_from_json(model.named_steps["classify"].architecture_)
    network.set_weights(model.named_steps["classify"].weights_)
    scaled = model.named_steps["scale"].transform(features.values)
    assert np.allclose(network.predict(scaled, verbose=0), model.predict_proba(features.values), atol=1e-5)
    assert card["features"] == features.metadata
    (selection,) = card["model_selection"]
    assert {key: selection[key] for key in ("fold", "candidates", "chosen")} == {
        "fold": 0, "candidates": 1, "chosen": {}}
    assert 0 <= selection["validation_uar"] <= 1


def test_metrics_on_a_case_worked_by_hand():
    predictions = pd.DataFrame({"fold": 0, "clip_id": [f"c{i}" for i in range(8)],
                                "emotion": ["a", "a", "b", "b", "b", "b", "c", "c"],
                                "predicted": ["a", "b", "b", "b", "b", "c", "c", "a"]})
    metrics = evaluate(predictions, {"split": {"strategy": "random", "folds": 1, "seed": 0}})
    assert metrics["accuracy"] == pytest.approx(5 / 8)
    # recalls: a 1/2, b 3/4, c 1/2
    assert metrics["unweighted_average_recall"] == pytest.approx((1 / 2 + 3 / 4 + 1 / 2) / 3)
    # precisions: a 1/2, b 3/4, c 1/2; F1 = harmonic means
    assert metrics["per_class"]["b"] == pytest.approx(
        {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4})
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.75 + 0.5) / 3)
    assert metrics["confusion_matrix"] == {"labels": ["a", "b", "c"],
                                           "counts": [[1, 1, 0], [0, 3, 1], [1, 0, 1]]}


def test_each_test_corpus_gets_its_scores_intervals_and_share_out_of_domain():
    predictions = predictions_right_on(range(60)).assign(in_domain=[True] * 50 + [False] * 50)
    split = predictions[["fold", "clip_id"]].assign(speaker="s", corpus=["acted"] * 50 + ["natural"] * 50)
    metrics = evaluate(predictions, {"split": {"strategy": "leave_one_corpus_out", "folds": 2, "seed": 0}},
                       (split, {"split.strategy": "random"}))
    acted, natural = metrics["per_test_corpus"]["acted"], metrics["per_test_corpus"]["natural"]
    assert acted["test_clips"] == 50 and acted["accuracy"] == 1.0 and acted["out_of_domain"] == 0.0
    assert natural["accuracy"] == pytest.approx(0.2) and natural["out_of_domain"] == 1.0
    assert natural["intervals"]["accuracy"]["low"] < 0.2 < natural["intervals"]["accuracy"]["high"]
    assert metrics["out_of_domain"] == 0.5
    table = corpus_scores(mfcc__svm=metrics)
    assert list(table["corpus"]) == ["acted", "natural"] and list(table["out_of_domain"]) == [0.0, 1.0]
    assert table.loc[1, "accuracy_low"] == natural["intervals"]["accuracy"]["low"]


def predictions_right_on(right: range | set[int], clips: int = 100) -> pd.DataFrame:
    """Test predictions for clips c0..c99 (two emotions), right exactly on the clips numbered in `right`."""
    emotion = np.array(["a", "b"] * (clips // 2))
    return pd.DataFrame({"fold": 0, "clip_id": [f"c{i}" for i in range(clips)], "emotion": emotion,
                         "predicted": [e if i in right else ("b" if e == "a" else "a")
                                       for i, e in enumerate(emotion)]})


VARIANTS = {"mfcc": ["mfcc"], "lpcc": ["lpcc"], "cnn": ["transfer_features"], "mfcc_lpcc": ["mfcc", "lpcc"],
            "all_late": {"fusion": "late", "streams": [["mfcc", "lpcc"], "transfer_features"]},
            "mfcc_corpus": {"streams": ["mfcc"], "speaker_normalisation": "corpus"},
            "switched_off": None}
# mfcc is right on c0..c59; mfcc_lpcc fixes 30 of its errors (c60..c89) and makes 10 new ones (c0..c9).
PREDICTIONS = {"mfcc__svm": predictions_right_on(range(60)), "lpcc__svm": predictions_right_on(range(50)),
               "cnn__svm": predictions_right_on(range(40, 95)),
               "mfcc_lpcc__svm": predictions_right_on(set(range(10, 90))),
               "all_late__svm": predictions_right_on(range(70)),
               "mfcc_lpcc__dnn": predictions_right_on(range(70))}
UAR = {"mfcc__svm": 0.6, "lpcc__svm": 0.5, "cnn__svm": 0.55, "mfcc_lpcc__svm": 0.8, "all_late__svm": 0.7,
       "mfcc_lpcc__dnn": 0.7}


def test_variant_streams_flattens_early_and_late_variants():
    assert variant_streams(["mfcc", "transfer_features"]) == {"mfcc", "transfer_features"}
    assert variant_streams(VARIANTS["all_late"]) == {"mfcc", "lpcc", "transfer_features"}


def test_mcnemar_counts_the_clips_only_one_model_got_right():
    shuffled = PREDICTIONS["mfcc__svm"].sample(frac=1, random_state=0)
    p, won, lost = mcnemar_test(PREDICTIONS["mfcc_lpcc__svm"], shuffled)
    assert (won, lost) == (30, 10)  # joined on (fold, clip_id), not on row order
    assert p == pytest.approx(binomtest(30, 40).pvalue)
    assert mcnemar_test(PREDICTIONS["mfcc__svm"], PREDICTIONS["mfcc__svm"]) == (1.0, 0, 0)
    with pytest.raises(ValueError, match="different splits"):
        mcnemar_test(PREDICTIONS["mfcc__svm"], PREDICTIONS["mfcc__svm"].iloc[:90])


def compared_with_references(uar: dict[str, float], predictions: dict[str, pd.DataFrame],
                             variants: dict) -> pd.DataFrame:
    """compare_with_references where each model's validation UAR (one fold) is `uar`."""
    summary = pd.DataFrame([{"variant": key.split("__")[0], "classifier": key.split("__")[1],
                             "unweighted_average_recall": value} for key, value in uar.items()])
    units = {f"c{i}": f"c{i}" for i in range(100)}
    return compare_with_references(summary, {key: {0: value} for key, value in uar.items()}, predictions,
                                   variants, units, 0).set_index(["variant", "classifier"])


def test_each_fused_model_is_compared_with_the_subset_chosen_on_validation_on_the_same_clips():
    compared = compared_with_references(UAR, PREDICTIONS, VARIANTS)
    fused = compared.loc[("mfcc_lpcc", "svm")]
    assert fused["reference"] == "mfcc"  # the better of its two subsets on validation (lpcc: 0.5)
    assert fused["reference_uar"] == 0.6 and fused["uar_gain"] == pytest.approx(0.2)
    assert (fused["clips_gained"], fused["clips_lost"]) == (30, 10)
    assert fused["mcnemar_p"] == pytest.approx(binomtest(30, 40).pvalue)
    assert fused["uar_gain_low"] < 0.2 < fused["uar_gain_high"]
    assert pd.isna(fused["without_cnn"])  # it has no CNN stream to do without
    # a late variant's streams are all those it names: its best strict subset is mfcc_lpcc
    late = compared.loc[("all_late", "svm")]
    assert late["reference"] == "mfcc_lpcc" and late["uar_gain"] == pytest.approx(-0.1)
    assert late["without_cnn"] == "mfcc_lpcc" and late["cnn_gain"] == pytest.approx(-0.1)
    for single in ("mfcc", "lpcc", "cnn"):
        assert pd.isna(compared.loc[(single, "svm"), "reference"])
        assert pd.isna(compared.loc[(single, "svm"), "mcnemar_p"])
    # a single CNN stream has no reference, but is compared with the best model without it
    assert compared.loc[("cnn", "svm"), "without_cnn"] == "mfcc_lpcc"
    assert compared.loc[("cnn", "svm"), "cnn_gain"] == pytest.approx(-0.25)
    # no dnn was trained on mfcc or lpcc alone
    assert compared.loc[("mfcc_lpcc", "dnn")][["reference", "uar_gain", "clips_gained"]].isna().all()


def test_a_speaker_normalised_variant_is_compared_with_the_same_streams_as_they_are():
    variants = dict(VARIANTS, mfcc_spk={"streams": ["mfcc"], "speaker_normalisation": "speaker"},
                    mfcc_lpcc_spk={"streams": ["mfcc", "lpcc"], "speaker_normalisation": "speaker"})
    predictions = dict(PREDICTIONS, mfcc_spk__svm=predictions_right_on(range(75)),
                       mfcc_lpcc_spk__svm=predictions_right_on(range(72)))
    uar = dict(UAR, mfcc_spk__svm=0.75, mfcc_lpcc_spk__svm=0.72)
    compared = compared_with_references(uar, predictions, variants)
    spk = compared.loc[("mfcc_spk", "svm")]
    assert spk["speaker_normalisation"] == "speaker"
    assert spk["without_speaker_normalisation"] == "mfcc"
    assert spk["speaker_normalisation_gain"] == pytest.approx(0.15)
    assert spk["speaker_normalisation_mcnemar_p"] == pytest.approx(binomtest(15, 15).pvalue)
    # one lever at a time: a normalised fusion's reference is the best normalised subset, not mfcc_lpcc
    fused = compared.loc[("mfcc_lpcc_spk", "svm")]
    assert fused["reference"] == "mfcc_spk" and fused["uar_gain"] == pytest.approx(-0.03)
    assert fused["without_speaker_normalisation"] == "mfcc_lpcc"
    # the CNN stream is judged against the best classical model, normalised or not
    assert compared.loc[("cnn", "svm"), "without_cnn"] == "mfcc_lpcc"
    assert compared.loc[("mfcc", "svm"), "speaker_normalisation"] == "none"
    assert pd.isna(compared.loc[("mfcc", "svm"), "without_speaker_normalisation"])


def metrics_of(predictions: pd.DataFrame, streams: list[str], validation: dict[int, float]) -> dict:
    """A model's classification metrics as evaluate_predictions makes them, with these validation UARs."""
    split = {"strategy": "speaker_independent", "speaker_folds": 3, "folds": 3, "seed": None}
    return {**evaluate(predictions, {"split": split}),
            "features": [{"stream": stream, "width": 10, "weight": 1.0} for stream in streams],
            "model_selection": [{"fold": fold, "validation_uar": uar} for fold, uar in validation.items()]}


def summarised(models: dict[str, tuple[pd.DataFrame, list[str], dict[int, float]]]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """summarise_classification_metrics of these models (`<variant>__<classifier>`: predictions,
    streams, validation UAR per fold), on a split of one speaker per clip."""
    data_split = pd.concat([frame[["fold", "clip_id"]] for frame, _, _ in models.values()]).drop_duplicates()
    inputs = {key: metrics_of(*model) for key, model in models.items()}
    inputs |= {f"{key}__test_predictions": model[0] for key, model in models.items()}
    return summarise_classification_metrics(VARIANTS, data_split.assign(speaker="s", corpus="c"),
                                            {"split.strategy": "random"}, 0, **inputs)


def test_the_summary_ranks_models_by_validation_and_compares_them_on_their_predictions():
    summary, answers = summarised({
        "mfcc__svm": (PREDICTIONS["mfcc__svm"], ["mfcc"], {0: 0.6}),
        "mfcc_lpcc__svm": (PREDICTIONS["mfcc_lpcc__svm"], ["mfcc", "lpcc"], {0: 0.8})})
    text = summary_text(summary, answers)
    assert list(summary["variant"]) == ["mfcc_lpcc", "mfcc"]
    assert list(summary["reference"].fillna("")) == ["mfcc", ""]
    assert summary["clips_gained"].iloc[0] == 30 and summary["clips_lost"].iloc[0] == 10
    low, high = summary.loc[0, ["unweighted_average_recall_low", "unweighted_average_recall_high"]]
    assert low < summary.loc[0, "unweighted_average_recall"] == 0.8 < high
    assert "+0.200" in text and "vs_reference" in text
    assert "Chosen on validation clips: mfcc_lpcc.svm; test UAR 0.800 (" in text
    assert (summary["split"] == "speaker_independent").all() and summary["split_seed"].isna().all()
    assert "Model summary (speaker_independent split" in text
    assert max(map(len, text.splitlines())) <= 100  # readable in a 100-column terminal
    # A long name (a late fusion of fine-tuned and fused models) is cut in its middle to stay so.
    long = summary.assign(variant="compare_egemaps_mfcc_lpcc_spk_spectrogram_spk_late",
                          classifier="squeezenet_c2_spk_compare_egemaps_mfcc_lpcc_spk")
    text = summary_text(long)
    assert max(map(len, text.splitlines())) <= 100
    assert "compare_egemaps_mfcc_lpc…are_egemaps_mfcc_lpcc_spk " in text  # 50 characters


def test_no_test_score_chooses_the_order_or_the_default_model():
    from emofusion.inference import default_model

    # Equal validation UARs: fewer streams first, then the name, whatever the test scores.
    models = {"mfcc_lpcc__svm": (PREDICTIONS["mfcc_lpcc__svm"], ["mfcc", "lpcc"], {0: 0.7}),
              "mfcc__svm": (PREDICTIONS["mfcc__svm"], ["mfcc"], {0: 0.7}),
              "lpcc__svm": (PREDICTIONS["lpcc__svm"], ["lpcc"], {0: 0.7}),
              "cnn__svm": (PREDICTIONS["cnn__svm"], ["transfer_features"], {0: 0.75})}
    summary, answers = summarised(models)
    assert list(summary["variant"]) == ["cnn", "lpcc", "mfcc", "mfcc_lpcc"]
    assert default_model(summary, None) == "cnn.svm"
    # Each model given another's test predictions: the order, default and choices stay.
    keys = list(models)
    shuffled = {key: (models[keys[(i + 1) % 4]][0], *models[key][1:]) for i, key in enumerate(keys)}
    summary_shuffled, answers_shuffled = summarised(shuffled)
    assert list(summary_shuffled["variant"]) == list(summary["variant"])
    assert default_model(summary_shuffled, None) == "cnn.svm"
    assert list(answers_shuffled["model"]) == list(answers["model"])
    assert not summary_shuffled["unweighted_average_recall"].equals(summary["unweighted_average_recall"])
    # model_rank reads no test column: scrambling them changes nothing.
    scrambled = summary.assign(accuracy=0.0,
                               unweighted_average_recall=summary["unweighted_average_recall"].to_numpy()[::-1])
    assert model_rank(scrambled).equals(model_rank(summary))


def test_the_chosen_model_is_chosen_fold_by_fold_on_each_fold_s_validation_clips():
    # a is better on fold 0's validation clips, b on fold 1's: the figure for "the model chosen on
    # validation" tests a on fold 0 and b on fold 1, never a mean over folds.
    def on_fold(right: range, fold: int) -> pd.DataFrame:
        table = predictions_right_on(right)
        return table.assign(fold=fold, clip_id=f"f{fold}" + table["clip_id"])

    a = pd.concat([on_fold(range(90), 0), on_fold(range(10), 1)], ignore_index=True)
    b = pd.concat([on_fold(range(20), 0), on_fold(range(80), 1)], ignore_index=True)
    _, answers = summarised({"mfcc__svm": (a, ["mfcc"], {0: 0.9, 1: 0.2}),
                             "lpcc__svm": (b, ["lpcc"], {0: 0.3, 1: 0.6})})
    chosen = answers[(answers["scope"] == "all") & (answers["question"] == "chosen model")].iloc[0]
    assert chosen["model"] in ("lpcc.svm (1 of 2 folds), mfcc.svm (1)",
                               "mfcc.svm (1 of 2 folds), lpcc.svm (1)")
    assert chosen["unweighted_average_recall"] == pytest.approx(0.85)  # 90 + 80 of 200 right


def test_answers_say_the_data_cannot_tell_when_the_interval_spans_zero():
    # cnn gets 7 clips right that mfcc_lpcc gets wrong and 5 the other way: no finding.
    summary, answers = summarised({
        "mfcc_lpcc__svm": (predictions_right_on(range(60)), ["mfcc", "lpcc"], {0: 0.6}),
        "cnn__svm": (predictions_right_on(set(range(5, 67))), ["transfer_features"], {0: 0.7})})
    (cnn,) = answers[(answers["scope"] == "all") & (answers["question"] == "does the CNN stream help?")
                     ].itertuples()
    assert cnn.gain == pytest.approx(0.02) and cnn.gain_low < 0 < cnn.gain_high
    assert cnn.answer == "the data cannot tell"
    _, answers = summarised({
        "mfcc_lpcc__svm": (predictions_right_on(range(40)), ["mfcc", "lpcc"], {0: 0.6}),
        "cnn__svm": (predictions_right_on(range(90)), ["transfer_features"], {0: 0.7})})
    assert answers.set_index("question").loc["does the CNN stream help?", "answer"].iloc[0] == "helps"


def test_the_answers_ask_whether_per_corpus_normalisation_helps_when_a_run_has_such_models():
    # Chosen on validation clips, the model as it is wins; on the test clips the per-corpus one is right
    # on 30 more: the answer compares the chosen model with the lever against the chosen one without.
    summary, answers = summarised({
        "mfcc__svm": (predictions_right_on(range(60)), ["mfcc"], {0: 0.6}),
        "mfcc_corpus__svm": (predictions_right_on(range(90)), ["mfcc"], {0: 0.5})})
    (corpus,) = answers[(answers["scope"] == "all")
                        & (answers["question"] == "does per-corpus normalisation help?")].itertuples()
    assert (corpus.model, corpus.other, corpus.answer) == ("mfcc_corpus.svm", "mfcc.svm", "helps")
    assert corpus.gain == pytest.approx(0.3)
    chosen = answers.set_index("question").loc["chosen model", "model"].iloc[0]
    assert chosen == "mfcc.svm"  # validation clips cannot see what carries over to another corpus
    row = summary.set_index("variant").loc["mfcc_corpus"]
    assert (row["speaker_normalisation"], row["without_speaker_normalisation"]) == ("corpus", "mfcc")


def test_a_network_s_stopping_epoch_never_depends_on_a_validation_or_test_clip():
    features, clips = fused(n_per_emotion=36, speakers=12)
    split = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 3}, 0)
    rows = split[0][split[0]["fold"] == 0]
    held = set(rows.loc[rows["subset"] != "train", "clip_id"])
    poisoned = features.values.copy()
    poisoned[[clip in held for clip in features.clip_ids]] = 1000.0
    dnn = {"kind": "dnn", "layers": [{"units": 16}], "learning_rate": 0.01, "epochs": 30, "patience": 5}
    folds = (split[0][split[0]["fold"] == 0], split[1])
    model, card, _ = fit(features, folds, dnn)
    poisoned_model, poisoned_card, _ = fit(ClipArray(features.clip_ids, poisoned, features.metadata),
                                           folds, dnn)
    network, poisoned_network = model[-1], poisoned_model[-1]
    assert network.best_epoch_ == poisoned_network.best_epoch_
    assert all(np.array_equal(a, b) for a, b in zip(network.weights_, poisoned_network.weights_, strict=True))
    scores = [made["model_selection"][0]["validation_uar"] for made in (card, poisoned_card)]
    assert scores[0] != scores[1]  # the poison reached the validation clips, and nothing else


def test_classifier_entries_are_checked():
    with pytest.raises(ClassifierConfigError, match="kind 'forest'"):
        build_classifier({"kind": "forest"}, 0)
    with pytest.raises(ClassifierConfigError, match=r"svm does not take \['depth'\]"):
        build_classifier({"kind": "svm", "depth": 3}, 0)
    assert isinstance(build_classifier({"kind": "dnn", "epochs": 5}, 0), DenseNetworkClassifier)
    with pytest.raises(ClassifierConfigError, match="dnn precision 'int8'"):
        build_classifier({"kind": "dnn", "precision": "int8"}, 0).fit(
            np.zeros((4, 2)), np.array(["a", "b", "a", "b"]))


def two_stream_problem(seed: int = 0) -> tuple[ClipArray, pd.DataFrame]:
    """Stream a tells {angry, calm} from {happy, sad}; stream b tells {angry, happy} from {calm, sad}.
    Each alone gets about half the clips right; together they name every emotion."""
    rng = np.random.default_rng(seed)
    clips = manifest(speakers=6, clips_per_emotion=6)
    index = clips["emotion"].map({e: i for i, e in enumerate(EMOTIONS)}).to_numpy()
    a = rng.normal(0, 1, (len(clips), 3)) + 4 * (index >= 2)[:, None]
    b = rng.normal(0, 1, (len(clips), 5)) + 4 * (index % 2 == 1)[:, None]
    blocks = [{"stream": "a", "start": 0, "stop": 3, "weight": 1.0},
              {"stream": "b", "start": 3, "stop": 8, "weight": 1.0}]
    return ClipArray(clips["clip_id"].to_numpy(), np.hstack([a, b]).astype(np.float32),
                     {"blocks": blocks, "fusion": "late", "groups": [["a"], ["b"]]}), clips


def test_late_fusion_names_emotions_that_neither_stream_can_alone():
    features, clips = two_stream_problem()
    split = split_clips(clips, RANDOM_SPLIT, 0)
    svm = {"kind": "svm", "C": 1.0}
    accuracy = {}
    for name, metadata in {
            "a": {"blocks": features.metadata["blocks"][:1]},
            "b": {"blocks": [dict(features.metadata["blocks"][1], start=0, stop=5)]},
            "late": features.metadata}.items():
        values = {"a": features.values[:, :3], "b": features.values[:, 3:], "late": features.values}[name]
        model, card, predictions = fit(ClipArray(features.clip_ids, values, metadata), split, svm)
        accuracy[name] = (predictions["emotion"] == predictions["predicted"]).mean()
    assert accuracy["a"] < 0.65 and accuracy["b"] < 0.65
    assert accuracy["late"] > 0.9
    (selection,) = card["model_selection"]
    assert len(selection["chosen"]["late_weights"]) == 2 and selection["candidates"] == 5
    assert min(selection["chosen"]["late_weights"]) > 0  # both streams are needed
    # The fitted late model predicts from the fused matrix alone, as `emofusion predict` calls it.
    restored = pickle.loads(pickle.dumps(model))
    assert np.array_equal(restored.predict(features.values), model.predict(features.values))


def test_test_labels_cannot_influence_any_choice():
    features, clips = two_stream_problem(seed=1)
    split, made_with = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 3}, 0)
    shuffled = split.copy()  # each fold's test rows get shuffled labels; other folds keep theirs
    is_test = shuffled["subset"] == "test"
    shuffled.loc[is_test, "emotion"] = np.random.default_rng(5).permutation(shuffled.loc[is_test, "emotion"])
    assert (shuffled["emotion"] != split["emotion"]).sum() > 30
    svm = {"kind": "svm", "search": {"C": [0.1, 1.0, 100.0], "block_weights.b": [0.5, 1.0, 2.0]}}
    early = ClipArray(features.clip_ids, features.values, {"blocks": features.metadata["blocks"]})
    for fused in (early, features):
        _, card, predictions = fit(fused, (split, made_with), svm, {"b": {"pca": 2}})
        _, shuffled_card, shuffled_predictions = fit(fused, (shuffled, made_with), svm, {"b": {"pca": 2}})
        assert card["model_selection"] == shuffled_card["model_selection"]
        assert predictions["predicted"].equals(shuffled_predictions["predicted"])
        assert all(len(fold["chosen"]) >= 2 for fold in card["model_selection"])


def test_pca_is_fitted_on_training_clips_only_and_travels_with_the_model():
    features, clips = fused(n_per_emotion=36, width=40)
    split = split_clips(clips, RANDOM_SPLIT, 0)
    is_test = np.isin(features.clip_ids, split[0].loc[split[0]["subset"] == "test", "clip_id"])
    poisoned = features.values.copy()
    poisoned[is_test, 2:] = np.random.default_rng(9).normal(0, 1000, (is_test.sum(), 38))
    reduction = {"b": {"pca": 5}}
    models = [fit(ClipArray(features.clip_ids, values, features.metadata), split, {"kind": "svm", "C": 1.0},
                  reduction)[0]
              for values in (features.values, poisoned)]
    clean, dirty = (model.named_steps["reduce"].projections_[1] for model in models)
    assert models[0].named_steps["reduce"].projections_[0] is None  # block a is not reduced
    assert clean[1].shape == (5, 38)
    assert np.allclose(clean[0], dirty[0]) and np.allclose(clean[1], dirty[1])
    # the model takes the fused matrix as it is: the projection is inside it
    assert models[0].predict(features.values[:3]).shape == (3,)


def test_search_and_reduction_settings_are_checked():
    from emofusion.learning.validators import validated_reduction, validated_search

    with pytest.raises(ClassifierConfigError, match="search key 'depth'"):
        validated_search({"kind": "svm", "search": {"depth": [1, 2]}}, ["a"])
    with pytest.raises(ClassifierConfigError, match="names no known stream"):
        validated_search({"kind": "svm", "search": {"pca.c": [4]}}, ["a"])
    with pytest.raises(ClassifierConfigError, match=r"search.learning_rate: has no candidates \(got \[\]\)"):
        validated_search({"kind": "dnn", "search": {"learning_rate": []}}, ["a"])
    with pytest.raises(ClassifierConfigError, match="unknown stream 'c'"):
        validated_reduction({"c": {"pca": 4}}, ["a"])
    with pytest.raises(ClassifierConfigError, match="reduction.a.pca: Input should be greater than 0"):
        validated_reduction({"a": {"pca": 0}}, ["a"])
    validated_search({"kind": "svm", "search": {"C": [1, 10], "block_weights.a": [1, 2]}}, ["a"])

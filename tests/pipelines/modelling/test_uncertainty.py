"""modelling's bootstrap intervals: exact point estimates, coverage at the stated rate (by speaker
where speakers differ), paired differences, seeding."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, f1_score, recall_score

from emofusion.learning.uncertainty import (
    bootstrap_scores,
    paired_bootstrap_difference,
    verdict,
)

EMOTIONS = ["angry", "calm", "happy", "sad"]
SCORES = ["accuracy", "unweighted_average_recall", "macro_f1"]
# Resamples per interval in the coverage tests: enough for the 2.5th and 97.5th percentiles, and
# half the default's time over their 900 intervals.
COVERAGE_RESAMPLES = 500


def prediction_table(truth: np.ndarray, correct: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """A test-prediction table of class indices `truth`: right where `correct`, else one of the
    other emotions at random."""
    wrong = (truth + rng.integers(1, len(EMOTIONS), size=len(truth))) % len(EMOTIONS)
    labels = np.array(EMOTIONS)
    return pd.DataFrame({"fold": 0, "clip_id": [f"clip{row}" for row in range(len(truth))],
                         "emotion": labels[truth], "predicted": labels[np.where(correct, truth, wrong)]})


def coverage(intervals: list[dict[str, float]], true_value: float) -> float:
    return float(np.mean([interval["low"] <= true_value <= interval["high"] for interval in intervals]))


def test_point_estimates_are_sklearns_on_all_rows_a_class_predicted_but_never_true_included():
    rng = np.random.default_rng(3)
    truth = rng.choice(EMOTIONS, size=500)
    predicted = np.where(rng.random(500) < 0.55, truth, rng.choice([*EMOTIONS, "neutral"], size=500))
    table = pd.DataFrame({"fold": rng.integers(0, 3, 500), "clip_id": np.arange(500), "emotion": truth,
                          "predicted": predicted})
    scores = bootstrap_scores(table, units=rng.integers(0, 12, 500), n_resamples=200)
    assert "neutral" in set(predicted) - set(truth)
    assert scores["accuracy"]["estimate"] == accuracy_score(truth, predicted)
    assert scores["unweighted_average_recall"]["estimate"] == recall_score(truth, predicted, average="macro",
                                                                           zero_division=0)
    assert scores["macro_f1"]["estimate"] == f1_score(truth, predicted, average="macro", zero_division=0)
    for score in SCORES:
        assert scores[score]["low"] < scores[score]["estimate"] < scores[score]["high"]


def test_the_interval_of_independent_clips_covers_the_true_uar_at_about_95_percent():
    # Balanced classes, each clip right with its class's probability: the true UAR is their mean.
    accuracy_per_class = np.array([0.5, 0.6, 0.7, 0.8])
    rng = np.random.default_rng(11)
    truth = np.repeat(np.arange(len(EMOTIONS)), 50)
    intervals = []
    for seed in range(300):
        table = prediction_table(truth, rng.random(len(truth)) < accuracy_per_class[truth], rng)
        intervals.append(bootstrap_scores(table, units=None, n_resamples=COVERAGE_RESAMPLES,
                                          seed=seed)["unweighted_average_recall"])
    assert 0.90 <= coverage(intervals, accuracy_per_class.mean()) <= 0.99


def test_with_speaker_effects_resampling_speakers_covers_the_true_uar_and_resampling_clips_does_not():
    # 30 speakers per test set, 4 clips of each emotion each; a speaker's clips are right with
    # their class's probability shifted by the speaker's own, uniform in +-0.3 (mean 0), so the
    # true UAR is the mean of the class probabilities, and a speaker's clips succeed or fail
    # together.
    accuracy_per_class = np.array([0.45, 0.55, 0.65, 0.7])
    speakers, clips_per_emotion = 30, 4
    rng = np.random.default_rng(12)
    speaker = np.repeat(np.arange(speakers), len(EMOTIONS) * clips_per_emotion)
    truth = np.tile(np.repeat(np.arange(len(EMOTIONS)), clips_per_emotion), speakers)
    by_speaker, by_clip = [], []
    for seed in range(300):
        accuracy = accuracy_per_class[truth] + rng.uniform(-0.3, 0.3, size=speakers)[speaker]
        table = prediction_table(truth, rng.random(len(truth)) < accuracy, rng)
        for units, intervals in ((speaker, by_speaker), (None, by_clip)):
            intervals.append(bootstrap_scores(table, units, n_resamples=COVERAGE_RESAMPLES,
                                              seed=seed)["unweighted_average_recall"])
    speaker_coverage, clip_coverage = (coverage(intervals, accuracy_per_class.mean())
                                       for intervals in (by_speaker, by_clip))
    assert 0.90 <= speaker_coverage <= 0.99
    assert clip_coverage < 0.85
    assert clip_coverage < speaker_coverage - 0.08


def model_and_reference(accuracy: float, reference_accuracy: float, rows: int = 600
                        ) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """Two models' predictions of the same clips, right independently with the given
    probabilities, and the clips' speakers."""
    rng = np.random.default_rng(5)
    truth = rng.integers(0, len(EMOTIONS), size=rows)
    model = prediction_table(truth, rng.random(rows) < accuracy, rng)
    reference = prediction_table(truth, rng.random(rows) < reference_accuracy, rng)
    return model, reference, rng.integers(0, 20, size=rows)


def test_a_model_against_itself_differs_by_exactly_zero_with_a_zero_width_interval():
    model, _, speakers = model_and_reference(0.7, 0.7)
    difference = paired_bootstrap_difference(model, model.copy(), speakers)
    assert difference == {score: {"difference": 0.0, "low": 0.0, "high": 0.0} for score in SCORES}
    assert verdict(difference["macro_f1"]["low"], difference["macro_f1"]["high"]) == "the data cannot tell"


def test_a_model_better_by_construction_has_a_difference_interval_above_zero_and_its_reference_below():
    model, reference, speakers = model_and_reference(0.8, 0.6)
    better = paired_bootstrap_difference(model, reference, speakers)
    worse = paired_bootstrap_difference(reference, model, speakers)
    model_scores, reference_scores = bootstrap_scores(model, speakers), bootstrap_scores(reference, speakers)
    for score in SCORES:
        assert better[score]["difference"] == pytest.approx(model_scores[score]["estimate"]
                                                            - reference_scores[score]["estimate"])
        assert 0 < better[score]["low"] < better[score]["difference"] < better[score]["high"]
        assert verdict(better[score]["low"], better[score]["high"]) == "better"
        assert verdict(worse[score]["low"], worse[score]["high"]) == "worse"
        assert worse[score]["low"] == pytest.approx(-better[score]["high"])


def test_the_reference_is_matched_on_fold_and_clip_not_on_row_order():
    model, reference, speakers = model_and_reference(0.8, 0.6)
    shuffled = reference.sample(frac=1, random_state=0)
    assert paired_bootstrap_difference(model, shuffled, speakers) == paired_bootstrap_difference(
        model, reference, speakers)


@pytest.mark.parametrize("mismatch", [lambda table: table.iloc[1:],
                                      lambda table: table.assign(fold=1)])
def test_models_on_different_clips_are_refused(mismatch):
    model, reference, speakers = model_and_reference(0.8, 0.6)
    with pytest.raises(ValueError, match="different splits"):
        paired_bootstrap_difference(model, mismatch(reference), speakers)


def test_models_that_disagree_on_a_clips_truth_are_refused():
    model, reference, speakers = model_and_reference(0.8, 0.6)
    reference.loc[0, "emotion"] = "angry" if reference.loc[0, "emotion"] != "angry" else "sad"
    with pytest.raises(ValueError, match="different true emotions"):
        paired_bootstrap_difference(model, reference, speakers)


def test_units_must_be_one_per_row():
    model, _, speakers = model_and_reference(0.7, 0.7)
    with pytest.raises(ValueError, match="one per row"):
        bootstrap_scores(model, speakers[1:])


def test_the_same_seed_gives_the_same_intervals_and_another_seed_others():
    model, reference, speakers = model_and_reference(0.8, 0.6)
    assert bootstrap_scores(model, speakers, seed=4) == bootstrap_scores(model, speakers, seed=4)
    assert bootstrap_scores(model, speakers, seed=4) != bootstrap_scores(model, speakers, seed=5)
    assert paired_bootstrap_difference(model, reference, speakers, seed=4) == paired_bootstrap_difference(
        model, reference, speakers, seed=4)


@pytest.mark.parametrize(("low", "high", "said"), [(0.01, 0.05, "better"), (-0.05, -0.01, "worse"),
                                                    (-0.01, 0.02, "the data cannot tell"),
                                                    (0.0, 0.03, "the data cannot tell")])
def test_verdict_says_better_or_worse_only_when_the_interval_excludes_zero(low, high, said):
    assert verdict(low, high) == said

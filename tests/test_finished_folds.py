"""Finished folds are stored as they finish and reused only when made with the same settings."""

import logging

import numpy as np
import pandas as pd

from emofusion.datasets import FinishedFoldsDataset
from emofusion.finished_folds import FinishedFolds, fold_fingerprint, resumed_folds

MADE_WITH = {"classifier": {"kind": "svm", "C": 1.0}, "clips": "abc"}


def counting(made: list):
    """A maker of folds that records each fold it makes."""
    def make(folds):
        for fold in folds:
            made.append(len(made))
            yield fold, {"predictions": pd.DataFrame({"p": np.linspace(0, 1, 7) / 3})}
    return make


def resumed(store, fold, made_with, parameters, make):
    return resumed_folds(store, {fold: made_with}, parameters, make)[fold]


def test_a_stored_fold_is_reused_exactly_and_only_with_the_same_settings(tmp_path, caplog):
    folder = tmp_path / "mfcc" / "svm_folds"
    made: list = []
    dataset = FinishedFoldsDataset(path=str(folder), arrays=str(folder.parent / "arrays"))
    first = resumed(dataset.load(), 0, MADE_WITH, {}, counting(made))
    with caplog.at_level(logging.INFO, logger="emofusion"):
        again = dataset.load()
        reused = resumed(again, 0, MADE_WITH, {"resume": True}, counting(made))
        resumed(again, 1, MADE_WITH, {}, counting(made))  # never stored
        resumed(again, 0, {**MADE_WITH, "classifier": {"kind": "svm", "C": 10}}, {}, counting(made))
        again.report(2)
    assert made == [0, 1, 2]  # fold 0, fold 1, fold 0 again for C 10
    pd.testing.assert_frame_equal(reused["predictions"], first["predictions"], check_exact=True)
    assert "mfcc.svm: 1 of 2 folds reused from an earlier run" in caplog.text
    assert "mfcc.svm: 1 stored folds were made with other settings (classifier.C)" in caplog.text


def test_resume_false_trains_every_fold_again_and_stores_the_new_one(tmp_path):
    store = FinishedFolds(tmp_path, "m", arrays=tmp_path / "arrays")
    made: list = []
    resumed(store, 0, MADE_WITH, {}, counting(made))
    resumed(store, 0, MADE_WITH, {"resume": False}, counting(made))
    assert made == [0, 1]
    assert store.reuse(0, MADE_WITH) is not None


def test_an_unreadable_fold_is_trained_again_with_a_warning(tmp_path, caplog):
    store = FinishedFolds(tmp_path, "m", arrays=tmp_path / "arrays")
    resumed(store, 0, MADE_WITH, {}, counting([]))
    (tmp_path / "fold_0.joblib").write_bytes(b"cut sho")
    with caplog.at_level(logging.WARNING, logger="emofusion"):
        assert store.reuse(0, MADE_WITH) is None
    assert "stored fold 1 cannot be read" in caplog.text


def test_without_a_store_a_fold_is_made_each_time():
    made: list = []
    resumed(None, 0, MADE_WITH, {}, counting(made))
    resumed(None, 0, MADE_WITH, {}, counting(made))
    assert made == [0, 1]


def test_a_fold_s_fingerprint_follows_its_clips_not_their_order():
    rows = pd.DataFrame({"clip_id": ["a", "b", "c"], "subset": ["train", "validation", "test"],
                         "emotion": ["x", "y", "x"]})
    assert fold_fingerprint(rows) == fold_fingerprint(rows.iloc[::-1])
    assert fold_fingerprint(rows) != fold_fingerprint(rows.assign(subset=["train", "test", "validation"]))


def test_folds_made_in_any_order_are_each_stored_and_only_the_missing_ones_are_made(tmp_path):
    store = FinishedFolds(tmp_path, "m", arrays=tmp_path / "arrays")
    resumed(store, 1, MADE_WITH, {}, counting([]))
    asked = []

    def backwards(folds):
        asked.extend(folds)
        for fold in reversed(folds):
            yield fold, {"fold": fold}
    results = resumed_folds(store, {fold: MADE_WITH for fold in range(3)}, {}, backwards)
    assert asked == [0, 2]
    assert sorted(results) == [0, 1, 2] and results[2] == {"fold": 2}
    assert store.reuse(0, MADE_WITH) == {"fold": 0} and store.reuse(2, MADE_WITH) == {"fold": 2}

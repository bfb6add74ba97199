"""The estimators of emofusion.learning on their own: block scaling, the kernel SVM, the dense network."""

import logging
import os

import numpy as np
import pandas as pd
import pytest
from sklearn.svm import SVC
from sklearn.utils.estimator_checks import parametrize_with_checks

from emofusion.learning.blocks import BlockReducer, BlockScaler
from emofusion.learning.estimators import DenseNetworkClassifier, KernelSVC
from emofusion.learning.predictions import prediction_table
from emofusion.learning.training_process import early_stopping_rows


def test_block_scaler_gives_each_block_the_total_variance_of_its_weight():
    rng = np.random.default_rng(0)
    X = np.hstack([rng.normal(5, 3, (200, 4)), rng.normal(-2, 0.1, (200, 400))]).astype(np.float32)
    scaled = BlockScaler([(0, 4), (4, 404)], [1.0, 2.0]).fit(X).transform(X)
    assert scaled.dtype == np.float32
    assert np.allclose(scaled.mean(axis=0), 0, atol=1e-4)
    assert scaled[:, :4].var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    assert scaled[:, 4:].var(axis=0).sum() == pytest.approx(4.0, rel=1e-3)


def test_block_scaler_standardises_columns_of_every_scale_side_by_side():
    # As in ComParE: a column around 4e11 beside one around 5e3 and one of unit scale.
    rng = np.random.default_rng(0)
    X = np.stack([4e11 + 1e10 * rng.normal(size=300), 5e3 + 1e3 * rng.normal(size=300),
                  rng.normal(size=300), np.full(300, 7.0)], axis=1).astype(np.float32)
    scaled = BlockScaler([(0, 4)], [1.0], balanced=False).fit(X).transform(X)
    np.testing.assert_allclose(scaled[:, :3].std(axis=0), 1.0, rtol=1e-3)
    assert not scaled[:, 3].any()  # a constant column stays 0


@pytest.mark.parametrize("kernel_matrix_min_columns", [0, 31])  # the kernel matrix; the rows
def test_kernel_svc_predicts_as_libsvm_does_with_its_own_kernel(kernel_matrix_min_columns):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(120, 30)).astype(np.float32)
    y = np.where(X[:, 0] + X[:, 1] ** 2 > 0.5, "a", np.where(X[:, 2] > 0, "b", "c"))
    X_test = rng.normal(size=(50, 30)).astype(np.float32)
    ours = KernelSVC(C=3.0, gamma=0.05, probability=False,
                     kernel_matrix_min_columns=kernel_matrix_min_columns).fit(X, y)
    assert not hasattr(ours, "predict_proba")  # so callers can tell, as with scikit-learn's SVC
    reference = SVC(C=3.0, gamma=0.05).fit(X.astype(np.float64), y)
    assert np.array_equal(ours.predict(X_test), reference.predict(X_test))
    assert np.allclose(ours.decision_function(X_test), reference.decision_function(X_test), atol=1e-4)
    assert len(ours.svc_.support_) == len(reference.support_) < len(X)


def test_the_dense_network_trains_in_its_own_process_reproducibly_and_logs_here(caplog):
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 20)
    X = (rng.normal(size=(40, 6)) + (y == "b")[:, None]).astype(np.float32)
    with caplog.at_level(logging.DEBUG, logger="emofusion"):  # each epoch at DEBUG, beside a progress bar
        first = DenseNetworkClassifier(layers=[{"units": 8}], epochs=4, random_state=3).fit(X, y)
    second = DenseNetworkClassifier(layers=[{"units": 8}], epochs=4, random_state=3).fit(X, y)
    assert all(np.array_equal(a, b) for a, b in zip(first.weights_, second.weights_, strict=True))
    epochs = [r for r in caplog.records if r.getMessage().startswith("DNN epoch")]
    assert len(epochs) == first.epochs_run_ > 0
    assert {r.process for r in epochs} != {os.getpid()}


def test_early_stopping_holds_out_whole_training_speakers_or_a_stratified_share():
    y = np.tile(np.repeat(["a", "b", "c"], 4), 10)  # 10 speakers of 12 clips
    speakers = np.repeat([f"s{i}" for i in range(10)], 12)
    fitted, stopping = early_stopping_rows(y, speakers, 0.2, seed=0)
    assert len(set(speakers[stopping])) == 2 and not set(speakers[stopping]) & set(speakers[fitted])
    assert sorted([*fitted, *stopping]) == list(range(len(y)))
    fitted, stopping = early_stopping_rows(y, None, 0.2, seed=0)
    assert {label: int((y[stopping] == label).sum()) for label in "abc"} == {"a": 8, "b": 8, "c": 8}
    assert np.array_equal(early_stopping_rows(y, None, 0.2, seed=0)[1], stopping)  # seeded
    with pytest.raises(ValueError, match="too few training clips"):
        early_stopping_rows(np.array(["a", "b"]), None, 0.2, seed=0)


def test_svm_answers_are_the_most_probable_class_as_emofusion_predict_gives():
    # Scored predictions (`predict`, `prediction_table`) and the probabilities `emofusion predict`
    # takes the argmax of must agree on every clip, for a problem where the vote and the
    # calibrated probabilities could differ.
    rng = np.random.default_rng(4)
    X = rng.normal(size=(240, 10)).astype(np.float32)
    rank = (X[:, :3].sum(axis=1) * 2 + rng.normal(size=240)).argsort().argsort()
    y = np.array(list("abcdefgh"))[rank // 30]
    X_test = rng.normal(size=(300, 10)).astype(np.float32)
    svm = KernelSVC(C=3.0, random_state=0).fit(X, y)
    probabilities = svm.predict_proba(X_test)
    assert np.array_equal(svm.predict(X_test), svm.classes_[probabilities.argmax(axis=1)])
    table = prediction_table(svm, X_test, pd.DataFrame({"clip_id": np.arange(300)}))
    assert np.array_equal(table["predicted"], svm.predict(X_test))


@pytest.mark.parametrize("shape", [(40, 300), (300, 20)])
def test_principal_components_are_those_of_scikit_learn(shape):
    from sklearn.decomposition import PCA

    from emofusion.learning.blocks import principal_components

    rng = np.random.default_rng(3)
    rows = (rng.normal(size=shape) * np.linspace(3, 0.1, shape[1])).astype(np.float32)
    mean, axes = principal_components(rows, 5)
    reference = PCA(5, svd_solver="full").fit(rows.astype(np.float64))
    assert np.allclose(mean, reference.mean_, atol=1e-5)
    # The same axes up to sign, and orthonormal.
    assert np.allclose(np.abs(axes @ reference.components_.T), np.eye(5), atol=1e-3)
    assert np.allclose(axes @ axes.T, np.eye(5), atol=1e-4)


def deviations(estimator) -> dict[str, str]:
    """The scikit-learn checks each estimator fails by design, with the reason."""
    if isinstance(estimator, BlockScaler):
        return {"check_transformer_preserve_dtypes": "float32 out whatever comes in: fused features are up "
                                                     "to 98,304 columns wide, float64 would double them"}
    return {}


@parametrize_with_checks([
    BlockScaler(), KernelSVC(),
    DenseNetworkClassifier(layers=[{"units": 16}], epochs=5, patience=5, learning_rate=0.05, batch_size=64)],
    expected_failed_checks=deviations)
def test_the_estimators_follow_scikit_learn_s_conventions(estimator, check):
    check(estimator)


def test_the_reduced_clips_take_each_candidate_s_block_weights_without_being_transformed_again():
    """The SVM's search transforms the clips once per fitted PCA and gives each candidate its block
    weights afterwards (`BlockReducer.reweighted`): the same numbers, bit for bit, as transforming
    them with those weights."""
    X = np.random.default_rng(0).normal(size=(60, 40)).astype(np.float32)
    reducer = BlockReducer([(0, 8), (8, 40)], [None, 5], [0.5, 2.0]).fit(X)
    weighted = reducer.transform(X)
    unweighted = reducer.set_params(weights=[]).transform(X)
    assert not np.array_equal(unweighted, weighted)
    assert np.array_equal(reducer.set_params(weights=[0.5, 2.0]).reweighted(unweighted), weighted)

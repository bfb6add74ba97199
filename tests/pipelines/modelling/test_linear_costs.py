"""The methods whose cost grows linearly with the training clips, used above the exact ones' sizes:
the SVM on a Nyström map of its kernel, PCA batch by batch."""

import numpy as np
import pytest
from sklearn.metrics import recall_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from emofusion.learning import estimators
from emofusion.learning.assembly import build_model, cost_paths
from emofusion.learning.blocks import ROWS_PER_CHUNK, BlockReducer, principal_components
from emofusion.learning.estimators import KernelSVC

UAR_MARGIN = 0.03  # the Nyström SVM's UAR may fall this far below the exact one's on this problem


def curved_problem(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Four classes of 8-dimensional rows that no linear rule separates: the RBF kernel's problem."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = np.array(list("abcd"))[(X[:, 0] ** 2 + X[:, 1] ** 2 > 1.4).astype(int) * 2 + (X[:, 2] * X[:, 3] > 0)]
    return X, y


def test_the_nystroem_svm_scores_as_the_exact_one_within_the_margin():
    X, y = curved_problem(3000, seed=0)
    X_test, y_test = curved_problem(2000, seed=1)
    uar = {}
    for threshold in (10_000, 0):
        svm = KernelSVC(C=10.0, exact_kernel_max_clips=threshold, approximate_components=500,
                        kernel_matrix_min_columns=0, random_state=0).fit(X, y)
        uar[svm.kernel_path_] = recall_score(y_test, svm.predict(X_test), average="macro")
    assert uar["exact"] > 0.8
    assert uar["nystroem"] >= uar["exact"] - UAR_MARGIN


def test_above_the_threshold_no_kernel_of_the_clips_is_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the exact kernel was computed")

    monkeypatch.setattr(estimators, "rbf_kernel", refuse)
    X, y = curved_problem(600, seed=2)
    svm = KernelSVC(exact_kernel_max_clips=599, approximate_components=100, random_state=0).fit(X, y)
    assert svm.kernel_path_ == "nystroem" and not hasattr(svm, "support_vectors_")
    probabilities = svm.predict_proba(X[:200])
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    # As KernelSVC promises: with probabilities, its answer is the most probable class...
    assert np.array_equal(svm.predict(X[:200]), svm.classes_[probabilities.argmax(axis=1)])
    # ...and without, the one-vs-one vote, the largest of the aggregated scores.
    voting = KernelSVC(probability=False, exact_kernel_max_clips=0, approximate_components=100,
                       random_state=0).fit(X, y)
    scores = voting.decision_function(X[:200])
    assert np.array_equal(voting.predict(X[:200]), voting.classes_[scores.argmax(axis=1)])


def test_narrow_rows_go_to_libsvm_as_they_are_with_the_kernel_matrix_s_answers(monkeypatch):
    X, y = curved_problem(1500, seed=5)
    X_test, _ = curved_problem(1000, seed=6)
    matrix = KernelSVC(C=10.0, kernel_matrix_min_columns=0, random_state=0).fit(X, y)
    matrix_answers, matrix_probabilities = matrix.predict(X_test), matrix.predict_proba(X_test)

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel matrix was computed")

    monkeypatch.setattr(estimators, "rbf_kernel", refuse)
    rows = KernelSVC(C=10.0, kernel_matrix_min_columns=9, random_state=0).fit(X, y)
    assert (matrix.kernel_path_, rows.kernel_path_) == ("exact", "exact_libsvm")
    assert (rows.predict(X_test) == matrix_answers).mean() >= 0.99
    assert np.abs(rows.predict_proba(X_test) - matrix_probabilities).max() < 0.05


def test_the_linear_kernel_above_the_threshold_is_linear_svms_on_the_rows():
    X, y = curved_problem(300, seed=3)
    svm = KernelSVC(kernel="linear", exact_kernel_max_clips=0, random_state=0).fit(X, y)
    assert svm.kernel_path_ == "linear" and svm.kernel_map_ is None
    assert np.allclose(svm.predict_proba(X).sum(axis=1), 1.0)


def test_incremental_pca_finds_the_exact_axes_of_a_low_rank_block():
    rng = np.random.default_rng(4)
    rows = (rng.normal(size=(900, 6)) @ rng.normal(size=(6, 500)) * np.linspace(3, 1, 6)[:, None].mean()
            + 0.01 * rng.normal(size=(900, 500))).astype(np.float32)
    exact = BlockReducer([(0, 500)], [6]).fit(rows)
    batched = BlockReducer([(0, 500)], [6], exact_max_clips=899, batch_clips=100).fit(rows)
    assert (exact.path_, batched.path_) == ("exact", "incremental")
    mean, axes = batched.projections_[0]
    reference_mean, reference_axes = principal_components(rows, 6)
    assert np.allclose(mean, reference_mean, atol=1e-4)
    assert np.allclose(np.abs(axes @ reference_axes.T), np.eye(6), atol=1e-3)  # the same span
    assert axes.dtype == np.float32


def test_the_reduction_is_applied_row_chunk_by_row_chunk_with_the_whole_block_s_result():
    rows = np.random.default_rng(0).standard_normal((ROWS_PER_CHUNK * 2 + 37, 300)).astype(np.float32)
    reducer = BlockReducer([(0, 20), (20, 300)], [None, 16], [1.0, 0.5]).fit(rows)
    mean, axes = reducer.projections_[1]
    whole = np.hstack([rows[:, :20], 0.5 * ((rows[:, 20:] - mean) @ axes.T)])
    reduced = reducer.transform(rows)
    # Equal but for float32 rounding: BLAS sums a chunk's products in another order than the whole's.
    assert reduced.dtype == np.float32 and np.allclose(reduced, whole, rtol=1e-5, atol=1e-5)


def test_the_paths_taken_are_recorded_per_model():
    X, y = curved_problem(400, seed=5)
    blocks = [{"stream": "a", "start": 0, "stop": 4, "weight": 1.0},
              {"stream": "b", "start": 4, "stop": 8, "weight": 1.0}]
    classifier = {"kind": "svm", "exact_kernel_max_clips": 0, "approximate_components": 50}
    early = build_model(blocks, None, classifier, {"b": {"pca": 3}}, True, 0).fit(X, y)
    assert cost_paths(early) == {"pca": "exact", "kernel": "nystroem"}
    late = build_model(blocks, [["a"], ["b"]], {"kind": "svm"}, None, True, 0).fit(X, y)
    assert cost_paths(late) == {"kernel.0": "exact_libsvm", "kernel.1": "exact_libsvm"}


@pytest.mark.parametrize("setting", [{"exact_kernel_max_clips": -1}, {"approximate_components": 0}])
def test_the_settings_of_the_approximation_are_checked_up_front(setting):
    from pydantic import ValidationError

    from emofusion.validation import ClassifierNumbers

    with pytest.raises(ValidationError):
        ClassifierNumbers.model_validate({"kind": "svm", **setting})


@parametrize_with_checks([KernelSVC(exact_kernel_max_clips=0, approximate_components=50, random_state=0)])
def test_the_nystroem_svm_follows_scikit_learn_s_conventions(estimator, check):
    check(estimator)

"""Model files whose large arrays are stored once, by content (emofusion.shared_arrays)."""

import joblib
import numpy as np
import pytest
from kedro.io import DatasetError

from emofusion import shared_arrays
from emofusion.datasets import ModelDataset
from emofusion.errors import DamagedDatasetError


def large(seed: int) -> np.ndarray:
    """An array over the size from which arrays are stored apart (like a PCA's axes)."""
    values = np.random.default_rng(seed).standard_normal(shared_arrays.MIN_SHARED_BYTES // 4 + 1)
    return values.astype(np.float32)


def model(axes: np.ndarray) -> dict:
    return {"reduce": {"axes": axes, "mean": np.zeros(3)}, "classes": ["angry", "calm"]}


def test_an_array_two_models_share_is_stored_once_and_each_loads_it_back_exactly(tmp_path):
    arrays = tmp_path / "06_models" / "shared_arrays"
    svm = ModelDataset(filepath=str(tmp_path / "06_models/cnn/svm.pkl"), arrays=str(arrays))
    dnn = ModelDataset(filepath=str(tmp_path / "06_models/mfcc_cnn/dnn.pkl"), arrays=str(arrays))
    axes = large(0)
    svm.save(model(axes))
    dnn.save(model(axes.copy()))
    assert len(list(arrays.glob("*.npy"))) == 1  # the small arrays stay in the model files
    assert (tmp_path / "06_models/cnn/svm.pkl").stat().st_size < axes.nbytes / 100
    for dataset in (svm, dnn):
        loaded = dataset.load()
        assert np.array_equal(loaded["reduce"]["axes"], axes) and loaded["classes"] == ["angry", "calm"]


def test_an_array_that_no_model_file_names_any_more_is_removed(tmp_path):
    arrays = tmp_path / "shared_arrays"
    svm = ModelDataset(filepath=str(tmp_path / "cnn/svm.pkl"), arrays=str(arrays))
    dnn = ModelDataset(filepath=str(tmp_path / "cnn/dnn.pkl"), arrays=str(arrays))
    svm.save(model(large(0)))
    dnn.save(model(large(0)))
    svm.save(model(large(1)))  # retrained on other clips: the first array is still the DNN's
    assert len(list(arrays.glob("*.npy"))) == 2
    dnn.save(model(large(2)))
    assert len(list(arrays.glob("*.npy"))) == 2  # large(0) is gone
    (tmp_path / "cnn/svm.pkl").unlink()
    dnn.save(model(large(2)))
    assert len(list(arrays.glob("*.npy"))) == 1  # so is the deleted SVM's
    assert np.array_equal(dnn.load()["reduce"]["axes"], large(2))


def test_a_model_whose_shared_array_is_gone_is_refused_naming_the_file(tmp_path):
    arrays = tmp_path / "shared_arrays"
    svm = ModelDataset(filepath=str(tmp_path / "cnn/svm.pkl"), arrays=str(arrays))
    svm.save(model(large(0)))
    next(arrays.glob("*.npy")).unlink()
    with pytest.raises(DatasetError, match="svm.pkl needs the array .* train the model again") as refused:
        svm.load()
    assert isinstance(refused.value.__cause__, DamagedDatasetError)  # what predict's refusal prints


def test_a_model_file_an_earlier_version_wrote_with_joblib_still_loads(tmp_path):
    axes = large(0)
    joblib.dump(model(axes), tmp_path / "svm.pkl")
    loaded = ModelDataset(filepath=str(tmp_path / "svm.pkl"), arrays=str(tmp_path / "shared_arrays")).load()
    assert np.array_equal(loaded["reduce"]["axes"], axes) and loaded["classes"] == ["angry", "calm"]


def test_a_model_file_at_a_url_is_refused_naming_the_dataset(tmp_path):
    with pytest.raises(DatasetError, match="ModelDataset only supports local paths, got 's3://bucket/svm.pkl'"):
        ModelDataset(filepath="s3://bucket/svm.pkl", arrays=str(tmp_path))

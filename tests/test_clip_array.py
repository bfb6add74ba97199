import numpy as np
import pytest
from kedro.io import DatasetError

from emofusion.clip_array import ClipArray
from emofusion.datasets import ClipArrayDataset
from emofusion.errors import DamagedDatasetError


def test_select_aligns_by_clip_id():
    array = ClipArray(np.array(["a", "b", "c"]), np.arange(6).reshape(3, 2))
    selected = array.select(["c", "a"])
    assert list(selected.clip_ids) == ["c", "a"]
    np.testing.assert_array_equal(selected.values, [[4, 5], [0, 1]])
    with pytest.raises(KeyError, match="1 clip ids are not in this array"):
        array.select(["a", "z"])


def test_ids_must_match_rows_and_be_unique():
    with pytest.raises(ValueError, match="2 clip ids for 3 rows"):
        ClipArray(np.array(["a", "b"]), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="unique"):
        ClipArray(np.array(["a", "a"]), np.zeros((2, 1)))


def test_dataset_round_trip_memory_maps(tmp_path):
    values = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float16)
    original = ClipArray(np.array(["x/1", "x/2", "y/1", "y/2"]), values, {"feature": "test"})
    dataset = ClipArrayDataset(path=str(tmp_path / "feature"), load_args={"mmap_mode": "r"})
    assert not dataset.exists()
    dataset.save(original)
    loaded = dataset.load()
    assert isinstance(loaded.values, np.memmap)
    assert loaded.values.dtype == np.float16
    np.testing.assert_array_equal(loaded.values, values)
    assert list(loaded.clip_ids) == list(original.clip_ids)
    assert loaded.metadata == {"feature": "test"}
    # Saving again replaces the folder whole.
    dataset.save(ClipArray(np.array(["z"]), np.ones((1, 2))))
    assert dataset.load().values.shape == (1, 2)


def test_dataset_refuses_other_objects_and_missing_data(tmp_path):
    dataset = ClipArrayDataset(path=str(tmp_path / "nothing"))
    with pytest.raises(DatasetError):
        dataset.load()
    with pytest.raises(DatasetError, match="saves a ClipArray"):
        dataset.save(np.zeros(3))


def test_optional_dataset_loads_none_until_saved(tmp_path):
    dataset = ClipArrayDataset(path=str(tmp_path / "later"), optional=True)
    assert dataset.load() is None
    dataset.save(ClipArray(np.array(["a"]), np.ones((1, 2))))
    assert dataset.load().values.shape == (1, 2)


def test_saving_its_own_memory_map_rewrites_only_metadata_but_a_view_is_written(tmp_path):
    dataset = ClipArrayDataset(path=str(tmp_path / "reused"), load_args={"mmap_mode": "r"})
    dataset.save(ClipArray(np.array(["a", "b", "c"]), np.arange(6.0).reshape(3, 2), {"run": 1}))
    values_file = tmp_path / "reused" / "values.npy"
    written = values_file.stat().st_mtime_ns
    loaded = dataset.load()
    dataset.save(ClipArray(loaded.clip_ids, loaded.values, {"run": 2}))
    assert values_file.stat().st_mtime_ns == written
    assert dataset.load().metadata == {"run": 2}
    # A reversed view of the same file is different data: it must be written.
    dataset.save(ClipArray(loaded.clip_ids, loaded.values[::-1], {"run": 3}))
    np.testing.assert_array_equal(dataset.load().values, [[4, 5], [2, 3], [0, 1]])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: (folder / "values.npy").write_bytes((folder / "values.npy").read_bytes()[:-8]),
     "values.npy holds 216 bytes where its header's shape (3, 4) of float64 needs 224"),
    (lambda folder: (folder / "clip_ids.json").write_text('["a", "b"]'),
     "values.npy has shape (3, 4) for 2 clip ids"),
    (lambda folder: (folder / "clip_ids.json").write_text('["a", "b'), "its files cannot be read"),
])
def test_a_damaged_array_is_named_before_numpy_reads_it(tmp_path, damage, message):
    dataset = ClipArrayDataset(path=str(tmp_path / "features"), load_args={"mmap_mode": "r"})
    dataset.save(ClipArray(np.array(["a", "b", "c"]), np.ones((3, 4)), {}))
    assert dataset.damage() is None
    damage(tmp_path / "features")
    assert message in dataset.damage()
    with pytest.raises(DatasetError) as refused:
        dataset.load()
    assert isinstance(refused.value.__cause__, DamagedDatasetError)
    assert f"The stored clip array '{tmp_path / 'features'}' is damaged: {message}" in str(refused.value)

import pickle
import shutil

import numpy as np
import pandas as pd
import pytest
from kedro.io import DatasetError

from emofusion.clip_array import ClipArray, RowPart, joined_outputs, row_parts
from emofusion.datasets import ClipArrayDataset, ClipTableDataset
from emofusion.errors import DamagedDatasetError
from emofusion.fused_columns import FusedColumns
from emofusion.pipelines.fusion.nodes import fuse_feature_streams


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


def blocks(sizes, start=0):
    """(audio, table) blocks of consecutive clips, `sizes` rows each."""
    for size in sizes:
        ids = np.array([f"c{i}" for i in range(start, start + size)])
        values = np.arange(start * 3, (start + size) * 3, dtype=np.float32).reshape(size, 3)
        yield ClipArray(ids, values, {"made": "here"}), pd.DataFrame({"clip_id": ids})
        start += size


def test_parts_are_written_as_they_come_and_read_back_as_one_array(tmp_path):
    audio = ClipArrayDataset(path=str(tmp_path / "audio"), load_args={"mmap_mode": "r"})
    table = ClipTableDataset(filepath=str(tmp_path / "table.csv"))
    parts = list(row_parts(blocks([2, 0, 3])))
    assert [(part.first, part.last) for part, _ in parts] == [(True, False), (False, False), (False, True)]
    expected_audio, expected_table = joined_outputs(parts)
    for audio_part, table_part in parts:
        audio.save(audio_part)
        table.save(table_part)
        assert audio.exists() == audio_part.last  # nothing in place before the last part
    # Each part let go of its rows once saved: the runner may keep the parts themselves a while.
    with pytest.raises(ValueError, match="taken by the dataset"):
        parts[0][0].taken()
    loaded = audio.load()
    assert isinstance(loaded.values, np.memmap) and audio.damage() is None
    np.testing.assert_array_equal(loaded.values, expected_audio.values)
    assert list(loaded.clip_ids) == [f"c{i}" for i in range(5)] and loaded.metadata == {"made": "here"}
    pd.testing.assert_frame_equal(table.load(), expected_table)
    # One part, and it is empty: an array of no rows.
    for audio_part, _ in row_parts(blocks([0])):
        audio.save(audio_part)
    assert audio.load().values.shape == (0, 3)


def test_a_save_stopped_between_parts_keeps_the_stored_array_and_the_next_starts_anew(tmp_path):
    audio = ClipArrayDataset(path=str(tmp_path / "audio"))
    audio.save(ClipArray(np.array(["old"]), np.zeros((1, 3), dtype=np.float32)))
    stopped = [part for part, _ in row_parts(blocks([2, 2]))]
    audio.save(stopped[0])  # the run stops here
    assert list(audio.load().clip_ids) == ["old"]
    for part, _ in row_parts(blocks([1, 1], start=7)):
        audio.save(part)
    assert list(audio.load().clip_ids) == ["c7", "c8"]
    with pytest.raises(DatasetError, match="other than the first came first"):
        ClipArrayDataset(path=str(tmp_path / "other")).save(stopped[1])
    repeated = [RowPart(ClipArray(np.array(["a"]), np.zeros((1, 3))), True, False),
                RowPart(ClipArray(np.array(["a"]), np.zeros((1, 3))), False, True)]
    with pytest.raises(DatasetError, match="repeat clip ids"):
        for part in repeated:
            audio.save(part)


def test_a_part_whose_write_fails_stops_the_next_save_and_keeps_the_stored_array(tmp_path, monkeypatch):
    """Parts are written in a thread while the run makes the next: a write's error is raised by the
    next save, not lost with the thread."""
    from emofusion.datasets import clip_array_dataset

    audio = ClipArrayDataset(path=str(tmp_path / "audio"))
    audio.save(ClipArray(np.array(["old"]), np.zeros((1, 3), dtype=np.float32)))

    def full_disk(self, values):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(clip_array_dataset._RowWriter, "_write", full_disk)
    parts = [part for part, _ in row_parts(blocks([2, 2, 2]))]
    audio.save(parts[0])
    with pytest.raises(DatasetError, match="No space left"):
        audio.save(parts[1])
    assert list(audio.load().clip_ids) == ["old"]
    monkeypatch.undo()
    for part, _ in row_parts(blocks([1, 1], start=7)):  # the next run starts anew
        audio.save(part)
    assert list(audio.load().clip_ids) == ["c7", "c8"]


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


def stored_stream(folder, clip_ids, values, made_with):
    """A stream saved and read back as a run's nodes see it: a memory map of its file."""
    dataset = ClipArrayDataset(path=str(folder), load_args={"mmap_mode": "r"})
    dataset.save(ClipArray(np.array(clip_ids), values, {"made_with": made_with}))
    return dataset.load()


def test_a_fused_variant_is_stored_as_a_view_of_its_streams_and_reads_back_the_same_values(tmp_path):
    rng = np.random.default_rng(0)
    clips = [f"c{i}" for i in range(40)]
    cnn = stored_stream(tmp_path / "cnn", clips[::-1], rng.standard_normal((40, 3, 50)).astype(np.float32),
                        {"backbone": "x"})
    mfcc = ClipArray(np.array(clips), rng.standard_normal((40, 4)))  # in memory: kept in the view's folder
    manifest = pd.DataFrame({"clip_id": clips[5:], "speaker": [f"s{i % 3}" for i in range(35)]})
    fused = fuse_feature_streams(manifest, {"streams": ["mfcc", "transfer_features"],
                                            "speaker_normalisation": "speaker"},
                                 {"mfcc": 1.0, "transfer_features": 1.0}, "balanced", {"min_clips": 5},
                                 {"backbone": "x"}, mfcc, cnn)
    assert isinstance(fused.values, FusedColumns) and fused.values.shape == (35, 154)
    dataset = ClipArrayDataset(path=str(tmp_path / "fused"), load_args={"mmap_mode": "r"})
    dataset.save(fused)
    assert not (tmp_path / "fused" / "values.npy").exists()
    stored = sum(file.stat().st_size for file in (tmp_path / "fused").iterdir())
    assert stored < (tmp_path / "cnn/values.npy").stat().st_size
    loaded = dataset.load()
    assert dataset.damage() is None and list(loaded.clip_ids) == clips[5:]
    expected = np.asarray(fused.values)
    np.testing.assert_array_equal(np.asarray(loaded.values), expected)
    # Standardised by speaker: each speaker's rows have mean 0 in every column.
    speakers = manifest["speaker"].to_numpy()
    np.testing.assert_allclose(expected[speakers == "s1"].mean(axis=0), 0, atol=1e-5)
    # Rows by index, by mask and in any order, as a fold reads them.
    np.testing.assert_array_equal(loaded.values[np.array([7, 2, 30])], expected[[7, 2, 30]])
    np.testing.assert_array_equal(loaded.values[speakers == "s2"], expected[speakers == "s2"])
    np.testing.assert_array_equal(loaded.values[3], expected[3])
    # Sent to a fold worker, it travels as file names and row numbers, not as the CNN's values.
    sent = pickle.dumps(loaded)
    np.testing.assert_array_equal(np.asarray(pickle.loads(sent).values), expected)
    assert np.asarray(cnn.values[0]).tobytes() not in sent and b"values.npy" in sent


def test_a_view_whose_stream_was_made_again_is_refused_not_read_in_the_wrong_order(tmp_path):
    clips = ["a", "b", "c", "d", "e", "f"]
    cnn = stored_stream(tmp_path / "cnn", clips, np.arange(12, dtype=np.float32).reshape(6, 2), {"taps": 1})
    fused = fuse_feature_streams(pd.DataFrame({"clip_id": clips}), ["transfer_features"],
                                 {"transfer_features": 1.0}, "balanced", {"min_clips": 2}, {"taps": 1}, cnn)
    dataset = ClipArrayDataset(path=str(tmp_path / "fused"))
    dataset.save(fused)
    stored_stream(tmp_path / "cnn", clips, np.ones((6, 2), dtype=np.float32), {"taps": 2})  # other settings
    assert "was made again since" in dataset.damage()
    with pytest.raises(DatasetError, match="is damaged: the stream it reads at .* was made again since"):
        dataset.load()
    stored_stream(tmp_path / "cnn", clips[::-1], np.ones((6, 2), dtype=np.float32), {"taps": 1})  # reordered
    assert "was made again since" in dataset.damage()
    shutil.rmtree(tmp_path / "cnn")
    assert "is gone" in dataset.damage()

"""The split strategies: each keeps test clips out of every choice and records how it was made."""

import pandas as pd
import pytest

from emofusion.errors import SplitConfigError
from emofusion.pipelines.modelling.splits import split_clips

EMOTIONS = ["angry", "calm", "happy", "sad"]
RANDOM_SPLIT = {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}


def manifest(speakers: int = 8, clips_per_emotion: int = 5) -> pd.DataFrame:
    rows = [{"clip_id": f"s{s}/{e}/{k}", "emotion": e, "speaker": f"c:{s:02d}"}
            for s in range(speakers) for e in EMOTIONS for k in range(clips_per_emotion)]
    return pd.DataFrame(rows)


def test_random_split_is_disjoint_stratified_and_seeded():
    clips = manifest()
    split, made_with = split_clips(clips, RANDOM_SPLIT, 7)
    assert made_with == {"split.strategy": "random", "split.test_size": 0.3, "split.validation_size": 0.15,
                         "random_seed": 7}
    assert split["clip_id"].is_unique and set(split["clip_id"]) == set(clips["clip_id"])
    assert (split["fold"] == 0).all()
    shares = split.groupby("emotion")["subset"].value_counts(normalize=True).unstack()
    # 40 clips per emotion: exactly 12 test, 6 validation, 22 train in each
    assert (shares["test"] == 12 / 40).all() and (shares["validation"] == 6 / 40).all()
    again, _ = split_clips(clips, {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}, 7)
    other, _ = split_clips(clips, {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}, 8)
    assert split.equals(again) and not split.equals(other)


def test_windows_of_one_long_clip_stay_on_one_side_of_the_random_split():
    clips = manifest()
    sources = clips["clip_id"]
    windows = pd.concat([clips.assign(clip_id=sources + f"@{start}s", source_clip_id=sources)
                         for start in (0, 1, 2)], ignore_index=True)
    split, _ = split_clips(windows, RANDOM_SPLIT, 7)
    sides = split.assign(source=split["clip_id"].str.split("@").str[0]).groupby("source")["subset"].nunique()
    assert (sides == 1).all() and len(sides) == len(clips)
    # As many clips per subset as without windows, each with its three windows.
    plain, _ = split_clips(clips, RANDOM_SPLIT, 7)
    assert (split["subset"].value_counts() == 3 * plain["subset"].value_counts()).all()


def test_speaker_independent_folds_never_share_a_speaker_and_test_each_clip_once():
    clips = manifest(speakers=8)
    split, made_with = split_clips(clips, {"strategy": "speaker_independent", "speaker_folds": 4}, 0)
    assert made_with == {"split.strategy": "speaker_independent", "split.speaker_folds": 4}  # no seed drawn
    assert sorted(split["fold"].unique()) == [0, 1, 2, 3]
    for _, fold in split.groupby("fold"):
        speakers = fold.groupby("subset")["speaker"].agg(set)
        assert len(speakers["test"]) == 2
        assert not speakers["test"] & speakers["train"] and not speakers["test"] & speakers["validation"]
        assert not speakers["validation"] & speakers["train"]
    tested = split.loc[split["subset"] == "test", "clip_id"]
    assert tested.is_unique and set(tested) == set(clips["clip_id"])


@pytest.mark.parametrize(("clips", "split", "message"), [
    (manifest(speakers=2), {"strategy": "speaker_independent", "speaker_folds": 6}, "have 2 speakers"),
    (manifest(speakers=1, clips_per_emotion=2),
     {"strategy": "random", "test_size": 0.3, "validation_size": 0.15}, "has 2 clips: too few"),
    (manifest(), {"strategy": "leave_one_out"}, "not one of: random, speaker_independent"),
])
def test_impossible_splits_say_why(clips, split, message):
    with pytest.raises(SplitConfigError, match=message):
        split_clips(clips, split, 0)

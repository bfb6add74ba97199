"""The split strategies: each keeps test clips out of every choice and records how it was made."""

import copy
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from emofusion.errors import ParameterError, SplitConfigError, StaleInputError
from emofusion.learning.splits import SPEAKER_SPLITS, SPLIT_COLUMNS, split_clips
from emofusion.provenance import check_made_with
from emofusion.validation import validate_parameters

PROJECT = Path(__file__).resolve().parents[3]
EMOTIONS = ["angry", "calm", "happy", "sad"]
RANDOM_SPLIT = {"strategy": "random", "test_size": 0.3, "validation_size": 0.15, "repeats": 1}


def manifest(speakers: int = 8, clips_per_emotion: int = 5, corpus: str = "c",
             emotions: list[str] = EMOTIONS, extension: str = ".wav") -> pd.DataFrame:
    """A clip manifest as data_processing makes it: corpus-prefixed speakers, one file per clip."""
    rows = [{"clip_id": f"s{s}/{e}/{k}", "corpus": corpus, "path": f"/audio/{corpus}/s{s}/{e}_{k}{extension}",
             "emotion": e, "speaker": f"{corpus}:{s:02d}"}
            for s in range(speakers) for e in emotions for k in range(clips_per_emotion)]
    return pd.DataFrame(rows)


def subsets_of(split: pd.DataFrame, column: str = "clip_id") -> dict[int, dict[str, set]]:
    """fold -> subset -> the clips (or speakers...) in it."""
    return {fold: rows.groupby("subset")[column].agg(set).to_dict() for fold, rows in split.groupby("fold")}


def test_random_split_is_disjoint_stratified_and_seeded():
    clips = manifest()
    split, made_with = split_clips(clips, RANDOM_SPLIT, 7)
    assert made_with == {"split.strategy": "random", "split.test_size": 0.3, "split.validation_size": 0.15,
                         "split.repeats": 1, "random_seed": 7}
    assert list(split.columns) == SPLIT_COLUMNS and (split["corpus"] == "c").all()
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


def test_repeats_are_random_splits_with_consecutive_seeds_and_one_repeat_is_the_plain_split():
    clips = manifest()
    plain, _ = split_clips(clips, {key: value for key, value in RANDOM_SPLIT.items() if key != "repeats"}, 7)
    once, _ = split_clips(clips, RANDOM_SPLIT, 7)
    assert once.to_csv(index=False) == plain.to_csv(index=False)
    repeated, made_with = split_clips(clips, RANDOM_SPLIT | {"repeats": 3}, 7)
    assert made_with["split.repeats"] == 3 and sorted(repeated["fold"].unique()) == [0, 1, 2]
    tests = [subsets[fold]["test"] for subsets in [subsets_of(repeated)] for fold in range(3)]
    assert tests[0] != tests[1] != tests[2] != tests[0]
    for fold in range(3):  # fold r is the split seeded random_seed + r
        alone, _ = split_clips(clips, RANDOM_SPLIT, 7 + fold)
        rows = repeated[repeated["fold"] == fold].drop(columns="fold").reset_index(drop=True)
        assert rows.equals(alone.drop(columns="fold"))


def test_leave_one_speaker_out_tests_each_speaker_alone_and_validates_on_other_speakers():
    clips = manifest(speakers=6)
    options = {"strategy": "leave_one_speaker_out", "validation_size": 0.2}
    split, made_with = split_clips(clips, options, 3)
    assert made_with == {"split.strategy": "leave_one_speaker_out", "split.validation_size": 0.2,
                         "random_seed": 3}
    speakers = subsets_of(split, "speaker")
    assert sorted(speakers) == list(range(6))
    for fold, subsets in speakers.items():
        assert subsets["test"] == {f"c:{fold:02d}"}
        assert len(subsets["validation"]) == 1 and len(subsets["train"]) == 4  # round(0.2 * 5) = 1
        assert not (subsets["test"] & subsets["validation"] or subsets["test"] & subsets["train"]
                    or subsets["validation"] & subsets["train"])
    assert len(split) == 6 * len(clips)
    assert len({frozenset(subsets["validation"]) for subsets in speakers.values()}) > 1  # drawn, not fixed
    assert split.equals(split_clips(clips, options, 3)[0])
    assert not split.equals(split_clips(clips, options, 4)[0])
    assert "leave_one_speaker_out" in SPEAKER_SPLITS and "speaker_independent" in SPEAKER_SPLITS


def write_fold_files(folder: Path, folds: list[dict[str, list[dict]]]) -> Path:
    """EmoBox's layout: fold_<n>/demo_<subset>_fold_<n>.jsonl, n from 1, one JSON object a line."""
    for number, subsets in enumerate(folds, start=1):
        (folder / f"fold_{number}").mkdir(parents=True)
        for subset, entries in subsets.items():
            lines = [json.dumps({"key": f"demo-{Path(entry['wav']).stem}", "dataset": "demo", **entry})
                     for entry in entries]
            file = folder / f"fold_{number}" / f"demo_{subset}_fold_{number}.jsonl"
            file.write_text("\n".join(lines) + "\n")
    return folder


def emobox_entries(clips: pd.DataFrame) -> list[dict]:
    """The clips as EmoBox lists them: its own folder, WAV files, capitalised emotions."""
    return [{"wav": f"downloads/demo/{Path(path).parent.name}/{Path(path).stem}.wav", "emo": emotion.title()}
            for path, emotion in zip(clips["path"], clips["emotion"], strict=True)]


def speaker_folds(clips: pd.DataFrame, groups: list[list[int]]) -> list[dict[str, list[dict]]]:
    """Fold files testing each group of speakers and training on the others."""
    folds = []
    for group in groups:
        test = clips["speaker"].isin([f"c:{s:02d}" for s in group])
        folds.append({"train": emobox_entries(clips[~test]), "test": emobox_entries(clips[test])})
    return folds


def folds_options(folder: Path) -> dict:
    return {"strategy": "folds_file", "folds_dir": str(folder), "folds_pattern": None,
            "validation_size": 0.25}


def test_a_folds_file_split_reproduces_its_folds_and_matches_flac_clips_to_wav_names(tmp_path):
    clips = manifest(speakers=6, extension=".flac")  # the corpus was converted; EmoBox lists .wav
    folder = write_fold_files(tmp_path / "emobox", speaker_folds(clips, [[0, 1], [2, 3], [4, 5]]))
    split, made_with = split_clips(clips, folds_options(folder), 0)
    subsets = subsets_of(split)
    assert sorted(subsets) == [0, 1, 2]  # EmoBox's fold_1 is fold 0
    for fold, group in enumerate([[0, 1], [2, 3], [4, 5]]):
        tested = clips["speaker"].isin([f"c:{s:02d}" for s in group])
        assert subsets[fold]["test"] == set(clips.loc[tested, "clip_id"])
        assert subsets[fold]["train"] | subsets[fold]["validation"] == set(clips.loc[~tested, "clip_id"])
        speakers = subsets_of(split, "speaker")[fold]
        assert len(speakers["validation"]) == 1 and not speakers["validation"] & speakers["train"]
    assert made_with == {"split.strategy": "folds_file", "split.folds_dir": str(folder),
                         "split.folds_pattern": None, "split.validation_size": 0.25, "random_seed": 0,
                         "notes": {key: {"count": 0, "first": []} for key in (
                             "fold_clips_not_in_corpus", "corpus_clips_in_no_fold", "emotions_disagreeing")}}


def test_folds_file_reports_what_the_files_and_the_corpus_disagree_on(tmp_path, caplog):
    clips = manifest(speakers=4)
    folds = speaker_folds(clips.iloc[1:], [[0, 1], [2, 3]])  # the corpus's first clip is in no fold
    folds[0]["test"].append({"wav": "downloads/demo/s9/angry_0.wav", "emo": "Angry"})  # not in the corpus
    folds[1]["test"][0]["emo"] = "Surprised"  # the corpus says otherwise
    folder = write_fold_files(tmp_path / "emobox", folds)
    with caplog.at_level(logging.WARNING):
        split, made_with = split_clips(clips, folds_options(folder), 0)
    notes = made_with["notes"]
    # Every speaker has an angry_0.wav: clips are named by their folder too.
    assert notes["corpus_clips_in_no_fold"] == {"count": 1, "first": ["s0/angry_0"]}
    assert notes["fold_clips_not_in_corpus"] == {"count": 1, "first": ["s9/angry_0"]}
    assert notes["emotions_disagreeing"] == {"count": 1, "first": ["s2/angry_0 (Surprised / angry)"]}
    assert split.loc[split["clip_id"] == "s2/angry/0", "emotion"].eq("angry").all()  # the corpus's label
    assert "folds_file: 1 clips of the fold files are not among these clips" in caplog.text
    assert "1 of these clips are in no fold file" in caplog.text
    assert clips["clip_id"].iloc[0] not in set(split["clip_id"])  # in no fold, so in no row
    # The notes are shown, never compared: the split still fits the run that made it.
    run = {"split": {key.removeprefix("split."): value for key, value in made_with.items() if "." in key},
           "random_seed": 0}
    check_made_with("data_split", made_with, run, remake="")
    with pytest.raises(StaleInputError, match="split.folds_dir"):
        check_made_with("data_split", made_with, run | {"split": run["split"] | {"folds_dir": "elsewhere"}},
                        remake="")


def test_a_clip_in_two_test_folds_or_trained_and_tested_in_one_is_refused(tmp_path):
    clips = manifest(speakers=4)
    twice = speaker_folds(clips, [[0, 1], [2, 3]])
    clip = twice[0]["test"][0]
    twice[1]["train"].remove(clip)
    twice[1]["test"].append(clip)
    with pytest.raises(SplitConfigError, match="clip 's0/angry_0' is in the test files of folds 1 and 2"):
        split_clips(clips, folds_options(write_fold_files(tmp_path / "twice", twice)), 0)
    leaking = speaker_folds(clips, [[0, 1], [2, 3]])
    leaking[0]["train"].append(leaking[0]["test"][0])
    with pytest.raises(SplitConfigError, match="fold 1 trains and tests on clip 's0/angry_0'"):
        split_clips(clips, folds_options(write_fold_files(tmp_path / "leaking", leaking)), 0)


def test_cross_corpus_keeps_the_shared_emotions_and_never_trains_on_a_test_corpus(caplog):
    train_side = manifest(speakers=5, corpus="a", emotions=["angry", "calm", "happy", "sad"])
    test_side = manifest(speakers=3, corpus="b", emotions=["angry", "happy", "neutral", "sad"])
    other = manifest(speakers=2, corpus="z")
    clips = pd.concat([train_side, test_side, other], ignore_index=True)
    clips["clip_id"] = clips["corpus"] + "/" + clips["clip_id"]
    options = {"strategy": "cross_corpus", "train_corpora": ["a"], "test_corpora": ["b"],
               "validation_size": 0.2}
    with caplog.at_level(logging.WARNING):
        split, made_with = split_clips(clips, options, 0)
    assert made_with["notes"] == {"emotions_kept": ["angry", "happy", "sad"],
                                  "emotions_dropped": {"train_corpora_only": ["calm"],
                                                       "test_corpora_only": ["neutral"]}}
    assert ("left out: ['calm'] only in the training corpora, ['neutral'] only in the test corpora"
            in caplog.text)
    assert set(split["emotion"]) == {"angry", "happy", "sad"} and (split["fold"] == 0).all()
    by_subset = split.groupby("subset")["corpus"].agg(set)
    assert by_subset["test"] == {"b"} and by_subset["train"] == {"a"} and by_subset["validation"] == {"a"}
    kept_b = test_side[test_side["emotion"] != "neutral"]
    assert len(split[split["subset"] == "test"]) == len(kept_b)
    speakers = subsets_of(split, "speaker")[0]
    assert len(speakers["validation"]) == 1 and not speakers["validation"] & speakers["train"]
    # Training corpora without speakers validate on a share of each emotion instead.
    unknown = clips.assign(speaker=clips["speaker"].where(clips["corpus"] != "a"))
    split, _ = split_clips(unknown, options, 0)
    validation = split[split["subset"] == "validation"]
    assert validation.groupby("emotion").size().to_dict() == {"angry": 5, "happy": 5, "sad": 5}  # 0.2 * 25


def test_leave_one_corpus_out_tests_each_corpus_once_on_models_that_never_saw_it(caplog):
    a = manifest(speakers=4, corpus="a", emotions=["angry", "calm", "happy", "sad"])
    b = manifest(speakers=3, corpus="b", emotions=["angry", "happy", "neutral", "sad"])
    c = manifest(speakers=3, corpus="c", emotions=["angry", "sad"])
    clips = pd.concat([a, b, c], ignore_index=True)
    clips["clip_id"] = clips["corpus"] + "/" + clips["clip_id"]
    options = {"strategy": "leave_one_corpus_out", "validation_size": 0.2}
    with caplog.at_level(logging.WARNING):
        split, made_with = split_clips(clips, options, 0)
    assert made_with["split.strategy"] == "leave_one_corpus_out"
    corpus_of_fold = {}
    for fold, rows in split.groupby("fold"):
        by_subset = rows.groupby("subset")["corpus"].agg(set)
        (left_out,) = by_subset["test"]
        corpus_of_fold[fold] = left_out
        assert left_out not in by_subset["train"] | by_subset["validation"]
        speakers = rows.groupby("subset")["speaker"].agg(set)
        assert not speakers["validation"] & speakers["train"]
        # Trained and tested on the emotions the left-out corpus shares with the others.
        kept = made_with["notes"]["folds"][left_out]["emotions_kept"]
        assert set(rows["emotion"]) == set(kept)
    assert sorted(corpus_of_fold.values()) == ["a", "b", "c"]
    test = split[split["subset"] == "test"]
    assert test["clip_id"].is_unique  # each clip tested once, by the fold that left its corpus out
    assert made_with["notes"]["folds"]["b"] == {
        "emotions_kept": ["angry", "happy", "sad"],
        "emotions_dropped": {"train_corpora_only": ["calm"], "test_corpora_only": ["neutral"]}}
    assert "Testing on b: the emotions both sides have are kept (angry, happy, sad)" in caplog.text
    with pytest.raises(SplitConfigError, match="at least two corpora"):
        split_clips(a, options, 0)


@pytest.mark.parametrize(("options", "message"), [
    ({"strategy": "cross_corpus", "train_corpora": ["a"], "test_corpora": ["x"]}, "disjoint lists"),
    ({"strategy": "leave_one_speaker_out", "validation_size": 0.9}, "2 training speaker(s): too few"),
])
def test_impossible_new_splits_say_why(options, message):
    clips = pd.concat([manifest(speakers=3, corpus="a"), manifest(speakers=3, corpus="b")], ignore_index=True)
    with pytest.raises(SplitConfigError, match=re.escape(message)):
        split_clips(clips if options["strategy"] == "cross_corpus" else manifest(speakers=3),
                    {"validation_size": 0.2} | options, 0)


def changed_split(parameters: dict, **split) -> dict:
    changed = copy.deepcopy(parameters)
    changed["split"] |= split
    return changed


@pytest.mark.parametrize(("split", "message"), [
    ({"strategy": "folds_file"}, "split.folds_dir: 'None' is not a folder"),
    ({"strategy": "folds_file", "folds_dir": "{empty}"}, "holds no fold file matching split.folds_pattern"),
    ({"strategy": "folds_file", "folds_dir": "{empty}", "folds_pattern": "fold_{fold}.jsonl"},
     "split.folds_pattern: 'fold_{fold}.jsonl' must contain {fold} and {subset}"),
    ({"strategy": "speaker_independent", "repeats": 3},
     "split.repeats: only split.strategy random is repeated"),
    ({"repeats": 0}, "split.repeats: Input should be greater than or equal to 1"),
    ({"strategy": "lopo"}, "split.strategy: Input should be 'random', 'speaker_independent', "
                           "'leave_one_speaker_out', 'folds_file', 'cross_corpus' or "
                           "'leave_one_corpus_out'"),
    ({"strategy": "leave_one_corpus_out"},
     "split.strategy leave_one_corpus_out: needs at least two corpora (corpora: demo)"),
    ({"strategy": "cross_corpus", "train_corpora": ["demo"]},
     "split.test_corpora: must name corpora this run reads (corpora: demo); got []"),
    ({"strategy": "cross_corpus", "train_corpora": ["demo"], "test_corpora": ["ravdess"]},
     "split.test_corpora: must name corpora this run reads"),
    ({"strategy": "cross_corpus", "train_corpora": ["demo"], "test_corpora": ["demo"]},
     "split.train_corpora and split.test_corpora: ['demo'] in both"),
])
def test_bad_split_settings_are_refused_before_anything_runs(parameters, tmp_path, split, message):
    split = {key: str(tmp_path) if value == "{empty}" else value for key, value in split.items()}
    with pytest.raises(ParameterError) as refused:
        validate_parameters(changed_split(parameters, **split), PROJECT)
    assert message in str(refused.value)


def test_good_split_settings_pass_the_up_front_checks(parameters, tmp_path):
    clips = manifest(speakers=4)
    folder = write_fold_files(tmp_path / "emobox", speaker_folds(clips, [[0, 1], [2, 3]]))
    validate_parameters(changed_split(parameters, strategy="folds_file", folds_dir=str(folder)), PROJECT)
    validate_parameters(changed_split(parameters, repeats=5), PROJECT)
    cross = changed_split(parameters, strategy="cross_corpus", train_corpora=["demo"],
                          test_corpora=["ravdess"])
    validate_parameters(cross | {"corpora": ["demo", "ravdess"]}, PROJECT)
    each_left_out = changed_split(parameters, strategy="leave_one_corpus_out")
    validate_parameters(each_left_out | {"corpora": ["demo", "ravdess"]}, PROJECT)

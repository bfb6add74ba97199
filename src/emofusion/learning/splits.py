"""Which clips train, validate and test each fold: the field's evaluation protocols as
`split.strategy`s. Pure functions of the clip manifest and the split settings (folds_file also
reads its fold files), so that every model and every fine-tuned network is scored on the same
test clips, and each split records the settings it was made with."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import SplitConfigError
from emofusion.provenance import NOTES

logger = logging.getLogger(__name__)

SPLIT_STRATEGIES = ("random", "speaker_independent", "leave_one_speaker_out", "folds_file", "cross_corpus",
                    "leave_one_corpus_out")
# The strategies that never let a speaker be in two subsets of a fold, whatever the corpus.
# folds_file is as speaker-independent as its fold files are; cross_corpus validates on a share of
# each emotion where the training corpora do not know their speakers.
SPEAKER_SPLITS = ("speaker_independent", "leave_one_speaker_out")
SPLIT_COLUMNS = ["fold", "clip_id", "emotion", "speaker", "subset", "corpus"]
# EmoBox's layout: <corpus folder>/fold_1/ravdess_train_fold_1.jsonl and ..._test_fold_1.jsonl.
DEFAULT_FOLDS_PATTERN = "fold_{fold}/*_{subset}_fold_{fold}.jsonl"
SHOWN_NAMES = 5  # names a warning and the split's notes give of a longer list


def split_clips(clip_manifest: pd.DataFrame, split_options: Mapping[str, Any], random_seed: int
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per (fold, clip) with its subset: train, validation or test, and its corpus (for
    per-corpus scores); and the settings it was made with (`data_split_settings`), which every
    model checks against its run's parameters, plus under `notes` what the split left out.

    `random`: stratified by emotion: test `test_size`, validation `validation_size`, the rest
    train; `repeats` such splits, seeded random_seed, random_seed + 1, ..., as folds 0, 1, ...
    `speaker_independent`: speakers are dealt into `speaker_folds` groups; fold k tests on group k,
    validates on group k+1 and trains on the others. `leave_one_speaker_out`: a fold per speaker.
    `folds_file`: the folds of fold files such as EmoBox's. `cross_corpus`: trains on
    `train_corpora`, tests on `test_corpora`, on the emotions both have. `leave_one_corpus_out`: a
    fold per corpus, trained on all the others and tested on it, likewise. Where a fold's validation
    clips are drawn from its training clips, they are whole speakers (a `validation_size` share,
    at least one) where speakers are known, else a share of each emotion. Classifiers without
    early stopping (the SVM) train on train and validation together."""
    strategy = split_options.get("strategy")
    if strategy not in SPLIT_STRATEGIES:
        raise SplitConfigError(f"split strategy '{strategy}' is not one of: {', '.join(SPLIT_STRATEGIES)}")
    clips = clip_manifest[["clip_id", "emotion", "speaker", "corpus"]].astype(str).reset_index(drop=True)
    # Windows of one long clip (audio.long_clips: windows) share a source clip and are split together.
    clips["source"] = clip_manifest.get("source_clip_id", clip_manifest["clip_id"]).astype(str).to_numpy()
    clips["has_speaker"] = clip_manifest["speaker"].notna().to_numpy()
    if strategy == "folds_file":  # fold files name clips by their files
        clips["path"] = clip_manifest["path"].astype(str).to_numpy()
    make = {"random": _random, "speaker_independent": _speaker_independent,
            "leave_one_speaker_out": _leave_one_speaker_out, "folds_file": _folds_file,
            "cross_corpus": _cross_corpus, "leave_one_corpus_out": _leave_one_corpus_out}[strategy]
    folds, made_with = make(clips, split_options, random_seed)
    return pd.concat(folds, ignore_index=True)[SPLIT_COLUMNS], {"split.strategy": strategy, **made_with}


def _random(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
            ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    test_size, validation_size = float(options["test_size"]), float(options["validation_size"])
    if not (0 < test_size < 1 and 0 < validation_size < 1 and test_size + validation_size < 1):
        raise SplitConfigError("split.test_size and split.validation_size must be fractions that "
                               "leave clips to train on")
    repeats = int(options.get("repeats", 1))
    folds = [clips.assign(fold=repeat, subset=_stratified(
                 clips, {"test": test_size, "validation": validation_size},
                 np.random.default_rng(random_seed + repeat)))
             for repeat in range(repeats)]
    return folds, {"split.test_size": options["test_size"],
                   "split.validation_size": options["validation_size"], "split.repeats": repeats,
                   "random_seed": random_seed}


def _speaker_independent(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
                         ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    speakers = _speakers(clips, "speaker-independent")
    n_folds = int(options["speaker_folds"])
    if n_folds < 3 or len(speakers) < n_folds:
        raise SplitConfigError(
            f"a speaker-independent split into {n_folds} folds needs at least 3 folds and one speaker per "
            f"fold; these clips have {len(speakers)} speakers. Set split.speaker_folds between 3 and "
            f"{len(speakers)}, or use split.strategy: random")
    group = {speaker: k for k, chunk in enumerate(np.array_split(np.array(speakers), n_folds))
             for speaker in chunk}
    speaker_group = clips["speaker"].map(group).to_numpy()
    folds = [clips.assign(fold=fold, subset=np.where(
                 speaker_group == fold, "test",
                 np.where(speaker_group == (fold + 1) % n_folds, "validation", "train")))
             for fold in range(n_folds)]
    # The sorted speakers decide the folds: no seed is drawn.
    return folds, {"split.speaker_folds": options["speaker_folds"]}


def _leave_one_speaker_out(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
                           ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    speakers = _speakers(clips, "leave-one-speaker-out")
    rng = np.random.default_rng(random_seed)
    folds = []
    for fold, speaker in enumerate(speakers):
        test = (clips["speaker"] == speaker).to_numpy()
        folds.append(clips.assign(fold=fold, subset=_subsets(clips, ~test, test, options, rng)))
    return folds, {"split.validation_size": options["validation_size"], "random_seed": random_seed}


def _cross_corpus(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
                  ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    train_corpora, test_corpora = list(options["train_corpora"]), list(options["test_corpora"])
    present = sorted(clips["corpus"].unique())
    absent = [corpus for corpus in train_corpora + test_corpora if corpus not in present]
    if not train_corpora or not test_corpora or absent or set(train_corpora) & set(test_corpora):
        raise SplitConfigError(
            f"cross_corpus needs split.train_corpora and split.test_corpora: disjoint lists of corpora of "
            f"clip_manifest ({', '.join(present)}); got {train_corpora} and {test_corpora}")
    unused = clips.loc[~clips["corpus"].isin(train_corpora + test_corpora), "corpus"].value_counts()
    if len(unused):
        logger.info("cross_corpus leaves out the clips of corpora in neither list: %s", unused.to_dict())
    fold, shared, dropped = _across_corpora(clips, 0, train_corpora, test_corpora, options,
                                            np.random.default_rng(random_seed))
    return [fold], {
        "split.train_corpora": train_corpora, "split.test_corpora": test_corpora,
        "split.validation_size": options["validation_size"], "random_seed": random_seed,
        NOTES: {"emotions_kept": shared, "emotions_dropped": dropped}}


def _leave_one_corpus_out(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
                          ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    corpora = sorted(clips["corpus"].unique())
    if len(corpora) < 2:
        raise SplitConfigError(f"leave_one_corpus_out needs clips of at least two corpora; these are all of "
                               f"{', '.join(corpora)}. Add a corpus to `corpora`, or use another "
                               "split.strategy")
    rng = np.random.default_rng(random_seed)
    folds, notes = [], {}
    for number, left_out in enumerate(corpora):
        fold, shared, dropped = _across_corpora(clips, number, [c for c in corpora if c != left_out],
                                                [left_out], options, rng)
        folds.append(fold)
        notes[left_out] = {"emotions_kept": shared, "emotions_dropped": dropped}
    return folds, {"split.validation_size": options["validation_size"], "random_seed": random_seed,
                   NOTES: {"folds": notes}}


def _across_corpora(clips: pd.DataFrame, fold: int, train_corpora: list[str], test_corpora: list[str],
                    options: Mapping[str, Any], rng: np.random.Generator
                    ) -> tuple[pd.DataFrame, list[str], dict[str, list[str]]]:
    """A fold that trains on `train_corpora` (validation drawn from them) and tests on
    `test_corpora`, on the emotions both sides have: a model cannot be scored on an emotion it never
    learnt, and an emotion the test side lacks would only take answers away from the others.
    Returns the fold's clips, the emotions kept and those left out (logged)."""
    train_side, test_side = clips["corpus"].isin(train_corpora), clips["corpus"].isin(test_corpora)
    train_emotions = set(clips.loc[train_side, "emotion"])
    test_emotions = set(clips.loc[test_side, "emotion"])
    shared = sorted(train_emotions & test_emotions)
    if not shared:
        raise SplitConfigError(f"the training corpora {train_corpora} and the test corpora {test_corpora} "
                               "have no emotion in common: a model trained on one cannot be scored on "
                               "the other")
    dropped = {"train_corpora_only": sorted(train_emotions - test_emotions),
               "test_corpora_only": sorted(test_emotions - train_emotions)}
    if dropped["train_corpora_only"] or dropped["test_corpora_only"]:
        logger.warning("Testing on %s: the emotions both sides have are kept (%s); left out: %s only in the "
                       "training corpora, %s only in the test corpora", ", ".join(test_corpora),
                       ", ".join(shared), dropped["train_corpora_only"] or "none",
                       dropped["test_corpora_only"] or "none")
    kept = clips["emotion"].isin(shared)
    train, test = (train_side & kept).to_numpy(), (test_side & kept).to_numpy()
    subset = _subsets(clips, train, test, options, rng)
    return clips.assign(fold=fold, subset=subset)[subset != ""], shared, dropped


def _folds_file(clips: pd.DataFrame, options: Mapping[str, Any], random_seed: int
                ) -> tuple[list[pd.DataFrame], dict[str, Any]]:
    files = fold_files(options.get("folds_dir"), options.get("folds_pattern"))
    depth = _name_depth(clips["path"].unique())
    names = np.array([_clip_name(path, depth) for path in clips["path"]])
    listed: dict[str, Any] = {}  # clip name in the fold files -> its emotion there
    tested_in: dict[str, int] = {}
    rng = np.random.default_rng(random_seed)
    folds = []
    for fold, (number, paths) in enumerate(files.items()):
        entries = {subset: {_clip_name(entry["wav"], depth): entry.get("emo")
                            for entry in read_fold_file(paths[subset])} for subset in ("train", "test")}
        both = sorted(entries["train"].keys() & entries["test"].keys())
        if both:
            raise SplitConfigError(f"fold {number} trains and tests on clip '{both[0]}' ({len(both)} such "
                                   f"clips): correct {paths['train']} and {paths['test']}")
        for name in entries["test"]:
            if name in tested_in:
                raise SplitConfigError(f"clip '{name}' is in the test files of folds {tested_in[name]} and "
                                       f"{number}: each clip may be tested once; correct the fold files")
            tested_in[name] = number
        listed |= entries["train"] | entries["test"]
        train, test = np.isin(names, list(entries["train"])), np.isin(names, list(entries["test"]))
        if not train.any() or not test.any():
            raise SplitConfigError(f"fold {number} has no {'training' if test.any() else 'test'} clip among "
                                   f"these clips: its fold files ({paths['test'].parent}) name other clips")
        subset = _subsets(clips, train, test, options, rng)
        folds.append(clips.assign(fold=fold, subset=subset)[subset != ""])
    notes = _fold_file_notes(clips.assign(name=names), listed)
    return folds, {"split.folds_dir": options["folds_dir"],
                   "split.folds_pattern": options.get("folds_pattern"),
                   "split.validation_size": options["validation_size"], "random_seed": random_seed,
                   NOTES: notes}


def _fold_file_notes(clips: pd.DataFrame, listed: Mapping[str, Any]) -> dict[str, Any]:
    """What the fold files and the corpus disagree on, logged and recorded, never silently dropped:
    clips the files list that the corpus lacks (rejected, left out by `emotions`, or another
    release), corpus clips in no fold (used by no fold), and emotion labels that differ (the
    corpus's own are used)."""
    emotion_of = dict(zip(clips["name"], clips["emotion"], strict=False))
    disagreeing = sorted(f"{name} ({label} / {emotion_of[name]})" for name, label in listed.items()
                         if name in emotion_of and label is not None
                         and str(label).lower() != emotion_of[name].lower())
    notes = {"fold_clips_not_in_corpus": sorted(set(listed) - set(emotion_of)),
             "corpus_clips_in_no_fold": sorted(set(emotion_of) - set(listed)),
             "emotions_disagreeing": disagreeing}
    meaning = {"fold_clips_not_in_corpus": "clips of the fold files are not among these clips",
               "corpus_clips_in_no_fold": "of these clips are in no fold file and are used by no fold",
               "emotions_disagreeing": "clips have another emotion in the fold files than in the "
                                       "corpus (fold file / corpus; the corpus's is used)"}
    for key, found in notes.items():
        if found:
            logger.warning("folds_file: %d %s (first: %s)", len(found), meaning[key],
                           ", ".join(found[:SHOWN_NAMES]))
    return {key: {"count": len(found), "first": found[:SHOWN_NAMES]} for key, found in notes.items()}


def fold_files(folds_dir: str | Path | None, pattern: str | None = None) -> dict[int, dict[str, Path]]:
    """The fold files under `folds_dir` whose path inside it matches `pattern` (None: EmoBox's):
    fold number -> {"train": file, "test": file}, in fold order. In the pattern `{fold}` is the
    fold's number, `{subset}` train or test and `*` any part of a name. Also called by the
    up-front checks."""
    pattern = pattern or DEFAULT_FOLDS_PATTERN
    if not folds_dir or not Path(folds_dir).is_dir():
        raise SplitConfigError(f"split.folds_dir: '{folds_dir}' is not a folder; give the folder of the fold "
                               "files (EmoBox: its data/<corpus>, e.g. EmoBox/data/ravdess)")
    if "{fold}" not in pattern or "{subset}" not in pattern:
        raise SplitConfigError(f"split.folds_pattern: '{pattern}' must contain {{fold}} and {{subset}} "
                               f"(EmoBox: {DEFAULT_FOLDS_PATTERN})")
    regex = _pattern_regex(pattern)
    found: dict[int, dict[str, Path]] = {}
    for path in sorted(Path(folds_dir).rglob("*")):
        match = regex.fullmatch(path.relative_to(folds_dir).as_posix())
        if match and path.is_file():
            found.setdefault(int(match["fold"]), {})[match["subset"]] = path
    if not found:
        raise SplitConfigError(f"split.folds_dir: '{folds_dir}' holds no fold file matching "
                               f"split.folds_pattern '{pattern}'")
    incomplete = sorted(number for number, paths in found.items() if len(paths) < 2)
    if incomplete:
        raise SplitConfigError(f"split.folds_dir: fold(s) {incomplete} in '{folds_dir}' lack a train or a "
                               f"test file matching '{pattern}'")
    return dict(sorted(found.items()))


def read_fold_file(path: Path) -> list[dict[str, Any]]:
    """The entries of a JSONL fold file, one JSON object a line with at least `wav` (EmoBox: key,
    wav, emo and more)."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise SplitConfigError(f"{path}, line {number}: not a JSON object ({error.msg})") from None
        if not isinstance(entry, dict) or not entry.get("wav"):
            raise SplitConfigError(f"{path}, line {number}: a fold file line needs the clip's file as 'wav'")
        entries.append(entry)
    return entries


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """`pattern` as a regular expression; a second `{fold}` or `{subset}` must repeat the first."""
    parts, seen = [], set()
    for token in re.split(r"(\{fold\}|\{subset\}|\*)", pattern):
        if token in ("{fold}", "{subset}"):
            group = token[1:-1]
            parts.append(f"(?P={group})" if group in seen else
                         f"(?P<{group}>{'[0-9]+' if group == 'fold' else 'train|test'})")
            seen.add(group)
        else:
            parts.append("[^/]*" if token == "*" else re.escape(token))
    return re.compile("".join(parts))


def _name_depth(paths: Iterable[str]) -> int:
    """How many trailing path parts name each clip uniquely: 1 (the file name) unless two folders
    hold files of one name (SAVEE's DC/a01.wav and JE/a01.wav), then the folders too."""
    paths = list(paths)
    longest = max((len(PurePosixPath(path).parts) for path in paths), default=1)
    for depth in range(1, longest):
        if len({_clip_name(path, depth) for path in paths}) == len(paths):
            return depth
    return longest


def _clip_name(path: str, depth: int) -> str:
    """The last `depth` parts of a clip's path, without its extension: a corpus converted to FLAC
    still matches fold files that list WAV files."""
    parts = PurePosixPath(str(path).replace("\\", "/")).parts
    return "/".join([*parts[-depth:-1], PurePosixPath(parts[-1]).stem])


def _speakers(clips: pd.DataFrame, protocol: str) -> list[str]:
    if not clips["has_speaker"].all():
        unknown = ~clips["has_speaker"]
        corpora = sorted(clips.loc[unknown, "corpus"].unique())
        raise SplitConfigError(
            f"{unknown.sum()} clips have no speaker (corpora: {', '.join(corpora)}), so a {protocol} split "
            "cannot keep their speakers apart. Give their speakers (folder reader: "
            "<label>/<speaker>/clip.wav; csv reader: a speaker column), leave those corpora out, or use "
            "split.strategy: random")
    return sorted(clips["speaker"].unique())


def _subsets(clips: pd.DataFrame, train: np.ndarray, test: np.ndarray, options: Mapping[str, Any],
             rng: np.random.Generator) -> np.ndarray:
    """Each clip's subset in a fold that tests on `test` and trains on `train`, with validation
    clips drawn from the training clips only; "" for clips the fold does not use."""
    validation = np.zeros(len(clips), dtype=bool)
    validation[train] = _validation_draw(clips[train], float(options["validation_size"]), rng)
    return np.select([test, validation, train], ["test", "validation", "train"], default="").astype(object)


def _validation_draw(train: pd.DataFrame, share: float, rng: np.random.Generator) -> np.ndarray:
    """Which training clips validate: whole speakers where speakers are known, so that the choices
    made on validation clips are made on unheard voices as the test is; else a share of each
    emotion."""
    validation = np.zeros(len(train), dtype=bool)
    known = train["has_speaker"].to_numpy()
    if known.any():
        speakers = sorted(train.loc[known, "speaker"].unique())
        n_validation = max(1, round(share * len(speakers)))
        if n_validation >= len(speakers):
            raise SplitConfigError(
                f"a fold has {len(speakers)} training speaker(s): too few to validate on {n_validation} "
                "(split.validation_size) and train on the others. Add speakers or use another split.strategy")
        chosen = rng.choice(speakers, n_validation, replace=False)
        validation[known] = train.loc[known, "speaker"].isin(chosen).to_numpy()
    if not known.all():
        validation[~known] = _stratified(train[~known], {"validation": share}, rng) == "validation"
    return validation


def _stratified(clips: pd.DataFrame, shares: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """Each clip's subset: of each emotion's source clips, a share per subset (at least one), in
    the order of `shares`, the rest "train"; each emotion is split in the same proportions, however
    few clips it has."""
    source, emotion = clips["source"].to_numpy(), clips["emotion"].to_numpy()
    subset_of: dict[str, str] = {}
    for label in sorted(set(emotion)):
        members = rng.permutation(pd.unique(source[emotion == label]))
        counts = [max(1, round(share * len(members))) for share in shares.values()]
        if len(members) - sum(counts) < 1:
            raise SplitConfigError(
                f"emotion '{label}' has {len(members)} clips: too few for "
                f"{', '.join(f'a {subset}' for subset in shares)} and a training clip. Add clips, or leave "
                "the emotion out with the `emotions` parameter")
        for subset, start, stop in zip(shares, np.cumsum([0, *counts[:-1]]), np.cumsum(counts), strict=True):
            subset_of |= dict.fromkeys(members[start:stop], subset)
    return np.array([subset_of.get(clip, "train") for clip in source], dtype=object)

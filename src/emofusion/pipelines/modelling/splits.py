"""Which clips train, validate and test each fold: the evaluation protocols as `split.strategy`s.
Pure functions of the clip manifest and the split settings, so that every model and every
fine-tuned network is scored on the same test clips."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from emofusion.errors import SplitConfigError

SPLIT_STRATEGIES = ("random", "speaker_independent")


def split_clips(clip_manifest: pd.DataFrame, split_options: Mapping[str, Any], random_seed: int
                ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One row per (fold, clip) with its subset: train, validation or test; and the settings it was
    made with (`data_split_settings`), which every model checks against its run's parameters.

    `random`: one fold, stratified by emotion: test `test_size`, validation `validation_size`, the
    rest train. `speaker_independent`: speakers are dealt into `speaker_folds` groups; fold k tests
    on group k, validates on group k+1 and trains on the others, so no speaker is in two subsets.
    Classifiers without early stopping (the SVM) train on train and validation together."""
    strategy = split_options.get("strategy")
    if strategy not in SPLIT_STRATEGIES:
        raise SplitConfigError(f"split strategy '{strategy}' is not one of: {', '.join(SPLIT_STRATEGIES)}")
    columns = ["fold", "clip_id", "emotion", "speaker", "subset"]
    clips = clip_manifest[["clip_id", "emotion", "speaker"]].astype(str).reset_index(drop=True)
    # Windows of one long clip (audio.long_clips: windows) share a source clip and are split together.
    source = clip_manifest.get("source_clip_id", clip_manifest["clip_id"]).astype(str).to_numpy()
    if strategy == "random":
        test_size = float(split_options["test_size"])
        validation_size = float(split_options["validation_size"])
        if not (0 < test_size < 1 and 0 < validation_size < 1 and test_size + validation_size < 1):
            raise SplitConfigError("split.test_size and split.validation_size must be fractions that "
                                   "leave clips to train on")
        # Each emotion is split in the same proportions, however few clips it has.
        rng = np.random.default_rng(random_seed)
        subset_of: dict[str, str] = {}
        for emotion, members in clips.groupby("emotion").groups.items():
            members = rng.permutation(pd.unique(source[np.asarray(members)]))
            n_test = max(1, round(test_size * len(members)))
            n_validation = max(1, round(validation_size * len(members)))
            if len(members) - n_test - n_validation < 1:
                raise SplitConfigError(
                    f"emotion '{emotion}' has {len(members)} clips: too few for a test, a validation and a "
                    "training clip. Add clips, or leave the emotion out with the `emotions` parameter")
            subset_of |= dict.fromkeys(members[:n_test], "test")
            subset_of |= dict.fromkeys(members[n_test:n_test + n_validation], "validation")
        subset = np.array([subset_of.get(clip, "train") for clip in source], dtype=object)
        made_with = {"split.strategy": strategy, "split.test_size": split_options["test_size"],
                     "split.validation_size": split_options["validation_size"], "random_seed": random_seed}
        return clips.assign(fold=0, subset=subset)[columns], made_with

    unknown = clip_manifest["speaker"].isna().to_numpy()
    if unknown.any():
        corpora = sorted(clip_manifest.loc[unknown, "corpus"].astype(str).unique())
        raise SplitConfigError(
            f"{unknown.sum()} clips have no speaker (corpora: {', '.join(corpora)}), so a "
            "speaker-independent split cannot keep their speakers apart. Give their speakers (folder reader: "
            "<label>/<speaker>/clip.wav; csv reader: a speaker column), leave those corpora out, or use "
            "split.strategy: random")
    speakers = sorted(clips["speaker"].unique())
    n_folds = int(split_options["speaker_folds"])
    if n_folds < 3 or len(speakers) < n_folds:
        raise SplitConfigError(
            f"a speaker-independent split into {n_folds} folds needs at least 3 folds and one speaker per "
            f"fold; these clips have {len(speakers)} speakers. Set split.speaker_folds between 3 and "
            f"{len(speakers)}, or use split.strategy: random")
    group = {speaker: k for k, chunk in enumerate(np.array_split(np.array(speakers), n_folds))
             for speaker in chunk}
    speaker_group = clips["speaker"].map(group).to_numpy()
    folds = []
    for fold in range(n_folds):
        subset = np.where(speaker_group == fold, "test",
                          np.where(speaker_group == (fold + 1) % n_folds, "validation", "train"))
        folds.append(clips.assign(fold=fold, subset=subset))
    # The sorted speakers decide the folds: no seed is drawn.
    made_with = {"split.strategy": strategy, "split.speaker_folds": split_options["speaker_folds"]}
    return pd.concat(folds, ignore_index=True)[columns], made_with

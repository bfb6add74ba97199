"""data_processing nodes: corpora -> one labelled manifest -> preprocessed fixed-length audio."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ClipArray, RowPart, row_parts, rows_per_part
from emofusion.errors import ClipRejected, CorpusError
from emofusion.learning.splits import SPEAKER_SPLITS
from emofusion.parallel import imap_chunks

from .audio import CLIP_INFO_COLUMNS, preprocess_windows
from .corpora import CLIP_COLUMNS, REJECTION_COLUMNS, scan_corpus
from .demo_corpus import write_demo_corpus

logger = logging.getLogger(__name__)


def _label_map(corpus: str, source: Mapping[str, Any], label_maps: Mapping[str, Any],
               vocabulary: Sequence[str]) -> dict[str, str] | None:
    """The corpus's own map, else its reader's; ``None`` means labels are already emotions."""
    mapping = source.get("label_map") or label_maps.get(source["reader"])
    if mapping is None:
        return None
    mapping = {str(k): v for k, v in mapping.items()}
    unknown = sorted(set(mapping.values()) - set(vocabulary))
    if unknown:
        raise CorpusError(
            f"Corpus '{corpus}': its label map names {unknown}, which are not in "
            f"emotion_vocabulary {list(vocabulary)}"
        )
    return mapping


def _harmonise(clips: pd.DataFrame, mapping: dict[str, str] | None, vocabulary: Sequence[str]
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    if mapping is None:
        emotion = clips["source_label"].str.strip().str.lower()
        emotion = emotion.where(emotion.isin(vocabulary))
    else:
        emotion = clips["source_label"].map(mapping)
    clips = clips.assign(emotion=emotion)
    unmapped = clips[clips["emotion"].isna()]
    hint = "add it to the corpus's label_map" if mapping is not None else (
        "name the folder by an emotion of emotion_vocabulary or give the corpus a label_map")
    rejections = unmapped.assign(
        stage="label",
        reason=[f"label '{label}' has no emotion; {hint}" for label in unmapped["source_label"]],
    )[REJECTION_COLUMNS]
    return clips[clips["emotion"].notna()], rejections


def _stratified_sample(clips: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    if not 0 < fraction <= 1:
        raise CorpusError(f"sample_fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return clips
    return clips.groupby("emotion", group_keys=False).sample(frac=fraction, random_state=seed)


def build_corpus_manifest(
    corpora: Sequence[str],
    corpus_sources: Mapping[str, Mapping[str, Any]],
    label_maps: Mapping[str, Mapping[str, str]],
    emotion_vocabulary: Sequence[str],
    emotions: Sequence[str],
    demo_corpus_options: Mapping[str, Any],
    random_seed: int,
    split_strategy: str = "random",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every selected corpus, harmonise its labels, keep the chosen emotions and sample.

    Returns the manifest of clips to decode and the clips rejected by name, speaker or label. A
    split that keeps speakers apart (`split_strategy`) rejects clips whose speaker a corpus's
    `speaker_pattern` cannot find, so that the split is made of the others.
    """
    if not corpora:
        raise CorpusError("Parameter 'corpora' is empty: name at least one of corpus_sources")
    unknown = [c for c in corpora if c not in corpus_sources]
    if unknown:
        raise CorpusError(f"corpora {unknown} are not defined in corpus_sources "
                          f"(defined: {sorted(corpus_sources)})")
    unknown = sorted(set(emotions) - set(emotion_vocabulary))
    if unknown:
        raise CorpusError(f"emotions {unknown} are not in emotion_vocabulary "
                          f"{list(emotion_vocabulary)}")
    manifests, rejections = [], []
    for corpus in corpora:
        source = corpus_sources[corpus]
        if source.get("reader") == "demo":
            write_demo_corpus(Path(source["path"]), dict(demo_corpus_options))
        clips, rejected = scan_corpus(corpus, source, speakers_required=split_strategy in SPEAKER_SPLITS)
        clips, unlabelled = _harmonise(
            clips, _label_map(corpus, source, label_maps, emotion_vocabulary), emotion_vocabulary)
        selected = clips["emotion"].isin(emotions)
        fraction = float(source.get("sample_fraction", 1.0))
        kept = _stratified_sample(clips[selected], fraction, random_seed)
        logger.info(
            "Corpus '%s': %d clips found, %d rejected by name, speaker or label, %d of unselected emotions "
            "%s, %d selected (%.0f%% stratified sample)",
            corpus, len(clips) + len(rejected) + len(unlabelled), len(rejected) + len(unlabelled),
            (~selected).sum(), clips.loc[~selected, "emotion"].value_counts().to_dict(), len(kept),
            100 * fraction,
        )
        manifests.append(kept)
        rejections += [rejected, unlabelled]
    manifest = pd.concat(manifests, ignore_index=True)[CLIP_COLUMNS]
    if manifest.empty:
        raise CorpusError(
            f"No clips selected from corpora {list(corpora)} for emotions {list(emotions)}; "
            "check the 'emotions' parameter against the corpora's labels"
        )
    return manifest.sort_values("clip_id", ignore_index=True), pd.concat(
        [r for r in rejections if len(r)] or [pd.DataFrame(columns=REJECTION_COLUMNS)],
        ignore_index=True,
    )


def _preprocess_chunk(rows: list[tuple[str, str]], audio_options: Mapping[str, Any]
                      ) -> list[tuple[str, list[tuple[np.ndarray, dict[str, Any]]] | str]]:
    results = []
    for clip_id, path in rows:
        try:
            results.append((clip_id, preprocess_windows(path, audio_options)))
        except ClipRejected as rejection:
            results.append((clip_id, str(rejection)))
    return results


def window_id(clip_id: str, start_s: float) -> str:
    """The clip id of one window of a long clip cut into windows (``audio.long_clips: windows``)."""
    return f"{clip_id}@{start_s:.2f}s"


def preprocess_audio(
    corpus_manifest: pd.DataFrame, audio_options: Mapping[str, Any], n_jobs: int
) -> Iterator[tuple[RowPart, RowPart, RowPart]]:
    """Decode and preprocess every clip in parallel into (clips, samples) float32 rows, yielded part
    by part (`clip_array.PART_BYTES`) as the workers finish them: Kedro stores each part as it
    comes, so that no process holds the whole corpus's audio.

    Yields parts of the audio, of the manifest of clips that passed (with their source format and
    which part of the speech was kept: `window_start_s`, `kept_duration_s`; windows of one long clip
    share its `source_clip_id`) and of the clips rejected with the reason
    (`emofusion.clip_array.joined_outputs` makes each whole).
    """
    yield from row_parts(_preprocessed_blocks(corpus_manifest, audio_options, n_jobs))


def _preprocessed_blocks(corpus_manifest: pd.DataFrame, audio_options: Mapping[str, Any], n_jobs: int
                         ) -> Iterator[tuple[ClipArray, pd.DataFrame, pd.DataFrame]]:
    """(audio, manifest, rejections) of consecutive clips, a part's worth of audio at a time, then
    the rest (which may be empty)."""
    length = int(round(audio_options["duration_s"] * audio_options["sample_rate"]))
    rows_per_block = rows_per_part((length,), np.float32)
    metadata = {"sample_rate": audio_options["sample_rate"], "duration_s": audio_options["duration_s"],
                "preprocessing": dict(audio_options), "made_with": {"audio": dict(audio_options)}}
    block = _AudioBlock(length, rows_per_block, metadata)
    long_clips: dict[str, int] = {}  # windows (or 1, cropped) of each clip longer than duration_s
    rows = list(zip(corpus_manifest["clip_id"], corpus_manifest["path"], strict=True))
    for clip_id, windows in imap_chunks(_preprocess_chunk, rows, n_jobs=n_jobs,
                                        description="Preprocessing audio",
                                        audio_options=audio_options):
        if isinstance(windows, str):
            block.rejections.append({"clip_id": clip_id, "stage": "audio", "reason": windows})
            continue
        for signal, info in windows:  # rejected clips leave no gap: rows stay compact
            block.add(window_id(clip_id, info["window_start_s"]) if len(windows) > 1 else clip_id, signal)
            block.infos.append({"clip_id": block.clip_ids[-1], "source_clip_id": clip_id} | info)
            if info["speech_duration_s"] > audio_options["duration_s"]:
                long_clips[clip_id] = long_clips.get(clip_id, 0) + 1
        if len(block.clip_ids) >= rows_per_block:
            yield block.tables(corpus_manifest)
            block = _AudioBlock(length, rows_per_block, metadata)
    _log_long_clips(len(long_clips), sum(long_clips.values()), audio_options)
    yield block.tables(corpus_manifest)


@dataclass
class _AudioBlock:
    """The clips of one part as they arrive, made into the part's three outputs at its end. Each
    signal is copied into the part's rows as it comes, while the workers make the next, rather than
    all of them at the part's end (a 55 MB copy, while no result was collected)."""

    length: int
    rows: int
    metadata: dict[str, Any]
    clip_ids: list[str] = field(default_factory=list)
    infos: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[dict[str, Any]] = field(default_factory=list)
    values: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.values = np.empty((self.rows, self.length), dtype=np.float32)

    def add(self, clip_id: str, signal: np.ndarray) -> None:
        if len(self.clip_ids) == len(self.values):  # a long clip's windows past the part's size
            self.values = np.concatenate([self.values, np.empty_like(self.values[:self.rows])])
        self.values[len(self.clip_ids)] = signal
        self.clip_ids.append(clip_id)

    def tables(self, corpus_manifest: pd.DataFrame) -> tuple[ClipArray, pd.DataFrame, pd.DataFrame]:
        values = self.values[:len(self.clip_ids)]
        info_table = pd.DataFrame(self.infos, columns=["clip_id", "source_clip_id", *CLIP_INFO_COLUMNS])
        clip_manifest = info_table[["clip_id", "source_clip_id"]].merge(
            corpus_manifest.rename(columns={"clip_id": "source_clip_id"}), on="source_clip_id"
        )[CLIP_COLUMNS + ["source_clip_id"]].merge(info_table.drop(columns="source_clip_id"), on="clip_id")
        rejected = pd.DataFrame(self.rejections, columns=["clip_id", "stage", "reason"]).merge(
            corpus_manifest[["clip_id", "corpus", "path"]], on="clip_id")[REJECTION_COLUMNS]
        return ClipArray(np.array(self.clip_ids, dtype=str), values, self.metadata), clip_manifest, rejected


def _log_long_clips(clips: int, rows: int, audio: Mapping[str, Any]) -> None:
    """Say how many clips were longer than `audio.duration_s`, and what became of them."""
    if not clips:
        return
    if audio.get("long_clips", "crop") == "windows":
        logger.info("%d clips were longer than audio.duration_s = %s s: cut into %d windows every %s s "
                    "(audio.long_clips = windows)", clips, audio["duration_s"], rows, audio["window_hop_s"])
    else:
        logger.info("%d clips were longer than audio.duration_s = %s s and were cropped to it (audio.crop "
                    "= %s; clip_manifest has each one's speech_duration_s and kept_duration_s; "
                    "audio.long_clips = windows uses all of them)", clips, audio["duration_s"], audio["crop"])


def report_clip_usage(
    clip_manifest: pd.DataFrame, manifest_rejections: pd.DataFrame, audio_rejections: pd.DataFrame
) -> pd.DataFrame:
    """Log how many clips each corpus contributed and why the others were rejected; stop if
    nothing is left to learn from."""
    rejected = pd.concat([manifest_rejections, audio_rejections], ignore_index=True)
    used = clip_manifest["corpus"].value_counts()
    for corpus in sorted(set(used.index) | set(rejected["corpus"])):
        reasons = rejected.loc[rejected["corpus"] == corpus, "reason"].str.split(r"[:;]").str[0]
        logger.info("Corpus '%s': %d clips used, %d rejected %s", corpus, used.get(corpus, 0),
                    len(reasons), reasons.value_counts().to_dict() if len(reasons) else "")
    if clip_manifest.empty:
        raise CorpusError(
            f"All {len(rejected)} clips were rejected; the reasons are in rejected_clips "
            f"(first: {rejected['clip_id'].iloc[0]}: {rejected['reason'].iloc[0]})"
        )
    if len(rejected):
        logger.warning("%d clips rejected; see the rejected_clips dataset for each reason",
                       len(rejected))
    return rejected

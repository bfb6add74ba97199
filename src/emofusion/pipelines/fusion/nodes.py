"""Feature streams joined by clip id into one matrix per fusion variant.

Fusion aligns and concatenates. Scaling each block is learned from the training split, so it
belongs to the fitted model (`learning.blocks.BlockScaler`): the block boundaries and their weights
travel in the fused array's metadata. The one transformation made here is the optional per-speaker
standardisation, which needs the clips' speakers, which a fitted model (rows of features) never
sees, and uses no label."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ROWS_PER_COPY, ClipArray
from emofusion.errors import FusionConfigError, MissingClipsError
from emofusion.fused_columns import FusedColumns, GroupStatistics, StreamColumns
from emofusion.fusion_layout import BLOCK_SCALINGS, variant_layout
from emofusion.provenance import check_made_with
from emofusion.standardisation import apply_group_statistics, group_statistics

logger = logging.getLogger(__name__)


def _statistics_by_group(values: np.ndarray, clip_manifest: pd.DataFrame, by: str,
                         speaker_statistics_options: Mapping[str, Any], features: str,
                         pooled_axes: tuple[int, ...] = ()) -> tuple[GroupStatistics, dict[str, Any]]:
    """`group_statistics` with the manifest's speakers, or with its corpora (`by`: `speaker` or
    `corpus`), counting recordings by `source_clip_id` where the manifest has it (windows of one
    long clip), with the run's `speaker_statistics` (`min_clips` and, from `emofusion predict`, the
    training run's `fallback`), logged; and the record the metadata keeps."""
    min_clips = int(speaker_statistics_options["min_clips"])
    given = speaker_statistics_options.get("fallback")
    statistics, fallback, counts = group_statistics(values, clip_manifest[by], min_clips, given, pooled_axes,
                                                    clip_manifest.get("source_clip_id"))
    logger.info("Standardised %d clips (%s) by the statistics of their own %s (%d %s); %d clips "
                "without a %s or with fewer than %d recordings of theirs fell back to the statistics "
                "of %s", counts["normalised"], features, by, counts["speakers"],
                "speakers" if by == "speaker" else "corpora", counts["fallback"], by, min_clips,
                "all the training run's clips" if given is not None else f"all {len(values)} clips")
    return statistics, {"by": by, "min_clips": min_clips, "fallback": fallback, "clip_counts": counts}


def _rows_in_manifest_order(name: str, array: ClipArray, clip_ids: np.ndarray) -> np.ndarray:
    try:
        return array.positions(clip_ids)
    except MissingClipsError as error:
        raise KeyError(
            f"feature stream '{name}' lacks {len(error.missing)} of the {len(clip_ids)} clips in "
            f"clip_manifest (first: {error.missing[:3]}); it is older than the manifest: re-run the "
            "pipeline that makes it (`kedro run` re-runs everything)") from error


def standardise_spectrograms_by_speaker(clip_manifest: pd.DataFrame, log_mel_spectrogram: ClipArray,
                                        speaker_statistics_options: Mapping[str, Any],
                                        parameters: Mapping[str, Any]) -> ClipArray:
    """The spectrograms of the manifest's clips, each mel band standardised by its mean and
    standard deviation over all frames of all clips of the clip's own speaker (see
    `standardise_by_speaker`): what fine-tuned networks with `speaker_normalisation: speaker` read.
    Per band, not per bin, so that a voice's spectral envelope and level are removed while the
    time course within the clip, which the networks learn from, is kept. Stored in the
    spectrograms' own dtype (one copy; statistics in float64 chunk by chunk)."""
    check_made_with("log_mel_spectrogram", log_mel_spectrogram.metadata.get("made_with", {}), parameters,
                    remake="`kedro run --pipelines=feature_extraction`, then this run again")
    clip_ids = clip_manifest["clip_id"].astype(str).to_numpy()
    rows = _rows_in_manifest_order("log_mel_spectrogram", log_mel_spectrogram, clip_ids)
    source = log_mel_spectrogram.values
    values = np.empty((len(clip_ids), *source.shape[1:]), dtype=source.dtype)
    for first in range(0, len(rows), ROWS_PER_COPY):
        values[first:first + ROWS_PER_COPY] = source[rows[first:first + ROWS_PER_COPY]]
    statistics, normalisation = _statistics_by_group(values, clip_manifest, "speaker",
                                                     speaker_statistics_options,
                                                     "each mel band over its frames", pooled_axes=(2,))
    apply_group_statistics(values, statistics)
    metadata = log_mel_spectrogram.metadata
    return ClipArray(clip_ids, values, {
        **metadata, "unit": "standard deviations of the speaker's mel band",
        "speaker_normalisation": normalisation,
        "made_with": {**metadata.get("made_with", {}),
                      "speaker_statistics.min_clips": normalisation["min_clips"]}})


def fuse_feature_streams(clip_manifest: pd.DataFrame, fusion_variant: Any, block_weights: Mapping[str, float],
                         block_scaling: str, speaker_statistics_options: Mapping[str, Any],
                         parameters: Mapping[str, Any], *arrays: ClipArray) -> ClipArray:
    """One row per clip of the manifest, the streams' columns side by side, standardised per
    speaker (or per corpus) if the variant says `speaker_normalisation: speaker` (or `corpus`; see
    `standardise_by_speaker`;
    `speaker_statistics_options` gives `min_clips` and, from `emofusion predict`, the training run's
    `fallback` statistics, so that a clip without enough recordings of its speaker is treated as in
    training).

    Rows are matched by clip id, never by position: a stream that lacks a clip is an error that
    names the stream, not a silent shift. A stream made with other settings than the run's
    `parameters` is refused (a stored stream is not remade when its pipeline is not part of the
    run). The metadata carries what the model needs to treat the blocks: each block's columns and
    weight, how blocks are scaled and, for late fusion, which streams share a model; how the rows
    were normalised, with the fallback statistics; and `made_with`, the streams' settings and this
    node's, which modelling checks in turn."""
    if block_scaling not in BLOCK_SCALINGS:
        raise FusionConfigError(f"block_scaling '{block_scaling}' is not one of: {', '.join(BLOCK_SCALINGS)}")
    layout = variant_layout("", fusion_variant)
    streams = layout["streams"]
    made_with: dict[str, Any] = {}
    for name, array in zip(streams, arrays, strict=True):
        stream_made_with = array.metadata.get("made_with", {})
        check_made_with(name, stream_made_with, parameters,
                        remake=f"`kedro run --to-outputs={name}`, or plain `kedro run`")
        made_with |= stream_made_with
    made_with |= {"fusion_variant": fusion_variant, "block_scaling": block_scaling,
                  **{f"block_weights.{name}": block_weights[name] for name in streams}}
    clip_ids = clip_manifest["clip_id"].astype(str).to_numpy()
    rows = {name: _rows_in_manifest_order(name, array, clip_ids)
            for name, array in zip(streams, arrays, strict=True)}

    fused = FusedColumns([StreamColumns(array.values, rows[name]) for name, array in zip(streams, arrays,
                                                                                         strict=True)])
    blocks: list[dict[str, Any]] = []
    start = 0
    for name, array, stream in zip(streams, arrays, fused.streams, strict=True):
        stop = start + stream.width
        blocks.append({"stream": name, "start": start, "stop": stop, "weight": float(block_weights[name]),
                       "source": array.metadata})
        start = stop
    logger.info("Fused %s for %d clips: %s", " + ".join(streams), len(clip_ids),
                ", ".join(f"{b['stream']} {b['stop'] - b['start']}" for b in blocks))
    normalisation = None
    if layout["speaker_normalisation"] != "none":
        statistics, normalisation = _statistics_by_group(
            fused, clip_manifest, layout["speaker_normalisation"], speaker_statistics_options, "every column")
        fused = fused.standardised(statistics)
        made_with["speaker_statistics.min_clips"] = normalisation["min_clips"]
    return ClipArray(clip_ids, fused, {"feature": "fused_features", "streams": list(streams),
                                       "fusion": layout["fusion"], "groups": layout["groups"],
                                       "block_scaling": block_scaling, "blocks": blocks,
                                       "speaker_normalisation": normalisation, "made_with": made_with})

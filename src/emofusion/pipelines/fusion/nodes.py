"""Feature streams joined by clip id into one matrix per fusion variant.

Fusion aligns and concatenates. Scaling each block is learned from the training split, so it
belongs to the fitted model (modelling's `BlockScaler`): the block boundaries and their weights
travel in the fused array's metadata. The one transformation made here is the optional per-speaker
standardisation, which needs the clips' speakers, which a fitted model (rows of features) never
sees, and uses no label."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ClipArray
from emofusion.errors import FusionConfigError, MissingClipsError
from emofusion.provenance import check_made_with

logger = logging.getLogger(__name__)

ROWS_PER_COPY = 256  # rows copied at a time from a memory-mapped stream


FUSION_KINDS = ("early", "late")
BLOCK_SCALINGS = ("balanced", "standard")
# speaker: each clip standardised by its speaker's clips; corpus: by its corpus's (a domain: the
# recording conditions and language of one corpus, which a model trained on another never heard).
SPEAKER_NORMALISATIONS = ("none", "speaker", "corpus")


def variant_layout(variant: str, spec: Any) -> dict[str, Any]:
    """A variant's fusion kind, its groups of streams, all its streams and its speaker
    normalisation, from either YAML form: a list of streams (early fusion: one model on the streams
    side by side) or a mapping `{fusion: late, streams: [[mfcc, lpcc], transfer_features]}` (late
    fusion: one model per item, an item being a stream or a list of streams, their class
    probabilities combined), which may also say `speaker_normalisation: speaker` (or `corpus`)."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"fusion", "streams", "speaker_normalisation"})
        if unknown:
            raise FusionConfigError(f"fusion variant '{variant}' has unknown key(s) {unknown}; it takes "
                                    "`fusion` (early or late), `streams` and `speaker_normalisation`")
        kind, items = spec.get("fusion", "early"), spec.get("streams")
        normalisation = spec.get("speaker_normalisation", "none")
    else:
        kind, items, normalisation = "early", spec, "none"
    if kind not in FUSION_KINDS:
        raise FusionConfigError(f"fusion variant '{variant}': fusion '{kind}' is not one of: "
                                f"{', '.join(FUSION_KINDS)}")
    if normalisation not in SPEAKER_NORMALISATIONS:
        raise FusionConfigError(f"fusion variant '{variant}': speaker_normalisation '{normalisation}' is "
                                f"not one of: {', '.join(SPEAKER_NORMALISATIONS)}")
    if isinstance(items, str) or not isinstance(items, Sequence) or not items:
        raise FusionConfigError(
            f"fusion variant '{variant}' must be a non-empty list of streams, e.g. [mfcc, "
            "transfer_features], or {fusion: late, streams: [[mfcc, lpcc], transfer_features]}")
    if kind == "early":
        groups = [list(items)]
    else:
        groups = [[item] if isinstance(item, str) else list(item) for item in items]
        if len(groups) < 2 or not all(groups):
            raise FusionConfigError(f"late fusion variant '{variant}' needs at least two non-empty items "
                                    "in `streams`, one model each")
    return {"fusion": kind, "groups": groups, "streams": [s for group in groups for s in group],
            "speaker_normalisation": normalisation}


def _chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, len(values), ROWS_PER_COPY):
        yield np.asarray(values[start:start + ROWS_PER_COPY], dtype=np.float64)


def feature_statistics(values: np.ndarray, pooled_axes: tuple[int, ...] = ()
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The mean and standard deviation in float64 over the rows (axis 0) and the `pooled_axes`
    (a spectrogram's frames, axis 2: one value per mel band), computed over chunks of rows so
    that a wide or large float32/float16 array is never copied whole. They keep the pooled axes
    as length 1, so they broadcast against rows. A constant feature gets 1, so it standardises to
    0, not NaN."""
    axes = (0, *pooled_axes)
    count = len(values) * int(np.prod([values.shape[axis] for axis in pooled_axes]))
    mean = sum(chunk.sum(axis=axes, keepdims=True) for chunk in _chunks(values))[0] / count
    std = np.sqrt(sum(np.square(chunk - mean).sum(axis=axes, keepdims=True)
                      for chunk in _chunks(values))[0] / count)
    std[std <= 1e-6 * np.abs(mean)] = 1.0
    return mean, std


def relative_spread(std: np.ndarray, reference_std: np.ndarray) -> float:
    """How widely a group of rows varies against a reference, one number: the median over features of
    its standard deviation over the reference's. A group that lacks what the reference varies with
    (a batch of recordings of one emotion, against corpora of many) is far below the reference's
    corpora; a gain or a microphone moves the features' means, not this."""
    return float(np.median(np.asarray(std).ravel() / np.asarray(reference_std).ravel()))


def _standardise_rows(values: np.ndarray, rows: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    for first in range(0, len(rows), ROWS_PER_COPY):
        chunk = rows[first:first + ROWS_PER_COPY]
        values[chunk] = ((values[chunk] - mean) / std).astype(values.dtype)


def has_own_statistics(speakers: Sequence[Any], min_clips: int, sources: Sequence[Any] | None = None
                       ) -> np.ndarray:
    """Per row, whether it is standardised by its own speaker's statistics: whether its speaker has
    at least `min_clips` recordings. Recordings, not rows: the windows cut from one long recording
    (`sources`, their `source_clip_id`) count once, so that one recording is never standardised by
    itself; without `sources` each row is a recording of its own. Rows without a speaker never are.
    The one rule of training and `emofusion predict`, which also says how many files fell back."""
    table = pd.DataFrame({"speaker": pd.Series(list(speakers), dtype=object),
                          "source": range(len(speakers)) if sources is None else list(sources)})
    recordings = table.groupby("speaker")["source"].nunique()
    return (table["speaker"].map(recordings) >= min_clips).to_numpy()


def standardise_by_speaker(values: np.ndarray, speakers: Sequence[Any], min_clips: int,
                           fallback: Mapping[str, Sequence[float]] | None = None,
                           pooled_axes: tuple[int, ...] = (), sources: Sequence[Any] | None = None
                           ) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Standardise `values` in place, feature by feature (a column; with `pooled_axes`, e.g. a
    spectrogram's frames, a mel band over all its frames): each row by the mean and standard
    deviation of its own speaker's rows. That removes what is constant in a voice (its pitch range,
    timbre, recording level) and keeps how each clip departs from it. A row depends on its
    speaker's rows only, never on a label or another speaker's clips.

    Rows without a speaker, or whose speaker has fewer than `min_clips` recordings (too few for
    stable statistics; `sources` says which recording each row was cut from, see
    `has_own_statistics`), are standardised by `fallback` ({"mean": [...], "std": [...]}, one value
    per feature), by default the statistics of all rows. Returns the fallback statistics used and
    the counts of rows, with each group's `spread` against the fallback's (`relative_spread`): what
    `emofusion predict` compares a batch of one domain with."""
    if min_clips < 2:
        raise FusionConfigError(f"speaker_statistics.min_clips must be at least 2, got {min_clips}")
    own = has_own_statistics(speakers, min_clips, sources)
    speakers = pd.Series(list(speakers), dtype=object)
    shape = tuple(1 if axis in pooled_axes else size for axis, size in enumerate(values.shape) if axis)
    if fallback is None:
        mean, std = feature_statistics(values, pooled_axes)
        fallback = {"mean": mean.ravel().tolist(), "std": std.ravel().tolist()}
    mean, std = np.asarray(fallback["mean"]), np.asarray(fallback["std"])
    features = int(np.prod(shape))
    if mean.size != features or std.shape != mean.shape:
        raise ValueError(f"the fallback statistics have {mean.size} values for {features} features: "
                         "they come from features made with other settings")
    own_speakers = speakers[own].unique()
    spread = {}
    for speaker in own_speakers:
        rows = np.flatnonzero((speakers == speaker).to_numpy())
        own_mean, own_std = feature_statistics(values[rows], pooled_axes)
        spread[str(speaker)] = relative_spread(own_std, std)
        _standardise_rows(values, rows, own_mean, own_std)
    _standardise_rows(values, np.flatnonzero(~own), mean.reshape(shape), std.reshape(shape))
    return dict(fallback), {"speakers": len(own_speakers), "normalised": int(own.sum()),
                            "fallback": int((~own).sum()), "spread": spread}


def _normalised_by_group(values: np.ndarray, clip_manifest: pd.DataFrame, by: str,
                         speaker_statistics_options: Mapping[str, Any], features: str,
                         pooled_axes: tuple[int, ...] = ()) -> dict[str, Any]:
    """`standardise_by_speaker` with the manifest's speakers, or with its corpora (`by`: `speaker`
    or `corpus`), counting recordings by `source_clip_id` where the manifest has it (windows of one
    long clip), with the run's `speaker_statistics` (`min_clips` and, from `emofusion predict`, the
    training run's `fallback`), logged; the record the metadata keeps."""
    min_clips = int(speaker_statistics_options["min_clips"])
    given = speaker_statistics_options.get("fallback")
    fallback, counts = standardise_by_speaker(values, clip_manifest[by], min_clips, given, pooled_axes,
                                              clip_manifest.get("source_clip_id"))
    logger.info("Standardised %d clips (%s) by the statistics of their own %s (%d %s); %d clips "
                "without a %s or with fewer than %d recordings of theirs fell back to the statistics "
                "of %s", counts["normalised"], features, by, counts["speakers"],
                "speakers" if by == "speaker" else "corpora", counts["fallback"], by, min_clips,
                "all the training run's clips" if given is not None else f"all {len(values)} clips")
    return {"by": by, "min_clips": min_clips, "fallback": fallback, "clip_counts": counts}


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
    normalisation = _normalised_by_group(values, clip_manifest, "speaker", speaker_statistics_options,
                                         "each mel band over its frames", pooled_axes=(2,))
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

    widths = [int(np.prod(array.values.shape[1:])) for array in arrays]
    fused = np.empty((len(clip_ids), sum(widths)), dtype=np.float32)
    blocks: list[dict[str, Any]] = []
    start = 0
    for name, array, width in zip(streams, arrays, widths, strict=True):
        stop = start + width
        for first in range(0, len(clip_ids), ROWS_PER_COPY):
            chunk = rows[name][first:first + ROWS_PER_COPY]
            fused[first:first + len(chunk), start:stop] = array.values[chunk].reshape(len(chunk), width)
        blocks.append({"stream": name, "start": start, "stop": stop, "weight": float(block_weights[name]),
                       "source": array.metadata})
        start = stop
    logger.info("Fused %s for %d clips: %s", " + ".join(streams), len(clip_ids),
                ", ".join(f"{b['stream']} {b['stop'] - b['start']}" for b in blocks))
    normalisation = None
    if layout["speaker_normalisation"] != "none":
        normalisation = _normalised_by_group(fused, clip_manifest, layout["speaker_normalisation"],
                                             speaker_statistics_options, "every column")
        made_with["speaker_statistics.min_clips"] = normalisation["min_clips"]
    return ClipArray(clip_ids, fused, {"feature": "fused_features", "streams": list(streams),
                                       "fusion": layout["fusion"], "groups": layout["groups"],
                                       "block_scaling": block_scaling, "blocks": blocks,
                                       "speaker_normalisation": normalisation, "made_with": made_with})

"""Feature streams joined by clip id into one matrix per fusion variant.

Fusion only aligns and concatenates. Scaling each block is learned from the training split, so it
belongs to the fitted model (modelling's `BlockScaler`): the block boundaries and their weights
travel in the fused array's metadata."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from emofusion.clip_array import ClipArray, MissingClipsError
from emofusion.provenance import check_made_with

logger = logging.getLogger(__name__)

ROWS_PER_COPY = 256  # rows copied at a time from a memory-mapped stream


class FusionConfigError(ValueError):
    """A fusion variant that cannot be built, said before anything runs."""


FUSION_KINDS = ("early", "late")
BLOCK_SCALINGS = ("balanced", "standard")


def variant_layout(variant: str, spec: Any) -> dict[str, Any]:
    """A variant's fusion kind, its groups of streams and all its streams, from either YAML form:
    a list of streams (early fusion: one model on the streams side by side) or a mapping
    `{fusion: late, streams: [[mfcc, lpcc], transfer_features]}` (late fusion: one model per item,
    an item being a stream or a list of streams, their class probabilities combined)."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"fusion", "streams"})
        if unknown:
            raise FusionConfigError(f"fusion variant '{variant}' has unknown key(s) {unknown}; it takes "
                                    "`fusion` (early or late) and `streams`")
        kind, items = spec.get("fusion", "early"), spec.get("streams")
    else:
        kind, items = "early", spec
    if kind not in FUSION_KINDS:
        raise FusionConfigError(f"fusion variant '{variant}': fusion '{kind}' is not one of: "
                                f"{', '.join(FUSION_KINDS)}")
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
    return {"fusion": kind, "groups": groups, "streams": [s for group in groups for s in group]}


def validated_fusion_variants(fusion_variants: Mapping[str, Any],
                              block_weights: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """Each variant's layout (see `variant_layout`), its streams checked against the keys of
    `block_weights`.

    A variant set to null is left out: an environment's parameters are merged into base's key by
    key, so `<variant>: null` is how an environment (e.g. conf/paper) switches off a variant of
    conf/base."""
    variants = {}
    for variant, spec in (fusion_variants or {}).items():
        if spec is None:
            continue
        if not variant.isidentifier() or "__" in variant:
            raise FusionConfigError(
                f"fusion variant name '{variant}' must be a Python identifier (letters, digits, single "
                "underscores): it becomes part of dataset and pipeline names")
        layout = variant_layout(variant, spec)
        streams = layout["streams"]
        unknown = [stream for stream in streams if stream not in block_weights]
        if unknown:
            raise FusionConfigError(
                f"fusion variant '{variant}' names unknown feature stream(s) {unknown}; known streams "
                f"(the keys of `block_weights`): {sorted(block_weights)}")
        if len(set(streams)) != len(streams):
            raise FusionConfigError(f"fusion variant '{variant}' names a stream twice: {streams}")
        variants[variant] = layout
    if not variants:
        raise FusionConfigError("`fusion_variants` is empty (or all null): name at least one list of "
                                "feature streams")
    return variants


def fuse_feature_streams(clip_manifest: pd.DataFrame, fusion_variant: Any, block_weights: Mapping[str, float],
                         block_scaling: str, parameters: Mapping[str, Any], *arrays: ClipArray) -> ClipArray:
    """One row per clip of the manifest, the streams' columns side by side.

    Rows are matched by clip id, never by position: a stream that lacks a clip is an error that
    names the stream, not a silent shift. A stream made with other settings than the run's
    `parameters` is refused (a stored stream is not remade when its pipeline is not part of the
    run). The metadata carries what the model needs to treat the blocks: each block's columns and
    weight, how blocks are scaled and, for late fusion, which streams share a model; and `made_with`,
    the streams' settings and this node's, which modelling checks in turn."""
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
    rows = {}
    for name, array in zip(streams, arrays, strict=True):
        try:
            rows[name] = array.positions(clip_ids)
        except MissingClipsError as error:
            raise KeyError(
                f"feature stream '{name}' lacks {len(error.missing)} of the {len(clip_ids)} clips in "
                f"clip_manifest (first: {error.missing[:3]}); it is older than the manifest: re-run the "
                "pipeline that makes it (`kedro run` re-runs everything)") from error

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
    return ClipArray(clip_ids, fused, {"feature": "fused_features", "streams": list(streams),
                                       "fusion": layout["fusion"], "groups": layout["groups"],
                                       "block_scaling": block_scaling, "blocks": blocks,
                                       "made_with": made_with})

"""What a fusion variant is, below the pipelines that read it: its fusion kind, groups of streams and
speaker normalisation (`variant_layout`), and the names of streams and datasets that several
pipelines share."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emofusion.errors import FusionConfigError

# The stream of the CNN's transfer features: the summary and the report ask whether it helps.
CNN_STREAM = "transfer_features"
# What fine-tuned networks with `speaker_normalisation: speaker` read; made by the fusion pipeline.
SPEAKER_NORMALISED_SPECTROGRAMS = "log_mel_spectrogram_spk"


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

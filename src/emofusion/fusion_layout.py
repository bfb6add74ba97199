"""What a fusion variant is, below the pipelines that read it: its fusion kind, groups of streams and
speaker normalisation (`variant_layout`, from the `FusionVariant` schema), and the names of streams
and datasets that several pipelines share."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emofusion.errors import FusionConfigError

# The stream of the CNN's transfer features: the summary and the report ask whether it helps.
CNN_STREAM = "transfer_features"
# What fine-tuned networks with `speaker_normalisation: speaker` read; made by the fusion pipeline.
SPEAKER_NORMALISED_SPECTROGRAMS = "log_mel_spectrogram_spk"


BLOCK_SCALINGS = ("balanced", "standard")

Stream = str
Item = Stream | list[Stream]  # late fusion: one model per item, a stream or streams fused early


class FusionVariant(BaseModel):
    """One entry of `fusion_variants`, in either YAML form: a list of streams (early fusion: one model
    on the streams side by side) or a mapping `{fusion: late, streams: [[mfcc, lpcc],
    transfer_features]}` (late fusion: one model per item, their class probabilities combined),
    which may also say `speaker_normalisation: speaker` (each clip standardised by its speaker's
    clips) or `corpus` (by its corpus's: a domain, the recording conditions and language of one
    corpus, which a model trained on another never heard)."""

    model_config = ConfigDict(extra="forbid")
    fusion: Literal["early", "late"] = "early"
    streams: list[Item] = Field(min_length=1)
    speaker_normalisation: Literal["none", "speaker", "corpus"] = "none"

    @model_validator(mode="before")
    @classmethod
    def _from_a_list(cls, value: Any) -> Any:
        if isinstance(value, list | tuple) and value:
            return {"streams": list(value)}
        if isinstance(value, str | list | tuple):
            raise ValueError("a variant is a non-empty list of streams, e.g. [mfcc, transfer_features], or "
                             "{fusion: late, streams: [[mfcc, lpcc], transfer_features]}")
        return value

    @model_validator(mode="after")
    def _groups_fit_the_kind(self) -> FusionVariant:
        if self.fusion == "early" and not all(isinstance(item, str) for item in self.streams):
            raise ValueError("early fusion takes a flat list of streams (lists of streams are items of late "
                             "fusion)")
        if self.fusion == "late" and (len(self.streams) < 2 or not all(self.streams)):
            raise ValueError("late fusion needs at least two non-empty items in `streams`, one model each")
        return self

    def groups(self) -> list[list[str]]:
        if self.fusion == "early":
            return [list(self.streams)]  # type: ignore[arg-type]
        return [[item] if isinstance(item, str) else list(item) for item in self.streams]


def variant_layout(variant: str, spec: Any) -> dict[str, Any]:
    """A variant's fusion kind, its groups of streams, all its streams and its speaker
    normalisation (`FusionVariant`)."""
    try:
        parsed = FusionVariant.model_validate(spec)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, problem['loc'])) + ': ' if problem['loc'] else ''}"
            f"{problem['msg'].removeprefix('Value error, ')}"
            + (f" (got {problem['input']!r})" if problem["type"] not in ("missing", "value_error") else "")
            for problem in error.errors(include_url=False))
        raise FusionConfigError(f"fusion variant '{variant}': {problems}") from None
    groups = parsed.groups()
    return {"fusion": parsed.fusion, "groups": groups, "streams": [s for group in groups for s in group],
            "speaker_normalisation": parsed.speaker_normalisation}

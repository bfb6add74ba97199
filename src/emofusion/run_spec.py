"""What one configuration runs, parsed and checked once: the feature streams it knows, its fusion
variants, its models (every variant with every classifier), its fine-tuned networks and which
pipelines make what. The context's validation builds it, the pipeline registry hands it to every
pipeline's `create_pipeline(spec)`, and `emofusion predict` asks it which models need speakers: one
parse per configuration (`run_spec` keeps the last ones by content), so no setting is checked twice."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from emofusion.fusion_layout import SPEAKER_NORMALISED_SPECTROGRAMS
from emofusion.instances import (
    fine_tuned_variant,
    fine_tuning_entries,
    pipeline_parameters,
    validated_classifiers,
    validated_fusion_variants,
)
from emofusion.learning.network_settings import LATE_FUSION, network_input
from emofusion.registry import FeatureStream, feature_streams


@dataclass(frozen=True, eq=False)
class RunSpec:
    streams: dict[str, FeatureStream]
    variants: dict[str, dict[str, Any]]  # name -> layout (fusion_layout.variant_layout)
    models: list[tuple[str, str]]  # (variant, classifier) of modelling
    fine_tuning: dict[str, dict[str, Any]]  # name -> entry, each merged over the defaults

    @cached_property
    def fine_tuned_models(self) -> list[tuple[str, str]]:
        """(variant, name) of every fine-tuned model, named as modelling's (variant, classifier)."""
        return [(fine_tuned_variant(name, entry), name) for name, entry in self.fine_tuning.items()]

    @property
    def every_model(self) -> list[tuple[str, str]]:
        """Modelling's models and the fine-tuned ones, which the summary and report cover alike."""
        return self.models + self.fine_tuned_models

    @cached_property
    def used_streams(self) -> list[str]:
        """The streams some fusion variant names, in the order they are known: only those are made."""
        used = {stream for layout in self.variants.values() for stream in layout["streams"]}
        return [name for name in self.streams if name in used]

    @cached_property
    def fine_tuned_inputs(self) -> set[str]:
        """The spectrogram datasets the enabled fine-tuned networks read."""
        return {network_input(entry) for entry in self.fine_tuning.values() if entry["kind"] != LATE_FUSION}

    @cached_property
    def feature_pipelines(self) -> tuple[str, ...]:
        """The pipelines `emofusion predict` runs to make any model's inputs from new audio: the
        audio's preprocessing, what each stream needs, fusion."""
        needed = {pipeline for stream in self.streams.values() for pipeline in stream.predict_needs}
        needed |= {stream.pipeline for stream in self.streams.values()}
        return ("data_processing", *sorted(needed - {"data_processing", "fusion"}), "fusion")

    @cached_property
    def speaker_normalised_models(self) -> set[str]:
        """`variant.classifier` of every model that reads features standardised per speaker (a fusion
        variant's, or the spectrograms of a fine-tuned network): they need the speakers."""
        normalised = {variant for variant, layout in self.variants.items()
                      if layout["speaker_normalisation"] == "speaker"}
        models = {f"{variant}.{classifier}" for variant, classifier in self.models if variant in normalised}
        for (variant, name), entry in zip(self.fine_tuned_models, self.fine_tuning.values(), strict=True):
            spectrograms = entry["network_input"] if entry["kind"] == LATE_FUSION else network_input(entry)
            if spectrograms == SPEAKER_NORMALISED_SPECTROGRAMS or entry.get("variant") in normalised:
                models.add(f"{variant}.{name}")
        return models


_parsed: dict[str, RunSpec] = {}  # by the parameters' content, in order: variants keep theirs


def run_spec(parameters: Mapping[str, Any] | None = None) -> RunSpec:
    """The run specification of `parameters` (default: the session's, `pipeline_parameters`),
    checked; a configuration parsed before is not parsed again."""
    parameters = pipeline_parameters() if parameters is None else parameters
    key = json.dumps(parameters, default=str)
    if key not in _parsed:
        if len(_parsed) >= 8:
            _parsed.pop(next(iter(_parsed)))
        _parsed[key] = _parse(parameters)
    return _parsed[key]


def _parse(parameters: Mapping[str, Any]) -> RunSpec:
    streams = feature_streams(parameters)
    variants = validated_fusion_variants(parameters["fusion_variants"], streams)
    classifiers = validated_classifiers(parameters, streams)
    return RunSpec(streams=streams, variants=variants,
                   models=[(variant, classifier) for variant in variants for classifier in classifiers],
                   fine_tuning=fine_tuning_entries(parameters))

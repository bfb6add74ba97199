"""The checks and names of the generated instances: fusion variants, classifiers and fine-tuned
models, the rules for their names, and the catalog names of their outputs; and which parameters the
pipelines are built from. Which instances a configuration has is emofusion.run_spec's answer,
parsed once from these checks.

Kedro hands parameters to nodes only when they run; the namespaced pipelines, though, must exist
before that. Kedro builds its pipeline registry lazily, at the first look-up of a pipeline, and
every command with a session (`kedro run`, `emofusion predict`, `kedro viz`, notebooks) creates the
session's context before that look-up. So the context (emofusion.configuration.ProjectContext)
hands its configuration loader, which knows the environment (`--env`, KEDRO_ENV or the default
`local`) and the `--params`, to `use_session_configuration()`, and `pipeline_parameters()` reads
it: the pipelines are built from the same parameters as the nodes get. Without a session (`kedro
registry list`, tests), the environment is the one in KEDRO_ENV.

Pipelines import this module, so it sits below the pipelines and imports none
of them: the checks it calls (a fusion variant's layout, the classifiers, the fine-tuning entries)
live below it too (emofusion.fusion_layout, emofusion.learning). Building every pipeline is
emofusion.pipeline_registry's, above them."""

from __future__ import annotations

import os
import warnings
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kedro.config import AbstractConfigLoader
from kedro.framework.project import settings

from emofusion.errors import ClassifierConfigError, FineTuningConfigError, FusionConfigError
from emofusion.fusion_layout import variant_layout
from emofusion.learning.network_settings import LATE_FUSION, model_entries, network_input
from emofusion.learning.validators import validated_reduction, validated_search
from emofusion.registry import check_kind, classifier_kinds, with_estimator

# The configuration loader of the latest context in this process, and where the pipelines were last
# read from (conf_source, env, runtime parameters).
_session_loader: AbstractConfigLoader | None = None
_last_read: tuple[str, str | None, dict[str, Any]] | None = None


def use_session_configuration(loader: AbstractConfigLoader) -> bool:
    """Build the pipelines from now on from this loader's configuration (a new session's). True
    when pipelines were already built in this process from another configuration (another session,
    another environment): Kedro's registry caches them, so it must build them again."""
    global _session_loader
    _session_loader = loader
    return _last_read is not None and _last_read != _source(loader)


def pipeline_parameters(project_path: Path | None = None) -> dict[str, Any]:
    """The parameters the pipelines are built from: those of the session's context, or, given a
    `project_path` or without a session, `conf/base` merged with the environment in KEDRO_ENV
    (default `local`)."""
    global _last_read
    loader = _session_loader
    if project_path is not None or loader is None:
        conf_source = Path(project_path or Path.cwd()) / settings.CONF_SOURCE
        loader = settings.CONFIG_LOADER_CLASS(conf_source=str(conf_source), env=os.environ.get("KEDRO_ENV"),
                                              **settings.CONFIG_LOADER_ARGS)
    _last_read = _source(loader)
    return loader["parameters"]


def use_parameters(parameters: Mapping[str, Any]) -> None:
    """Build the pipelines from `parameters` from now on: a model logged to MLflow (emofusion.serving)
    has no project folder, only the parameters of the run that trained it."""
    loader = AbstractConfigLoader(conf_source="parameters of a logged model")
    loader["parameters"] = dict(parameters)
    use_session_configuration(loader)


def _source(loader: AbstractConfigLoader) -> tuple[str, str | None, dict[str, Any]]:
    return str(loader.conf_source), loader.env, loader.runtime_params


def check_name(name: str, what: str, error: type[Exception]) -> None:
    """A variant, classifier or fine-tuned model becomes part of dataset and pipeline names, where
    `.` separates namespaces and `__` separates a variant from its classifier in node inputs."""
    if not name.isidentifier() or "__" in name:
        raise error(f"{what} name '{name}' must be a Python identifier (letters, digits, single "
                    "underscores): it becomes part of dataset and pipeline names")


def validated_fusion_variants(fusion_variants: Mapping[str, Any], streams: Collection[str]
                              ) -> dict[str, dict[str, Any]]:
    """Each variant's layout (`fusion_layout.variant_layout`), its streams checked against the known
    `streams` (`registry.feature_streams`).

    A variant set to null is left out: an environment's parameters are merged into base's key by
    key, so `<variant>: null` is how an environment (e.g. conf/paper) switches off a variant of
    conf/base."""
    variants = {}
    for variant, spec in (fusion_variants or {}).items():
        if spec is None:
            continue
        check_name(variant, "fusion variant", FusionConfigError)
        layout = variant_layout(variant, spec)
        named = layout["streams"]
        unknown = [stream for stream in named if stream not in streams]
        if unknown:
            raise FusionConfigError(
                f"fusion variant '{variant}' names unknown feature stream(s) {unknown}; known streams "
                f"(built in, `opensmile` entries and `feature_streams`): {sorted(streams)}")
        if len(set(named)) != len(named):
            raise FusionConfigError(f"fusion variant '{variant}' names a stream twice: {named}")
        variants[variant] = layout
    if not variants:
        raise FusionConfigError("`fusion_variants` is empty (or all null): name at least one list of "
                                "feature streams")
    return variants


def validated_classifiers(parameters: Mapping[str, Any], streams: Collection[str]) -> list[str]:
    """The names of the `classifiers` entries, each name and kind checked so that they fail here,
    before anything runs, with the `reduction` over the known `streams`. Their options and search
    grids are checked against their estimators by `check_classifier_options`, before a run that
    fits models: every run's process builds the pipelines, and one that fits none has no use for
    scikit-learn (half a second of imports).

    Entries set to null are left out, as in `validated_fusion_variants`: an environment merged
    into conf/base key by key switches off a classifier with `<classifier>: null`."""
    classifiers = _classifier_entries(parameters)
    validated_reduction(parameters.get("reduction"), sorted(streams))
    for name, options in classifiers.items():
        check_name(name, "classifier", ClassifierConfigError)
        check_kind(options.get("kind"), classifier_kinds(parameters))
    return list(classifiers)


def check_classifier_options(parameters: Mapping[str, Any], streams: Collection[str]) -> None:
    """Each `classifiers` entry's options and search grid against its estimator's parameters (an
    unknown option fails here, by its name, not in the middle of a fit)."""
    # scikit-learn is imported here, not with this module: the pipelines' modules import this one,
    # and so do the runs that fit no model and the per-clip stages' workers.
    from emofusion.learning.assembly import build_classifier

    for options in _classifier_entries(parameters).values():
        build_classifier(with_estimator(options, parameters), 0)
        validated_search(options, sorted(streams), classifier_kinds(parameters))


def _classifier_entries(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: options for name, options in parameters["classifiers"].items() if options is not None}


def fine_tuning_entries(parameters: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> entry, for every entry of `fine_tuning.models` switched on (fine-tuning's
    `model_entries`: none unless `fine_tuning.enabled`), its name and settings checked."""
    entries = model_entries(parameters)
    for name in entries:
        check_name(name, "fine_tuning model", FineTuningConfigError)
    return entries


def fine_tuned_variant(name: str, entry: Mapping[str, Any]) -> str:
    """The `variant` of a fine-tuned model in the summary and the catalog (`modelling.<variant>.<name>`):
    its input dataset (`log_mel_spectrogram`, or `log_mel_spectrogram_spk` standardised per
    speaker), or for late fusion the fusion variant's streams and the spectrogram
    (`<variant>_spectrogram_late`, `<variant>_spectrogram_spk_late`). Two entries that differ only
    by their speaker normalisation thus differ in their variant too."""
    if entry["kind"] != LATE_FUSION:
        return network_input(entry)
    return f"{entry['variant']}_{entry['network_input'].removeprefix('log_mel_')}_late"


def fused_features_name(variant: str) -> str:
    """The catalog name of a fusion variant's features (the fusion pipeline's output)."""
    return f"fusion.{variant}.fused_features"


def model_dataset(variant: str, classifier: str, output: str) -> str:
    """The catalog name of one output of a model (`trained_model`, `model_card`,
    `test_predictions`, `classification_metrics`), fine-tuned or not."""
    return f"modelling.{variant}.{classifier}.{output}"


def outputs_by_model(instances: list[tuple[str, str]], output: str = "classification_metrics",
                     key_suffix: str = "") -> dict[str, str]:
    """`<variant>__<classifier><key_suffix>` -> that model's `output` dataset: the keyword inputs of
    nodes that read one output of every model (a suffix keeps two outputs apart in one node)."""
    return {f"{variant}__{classifier}{key_suffix}": model_dataset(variant, classifier, output)
            for variant, classifier in instances}


def trained_models(catalog: Any, models: list[tuple[str, str]]) -> list[str]:
    """`variant.classifier` of each of `models` (the run specification's `every_model`) that has a
    model file."""
    return [f"{variant}.{classifier}" for variant, classifier in models
            if catalog.exists(model_dataset(variant, classifier, "trained_model"))]


@contextmanager
def dotted_dataset_names() -> Iterator[None]:
    """Wiring instances to other namespaces' datasets: their names are dotted as Kedro names them,
    and Kedro warns about any dotted name it did not make itself."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        yield



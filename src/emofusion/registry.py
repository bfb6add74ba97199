"""The feature streams a fusion variant may name and the classifier kinds a `classifiers` entry may
name, in one place each: the built-in ones here, a project's own in its parameters (`feature_streams`,
`classifier_kinds`, openSMILE's sets under `opensmile`), so a new one is one entry, not an edit of
the pipelines. What a stream is made by and from is named by import path (as Kedro's catalog names
dataset types), so this module sits below the pipelines and imports none of them.

A stream's entry says which pipeline makes it and, for a per-clip stream, the node function that
does (`extractor`, called with the preprocessed audio, its settings and `n_jobs`, returning a
ClipArray with its `made_with`); the catalog dataset of the same name holds it. Its block weight
applies where `block_weights` does not name it, and `predict_needs` lists the pipelines
`emofusion predict` runs to make it from new audio."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from kedro.utils import load_obj
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from emofusion.errors import ClassifierConfigError, FusionConfigError

OPENSMILE_EXTRACTOR = "emofusion.pipelines.feature_extraction.nodes.extract_opensmile_functionals"


class FeatureStream(BaseModel):
    """A feature stream: one row per clip, stored as the catalog dataset `name`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    pipeline: str
    extractor: str | None = None  # import path of a per-clip node; None: its pipeline wires it
    settings: str | None = None  # the parameter its extractor takes, e.g. `mfcc`, `opensmile.egemaps`
    block_weight: float = Field(default=1.0, ge=0)
    predict_needs: tuple[str, ...] = ("feature_extraction",)
    extractor_keywords: dict[str, Any] = Field(default_factory=dict)

    def extract(self) -> Callable[..., Any]:
        """The extractor, as a node function of (preprocessed_audio, settings, n_jobs)."""
        function = _imported(self.extractor, f"feature_streams.{self.name}.extractor", FusionConfigError)
        return partial(function, **self.extractor_keywords) if self.extractor_keywords else function


BUILT_IN_STREAMS = {stream.name: stream for stream in (
    FeatureStream(name="mfcc", pipeline="feature_extraction", settings="mfcc",
                  extractor="emofusion.pipelines.feature_extraction.nodes.extract_mfcc"),
    FeatureStream(name="lpcc", pipeline="feature_extraction", settings="lpcc",
                  extractor="emofusion.pipelines.feature_extraction.nodes.extract_lpcc"),
    # From the log-mel spectrograms, by the frozen CNN: the transfer_features pipeline wires it.
    FeatureStream(name="transfer_features", pipeline="transfer_features", settings="transfer_features",
                  predict_needs=("feature_extraction", "transfer_features")),
)}

BUILT_IN_CLASSIFIER_KINDS = {"svm": "emofusion.learning.estimators.KernelSVC",
                             "dnn": "emofusion.learning.estimators.DenseNetworkClassifier"}


def feature_streams(parameters: Mapping[str, Any]) -> dict[str, FeatureStream]:
    """Every stream this configuration knows: the built-in ones, one per `opensmile` entry, and the
    project's own `feature_streams` (name -> pipeline, extractor, settings, block_weight,
    predict_needs), which may also replace a built-in one."""
    streams = dict(BUILT_IN_STREAMS)
    for name, options in (parameters.get("opensmile") or {}).items():
        if options is not None:
            streams[name] = FeatureStream(name=name, pipeline="feature_extraction",
                                          extractor=OPENSMILE_EXTRACTOR, settings=f"opensmile.{name}",
                                          extractor_keywords={"stream": name})
    for name, entry in (parameters.get("feature_streams") or {}).items():
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or "pipeline" not in entry:
            raise FusionConfigError(f"feature_streams.{name}: give at least the pipeline that makes it "
                                    f"(and for a per-clip stream its extractor); got {entry!r}")
        try:
            streams[name] = FeatureStream(name=name, **entry)
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
                                 for problem in error.errors(include_url=False))
            raise FusionConfigError(f"feature_streams.{name}: {problems} (it takes pipeline, extractor, "
                                    "settings, block_weight and predict_needs)") from None
    return streams


def with_stream_weights(parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameters with a weight in `block_weights` for every known stream: the stream's own
    where `block_weights` does not name it, so every node, record and check sees the weight used.
    Streams that cannot be listed are left to the validation, which names the mistake."""
    try:
        streams = feature_streams(parameters)
    except FusionConfigError:
        return parameters
    given = parameters.get("block_weights") or {}
    return {**parameters, "block_weights": {**{name: stream.block_weight for name, stream in streams.items()},
                                            **given}}


def classifier_kinds(parameters: Mapping[str, Any]) -> dict[str, str]:
    """Kind -> import path of its estimator: the built-in ones and the project's `classifier_kinds`
    (a scikit-learn classifier with `predict_proba`, e.g. sklearn.neighbors.KNeighborsClassifier)."""
    return {**BUILT_IN_CLASSIFIER_KINDS,
            **{kind: path for kind, path in (parameters.get("classifier_kinds") or {}).items()
               if path is not None}}


def with_estimator(classifier: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """A `classifiers` entry with its kind's estimator under `estimator`, for `build_classifier`,
    which knows only the built-in kinds: the worker processes that fit folds get no parameters."""
    kinds = classifier_kinds(parameters)
    kind = classifier.get("kind")
    estimator_class(kind, kinds)  # a kind that cannot be built fails here, by its setting's name
    return {**classifier, "estimator": kinds[kind]}


def check_kind(kind: str, kinds: Mapping[str, str]) -> None:
    """A classifier `kind` is one of `kinds`, checked without importing its estimator."""
    if kind not in kinds:
        raise ClassifierConfigError(f"classifier kind '{kind}' is not one of: {sorted(kinds)} (a new kind "
                                    "is an entry of classifier_kinds: kind -> import path of its estimator)")


def estimator_class(kind: str, kinds: Mapping[str, str] = BUILT_IN_CLASSIFIER_KINDS) -> type:
    """The estimator of a classifier `kind` named in `kinds` (`classifier_kinds`' answer)."""
    check_kind(kind, kinds)
    estimator = _imported(kinds[kind], f"classifier_kinds.{kind}", ClassifierConfigError)
    if not (isinstance(estimator, type) and hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise ClassifierConfigError(f"classifier_kinds.{kind}: {kinds[kind]} is not a scikit-learn estimator "
                                    "class")
    return estimator


def _imported(path: str | None, setting: str, error: type[Exception]) -> Any:
    if not path:
        raise error(f"{setting}: not set")
    try:
        return load_obj(path)
    except (ImportError, AttributeError, ValueError) as problem:
        raise error(f"{setting}: cannot import '{path}' ({problem})") from None

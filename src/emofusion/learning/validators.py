"""Configuration checks of classifiers' search grids and the reduction, made once when the run
specification is parsed, before anything runs: their shape by a schema (`Reduction`,
`SearchGrid`), the names they refer to (streams, a classifier's settings) by the rules here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, RootModel, ValidationError

from emofusion.errors import ClassifierConfigError
from emofusion.registry import BUILT_IN_CLASSIFIER_KINDS, estimator_class

SEARCHABLE_STREAM_SETTINGS = ("block_weights", "pca")


class StreamReduction(BaseModel):
    """Randomized PCA of one stream to `pca` components (null: none)."""

    model_config = ConfigDict(extra="forbid")
    pca: Annotated[int, Field(gt=0, strict=True)] | None = None


def _candidates(values: Any) -> Any:
    if isinstance(values, list) and not values:
        raise ValueError("has no candidates")
    return values


Reduction = RootModel[dict[str, StreamReduction | None] | None]
# A setting -> its candidates (one value stands for a list of one).
SearchGrid = RootModel[dict[str, Annotated[Any, AfterValidator(_candidates)]] | None]


def _checked(schema: type[RootModel], value: Any, setting: str) -> Any:
    try:
        return schema.model_validate(value).root
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, (setting, *problem['loc'])))}: "
                             f"{problem['msg'].removeprefix('Value error, ')} (got {problem['input']!r})"
                             for problem in error.errors(include_url=False))
        raise ClassifierConfigError(problems) from None


def validated_reduction(reduction: Mapping[str, Any] | None, streams: Sequence[str]) -> None:
    """`reduction` maps known streams to {pca: N}, N a positive number of components or null."""
    for stream in _checked(Reduction, reduction, "reduction") or {}:
        if stream not in streams:
            raise ClassifierConfigError(f"reduction names unknown stream '{stream}'; known: "
                                        f"{sorted(streams)}")


def validated_search(classifier: Mapping[str, Any], streams: Sequence[str],
                     kinds: Mapping[str, str] = BUILT_IN_CLASSIFIER_KINDS) -> None:
    """A `search` grid names settings this classifier (of one of `kinds`) or the streams have, each
    with candidates."""
    search = _checked(SearchGrid, classifier.get("search"), "search") or {}
    known = set(estimator_class(classifier.get("kind"), kinds)().get_params()) - {"random_state"}
    for key in search:
        setting, _, stream = key.partition(".")
        if setting in SEARCHABLE_STREAM_SETTINGS:
            if stream not in streams:
                raise ClassifierConfigError(f"search key '{key}' names no known stream ({sorted(streams)})")
        elif key not in known:
            raise ClassifierConfigError(
                f"search key '{key}' is neither a setting of {classifier.get('kind')} ({sorted(known)}) "
                f"nor block_weights.<stream> or pca.<stream>")

"""Configuration checks of classifiers' search grids and the reduction, made once when the
instances are listed, before anything runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emofusion.errors import ClassifierConfigError
from emofusion.registry import BUILT_IN_CLASSIFIER_KINDS, estimator_class


def validated_reduction(reduction: Mapping[str, Any] | None, streams: Sequence[str]) -> None:
    """`reduction` maps known streams to {pca: N}, N a positive number of components or null."""
    if reduction is None:
        return
    if not isinstance(reduction, Mapping):
        raise ClassifierConfigError(f"reduction must map streams to {{pca: N}}, got {reduction!r}")
    for stream, options in reduction.items():
        if stream not in streams:
            raise ClassifierConfigError(
                f"reduction names unknown stream '{stream}'; known: {sorted(streams)}")
        if options is None:
            continue
        if not isinstance(options, Mapping) or set(options) - {"pca"}:
            raise ClassifierConfigError(f"reduction.{stream} must be {{pca: N}}, got {options!r}")
        n = options.get("pca")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ClassifierConfigError(f"reduction.{stream}.pca must be a positive integer, got {n!r}")


def validated_search(classifier: Mapping[str, Any], streams: Sequence[str],
                     kinds: Mapping[str, str] = BUILT_IN_CLASSIFIER_KINDS) -> None:
    """A `search` grid names settings this classifier (of one of `kinds`) or the streams have, each
    with candidates."""
    search = classifier.get("search") or {}
    if not isinstance(search, Mapping):
        raise ClassifierConfigError(f"search must map settings to lists of candidates, got {search!r}")
    known = set(estimator_class(classifier.get("kind"), kinds)().get_params()) - {"random_state"}
    for key, values in search.items():
        setting, _, stream = key.partition(".")
        if setting in SEARCHABLE_STREAM_SETTINGS:
            if stream not in streams:
                raise ClassifierConfigError(f"search key '{key}' names no known stream ({sorted(streams)})")
        elif key not in known:
            raise ClassifierConfigError(
                f"search key '{key}' is neither a setting of {classifier.get('kind')} ({sorted(known)}) "
                f"nor block_weights.<stream> or pca.<stream>")
        if isinstance(values, Sequence) and not isinstance(values, str) and len(values) == 0:
            raise ClassifierConfigError(f"search key '{key}' has no candidates")


SEARCHABLE_STREAM_SETTINGS = ("block_weights", "pca")

"""What a stored dataset was made with, and the check that it still fits the run that reads it.

A node outside the run (`kedro run --namespaces=...`, `--pipelines=modelling`) does not remake its
outputs, so a later run may read a dataset made with other settings than it asks for. Every dataset
that depends on parameters therefore records them, as `made_with`: parameter path (`split.strategy`,
`mfcc`, `backbones.squeezenet_v1_1`) -> the value it was made with, its inputs' settings included.
The nodes that read it refuse it when the run's parameters say otherwise, before anything is trained;
`emofusion predict` compares what a trained model's inputs were made with (kept in its model card)
with the project's parameters the same way (`made_with_differences`). Only settings are recorded, so
a fact of a run (a time, a path, a device, a version) never counts as a difference.
Under `NOTES` a maker may add what it found while making the dataset (the clips a split left out):
shown with the settings, never compared with the run's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from emofusion.errors import StaleInputError

_UNSET = object()  # a recorded parameter this run does not have
NOTES = "notes"


def check_made_with(dataset: str, made_with: Mapping[str, Any], parameters: Mapping[str, Any],
                    remake: str) -> None:
    """Stop when `dataset` was made with other settings than `parameters` (the run's) hold.

    Only the recorded paths are compared, leaf by leaf, so the message names each setting that
    differs; `remake` says how to make the dataset again with this run's settings."""
    differences = made_with_differences(made_with, parameters)
    if differences:
        made = ", ".join(f"{path}={shown(value)}" for path, value, _ in differences)
        asked = ", ".join(f"{path}={shown(value)}" for path, _, value in differences)
        raise StaleInputError(f"{dataset} was made with {made}; this run asks for {asked}. Make it again "
                              f"with this run's settings (the same --params or --env) first: {remake}")


def made_with_differences(made_with: Mapping[str, Any], parameters: Mapping[str, Any]
                          ) -> list[tuple[str, Any, Any]]:
    """Each recorded setting that `parameters` hold otherwise, leaf by leaf, as (parameter path, the
    value it was made with, the value now); only the recorded paths count, never the `NOTES`."""
    return [difference for path, value in made_with.items() if path != NOTES
            for difference in _differences(path, _plain(value), _plain(_lookup(parameters, path)))]


def changed_settings(made_with: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The paths (`classifier.C`) whose recorded value differs from `now`'s, leaf by leaf."""
    return [path for key in sorted(set(made_with) | set(now))
            for path, _, _ in _differences(key, _plain(made_with.get(key, _UNSET)),
                                           _plain(now.get(key, _UNSET)))]


def _lookup(parameters: Mapping[str, Any], path: str) -> Any:
    value: Any = parameters
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return _UNSET
        value = value[key]
    return value


def _plain(value: Any) -> Any:
    """As JSON gives it back, so that a recorded value (read from JSON) and a parameter compare
    alike: tuples are lists, 1 equals 1.0."""
    return value if value is _UNSET else json.loads(json.dumps(value, default=str))


def _differences(path: str, made: Any, now: Any) -> list[tuple[str, Any, Any]]:
    if isinstance(made, dict) and isinstance(now, dict):
        return [difference for key in sorted(set(made) | set(now))
                for difference in _differences(f"{path}.{key}", made.get(key, _UNSET), now.get(key, _UNSET))]
    return [] if made == now else [(path, made, now)]


def shown(value: Any) -> str:
    """A recorded or current value as messages show it: a string as it is, `(not set)` for none."""
    if value is _UNSET:
        return "(not set)"
    return value if isinstance(value, str) else json.dumps(value)

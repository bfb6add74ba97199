"""Each model's finished folds, stored as they finish, so that a run that dies in its last fold (out
of memory, a killed job, a closed laptop) loses one fold, not hours. A fold is stored with what it
was made with (the `made_with` rule of stale inputs: its input's and its own settings, and which
clips it trained, validated and tested on); a rerun reuses a fold only when all of that is the same,
and `--params resume=false` trains every fold again. The Kedro dataset `FinishedFoldsDataset` hands
a model's node its `FinishedFolds`."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from emofusion import shared_arrays
from emofusion.provenance import changed_settings

logger = logging.getLogger(__name__)


def fold_fingerprint(rows: pd.DataFrame) -> str:
    """Which clips a fold trains, validates and tests on, as a short hash: a changed corpus or split
    changes it."""
    table = rows[["clip_id", "subset", "emotion"]].astype(str).sort_values("clip_id")
    return hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()[:16]


class FinishedFolds:
    """One model's stored folds: `reuse` gives a fold's result back when it was made with the same
    settings, `keep` stores one as it finishes (written beside and renamed, so a kill mid-write
    leaves the fold missing, never half-written)."""

    def __init__(self, folder: Path, model: str, arrays: Path) -> None:
        """`arrays`: the folder where large arrays are stored once (emofusion.shared_arrays)."""
        self.folder, self.model, self.arrays = Path(folder), model, Path(arrays)
        self.reused: list[int] = []
        self.changed: dict[int, list[str]] = {}

    def _file(self, fold: int) -> Path:
        return self.folder / f"fold_{fold}.joblib"

    def reuse(self, fold: int, made_with: Mapping[str, Any]) -> Any | None:
        try:
            stored = shared_arrays.load(self._file(fold), self.arrays)
        except FileNotFoundError:
            return None
        except Exception as error:  # an unreadable file is a fold to train again, not a failed run
            logger.warning("%s: stored fold %d cannot be read (%s); training it again", self.model, fold + 1,
                           error)
            return None
        changed = changed_settings(stored["made_with"], json.loads(json.dumps(made_with, default=str)))
        if changed:
            self.changed[fold] = changed
            return None
        self.reused.append(fold)
        return stored["result"]

    def keep(self, fold: int, made_with: Mapping[str, Any], result: Any) -> Any:
        """Store a fold; returns it as read back, so that a run that made it and one that reuses
        it go on with the same objects (a model pickled again after a round trip can differ in a
        few bytes from the one first pickled)."""
        shared_arrays.dump({"made_with": json.loads(json.dumps(made_with, default=str)), "result": result},
                           self._file(fold), self.arrays)
        return shared_arrays.load(self._file(fold), self.arrays)["result"]

    def report(self, folds: int) -> None:
        """One log line: how many folds were reused, and which settings made others train again."""
        if self.reused:
            logger.info("%s: %d of %d folds reused from an earlier run (--params resume=false trains them "
                        "again)", self.model, len(self.reused), folds)
        if self.changed:
            settings = sorted({path for paths in self.changed.values() for path in paths})
            logger.info("%s: %d stored folds were made with other settings (%s); trained again", self.model,
                        len(self.changed), ", ".join(settings[:5]) + (" ..." if len(settings) > 5 else ""))


def resumed_folds(finished_folds: FinishedFolds | None, made_with: Mapping[int, Mapping[str, Any]],
                  parameters: Mapping[str, Any],
                  make: Callable[[list[int]], Iterable[tuple[int, Any]]]) -> dict[int, Any]:
    """Each fold's result (the folds of `made_with`, with what each is made with): stored by an
    earlier run with the same settings (unless the run's `resume` is false), else made now by
    `make(folds)`, which yields `(fold, result)` as each is done (in any order), and stored as it
    comes. Without a store (a node called outside a run), every fold is made now."""
    results: dict[int, Any] = {}
    if finished_folds is not None and parameters.get("resume", True):
        for fold, settings in made_with.items():
            stored = finished_folds.reuse(fold, settings)
            if stored is not None:
                results[fold] = stored
    for fold, result in make([fold for fold in made_with if fold not in results]):
        stored = finished_folds is not None
        results[fold] = finished_folds.keep(fold, made_with[fold], result) if stored else result
    return results

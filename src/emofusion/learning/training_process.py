"""The training process: networks train in a child process kept between fits (TensorFlow starts
once), with their training rows passed through files that a killed run does not strand."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np

from emofusion.errors import ClassifierConfigError
from emofusion.learning.blocks import ROWS_PER_CHUNK
from emofusion.parallel import LoggingProcessPool
from emofusion.quiet_tensorflow import import_tensorflow

logger = logging.getLogger(__name__)



DNN_FOLDER_PREFIX = "emofusion-dnn-"  # then the pid of the process that made the folder


def remove_stranded_folders() -> None:
    """Remove the training matrices' folders of processes that no longer exist (killed before their
    training process read them)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{DNN_FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(DNN_FOLDER_PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _import_tensorflow() -> None:
    # TensorFlow is what the training process is for: imported at its start, quietly, before a
    # function's module (the fine-tuning networks) imports it at the top with its start-up chatter.
    import_tensorflow()


_training_process: LoggingProcessPool | None = None


def _stop_training_process() -> None:
    global _training_process
    if _training_process is not None:
        _training_process.stop()
        _training_process = None


atexit.register(_stop_training_process)


def run_in_training_process(function: Callable[..., Any], *args: Any, fresh: bool = False) -> Any:
    """`function(*args)` in the training process. It is kept for the next call, which then skips
    TensorFlow's start-up (seconds per network, most of a small network's fit), unless `fresh`:
    TensorFlow keeps memory after a fit of tens of millions of weights that only the end of its
    process gives back."""
    global _training_process
    if _training_process is None:
        _training_process = LoggingProcessPool(1, initializer=_import_tensorflow)
    try:
        return _training_process.result(_training_process.submit(function, *args))
    except BrokenProcessPool as error:
        fresh = True
        raise RuntimeError(f"the process running {function.__name__} ended abruptly, most likely killed "
                           "for lack of memory") from error
    finally:
        if fresh:
            _stop_training_process()


def early_stopping_rows(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """The rows to fit on and the rows to stop early on, both from the training clips given: whole
    speakers (`groups`, at least one, never all), else a stratified `fraction` of each emotion."""
    if not 0 < fraction < 1:
        raise ClassifierConfigError(f"early_stopping_fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    if groups is not None and len(units := np.unique(np.asarray(groups))) >= 2:
        held = rng.choice(units, min(len(units) - 1, max(1, round(fraction * len(units)))), replace=False)
        stopping = np.isin(groups, held)
    else:
        if groups is not None:
            logger.warning("The training clips have one speaker: clips, not speakers, are held out for "
                           "early stopping")
        stopping = np.zeros(len(y), dtype=bool)
        for label in np.unique(y):
            members = rng.permutation(np.flatnonzero(y == label))
            if len(members) >= 2:
                stopping[members[:min(len(members) - 1, max(1, round(fraction * len(members))))]] = True
        if not stopping.any():
            raise ValueError("too few training clips to hold any out for early stopping: every emotion "
                             "has 1 sample")
    return np.flatnonzero(~stopping), np.flatnonzero(stopping)


def save_rows(path: Path, X: np.ndarray, rows: np.ndarray, dtype: Any = None) -> None:
    """These rows of X as a .npy file (of X's dtype unless `dtype` says), written chunk by chunk: no
    copy of the whole matrix."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype or X.dtype, shape=(len(rows), *X.shape[1:]))
    for start in range(0, len(rows), ROWS_PER_CHUNK):
        out[start:start + ROWS_PER_CHUNK] = X[rows[start:start + ROWS_PER_CHUNK]]
    out.flush()
    del out

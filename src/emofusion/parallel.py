"""Chunked process-parallel map with a progress bar, for the per-clip steps."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from joblib.externals.loky import get_reusable_executor
from tqdm import tqdm

T = TypeVar("T")


def die_with_parent(parent_pid: int) -> None:
    """Make this child process end when `parent_pid`, the process that started it, ends, however it
    ends (`kill -9` included): workers hold hundreds of megabytes, and a training process would
    train on. A thread checks twice a second that the parent is still there. (Linux's parent-death
    signal, prctl PR_SET_PDEATHSIG, is not used: it fires when the *thread* that started the child
    ends, which a pool's helper thread may do while the process lives on.)"""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent was gone before the watch began
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def effective_n_jobs(n_jobs: int) -> int:
    """``-1`` means every core; never more workers than cores."""
    cores = os.cpu_count() or 1
    return cores if n_jobs is None or n_jobs <= 0 else min(n_jobs, cores)


def imap_chunks(
    func: Callable[..., list[T]],
    items: Sequence[Any],
    *,
    n_jobs: int,
    description: str,
    chunk_size: int = 32,
    isolated: bool = False,
    **kwargs: Any,
) -> Iterator[T]:
    """Yield ``func(chunk, **kwargs)``'s results over consecutive chunks of ``items``, in input
    order, as they arrive, so callers can fill a preallocated array instead of holding a list.
    Chunks amortise inter-process overhead; one job runs in-process unless ``isolated`` and
    TensorFlow is loaded here: for native code that cannot share a process with it (openSMILE
    crashes a process where TensorFlow is loaded; loaded after openSMILE ran, it does no harm), so
    that a one-file `emofusion predict` does not pay for starting a worker."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    workers = effective_n_jobs(n_jobs)
    with tqdm(total=len(items), desc=description, unit="clip", mininterval=1.0) as progress:
        if (isolated and "tensorflow" in sys.modules) or (workers > 1 and len(chunks) > 1):
            executor = get_reusable_executor(max_workers=workers, initializer=die_with_parent,
                                             initargs=(os.getpid(),))
            outputs = executor.map(partial(func, **kwargs), chunks)
        else:
            outputs = (func(chunk, **kwargs) for chunk in chunks)
        for output in outputs:
            yield from output
            progress.update(len(output))

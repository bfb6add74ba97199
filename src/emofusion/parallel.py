"""Chunked process-parallel map with a progress bar, for the per-clip steps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any, TypeVar

from joblib.externals.loky import get_reusable_executor
from tqdm import tqdm

T = TypeVar("T")


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
    Chunks amortise inter-process overhead; one job runs in-process unless ``isolated``, for
    native code that cannot share a process with what the caller has loaded (openSMILE's crashes
    the process when TensorFlow is loaded in it)."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    workers = effective_n_jobs(n_jobs)
    with tqdm(total=len(items), desc=description, unit="clip", mininterval=1.0) as progress:
        if isolated or (workers > 1 and len(chunks) > 1):
            outputs = get_reusable_executor(max_workers=workers).map(partial(func, **kwargs), chunks)
        else:
            outputs = (func(chunk, **kwargs) for chunk in chunks)
        for output in outputs:
            yield from output
            progress.update(len(output))

"""Chunked process-parallel map with a progress bar, for the per-clip steps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from joblib import Parallel, delayed
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
    **kwargs: Any,
) -> Iterator[T]:
    """Yield ``func(chunk, **kwargs)``'s results over consecutive chunks of ``items``, in input
    order, as they arrive, so callers can fill a preallocated array instead of holding a list.
    Chunks amortise inter-process overhead; one job runs in-process."""
    chunks = [items[i : i + chunk_size] for i in range(0, len(items), chunk_size)]
    workers = effective_n_jobs(n_jobs)
    with tqdm(total=len(items), desc=description, unit="clip", mininterval=1.0) as progress:
        if workers == 1 or len(chunks) == 1:
            outputs = (func(chunk, **kwargs) for chunk in chunks)
        else:
            outputs = Parallel(n_jobs=workers, return_as="generator")(
                delayed(func)(chunk, **kwargs) for chunk in chunks
            )
        for output in outputs:
            yield from output
            progress.update(len(output))

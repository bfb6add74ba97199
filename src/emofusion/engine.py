"""Where the per-clip stages run (`execution` in the parameters): `local`, this machine's worker
processes (emofusion.parallel), or `dask`, a Dask cluster: one started on this machine for the run
(`scheduler_address: null`) or a running one the run joins. A run's hook opens the engine before its
first node and closes it when the run ends (emofusion.hooks.ExecutionHooks); `imap_chunks` hands its
chunks to the engine open, and without one (`emofusion predict`, a notebook) works locally."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any

from emofusion.errors import EngineUnreachableError

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_CLIPS = 32
# Chunks handed to the cluster per worker before the oldest is waited for: enough to keep every
# worker busy while one result travels back, few enough that results waiting here stay a few chunks.
CHUNKS_PER_WORKER = 2


class DaskEngine:
    """A Dask cluster for one run. A cluster on this machine starts when the first chunk is sent, so
    that a run without per-clip stages starts none; a cluster at an address is joined at `open`,
    so that an unreachable one stops the run before any work."""

    def __init__(self, scheduler_address: str | None, workers: int | None, worker_memory: str | None
                 ) -> None:
        self.scheduler_address = scheduler_address
        self.workers = workers
        self.worker_memory = worker_memory
        self._client: Any = None
        self._cluster: Any = None

    def open(self) -> None:
        if self.scheduler_address is not None:
            self.client()

    def client(self) -> Any:
        """The cluster's client, joining or starting the cluster on first use."""
        if self._client is not None:
            return self._client
        # Imported here: a run on the local engine, and every worker process, does without Dask.
        import dask
        import distributed

        # Dask's scheduler and nannies say each connection they make at INFO, which would bury the
        # run's own lines; their warnings (a worker lost, one short of memory) still show.
        logging.getLogger("distributed").setLevel(logging.WARNING)

        if self.scheduler_address is None:
            # Nodes run as tasks by emofusion.runner start processes on a worker (a network's
            # training process), which a daemonic worker may not. Read as each worker starts.
            dask.config.set({"distributed.worker.daemon": False})
            workers = self.workers or os.cpu_count() or 1
            self._cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                memory_limit=self.worker_memory or "auto")
            self._client = distributed.Client(self._cluster)
            logger.info("Started a Dask cluster of %d workers on this machine; its dashboard: %s",
                        workers, self._client.dashboard_link)
            return self._client
        try:  # waits for Dask's distributed.comm.timeouts.connect
            self._client = distributed.Client(self.scheduler_address)
        except OSError as error:  # TimeoutError included
            raise EngineUnreachableError(
                f"execution.scheduler_address: no Dask scheduler answered at {self.scheduler_address} "
                f"({error}); start the cluster, correct the address, or set execution.scheduler_address: "
                "null to start one on this machine") from None
        logger.info("Joined the Dask cluster at %s (%d workers); its dashboard: %s", self.scheduler_address,
                    len(self._client.nthreads()), self._client.dashboard_link)
        return self._client

    def map(self, func: Callable[..., list[Any]], chunks: Iterable[Any], kwargs: dict[str, Any]
            ) -> Iterator[list[Any]]:
        """`func(chunk, **kwargs)` of each chunk on the cluster, in input order, with a few chunks per
        worker in flight, so that the map holds a few chunks' inputs and results, never all. A
        chunk whose worker dies is run again by the scheduler on another (Dask's
        `distributed.scheduler.allowed-failures`); an error `func` raises is raised here."""
        client = self.client()
        from distributed import KilledWorker  # loaded by `client` already; see there for why here

        task = partial(func, **kwargs)
        in_flight = CHUNKS_PER_WORKER * max(sum(client.nthreads().values()), 1)
        pending: deque[Any] = deque()
        try:
            for chunk in chunks:
                pending.append(client.submit(task, chunk, pure=False))
                if len(pending) >= in_flight:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except KilledWorker as error:
            raise RuntimeError(
                f"Dask workers running {getattr(func, '__name__', func)} died again and again ({error}); "
                "most likely killed for lack of memory: raise execution.worker_memory or lower "
                "execution.chunk_clips") from error
        finally:  # a failed or abandoned map: the chunks left are not wanted
            for future in pending:
                future.cancel()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


class Engine:
    """The run's engine: how many clips a chunk holds, and the Dask cluster if `engine: dask`."""

    def __init__(self, chunk_clips: int = DEFAULT_CHUNK_CLIPS, dask: DaskEngine | None = None) -> None:
        self.chunk_clips = chunk_clips
        self.dask = dask


_current = Engine()


def current_engine() -> Engine:
    return _current


def open_engine(engine: str = "local", scheduler_address: str | None = None,
                chunk_clips: int = DEFAULT_CHUNK_CLIPS, workers: int | None = None,
                worker_memory: str | None = None) -> Engine:
    """Make the engine of the `execution` settings (checked by emofusion.validation) the one
    `imap_chunks` uses, until `close_engine`."""
    global _current
    close_engine()
    dask = DaskEngine(scheduler_address, workers, worker_memory) if engine == "dask" else None
    if dask is not None:
        dask.open()
    _current = Engine(chunk_clips, dask)
    return _current


def close_engine() -> None:
    """Back to the local engine with default chunks; a cluster started for the run ends."""
    global _current
    if _current.dask is not None:
        _current.dask.close()
    _current = Engine()

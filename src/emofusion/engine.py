"""Where the per-clip stages run (`execution` in the parameters): `local`, this machine's worker
processes (emofusion.parallel), or `dask`, a Dask cluster: one started on this machine for the run
(`scheduler_address: null`) or a running one the run joins. A run's hook opens the engine before its
first node and closes it when the run ends (emofusion.hooks.ExecutionHooks); `imap_chunks` hands its
chunks to the engine open, and without one (`emofusion predict`, a notebook) works locally."""

from __future__ import annotations

import importlib
import logging
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import Any

from emofusion.clip_array import is_whole_file_map, map_arguments, reopen_map
from emofusion.errors import EngineUnreachableError
from emofusion.worker_server import (
    cluster_workers,
    forkserver_context,
    limit_threads,
    worker_thread_environment,
)

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_CLIPS = 32
# The tag of the nodes whose clips go through `imap_chunks` (the per-clip stages).
PER_CLIP_TAG = "per_clip"
# Chunks handed to the workers (a cluster's or the local pool's) per worker before the oldest is
# waited for: enough to keep every worker busy while one result travels back and the caller stores
# what it has, few enough that results waiting here stay a few chunks.
CHUNKS_PER_WORKER = 2


def with_worker_imports(modules: Sequence[str]) -> list[str]:
    """`modules` and those each names in its `WORKER_IMPORTS`: what a per-clip worker needs
    imported before its first chunk (librosa loads its submodules on first use, about a second in
    each worker, which a worker forked from a server that imported them once does not pay)."""
    named = [name for module in modules
             for name in getattr(importlib.import_module(module), "WORKER_IMPORTS", ())]
    return list(dict.fromkeys([*modules, *named]))


def import_modules(modules: Sequence[str]) -> None:
    """Run in a worker as it starts, so that the first chunk does not wait for the imports."""
    for module in with_worker_imports(modules):
        importlib.import_module(module)


def _rows_of_file(func: Callable[..., list[Any]], arguments: tuple[Any, ...], start: int, stop: int,
                  **kwargs: Any) -> list[Any]:
    return func(reopen_map(*arguments)[start:stop], **kwargs)


class BackgroundStart:
    """Start-up work run in a thread (a worker pool's or a cluster's: seconds of imports) while the
    run does its own; `wait`, where its result is first needed, blocks until it is done and raises
    what it raised."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, work: Callable[[], None], name: str) -> None:
        self.wait(raise_error=False)
        self._thread = threading.Thread(target=self._run, args=(work,), name=name, daemon=True)
        self._thread.start()

    def _run(self, work: Callable[[], None]) -> None:
        try:
            work()
        except BaseException as error:  # raised again by `wait`
            self._error = error

    def wait(self, raise_error: bool = True) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None and raise_error:
            raise error


def in_order(submit: Callable[..., Any], chunks: Iterable[tuple[Any, ...]], in_flight: int
             ) -> Iterator[Any]:
    """The result of `submit(*arguments)` (a future) for each chunk's arguments, in input order,
    with at most `in_flight` chunks submitted ahead: the caller holds a few chunks' inputs and
    results, never all, however much faster the workers are than it (a generator node storing each
    part as it comes). Chunks not yet waited for are cancelled when the caller stops early."""
    pending: deque[Any] = deque()
    try:
        for arguments in chunks:
            pending.append(submit(*arguments))
            if len(pending) >= in_flight:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def chunk_tasks(func: Callable[..., list[Any]], items: Sequence[Any], chunk_size: int,
                kwargs: dict[str, Any], same_machine: bool) -> tuple[Callable[..., list[Any]], list[tuple]]:
    """A task and each chunk's arguments to it, so that `task(*arguments)` is `func(chunk, **kwargs)`.
    Rows of a memory-mapped file (the preprocessed audio) that workers on this machine process go
    as the file's name and row numbers, each worker reading its rows from the file (the page cache
    is shared), not pickled through a pipe or socket by the main process, on a core the workers
    need (on RAVDESS, 0.3 to 0.4 s of the MFCC and LPCC nodes' 1.6 to 2 s each)."""
    starts = range(0, len(items), chunk_size)
    if same_machine and is_whole_file_map(items):
        return (partial(_rows_of_file, func, map_arguments(items), **kwargs),
                [(start, min(start + chunk_size, len(items))) for start in starts])
    return partial(func, **kwargs), [(items[start : start + chunk_size],) for start in starts]


def _prepare_worker(modules: Sequence[str], environment: Mapping[str, str]) -> None:
    """A cluster's worker on this machine: `modules` imported, and its thread counts set (forked from
    a server a `kedro run` may have started before it knew the cluster's size)."""
    import_modules(modules)
    limit_threads(environment)


def _worker_preload(modules: Sequence[str]) -> list[str]:
    """What the server that forks a cluster's workers on this machine imports: Dask's worker, and
    the per-clip modules with their `WORKER_IMPORTS`."""
    return ["distributed", *with_worker_imports(modules)]


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
        self._connecting = threading.Lock()
        self._start = BackgroundStart()
        self._started_modules: frozenset[str] = frozenset()

    def open(self) -> None:
        if self.scheduler_address is not None:
            self.client()

    def start_in_background(self, modules: Sequence[str]) -> None:
        """Start the cluster on this machine in a thread, its workers importing `modules`, while
        the run does its other start-up work (the workers' start takes seconds); `client` waits
        for it, and raises what it raised. Nothing new where a start already asked for them."""
        if self.scheduler_address is None and not set(modules) <= self._started_modules:
            self._started_modules = frozenset(modules)
            # The workers' server starts in this thread, its imports at once in its own process,
            # rather than once the thread below has imported Dask (this process's lock on Python
            # shared with the run's own start-up).
            forkserver_context(_worker_preload(modules), worker_thread_environment(self._local_workers()))
            self._start.start(partial(self._start_with, modules), "dask-cluster-start")

    def _start_with(self, modules: Sequence[str]) -> None:
        if self._client is None:
            self._client = self._connect(modules)
        if self.scheduler_address is None:
            self._client.run(_prepare_worker, modules, worker_thread_environment(self._local_workers()))
        else:
            self._client.run(import_modules, modules)

    def client(self) -> Any:
        """The cluster's client, joining or starting the cluster on first use."""
        with self._connecting:
            self._start.wait()
            if self._client is None:
                self._client = self._connect()
        return self._client

    def _connect(self, modules: Sequence[str] = ()) -> Any:
        """Join the cluster at the address, or start one on this machine whose workers are forked
        from a server process that has imported Dask and `modules` once (`forkserver_context`):
        on 2 cores a 2-worker cluster was ready with the per-clip nodes' modules in 1.2 s instead
        of 2.3 s, and closed in 0.03 s instead of 0.55 s."""
        # Imported here: a run on the local engine, and every worker process, does without Dask.
        import dask
        import distributed

        # Dask's scheduler and nannies say each connection they make at INFO, which would bury the
        # run's own lines; their warnings (a worker lost, one short of memory) still show.
        logging.getLogger("distributed").setLevel(logging.WARNING)

        if self.scheduler_address is None:
            workers = self._local_workers()
            dask.config.set({
                # Nodes run as tasks by emofusion.runner start processes on a worker (a network's
                # training process), which a daemonic worker may not. Read as each worker starts.
                "distributed.worker.daemon": False,
                # Set in each worker before it starts: the cores divided among the workers, as the
                # local engine does; and not Dask's MALLOC_TRIM_THRESHOLD_ of 64 kB, with which
                # glibc hands each freed audio buffer back to the system and the next clip faults
                # its pages in again (the per-clip stages on RAVDESS took 1.6 times as long).
                "distributed.nanny.pre-spawn-environ": {**worker_thread_environment(workers),
                                                        "MALLOC_TRIM_THRESHOLD_": None}})
            if forkserver_context(_worker_preload(modules), worker_thread_environment(workers)):
                dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"})
            # Another cluster on this machine (another run's) holds the dashboard's port: Dask
            # takes a free one, which the log line below gives, instead of a warning as well.
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
            self._cluster = distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                memory_limit=self.worker_memory or "auto")
            client = distributed.Client(self._cluster)
            logger.info("Started a Dask cluster of %d workers on this machine; its dashboard: %s",
                        workers, client.dashboard_link)
            return client
        try:  # waits for Dask's distributed.comm.timeouts.connect
            client = distributed.Client(self.scheduler_address)
        except OSError as error:  # TimeoutError included
            raise EngineUnreachableError(
                f"execution.scheduler_address: no Dask scheduler answered at {self.scheduler_address} "
                f"({error}); start the cluster, correct the address, or set execution.scheduler_address: "
                "null to start one on this machine") from None
        logger.info("Joined the Dask cluster at %s (%d workers); its dashboard: %s", self.scheduler_address,
                    len(client.nthreads()), client.dashboard_link)
        return client

    def _local_workers(self) -> int:
        return cluster_workers(self.workers)

    def map(self, func: Callable[..., list[Any]], items: Sequence[Any], chunk_size: int,
            kwargs: dict[str, Any]) -> Iterator[list[Any]]:
        """`func(chunk, **kwargs)` of each chunk on the cluster, in input order, with a few chunks per
        worker in flight, so that the map holds a few chunks' inputs and results, never all. A
        chunk whose worker dies is run again by the scheduler on another (Dask's
        `distributed.scheduler.allowed-failures`); an error `func` raises is raised here."""
        client = self.client()
        from distributed import KilledWorker  # loaded by `client` already; see there for why here

        task, chunks = chunk_tasks(func, items, chunk_size, kwargs,
                                   same_machine=self.scheduler_address is None)
        in_flight = CHUNKS_PER_WORKER * max(sum(client.nthreads().values()), 1)
        try:
            yield from in_order(partial(client.submit, task, pure=False), chunks, in_flight)
        except KilledWorker as error:
            raise RuntimeError(
                f"Dask workers running {getattr(func, '__name__', func)} died again and again ({error}); "
                "most likely killed for lack of memory: raise execution.worker_memory or lower "
                "execution.chunk_clips") from error

    def close(self) -> None:
        with self._connecting:
            self._start.wait(raise_error=False)  # a start in the background finishes first
            self._close()

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._cluster is not None:
            self._cluster.close()
        self._client = self._cluster = None


class Engine:
    """The run's engine: how many clips a chunk holds, and the Dask cluster if `engine: dask`;
    `settings`, the `execution` settings it was opened with (None: the default, opened by none)."""

    def __init__(self, chunk_clips: int = DEFAULT_CHUNK_CLIPS, dask: DaskEngine | None = None,
                 settings: dict[str, Any] | None = None) -> None:
        self.chunk_clips = chunk_clips
        self.dask = dask
        self.settings = settings


_current = Engine()


def current_engine() -> Engine:
    return _current


def open_engine(engine: str = "local", scheduler_address: str | None = None,
                chunk_clips: int = DEFAULT_CHUNK_CLIPS, workers: int | None = None,
                worker_memory: str | None = None) -> Engine:
    """Make the engine of the `execution` settings (checked by emofusion.validation) the one
    `imap_chunks` uses, until `close_engine`. The engine open is kept if it was opened with the
    same settings: the `kedro run` command opens the run's before the run (emofusion.run_start)."""
    global _current
    settings = {"engine": engine, "scheduler_address": scheduler_address, "chunk_clips": chunk_clips,
                "workers": workers, "worker_memory": worker_memory}
    if _current.settings == settings:
        return _current
    close_engine()
    dask = DaskEngine(scheduler_address, workers, worker_memory) if engine == "dask" else None
    if dask is not None:
        dask.open()
    _current = Engine(chunk_clips, dask, settings)
    return _current


def close_engine() -> None:
    """Back to the local engine with default chunks; a cluster started for the run ends."""
    global _current
    if _current.dask is not None:
        _current.dask.close()
    _current = Engine()

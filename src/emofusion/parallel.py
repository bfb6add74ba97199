"""Process-parallel work: a chunked map with a progress bar for the per-clip steps, and pools of
spawned processes whose log records reach this process's loggers (the networks' training process,
a model's folds)."""

from __future__ import annotations

import atexit
import itertools
import logging
import logging.handlers
import multiprocessing
import multiprocessing.util
import os
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from functools import partial
from typing import Any, TypeVar

from joblib.externals.loky import get_reusable_executor
from tqdm import tqdm

from emofusion.engine import (
    CHUNKS_PER_WORKER,
    BackgroundStart,
    Engine,
    chunk_tasks,
    close_engine,
    current_engine,
    import_modules,
    in_order,
    with_worker_imports,
)
from emofusion.worker_server import (
    forkserver_context,
    limit_threads,
    local_workers,
    worker_thread_environment,
)

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def die_with_parent(parent_pid: int) -> None:
    """Make this child process end when `parent_pid`, the process that started its pool, ends,
    however it ends (`kill -9` included): workers hold hundreds of megabytes, and a training process
    would train on. A thread checks twice a second that the parent is still there (the process
    itself, not this one's parent: a worker forked by a forkserver is the server's child). Linux's
    parent-death signal, prctl PR_SET_PDEATHSIG, is not used: it fires when the *thread* that
    started the child ends, which a pool's helper thread may do while the process lives on."""
    def alive() -> bool:
        try:
            os.kill(parent_pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # there, and not ours to signal
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(0.5)
        os._exit(1)

    if not alive():  # the parent was gone before the watch began
        os._exit(1)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


# Set in a thread running a node as a Dask task (emofusion.runner). The cluster gives each task one of
# its worker's threads: a pool the task started would take cores the scheduler places other tasks on,
# and memory the worker's nanny does not count (it watches its worker's process alone). So there a
# model's folds, and a node's chunks, run one after another in the task; the models side by side on
# the cluster's workers are the parallelism.
_cluster_task = threading.local()


@contextmanager
def one_job_at_a_time() -> Iterator[None]:
    """Within, `n_jobs` means one job in this thread (see `_cluster_task`)."""
    _cluster_task.active = True
    try:
        yield
    finally:
        _cluster_task.active = False


def effective_n_jobs(n_jobs: int) -> int:
    """``-1`` means every core; never more workers than cores, and one in a cluster's task."""
    return 1 if getattr(_cluster_task, "active", False) else local_workers(n_jobs)


_chunk_executor: Any = None
_chunk_executor_workers = 0
_starting: list[Future] = []  # the workers' imports that `start_chunk_workers` handed them
_start = BackgroundStart()  # `start_chunk_workers`'s
_started_for: tuple[int, frozenset[str]] = (0, frozenset())  # the workers and modules it was asked for


def _chunk_workers(workers: int, modules: Sequence[str]) -> Any:
    """The local engine's worker processes, kept from one call to the next (and so from one node to
    the next) while their number stays the same: forked from a server that has imported `modules`
    once (`forkserver_context`), or where the system has none, loky's spawned processes."""
    global _chunk_executor, _chunk_executor_workers
    if _chunk_executor is not None and _chunk_executor_workers == workers:
        return _chunk_executor
    _shut_down_chunk_workers()
    _chunk_executor_workers = workers
    environment = worker_thread_environment(workers)
    context = forkserver_context(with_worker_imports(modules), environment)
    _chunk_executor = (ProcessPoolExecutor(workers, mp_context=context, initializer=_start_chunk_worker,
                                           initargs=(os.getpid(), environment)) if context is not None
                       else get_reusable_executor(max_workers=workers, initializer=die_with_parent,
                                                  initargs=(os.getpid(),), env=environment))
    return _chunk_executor


def _start_chunk_worker(parent_pid: int, environment: dict[str, str]) -> None:
    die_with_parent(parent_pid)
    limit_threads(environment)  # forked from a server that may have been started with other counts


def stop_chunk_workers() -> None:
    """End the local engine's workers, idle once a run ends: now, rather than at the process's exit."""
    global _started_for
    _start.wait(raise_error=False)
    _started_for = (0, frozenset())
    _shut_down_chunk_workers()


def _shut_down_chunk_workers() -> None:
    global _chunk_executor
    if _chunk_executor is not None:
        # Their imports first, if a run stopped before its first node: loky's manager thread fails
        # on work items of a pool killed while they are queued.
        wait(_starting)
        _starting.clear()
        if isinstance(_chunk_executor, ProcessPoolExecutor):
            _chunk_executor.shutdown(wait=True, cancel_futures=True)
        else:
            _chunk_executor.shutdown(wait=True, kill_workers=True)
        _chunk_executor = None


def _local_map(func: Callable[..., list[T]], items: Sequence[Any], chunk_size: int, workers: int,
               kwargs: dict[str, Any]) -> Iterator[list[T]]:
    task, chunks = chunk_tasks(func, items, chunk_size, kwargs, same_machine=True)
    _start.wait()
    executor = _chunk_workers(workers, [getattr(func, "__module__", None) or __name__])
    return in_order(partial(executor.submit, task), chunks, CHUNKS_PER_WORKER * workers)


def start_chunk_workers(n_jobs: int, modules: Sequence[str]) -> None:
    """Start the local engine's workers for `imap_chunks` now, each importing `modules` (the
    per-clip nodes' own), in a thread: a run calls this before its own start-up work (tracking,
    checks), which then runs beside the workers' start-up (the forkserver's imports, a second or
    two) instead of after it. The first chunks wait for it. Nothing new where a start already asked
    for as many workers and these modules (the `kedro run` command's, emofusion.run_start)."""
    global _started_for
    workers = effective_n_jobs(n_jobs)
    if workers < 2 or (workers == _started_for[0] and set(modules) <= _started_for[1]):
        return
    _started_for = (workers, frozenset(modules))
    # The workers' server starts in this thread, its imports at once in its own process, rather than
    # once the thread below has had its share of this process's time (and of its lock on Python).
    forkserver_context(with_worker_imports(modules), worker_thread_environment(workers))

    def start() -> None:
        executor = _chunk_workers(workers, modules)
        _starting.extend(executor.submit(import_modules, modules) for _ in range(workers))

    _start.start(start, "chunk-workers-start")


def start_engine_workers(engine: Engine, n_jobs: int, modules: Sequence[str]) -> None:
    """Start the per-clip workers of `engine` in the background, each importing `modules`: a
    cluster on this machine (`engine: dask`), else the local engine's `n_jobs` workers."""
    if engine.dask is not None:
        engine.dask.start_in_background(modules)
    else:
        start_chunk_workers(n_jobs, modules)


def stop_engine_workers() -> None:
    """End the per-clip workers, a cluster started on this machine included; back to the default
    engine."""
    close_engine()
    stop_chunk_workers()


def imap_chunks(
    func: Callable[..., list[T]],
    items: Sequence[Any],
    *,
    n_jobs: int,
    description: str,
    chunk_size: int | None = None,
    isolated: bool = False,
    **kwargs: Any,
) -> Iterator[T]:
    """Yield ``func(chunk, **kwargs)``'s results over consecutive chunks of ``items``, in input
    order, as they arrive, so callers can fill a preallocated array instead of holding a list.
    Chunks (``chunk_size``, else the run's ``execution.chunk_clips``) amortise inter-process
    overhead. On the run's Dask engine (emofusion.engine) the chunks go to its cluster; else to
    ``n_jobs`` local workers. One job runs in-process unless ``isolated`` and TensorFlow is loaded
    here: for native code that cannot share a process with it (openSMILE crashes a process where
    TensorFlow is loaded; loaded after openSMILE ran, it does no harm), so that a one-file
    `emofusion predict` does not pay for starting a worker."""
    engine = current_engine()
    chunk_size = chunk_size or engine.chunk_clips
    starts = range(0, len(items), chunk_size)
    workers = effective_n_jobs(n_jobs)
    with tqdm(total=len(items), desc=description, unit="clip", mininterval=1.0) as progress:
        if engine.dask is not None:
            outputs = engine.dask.map(func, items, chunk_size, kwargs)
        elif (isolated and "tensorflow" in sys.modules) or (workers > 1 and len(starts) > 1):
            outputs = _local_map(func, items, chunk_size, workers, kwargs)
        else:
            outputs = (func(items[start : start + chunk_size], **kwargs) for start in starts)
        for output in outputs:
            yield from output
            progress.update(len(output))


class _Relay(logging.Handler):
    """Hands a record from a worker process to the logger of the same name here; a job's last
    record (`JOB_LOGGED`) says that all of that job's records have been handed on."""

    def __init__(self, logged: dict[int, threading.Event]) -> None:
        super().__init__()
        self.logged = logged

    def emit(self, record: logging.LogRecord) -> None:
        job = getattr(record, JOB_LOGGED, None)
        if job is not None:
            if job in self.logged:  # else a failed job, whose result was not waited for
                self.logged[job].set()
            return
        logger = logging.getLogger(record.name)
        if logger.isEnabledFor(record.levelno):
            logger.handle(record)


JOB_LOGGED = "emofusion_job_logged"
_records: Any = None  # in a worker process: the queue its log records travel through


def _relay_records() -> None:
    root = logging.getLogger()
    root.handlers = [logging.handlers.QueueHandler(_records)]
    # Everything goes to the relay, which passes on what the pool's process's loggers let through.
    root.setLevel(logging.DEBUG)
    logging.getLogger("emofusion").setLevel(logging.NOTSET)


def _start_worker(records: Any, parent_pid: int, environment: dict[str, str],
                  initializer: Callable[[], None] | None) -> None:
    global _records
    die_with_parent(parent_pid)
    os.environ.update(environment)
    if "OPENBLAS_NUM_THREADS" in environment:  # BLAS may be loaded already, having read the old counts
        limit_threads(environment)
    _records = records
    _relay_records()
    if initializer is not None:
        initializer()


def _relayed(job: int, function: Callable[..., T], *arguments: Any) -> T:
    # Importing a job's modules may have configured logging anew (Kedro's does, when imported).
    _relay_records()
    try:
        return function(*arguments)
    finally:  # after the job's records in the same queue, so the relay sees it after them
        _records.put(logging.makeLogRecord({JOB_LOGGED: job}))


class LoggingProcessPool:
    """Spawned worker processes (spawned: TensorFlow may run in this one) with a relay of their log
    records to this process's loggers. `environment` is set in each worker before its work, and
    passed on to the processes it starts. `result` hands a job's result on once its log records
    have been handed on, so that a log reads in the order things happened."""

    def __init__(self, workers: int, initializer: Callable[[], None] | None = None,
                 environment: dict[str, str] | None = None) -> None:
        context = multiprocessing.get_context("spawn")
        records = context.Queue()
        self.workers = workers
        self.jobs = itertools.count()
        self.logged: dict[int, threading.Event] = {}
        self.job_of: dict[Future, int] = {}
        self.listener = logging.handlers.QueueListener(records, _Relay(self.logged))
        self.listener.start()
        self.executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                            initargs=(records, os.getpid(), environment or {}, initializer))
        # A pool's worker ends without atexit handlers, joining its children first: its own pools
        # (a fold's training process) must be told to end before, while its queues still carry
        # the message (multiprocessing closes them at exit priority 10).
        multiprocessing.util.Finalize(self, self.executor.shutdown, exitpriority=100)

    def submit(self, function: Callable[..., T], *arguments: Any) -> Future[T]:
        job = next(self.jobs)
        self.logged[job] = threading.Event()
        future = self.executor.submit(_relayed, job, function, *arguments)
        self.job_of[future] = job
        return future

    def result(self, future: Future[T]) -> T:
        job = self.job_of.pop(future)
        try:
            value = future.result()
            self.logged[job].wait(timeout=30)  # a worker killed right after its job leaves no mark
        finally:
            del self.logged[job]
        return value

    def stop(self, finish_jobs: bool = True) -> None:
        """Without `finish_jobs`, jobs not started are dropped and running ones end with their job."""
        self.executor.shutdown(wait=finish_jobs, cancel_futures=not finish_jobs)
        self.listener.stop()


# Networks train in processes these workers start, which show no progress bar of their own: the
# folds' bar here says how far the model is, and interleaved bars of two processes would not.
# Each fold worker (and the network training process it starts) gets its share of the cores: with
# a thread per core in each, 2 workers on 2 cores took 1.5 to 2.5 times as long per fold (RAVDESS,
# speaker independent: 28 s against 18 s for an SVM fold with the CNN stream).
FOLD_WORKER_ENVIRONMENT = {"TQDM_DISABLE": "1"}
_fold_pool: LoggingProcessPool | None = None


def _stop_fold_pool(finish_jobs: bool = True) -> None:
    global _fold_pool
    if _fold_pool is not None:
        _fold_pool.stop(finish_jobs)
        _fold_pool = None


atexit.register(_stop_fold_pool)


def finished_in_processes(function: Callable[..., T], jobs: Mapping[K, tuple[Any, ...]], *, n_jobs: int,
                          description: str) -> Iterator[tuple[K, T]]:
    """`(key, function(*arguments))` for every job, each as soon as it is done, with a progress bar.
    With more than one worker (`n_jobs`, never more than the jobs), the jobs run in worker
    processes that are kept for the next call (their start-up, and that of the networks' training
    process each starts, is paid once a run); else here, one after another. Each job must seed its
    own randomness, so that its result does not depend on where it ran."""
    global _fold_pool
    workers = min(effective_n_jobs(n_jobs), len(jobs))
    if workers < 2:
        for key, arguments in jobs.items():
            yield key, function(*arguments)
        return
    if _fold_pool is None or _fold_pool.workers != workers:
        _stop_fold_pool()
        _fold_pool = LoggingProcessPool(workers, environment={**FOLD_WORKER_ENVIRONMENT,
                                                              **worker_thread_environment(workers)})
    pending = {_fold_pool.submit(function, *arguments): key for key, arguments in jobs.items()}
    try:
        with tqdm(total=len(jobs), desc=description, unit="job", mininterval=1.0) as progress:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    progress.update()
                    yield pending.pop(future), _fold_pool.result(future)
    except BrokenProcessPool as error:
        raise RuntimeError(f"a worker process running {function.__name__} ended abruptly, most likely "
                           "killed for lack of memory (n_jobs: 1 runs one job at a time)") from error
    finally:
        if pending:  # failed or abandoned: the jobs left are not wanted
            _stop_fold_pool(finish_jobs=False)

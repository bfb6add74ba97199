"""No orphans: the processes a run starts end when it is killed, however it is killed."""

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from emofusion.worker_server import THREAD_COUNT_VARIABLES

# A run's two kinds of children: per-clip workers (forked by a forkserver) and the DNN training
# process (spawned), both busy for a minute.
PARENT = """
import threading, time
from emofusion.parallel import imap_chunks
from emofusion.learning.training_process import run_in_training_process

def nap(chunk):
    time.sleep(60)
    return chunk

threading.Thread(target=run_in_training_process, args=(time.sleep, 60), daemon=True).start()
list(imap_chunks(nap, list(range(4)), n_jobs=2, chunk_size=1, isolated=True, description="napping"))
"""


def test_workers_and_the_training_process_end_within_seconds_of_a_sigkill_of_their_parent():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], env=dict(os.environ, TQDM_DISABLE="1"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        process = psutil.Process(parent.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            busy = [child for child in process.children(recursive=True)
                    if any("loky" in part or "multiprocessing" in part for part in child.cmdline())]
            if len(busy) >= 3:  # two workers and the training process (resource trackers aside)
                break
            time.sleep(0.5)
        children = process.children(recursive=True)
        assert len(children) >= 3, [child.cmdline() for child in children]
    finally:
        parent.kill()
        parent.wait()
    # A child still starting (importing, on a busy machine) begins to watch its parent only once
    # started: seconds on an idle machine, more on a loaded one.
    deadline = time.monotonic() + 30
    while (alive := [child for child in children if _running(child)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, [child.cmdline() for child in alive]


def _running(process: psutil.Process) -> bool:
    """Alive, and not a zombie that no one has reaped yet (an orphan's exit status waits for init)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


PROBE = """
import os, sys

def probe(chunk):
    from threadpoolctl import threadpool_info
    threads = max(pool["num_threads"] for pool in threadpool_info())
    seen = ("librosa.feature.spectral" in sys.modules, os.environ.get("OMP_NUM_THREADS"), threads)
    return [seen] * len(chunk)
"""

WORKERS_STARTED = """
import json, sys
from emofusion.engine import with_worker_imports
from emofusion.worker_server import forkserver_context, worker_thread_environment
from emofusion.parallel import imap_chunks, start_chunk_workers, stop_chunk_workers
from probe import probe

if sys.argv[1:] == ["server-of-one-worker"]:  # a server started before the workers' count was known
    forkserver_context(with_worker_imports(["emofusion.pipelines.feature_extraction.nodes"]),
                       worker_thread_environment(1))
start_chunk_workers(2, ["emofusion.pipelines.feature_extraction.nodes"])
seen = list(imap_chunks(probe, list(range(8)), n_jobs=2, chunk_size=1, description="probing"))
stop_chunk_workers()
server_workers = 1 if sys.argv[1:] == ["server-of-one-worker"] else 2
print(json.dumps({"seen": sorted(set(map(tuple, seen))),
                  "server_threads": worker_thread_environment(server_workers)["OMP_NUM_THREADS"],
                  "expected_threads": worker_thread_environment(2)["OMP_NUM_THREADS"]}))
"""


FOLD_PROBE = """
import os

def probe():
    from threadpoolctl import threadpool_info
    return (max(pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"),
            os.environ.get("TF_NUM_INTRAOP_THREADS"), os.environ.get("TF_NUM_INTEROP_THREADS"))
"""

FOLDS_RUN = """
import json
import numpy  # BLAS loaded here first, as in a run, with a thread per core
from emofusion.parallel import finished_in_processes
from emofusion.worker_server import worker_thread_environment
from fold_probe import probe

seen = sorted(set(value for _, value in finished_in_processes(probe, {k: () for k in range(4)}, n_jobs=2,
                                                              description="probing")))
print(json.dumps({"seen": seen, "expected": int(worker_thread_environment(2)["OPENBLAS_NUM_THREADS"])}))
"""


def test_a_model_s_fold_workers_and_their_networks_get_their_share_of_the_cores(tmp_path):
    """Folds side by side: each worker's BLAS and the TensorFlow of the network it trains get
    cores / workers threads, not a thread per core each, which made every fold up to twice as long."""
    (tmp_path / "fold_probe.py").write_text(FOLD_PROBE)
    environment = {key: value for key, value in os.environ.items() if key not in THREAD_COUNT_VARIABLES}
    run = subprocess.run([sys.executable, "-c", FOLDS_RUN], capture_output=True, text=True, timeout=300,
                         env={**environment, "PYTHONPATH": os.pathsep.join(
                             [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
                              "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    expected = report["expected"]
    assert report["seen"] == [[expected, str(expected), str(expected)]]


@pytest.mark.parametrize("server", ["", "server-of-one-worker"])
def test_local_workers_start_with_the_per_clip_imports_made_and_their_share_of_the_cores(tmp_path, server):
    """Each worker has the per-clip modules and the librosa submodules they name (WORKER_IMPORTS)
    before its first chunk, and its BLAS the threads the engine gives it (cores / workers), also
    when forked from a server started with another count (a `kedro run`'s, emofusion.worker_server);
    its environment says the server's."""
    (tmp_path / "probe.py").write_text(PROBE)
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS",
                                                                                  "OPENBLAS_NUM_THREADS")}
    run = subprocess.run([sys.executable, "-c", WORKERS_STARTED, *filter(None, [server])],
                         capture_output=True, text=True, timeout=300,
                         env={**environment, "PYTHONPATH": os.pathsep.join(
                             [str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])]),
                              "TQDM_DISABLE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["seen"] == [[True, report["server_threads"], int(report["expected_threads"])]]

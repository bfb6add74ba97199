"""No orphans: the processes a run starts end when it is killed, however it is killed."""

import os
import subprocess
import sys
import time

import psutil

# A run's two kinds of children: per-clip workers (loky) and the DNN training process (spawned),
# both busy for a minute.
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

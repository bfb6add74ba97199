"""One run at a time per data folder: a live holder refuses the next, a killed one is taken over."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from emofusion.errors import RunLockedError
from emofusion.run_lock import acquire, holder_of, lock_path, release

HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from emofusion.run_lock import acquire
    acquire(Path(sys.argv[1]))
    print("held", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def other_holder(tmp_path):
    """A second process holding the lock of tmp_path's project, until the test ends or kills it."""
    path = lock_path(tmp_path)
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield path, process
    process.kill()
    process.wait()


def test_a_live_holder_refuses_the_next_run_naming_itself(other_holder):
    path, process = other_holder
    with pytest.raises(RunLockedError) as refused:
        acquire(path)
    assert f"process {process.pid} on " in str(refused.value)
    assert f"delete {path}" in str(refused.value)
    assert json.loads(path.read_text())["pid"] == process.pid  # still theirs


def test_a_lock_left_by_a_killed_run_is_taken_over_and_given_back(other_holder):
    path, process = other_holder
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert path.is_file()  # SIGKILL leaves it behind
    assert holder_of(path) is None
    gone = acquire(path)
    assert gone["pid"] == process.pid
    assert json.loads(path.read_text())["pid"] == os.getpid()
    release(path)
    assert not path.exists()


def test_a_lock_being_written_counts_as_held_for_a_moment(tmp_path):
    path = lock_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert holder_of(path) is not None
    stale = time.time() - 60
    os.utime(path, (stale, stale))
    assert holder_of(path) is None


def test_release_leaves_another_process_s_lock_alone(other_holder):
    path, process = other_holder
    release(path)
    assert json.loads(path.read_text())["pid"] == process.pid

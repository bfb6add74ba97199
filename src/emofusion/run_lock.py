"""One run at a time per project data folder: two `kedro run`s writing the same datasets would mix
their outputs. A run holds `data/.run.lock` (its process id, host, start time and command) from
before its first node to its end; a second run is refused at once, naming the holder. A lock whose
process is gone (killed with SIGKILL, a machine that rebooted) is taken over, and the log says so.
"""

from __future__ import annotations

import atexit
import json
import os
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from emofusion.errors import RunLockedError

LOCK_FILE = ".run.lock"
# A lock file being written by its holder is briefly empty: younger than this, it counts as held.
WRITING_GRACE_S = 5.0


def lock_path(project_path: Path) -> Path:
    return Path(project_path) / "data" / LOCK_FILE


def _this_process() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "process_started": psutil.Process().create_time(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])}


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder still runs: the same process id on this host, started when the holder's
    was (so a recycled id does not keep a dead run's lock)."""
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process cannot be seen from here
    try:
        return abs(psutil.Process(int(holder["pid"])).create_time() - float(holder["process_started"])) < 1
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, TypeError, ValueError):
        return False


def holder_of(path: Path) -> dict[str, Any] | None:
    """The live holder of the lock at `path`, or None when it is free or its holder is gone."""
    try:
        text = path.read_text()
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        being_written = {"pid": "?", "host": "?", "started": "just now", "command": "?"}
        return being_written if age < WRITING_GRACE_S else None
    return holder if _alive(holder) else None


def describe(holder: dict[str, Any]) -> str:
    return (f"process {holder['pid']} on {holder['host']}, since {holder['started']}: "
            f"`{holder['command']}`")


def refusal_message(path: Path, holder: dict[str, Any]) -> str:
    return (f"Another run is using this project's data folder ({describe(holder)}). Wait for it to "
            f"finish, or stop it; if that process is gone and this message stays, delete {path}.")


def acquire(path: Path) -> dict[str, Any] | None:
    """Take the lock at `path` for this process; returns the dead holder it took over, if any.
    Raises RunLockedError, naming the holder, while a live run holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    taken_over = None
    while True:
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                stale = json.loads(path.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                stale = None
            holder = holder_of(path)
            if holder is not None:
                if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
                    return None  # this process holds it already (a second session in one process)
                raise RunLockedError(refusal_message(path, holder)) from None
            taken_over = stale
            path.unlink(missing_ok=True)  # two takers: O_EXCL lets one win, the other sees it held
            continue
        with os.fdopen(descriptor, "w") as lock:
            json.dump(_this_process(), lock)
        atexit.register(release, path)
        return taken_over


def release(path: Path) -> None:
    """Give the lock back if this process holds it."""
    try:
        holder = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)

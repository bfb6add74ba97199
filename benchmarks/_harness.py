"""Run `kedro run` in a scratch copy of the project and measure it from outside: wall time and
peak memory of the whole process tree (the Kedro process and its workers).

Memory is the sum of proportional set sizes (PSS): pages shared between processes, such as a
memory-mapped array that every worker reads, are split between them instead of being counted
once per process as a sum of RSS would."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from emofusion.scratch_project import scratch_project as copy_of_project

PROJECT = Path(__file__).resolve().parents[1]


def scratch_project(local_parameters: dict[str, Any], workdir: str | None = None) -> Path:
    """A scratch copy of the project (the tests' own, emofusion.scratch_project) whose data/ lives
    outside the repository: in `workdir`, or a new temporary folder."""
    root = Path(workdir or tempfile.mkdtemp(prefix="emofusion-bench-"))
    return copy_of_project(PROJECT, root, local_parameters)


def pss(pid: int) -> int:
    """Bytes of PSS from /proc/PID/smaps_rollup, which the kernel sums for us (cheap enough to
    sample often without slowing the run it measures)."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0


def tree_pss(process: psutil.Process) -> int:
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += pss(p.pid)
        except (FileNotFoundError, ProcessLookupError):
            pass  # the process ended between listing and reading
    return total


def measured_command(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run `command`, sampling its process tree's PSS every 100 ms; returns its wall seconds, peak MB,
    exit status and output (stdout and stderr together)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    watched = psutil.Process(process.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, tree_pss(watched))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log, _ = process.communicate()
    done.set()
    sampler.join()
    return {"wall_s": time.perf_counter() - start, "peak_pss_mb": peak / 2**20,
            "returncode": process.returncode, "log": log}


def measured_kedro_run(project: Path, *args: str) -> dict[str, Any]:
    """Run kedro, sampling the tree's PSS every 100 ms; returns seconds (overall and per node,
    from the project's timing hook) and peak MB."""
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", COLUMNS="200")
    figures = measured_command([sys.executable, "-m", "kedro", "run", *args], project, env)
    log = figures["log"]
    if figures["returncode"]:
        sys.exit(f"kedro run failed:\n{log[-5000:]}")
    node_seconds = {
        line.split("Node ")[1].split(" took")[0]: float(line.split(" took ")[1].split(" s")[0])
        for line in log.splitlines() if " took " in line and "Node " in line
    }
    # Kedro's runner line is below the log's level (conf/logging.yml): nodes run one after another.
    pipeline_seconds = next(
        (float(line.split(" in ")[-1].split(" sec")[0]) for line in log.splitlines()
         if "Pipeline execution completed successfully in" in line), sum(node_seconds.values()))
    return {"wall_s": figures["wall_s"], "pipeline_s": pipeline_seconds,
            "peak_pss_mb": figures["peak_pss_mb"], "node_s": node_seconds, "log": log}


# Several benchmarks write docs/results.md: each one's own part lies between its markers.
SECTION = re.compile(r"\n?<!-- begin (\S+) -->\n.*?<!-- end \1 -->\n", re.DOTALL)


def marked_sections(page: Path) -> str:
    """Every marked section of `page` (empty if it has none or does not exist), to keep them when
    the rest of the page is written again."""
    return "".join(match.group(0) for match in SECTION.finditer(page.read_text())) if page.exists() else ""


def write_section(page: Path, name: str, text: str) -> None:
    """Write `text` into `page` as section `name`: in place of the section's previous text, or at
    the end of the page."""
    section = f"\n<!-- begin {name} -->\n{text.rstrip()}\n<!-- end {name} -->\n"
    old = page.read_text() if page.exists() else ""
    previous = next((match for match in SECTION.finditer(old) if match.group(1) == name), None)
    page.write_text(old[:previous.start()] + section + old[previous.end():] if previous
                    else old.rstrip("\n") + "\n" + section)

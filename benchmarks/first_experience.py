"""A new user's first two commands, timed: the demo `kedro run` in a fresh copy of the project (after
`pip install -e .`, nothing made yet), then `emofusion predict` of one demo clip with the default
model (the best on validation clips) on a warm machine: one call first, so that the files it reads
are in the page cache, then the median of three.

    python benchmarks/first_experience.py

Also reports the demo run's peak memory (PSS of the process tree) and how many lines its log has
(the log is kept as kedro_run.log in the scratch project)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import pandas as pd
from _harness import measured_kedro_run, scratch_project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    args = parser.parse_args()
    project = scratch_project({}, args.workdir)
    run = measured_kedro_run(project)
    (project / "kedro_run.log").write_text(run["log"])  # to read what a first run says
    lines = [line for line in run["log"].split("\n") if line.strip()]
    print(f"demo kedro run: {run['wall_s']:.1f} s wall ({run['pipeline_s']:.1f} s in nodes), "
          f"peak {run['peak_pss_mb']:.0f} MB, {len(lines)} log lines")
    for node, seconds in sorted(run["node_s"].items(), key=lambda item: -item[1])[:8]:
        print(f"  {node}: {seconds:.1f} s")

    clip = project / pd.read_csv(project / "data/03_primary/clip_manifest.csv")["path"].iloc[0]
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1")
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        answer = subprocess.run([sys.executable, "-m", "emofusion", "predict", str(clip)], cwd=project,
                                env=env, capture_output=True, text=True, check=True)
        seconds.append(time.perf_counter() - start)
    model = answer.stderr.split("Model ")[1].split(";")[0]
    print(f"single-file emofusion predict ({model}): {statistics.median(seconds[1:]):.2f} s warm "
          f"(median of 3; the first call took {seconds[0]:.2f} s)")
    print(answer.stdout)


if __name__ == "__main__":
    main()

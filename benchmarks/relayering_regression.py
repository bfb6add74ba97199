"""Does a change of the code's shape keep the demo run's outputs? Runs `kedro run` end to end in a scratch
copy of the project (a small demo corpus, fine-tuning on with tiny networks, so that modelling,
fine-tuning, late fusion and reporting all run) and writes a digest of what it made: every test
prediction table, every metrics file and every model card's settings (run facts such as seconds, device
and versions left out). Compared with a digest written by an earlier run:

    python benchmarks/relayering_regression.py --write /tmp/before.json     # on the code before
    python benchmarks/relayering_regression.py --compare /tmp/before.json   # on the code after

`--digest-only PROJECT` digests a scratch project that already ran (no new run). The run imports the
package from this checkout's src/, whatever is installed. Floats are rounded to 6 decimals, so that a
last-bit difference in a sum's order does not count as a change."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))  # this checkout's package, also for the scratch project

from emofusion.scratch_project import scratch_project  # noqa: E402

# The end-to-end test's small demo: 4 speakers x 8 emotions x 3 clips.
TINY_DEMO = ("demo_corpus.speakers=4,demo_corpus.clips_per_emotion=3,demo_corpus.duration_s=1.5,"
             "audio.duration_s=1.0")
LOCAL = {
    "transfer_features": {"weights": "none", "batch_size": 8},
    "backbones": {"inception_resnet_v2": {"input_size": [75, 75]},
                  "squeezenet_v1_1": {"input_size": [64, 64]}},
    "classifiers": {"dnn": {"epochs": 40, "patience": 5}},
    "fine_tuning": {"enabled": True,
                    "defaults": {"image_size": [48, 48], "epochs": 2, "patience": 2, "batch_size": 16},
                    "models": {"squeezenet_c2": {"image_size": [{"size": [48, 40], "epochs": 1},
                                                                {"size": [48, 48], "epochs": 1}]},
                               "lstm": {"lstm": {"units": 8}, "head": [{"units": 16}], "epochs": 2}}},
}
# What a model card says about the run rather than the model: left out of the digest.
RUN_FACTS = {"seconds", "clips_per_second", "fingerprint", "device", "versions", "offline_fallback",
             "fit_id", "created", "commit", "time", "timestamp"}


def rounded(value: Any) -> Any:
    """`value` with floats rounded and run facts dropped, recursively."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items() if key not in RUN_FACTS}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def digest_of(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def table_digest(path: Path) -> str:
    table = pd.read_csv(path)
    return digest_of({"columns": list(table.columns),
                      "rows": rounded(table.astype(object).where(table.notna(), None).values.tolist())})


def digest(project: Path) -> dict[str, str]:
    """Relative path → digest of every test prediction table, metrics file and model card."""
    data = project / "data"
    files = {path: table_digest(path) for path in sorted(data.glob("07_model_output/**/*test_predictions*"))}
    files |= {path: digest_of(rounded(json.loads(path.read_text())))
              for path in sorted(data.glob("08_reporting/metrics/**/*.json"))}
    files |= {path: digest_of(rounded(json.loads(path.read_text())))
              for path in sorted(data.glob("06_models/**/*.json"))}
    files[data / "08_reporting/model_summary.csv"] = table_digest(data / "08_reporting/model_summary.csv")
    return {str(path.relative_to(project)): value for path, value in sorted(files.items())}


def run_demo(workdir: str | None) -> Path:
    project = scratch_project(PROJECT, Path(workdir or tempfile.mkdtemp(prefix="emofusion-relayer-")),
                              LOCAL)
    env = dict(os.environ, KEDRO_DISABLE_TELEMETRY="1", PYTHONWARNINGS="ignore", COLUMNS="400",
               PYTHONPATH=os.pathsep.join([str(PROJECT / "src"), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "kedro", "run", "--params", TINY_DEMO], cwd=project,
                         env=env, capture_output=True, text=True)
    (project / "kedro_run.log").write_text(run.stdout + run.stderr)
    if run.returncode:
        sys.exit(f"kedro run failed (log in {project / 'kedro_run.log'}):\n{run.stderr[-3000:]}")
    return project


def compare(now: dict[str, str], before: dict[str, str]) -> list[str]:
    """One line per output that is new, missing or different."""
    return ([f"missing: {name}" for name in sorted(before.keys() - now.keys())]
            + [f"new: {name}" for name in sorted(now.keys() - before.keys())]
            + [f"different: {name}" for name in sorted(now.keys() & before.keys())
               if now[name] != before[name]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="scratch folder (default: a new temporary one)")
    parser.add_argument("--digest-only", type=Path, help="digest this scratch project; run nothing")
    parser.add_argument("--write", type=Path, help="write the digest to this file")
    parser.add_argument("--compare", type=Path, help="compare with the digest in this file")
    args = parser.parse_args()
    project = args.digest_only or run_demo(args.workdir)
    now = digest(project)
    print(f"{len(now)} outputs digested in {project}")
    if args.write:
        args.write.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    if args.compare:
        differences = compare(now, json.loads(args.compare.read_text()))
        print("\n".join(differences) if differences else "same")
        sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()

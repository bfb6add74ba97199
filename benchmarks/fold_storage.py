"""What storing each model's folds as they finish costs, and what it saves: on the RAVDESS
speaker-independent modelling run (default models, 6 folds each).

    python benchmarks/evaluation.py --splits speaker_independent --workdir /tmp/evaluation  # features
    python benchmarks/fold_storage.py --workdir /tmp/evaluation --markdown docs/speed.md

Runs `kedro run --pipelines=modelling --params split.strategy=speaker_independent,resume=false` in
the workdir's RAVDESS project (its features already made), which trains every fold and stores each
one. The cost of storing them is then measured the way the run pays it: every stored fold is read,
then written and read back again (`FinishedFolds.keep` writes a fold and hands it on as read back),
timed, and its size summed. Then the same command with resume on (the default), as after a crash in the last
model's last fold: it reuses every fold.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _harness import measured_kedro_run, scratch_project, write_section

from emofusion import shared_arrays

BACKBONE = {"transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"}}


def storing_cost(models: Path) -> tuple[float, int, int]:
    """Seconds to write every stored fold again and read it back, their bytes, and how many there are."""
    files = sorted(models.glob("**/*_folds/fold_*.joblib"))
    seconds = 0.0
    with tempfile.TemporaryDirectory() as scratch:
        for file in files:
            stored = shared_arrays.load(file, models / "shared_arrays")
            started = time.perf_counter()
            shared_arrays.dump(stored, Path(scratch) / "fold.joblib", Path(scratch) / "shared_arrays")
            shared_arrays.load(Path(scratch) / "fold.joblib", Path(scratch) / "shared_arrays")
            seconds += time.perf_counter() - started
    return seconds, sum(file.stat().st_size for file in files), len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True,
                        help="benchmarks/evaluation.py's workdir, its RAVDESS features made")
    parser.add_argument("--ravdess", default="../shared/data/ravdess")
    parser.add_argument("--markdown", help="write the figures into this page's fold-storage section")
    args = parser.parse_args()
    ravdess = {"ravdess": {"reader": "ravdess", "path": str(Path(args.ravdess).resolve())}}
    project = scratch_project({"corpora": ["ravdess"], "corpus_sources": ravdess, **BACKBONE},
                              str(Path(args.workdir) / "ravdess"))
    split = "split.strategy=speaker_independent"
    every_fold = measured_kedro_run(project, "--pipelines=modelling", "--params", f"{split},resume=false")
    store_s, store_bytes, stored = storing_cost(project / "data/06_models")
    reused = measured_kedro_run(project, "--pipelines=modelling", "--params", split)
    models = sum(1 for line in reused["log"].splitlines() if "folds reused from an earlier run" in line)
    text = "\n".join([
        "## Storing each model's folds as they finish",
        "",
        "```bash",
        "python benchmarks/fold_storage.py --workdir /tmp/evaluation --markdown docs/speed.md",
        "```",
        "",
        f"RAVDESS, speaker independent (6 folds), `kedro run --pipelines=modelling` with the default models: "
        f"{every_fold['wall_s']:,.0f} s training every fold (`resume=false`). Writing its {stored} stored "
        f"folds (each fold's choice and test predictions, and the first fold's model) and reading "
        f"them back takes "
        f"{store_s:.1f} s, {100 * store_s / every_fold['wall_s']:.2f}% of the run, and "
        f"{store_bytes / 2**20:,.0f} MB of disk under data/06_models/*/*_folds (the first fold's model "
        "is also the model the run keeps: most of those bytes are that copy). The same command again, "
        f"as after a crash in its last model's last fold, reused the folds of {models} models and took "
        f"{reused['wall_s']:,.0f} s (the summary and its intervals are made again). Measured on "
        "the 2-core machine; the storing time is the time to write the same files again and read them "
        "back, as `FinishedFolds.keep` does.",
    ])
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "fold-storage", text)


if __name__ == "__main__":
    main()

"""What a run's data folder holds, and what its models would hold with their arrays inline (issue 24:
a RAVDESS run's data folder at most 1.2 GB with the default variants).

    python benchmarks/model_storage.py --workdir /tmp/storage                       # every clip
    python benchmarks/model_storage.py --workdir /tmp/storage --fraction 0.25 --markdown docs/speed.md
    python benchmarks/model_storage.py --workdir /tmp/storage --fraction 0.25 --existing  # report again

Runs plain `kedro run` (the default variants and classifiers, the CNN stream from the offline
SqueezeNet, as on a machine without ImageNet weights) on RAVDESS in a scratch copy of the project,
then sums the bytes of each folder of data/. Model files store each large array once, by content,
in data/06_models/shared_arrays (emofusion.shared_arrays); the figure beside it is what the same
model files would take with every array they name written into each (the size of each file plus
the arrays it names), as before they were shared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _harness import measured_kedro_run, scratch_project, write_section

from emofusion.shared_arrays import REFERENCES

BACKBONE = {"transfer_features": {"backbone": "squeezenet_v1_1", "weights": "imagenet"}}


def folder_bytes(folder: Path) -> int:
    return sum(file.stat().st_size for file in folder.rglob("*") if file.is_file())


def inline_bytes(models: Path) -> tuple[int, int, int]:
    """The bytes the arrays shared would take written into each file that names them, the shared
    folder's bytes, and how many files name a shared array."""
    arrays = models / "shared_arrays"
    total, files = 0, 0
    for references in (arrays / REFERENCES).glob("*.json"):
        entry = json.loads(references.read_text())
        if Path(entry["file"]).exists() and entry["arrays"]:
            files += 1
            total += sum((arrays / f"{name}.npy").stat().st_size for name in entry["arrays"])
    return total, folder_bytes(arrays), files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--ravdess", default="../shared/data/ravdess")
    parser.add_argument("--fraction", type=float, default=1.0, help="stratified share of RAVDESS's clips")
    parser.add_argument("--markdown", help="write the figures into this page's model-storage section")
    parser.add_argument("--existing", action="store_true", help="report the finished run, run nothing")
    args = parser.parse_args()
    ravdess = {"ravdess": {"reader": "ravdess", "path": str(Path(args.ravdess).resolve()),
                           "sample_fraction": args.fraction}}
    project = scratch_project({"corpora": ["ravdess"], "corpus_sources": ravdess, **BACKBONE},
                              str(Path(args.workdir) / "ravdess"))
    took = "" if args.existing else f"; {measured_kedro_run(project)['wall_s'] / 60:.0f} min"
    data = project / "data"
    sizes = {folder.name: folder_bytes(folder) for folder in sorted(data.iterdir()) if folder.is_dir()}
    inline, shared, files = inline_bytes(data / "06_models")
    models = sizes.get("06_models", 0)
    mb = 1e6
    lines = [
        "## What a run stores",
        "",
        f"`python benchmarks/model_storage.py --workdir <workdir> --fraction {args.fraction}`: plain "
        f"`kedro run` on {args.fraction:.0%} of RAVDESS (default variants and classifiers, the CNN stream "
        f"from the offline SqueezeNet){took}.",
        "",
        "| folder | MB |",
        "|---|---:|",
        *(f"| {name} | {size / mb:,.0f} |" for name, size in sizes.items()),
        f"| **data/ in all** | **{sum(sizes.values()) / mb:,.0f}** |",
        "",
        f"Of data/06_models ({models / mb:,.0f} MB), {shared / mb:,.0f} MB are the arrays that {files} model "
        f"and fold files name (data/06_models/shared_arrays); written into each file that names them, "
        f"as before, they would take {inline / mb:,.0f} MB, and data/06_models "
        f"{(models - shared + inline) / mb:,.0f} MB.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "model-storage", text)


if __name__ == "__main__":
    main()

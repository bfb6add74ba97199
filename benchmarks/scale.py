"""Wall time and peak memory of the pipelines as the corpus grows, stage by stage, on either engine.

    python benchmarks/scale.py --workdir /tmp/scale --markdown docs/scale.md
    python benchmarks/scale.py --sizes 200 400 --modelling-clips 3000 --workdir /tmp/scale-smoke

End to end: for each size (a multiple of 8) a synthetic demo corpus of that many short clips
(`--clip-seconds` of audio each after trimming; speakers x 8 emotions x takes, at most 20 speakers,
so that the generator's voices stay plausible), made once and shared by the engines, with the two
classical variants kept (`mfcc_lpcc`, `egemaps_mfcc_lpcc`: the MFCC, LPCC and eGeMAPS streams) and
both classifiers (svm, dnn) at their default settings, on the default random split. Every other
variant is switched off, so the CNN stream (transfer_features) is not made and its pipeline not run.
Each stage is its own `kedro run --pipelines=<stage>` in a scratch copy of the project (one per
engine and size, data/ emptied first, resume off), measured from outside: wall seconds including
Kedro's start-up, the seconds in the stage's nodes (the project's timing hook) and the peak PSS of
the whole process tree (the Kedro process, its fold workers and, on the dask engine, the cluster's
nannies and workers, which the run starts as its own children; the scheduler runs in the Kedro
process).

Engines: `local` (the default: n_jobs worker processes) and `dask` (`execution.engine=dask`,
`execution.workers=2`: a 2-worker LocalCluster started by the run). The engine places the per-clip
steps only (data_processing, feature_extraction); `--dask-stages` may limit the dask runs to those.

Modelling alone (`--modelling-clips N`, 0 to skip): a tiny demo run makes real fused features for
their metadata (blocks, made_with), then each kept variant's features are replaced by N synthetic
clips (8 emotions, each a Gaussian around its own centre; `--modelling-columns` columns, default
each variant's own width, blocks widened in proportion) and the clip manifest by N matching rows;
then `kedro run --pipelines=modelling` (the split, every model, the summary) on the local engine.

Each run's log is kept in its scratch project (`benchmark-<stage>.log`), the table in the workdir
(`scale.csv`).

The scratch projects import the package from this checkout's src/, whatever is installed."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import textwrap
import time
from datetime import date
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))  # this checkout's package, here and in every kedro run below
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(PROJECT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402
from _harness import measured_kedro_run, scratch_project, write_section  # noqa: E402

from emofusion.clip_array import ClipArray  # noqa: E402
from emofusion.datasets.clip_array_dataset import ClipArrayDataset  # noqa: E402
from emofusion.pipelines.data_processing.demo_corpus import write_demo_corpus  # noqa: E402

STAGES = ["data_processing", "feature_extraction", "fusion", "modelling", "reporting"]
KEPT_VARIANTS = ["mfcc_lpcc", "egemaps_mfcc_lpcc"]
MAX_SPEAKERS = 20  # the demo generator's voices rise with each speaker: beyond ~24 they are implausible
TINY_DEMO = {"speakers": 4, "clips_per_emotion": 3}  # the end-to-end test's corpus, for real metadata


def base_parameters(name: str) -> dict[str, Any]:
    return yaml.safe_load((PROJECT / "conf" / "base" / f"{name}.yml").read_text())


def demo_settings(clips: int, clip_seconds: float) -> dict[str, Any]:
    """demo_corpus parameters for `clips` clips: 8 emotions x speakers x takes, with as many speakers
    (at most MAX_SPEAKERS) as divide clips / 8; each clip half a second longer than the audio kept,
    for the leading and trailing silence that preprocessing trims."""
    demo = dict(base_parameters("parameters_data_processing")["demo_corpus"])
    emotions = len(demo["emotions"])
    if clips % emotions:
        sys.exit(f"--sizes: {clips} is not a multiple of {emotions} (the demo's emotions)")
    per_emotion = clips // emotions
    speakers = max(s for s in range(1, MAX_SPEAKERS + 1) if per_emotion % s == 0)
    return {**demo, "speakers": speakers, "clips_per_emotion": per_emotion // speakers,
            "duration_s": float(clip_seconds) + 0.5}


def local_parameters(engine: str, clip_seconds: float, demo: dict[str, Any] | None,
                     corpus: Path | None) -> dict[str, Any]:
    """conf/local/parameters.yml of one scratch project (merged key by key over conf/base)."""
    variants = base_parameters("parameters_fusion")["fusion_variants"]
    parameters: dict[str, Any] = {
        "fusion_variants": {name: None for name in variants if name not in KEPT_VARIANTS},
        "audio": {"duration_s": float(clip_seconds)},
        "execution": {"engine": engine, "workers": 2 if engine == "dask" else None},
        "resume": False,  # every fold trained, whatever an earlier run in the same workdir left
    }
    if demo is not None:
        parameters["demo_corpus"] = demo
    if corpus is not None:
        parameters["corpus_sources"] = {"demo": {"reader": "demo", "path": str(corpus)}}
    return parameters


def slowest_node(figures: dict[str, Any]) -> str:
    if not figures["node_s"]:
        return ""
    node, seconds = max(figures["node_s"].items(), key=lambda item: item[1])
    return f"{node} ({seconds:,.0f} s)"


def row(engine: str, clips: int, stage: str, figures: dict[str, Any]) -> dict[str, Any]:
    return {"engine": engine, "clips": clips, "stage": stage, "wall_s": figures["wall_s"],
            "node_s": sum(figures["node_s"].values()), "peak_mb": figures["peak_pss_mb"],
            "slowest": slowest_node(figures)}


def end_to_end(engine: str, clips: int, corpus: Path, demo: dict[str, Any], clip_seconds: float,
               workdir: Path, stages: list[str]) -> list[dict[str, Any]]:
    """Every stage of one size on one engine, each its own measured `kedro run`; then the run as a
    whole (wall and node seconds summed, the highest peak)."""
    folder = workdir / f"{engine}-{clips}"
    shutil.rmtree(folder / "data", ignore_errors=True)
    project = scratch_project(local_parameters(engine, clip_seconds, demo, corpus), str(folder))
    rows = []
    for stage in stages:
        figures = measured_kedro_run(project, f"--pipelines={stage}")
        (project / f"benchmark-{stage}.log").write_text(figures["log"])
        rows.append(row(engine, clips, stage, figures))
        print(f"{engine:>5} {clips:>7,} {stage:<20} {figures['wall_s']:8.1f} s wall "
              f"{figures['peak_pss_mb']:8.0f} MB  slowest: {rows[-1]['slowest']}", flush=True)
    rows.append({"engine": engine, "clips": clips, "stage": "whole run" if stages == STAGES
                 else "stages run", "wall_s": sum(r["wall_s"] for r in rows),
                 "node_s": sum(r["node_s"] for r in rows), "peak_mb": max(r["peak_mb"] for r in rows),
                 "slowest": "stage: " + max(rows, key=lambda r: r["wall_s"])["stage"]})
    return rows


def synthetic_features(folder: Path, clip_ids: np.ndarray, emotions: np.ndarray, columns: int,
                       metadata: dict[str, Any], seed: int) -> None:
    """`folder` (a fused_features dataset) made again: `clip_ids` rows of `columns` float32 columns,
    each emotion a Gaussian around its own centre (centres about 2 standard deviations apart, so
    that the task is learnable but not trivial), with `metadata`'s blocks widened in proportion.
    Written through a memory map beside the dataset, then saved by ClipArrayDataset."""
    rng = np.random.default_rng(seed)
    labels = np.unique(emotions, return_inverse=True)[1]
    centres = rng.standard_normal((labels.max() + 1, columns)).astype(np.float32) * 1.5 / np.sqrt(columns)
    staging = folder.with_name(folder.name + ".synthetic.npy")
    values = np.lib.format.open_memmap(staging, mode="w+", dtype=np.float32, shape=(len(clip_ids), columns))
    for start in range(0, len(clip_ids), 8192):
        chunk = labels[start:start + 8192]
        values[start:start + len(chunk)] = centres[chunk] + rng.standard_normal(
            (len(chunk), columns), dtype=np.float32)
    values.flush()
    blocks = metadata["blocks"]
    width = blocks[-1]["stop"]
    edges = [round(columns * block["stop"] / width) for block in blocks]
    metadata = {**metadata, "blocks": [{**block, "start": start, "stop": stop} for block, start, stop
                                       in zip(blocks, [0, *edges[:-1]], edges, strict=True)]}
    ClipArrayDataset(path=str(folder)).save(ClipArray(clip_ids, values, metadata))
    del values
    staging.unlink()


def modelling_alone(clips: int, columns: int | None, clip_seconds: float, workdir: Path,
                    seed: int) -> list[dict[str, Any]]:
    """The modelling stage on `clips` synthetic clips (see the module's docstring)."""
    folder = workdir / f"modelling-{clips}"
    shutil.rmtree(folder / "data", ignore_errors=True)
    demo = {**demo_settings(8, clip_seconds), **TINY_DEMO}
    project = scratch_project(local_parameters("local", clip_seconds, demo, None), str(folder))
    for stage in ("data_processing", "feature_extraction", "fusion"):
        measured_kedro_run(project, f"--pipelines={stage}")
    template = pd.read_csv(project / "data/03_primary/clip_manifest.csv", dtype=str)
    manifest = template.iloc[np.arange(clips) % len(template)].reset_index(drop=True)
    kinds = np.array(sorted(template["emotion"].unique()))
    emotions = kinds[np.arange(clips) % len(kinds)]
    speakers = np.arange(clips) % 200
    manifest = manifest.assign(
        clip_id=[f"synthetic/{i:07d}" for i in range(clips)], emotion=emotions,
        source_label=emotions, speaker=[f"syn{s:03d}" for s in speakers],
        gender=np.where(speakers % 2, "female", "male"))
    manifest["source_clip_id"] = manifest["clip_id"]
    manifest.to_csv(project / "data/03_primary/clip_manifest.csv", index=False)
    widths = {}
    for offset, variant in enumerate(KEPT_VARIANTS):
        path = project / "data/05_model_input/fused_features" / variant
        metadata = json.loads((path / "metadata.json").read_text())
        widths[variant] = columns or metadata["blocks"][-1]["stop"]
        synthetic_features(path, manifest["clip_id"].to_numpy(), manifest["emotion"].to_numpy(),
                           widths[variant], metadata, seed + offset)
    figures = measured_kedro_run(project, "--pipelines=modelling")
    (project / "benchmark-modelling.log").write_text(figures["log"])
    stage = "modelling, synthetic (" + ", ".join(f"{v} {w}" for v, w in widths.items()) + " columns)"
    result = row("local", clips, stage, figures)
    # Whether the models learnt the synthetic task (8 emotions: chance is 0.125).
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    result["test_uar"] = ", ".join(f"{r.variant}.{r.classifier} {r.unweighted_average_recall:.3f}"
                                   for r in summary.itertuples())
    print(f"local {clips:>7,} modelling (synthetic) {figures['wall_s']:8.1f} s wall "
          f"{figures['peak_pss_mb']:8.0f} MB  slowest: {result['slowest']}; test UAR: {result['test_uar']}",
          flush=True)
    return [result]


def ratios(table: pd.DataFrame) -> list[str]:
    """The issue's checks on the end-to-end runs, per engine: peak memory of the largest size over
    the next largest (bar: at most 1.5 for 20,000 over 5,000) and seconds per clip of the largest
    over the smallest (bar: at most 1.3 for 20,000 over 1,000)."""
    lines = []
    whole = table[table["stage"] == "whole run"]
    for engine, runs in whole.groupby("engine", sort=False):
        runs = runs.set_index("clips").sort_index()
        if len(runs) < 2:
            continue
        sizes = list(runs.index)
        top, next_, low = sizes[-1], sizes[-2], sizes[0]
        peak = runs.loc[top, "peak_mb"] / runs.loc[next_, "peak_mb"]
        per_clip = (runs.loc[top, "wall_s"] / top) / (runs.loc[low, "wall_s"] / low)
        per_clip_nodes = (runs.loc[top, "node_s"] / top) / (runs.loc[low, "node_s"] / low)
        lines.append(f"- {engine}: peak memory at {top:,} clips / at {next_:,}: **{peak:.2f}** "
                     f"(bar for 20,000 / 5,000: at most 1.5); seconds per clip at {top:,} / at {low:,}: "
                     f"**{per_clip:.2f}** wall, {per_clip_nodes:.2f} in the nodes "
                     "(bar for 20,000 / 1,000: at most 1.3)")
    return lines


def wrapped(text: str, bullet: bool = False) -> str:
    """A paragraph (or a list item) of the page, in lines of at most 100 characters."""
    return textwrap.fill(text, 100, subsequent_indent="  " if bullet else "", break_long_words=False,
                         break_on_hyphens=False)


def markdown(table: pd.DataFrame, command: str, smoke: bool) -> str:
    memory = psutil.virtual_memory().total / 2**30
    table = table.fillna({"slowest": ""})
    lines = ["## Measured figures", ""]
    if smoke:
        lines += [wrapped("**A partial run**, at sizes other than the issue's (1,000, 5,000 and 20,000 "
                          "clips, modelling alone on 10^5): the bars below compare the sizes that were "
                          "run, not the issue's."), ""]
    lines += [
        wrapped(f"`{command}`, run on {date.today().isoformat()} on {os.cpu_count()} cores, {memory:.0f} GB "
                f"of memory ({platform.system()}, Python {platform.python_version()}). Wall seconds include "
                "each `kedro run`'s start-up (several seconds a stage); node seconds are the time in the "
                "stage's nodes; peak is the highest PSS of the whole process tree. The whole run's peak is "
                "its highest stage's."), "",
        "| engine | clips | stage | wall s | node s | s/clip (wall) | peak MB | slowest node |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for r in table.itertuples():
        name = f"**{r.stage}**" if r.stage in ("whole run", "stages run") else r.stage
        lines.append(f"| {r.engine} | {r.clips:,} | {name} | {r.wall_s:,.1f} | {r.node_s:,.1f} | "
                     f"{r.wall_s / r.clips:.4f} | {r.peak_mb:,.0f} | {r.slowest} |")
    if "test_uar" in table:
        for r in table.dropna(subset=["test_uar"]).itertuples():
            lines += ["", wrapped(f"Modelling alone on {r.clips:,} synthetic clips, test UAR of each model "
                                  f"(chance 0.125): {r.test_uar}.")]
    checks = ratios(table)
    if checks:
        lines += ["", "Against the issue's bars:", "", *(wrapped(check, bullet=True) for check in checks)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 5000, 20000],
                        help="end-to-end corpus sizes in clips, multiples of 8 (none: skip)")
    parser.add_argument("--engines", nargs="+", choices=["local", "dask"], default=["local", "dask"])
    parser.add_argument("--dask-stages", nargs="+", choices=STAGES, default=STAGES,
                        help="the stages run on the dask engine (default: all; the engine places only "
                             "data_processing's and feature_extraction's per-clip steps)")
    parser.add_argument("--clip-seconds", type=float, default=1.0, help="audio.duration_s")
    parser.add_argument("--modelling-clips", type=int, default=100_000,
                        help="clips of the modelling-alone run on synthetic features (0: skip)")
    parser.add_argument("--modelling-columns", type=int, default=None,
                        help="columns of each synthetic variant (default: its own width, 104 and 192); "
                             "e.g. 6565 for the width of compare_egemaps_mfcc_lpcc")
    parser.add_argument("--workdir", help="folder of the scratch projects and corpora (default: a new "
                                          "temporary folder); its projects' data/ is emptied before a run")
    parser.add_argument("--markdown", help="write the table into this page's scale section")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.dask_stages != STAGES[:len(args.dask_stages)]:
        parser.error(f"--dask-stages: the first of {' '.join(STAGES)}, in order (each reads the last)")

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emofusion-scale-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for clips in args.sizes:
        demo = demo_settings(clips, args.clip_seconds)
        corpus = workdir / f"corpus-{clips}"
        started = time.perf_counter()
        write_demo_corpus(corpus, demo)  # not measured: a real corpus is already on disk
        print(f"corpus of {clips:,} clips ({demo['speakers']} speakers x 8 emotions x "
              f"{demo['clips_per_emotion']} takes, {demo['duration_s']} s): "
              f"{time.perf_counter() - started:.0f} s to make or find", flush=True)
        for engine in args.engines:
            stages = args.dask_stages if engine == "dask" else STAGES
            rows += end_to_end(engine, clips, corpus, demo, args.clip_seconds, workdir,
                               [stage for stage in STAGES if stage in stages])
    if args.modelling_clips:
        rows += modelling_alone(args.modelling_clips, args.modelling_columns, args.clip_seconds, workdir,
                                args.seed)
    table = pd.DataFrame(rows)
    table.to_csv(workdir / "scale.csv", index=False)
    command = "python benchmarks/scale.py " + " ".join(sys.argv[1:])
    smoke = args.sizes != [1000, 5000, 20000] or args.modelling_clips != 100_000
    text = markdown(table, command.replace(args.workdir, "<workdir>") if args.workdir else command, smoke)
    print(text)
    print(f"scratch projects: {workdir}")
    if args.markdown:
        write_section(Path(args.markdown), "scale", text)


if __name__ == "__main__":
    main()

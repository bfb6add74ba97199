"""The per-clip stages against a plain script doing the same work (issue 24): raw audio files ->
preprocessed audio -> MFCC and LPCC clip statistics.

    python benchmarks/per_clip_stages.py --corpus-path ../shared/data/ravdess --repeats 3
    python benchmarks/per_clip_stages.py --limit 96 --repeats 1      # a smoke test on 96 clips

Three runs, each its own process measured from outside (wall time from start to exit, so that
imports and start-up count on every side; peak PSS of its process tree), alternating `--repeats`
times (each round in another order), after `--warmup` unmeasured rounds (the files in the page
cache, librosa's numba caches and the scratch project's MLflow store made):

- reference: this file with `--reference-only`, a plain script: it lists the corpus's audio files
  (the extensions the project's readers take), and with `joblib.Parallel(n_jobs=-1)` runs, per
  file, the project's own `preprocess_clip` and its MFCC and LPCC statistics (`mfcc_frames`,
  `lpcc_frames`, `clip_statistics`) with the project's `audio`, `mfcc` and `lpcc` parameters (read
  by the project's configuration loader from the scratch project's conf/, handed over as JSON). It
  keeps the rows in memory as float32 arrays, as the nodes store them, and writes them to a small
  .npz at the end for the value check.
- kedro local: `kedro run --to-nodes=extract_mfcc,extract_lpcc` in a scratch copy of the project
  (`corpora: [bench]`, the corpus read by the `--reader` reader) whose data/ is deleted before every
  run, so that each run does the whole work from the raw files (build_corpus_manifest,
  preprocess_audio, extract_mfcc, extract_lpcc). Project defaults otherwise (MLflow tracking on).
- kedro dask: the same with `--params execution.engine=dask,execution.workers=2` (a 2-worker
  LocalCluster the run starts).

After each Kedro run, its stored MFCC and LPCC rows are compared with the reference's by clip id
(the same clips, `np.allclose`, and the largest difference), so that the comparison is of the same
work. Reported: the median wall seconds of each, the ratios kedro-local / reference (issue 24's bar:
at most 1.0) and dask / local (at most 1.2), and where the time went (the reference's imports and
compute; each Kedro run's node seconds, from the project's timing hook, and the rest: start-up,
hooks, tracking, teardown). `--markdown FILE` writes the table as FILE's `per-clip-stages` section.

The Kedro runs and the reference import the package from this checkout's src/, whatever is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT / "src"))  # this checkout's package, here and in every run below
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(PROJECT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])

DEFAULT_CORPUS = "../shared/data/ravdess"  # relative to the repository
CORPUS = "bench"  # the scratch project's corpus name, the first part of its clip ids
# The audio extensions the project's corpus readers take (emofusion.pipelines.data_processing.corpora,
# checked against it by the parent process): not imported here, so that the reference's start-up is a
# plain script's.
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff", ".au"})
SIDES = ("reference", "local", "dask")
DASK_PARAMS = "execution.engine=dask,execution.workers=2"
REFERENCE_MARK = "REFERENCE-FIGURES "


# --------------------------------------------------------------------------- the plain reference
def clip_features(path: str, settings: dict[str, Any]) -> tuple[Any, Any] | None:
    """One file: the project's preprocessing, then its MFCC and LPCC statistics; None for a clip
    the preprocessing rejects (silent, too short, unreadable)."""
    from emofusion.errors import ClipRejected
    from emofusion.pipelines.data_processing.audio import preprocess_clip
    from emofusion.pipelines.feature_extraction.features import clip_statistics, lpcc_frames, mfcc_frames

    audio = settings["audio"]
    try:
        signal, _ = preprocess_clip(path, audio)
    except ClipRejected:
        return None
    rate = audio["sample_rate"]
    mfcc = {key: value for key, value in settings["mfcc"].items() if key != "statistics"}
    lpcc = {key: value for key, value in settings["lpcc"].items() if key != "statistics"}
    return (clip_statistics(mfcc_frames(signal, rate, **mfcc), settings["mfcc"]["statistics"]),
            clip_statistics(lpcc_frames(signal, rate, **lpcc), settings["lpcc"]["statistics"]))


def reference(corpus: Path, settings_file: Path, out: Path) -> None:
    """The plain script: list, then per file in parallel on every core; the rows kept as arrays."""
    started = time.perf_counter()
    import numpy as np
    from joblib import Parallel, delayed

    import emofusion.pipelines.data_processing.audio  # noqa: F401  what the workers will import
    import emofusion.pipelines.feature_extraction.features  # noqa: F401

    imported = time.perf_counter()
    settings = json.loads(settings_file.read_text())
    files = sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*")
                   if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    listed = time.perf_counter()
    rows = Parallel(n_jobs=-1)(delayed(clip_features)(str(corpus / f), settings) for f in files)
    computed = time.perf_counter()
    kept = [i for i, row in enumerate(rows) if row is not None]
    clip_ids = np.array([files[i].rsplit(".", 1)[0] for i in kept])
    mfcc = np.stack([rows[i][0] for i in kept]).astype(np.float32)
    lpcc = np.stack([rows[i][1] for i in kept]).astype(np.float32)
    np.savez(out, clip_ids=clip_ids, mfcc=mfcc, lpcc=lpcc)
    print(REFERENCE_MARK + json.dumps({
        "imports_s": imported - started, "listing_s": listed - imported, "compute_s": computed - listed,
        "files": len(files), "rejected": len(files) - len(kept)}), flush=True)


# --------------------------------------------------------------------------- the benchmark
def limited_corpus(corpus: Path, limit: int, workdir: Path) -> Path:
    """A folder of links to the first `limit` audio files of `corpus` (by path), in its layout."""
    files = sorted(p for p in corpus.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
    folder = workdir / f"corpus-{limit}"
    shutil.rmtree(folder, ignore_errors=True)
    for file in files[:limit]:
        link = folder / file.relative_to(corpus)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(file)
    return folder


def project_settings(project: Path) -> dict[str, Any]:
    """The `audio`, `mfcc` and `lpcc` parameters a `kedro run` in `project` gets, read by the
    project's own configuration loader with the project's settings (conf/local over conf/base)."""
    from emofusion.configuration import ProjectConfigLoader
    from emofusion.settings import CONFIG_LOADER_ARGS

    loader = ProjectConfigLoader(conf_source=str(project / "conf"), **CONFIG_LOADER_ARGS)
    parameters = loader["parameters"]
    return {name: parameters[name] for name in ("audio", "mfcc", "lpcc")}


def run_reference(corpus: Path, settings_file: Path, out: Path) -> dict[str, Any]:
    from _harness import measured_command

    figures = measured_command([sys.executable, __file__, "--reference-only", "--corpus-path", str(corpus),
                                "--settings", str(settings_file), "--out", str(out)], PROJECT,
                               dict(os.environ))
    if figures["returncode"]:
        sys.exit(f"the reference failed:\n{figures['log'][-5000:]}")
    line = next(line for line in figures["log"].splitlines() if line.startswith(REFERENCE_MARK))
    return figures | {"detail": json.loads(line[len(REFERENCE_MARK):])}


def run_kedro(project: Path, params: str | None) -> dict[str, Any]:
    from _harness import measured_kedro_run

    shutil.rmtree(project / "data", ignore_errors=True)  # every run from the raw files
    args = ["--to-nodes=extract_mfcc,extract_lpcc"] + ([f"--params={params}"] if params else [])
    return measured_kedro_run(project, *args)


def value_check(project: Path, reference_file: Path) -> dict[str, Any]:
    """The run's stored MFCC and LPCC rows against the reference's, by clip id."""
    import numpy as np

    from emofusion.datasets.clip_array_dataset import ClipArrayDataset

    stored = np.load(reference_file)
    ids = [f"{CORPUS}/{clip_id}" for clip_id in stored["clip_ids"]]
    result: dict[str, Any] = {"clips": len(ids)}
    for name in ("mfcc", "lpcc"):
        made = ClipArrayDataset(path=str(project / "data" / "04_feature" / name)).load()
        if sorted(made.clip_ids.tolist()) != sorted(ids):
            missing, extra = set(ids) - set(made.clip_ids), set(made.clip_ids) - set(ids)
            sys.exit(f"{name}: the run kept other clips than the reference: {len(missing)} only in the "
                     f"reference ({sorted(missing)[:3]}), {len(extra)} only in the run ({sorted(extra)[:3]})")
        rows = np.asarray(made.values)[made.positions(ids)]
        difference = np.abs(rows.astype(np.float64) - stored[name])
        # Float32 rows: the only difference expected is in the last bits of float32 sums taken in
        # another order (OpenBLAS's threads in a worker), so within 1e-5 of each column's scale.
        scale = np.abs(stored[name]).max(axis=0)
        result[name] = {"identical": bool(np.array_equal(rows, stored[name])),
                        "allclose": bool(np.allclose(rows, stored[name])),
                        "within_1e-5_of_scale": bool((difference <= 1e-5 * scale).all()),
                        "max_abs_diff": float(difference.max())}
    if not all(result[name]["within_1e-5_of_scale"] for name in ("mfcc", "lpcc")):
        sys.exit(f"the run's features differ from the reference's: {result}")
    return result


def median(values: list[float]) -> float:
    return statistics.median(values)


def load_average() -> str:
    return ", ".join(f"{load:.2f}" for load in os.getloadavg())


def same_work(checks: list[dict[str, Any]]) -> str:
    """What the value checks of one side's runs found."""
    worst = {name: max(c[name]["max_abs_diff"] for c in checks) for name in ("mfcc", "lpcc")}
    said = []
    for name in ("mfcc", "lpcc"):
        if all(c[name]["identical"] for c in checks):
            said.append(f"{name.upper()} bit for bit")
        else:
            close = "`np.allclose`" if all(c[name]["allclose"] for c in checks) else (
                "not `np.allclose` at its default tolerances")
            said.append(f"{name.upper()} within 1e-5 of each column's scale, {close}, largest difference "
                        f"{worst[name]:.2g}")
    return (f"every run's stored rows of the {checks[0]['clips']:,} clips against the reference's, by "
            f"clip id: {'; '.join(said)}")


def markdown(runs: dict[str, list[dict[str, Any]]], checks: dict[str, list[dict[str, Any]]], clips: int,
             command: str, loads: tuple[str, str]) -> str:
    wall = {side: median([r["wall_s"] for r in runs[side]]) for side in SIDES}
    names = {"reference": "plain reference (joblib, `n_jobs=-1`)",
             "local": "`kedro run`, local engine",
             "dask": "`kedro run`, dask engine (2-worker LocalCluster)"}
    lines = [
        f"`{command}`: {clips:,} clips, {len(runs['reference'])} alternating rounds, on "
        f"{date.today().isoformat()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"load average (1, 5, 15 min) {loads[0]} before, {loads[1]} after.",
        "",
        "| run | median wall s | each round s | median peak MB | where the time went (medians) |",
        "|---|---:|---|---:|---|",
    ]
    for side in SIDES:
        each = ", ".join(f"{r['wall_s']:.1f}" for r in runs[side])
        peak = median([r["peak_pss_mb"] for r in runs[side]])
        if side == "reference":
            parts = {key: median([r["detail"][key] for r in runs[side]])
                     for key in ("imports_s", "listing_s", "compute_s")}
            rest = wall[side] - sum(parts.values())
            where = (f"imports {parts['imports_s']:.1f} s, listing {parts['listing_s']:.2f} s, parallel "
                     f"work {parts['compute_s']:.1f} s, the rest (interpreter, output) {rest:.1f} s")
        else:
            nodes = sorted({node for r in runs[side] for node in r["node_s"]})
            per_node = {node: median([r["node_s"].get(node, 0.0) for r in runs[side]]) for node in nodes}
            pipeline = median([r["pipeline_s"] for r in runs[side]])
            outside = median([r["wall_s"] - r["pipeline_s"] for r in runs[side]])
            where = ", ".join(f"{node} {seconds:.1f} s" for node, seconds in per_node.items())
            where += (f"; the pipeline (Kedro's figure: the nodes, and loading and saving between them) "
                      f"{pipeline:.1f} s; outside it (start-up, hooks, tracking, end) {outside:.1f} s")
        lines.append(f"| {names[side]} | **{wall[side]:.1f}** | {each} | {peak:,.0f} | {where} |")
    paired = [k["wall_s"] / r["wall_s"] for k, r in zip(runs["local"], runs["reference"], strict=True)]
    lines += [
        "",
        f"- kedro local / reference: **{wall['local'] / wall['reference']:.2f}** (bar: at most 1.0; "
        f"round by round {', '.join(f'{p:.2f}' for p in paired)})",
        f"- kedro dask / kedro local: **{wall['dask'] / wall['local']:.2f}** (bar: at most 1.2)",
    ]
    for side in ("local", "dask"):
        lines.append(f"- the same work, {side}: " + same_work(checks[side]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus-path", help="the corpus folder (default: ../shared/data/ravdess, beside "
                                              "the repository)")
    parser.add_argument("--reader", default="ravdess", help="the project's reader for its file names")
    parser.add_argument("--limit", type=int, help="only the first N audio files (a folder of links to them)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first")
    parser.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    parser.add_argument("--params", help="more --params for both Kedro runs (e.g. tracking.enabled=false)")
    parser.add_argument("--workdir", help="folder of the scratch project (default: a new temporary folder)")
    parser.add_argument("--markdown", help="write the table into this page's per-clip-stages section")
    parser.add_argument("--reference-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    corpus = Path(args.corpus_path).resolve() if args.corpus_path else (PROJECT / DEFAULT_CORPUS).resolve()
    if args.reference_only:
        reference(corpus, Path(args.settings), Path(args.out))
        return

    import yaml
    from _harness import scratch_project, write_section

    from emofusion.pipelines.data_processing.corpora import AUDIO_EXTENSIONS as READERS_EXTENSIONS

    if AUDIO_EXTENSIONS != READERS_EXTENSIONS:
        sys.exit(f"AUDIO_EXTENSIONS here is not the readers' {sorted(READERS_EXTENSIONS)}: update it")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emofusion-per-clip-")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.limit:
        corpus = limited_corpus(corpus, args.limit, workdir)
    project = scratch_project({"corpora": [CORPUS], "corpus_sources": {CORPUS: {
        "reader": args.reader, "path": str(corpus)}}, "n_jobs": -1}, str(workdir / "project"))
    settings_file = workdir / "reference_settings.json"
    settings_file.write_text(json.dumps(project_settings(project)))
    reference_file = workdir / "reference.npz"
    reference_file.unlink(missing_ok=True)
    # Every node's seconds (the timing hook says those under a second at DEBUG) and the runner's.
    logging = yaml.safe_load((PROJECT / "conf" / "logging.yml").read_text())
    logging["loggers"] |= {"emofusion.hooks": {"level": "DEBUG"}, "kedro.runner": {"level": "INFO"}}
    (workdir / "logging.yml").write_text(yaml.safe_dump(logging))
    os.environ["KEDRO_LOGGING_CONFIG"] = str(workdir / "logging.yml")
    params = {"local": args.params, "dask": ",".join(filter(None, [DASK_PARAMS, args.params]))}

    def run(side: str) -> dict[str, Any]:
        if side == "reference":
            return run_reference(corpus, settings_file, reference_file)
        return run_kedro(project, params[side])

    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    checks: dict[str, list[dict[str, Any]]] = {"local": [], "dask": []}
    loads = [load_average()]
    print(f"corpus {corpus}; scratch project {project}; load average {loads[0]}", flush=True)
    for round_ in range(-args.warmup, args.repeats):
        order = SIDES[round_ % 3:] + SIDES[:round_ % 3]
        for side in (s for s in order if s in args.sides):
            figures = run(side)
            label = "warm-up" if round_ < 0 else f"round {round_ + 1}"
            detail = figures.get("detail") or {node: round(s, 1) for node, s in figures["node_s"].items()}
            print(f"{label:<8} {side:<9} {figures['wall_s']:6.1f} s wall, {figures['peak_pss_mb']:6.0f} MB "
                  f"peak; {detail}", flush=True)
            if side != "reference" and "reference" in args.sides and reference_file.exists():
                checks[side].append(value_check(project, reference_file))
                (project / f"benchmark-{side}.log").write_text(figures["log"])
            if round_ >= 0:
                runs[side].append(figures)
    loads.append(load_average())
    if set(args.sides) != set(SIDES):
        print({side: median([r["wall_s"] for r in runs[side]]) for side in args.sides if runs[side]})
        return
    clips = runs["reference"][0]["detail"]["files"] - runs["reference"][0]["detail"]["rejected"]
    command = "python benchmarks/per_clip_stages.py " + " ".join(sys.argv[1:])
    if args.workdir:
        command = command.replace(args.workdir, "<workdir>")
    text = markdown(runs, checks, clips, command, (loads[0], loads[1]))
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "per-clip-stages", "## Per-clip stages against a plain script\n\n"
                      + text)


if __name__ == "__main__":
    main()

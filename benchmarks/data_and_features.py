"""Time data_processing + feature_extraction on a real corpus (RAVDESS by default).

    python benchmarks/data_and_features.py --corpus-path ../shared/data/ravdess

Runs `kedro run --to-outputs=...` in a scratch copy of the project, so the repository's data/
is untouched, and reports clips per second and the peak memory of the whole process tree.
Run it twice to see the warm figure: the first run in a fresh environment also pays numba's
one-off compilation inside librosa.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from _harness import measured_kedro_run, scratch_project

OUTPUTS = "mfcc,lpcc,log_mel_spectrogram,rejected_clips"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus-path", default="../shared/data/ravdess")
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument("--workdir", help="scratch project folder (default: a new temp folder)")
    args = parser.parse_args()

    project = scratch_project({
        "corpora": ["bench"],
        "corpus_sources": {"bench": {"reader": args.reader,
                                     "path": str(Path(args.corpus_path).resolve())}},
        "n_jobs": args.n_jobs,
    }, args.workdir)
    figures = measured_kedro_run(project, f"--to-outputs={OUTPUTS}")
    manifest = pd.read_csv(project / "data/03_primary/clip_manifest.csv", dtype=str)
    clips = len(manifest)
    rejected = len(pd.read_csv(project / "data/03_primary/rejected_clips.csv"))
    print(f"corpus: {args.corpus_path} ({args.reader}), {clips} clips used, {rejected} rejected")
    print(f"emotions: {manifest['emotion'].value_counts().sort_index().to_dict()}")
    speakers = manifest.drop_duplicates("speaker")["gender"].value_counts(dropna=False).to_dict()
    print(f"speakers: {manifest['speaker'].nunique()} ({speakers})")
    print(f"kedro run (data_processing + feature_extraction): {figures['wall_s']:.1f} s wall "
          f"including start-up, {figures['pipeline_s']:.1f} s pipeline")
    print(f"throughput: {clips / figures['wall_s']:.0f} clips/s (wall), "
          f"{clips / figures['pipeline_s']:.0f} clips/s (pipeline)")
    for node, seconds in figures["node_s"].items():
        print(f"  {node:<32} {seconds:6.1f} s")
    print(f"peak memory (process tree PSS): {figures['peak_pss_mb']:.0f} MB")
    print(f"scratch project: {project}")


if __name__ == "__main__":
    main()

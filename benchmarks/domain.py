"""Recognition that carries over to other recordings: issue 28's benchmark on the RAVDESS and URDU
copies.

    python benchmarks/domain.py --ravdess ../shared/data/ravdess --urdu ../shared/data/urdu \
        --workdir /tmp/domain --features-from /tmp/evaluation /tmp/evaluation-cc

1. RAVDESS alone, speaker independent (6 folds of 4 actors), the classical variants as they are
   (egemaps_mfcc_lpcc, compare_egemaps_mfcc_lpcc), SVM: the share of RAVDESS test clips each model
   flags out of its training domain (corpus_scores.csv). Then `emofusion predict` with the default
   model (best on validation clips) on the URDU files, as they are and with `--same-domain`: the
   UAR of its answers over URDU's four emotions (all of them RAVDESS's too), and taking the most
   probable of those four; and the share of URDU files flagged out of domain (`in_domain`).
2. RAVDESS and URDU, leave one corpus out, the variants of evaluation.py standardised per corpus,
   SVM: each corpus's scores with their intervals, tested by models trained on the other corpus.

`--features-from` names workdirs of `benchmarks/evaluation.py` (its `ravdess` and `cross_corpus`
projects): their stored features and manifests are copied, not remade (openSMILE and the CNN take
most of an hour on RAVDESS), and only modelling runs. Without it each project makes its features.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from _harness import PROJECT, measured_kedro_run, scratch_project, write_section
from evaluation import BACKBONE, CORPUS_VARIANTS, URDU_SPEAKER

BASE_VARIANTS = yaml.safe_load((PROJECT / "conf/base/parameters_fusion.yml").read_text())["fusion_variants"]
# RAVDESS alone: the classical variants as they are.
KEPT = {variant: BASE_VARIANTS[variant] for variant in ("egemaps_mfcc_lpcc", "compare_egemaps_mfcc_lpcc")}
COPIED = ("02_intermediate", "03_primary", "04_feature", "05_model_input")  # features, not models


def only(variants: dict) -> dict:
    """`fusion_variants` of conf/local: these variants, every other one of conf/base switched off."""
    return {**dict.fromkeys(BASE_VARIANTS), **variants}


def project_with_features(name: str, local: dict, workdir: Path, sources: list[str]) -> Path:
    """A scratch project `workdir/name` with the stored features of the first source workdir that has
    project `name`, copied (never changed there)."""
    project = scratch_project(local, str(workdir / name))
    for source in sources:
        data = Path(source) / name / "data"
        if data.is_dir():
            for layer in COPIED:
                shutil.rmtree(project / "data" / layer, ignore_errors=True)
                shutil.copytree(data / layer, project / "data" / layer)
            return project
    return project


def predicted(project: Path, files: Path, *options: str) -> tuple[pd.DataFrame, str]:
    """`emofusion predict --format csv` on `files` in `project` with `options`: its table and stderr."""
    output = project / f"predictions{'_'.join(['', *options]).replace('-', '')}.csv"
    run = subprocess.run([sys.executable, "-m", "emofusion", "predict", "--format", "csv", "--output",
                          str(output), *options, str(files)], cwd=project, capture_output=True, text=True,
                         env=dict(os.environ, KEDRO_DISABLE_TELEMETRY="1"))
    if run.returncode:
        sys.exit(f"emofusion predict failed:\n{run.stderr[-3000:]}")
    return pd.read_csv(output), run.stderr


def recall_scores(table: pd.DataFrame) -> dict[str, float]:
    """UAR of the answers over the files' emotions (their folder), of the most probable of those
    emotions, and the share of files flagged out of domain."""
    truth = table["file"].map(lambda path: Path(path).parent.name.lower()).to_numpy()
    shared = sorted(set(truth))
    best_shared = np.asarray(shared)[table[[f"p_{emotion}" for emotion in shared]].to_numpy().argmax(axis=1)]

    def uar(answers: pd.Series | np.ndarray) -> float:
        answers = np.asarray(answers)
        return float(np.mean([(answers[truth == emotion] == emotion).mean() for emotion in shared]))

    return {"files": len(table), "uar": uar(table["emotion"]), "uar_shared": uar(best_shared),
            "out_of_domain": float(1 - table["in_domain"].astype(bool).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ravdess", default="../shared/data/ravdess")
    parser.add_argument("--urdu", default="../shared/data/urdu")
    parser.add_argument("--workdir", help="folder for the scratch projects (default: a new temp folder)")
    parser.add_argument("--features-from", nargs="*", default=[], metavar="WORKDIR",
                        help="workdirs of benchmarks/evaluation.py whose stored features to copy")
    parser.add_argument("--markdown", help="write the figures as a section of this page (docs/results.md)")
    parser.add_argument("--collect", action="store_true",
                        help="run nothing: write the figures from the workdir's domain_results.json")
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="emofusion-domain-"))
    if args.collect:
        report(json.loads((workdir / "domain_results.json").read_text()), args)
        return
    ravdess = {"ravdess": {"reader": "ravdess", "path": str(Path(args.ravdess).resolve())}}
    urdu = {"urdu": {"reader": "folder", "path": str(Path(args.urdu).resolve()),
                     "speaker_pattern": URDU_SPEAKER}}
    svm_only = {"classifiers": {"dnn": None}}
    results: dict = {}

    project = project_with_features("ravdess", {
        "corpora": ["ravdess"], "corpus_sources": ravdess, **BACKBONE, **svm_only,
        "split": {"strategy": "speaker_independent"}, "fusion_variants": only(KEPT)},
        workdir, args.features_from)
    run = measured_kedro_run(project, "--pipelines=modelling")
    (workdir / "ravdess.log").write_text(run.pop("log"))
    corpus = pd.read_csv(project / "data/08_reporting/corpus_scores.csv")
    summary = pd.read_csv(project / "data/08_reporting/model_summary.csv")
    default = f"{summary.loc[0, 'variant']}.{summary.loc[0, 'classifier']}"
    results["ravdess"] = {"modelling_s": run["wall_s"], "default_model": default,
                          "corpus_scores": corpus.to_dict(orient="records")}
    for name, options in (("as_they_are", ()), ("same_domain", ("--same-domain",))):
        table, stderr = predicted(project, Path(args.urdu).resolve(), "--model", default, *options)
        results["ravdess"][f"urdu_{name}"] = {**recall_scores(table), "stderr": stderr}

    project = project_with_features("cross_corpus", {
        "corpora": ["ravdess", "urdu"], "corpus_sources": {**ravdess, **urdu}, **BACKBONE, **svm_only,
        "split": {"strategy": "leave_one_corpus_out"}, "fusion_variants": only(CORPUS_VARIANTS)},
        workdir, args.features_from)
    run = measured_kedro_run(project, "--pipelines=fusion,modelling")
    (workdir / "leave_one_corpus_out.log").write_text(run.pop("log"))
    results["leave_one_corpus_out"] = {
        "modelling_s": run["wall_s"],
        "corpus_scores": pd.read_csv(project / "data/08_reporting/corpus_scores.csv").to_dict("records"),
        "answers": pd.read_csv(project / "data/08_reporting/model_answers.csv").to_dict(orient="records")}
    (workdir / "domain_results.json").write_text(json.dumps(results, indent=2, default=str))
    report(results, args)


def report(results: dict, args: argparse.Namespace) -> None:
    text = results_text(results, args)
    print(text)
    if args.markdown:
        write_section(Path(args.markdown), "domain", text)


def _interval(row: dict, score: str) -> str:
    return f"{row[score]:.3f} ({row[f'{score}_low']:.3f}–{row[f'{score}_high']:.3f})"


def results_text(results: dict, args: argparse.Namespace) -> str:
    ravdess = results["ravdess"]
    lines = ["## Recordings unlike the training corpus (issue 28)", "", "```bash",
             f"python benchmarks/domain.py --ravdess {args.ravdess} --urdu {args.urdu} "
             "--features-from <workdirs of benchmarks/evaluation.py>", "```", "",
             f"`kedro run --pipelines=modelling` took {ravdess['modelling_s']:.0f} s (RAVDESS) and "
             f"`--pipelines=fusion,modelling` {results['leave_one_corpus_out']['modelling_s']:.0f} s "
             "(leave one corpus out) on the 2-core machine, on stored features.", "",
             "RAVDESS alone, speaker independent (6 folds), SVM on the classical variants as they are. "
             "Share of RAVDESS test clips flagged out of their model's training domain:", ""]
    lines += [f"- {row['variant']}.{row['classifier']}: {100 * row['out_of_domain']:.1f}% of "
              f"{row['test_clips']} (test UAR {_interval(row, 'unweighted_average_recall')})"
              for row in ravdess["corpus_scores"]]
    lines += ["", f"`emofusion predict --model {ravdess['default_model']}` (the best on validation clips) "
              "on the URDU files:", "",
              "| | files | UAR of the answers | UAR, most probable of URDU's 4 emotions | flagged out of "
              "domain |", "| --- | --- | --- | --- | --- |"]
    for name, label in (("as_they_are", "as they are"), ("same_domain", "`--same-domain`")):
        scores = ravdess[f"urdu_{name}"]
        lines.append(f"| {label} | {scores['files']} | {scores['uar']:.3f} | {scores['uar_shared']:.3f} | "
                     f"{100 * scores['out_of_domain']:.1f}% |")
    lines += ["", "RAVDESS and URDU, leave one corpus out (each corpus tested by models trained on the "
              "other, on the 4 emotions both have), standardised per corpus, SVM:", "",
              "| model | test corpus | test clips | UAR (95% interval) | accuracy | flagged out of domain |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {row['variant']}.{row['classifier']} | {row['corpus']} | {row['test_clips']} | "
              f"{_interval(row, 'unweighted_average_recall')} | {row['accuracy']:.3f} | "
              f"{100 * row['out_of_domain']:.1f}% |"
              for row in results["leave_one_corpus_out"]["corpus_scores"]]
    default = next(row for row in ravdess["corpus_scores"]
                   if f"{row['variant']}.{row['classifier']}" == ravdess["default_model"])
    same_domain, as_they_are = ravdess["urdu_same_domain"], ravdess["urdu_as_they_are"]
    lines += ["", f"Against issue 28's targets: `--same-domain` {same_domain['uar_shared']:.3f} UAR over "
              f"the 4 shared emotions (target 0.50); URDU files flagged by the RAVDESS model "
              f"{100 * as_they_are['out_of_domain']:.1f}% (target at least 80%); its RAVDESS test clips "
              f"{100 * default['out_of_domain']:.1f}% (target at most 5%)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Fine-tune the CNN (C1, C2, C2 without augmentation), the LSTM and the late fusion of C2 with
MFCC+LPCC on a real corpus, beside the classical-only models, for each split strategy.

    nice -n 5 python benchmarks/fine_tuning.py --corpus-path ../shared/data/ravdess \\
        --workdir /tmp/ft-bench [--strategies random speaker_independent] [--models ...] \\
        [--params fine_tuning.defaults.epochs=20]

In a scratch copy of the project: makes the spectrograms and the classical variants' fused features
once, then per strategy makes the split, trains the classical models (`--classical`, by default
the MFCC, LPCC and MFCC+LPCC SVMs) and runs each `fine_tuning.<name>` namespace on its own,
measuring its wall time and the peak memory (PSS) of its process tree. Prints one table per
strategy (test scores) and the run figures.
"""

from __future__ import annotations

import argparse
import json

import pandas as pd
from _harness import measured_kedro_run, scratch_project
from modelling import summary_of

CLASSICAL = ["mfcc.svm", "lpcc.svm", "mfcc_lpcc.svm"]
MODELS = ["squeezenet_c1", "squeezenet_c2", "squeezenet_c2_plain", "lstm", "squeezenet_c2_mfcc_lpcc"]
SPLITS = {
    "random": "split.strategy=random",
    "speaker_independent": "split.strategy=speaker_independent,split.speaker_folds=6",
}
# C2 as configured, without Mixup and SpecAugment.
PLAIN = {
    "kind": "cnn",
    "backbone": "squeezenet_v1_1",
    "weights": "imagenet",
    "augmentation": {"mixup_alpha": 0.0, "time_masks": 0, "frequency_masks": 0, "time_shift": 0},
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--corpus-path", required=True)
    parser.add_argument("--reader", default="ravdess")
    parser.add_argument("--workdir", default=None, help="scratch project folder (reused: features are kept)")
    parser.add_argument("--strategies", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    parser.add_argument("--models", nargs="+", default=MODELS, help="fine_tuning entries to run, in order")
    parser.add_argument("--params", default="", help="extra `kedro run --params` for the fine-tuning runs")
    parser.add_argument("--classical", nargs="+", default=CLASSICAL, metavar="VARIANT.CLASSIFIER",
                        help="classical models trained on the same split, for reference")
    args = parser.parse_args()

    from kedro.config import OmegaConfigLoader

    from emofusion.settings import CONFIG_LOADER_ARGS  # the project's loader settings (and warning filters)

    base = OmegaConfigLoader("conf", **{**CONFIG_LOADER_ARGS, "default_run_env": "base"})["parameters"]
    c2 = base["fine_tuning"]["models"]["squeezenet_c2"]  # the plain C2 is derived from it
    local = {
        "corpora": ["bench"],
        "corpus_sources": {"bench": {"reader": args.reader, "path": args.corpus_path}},
        "fine_tuning": {
            "enabled": True,
            "models": {"squeezenet_c2_plain": {**PLAIN, "configuration": c2["configuration"]}},
        },
    }
    project = scratch_project(local, args.workdir)
    from emofusion.instances import fine_tuned_variant, fused_features_name
    from emofusion.run_spec import run_spec

    parameters = OmegaConfigLoader(str(project / "conf"), **CONFIG_LOADER_ARGS)["parameters"]
    spec = run_spec(parameters)
    entries = spec.fine_tuning  # checked, each merged over the defaults
    variants = {model.split(".")[0] for model in args.classical} | {
        entries[name]["variant"] for name in args.models if entries[name]["kind"] == "late_fusion"
    }
    # Everything the chosen models read, made once: spectrograms (standardised per speaker too, when
    # a network reads them so) and the fused features of the classical variants.
    inputs = sorted(spec.fine_tuned_inputs) + sorted(fused_features_name(v) for v in variants)
    results: dict = {"features": measured_kedro_run(project, "--to-outputs=" + ",".join(inputs))}
    for strategy in args.strategies:
        split = SPLITS[strategy]
        measured_kedro_run(project, "--nodes=split_clips", "--params", split)
        results[f"{strategy}/classical"] = measured_kedro_run(
            project, "--namespaces=" + ",".join(f"modelling.{m}" for m in args.classical), "--params", split
        )
        trained = list(args.classical)
        for name in args.models:
            params = ",".join(filter(None, [split, args.params]))
            figures = measured_kedro_run(project, f"--namespaces=fine_tuning.{name}", "--params", params)
            results[f"{strategy}/{name}"] = figures
            trained.append(f"{fine_tuned_variant(name, entries[name])}.{name}")
            print(
                f"{strategy} {name}: {figures['wall_s']:.0f} s wall, "
                f"peak {figures['peak_pss_mb']:.0f} MB PSS",
                flush=True,
            )
        table = summary_of(project, trained, strategy)
        runs = {name: results[f"{strategy}/{name}"] for name in args.models}
        for column, key in (("wall_s", "wall_s"), ("peak_mb", "peak_pss_mb")):
            table[column] = table["classifier"].map(
                lambda name, key=key, runs=runs: round(runs[name][key]) if name in runs else None
            )
        print(f"\n{strategy} split (classical models: {results[f'{strategy}/classical']['wall_s']:.0f} s)")
        print(table.drop(columns=["split"]).to_string(index=False, float_format="%.3f"))
        chosen = {}
        for model in trained:
            variant, name = model.split(".")
            scores = json.loads((project / f"data/08_reporting/metrics/{variant}/{name}.json").read_text())
            chosen[model] = [fold["chosen"] for fold in scores["model_selection"]]
        print(pd.Series(chosen).to_string())


if __name__ == "__main__":
    main()

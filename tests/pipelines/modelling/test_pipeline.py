"""modelling's pipeline: one namespace per variant and classifier, and one summary of them all."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from kedro.io import DataCatalog

from emofusion import hooks
from emofusion.errors import ClassifierConfigError
from emofusion.pipeline_registry import every_pipeline
from emofusion.pipelines.modelling import create_pipeline
from emofusion.run_spec import run_spec

PROJECT = Path(__file__).resolve().parents[3]


def test_one_namespaced_pipeline_per_variant_and_classifier(parameters):
    modelling = create_pipeline(run_spec(parameters))
    variants, classifiers = parameters["fusion_variants"], parameters["classifiers"]
    assert {"cnn", "mfcc_cnn", "lpcc_cnn", "mfcc_lpcc_cnn"} <= set(variants)
    assert {"svm", "dnn"} <= set(classifiers)
    for variant in variants:
        for classifier in classifiers:
            namespace = f"modelling.{variant}.{classifier}"
            nodes = {n.name: n for n in modelling.only_nodes_with_namespaces([namespace]).nodes}
            fit = nodes[f"{namespace}.fit_and_predict"]
            assert fit.inputs == [f"fusion.{variant}.fused_features", "data_split", "data_split_settings",
                                  f"params:classifiers.{classifier}", "params:reduction",
                                  "params:random_seed", f"params:fusion_variants.{variant}", "parameters",
                                  f"{namespace}.finished_folds"]
            assert fit.outputs == [f"{namespace}.trained_model", f"{namespace}.model_card",
                                   f"{namespace}.test_predictions"]
            evaluate = nodes[f"{namespace}.evaluate_predictions"]
            assert evaluate.outputs == [f"{namespace}.classification_metrics"]
    summary = next(n for n in modelling.nodes if n.name == "summarise_classification_metrics")
    # the variants' options, the split and its settings, the seed; each model's metrics and predictions
    assert len(summary.inputs) == 4 + 2 * len(variants) * len(classifiers)
    assert summary.outputs == ["model_summary", "model_answers"]
    assert {f"modelling.{v}.{c}.test_predictions" for v in variants for c in classifiers} <= set(
        summary.inputs)
    assert modelling.inputs() == {"clip_manifest", "params:split", "params:random_seed", "params:reduction",
                                  "params:evaluation",
                                  "params:fusion_variants", "parameters",
                                  *(f"params:classifiers.{c}" for c in classifiers),
                                  *(f"params:fusion_variants.{v}" for v in variants),
                                  *(f"fusion.{v}.fused_features" for v in variants),
                                  *(f"modelling.{v}.{c}.finished_folds"
                                    for v in variants for c in classifiers)}


EVERY_PIPELINE_BUILT = """
import json, sys
from pathlib import Path
import emofusion.settings
from emofusion.instances import pipeline_parameters
from emofusion.pipeline_registry import every_pipeline
from emofusion.run_spec import run_spec

every_pipeline(spec=run_spec(pipeline_parameters(Path.cwd())))
heavy = {"sklearn", "tensorflow", "keras", "scipy.stats"}
print(json.dumps(sorted(heavy & {*sys.modules, *(name.split(".")[0] for name in sys.modules)})))
"""


def test_the_settings_and_every_pipeline_are_built_without_scikit_learn_or_scipy_stats():
    """Every `kedro run` process builds every pipeline: one that fits no model (the per-clip
    stages) should not pay for scikit-learn's imports, nor scipy.stats's (a second between them)."""
    built = subprocess.run([sys.executable, "-c", EVERY_PIPELINE_BUILT], cwd=PROJECT, capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert json.loads(built.stdout.strip().splitlines()[-1]) == []


def test_classifier_options_are_checked_before_a_run_that_fits_models_only(parameters, monkeypatch):
    parameters["classifiers"]["svm"]["depth"] = 3
    spec = run_spec(parameters)  # parsed without the estimators: the option is not checked yet
    made = every_pipeline(spec=spec)
    monkeypatch.setattr(hooks, "pipeline_parameters", lambda: parameters)
    monkeypatch.setattr(hooks, "run_spec", lambda: spec)
    monkeypatch.setattr(hooks, "every_pipeline", lambda: made)
    with pytest.raises(ClassifierConfigError, match=r"svm does not take \['depth'\]"):
        hooks.StoredInputHooks().before_pipeline_run({}, made["modelling"], DataCatalog())
    hooks.StoredInputHooks().before_pipeline_run(
        {}, made["data_processing"].only_nodes("build_corpus_manifest"), DataCatalog())

"""modelling's pipeline: one namespace per variant and classifier, and one summary of them all."""

from emofusion.pipelines.modelling import create_pipeline
from emofusion.run_spec import run_spec


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

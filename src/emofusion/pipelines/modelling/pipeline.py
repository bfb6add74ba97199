from kedro.pipeline import Pipeline, node, pipeline

from emofusion.instances import dotted_dataset_names, fused_features_name, outputs_by_model
from emofusion.learning.evaluation import evaluation_node
from emofusion.learning.splits import split_clips
from emofusion.run_spec import RunSpec

from .nodes import (
    PREDICTIONS_KEY_SUFFIX,
    corpus_scores,
    fit_and_predict,
    summarise_classification_metrics,
)


def modelling_template() -> Pipeline:
    return Pipeline([
        node(fit_and_predict,
             inputs=["fused_features", "data_split", "data_split_settings", "params:classifier",
                     "params:reduction", "params:random_seed", "params:fusion_variant", "parameters",
                     "finished_folds"],
             outputs=["trained_model", "model_card", "test_predictions"], name="fit_and_predict"),
        evaluation_node(),
    ])


def create_pipeline(spec: RunSpec) -> Pipeline:
    """The shared split, `modelling.<variant>.<classifier>` for every fusion variant and every entry
    of `classifiers` in parameters_modelling.yml, and one summary table over all of them (which
    reads every model's test predictions, to compare models clip by clip), and every model's scores
    per test corpus."""
    summarised = spec.every_model
    with dotted_dataset_names():
        models = [pipeline(modelling_template(), namespace=f"modelling.{variant}.{classifier}",
                           inputs={"fused_features": fused_features_name(variant),
                                   "data_split": "data_split", "data_split_settings": "data_split_settings"},
                           parameters={"params:classifier": f"params:classifiers.{classifier}",
                                       "params:reduction": "params:reduction",
                                       "params:random_seed": "params:random_seed",
                                       "params:evaluation": "params:evaluation",
                                       "params:fusion_variant": f"params:fusion_variants.{variant}"})
                  for variant, classifier in spec.models]
    return Pipeline([
        node(split_clips, inputs=["clip_manifest", "params:split", "params:random_seed"],
             outputs=["data_split", "data_split_settings"], name="split_clips"),
        *models,
        node(summarise_classification_metrics,
             inputs={"fusion_variant_options": "params:fusion_variants", "data_split": "data_split",
                     "data_split_settings": "data_split_settings", "random_seed": "params:random_seed",
                     **outputs_by_model(summarised),
                     **outputs_by_model(summarised, "test_predictions", PREDICTIONS_KEY_SUFFIX)},
             outputs=["model_summary", "model_answers"], name="summarise_classification_metrics"),
        node(corpus_scores, inputs=outputs_by_model(summarised), outputs="corpus_scores",
             name="corpus_scores"),
    ])

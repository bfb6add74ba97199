import warnings

from kedro.pipeline import Pipeline, node, pipeline

from emofusion.configuration import pipeline_parameters
from emofusion.errors import ClassifierConfigError

from ..fine_tuning.config import fine_tuned_models
from ..fusion.nodes import validated_fusion_variants
from .classifiers import build_classifier, validated_reduction, validated_search
from .nodes import (
    PREDICTIONS_KEY_SUFFIX,
    evaluate_predictions,
    fit_and_predict,
    split_clips,
    summarise_classification_metrics,
)


def modelling_template() -> Pipeline:
    return Pipeline([
        node(fit_and_predict,
             inputs=["fused_features", "data_split", "data_split_settings", "params:classifier",
                     "params:reduction", "params:random_seed", "params:fusion_variant", "parameters"],
             outputs=["trained_model", "model_card", "test_predictions"], name="fit_and_predict"),
        node(evaluate_predictions, inputs=["test_predictions", "model_card"],
             outputs="classification_metrics", name="evaluate_predictions"),
    ])


def model_instances(parameters: dict) -> list[tuple[str, str]]:
    """(variant, classifier) for every fusion variant and every entry of `classifiers`, checked so
    that an unknown kind or option fails here, before anything runs.

    Entries set to null are left out, as in `validated_fusion_variants`: an environment merged
    into conf/base key by key switches off a classifier with `<classifier>: null`."""
    variants = validated_fusion_variants(parameters["fusion_variants"], parameters["block_weights"])
    classifiers = {name: settings for name, settings in parameters["classifiers"].items()
                   if settings is not None}
    streams = sorted(parameters["block_weights"])
    validated_reduction(parameters.get("reduction"), streams)
    for name, settings in classifiers.items():
        if not name.isidentifier() or "__" in name:
            raise ClassifierConfigError(f"classifier name '{name}' must be a Python identifier (letters, "
                                        "digits, single underscores): it becomes part of pipeline names")
        build_classifier(settings, 0)
        validated_search(settings, streams)
    return [(variant, classifier) for variant in variants for classifier in classifiers]


def every_model(parameters: dict) -> list[tuple[str, str]]:
    """Modelling's (variant, classifier) instances and the fine-tuned models, which write their
    outputs under the same names: the summary and the report cover them all alike."""
    return model_instances(parameters) + fine_tuned_models(parameters)


def outputs_by_model(instances: list[tuple[str, str]], output: str = "classification_metrics",
                     key_suffix: str = "") -> dict[str, str]:
    """`<variant>__<classifier><key_suffix>` -> that model's `output` dataset: the keyword inputs of
    nodes that read one output of every model (a suffix keeps two outputs apart in one node)."""
    return {f"{variant}__{classifier}{key_suffix}": f"modelling.{variant}.{classifier}.{output}"
            for variant, classifier in instances}


def create_pipeline(**kwargs) -> Pipeline:
    """The shared split, `modelling.<variant>.<classifier>` for every fusion variant and every entry
    of `classifiers` in parameters_modelling.yml, and one summary table over all of them (which
    reads every model's test predictions, to compare models clip by clip)."""
    parameters = kwargs.get("parameters") or pipeline_parameters()
    instances = model_instances(parameters)
    summarised = every_model(parameters)
    with warnings.catch_warnings():
        # The inputs are other namespaces' outputs, dotted as Kedro names them; Kedro warns about
        # any dotted name it did not make itself.
        warnings.filterwarnings("ignore", message="One or more dataset names contain '.'")
        models = [pipeline(modelling_template(), namespace=f"modelling.{variant}.{classifier}",
                           inputs={"fused_features": f"fusion.{variant}.fused_features",
                                   "data_split": "data_split", "data_split_settings": "data_split_settings"},
                           parameters={"params:classifier": f"params:classifiers.{classifier}",
                                       "params:reduction": "params:reduction",
                                       "params:random_seed": "params:random_seed",
                                       "params:fusion_variant": f"params:fusion_variants.{variant}"})
                  for variant, classifier in instances]
    return Pipeline([
        node(split_clips, inputs=["clip_manifest", "params:split", "params:random_seed"],
             outputs=["data_split", "data_split_settings"], name="split_clips"),
        *models,
        node(summarise_classification_metrics,
             inputs={"fusion_variants": "params:fusion_variants",
                     **outputs_by_model(summarised),
                     **outputs_by_model(summarised, "test_predictions", PREDICTIONS_KEY_SUFFIX)},
             outputs="model_summary", name="summarise_classification_metrics"),
    ])

from collections.abc import Mapping
from functools import partial
from typing import Any

from kedro.pipeline import Pipeline, node, pipeline

from emofusion.instances import dotted_dataset_names, fine_tuned_variant, fused_features_name, model_dataset
from emofusion.learning.evaluation import evaluation_node
from emofusion.learning.network_settings import LATE_FUSION, network_input
from emofusion.run_spec import RunSpec

from .nodes import fine_tune_and_predict, late_fuse_and_predict, training_curves_figure

MODEL_OUTPUTS = ("trained_model", "model_card", "test_predictions", "classification_metrics")


def network_template(settings: Mapping[str, Any]) -> Pipeline:
    """A network's node, with its entry as the run specification checked it (merged over the
    defaults, its backbone resolved): the node does not check it again."""
    return Pipeline(
        [
            node(
                partial(fine_tune_and_predict, settings=settings),
                inputs=["spectrograms", "data_split", "data_split_settings", "parameters", "finished_folds"],
                outputs=["trained_model", "model_card", "test_predictions", "held_out_predictions"],
                name="fine_tune_and_predict",
            ),
            evaluation_node(),
            node(
                training_curves_figure,
                inputs="model_card",
                outputs="training_curves",
                name="training_curves_figure",
            ),
        ]
    )


def late_fusion_template() -> Pipeline:
    return Pipeline(
        [
            node(
                late_fuse_and_predict,
                inputs=[
                    "fused_features",
                    "data_split",
                    "data_split_settings",
                    "network_model",
                    "network_card",
                    "network_held_out_predictions",
                    "params:entry",
                    "parameters",
                ],
                outputs=["trained_model", "model_card", "test_predictions"],
                name="late_fuse_and_predict",
            ),
            evaluation_node(),
        ]
    )


def create_pipeline(spec: RunSpec) -> Pipeline:
    """`fine_tuning.<name>` for every entry of `fine_tuning.models` in parameters_fine_tuning.yml:
    a network (cnn or lstm) fine-tuned per fold of the shared split, or the late fusion of such a
    network with a classical model of a fusion variant."""
    instances = []
    with dotted_dataset_names():
        for name, entry in spec.fine_tuning.items():
            variant = fine_tuned_variant(name, entry)
            own = {output: model_dataset(variant, name, output) for output in MODEL_OUTPUTS}
            if entry["kind"] != LATE_FUSION:
                instances.append(
                    pipeline(
                        network_template(entry),
                        namespace=f"fine_tuning.{name}",
                        inputs={
                            "spectrograms": network_input(entry),
                            "data_split": "data_split",
                            "data_split_settings": "data_split_settings",
                        },
                        outputs=own,
                        parameters={"params:random_seed": "params:random_seed",
                                    "params:evaluation": "params:evaluation"},
                    )
                )
                continue
            network = (entry["network_input"], entry["network"])
            instances.append(
                pipeline(
                    late_fusion_template(),
                    namespace=f"fine_tuning.{name}",
                    outputs=own,
                    inputs={
                        "fused_features": fused_features_name(entry["variant"]),
                        "data_split": "data_split",
                        "data_split_settings": "data_split_settings",
                        "network_model": model_dataset(*network, "trained_model"),
                        "network_card": model_dataset(*network, "model_card"),
                        # The network's validation and test predictions, layer `models`: read from
                        # its test predictions (`model_output`), a late model would make kedro-viz's
                        # layers a cycle, which it cannot draw.
                        "network_held_out_predictions": (
                            f"fine_tuning.{entry['network']}.held_out_predictions"
                        ),
                    },
                    parameters={
                        "params:entry": f"params:fine_tuning.models.{name}",
                        "params:random_seed": "params:random_seed",
                        "params:evaluation": "params:evaluation",
                    },
                )
            )
    return sum(instances, Pipeline([]))

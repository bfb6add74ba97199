from kedro.pipeline import Pipeline, node, pipeline

from emofusion.instances import dotted_dataset_names, outputs_by_model
from emofusion.run_spec import RunSpec

from .nodes import confusion_matrix_figure, html_report, model_comparison_figure, per_class_f1_figure


def create_pipeline(spec: RunSpec) -> Pipeline:
    """`reporting.<variant>.<classifier>` (its confusion matrix) for every model the modelling
    and fine_tuning pipelines train, the comparisons across them and the HTML report."""
    instances = spec.every_model
    metrics = outputs_by_model(instances)
    with dotted_dataset_names():
        confusion_matrices = [
            pipeline([node(confusion_matrix_figure, inputs="classification_metrics",
                           outputs="confusion_matrix", name="confusion_matrix_figure")],
                     namespace=f"reporting.{variant}.{classifier}",
                     inputs={"classification_metrics": metrics[f"{variant}__{classifier}"]})
            for variant, classifier in instances]
    return Pipeline([
        *confusion_matrices,
        node(model_comparison_figure, inputs="model_summary", outputs="model_comparison",
             name="model_comparison_figure"),
        node(per_class_f1_figure, inputs=metrics, outputs="per_class_f1", name="per_class_f1_figure"),
        node(html_report,
             inputs={"model_summary": "model_summary", "model_answers": "model_answers",
                     "corpus_scores": "corpus_scores",
                     "model_comparison": "model_comparison",
                     "per_class_f1": "per_class_f1", "clip_manifest": "clip_manifest",
                     "rejected_clips": "rejected_clips", "data_split": "data_split",
                     "data_split_settings": "data_split_settings", "classifiers": "params:classifiers",
                     "fusion_variants": "params:fusion_variants", "parameters": "parameters",
                     **{name: f"reporting.{variant}.{classifier}.confusion_matrix"
                        for name, (variant, classifier) in zip(metrics, instances, strict=True)}},
             outputs="html_report", name="html_report"),
    ])

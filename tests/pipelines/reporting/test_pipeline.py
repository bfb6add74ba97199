"""reporting's pipeline: a confusion matrix per model and one report of them all."""

from emofusion.pipelines.reporting import create_pipeline
from emofusion.run_spec import run_spec


def test_reporting_has_a_confusion_matrix_per_model_and_one_report_of_them_all(parameters):
    reporting = create_pipeline(run_spec(parameters))
    models = [f"{v}.{c}" for v in parameters["fusion_variants"] for c in parameters["classifiers"]]
    assert reporting.outputs() == {"html_report"}
    assert {f"modelling.{m}.classification_metrics" for m in models} <= reporting.inputs()
    report = next(n for n in reporting.nodes if n.name == "html_report")
    assert {f"reporting.{m}.confusion_matrix" for m in models} <= set(report.inputs)

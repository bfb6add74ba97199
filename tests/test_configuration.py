"""How environments merge into conf/base."""

from pathlib import Path

import pytest
import yaml

from emofusion import settings as project_settings
from emofusion.pipelines.fusion import create_pipeline as fusion_pipeline
from emofusion.pipelines.fusion.nodes import FusionConfigError, validated_fusion_variants
from emofusion.pipelines.modelling.pipeline import model_instances

WEIGHTS = {"mfcc": 1.0, "lpcc": 1.0, "transfer_features": 1.0}


def parameters_of(conf: Path, env: str) -> dict:
    """conf/base merged with conf/<env> as the project merges them (soft merge of parameters)."""
    loader = project_settings.CONFIG_LOADER_CLASS(conf_source=str(conf), env=env,
                                                  **project_settings.CONFIG_LOADER_ARGS)
    return loader["parameters"]


def write_parameters(folder: Path, parameters: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "parameters.yml").write_text(yaml.safe_dump(parameters))


def test_null_in_an_environment_switches_off_a_variant_or_classifier_of_base(tmp_path):
    write_parameters(tmp_path / "base", {
        "fusion_variants": {"mfcc": ["mfcc"], "mfcc_lpcc": ["mfcc", "lpcc"]}, "block_weights": WEIGHTS,
        "classifiers": {"svm": {"kind": "svm"}, "dnn": {"kind": "dnn"}}})
    write_parameters(tmp_path / "off", {"fusion_variants": {"mfcc_lpcc": None, "lpcc": ["lpcc"]},
                                        "classifiers": {"dnn": None}})
    parameters = parameters_of(tmp_path, "off")
    # The soft merge keeps base's keys and sets a null one to None: it neither deletes the key
    # nor keeps base's value.
    assert parameters["fusion_variants"] == {"mfcc": ["mfcc"], "mfcc_lpcc": None, "lpcc": ["lpcc"]}
    assert parameters["classifiers"] == {"svm": {"kind": "svm"}, "dnn": None}
    assert model_instances(parameters) == [("mfcc", "svm"), ("lpcc", "svm")]
    assert {node.namespace for node in fusion_pipeline(parameters=parameters).nodes} == {
        "fusion.mfcc", "fusion.lpcc"}

    with pytest.raises(FusionConfigError, match="all null"):
        validated_fusion_variants({"mfcc": None}, WEIGHTS)


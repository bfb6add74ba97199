"""How environments merge into conf/base, and conf/paper, the reference design."""

from pathlib import Path

import pytest
import yaml

from emofusion import settings as project_settings
from emofusion.errors import FusionConfigError
from emofusion.instances import validated_fusion_variants
from emofusion.pipelines.fusion import create_pipeline as fusion_pipeline
from emofusion.run_spec import run_spec

WEIGHTS = {"mfcc": 1.0, "lpcc": 1.0, "transfer_features": 1.0}
PAPER_VARIANTS = {"ir": ["transfer_features"], "mfcc_ir": ["mfcc", "transfer_features"],
                  "lpcc_ir": ["lpcc", "transfer_features"],
                  "mfcc_lpcc_ir": ["mfcc", "lpcc", "transfer_features"],
                  "mfcc": ["mfcc"], "lpcc": ["lpcc"], "mfcc_lpcc": ["mfcc", "lpcc"]}


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
    assert run_spec(parameters).models == [("mfcc", "svm"), ("lpcc", "svm")]
    assert {node.namespace for node in fusion_pipeline(run_spec(parameters)).nodes} == {
        "fusion.mfcc", "fusion.lpcc"}

    with pytest.raises(FusionConfigError, match="all null"):
        validated_fusion_variants({"mfcc": None}, WEIGHTS)


def test_the_paper_environment_is_the_reference_design(paper_parameters):
    parameters = paper_parameters
    # A variant or classifier conf/base gains must be set to null in conf/paper, or pinned there
    # when it is part of the reference.
    variants = validated_fusion_variants(parameters["fusion_variants"], parameters["block_weights"])
    assert {variant: layout["streams"] for variant, layout in variants.items()} == PAPER_VARIANTS
    assert {layout["fusion"] for layout in variants.values()} == {"early"}
    assert {name for name, settings in parameters["classifiers"].items() if settings is not None} == {
        "svm", "dnn"}
    assert {stream: parameters["block_weights"][stream] for stream in WEIGHTS} == WEIGHTS
    assert parameters["block_scaling"] == "standard"
    assert parameters["reduction"] is None
    pinned = ("strategy", "test_size", "validation_size", "repeats")
    assert {key: parameters["split"][key] for key in pinned} == {
        "strategy": "random", "test_size": 0.30, "validation_size": 0.15, "repeats": 1}
    # Every key of a classifier counts: one conf/base adds must be pinned in conf/paper too.
    assert parameters["classifiers"]["svm"] == {"kind": "svm", "kernel": "rbf", "C": 10.0, "gamma": "scale",
                                                "probability": True, "search": None,
                                                "exact_kernel_max_clips": 20000,
                                                "approximate_components": 1000,
                                                "kernel_matrix_min_columns": 512}
    assert parameters["classifiers"]["dnn"] == {
        "kind": "dnn", "layers": [{"units": 512, "dropout": 0.5}, {"units": 256}], "learning_rate": 0.001,
        "epochs": 100, "batch_size": 32, "patience": 10, "early_stopping_fraction": 0.15,
        "precision": "float32", "search": None}

    cnn = parameters["transfer_features"]
    assert (cnn["backbone"], cnn["weights"], cnn["offline_fallback"]) == (
        "inception_resnet_v2", "imagenet", "squeezenet_v1_1")
    backbones = parameters["backbones"]
    assert all(backbones[name]["layers"] is None for name in ("inception_resnet_v2", "squeezenet_v1_1"))
    assert {name: (backbones[name]["input_size"], backbones[name]["layer"], backbones[name]["pooling"])
            for name in ("inception_resnet_v2", "squeezenet_v1_1")} == {
        "inception_resnet_v2": ([299, 299], None, "none"), "squeezenet_v1_1": ([227, 227], None, "none")}
    assert (parameters["mfcc"]["n_mfcc"], parameters["lpcc"]["order"], parameters["lpcc"]["n_ceps"]) == (
        40, 12, 12)
    assert parameters["mfcc"]["statistics"] == parameters["lpcc"]["statistics"] == ["mean"]

"""Spectrogram images, the backbone registry, weights and the offline SqueezeNet."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from emofusion.clip_array import ClipArray
from emofusion.pipelines.transfer_features.backbones import build_backbone, load_backbone
from emofusion.pipelines.transfer_features.config import (
    TransferConfigError,
    backbone_spec,
    fingerprint,
    transfer_settings,
)
from emofusion.pipelines.transfer_features.images import extract_features, spectrogram_to_image
from emofusion.pipelines.transfer_features.squeezenet import SqueezeNetV1_1

CONFIG = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "conf/base/parameters_transfer_features.yml").read_text())
REGISTRY = CONFIG["backbones"]


def registry(**input_sizes: list[int]) -> dict:
    """The project's registry with some input sizes made small, to keep the tests fast."""
    return {name: dict(entry, input_size=input_sizes.get(name, entry["input_size"]))
            for name, entry in REGISTRY.items()}


def settings(backbones: dict | None = None, **changes):
    params = dict(CONFIG["transfer_features"], **changes)
    return transfer_settings(params, backbones or registry(), random_seed=3)


def test_spectrogram_image_is_float32_in_range_resized_with_three_equal_channels():
    rng = np.random.default_rng(0)
    spectrograms = (rng.uniform(-80, 0, size=(3, 128, 241))).astype(np.float16)
    images = spectrogram_to_image(spectrograms, (299, 299)).numpy()
    assert images.shape == (3, 299, 299, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert np.array_equal(images[..., 0], images[..., 1]) and np.array_equal(images[..., 0], images[..., 2])


def test_spectrogram_image_spans_minus_one_to_one_with_low_frequencies_at_the_bottom():
    # A ramp from quiet low mel bins to loud high ones: the top row is loudest, the bottom quietest.
    ramp = np.repeat(np.linspace(-80, 0, 128)[:, None], 241, axis=1)[None]
    image = spectrogram_to_image(ramp, (299, 32)).numpy()[0, :, :, 0]
    assert image[0] == pytest.approx(np.ones(32)) and image[-1] == pytest.approx(-np.ones(32))
    assert np.all(np.diff(image[:, 0]) < 0)
    # Each clip is scaled by its own range, so a louder copy gives the same image.
    assert np.allclose(spectrogram_to_image(ramp + 20, (299, 32)).numpy()[0, :, :, 0], image)


def test_inception_resnet_v2_without_pooling_gives_98304_values_per_clip():
    backbone = build_backbone(backbone_spec("inception_resnet_v2", REGISTRY), weights=None)
    assert backbone.feature_shape == (8, 8, 1536)
    features = extract_features(backbone, np.zeros((1, 128, 241), np.float16), 1, "float32")
    assert features.shape == (1, 98_304)


@pytest.mark.parametrize(("pooling", "width"), [("avg", 1280), ("max", 1280), ("none", 3 * 3 * 1280)])
def test_pooling_choices_set_the_width(pooling, width):
    entries = registry(mobilenet_v2=[96, 96])
    entries["mobilenet_v2"]["pooling"] = pooling
    backbone = build_backbone(backbone_spec("mobilenet_v2", entries), weights=None)
    features = extract_features(backbone, np.ones((3, 16, 20), np.float16), 2, "float16")
    assert features.shape == (3, width) and features.dtype == np.float16


def test_weights_from_a_local_file_reproduce_the_model_they_were_saved_from(tmp_path):
    entries = registry(mobilenet_v2=[96, 96])
    original = load_backbone(settings(backbone="mobilenet_v2", weights="none", backbones=entries))
    weights_file = tmp_path / "mobilenet.weights.h5"
    original.model.save_weights(weights_file)

    reloaded = load_backbone(settings(backbone="mobilenet_v2", weights=str(weights_file),
                                      backbones=entries))
    fresh = load_backbone(transfer_settings(
        dict(CONFIG["transfer_features"], backbone="mobilenet_v2", weights="none"), entries, 4))
    spectrograms = np.random.default_rng(1).uniform(-80, 0, (4, 32, 40)).astype(np.float16)
    expected = extract_features(original, spectrograms, 4, "float32")
    assert reloaded.provenance == {"weights": f"file {weights_file}", "pretrained": True}
    assert np.array_equal(extract_features(reloaded, spectrograms, 4, "float32"), expected)
    # A batch size that does not divide the clips pads the last batch; the padding is cut off.
    assert np.allclose(extract_features(reloaded, spectrograms, 3, "float32"), expected,
                       rtol=1e-4, atol=1e-5)
    assert not np.allclose(extract_features(fresh, spectrograms, 4, "float32"), expected, atol=0)


def test_squeezenet_imagenet_weights_recognise_a_cat():
    skimage = pytest.importorskip("skimage")
    from keras.applications.imagenet_utils import preprocess_input

    cat = skimage.transform.resize(skimage.data.chelsea(), (227, 227), anti_aliasing=True) * 255
    probabilities = SqueezeNetV1_1(weights="imagenet").predict(
        preprocess_input(cat[None].astype(np.float32)), verbose=0)[0]
    top5 = set(np.argsort(probabilities)[-5:])
    assert top5 & {281, 282, 283, 284, 285}  # ImageNet's domestic cats: tabby ... Egyptian cat
    assert probabilities[list(top5 & {281, 282, 283, 284, 285})].sum() > 0.5


@pytest.mark.parametrize(("changes", "message"), [
    ({"backbone": "alexnet"}, "Unknown backbone 'alexnet'. Known backbones: efficientnet_b0"),
    ({"offline_fallback": "lenet"}, "Unknown backbone 'lenet'"),
    ({"weights": "missing.weights.h5"}, "neither 'imagenet', 'none' nor an existing weights file"),
    ({"precision": "float8"}, "precision 'float8' is not one of float32, mixed_float16"),
    ({"output_dtype": "int8"}, "output_dtype 'int8' is not one of"),
    ({"batch_size": 0}, "batch_size must be a positive integer"),
])
def test_bad_settings_are_named(changes, message):
    with pytest.raises(TransferConfigError, match=message):
        settings(**changes)


def test_bad_registry_entries_are_named():
    entries = registry()
    entries["vgg16"]["pooling"] = "median"
    with pytest.raises(TransferConfigError, match="pooling 'median' is not one of none, avg, max"):
        backbone_spec("vgg16", entries)
    entries = registry(mobilenet_v2=[96, 96])
    entries["mobilenet_v2"]["layer"] = "no_such_layer"
    with pytest.raises(TransferConfigError, match="has no layer 'no_such_layer'"):
        build_backbone(backbone_spec("mobilenet_v2", entries), weights=None)


def test_random_weights_are_seeded_and_announced(caplog):
    entries = registry(mobilenet_v2=[96, 96])
    first = load_backbone(settings(backbone="mobilenet_v2", weights="none", backbones=entries))
    second = load_backbone(settings(backbone="mobilenet_v2", weights=None, backbones=entries))
    assert first.provenance["pretrained"] is False
    assert "RANDOM WEIGHTS" in caplog.text and "NOT pretrained" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(),
                                                     second.model.get_weights(), strict=True))


def test_fingerprint_follows_the_spectrograms_and_the_settings_that_shape_the_features():
    spectrograms = ClipArray(["a", "b"], np.zeros((2, 8, 10), np.float16))
    base = fingerprint(spectrograms, settings())
    assert fingerprint(spectrograms, settings(batch_size=3)) == base  # speed only
    changed = spectrograms.values.copy()
    changed[1, 4, 5] = -1
    assert fingerprint(ClipArray(["a", "b"], changed), settings()) != base
    assert fingerprint(ClipArray(["b", "a"], spectrograms.values), settings()) != base
    assert fingerprint(spectrograms, settings(output_dtype="float16")) != base
    assert fingerprint(spectrograms, settings(backbones=registry(inception_resnet_v2=[75, 75]))) != base

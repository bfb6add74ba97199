"""Spectrogram images, the backbone registry, weights and the offline SqueezeNet."""

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest

from emofusion.clip_array import ClipArray
from emofusion.errors import TransferConfigError
from emofusion.imagenet.backbones import (
    TimePooling,
    build_backbone,
    dtype_policy,
    load_backbone,
)
from emofusion.imagenet.config import backbone_spec, fingerprint, transfer_settings
from emofusion.imagenet.images import extract_features, spectrogram_to_image
from emofusion.pipelines.transfer_features.nodes import extract_transfer_features
from emofusion.pipelines.transfer_features.squeezenet import SqueezeNetV1_1


@pytest.fixture
def registry(parameters) -> Callable[..., dict]:
    """The project's registry with some input sizes made small, to keep the tests fast."""

    def registry(**input_sizes: list[int]) -> dict:
        return {name: dict(entry, input_size=input_sizes.get(name, entry["input_size"]))
                for name, entry in parameters["backbones"].items()}

    return registry


@pytest.fixture
def squeezenet_taps(registry) -> Callable[..., dict]:
    """The registry with SqueezeNet tapped at fire5 and fire9 (as conf/local would add `layers`)."""

    def squeezenet_taps(pooling: str, size: int = 227, **entry) -> dict:
        entries = registry(squeezenet_v1_1=[size, size])
        entries["squeezenet_v1_1"] |= {"layers": ["fire5_concat", "fire9_concat"], "pooling": pooling,
                                       **entry}
        return entries

    return squeezenet_taps


@pytest.fixture
def settings(parameters, registry) -> Callable[..., Any]:
    """The project's transfer_features settings with `changes`, checked."""

    def settings(backbones: dict | None = None, **changes):
        params = dict(parameters["transfer_features"], **changes)
        return transfer_settings(params, backbones or registry(), random_seed=3)

    return settings


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


def test_inception_resnet_v2_without_pooling_gives_98304_values_per_clip(parameters, registry):
    # The reference design's features (conf/paper): the last map, unpooled.
    entries = registry()
    entries["inception_resnet_v2"] |= {"layer": None, "layers": None, "pooling": "none"}
    backbone = build_backbone(backbone_spec("inception_resnet_v2", entries), weights=None)
    assert [(tap.layer, tap.shape, tap.width) for tap in backbone.taps] == [
        ("conv_7b_ac", (8, 8, 1536), 98_304)]
    features = extract_features(backbone, np.zeros((1, 128, 241), np.float16), 1, "float32")
    assert features.shape == (1, 98_304)
    # The default: two mid-level maps, their mean and standard deviation over time.
    default = build_backbone(backbone_spec("inception_resnet_v2", parameters["backbones"]), weights=None)
    assert [(tap.layer, tap.shape, tap.width) for tap in default.taps] == [
        ("mixed_5b", (35, 35, 320), 2 * 35 * 320), ("mixed_6a", (17, 17, 1088), 2 * 17 * 1088)]


@pytest.mark.parametrize(("pooling", "width"), [("avg", 1280), ("max", 1280), ("none", 3 * 3 * 1280),
                                               ("time", 3 * 1280), ("time_stats", 2 * 3 * 1280)])
def test_pooling_choices_set_the_width(pooling, width, registry):
    entries = registry(mobilenet_v2=[96, 96])
    entries["mobilenet_v2"]["pooling"] = pooling
    backbone = build_backbone(backbone_spec("mobilenet_v2", entries), weights=None)
    features = extract_features(backbone, np.ones((3, 16, 20), np.float16), 2, "float16")
    assert features.shape == (3, width) and features.dtype == np.float16


def test_time_pooling_averages_over_columns_then_appends_the_standard_deviations():
    maps = np.random.default_rng(2).normal(size=(2, 3, 5, 4)).astype(np.float32)  # batch, freq, time, ch
    means = maps.mean(axis=2).reshape(2, 3 * 4)  # frequency-major: row 0's channels, then row 1's...
    stds = maps.std(axis=2).reshape(2, 3 * 4)
    assert np.allclose(TimePooling()(maps), means, atol=1e-6)
    assert np.allclose(TimePooling(with_std=True)(maps), np.concatenate([means, stds], axis=1), atol=1e-6)


def test_time_pooling_of_a_map_constant_over_time_has_a_finite_gradient():
    # A dead ReLU channel is constant over time: sqrt's gradient at 0 would make fine-tuned weights NaN.
    import tensorflow as tf

    maps = tf.Variable(np.concatenate([np.zeros((1, 2, 4, 1)), np.arange(8.0).reshape(1, 2, 4, 1)], axis=3),
                       dtype=tf.float32)
    with tf.GradientTape() as tape:
        pooled = TimePooling(with_std=True)(maps)
        total = tf.reduce_sum(pooled)
    gradient = tape.gradient(total, maps).numpy()
    assert np.isfinite(gradient).all()
    assert np.allclose(pooled.numpy()[0, 4:], maps.numpy().std(axis=2).reshape(-1))  # stds of 0 stay 0


def test_time_pooling_runs_in_float32_under_a_mixed_policy():
    # Each row is 0 then 1000 over time: float16 squares of the deviations (250,000) would overflow.
    maps = np.zeros((1, 2, 2, 1), np.float16)
    maps[0, :, 1] = 1000
    with dtype_policy("mixed_float16"):
        pooled = TimePooling(with_std=True)(maps)
    assert pooled.dtype == "float32" and np.array_equal(pooled, [[500, 500, 500, 500]])


@pytest.mark.parametrize(("pooling", "widths"), [("time", (27 * 256, 13 * 512)),
                                                  ("time_stats", (2 * 27 * 256, 2 * 13 * 512))])
def test_squeezenet_tapped_at_two_fire_modules_concatenates_their_pooled_maps(pooling, widths,
                                                                              squeezenet_taps):
    backbone = build_backbone(backbone_spec("squeezenet_v1_1", squeezenet_taps(pooling)), weights=None)
    assert [(tap.layer, tap.shape, tap.width) for tap in backbone.taps] == [
        ("fire5_concat", (27, 27, 256), widths[0]), ("fire9_concat", (13, 13, 512), widths[1])]
    assert backbone.model.output_shape == (None, sum(widths))  # 13,568 averaged; 27,136 with stds


@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])
def test_tapped_maps_are_pooled_over_time_inside_the_model_in_the_order_of_layers(precision, squeezenet_taps):
    backbone = build_backbone(backbone_spec("squeezenet_v1_1", squeezenet_taps("time_stats", size=64)),
                              weights=None, precision=precision)
    probe = keras.Model(backbone.model.input, [backbone.model.get_layer(tap.layer).output
                                               for tap in backbone.taps])
    images = np.random.default_rng(3).uniform(-100, 100, (2, 64, 64, 3)).astype(np.float32)
    maps = [np.asarray(m, np.float32) for m in probe.predict_on_batch(images)]
    # Per tap, in the order of layers: all its means over time, then all its standard deviations.
    expected = np.concatenate([statistic(m, axis=2).reshape(2, -1) for m in maps
                               for statistic in (np.mean, np.std)], axis=1)
    features = backbone.model.predict_on_batch(images)
    assert features.dtype == np.float32 and features.shape == (2, 2 * (7 * 256 + 3 * 512))
    assert np.allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_weights_from_a_local_file_reproduce_the_model_they_were_saved_from(tmp_path, parameters, registry,
                                                                            settings):
    entries = registry(mobilenet_v2=[96, 96])
    original = load_backbone(settings(backbone="mobilenet_v2", weights="none", backbones=entries))
    weights_file = tmp_path / "mobilenet.weights.h5"
    original.model.save_weights(weights_file)

    reloaded = load_backbone(settings(backbone="mobilenet_v2", weights=str(weights_file),
                                      backbones=entries))
    fresh = load_backbone(transfer_settings(
        dict(parameters["transfer_features"], backbone="mobilenet_v2", weights="none"), entries, 4))
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
def test_bad_settings_are_named(changes, message, settings):
    with pytest.raises(TransferConfigError, match=message):
        settings(**changes)


def test_bad_registry_entries_are_named(registry):
    entries = registry()
    entries["vgg16"]["pooling"] = "median"
    with pytest.raises(TransferConfigError,
                       match="pooling 'median' is not one of none, avg, max, time, time_stats"):
        backbone_spec("vgg16", entries)
    entries = registry(mobilenet_v2=[96, 96])
    entries["mobilenet_v2"]["layer"] = "no_such_layer"
    with pytest.raises(TransferConfigError, match="has no layer 'no_such_layer'"):
        build_backbone(backbone_spec("mobilenet_v2", entries), weights=None)


@pytest.mark.parametrize(("entry", "message"), [
    ({"layer": "fire9_concat"}, r"sets both layer \('fire9_concat'\) and layers"),
    ({"layers": []}, r"layers must be a non-empty list of layer names, got \[\]"),
    ({"layers": "fire9_concat"}, "layers must be a non-empty list of layer names, got 'fire9_concat'"),
    ({"layers": ["fire5_concat", None]}, "layers must all be layer names"),
    ({"layers": ["fire9_concat", "fire9_concat"]}, "layers names fire9_concat more than once"),
    ({"layers": None, "layer": ["fire9_concat"]}, "layer must be a layer name or null"),
])
def test_bad_tapped_layers_are_named(entry, message, squeezenet_taps):
    with pytest.raises(TransferConfigError, match=f"Backbone 'squeezenet_v1_1'.*{message}"):
        backbone_spec("squeezenet_v1_1", squeezenet_taps("time", **entry))


def test_layer_and_layers_normalise_to_one_tuple(parameters, squeezenet_taps):
    def layers(**entry) -> tuple:
        return backbone_spec("squeezenet_v1_1", squeezenet_taps("time", **entry)).layers

    assert backbone_spec("squeezenet_v1_1", parameters["backbones"]).layers == (
        "fire3_concat", "fire5_concat")
    assert layers(layers=None) == (None,)  # layer: null, no layers: the network's output
    assert layers(layers=None, layer="fire5_concat") == ("fire5_concat",)
    # A null layer beside layers is unset: conf/local can add layers to an entry of conf/base.
    assert layers(layer=None) == ("fire5_concat", "fire9_concat")


def test_an_unknown_tapped_layer_is_named_with_close_names(squeezenet_taps):
    entries = squeezenet_taps("time", size=64, layers=["fire5_concat", "fire9_concatenate"])
    with pytest.raises(TransferConfigError, match="has no layer 'fire9_concatenate' "
                                                  r"\(close names: fire9_concat.*; its last layers: "):
        build_backbone(backbone_spec("squeezenet_v1_1", entries), weights=None)


def test_metadata_records_each_tap_before_and_after_pooling(caplog, parameters, squeezenet_taps):
    values = np.random.default_rng(4).uniform(-80, 0, (3, 16, 20)).astype(np.float16)
    params = dict(parameters["transfer_features"], backbone="squeezenet_v1_1", weights="none", batch_size=2)
    spectrograms = ClipArray(["a", "b", "c"], values, {"made_with": {"log_mel_spectrogram": {"n_mels": 16}}})
    taps = squeezenet_taps("time", size=64)
    with caplog.at_level("INFO"):
        features = extract_transfer_features(spectrograms, None, params, taps, random_seed=3)
    meta = features.metadata
    assert meta["taps"] == [
        {"layer": "fire5_concat", "shape": [7, 7, 256], "pooling": "time", "width": 7 * 256},
        {"layer": "fire9_concat", "shape": [3, 3, 512], "pooling": "time", "width": 3 * 512}]
    assert (meta["layer"], meta["feature_shape"], meta["pooling"], meta["width"]) == (
        "fire5_concat+fire9_concat", [[7, 7, 256], [3, 3, 512]], "time", 3_328)
    assert features.values.shape == (3, 3_328)
    assert ("layers fire5_concat (7x7x256 -> 1,792) + fire9_concat (3x3x512 -> 1,536) averaged over "
            "time: 3,328 values per clip") in caplog.text
    # What fusion checks against its run's parameters: the spectrograms' settings and these, but
    # not the batch size; the seed, as the weights are random.
    made_with = {f"transfer_features.{key}": value for key, value in params.items() if key != "batch_size"}
    assert meta["made_with"] == {"log_mel_spectrogram": {"n_mels": 16}, **made_with,
                                 "backbones.squeezenet_v1_1": taps["squeezenet_v1_1"], "random_seed": 3}
    # Reused as they are for the same settings spelled otherwise, which they now record.
    with caplog.at_level("INFO"):
        again = extract_transfer_features(spectrograms, features, dict(params, weights=None, batch_size=3),
                                          taps, random_seed=3)
    assert again.values is features.values and "reusing the stored" in caplog.text
    assert again.metadata["made_with"] == meta["made_with"] | {"transfer_features.weights": None}


def test_random_weights_are_seeded_and_announced(caplog, registry, settings):
    entries = registry(mobilenet_v2=[96, 96])
    first = load_backbone(settings(backbone="mobilenet_v2", weights="none", backbones=entries))
    second = load_backbone(settings(backbone="mobilenet_v2", weights=None, backbones=entries))
    assert first.provenance["pretrained"] is False
    assert "RANDOM WEIGHTS" in caplog.text and "NOT pretrained" in caplog.text
    assert all(np.array_equal(a, b) for a, b in zip(first.model.get_weights(),
                                                     second.model.get_weights(), strict=True))


def test_fingerprint_follows_the_spectrograms_and_the_settings_that_shape_the_features(
        registry, squeezenet_taps, settings):
    spectrograms = ClipArray(["a", "b"], np.zeros((2, 8, 10), np.float16))
    base = fingerprint(spectrograms, settings())
    assert fingerprint(spectrograms, settings(batch_size=3)) == base  # speed only
    changed = spectrograms.values.copy()
    changed[1, 4, 5] = -1
    assert fingerprint(ClipArray(["a", "b"], changed), settings()) != base
    assert fingerprint(ClipArray(["b", "a"], spectrograms.values), settings()) != base
    assert fingerprint(spectrograms, settings(output_dtype="float16")) != base
    assert fingerprint(spectrograms, settings(backbones=registry(inception_resnet_v2=[75, 75]))) != base

    def tapped(pooling: str, **entry) -> str:
        return fingerprint(spectrograms, settings(backbone="squeezenet_v1_1",
                                                  backbones=squeezenet_taps(pooling, **entry)))

    two_layers = tapped("time")
    assert len({two_layers, tapped("time_stats"), tapped("time", layers=["fire9_concat", "fire5_concat"]),
                tapped("time", layers=["fire9_concat"]), tapped("time", layers=None)}) == 5
    # The same tap written either way is the same setting.
    assert tapped("time", layers=None, layer="fire9_concat") == tapped("time", layers=["fire9_concat"])

"""Fine-tuning: augmentation of training batches only, Mixup and SpecAugment as specified, which
layers train, and the checks of the entries. The whole stage runs in tests/test_end_to_end.py."""

import copy
from collections.abc import Callable

import numpy as np
import pytest
import tensorflow as tf

from emofusion.errors import FineTuningConfigError, ImageNetWeightsUnavailable
from emofusion.learning.network_settings import model_entries
from emofusion.pipelines.fine_tuning import augmentation, networks

AUGMENTED = {
    "mixup_alpha": 0.4,
    "time_masks": 2,
    "time_mask_width": 10,
    "frequency_masks": 2,
    "frequency_mask_width": 6,
    "time_shift": 5,
}


@pytest.fixture
def base_parameters(parameters) -> dict:
    """The project's parameters with fine-tuning switched on."""
    parameters["fine_tuning"]["enabled"] = True
    return parameters


@pytest.fixture
def settings(base_parameters) -> Callable[..., dict]:
    """One entry's settings as model_entries checks them, with `changes` to the entry."""

    def settings(name: str = "squeezenet_c2", augmentation: dict | None = None, **changes) -> dict:
        parameters = copy.deepcopy(base_parameters)
        parameters["fine_tuning"]["models"] = {name: parameters["fine_tuning"]["models"][name] | changes}
        parameters["fine_tuning"]["defaults"]["augmentation"] = augmentation or AUGMENTED
        return model_entries(parameters)[name]

    return settings


def spectrograms(clips: int = 6, mels: int = 32, frames: int = 40) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (-80 * rng.random((clips, mels, frames))).astype(np.float16)


def test_validation_and_test_batches_are_never_augmented(settings, caplog):
    tuned = settings(augmentation=AUGMENTED)
    values = spectrograms()
    targets = np.eye(6, dtype=np.float32)
    evaluated = np.concatenate(
        [batch for batch, _ in networks.evaluation_batches(values, tuned, [48, 48], targets)]
    )
    plain = networks.network_inputs(tf.constant(values, tf.float32), tuned, [48, 48]).numpy()
    assert np.array_equal(evaluated, plain)  # validation batches: the clips as they are, in order
    predicted = np.concatenate(list(networks.evaluation_batches(values, tuned, [48, 48])))
    assert np.array_equal(predicted, plain)  # test and new clips alike
    trained = list(networks.training_batches(values, targets, tuned, [48, 48], seed=1))
    images = np.concatenate([batch for batch, _ in trained])
    labels = np.concatenate([labels for _, labels in trained])
    assert not any(np.allclose(image, original) for image in images for original in plain)
    assert not np.array_equal(labels, labels.round())  # mixed
    # Seeded: the same seed gives the same augmented batches.
    again = np.concatenate(
        [batch for batch, _ in networks.training_batches(values, targets, tuned, [48, 48], seed=1)]
    )
    assert np.array_equal(images, again)
    # The batch functions convert under AutoGraph without its page of warnings in the run's log.
    assert not [record for record in caplog.records if "AutoGraph" in record.getMessage()]


def test_mixup_labels_sum_to_one_and_mix_each_example_with_its_partner():
    batch = 16
    # Example i is the constant image i, labelled with class i: a mixed image's value says which
    # two examples were mixed and in which proportion, and its label must say the same.
    inputs = tf.constant(
        np.arange(batch, dtype=np.float32)[:, None, None, None] * np.ones((1, 4, 4, 3), np.float32)
    )
    targets = tf.eye(batch)
    mixed, labels = augmentation.mixup(inputs, targets, 0.4, tf.constant([3, 7]))
    mixed, labels = mixed.numpy(), labels.numpy()
    assert np.allclose(labels.sum(axis=1), 1.0)
    assert ((labels > 1e-6).sum(axis=1) <= 2).all()
    assert np.allclose(mixed[:, 0, 0, 0], labels @ np.arange(batch), atol=1e-4)
    assert np.allclose(mixed, mixed[:, :1, :1, :1])  # every pixel mixed alike
    for i in range(batch):  # each example keeps its own share
        assert labels[i, i] >= 0 and (labels[i, i] > 0 or (labels[i] > 0).sum() == 1)
    assert 0 < len(np.unique(labels.max(axis=1).round(4)))


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a 1-D mask."""
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return list(np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1))


def test_spec_augment_masks_bands_no_wider_than_configured_with_the_clip_floor():
    values = tf.constant(spectrograms(clips=64), tf.float32)
    one_each = {"time_masks": 1, "time_mask_width": 7, "frequency_masks": 1, "frequency_mask_width": 5}
    masked = augmentation.spec_augment(values, tf.constant([1, 2]), one_each).numpy()
    floor = values.numpy().min(axis=(1, 2))
    time_widths, frequency_widths = [], []
    for clip, floor_value in zip(masked, floor, strict=True):
        at_floor = clip == floor_value
        time_widths += _runs(at_floor.all(axis=0))
        frequency_widths += _runs(at_floor.all(axis=1))
    assert time_widths and max(time_widths) == 7 and all(1 <= w <= 7 for w in time_widths)
    assert frequency_widths and max(frequency_widths) == 5 and all(1 <= w <= 5 for w in frequency_widths)
    changed = masked != values.numpy()
    assert np.array_equal(changed, changed & (masked == floor[:, None, None]))  # only masking changed bins
    off = dict.fromkeys(one_each, 0)
    assert np.array_equal(augmentation.spec_augment(values, tf.constant([1, 2]), off).numpy(), values.numpy())


def test_time_shift_rolls_each_clip_by_at_most_the_configured_frames():
    values = tf.constant(np.tile(np.arange(40, dtype=np.float32), (8, 3, 1)))
    shifted = augmentation.time_shift(values, tf.constant([4, 2]), 5).numpy()
    for clip in shifted:
        shift = int(np.argmax(clip[0] == 0.0))
        assert min(shift, 40 - shift) <= 5 and np.array_equal(clip[0], np.roll(np.arange(40), shift))


@pytest.mark.parametrize("configuration", ["frozen", {"unfreeze": ["fire5"]}])
def test_after_a_step_unfrozen_layers_change_and_frozen_ones_do_not(configuration, settings):
    tuned = settings(configuration=configuration, weights="none")
    network, backbone_variables = networks.build_network(tuned, 4, "float32", [48, 48])
    model = networks.FineTuner(network, backbone_variables, tuned["backbone_learning_rate"])
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    before = {v.path: v.numpy().copy() for v in network.weights}
    images = networks.network_inputs(tf.constant(spectrograms(clips=8), tf.float32), tuned, [48, 48])
    model.train_on_batch(images, tf.one_hot(np.arange(8) % 4, 4))
    changed = {
        path
        for path, value in before.items()
        if not np.array_equal(value, next(v for v in network.weights if v.path == path).numpy())
    }
    backbone = {v.path for v in network.get_layer("squeezenet_v1_1_features").weights}
    assert changed - backbone == set(before) - backbone  # the new head trains
    if configuration == "frozen":
        assert not changed & backbone
    else:
        assert changed & backbone == {path for path in backbone if path.startswith("fire5")}
        assert changed & backbone == {v.path for v in backbone_variables}


def test_only_a_failed_download_is_reported_as_one_and_other_errors_come_through(settings, monkeypatch):
    tuned = settings(weights="imagenet")

    def wrong_shape(*args, **kwargs):
        raise ValueError("Input size must be at least 32x32")

    monkeypatch.setattr(networks, "build_backbone", wrong_shape)
    with pytest.raises(ValueError, match="Input size must be at least 32x32"):
        networks.build_network(tuned, 4, "float32", [16, 16])

    unavailable = ImageNetWeightsUnavailable("squeezenet_v1_1", "https://host/squeezenet.h5", "no network")

    def offline(*args, **kwargs):
        raise unavailable

    monkeypatch.setattr(networks, "build_backbone", offline)
    with pytest.raises(RuntimeError, match="cannot be downloaded here") as refused:
        networks.build_network(tuned, 4, "float32", [48, 48])
    assert refused.value.__cause__ is unavailable


def test_entries_are_checked_before_anything_runs(settings, base_parameters):
    with pytest.raises(FineTuningConfigError, match="configuration must be"):
        settings(configuration={"unfreeze": 0})
    with pytest.raises(FineTuningConfigError, match="kind 'svm' is not one of"):
        settings(kind="svm")
    with pytest.raises(FineTuningConfigError, match="image size"):
        settings(image_size=[16, 16])
    with pytest.raises(FineTuningConfigError, match="precision"):
        settings(precision="mixed_float16")
    # Nested settings are checked too: a misspelt key is named, not ignored.
    with pytest.raises(FineTuningConfigError, match="optimizer.learning_rat: Extra inputs are not permitted"):
        settings(optimizer={"learning_rat": 0.01})
    with pytest.raises(FineTuningConfigError, match=r"head.0.units: Input should be a valid integer"):
        settings(head=[{"units": 1.5}])
    progressive = settings(image_size=[{"size": [64, 64], "epochs": 2}, {"size": [64, 96], "epochs": 1}])
    assert progressive["stages"] == [{"size": [64, 64], "epochs": 2}, {"size": [64, 96], "epochs": 1}]
    with pytest.raises(FineTuningConfigError, match="may change only the width"):  # time_stats pooling
        settings(image_size=[{"size": [64, 64], "epochs": 2}, {"size": [96, 96], "epochs": 1}])
    parameters = base_parameters
    parameters["fine_tuning"]["models"]["squeezenet_c2_mfcc_lpcc"]["network"] = "nothing"
    with pytest.raises(FineTuningConfigError, match="network 'nothing'"):
        model_entries(parameters)

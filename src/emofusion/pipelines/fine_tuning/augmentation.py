"""Augmentation of training batches inside the tf.data pipeline (SpecAugment's masks, time shifts,
Mixup): every draw stateless, from the seed each batch is handed, so the same seed gives the same
run. Runs in the training process, like networks.py."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import tensorflow as tf


def split_seed(seed: tf.Tensor, n: int) -> tf.Tensor:
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n)


def band_mask(seed: tf.Tensor, batch: tf.Tensor, length: int, count: int, width: int) -> tf.Tensor:
    """(batch, length) booleans: `count` bands per row, each of a width drawn from 0..`width` at a
    start drawn uniformly where it fits (SpecAugment's masks)."""
    width = min(width, length)
    if count == 0 or width == 0:
        return tf.zeros((batch, length), tf.bool)
    seeds = split_seed(seed, 2)
    widths = tf.random.stateless_uniform((batch, count), seeds[0], 0, width + 1, dtype=tf.int32)
    starts = tf.cast(
        tf.floor(
            tf.random.stateless_uniform((batch, count), seeds[1]) * tf.cast(length - widths + 1, tf.float32)
        ),
        tf.int32,
    )
    position = tf.range(length)[tf.newaxis, tf.newaxis, :]
    inside = (position >= starts[..., tf.newaxis]) & (position < (starts + widths)[..., tf.newaxis])
    return tf.reduce_any(inside, axis=1)


def spec_augment(spectrograms: tf.Tensor, seed: tf.Tensor, augmentation: Mapping[str, Any]) -> tf.Tensor:
    """Time and frequency masks on (batch, mels, frames) spectrograms, masked bins set to each
    clip's floor (its quietest bin: silence, once drawn as an image)."""
    batch, mels, frames = tf.shape(spectrograms)[0], spectrograms.shape[1], spectrograms.shape[2]
    seeds = split_seed(seed, 2)
    time = band_mask(seeds[0], batch, frames, augmentation["time_masks"], augmentation["time_mask_width"])
    frequency = band_mask(
        seeds[1], batch, mels, augmentation["frequency_masks"], augmentation["frequency_mask_width"]
    )
    masked = time[:, tf.newaxis, :] | frequency[:, :, tf.newaxis]
    floor = tf.reduce_min(spectrograms, axis=[1, 2], keepdims=True)
    return tf.where(masked, floor, spectrograms)


def time_shift(spectrograms: tf.Tensor, seed: tf.Tensor, frames: int) -> tf.Tensor:
    """Each clip rolled in time by a whole number of frames drawn from -`frames`..`frames`."""
    if frames == 0:
        return spectrograms
    batch, length = tf.shape(spectrograms)[0], spectrograms.shape[2]
    shifts = tf.random.stateless_uniform(
        (batch,), tf.cast(seed, tf.int64), -frames, frames + 1, dtype=tf.int32
    )
    columns = tf.math.floormod(tf.range(length)[tf.newaxis, :] - shifts[:, tf.newaxis], length)
    return tf.gather(spectrograms, columns, axis=2, batch_dims=1)


def mixup(
    inputs: tf.Tensor, targets: tf.Tensor, alpha: float, seed: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Each example mixed with another of the batch (a seeded permutation) in proportion
    lambda ~ Beta(alpha, alpha), its one-hot targets mixed alike, so they still sum to 1."""
    batch = tf.shape(inputs)[0]
    seeds = split_seed(seed, 3)
    a = tf.random.stateless_gamma((batch,), seeds[0], alpha=alpha)
    b = tf.random.stateless_gamma((batch,), seeds[1], alpha=alpha)
    share = a / (a + b)
    partner = tf.argsort(tf.random.stateless_uniform((batch,), seeds[2]))
    shape = tf.concat([[batch], tf.ones([tf.rank(inputs) - 1], tf.int32)], axis=0)
    weight = tf.cast(tf.reshape(share, shape), inputs.dtype)
    mixed = weight * inputs + (1.0 - weight) * tf.gather(inputs, partner)
    share = share[:, tf.newaxis]
    return mixed, share * targets + (1.0 - share) * tf.gather(targets, partner)

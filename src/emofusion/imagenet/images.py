"""Spectrograms become CNN images batch by batch inside a tf.data pipeline, so only a few batches of
images (1 MB per clip at 299x299x3 float32) ever exist at once."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from .backbones import Backbone


def spectrogram_to_image(spectrograms: tf.Tensor | np.ndarray, input_size: tuple[int, int]
                         ) -> tf.Tensor:
    """(batch, mels, frames) -> (batch, height, width, 3) float32 in [-1, 1].

    Each spectrogram spans [-1, 1] from its quietest to its loudest bin, and is drawn as it is
    plotted: low frequencies at the bottom, time left to right. The grey image is repeated over the
    three channels that ImageNet networks expect."""
    x = tf.cast(spectrograms, tf.float32)
    low = tf.reduce_min(x, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(x, axis=[1, 2], keepdims=True)
    x = 2.0 * tf.math.divide_no_nan(x - low, high - low) - 1.0
    x = tf.reverse(x, axis=[1])[..., tf.newaxis]
    x = tf.image.resize(x, input_size, method="bilinear")
    return tf.repeat(tf.clip_by_value(x, -1.0, 1.0), 3, axis=-1)


def backbone_inputs(backbone: Backbone, spectrograms: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of images scaled as the backbone expects; conversion overlaps the forward pass.

    Every batch has `batch_size` rows, the last one padded with empty spectrograms, so the network
    runs on a single static shape: one trace, and XLA (used on GPUs) compiles once."""

    def batches() -> Iterator[np.ndarray]:
        for start in range(0, len(spectrograms), batch_size):
            batch = np.zeros((batch_size, *spectrograms.shape[1:]), dtype=np.float32)
            rows = spectrograms[start:start + batch_size]
            batch[:len(rows)] = rows
            yield batch

    def to_input(batch: tf.Tensor) -> tf.Tensor:
        pixels = 127.5 * (spectrogram_to_image(batch, backbone.spec.input_size) + 1.0)  # 0-255 RGB
        return backbone.preprocess_input(pixels)

    signature = tf.TensorSpec((batch_size, *spectrograms.shape[1:]), tf.float32)
    return (tf.data.Dataset.from_generator(batches, output_signature=signature)
            .map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            .prefetch(2))


def extract_features(backbone: Backbone, spectrograms: np.ndarray, batch_size: int,
                     output_dtype: str) -> np.ndarray:
    """(clips, width) features, written batch by batch into one preallocated array."""
    width = int(backbone.model.output_shape[-1])
    features = np.empty((len(spectrograms), width), dtype=output_dtype)
    done = 0
    with tqdm(total=len(spectrograms), unit="clip", desc=f"{backbone.spec.name} features") as progress:
        for batch in backbone_inputs(backbone, spectrograms, batch_size):
            # The same compiled path as model.predict, without its per-call data-adapter set-up.
            rows = backbone.model.predict_on_batch(batch)[:len(spectrograms) - done]
            features[done:done + len(rows)] = rows
            done += len(rows)
            progress.update(len(rows))
    return features


def compute_device() -> str:
    """What TensorFlow will run on: it takes a GPU by itself when one is visible."""
    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({', '.join(gpu.name for gpu in gpus)})" if gpus else "CPU"

"""TensorFlow side of fine-tuning: batches streamed from the spectrograms, augmentation of training
batches (augmentation.py), the networks, their training and their predictions.

This module runs in the training process (`run_in_training_process`), never in the Kedro process.
Spectrograms stay spectrograms until a batch is drawn: each batch is gathered, augmented (training
batches only), turned into images or frame sequences at the stage's size and handed to the network,
so no tensor of all images ever exists. Every random draw is stateless, from seeds that a seeded
`tf.data.Dataset.random` hands to each batch: the same seed gives the same run."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from emofusion.errors import ImageNetWeightsUnavailable
from emofusion.imagenet.backbones import TimePooling, build_backbone, dtype_policy, import_object
from emofusion.imagenet.config import BackboneSpec
from emofusion.imagenet.images import spectrogram_to_image

from .augmentation import mixup, spec_augment, split_seed, time_shift

logger = logging.getLogger(__name__)


def _dct_matrix(n_mels: int, n_mfcc: int) -> np.ndarray:
    """Orthonormal DCT-II over the mel axis, its first `n_mfcc` rows (librosa's MFCCs of a dB
    spectrogram): (n_mels, n_mfcc) to multiply frames by."""
    mel = np.arange(n_mels)
    basis = np.cos(np.pi / n_mels * (mel[None, :] + 0.5) * np.arange(n_mfcc)[:, None]) * np.sqrt(2.0 / n_mels)
    basis[0] /= np.sqrt(2.0)
    return basis.T.astype(np.float32)


# network_inputs runs inside tf.data functions, which AutoGraph converts; it cannot convert importlib
# and would log a page of warning on every run, so the import is called as it is.
_preprocessing = tf.autograph.experimental.do_not_convert(import_object)


def network_inputs(spectrograms: tf.Tensor, settings: Mapping[str, Any], size: list[int] | None) -> tf.Tensor:
    """A batch of spectrograms as the network takes it: images at `size`, scaled as the backbone
    expects (cnn), or frame sequences (lstm), each clip's features standardised over its frames."""
    if settings["kind"] == "cnn":
        pixels = 127.5 * (spectrogram_to_image(spectrograms, tuple(size)) + 1.0)  # 0-255 RGB
        return _preprocessing(settings["backbone"]["preprocess_input"])(pixels)
    frames = tf.transpose(tf.cast(spectrograms, tf.float32), [0, 2, 1])
    lstm = settings["lstm"]
    if lstm["features"] == "mfcc":
        frames = frames @ tf.constant(_dct_matrix(spectrograms.shape[1], lstm["n_mfcc"]))
    mean, variance = tf.nn.moments(frames, axes=[1], keepdims=True)
    return (frames - mean) / tf.sqrt(variance + 1e-6)


def training_batches(
    spectrograms: np.ndarray,
    targets: np.ndarray,
    settings: Mapping[str, Any],
    size: list[int] | None,
    seed: int,
) -> tf.data.Dataset:
    """Shuffled batches, each augmented as `settings['augmentation']` says: SpecAugment masks and a
    time shift on the spectrograms, then Mixup of the network inputs and their one-hot targets."""
    augmentation = settings["augmentation"]
    values, onehot = tf.constant(spectrograms), tf.constant(targets, tf.float32)

    def augment(rows: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        seeds = split_seed(seeds, 3)
        batch = tf.cast(tf.gather(values, rows), tf.float32)
        batch = time_shift(spec_augment(batch, seeds[0], augmentation), seeds[1], augmentation["time_shift"])
        inputs, labels = network_inputs(batch, settings, size), tf.gather(onehot, rows)
        if augmentation["mixup_alpha"] > 0:
            inputs, labels = mixup(inputs, labels, augmentation["mixup_alpha"], seeds[2])
        return inputs, labels

    order = (
        tf.data.Dataset.range(len(targets))
        .shuffle(len(targets), seed=seed, reshuffle_each_iteration=True)
        .batch(settings["batch_size"])
    )
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    return (
        tf.data.Dataset.zip(order, seeds)
        .map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(2)
    )


def evaluation_batches(
    spectrograms: np.ndarray,
    settings: Mapping[str, Any],
    size: list[int] | None,
    targets: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batches in order, never augmented: validation, test and new clips."""
    values = tf.constant(spectrograms)

    def convert(rows: tf.Tensor) -> tf.Tensor:
        return network_inputs(tf.cast(tf.gather(values, rows), tf.float32), settings, size)

    batches = tf.data.Dataset.range(len(spectrograms)).batch(settings["batch_size"])
    if targets is None:
        return batches.map(convert, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(2)
    onehot = tf.constant(targets, tf.float32)
    return batches.map(
        lambda rows: (convert(rows), tf.gather(onehot, rows)),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    ).prefetch(2)


def _on_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def resolved(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`auto` precision and jit_compile decided for this machine: bfloat16 and XLA on a GPU."""
    gpu = _on_gpu()
    precision = (
        settings["precision"] if settings["precision"] != "auto" else ("mixed_bfloat16" if gpu else "float32")
    )
    jit = settings["jit_compile"] if settings["jit_compile"] != "auto" else gpu
    return {"precision": precision, "jit_compile": bool(jit), "device": "GPU" if gpu else "CPU"}


def unfrozen_layers(base: keras.Model, unfreeze: int | list[str] | None) -> list[keras.layers.Layer]:
    """The backbone layers that train: none (C1), the last N, or those whose name starts with one
    of the given block names (C2). Batch normalisation layers never do: they stay in inference mode."""
    if unfreeze is None:
        return []
    if isinstance(unfreeze, int):
        chosen = base.layers[-unfreeze:]
    else:
        chosen = [layer for layer in base.layers if any(layer.name.startswith(block) for block in unfreeze)]
        missing = [
            block for block in unfreeze if not any(layer.name.startswith(block) for layer in base.layers)
        ]
        if missing:
            raise ValueError(
                f"backbone '{base.name}' has no layer whose name starts with {missing}; its layers "
                f"start: {sorted({layer.name.split('_')[0] for layer in base.layers})}"
            )
    return [
        layer for layer in chosen if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]


def build_network(
    settings: Mapping[str, Any], n_classes: int, precision: str, size: list[int] | None
) -> tuple[keras.Model, list[keras.Variable]]:
    """The network for images of `size`, and the backbone variables that train (at their own,
    lower learning rate).

    cnn: the registry's backbone as transfer_features builds it (its tapped layers, pooled as its
    entry says), then the head; lstm: an (optionally bidirectional) LSTM over the frames, then the
    head. The head starts with a batch normalisation of the pooled features, whose scales differ by
    orders of magnitude between networks and layers; its moving statistics follow the batches
    within an epoch (momentum 0.9: Keras's 0.99 lags them for many epochs, and validation losses
    were then far above training ones)."""
    backbone_variables: list[keras.Variable] = []
    with dtype_policy(precision):
        if settings["kind"] == "cnn":
            spec = BackboneSpec(
                **{
                    **settings["backbone"],
                    "input_size": tuple(size),
                    "layers": tuple(settings["backbone"]["layers"]),
                }
            )
            try:
                backbone = build_backbone(spec, settings["weights"], precision)
            except ImageNetWeightsUnavailable as error:
                # A RuntimeError, not the error itself: it crosses back from the training process,
                # and an exception whose __init__ takes other arguments than its message cannot.
                raise RuntimeError(
                    f"the ImageNet weights of backbone '{spec.name}' cannot be downloaded here "
                    f"({error.reason}). Without internet only squeezenet_v1_1 has ImageNet weights; others "
                    "need weights: none or a weights file"
                ) from error
            inputs = keras.Input((*size, 3), name="image")
            unfrozen = unfrozen_layers(backbone.model, settings["unfreeze"])
            if unfrozen:
                backbone.model.trainable = True
                for layer in backbone.model.layers:
                    layer.trainable = layer in unfrozen
                backbone_variables = [v for layer in unfrozen for v in layer.trainable_weights]
            # training=False: batch normalisation keeps its ImageNet statistics, also when unfrozen.
            x = backbone.model(inputs, training=False)
        else:
            lstm = settings["lstm"]
            width = lstm["n_mfcc"] if lstm["features"] == "mfcc" else None
            inputs = keras.Input((None, width), name="frames")
            recurrent = keras.layers.LSTM(lstm["units"], dropout=lstm["dropout"])
            x = (keras.layers.Bidirectional(recurrent) if lstm["bidirectional"] else recurrent)(inputs)
        x = keras.layers.BatchNormalization(momentum=0.9, name="head_scaling")(x)
        for layer in settings["head"]:
            x = keras.layers.Dense(int(layer["units"]), activation="relu")(x)
            if layer.get("dropout"):
                x = keras.layers.Dropout(float(layer["dropout"]))(x)
        outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"fine_tuned_{settings['kind']}"), backbone_variables


class FineTuner(keras.Model):
    """Trains `network` with Adam at the head's learning rate and, for the unfrozen backbone
    variables, a second Adam at their lower one (Keras optimizers have one rate for all)."""

    def __init__(
        self,
        network: keras.Model,
        backbone_variables: list[keras.Variable],
        backbone_learning_rate: float | None,
    ) -> None:
        super().__init__()
        self.network = network
        self._backbone = {id(v) for v in backbone_variables}
        self.backbone_optimizer = None
        if backbone_variables:
            self.backbone_optimizer = keras.optimizers.Adam(backbone_learning_rate)
            self.backbone_optimizer.build(backbone_variables)

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.network(inputs, training=training)

    def train_step(self, data: Any) -> dict[str, Any]:
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            predicted = self(inputs, training=True)
            loss = self.compute_loss(x=inputs, y=targets, y_pred=predicted, training=True)
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(inputs)[0])
        variables = self.trainable_weights
        gradients = tape.gradient(loss, variables)
        pairs = list(zip(gradients, variables, strict=True))
        self.optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) not in self._backbone])
        if self.backbone_optimizer is not None:
            self.backbone_optimizer.apply_gradients([(g, v) for g, v in pairs if id(v) in self._backbone])
        return self.compute_metrics(inputs, targets, predicted)


class EpochProgress(keras.callbacks.Callback):
    """A progress bar over each epoch's batches, and one log line per epoch."""

    def __init__(self, name: str, steps: int, epochs: int) -> None:
        super().__init__()
        self.name, self.steps, self.epochs = name, steps, epochs
        self.bar: Any = None

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        self.bar = tqdm(
            total=self.steps, unit="batch", leave=False, desc=f"{self.name} epoch {epoch + 1}/{self.epochs}"
        )

    def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
        self.bar.update(1)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        self.bar.close()
        logs = logs or {}
        logger.info(
            "%s epoch %d/%d: loss %.3f, accuracy %.3f, held-out loss %.3f, accuracy %.3f",
            self.name,
            epoch + 1,
            self.epochs,
            logs.get("loss", math.nan),
            logs.get("accuracy", math.nan),
            logs.get("val_loss", math.nan),
            logs.get("val_accuracy", math.nan),
        )


def train_network(
    settings: Mapping[str, Any],
    n_classes: int,
    train_path: Path,
    targets: np.ndarray,
    stopping_path: Path,
    stopping_targets: np.ndarray,
) -> dict[str, Any]:
    """Train stage after stage (progressive image sizes), each stopping early on the loss of the
    training clips held out for it (`stopping_path`) and keeping its best weights; returns the
    architecture (Keras JSON), the weights, the history per epoch (with the image size) and how it
    ran."""
    keras.backend.clear_session()
    seed = int(settings["random_seed"])
    keras.utils.set_random_seed(seed)
    how = resolved(settings)
    spectrograms, stopping = np.load(train_path), np.load(stopping_path)
    onehot = np.eye(n_classes, dtype=np.float32)
    steps = math.ceil(len(targets) / settings["batch_size"])
    epochs = sum(stage["epochs"] for stage in settings["stages"])
    label = settings["kind"] if settings["kind"] == "lstm" else settings["backbone"]["name"]
    history: dict[str, list[Any]] = {}
    network, done = None, 0
    for stage in settings["stages"]:
        # A stage of another image size is a new network of the same weights (pooled maps change shape).
        previous, (network, backbone_variables) = (
            network,
            build_network(settings, n_classes, how["precision"], stage["size"]),
        )
        if previous is not None:
            network.set_weights(previous.get_weights())
        model = _compiled(network, backbone_variables, settings, how)
        logger.info("Fine-tuning %s%s: %d backbone variables train at the backbone's rate; %d training "
                    "clips, %d held out to stop early; %s, jit_compile %s, on %s", label,
                    f" at {stage['size'][0]}x{stage['size'][1]}" if stage["size"] else "",
                    len(backbone_variables), len(targets), len(stopping_targets), how["precision"],
                    how["jit_compile"], how["device"])
        fitted = model.fit(
            training_batches(spectrograms, onehot[targets], settings, stage["size"], seed + done),
            validation_data=evaluation_batches(stopping, settings, stage["size"], onehot[stopping_targets]),
            initial_epoch=done,
            epochs=done + stage["epochs"],
            verbose=0,
            shuffle=False,  # shuffled above
            callbacks=[
                keras.callbacks.EarlyStopping(patience=settings["patience"], restore_best_weights=True),
                EpochProgress(label, steps, epochs),
            ],
        )
        for key, values in fitted.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        history.setdefault("image_size", []).extend([stage["size"]] * len(fitted.history["loss"]))
        done += stage["epochs"]
    return {"architecture": network.to_json(), "weights": network.get_weights(), "history": history,
            "ran_with": how}


def _compiled(network: keras.Model, backbone_variables: list[Any], settings: Mapping[str, Any],
              how: Mapping[str, Any]) -> FineTuner:
    """The network wrapped to train its backbone at the backbone's own rate, compiled."""
    model = FineTuner(network, backbone_variables, settings.get("backbone_learning_rate"))
    model.compile(
        optimizer=keras.optimizers.Adam(settings["learning_rate"]),
        loss="categorical_crossentropy",
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=how["jit_compile"],
    )
    return model


def predict_network(
    settings: Mapping[str, Any], architecture: str, weights: list[np.ndarray], spectrograms_path: Path
) -> np.ndarray:
    """Class probabilities of the trained network for these spectrograms, at the last stage's size."""
    network = keras.models.model_from_json(architecture, custom_objects={"TimePooling": TimePooling})
    network.set_weights(weights)
    size = settings["stages"][-1]["size"]
    batches = evaluation_batches(np.load(spectrograms_path), settings, size)
    return np.concatenate([np.asarray(network.predict_on_batch(batch), np.float32) for batch in batches])

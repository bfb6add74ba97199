"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from emofusion.hooks import MissingInputHooks, NodeTimingHooks

HOOKS = (NodeTimingHooks(), MissingInputHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/local/parameters*.yml may override single nested keys (e.g. one corpus path)
    # instead of replacing a whole top-level block.
    "merge_strategy": {"parameters": "soft"},
}

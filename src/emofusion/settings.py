"""Kedro project settings."""

from emofusion.configuration import ProjectConfigLoader, ProjectContext
from emofusion.configuration_files import CONF_SOURCE, CONFIG_LOADER_ARGUMENTS
from emofusion.hooks import (
    ExecutionHooks,
    NodeTimingHooks,
    RunLockHooks,
    StoredInputHooks,
    SummaryLastHooks,
)
from emofusion.tracking import TrackingHooks

# Kedro calls the last first: the run's lock is taken before its inputs are checked. TrackingHooks says
# itself when it acts: the MLflow run starts after the lock and the checks, and what the run made is
# recorded before the lock is given back and the summary printed. ExecutionHooks says it too: the
# run's engine opens before all of them, so that its workers start up while they run.
HOOKS = (ExecutionHooks(), NodeTimingHooks(), StoredInputHooks(), SummaryLastHooks(), RunLockHooks(),
         TrackingHooks())
# TrackingHooks drives kedro-mlflow's hook for this project: the plugin's own instance would open the
# store with every session (predict, viz) and write each node's parameters one by one.
DISABLE_HOOKS_FOR_PLUGINS = ("kedro_mlflow",)  # its distribution's name

# Builds the fusion and modelling pipelines from the session's environment (see configuration.py).
CONTEXT_CLASS = ProjectContext

CONF_SOURCE = CONF_SOURCE  # read before these settings too (emofusion.worker_server)
CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = CONFIG_LOADER_ARGUMENTS

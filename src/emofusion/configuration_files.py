"""How the project's configuration files are read and merged: the arguments of its config loader,
in a module of their own so that a `kedro run` can read its `execution` settings as its first step
(emofusion.worker_server), before Kedro imports the project's settings (settings.py uses them too)."""

import warnings

# Kedro 1.7's own configuration loader calls OmegaConf's deprecated register_new_resolver for every
# resolver, a warning per resolver per session: not ours to fix, and forty lines of every log.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

CONF_SOURCE = "conf"  # Kedro's default, relative to the project folder

CONFIG_LOADER_ARGUMENTS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/local/parameters*.yml may override single nested keys (e.g. one corpus path)
    # instead of replacing a whole top-level block.
    "merge_strategy": {"parameters": "soft"},
    # kedro-mlflow's settings: where runs are recorded (conf/base/mlflow.yml, conf/local/mlflow.yml).
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**"]},
}

"""EmoFusion: speech emotion recognition by fusing CNN features of spectrograms with MFCC and LPCC."""

import os

__version__ = "0.1.0"

# MLflow reads these when it is first imported, which kedro-mlflow's commands do before the project's
# settings are read; every command imports this package first. No telemetry: MLflow would otherwise
# send usage records from a thread it starts on import. MLflow's loggers are left to conf/logging.yml,
# which keeps them at WARNING, and its progress bars for the few small files a run logs are off. Set
# a variable yourself to have MLflow's own behaviour back.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

"""Training settings, as the training side imports them.

The model itself lives in :mod:`store.train_settings`, because the server's fine-tuning API builds
the same settings from a job's hyperparameters and the service never imports ``training``.
"""

from store.setting_checks import ConfigError, TrainingError
from store.train_settings import (
    LINEAR_MODULES,
    RESUME_FREE,
    TrainConfig,
    check_training,
    example_keys,
    flag_name,
    machine_threads,
    setting_type,
)

__all__ = [
    "ConfigError",
    "LINEAR_MODULES",
    "RESUME_FREE",
    "TrainConfig",
    "TrainingError",
    "check_training",
    "example_keys",
    "flag_name",
    "machine_threads",
    "setting_type",
]

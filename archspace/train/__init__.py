"""Training one trial: recipe, optimizer groups and schedule, the loop, checkpoints."""

from .config import TrainConfig, load_config
from .loop import STATUSES, Trainer, TrainResult, train
from .optim import lr_at, no_decay_names, param_groups

__all__ = ["STATUSES", "TrainConfig", "TrainResult", "Trainer", "load_config", "lr_at", "no_decay_names", "param_groups", "train"]

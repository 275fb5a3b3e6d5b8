"""Training one trial: recipe, optimizer groups and schedule, the loop, checkpoints.

The recipe (:mod:`.config`) imports without torch; the loop and the optimizer (which need
torch) are imported on first use of their names.
"""

from .._lazy import lazy
from .config import TrainConfig, load_config

__getattr__, __dir__ = lazy(__name__, globals(), {
    "STATUSES": ".loop:STATUSES", "Trainer": ".loop:Trainer", "TrainResult": ".loop:TrainResult",
    "train": ".loop:train", "lr_at": ".optim:lr_at", "no_decay_names": ".optim:no_decay_names",
    "param_groups": ".optim:param_groups"})

__all__ = ["STATUSES", "TrainConfig", "TrainResult", "Trainer", "load_config", "lr_at", "no_decay_names", "param_groups", "train"]

"""The training engine (see :mod:`tflth.training.trainer`)."""

from tflth.training.checkpoint import CheckpointError
from tflth.training.optimizers import make_optimizer
from tflth.training.schedule import StepSchedule
from tflth.training.strategy import DISTRIBUTION_STRATEGIES, get_strategy, is_chief
from tflth.training.trainer import Trainer, TrainingDiverged, TrainResult

__all__ = ["CheckpointError", "StepSchedule", "make_optimizer", "DISTRIBUTION_STRATEGIES", "get_strategy", "is_chief",
           "Trainer", "TrainingDiverged", "TrainResult"]

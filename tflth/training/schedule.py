"""Learning-rate schedule: milestones × gamma, linear warmup."""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["StepSchedule"]


@keras.saving.register_keras_serializable(package="tflth")
class StepSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``lr · gamma^(#milestones ≤ step) · min(1, (step + 1) / warmup)``.

    Keras optimizers evaluate the schedule at ``optimizer.iterations`` before each
    update, so restoring ``iterations`` (a checkpoint) restores the schedule position.
    """

    def __init__(self, lr: float, milestones=(), gamma: float = 0.1, warmup_steps: int = 0):
        self.lr = float(lr)
        self.milestones = tuple(int(m) for m in milestones)
        self.gamma = float(gamma)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.lr, tf.float32)
        for m in self.milestones:
            lr = tf.where(step >= m, lr * self.gamma, lr)
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step + 1.0) / self.warmup_steps)
        return lr

    def value_at(self, step: int) -> float:
        """The rate used for the update at ``step`` (plain Python)."""
        lr = self.lr * self.gamma ** sum(step >= m for m in self.milestones)
        if self.warmup_steps > 0:
            lr *= min(1.0, (step + 1) / self.warmup_steps)
        return lr

    def get_config(self):
        return {"lr": self.lr, "milestones": list(self.milestones), "gamma": self.gamma,
                "warmup_steps": self.warmup_steps}

"""The optimizers of the training loop: Keras's, with Adam made to leave pruned weights at zero.

Adam's step for a weight is ``lr_t · m / (sqrt(v) + epsilon)``. :class:`Adam` and
:class:`AdamW` multiply the step of each kernel of a masked layer by the layer's mask
(:meth:`PrunedStayZero.track_masks`) as it is subtracted: a pruned entry's step is zero
exactly, whatever its gradient and optimizer history, and a surviving entry gets the step
Keras computes, bit for bit (``x · 1 = x``); decoupled weight decay (AdamW) shrinks a zero
to zero. A pruned weight that is zero so stays zero without a separate pass over the
kernel: the mask rides on the subtraction Adam does anyway, and the training loop can
feed kernels to the forward pass without multiplying them by their masks
(:func:`tflth.layers.masking_deferred`). The step reads the mask variables themselves, so
a mask set between training runs takes effect with nothing to synchronise; the optimizer's
state is exactly Keras's.

SGD's step (``lr · g``, with or without momentum) is taken by Keras's own update, which
has no mask hook here, so under SGD the loop masks in the forward pass instead.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tflth.hparams import TrainingHparams
from tflth.training.schedule import StepSchedule

__all__ = ["PrunedStayZero", "Adam", "AdamW", "make_optimizer"]


class PrunedStayZero:
    """Mixin for Keras Adam-family optimizers; see the module docstring."""

    _masks: dict | None = None  # optimizer variable index -> mask variable
    _step_mask = None  # (kernel, mask) while the kernel's update step is traced

    def track_masks(self, kernels_and_masks) -> None:
        """``[(kernel, mask variable)]``: from now on each kernel's step is multiplied by its
        mask (0/1, the kernel's shape), read when the step runs.

        Call after ``build``, before the training step is traced.
        """
        self._masks = {self._get_variable_index(kernel): mask for kernel, mask in kernels_and_masks}

    def update_step(self, gradient, variable, learning_rate):
        mask = (self._masks or {}).get(self._get_variable_index(variable))
        if mask is None:
            return super().update_step(gradient, variable, learning_rate)
        self._step_mask = (variable, mask)
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            self._step_mask = None

    def assign_sub(self, variable, value):
        if self._step_mask is not None and variable is self._step_mask[0]:
            value = value * tf.cast(self._step_mask[1], value.dtype)  # Adam's only write to the kernel
        return super().assign_sub(variable, value)


class Adam(PrunedStayZero, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose step of a pruned kernel entry is exactly zero."""


class AdamW(PrunedStayZero, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` whose step of a pruned kernel entry is exactly zero."""


def make_optimizer(hp: TrainingHparams, schedule: StepSchedule) -> keras.optimizers.Optimizer:
    """The optimizer for ``hp`` (coupled weight decay is added by the train step)."""
    if hp.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=hp.momentum, nesterov=hp.nesterov)
    if hp.optimizer == "adam":
        return Adam(schedule, epsilon=1e-8)
    if hp.optimizer == "adamw":
        return AdamW(schedule, weight_decay=hp.weight_decay, epsilon=1e-8)
    raise ValueError(f"Unknown optimizer '{hp.optimizer}'.")

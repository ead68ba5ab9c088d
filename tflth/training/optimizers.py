"""The optimizers of the training loop: Keras's, with Adam made to leave pruned weights at zero.

Adam's step for a weight is ``lr_t · m / (sqrt(v) + epsilon)``. :class:`Adam` and
:class:`AdamW` hold, for each kernel of a masked layer, an epsilon *tensor*: ``epsilon``
at surviving entries and ``+inf`` at pruned ones (:meth:`PrunedStayZero.set_masks`).
The step of a pruned entry is then ``m / inf = 0`` exactly, whatever its gradient and
optimizer history, while a surviving entry gets the step Keras computes, bit for bit;
decoupled weight decay (AdamW) shrinks a zero to zero. A pruned weight that is zero so
stays zero without a pass over the kernel: the mask rides on an elementwise operation
Adam does anyway, and the training loop can feed kernels to the forward pass without
multiplying them by their masks (:func:`tflth.layers.masking_deferred`). The epsilon
tensors are not optimizer variables: checkpoints hold exactly Keras's optimizer state.
(Multiplying the step by the mask instead, tried and measured side by side: 4-8 % of a
LeNet-300-100 step at batch 60, where this costs 0-2 %, two more graph ops per kernel
per step on a step of about 1 ms; on Conv-2 both cost about 4 %.)

SGD's step (``lr · g``, with or without momentum) has no constant factor to carry the
mask, so under SGD the loop masks in the forward pass instead.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tflth.hparams import TrainingHparams
from tflth.training.schedule import StepSchedule

__all__ = ["PrunedStayZero", "Adam", "AdamW", "make_optimizer"]


class PrunedStayZero:
    """Mixin for Keras Adam-family optimizers; see the module docstring."""

    _pruned_epsilon: dict | None = None  # optimizer variable index -> epsilon tensor

    def track_masks(self, kernels) -> None:
        """Create the epsilon tensors of ``kernels`` (all entries surviving), once.

        Call inside the distribution strategy's scope, after ``build``, before the
        training step is traced: the step reads these tensors, :meth:`set_masks` changes
        their values.
        """
        self._pruned_epsilon = {
            self._get_variable_index(k): tf.Variable(
                tf.fill(tuple(k.shape), tf.cast(self.epsilon, k.dtype)), trainable=False,
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA, name="pruned_epsilon")
            for k in kernels
        }

    def set_masks(self, masks) -> None:
        """``[(kernel, mask)]``, masks of 0/1: epsilon where 1, ``+inf`` where 0.

        Call in cross-replica context (between training rounds); it can be traced.
        """
        for kernel, mask in masks:
            eps = self._pruned_epsilon[self._get_variable_index(kernel)]
            eps.assign(tf.where(tf.convert_to_tensor(mask) != 0, tf.cast(self.epsilon, eps.dtype),
                                tf.constant(np.inf, eps.dtype)))

    def update_step(self, gradient, variable, learning_rate):
        eps = (self._pruned_epsilon or {}).get(self._get_variable_index(variable))
        if eps is None:
            return super().update_step(gradient, variable, learning_rate)
        scalar = self.epsilon
        self.epsilon = eps  # Keras's Adam step adds self.epsilon to sqrt(v)
        try:
            return super().update_step(gradient, variable, learning_rate)
        finally:
            self.epsilon = scalar


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

"""The optimizers of the training loop: Keras's, with Adam made to leave pruned weights at zero.

Adam's step for a weight is ``lr_t · m / (sqrt(v) + epsilon)``. :class:`Adam` and
:class:`AdamW` use, for each kernel of a masked layer, an epsilon *tensor*: ``epsilon`` at
surviving entries and ``+inf`` at pruned ones (:meth:`PrunedStayZero.set_masks`). The
step of a pruned entry is then ``m / inf = 0`` exactly, whatever its gradient and
optimizer history, while a surviving entry gets the step Keras computes, bit for bit;
decoupled weight decay (AdamW) shrinks a zero to zero. A pruned weight that is zero so
stays zero without a pass over the kernel: the mask rides on an elementwise operation
Adam does anyway, and the training loop can feed kernels to the forward pass without
multiplying them by their masks (:func:`tflth.masking.constraints_paused`). The epsilon
tensors are not optimizer variables (checkpoints hold exactly Keras's optimizer state).

The training step takes them as *arguments* of its ``tf.function``
(:meth:`PrunedStayZero.pruned_epsilon` while it is traced, :attr:`epsilon_values` when it
is called): measured side by side on Conv-2, reading them from variables inside the step
cost 5-8 % of the step, as arguments about 1 %. Multiplying the step by the mask (a
variable read plus a multiply) cost 4-8 % on LeNet-300-100.

SGD's step (``lr · g``, with or without momentum) has no constant factor to carry the
mask, so under SGD the loop masks in the forward pass instead.

A fresh optimizer at step k (:class:`StartStep`, the lottery's ``rewind_optimizer=fresh``):
the step counter ``iterations`` is the training step (the learning-rate schedule's
position, the data position, the checkpoint's step), while Adam's bias correction
counts the steps this optimizer has taken since its slots were zeroed. :class:`Adam`
and :class:`AdamW` keep that start in :attr:`StartStep.start_step` (a variable, read by
the traced step; not an optimizer variable, so checkpoints hold exactly Keras's
optimizer state and the trainer keeps it among a checkpoint's extras). With
``start_step = 0`` their steps are Keras's, bit for bit. SGD has no bias correction: its
zeroed momentum *is* a fresh optimizer.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import tensorflow as tf

from tflth import _keras
from tflth.hparams import TrainingHparams
from tflth.training.schedule import StepSchedule

__all__ = ["PrunedStayZero", "StartStep", "Adam", "AdamW", "make_optimizer", "get_start_step", "set_start_step"]


class PrunedStayZero:
    """Mixin for Keras Adam-family optimizers; see the module docstring."""

    _tracked: tuple = ()  # (optimizer variable index, dtype) of the masked kernels, in order
    _pruned_epsilon: dict | None = None  # while a step is traced: variable index -> epsilon tensor
    epsilon_values: tuple = ()  # the epsilon tensors of the current masks (none: scalar epsilon)

    def track_masks(self, kernels) -> None:
        """Give ``kernels`` per-entry epsilons once :meth:`set_masks` is called (until
        then their steps use the scalar epsilon: every entry survives).

        Call after ``build``, before the training step is traced.
        """
        self._tracked = tuple((_keras.optimizer_variable_index(self, k), tf.as_dtype(k.dtype)) for k in kernels)

    def set_masks(self, masks) -> None:
        """``[mask]`` (0/1, one per tracked kernel, in order): epsilon where 1, ``+inf`` where 0.

        Eager; the next call of the training step gets the new :attr:`epsilon_values`.
        """
        masks = list(masks)
        if len(masks) != len(self._tracked):
            raise ValueError(f"Expected {len(self._tracked)} masks (one per tracked kernel), got {len(masks)}.")
        self.epsilon_values = tuple(
            tf.where(tf.convert_to_tensor(m) != 0, tf.cast(self.epsilon, dtype), tf.constant(np.inf, dtype))
            for m, (_, dtype) in zip(masks, self._tracked))

    @contextlib.contextmanager
    def pruned_epsilon(self, tensors):
        """While a training step is traced: its update of each tracked kernel adds
        ``tensors[i]`` (arguments of the traced function) instead of the scalar epsilon."""
        self._pruned_epsilon = {index: eps for (index, _), eps in zip(self._tracked, tensors)}
        try:
            yield
        finally:
            self._pruned_epsilon = None

    def update_step(self, gradient, variable, learning_rate):
        eps = (self._pruned_epsilon or {}).get(_keras.optimizer_variable_index(self, variable))
        if eps is None:
            return super().update_step(gradient, variable, learning_rate)
        with _keras.adam_epsilon(self, eps):  # Keras's Adam step adds self.epsilon to sqrt(v)
            return super().update_step(gradient, variable, learning_rate)


class StartStep:
    """Mixin for Keras Adam-family optimizers: the bias correction counts steps from
    :attr:`start_step` (the step at which the optimizer started fresh), not from 0.

    Keras's Adam corrects step ``t = iterations + 1`` by ``1 - beta ** t``; this one uses
    ``t = iterations - start_step + 1``, so after :func:`set_start_step` ``(opt, k)`` with
    every slot zeroed and ``iterations = k``, the next update is a newly built Adam's first
    update at the schedule's rate for step k. ``start_step`` is created by ``build`` (in
    the strategy's scope, like the slots) and read by the traced step, never baked into it.
    """

    start_step = None  # tf.Variable (int64), created by build

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        with tf.init_scope():  # a variable even when built inside a traced function
            var = tf.Variable(0, dtype=tf.as_dtype(self.iterations.dtype), trainable=False, name="start_step")
        _keras.attach_untracked(self, "start_step", var)

    def update_step(self, gradient, variable, learning_rate):
        with _keras.adam_bias_correction_from(self, self.start_step):
            return super().update_step(gradient, variable, learning_rate)


def get_start_step(optimizer) -> int:
    """The step at which ``optimizer`` started fresh (0 for one that counts from 0, and for
    optimizers without bias correction)."""
    var = getattr(optimizer, "start_step", None) if isinstance(optimizer, StartStep) else None
    return 0 if var is None else int(var.numpy())


def set_start_step(optimizer, step: int) -> None:
    """Make ``optimizer``'s bias correction count from ``step`` (eager; a no-op for an
    optimizer without bias correction, e.g. SGD)."""
    var = getattr(optimizer, "start_step", None) if isinstance(optimizer, StartStep) else None
    if var is None:
        if isinstance(optimizer, StartStep) and step:
            raise ValueError(f"{type(optimizer).__name__} is not built: build it before setting its start step.")
        return
    var.assign(int(step))


class Adam(PrunedStayZero, StartStep, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose step of a pruned kernel entry is exactly zero and
    whose bias correction counts from :attr:`StartStep.start_step`."""


class AdamW(PrunedStayZero, StartStep, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` whose step of a pruned kernel entry is exactly zero and
    whose bias correction counts from :attr:`StartStep.start_step`."""


def make_optimizer(hp: TrainingHparams, schedule: StepSchedule) -> keras.optimizers.Optimizer:
    """The optimizer for ``hp`` (coupled weight decay is added by the train step)."""
    if hp.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=hp.momentum, nesterov=hp.nesterov)
    if hp.optimizer == "adam":
        return Adam(schedule, epsilon=1e-8)
    if hp.optimizer == "adamw":
        return AdamW(schedule, weight_decay=hp.weight_decay, epsilon=1e-8)
    raise ValueError(f"Unknown optimizer '{hp.optimizer}'.")

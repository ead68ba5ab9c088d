"""Compiled training: the three ways the engine's steps run (``TrainingHparams.jit_compile``).

* ``off`` — a ``tf.function`` loop of many steps per call, each step's batch taken from a
  ``tf.data`` iterator inside the loop; nothing XLA-compiled. tflth's original path, bit
  for bit: every run made before compiled training exists is an ``off`` run.
* ``step`` — the same loop, each training step (forward, backward, optimizer update, on
  each replica) one XLA program (:func:`compile_step`). Works for any dataset, streamed
  ones included, and under every ``tf.distribute`` strategy.
* ``chunk`` — the whole chunk of up to :data:`tflth.training.trainer.MAX_STEPS_PER_CALL`
  steps one XLA program, no iterator inside (:func:`chunk_program`): the training set is
  held once as resident tensors (:class:`tflth.data.resident.ResidentTrainData`, images
  in their stored ``uint8``), each step's batch (its slice of the epoch's permutation,
  the short last batch of an epoch, augmentation, normalisation) is built in the program,
  and the batches equal the ``tf.data`` path's bit for bit. It needs an in-memory dataset
  and one replica; elsewhere :func:`check_mode` refuses it before any work, naming
  ``step`` as the way on.

Evaluation (:meth:`~tflth.training.Trainer.evaluate`, hence the interpolation curves and
the BatchNorm recompute pass) is not compiled in any mode: a LeNet-300-100 test pass took
the same time compiled (measured here, 0.23 s either way), and XLA's CPU convolutions would
make the convolutional networks' passes slower.

What the modes change: only rounding. XLA fuses and reorders floating-point operations,
so a compiled run's weights differ from an ``off`` run's in the last bits and drift apart
over training as any two nearby trajectories do; a compiled run is therefore another run
(``step``/``chunk`` enter the run's name, ``off`` does not), reruns and resumes of a
compiled run are bit-identical to it, pruned weights stay exactly ``0.0`` (Adam's per-entry
epsilons and SGD's mask constraint are compiled with the step) and checkpoints are saved
at the same steps. Measured on this project's 2-core CPU machines (docs/speed.md, "Engine speed"):
``chunk`` runs LeNet-300-100 at about half the time of ``off`` and helps the small ViT;
XLA's CPU convolutions are slow (tensorflow/tensorflow#62808), so convolutional networks
keep ``off`` on CPU. On GPUs XLA usually helps convolutions too; untested here: measure
with ``benchmarks/train_speed.py`` before choosing.
"""

from __future__ import annotations

import contextlib

import tensorflow as tf
from absl import logging

from tflth import _keras
from tflth.data.datasets import ArrayDataset, ExampleDataset
from tflth.hparams import field_error

__all__ = ["check_mode", "warn_if_slow", "compile_step", "chunk_program"]

_SUM = tf.distribute.ReduceOp.SUM


def check_mode(mode: str, dataset, strategy: tf.distribute.Strategy | None = None) -> None:
    """Refuse a ``jit_compile`` mode that cannot run with ``dataset`` (and, if given, under
    ``strategy``): an :class:`~tflth.hparams.HparamError` naming ``TrainingHparams.jit_compile``."""
    if mode != "chunk":
        return
    if isinstance(dataset, ExampleDataset):
        raise field_error("TrainingHparams", "jit_compile", mode,
                          f"holds a named image data set on the device; '{dataset.name}' is a task's own examples: "
                          "use step (each step compiled, batches from tf.data).")
    if not isinstance(dataset, ArrayDataset):
        raise field_error("TrainingHparams", "jit_compile", mode,
                          f"needs a dataset held in memory; '{dataset.name}' is streamed: use step "
                          "(each step compiled, batches from tf.data).")
    replicas = 1 if strategy is None else strategy.num_replicas_in_sync
    if replicas != 1:
        raise field_error("TrainingHparams", "jit_compile", mode,
                          f"runs on one replica; this strategy has {replicas}: use step (each replica's "
                          "step compiled).")


def warn_if_slow(mode: str, model) -> bool:
    """Log a warning when a compiled mode runs convolutions on the CPU (XLA's CPU
    convolutions are slow: tensorflow/tensorflow#62808); returns whether it warned."""
    if mode == "off" or tf.config.list_physical_devices("GPU"):
        return False
    convs = [layer.name for layer in _keras.sublayers(model)
             if type(layer).__name__.startswith(("Conv", "SeparableConv", "DepthwiseConv"))]
    if convs:
        logging.warning("jit_compile=%s on the CPU with convolutions (%s): XLA's CPU convolutions are slow "
                        "(tensorflow/tensorflow#62808), measured here many times slower than off; docs/speed.md "
                        "'Compiled training' says which mode to use where.", mode, ", ".join(convs[:3]))
    return bool(convs)


def compile_step(fn):
    """``fn`` (a replica's training or evaluation step) as one XLA program."""
    return tf.function(fn, jit_compile=True, reduce_retracing=True)


def chunk_program(replica_step, strategy: tf.distribute.Strategy, feed, pruned_epsilon=None):
    """The compiled chunk: ``program(plan, start, num_steps, epsilons)`` runs steps
    ``start .. start + num_steps - 1`` and returns the summed ``[loss, correct, examples]``
    of their batches.

    ``replica_step(x, y, global_count)`` is the engine's step; ``feed`` a
    :class:`~tflth.data.resident.ResidentTrainData`; ``plan`` its
    :meth:`~tflth.data.resident.ResidentTrainData.plan` for the chunk (rows padded to a
    fixed count, so one program serves every chunk length); ``pruned_epsilon(epsilons)``
    a context under which the step is traced (tflth's Adam: per-entry epsilons as
    arguments), or ``None``.
    """
    full, short = feed.batch_size, feed.last_batch_size

    def one_step(plan, i, size):
        x, y = feed.batch(plan, i, size=size)
        count = tf.constant(float(size), tf.float32)
        return strategy.reduce(_SUM, strategy.run(replica_step, args=(x, y, count)), axis=None)

    @tf.function(jit_compile=True)
    def program(plan, start, num_steps, epsilons):
        totals = tf.zeros([3], tf.float32)
        with pruned_epsilon(epsilons) if pruned_epsilon is not None else contextlib.nullcontext():
            for i in tf.range(num_steps):
                if short == full:
                    totals += one_step(plan, i, full)
                else:  # the epoch's short last batch has its own static shape
                    totals += tf.cond(feed.is_short(start + tf.cast(i, tf.int64)),
                                      lambda: one_step(plan, i, short), lambda: one_step(plan, i, full))
        return totals

    return program

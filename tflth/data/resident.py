"""The training stream of an in-memory dataset, built inside a compiled program.

:func:`~tflth.data.train_batches` builds each step's batch with ``tf.data`` and hands it
to the training step through an iterator. :class:`ResidentTrainData` holds the same
training set once as device-resident tensors (images kept in their stored ``uint8``) and
builds the batch of any step *inside* the program that trains on it (``jit_compile``
``chunk``, :mod:`tflth.training.compiled`).

The batches are those of :func:`train_batches` bit for bit. What is drawn at random is
drawn outside the program, by the very ops the ``tf.data`` path runs
(:meth:`~ResidentTrainData.plan`: each step's slice of the epoch's
:func:`~tflth.data.epoch_permutation`, the short last batch of an epoch, and the crop
offsets and flips of :func:`~tflth.data.ops.crop_flip_params` from ``(augment_seed,
step)``), because XLA implements the stateless random ops with another algorithm. The
program (:meth:`~ResidentTrainData.batch`) only gathers: the examples, the crop window
(:func:`~tflth.data.ops.crop_flip`) and the normalised value of each ``uint8`` pixel from a
256-entry table per channel computed by :func:`~tflth.data.normalize` itself, since XLA may
reorder the arithmetic of the normalisation.

Example::

    feed = ResidentTrainData(ds, batch_size=60, augment=False)
    plan = feed.plan(data_order_seed=0, augment_seed=0, start_step=0, num_steps=3)
    x, y = feed.batch(plan, 0, size=60)          # in a program: the batch of step 0

XLA compiles one program per input shape, so :meth:`plan` pads its rows to a fixed count
(``pad_to``) and the batch size is static: the short last batch of an epoch has its own
static size, :attr:`last_batch_size`.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tflth.data.datasets import ArrayDataset
from tflth.data.errors import DataError
from tflth.data.ops import (CROP_PADDING, crop_flip, crop_flip_params, epoch_permutation, iterations_per_epoch,
                            normalize, positive_int)

__all__ = ["ResidentTrainData", "Plan"]

_CACHED_EPOCHS = 4  # permutations kept per (seed, epoch): a chunk spans at most a few epochs


class Plan(NamedTuple):
    """What a chunk's steps draw at random, row ``i`` for step ``start + i``."""

    indices: tf.Tensor  # [R, B] int32 example indices (a short batch's row padded with 0)
    offsets: tf.Tensor  # [R, B, 2] int32 crop offsets (zeros without augmentation)
    flips: tf.Tensor  # [R, B] bool


class ResidentTrainData:
    """The training split of an :class:`~tflth.data.ArrayDataset` as resident tensors.

    Args:
        ds: the in-memory dataset (a streamed dataset cannot be resident: refused).
        batch_size: the global batch size.
        augment: whether training batches are augmented (crop and flip).
        device: where the tensors live (default: TensorFlow's default placement, e.g.
            the device of the ``tf.distribute`` scope it is built in).
    """

    def __init__(self, ds: ArrayDataset, batch_size: int, augment: bool, device: str | None = None):
        if not isinstance(ds, ArrayDataset):
            raise DataError(f"{getattr(ds, 'name', ds)!r} is streamed, not held in memory: its batches cannot be "
                            "built inside a compiled program.")
        self.name = ds.name
        self.batch_size = positive_int(batch_size, "batch_size")
        self.augment = bool(augment)
        self.num_examples = ds.num_train
        self.iterations_per_epoch = iterations_per_epoch(self.num_examples, self.batch_size)
        #: examples in the last batch of an epoch (== batch_size when it divides the set)
        self.last_batch_size = self.num_examples - (self.iterations_per_epoch - 1) * self.batch_size
        channels = int(ds.x_train.shape[-1])
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
        with tf.device(device) if device else contextlib.nullcontext():
            self.x = tf.convert_to_tensor(ds.x_train)
            self.y = tf.convert_to_tensor(ds.y_train, dtype=tf.int32)
            # normalize() of every uint8 level: [256 * C], entry v * C + c
            self.table = tf.reshape(normalize(levels, ds.name), [-1])
        self.channels = channels
        self._perms: dict[tuple[int, int], np.ndarray] = {}
        self._draw_crops = tf.function(self._crops)

    def _permutation(self, seed: int, epoch: int) -> np.ndarray:
        key = (int(seed), int(epoch))
        if key not in self._perms:
            if len(self._perms) >= _CACHED_EPOCHS:
                self._perms.pop(next(iter(self._perms)))
            self._perms[key] = epoch_permutation(self.num_examples, key[0], key[1]).numpy()
        return self._perms[key]

    def _crops(self, augment_seed, steps):
        """The crop offsets and flips of ``steps`` (traced like the ``tf.data`` map, not by XLA)."""
        seed = tf.cast(augment_seed, tf.int64)
        return tf.map_fn(lambda s: crop_flip_params(self.batch_size, tf.stack([seed, s]), CROP_PADDING), steps,
                         fn_output_signature=(tf.int32, tf.bool))

    def plan(self, data_order_seed: int, augment_seed: int, start_step: int, num_steps: int,
             pad_to: int | None = None) -> Plan:
        """The :class:`Plan` of steps ``start_step .. start_step + num_steps - 1``, rows
        padded to ``pad_to`` (rows past ``num_steps`` are zeros)."""
        rows = max(int(num_steps), int(pad_to or 0))
        b = self.batch_size
        indices = np.zeros((rows, b), np.int32)
        for i in range(int(num_steps)):
            epoch, position = divmod(int(start_step) + i, self.iterations_per_epoch)
            window = self._permutation(data_order_seed, epoch)[position * b:(position + 1) * b]
            indices[i, :len(window)] = window
        offsets, flips = np.zeros((rows, b, 2), np.int32), np.zeros((rows, b), bool)
        if self.augment and num_steps:
            steps = tf.range(int(start_step), int(start_step) + int(num_steps), dtype=tf.int64)
            drawn_offsets, drawn_flips = self._draw_crops(tf.constant(augment_seed, tf.int64), steps)
            offsets[:num_steps], flips[:num_steps] = drawn_offsets.numpy(), drawn_flips.numpy()
        return Plan(tf.constant(indices), tf.constant(offsets), tf.constant(flips))

    def is_short(self, step) -> tf.Tensor:
        """Whether ``step`` (a scalar tensor) is an epoch's short last batch."""
        return tf.logical_and(tf.constant(self.last_batch_size != self.batch_size),
                              tf.equal(tf.cast(step, tf.int64) % self.iterations_per_epoch,
                                       self.iterations_per_epoch - 1))

    def batch(self, plan: Plan, row, size: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """``(x float32 [size, ...], y int32 [size])``: the batch of ``plan``'s row ``row``,
        its first ``size`` examples (default: a full batch). Traced in the program."""
        size = self.batch_size if size is None else int(size)
        idx = plan.indices[row][:size]
        x = tf.gather(self.x, idx)
        if self.augment:
            x = crop_flip(x, plan.offsets[row][:size], plan.flips[row][:size], CROP_PADDING)
        levels = tf.cast(x, tf.int32) * self.channels + tf.range(self.channels, dtype=tf.int32)
        return tf.gather(self.table, levels), tf.gather(self.y, idx)

"""The step-exact, seeded input pipeline: :func:`train_batches` and :func:`eval_batches`.

Both accept an in-memory :class:`~tflth.data.ArrayDataset`, whose batches are built
here, or a :class:`~tflth.data.StreamDataset`, whose batches :mod:`tflth.data.imagenet`
builds. Images are scaled to [0, 1] and normalised with the dataset's fixed per-channel
mean / std (:func:`~tflth.data.normalize`); training augments as
:func:`~tflth.data.augments` says by default (none for the MNISTs,
:func:`~tflth.data.random_crop_flip` for the CIFARs, a random-resized crop for ImageNet).

The training stream
-------------------
:func:`train_batches` is an infinite stream whose element ``i`` is the batch of global
step ``start_step + i``. It is a pure function of ``(dataset, batch_size,
data_order_seed, augment_seed, step)``:

* epoch ``e`` visits the training set in the order :func:`~tflth.data.epoch_permutation`
  draws statelessly from ``(data_order_seed, e)``; its batches are consecutive slices of
  that permutation, ``iterations_per_epoch = ceil(N / B)`` of them, the last possibly
  short; batches never span two epochs;
* the augmentation of the batch of step ``s`` is drawn statelessly from
  ``(augment_seed, s)`` and so does not depend on the data order;
* starting at step ``s`` skips only index slices, never image work, and yields exactly
  the batches ``s, s + 1, ...`` of a run started at 0, bit for bit.

No op in the pipeline uses a stateful random generator, so it runs under
``tf.config.experimental.enable_op_determinism()``.
"""

from __future__ import annotations

import operator
import weakref

import tensorflow as tf

from tflth.data.datasets import ArrayDataset, ExampleDataset, StreamDataset, example_count
from tflth.data.errors import DataError
from tflth.data.imagenet import stream_eval_batches, stream_train_batches
from tflth.data.ops import (
    checked_int64, deterministic_prefetch, epoch_permutation, iterations_per_epoch, normalize, positive_int,
    random_crop_flip,
)
from tflth.data.registry import augments

__all__ = ["train_batches", "eval_batches", "host_tensors"]


_HOST_TENSOR_CACHE: "weakref.WeakKeyDictionary[ArrayDataset, dict]" = weakref.WeakKeyDictionary()


def host_tensors(ds: ArrayDataset | ExampleDataset, split: str) -> tuple:
    """``(images, int32 labels)`` of a split as host tensors (a task's ``(x, y)`` nests as
    they are), converted once per dataset (a trainer builds a new pipeline for every
    ``train`` call: every IMP level)."""
    cache = _HOST_TENSOR_CACHE.setdefault(ds, {})
    if split not in cache:
        with tf.device("/cpu:0"):
            if isinstance(ds, ExampleDataset):
                cache[split] = tf.nest.map_structure(tf.convert_to_tensor, tuple(ds.split(split)))
            else:
                x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
                cache[split] = (tf.convert_to_tensor(x), tf.convert_to_tensor(y, dtype=tf.int32))
    return cache[split]


def train_batches(ds: ArrayDataset | StreamDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                  start_step: int = 0, augment: bool | None = None) -> tf.data.Dataset:
    """The infinite training stream from global step ``start_step``: ``(x float32 [B, H, W, C], y int32 [B])``.

    ``augment=None`` uses the dataset's standard choice (:func:`augments`). See the
    module docstring for the exact contract.
    """
    batch_size = positive_int(batch_size, "batch_size")
    data_order_seed = checked_int64(data_order_seed, "data_order_seed")
    augment_seed = checked_int64(augment_seed, "augment_seed")
    start_step = operator.index(start_step)
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}.")
    if isinstance(ds, ExampleDataset):
        if augment:
            raise DataError(f"'{ds.name}' is a task's own examples: tflth does not augment them.")
        return _example_train_batches(ds, batch_size, data_order_seed, start_step)
    augment = augments(ds.name) if augment is None else bool(augment)
    if isinstance(ds, StreamDataset):
        return stream_train_batches(ds, batch_size, data_order_seed, augment_seed, start_step, augment)
    return _array_train_batches(ds, batch_size, data_order_seed, augment_seed, start_step, augment)


def _array_train_batches(ds: ArrayDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                         start_step: int, augment: bool) -> tf.data.Dataset:
    n = ds.num_train
    ipe = iterations_per_epoch(n, batch_size)
    start_epoch, offset = divmod(start_step, ipe)
    x_all, y_all = host_tensors(ds, "train")
    order_seed = tf.constant(data_order_seed, tf.int64)
    aug_seed = tf.constant(augment_seed, tf.int64)

    def epoch_indices(epoch):
        """``(global step, example indices)`` for each batch of ``epoch``."""
        perm = epoch_permutation(n, order_seed, epoch)
        return tf.data.Dataset.range(ipe).map(
            lambda b: (epoch * ipe + b, perm[b * batch_size:(b + 1) * batch_size]))

    def make_batch(step, idx):
        x = tf.gather(x_all, idx)
        if augment:
            x = random_crop_flip(x, tf.stack([aug_seed, step]))
        return normalize(x, ds.name), tf.gather(y_all, idx)

    steps = tf.data.Dataset.counter(start_epoch).flat_map(epoch_indices).skip(offset)
    return deterministic_prefetch(steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _example_train_batches(ds: ExampleDataset, batch_size: int, data_order_seed: int,
                           start_step: int) -> tf.data.Dataset:
    """A task's examples in the per-epoch seeded order of :func:`_array_train_batches`, as
    they are (any nest of tensors, no normalisation)."""
    n = ds.num_train
    ipe = iterations_per_epoch(n, batch_size)
    start_epoch, offset = divmod(start_step, ipe)
    examples = host_tensors(ds, "train")
    order_seed = tf.constant(data_order_seed, tf.int64)

    def epoch_indices(epoch):
        perm = epoch_permutation(n, order_seed, epoch)
        return tf.data.Dataset.range(ipe).map(lambda b: perm[b * batch_size:(b + 1) * batch_size])

    def make_batch(idx):
        return tf.nest.map_structure(lambda t: tf.gather(t, idx), examples)

    indices = tf.data.Dataset.counter(start_epoch).flat_map(epoch_indices).skip(offset)
    return deterministic_prefetch(indices.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def eval_batches(ds: ArrayDataset | StreamDataset | ExampleDataset, split: str = "test",
                 batch_size: int = 1000) -> tf.data.Dataset:
    """One pass over ``split`` (``test`` or ``train``; a task's evaluation sets by name) in
    a fixed order, normalised (images), unaugmented."""
    batch_size = positive_int(batch_size, "batch_size")
    if isinstance(ds, ExampleDataset):
        if split != "train" and split not in ds.evals:
            raise DataError(f"split must be 'train' or one of the task's evaluation sets {list(ds.evals)}, "
                            f"got {split!r}.")
        examples = host_tensors(ds, split)
        count = iterations_per_epoch(example_count(ds.split(split)[0]), batch_size)
        return deterministic_prefetch(tf.data.Dataset.range(count).map(
            lambda b: tf.nest.map_structure(lambda t: t[b * batch_size:(b + 1) * batch_size], examples),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))
    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train', got {split!r}.")
    if isinstance(ds, StreamDataset):
        return stream_eval_batches(ds, split, batch_size)
    x_all, y_all = host_tensors(ds, split)
    batches = tf.data.Dataset.range(iterations_per_epoch(int(x_all.shape[0]), batch_size))

    def make_batch(b):
        window = slice(b * batch_size, (b + 1) * batch_size)
        return normalize(x_all[window], ds.name), y_all[window]

    return deterministic_prefetch(batches.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))

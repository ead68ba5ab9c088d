"""Stateless building blocks shared by the in-memory and the streaming pipelines.

Argument checks, epoch arithmetic (:func:`iterations_per_epoch`), the seeded epoch order
(:func:`epoch_permutation`), normalisation with the registry's per-dataset constants
(:func:`normalize`), the crop-and-flip augmentation of the in-memory datasets
(:func:`random_crop_flip`) and the deterministic prefetching tail of every pipeline.

Augmentation of the CIFARs: a random 32x32 crop of the image zero-padded by
:data:`CROP_PADDING` pixels plus a random horizontal flip, padding applied to the raw
pixels as torchvision's ``RandomCrop(32, padding=4)`` does. None of these ops uses a
stateful random generator.
"""

from __future__ import annotations

import operator

import tensorflow as tf

from tflth.data.errors import DataError
from tflth.data.registry import normalization

__all__ = ["CROP_PADDING", "iterations_per_epoch", "epoch_permutation", "normalize", "random_crop_flip", "crop_flip",
           "crop_flip_params", "positive_int", "checked_int64", "deterministic_prefetch"]

#: Padding (pixels per side) of the random-crop augmentation of in-memory datasets.
CROP_PADDING = 4


def positive_int(value, what: str) -> int:
    """``value`` as an ``int`` > 0; a :class:`DataError` naming ``what`` otherwise."""
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}.") from None
    if value <= 0:
        raise DataError(f"{what} must be positive, got {value}.")
    return value


def checked_int64(value, what: str) -> int:
    """``value`` as an ``int`` that fits int64 (a seed); a :class:`DataError` naming ``what`` otherwise."""
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}.") from None
    if not -(2**63) <= value < 2**63:
        raise DataError(f"{what} must fit in int64, got {value}.")
    return value


def iterations_per_epoch(num_examples: int, batch_size: int) -> int:
    """Steps per epoch, ``ceil(num_examples / batch_size)`` (the last batch may be short)."""
    num_examples = positive_int(num_examples, "num_examples")
    batch_size = positive_int(batch_size, "batch_size")
    return -(-num_examples // batch_size)


def epoch_permutation(num_examples: int, data_order_seed, epoch) -> tf.Tensor:
    """The int32 order in which epoch ``epoch`` visits the examples (stateless)."""
    seed = tf.stack([tf.cast(data_order_seed, tf.int64), tf.cast(epoch, tf.int64)])
    keys = tf.random.stateless_uniform([num_examples], seed=seed)
    return tf.argsort(keys, stable=True)


def normalize(images, name: str) -> tf.Tensor:
    """uint8 (or [0, 255] float) images as float32, scaled to [0, 1] and normalised for ``name``."""
    mean, std = normalization(name)
    x = tf.cast(images, tf.float32) / 255.0
    return (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def crop_flip_params(batch_size, seed, padding: int = CROP_PADDING) -> tuple[tf.Tensor, tf.Tensor]:
    """``(offsets [B, 2] (row, col) in [0, 2 * padding], flips [B] bool)`` for ``seed``."""
    offset_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    offsets = tf.random.stateless_uniform([batch_size, 2], offset_seed, minval=0, maxval=2 * padding + 1,
                                          dtype=tf.int32)
    flips = tf.random.stateless_uniform([batch_size], flip_seed, minval=0, maxval=2, dtype=tf.int32) > 0
    return offsets, flips


def random_crop_flip(images, seed, padding: int = CROP_PADDING) -> tf.Tensor:
    """Random crop of the zero-padded images plus a random horizontal flip, per image.

    ``images`` is ``[B, H, W, C]`` of any dtype; ``seed`` a shape-[2] integer tensor. The
    result is, exactly, a window of ``pad(images, padding)`` (mirrored left-right for the
    flipped images): two gathers, no interpolation.
    """
    images = tf.convert_to_tensor(images)
    offsets, flips = crop_flip_params(tf.shape(images)[0], seed, padding)
    return crop_flip(images, offsets, flips, padding)


def crop_flip(images, offsets, flips, padding: int = CROP_PADDING) -> tf.Tensor:
    """The crop and flip of :func:`random_crop_flip` with its drawn parameters given:
    ``offsets [B, 2]`` (row, col) in ``[0, 2 * padding]`` and ``flips [B]`` bool."""
    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    forward = tf.range(width)[tf.newaxis]
    cols = offsets[:, 1:] + tf.where(flips[:, tf.newaxis], width - 1 - forward, forward)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


def deterministic_prefetch(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The tail of every pipeline: prefetching, with deterministic element order."""
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)

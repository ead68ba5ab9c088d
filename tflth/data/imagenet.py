"""ImageNet (``imagenet2012``), read as a stream from a prepared tfds directory.

It does not fit in memory: :func:`load_stream` opens the tfds builder as a
:class:`~tflth.data.StreamDataset`, and the pipeline (:mod:`tflth.data.pipeline`) hands
such datasets to the stream batches here. Training images get an Inception-style
random-resized crop to 224 plus a flip, drawn statelessly per example from
``(augment_seed, step)``; evaluation resizes the shorter side to 256 and takes the
central 224x224. An epoch's order is a seeded buffer shuffle of the on-disk order.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
from absl import logging

from tflth.data.datasets import StreamDataset
from tflth.data.errors import DataError
from tflth.data import registry
from tflth.data.ops import deterministic_prefetch, iterations_per_epoch, normalize
from tflth.data.registry import input_shape

__all__ = ["IMAGENET_SIZE", "IMAGENET_RESIZE", "load_stream", "stream_train_batches", "stream_eval_batches"]

#: ImageNet geometry: the (square) crop size, from the registry's input shape, and the
#: eval resize before the centre crop.
IMAGENET_SIZE = input_shape("imagenet2012")[0]
IMAGENET_RESIZE = 256


def _split_size(builder, split: str) -> int:
    try:
        return int(builder.info.splits[split].num_examples)
    except KeyError:  # e.g. under tfds.testing.mock_data: count the records instead
        import tensorflow_datasets as tfds

        records = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        n = int(records.cardinality())
        return n if n >= 0 else int(records.reduce(np.int64(0), lambda count, _: count + 1))


def load_stream(name: str = "imagenet2012", data_dir: str | os.PathLike | None = None,
                shuffle_buffer: int = 10_000) -> StreamDataset:
    """A prepared tfds dataset (``train`` / ``validation`` splits) as a :class:`StreamDataset`.

    ImageNet needs a manual download: put the archives in ``<data_dir>/downloads/manual``
    and run ``tfds.builder("imagenet2012", data_dir=...).download_and_prepare()`` once.
    """
    facts = registry.spec(name)
    if not facts.streaming:
        raise DataError(f"{name} is an in-memory dataset; use load().")
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        num_train, num_test = _split_size(builder, "train"), _split_size(builder, "validation")
    except Exception as e:  # broad on purpose: tfds raises many types for a missing or unprepared dataset
        raise DataError(f"tfds could not open {name!r} (data_dir={data_dir!r}): {e}. {name} must be prepared "
                        f"beforehand; see tflth.data.load_stream.") from e
    source = f"tfds {name} (streamed)" + (f" in {data_dir}" if data_dir else "")
    logging.info("Dataset %s: %d train / %d validation images streamed from %s.", name, num_train, num_test, source)
    return StreamDataset(name=name, builder=builder, num_train=num_train, num_test=num_test,
                         num_classes=facts.num_classes, input_shape=(IMAGENET_SIZE, IMAGENET_SIZE, 3),
                         source=source, shuffle_buffer=shuffle_buffer)


def _decode(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def _imagenet_train_image(encoded: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Inception-style random-resized crop (area 8-100 %, aspect 3/4-4/3) to 224 plus a flip."""
    image = _decode(encoded)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    image = tf.image.resize(tf.slice(image, begin, size), [IMAGENET_SIZE, IMAGENET_SIZE], method="bilinear")
    flip = tf.random.stateless_uniform([], flip_seed) < 0.5
    image = tf.where(flip, tf.reverse(image, axis=[1]), image)
    return normalize(image, "imagenet2012")


def _imagenet_eval_image(encoded: tf.Tensor) -> tf.Tensor:
    """Resize the shorter side to 256 (bilinear), then take the central 224x224."""
    image = _decode(encoded)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    new_hw = tf.cast(tf.round(hw * (IMAGENET_RESIZE / tf.reduce_min(hw))), tf.int32)
    new_hw = tf.maximum(new_hw, IMAGENET_SIZE)
    image = tf.image.resize(image, new_hw, method="bilinear")
    top, left = (new_hw[0] - IMAGENET_SIZE) // 2, (new_hw[1] - IMAGENET_SIZE) // 2
    image = image[top:top + IMAGENET_SIZE, left:left + IMAGENET_SIZE]
    return normalize(tf.ensure_shape(image, [IMAGENET_SIZE, IMAGENET_SIZE, 3]), "imagenet2012")


def _records(ds: StreamDataset, split: str) -> tf.data.Dataset:
    """``(encoded image, int32 label)`` in the fixed on-disk order."""
    import tensorflow_datasets as tfds

    records = ds.builder.as_dataset(split=split, shuffle_files=False,
                                    decoders={"image": tfds.decode.SkipDecoding()})
    return records.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))


def stream_train_batches(ds: StreamDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                          start_step: int, augment: bool) -> tf.data.Dataset:
    """As the in-memory training stream (:mod:`tflth.data.pipeline`), with a buffer shuffle seeded
    from ``(seed, epoch)``.

    An epoch's order is a shuffle of the on-disk order with a buffer of
    ``ds.shuffle_buffer`` (tfds writes records pre-shuffled), not a uniform permutation.
    Skipping to ``start_step`` reads, but does not decode, the skipped records.
    """
    ipe = iterations_per_epoch(ds.num_train, batch_size)
    start_epoch, offset = divmod(start_step, ipe)
    records = _records(ds, ds.train_split)
    order_seed = tf.constant(data_order_seed, tf.int64)
    aug_seed = tf.constant(augment_seed, tf.int64)

    def epoch_records(epoch):
        shuffle_seed = tf.random.stateless_uniform([], tf.stack([order_seed, epoch]), minval=0, maxval=2**62,
                                                   dtype=tf.int64)
        # The order must depend on (data_order_seed, epoch) only: TensorFlow's global seed
        # (keras.utils.set_random_seed, set by every model build) would enter the shuffle's
        # seed pair, and a global seed of 0 made the pair's check a Python bool of a tensor.
        graph = tf.compat.v1.get_default_graph()
        global_seed, graph.seed = graph.seed, None
        try:
            batches = records.shuffle(ds.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
        finally:
            graph.seed = global_seed
        steps = tf.data.Dataset.range(epoch * ipe, (epoch + 1) * ipe)
        return tf.data.Dataset.zip(steps, batches.batch(batch_size))

    def make_batch(step, encoded_labels):
        encoded, labels = encoded_labels
        if augment:
            base = tf.stack([aug_seed, step])
            positions = tf.range(tf.shape(encoded)[0])
            images = tf.map_fn(
                lambda a: _imagenet_train_image(a[0], tf.random.experimental.stateless_fold_in(base, a[1])),
                (encoded, positions), fn_output_signature=tf.float32)
        else:
            images = tf.map_fn(_imagenet_eval_image, encoded, fn_output_signature=tf.float32)
        return tf.ensure_shape(images, [None, IMAGENET_SIZE, IMAGENET_SIZE, 3]), labels

    steps = tf.data.Dataset.counter(start_epoch).flat_map(epoch_records).skip(offset)
    return deterministic_prefetch(steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def stream_eval_batches(ds: StreamDataset, split: str, batch_size: int) -> tf.data.Dataset:
    records = _records(ds, ds.test_split if split == "test" else ds.train_split)
    images = records.map(lambda encoded, label: (_imagenet_eval_image(encoded), label),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return deterministic_prefetch(images.batch(batch_size))

"""Datasets for tflth: where they come from and a step-exact, seeded input pipeline.

    ds = tflth.data.load("cifar10")                       # ArrayDataset, in memory
    batches = tflth.data.train_batches(ds, 128, data_order_seed=0, augment_seed=0)
    tflth.data.eval_batches(ds, "test")                   # one fixed-order pass

One concern per module, everything re-exported here:

* :mod:`~tflth.data.registry`: the facts about each named dataset (:func:`names`):
  input shape, classes, normalisation (:data:`NORMALIZATION`), whether it augments,
  whether it streams. The single source, also of ``tflth.models.DATASETS``.
* :mod:`~tflth.data.sources`: :func:`load` (a ``.npz`` file, a directory of IDX files,
  the Debian Fashion-MNIST package or TensorFlow Datasets) and :func:`from_arrays`.
* :mod:`~tflth.data.idx`: MNIST-format IDX files (:func:`read_idx`, :func:`read_idx_dir`).
* :mod:`~tflth.data.datasets`: the containers :class:`ArrayDataset` and
  :class:`StreamDataset`.
* :mod:`~tflth.data.pipeline`: :func:`train_batches` (the infinite training stream,
  batch ``i`` a pure function of the seeds and step ``start_step + i``) and
  :func:`eval_batches`.
* :mod:`~tflth.data.ops`: the stateless building blocks of the pipelines
  (:func:`iterations_per_epoch`, :func:`epoch_permutation`, :func:`normalize`,
  :func:`random_crop_flip`).
* :mod:`~tflth.data.imagenet`: ImageNet read as a stream (:func:`load_stream`).

Every error is a :class:`DataError` (a ``ValueError``).
"""

from tflth.data.datasets import ArrayDataset, ExampleDataset, StreamDataset
from tflth.data.errors import DataError
from tflth.data.idx import IDX_FILES, read_idx, read_idx_dir
from tflth.data.imagenet import IMAGENET_RESIZE, IMAGENET_SIZE, load_stream
from tflth.data.ops import (
    CROP_PADDING, crop_flip_params, epoch_permutation, iterations_per_epoch, normalize, random_crop_flip,
)
from tflth.data.pipeline import eval_batches, train_batches
from tflth.data.registry import (NORMALIZATION, augmented, augments, input_shape, names, normalization, num_classes,
                                 streams)
from tflth.data.sources import DEBIAN_FASHION_MNIST_DIR, from_arrays, load

__all__ = [
    "DataError",
    "ArrayDataset",
    "StreamDataset",
    "ExampleDataset",
    "NORMALIZATION",
    "DEBIAN_FASHION_MNIST_DIR",
    "CROP_PADDING",
    "IDX_FILES",
    "names",
    "augmented",
    "augments",
    "normalization",
    "num_classes",
    "input_shape",
    "streams",
    "load",
    "load_stream",
    "from_arrays",
    "read_idx",
    "read_idx_dir",
    "iterations_per_epoch",
    "epoch_permutation",
    "normalize",
    "random_crop_flip",
    "crop_flip_params",
    "train_batches",
    "eval_batches",
]

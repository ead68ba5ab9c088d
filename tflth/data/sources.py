"""Where the arrays of a dataset come from: :func:`load` and :func:`from_arrays`.

:func:`load` returns the training and test split of a named dataset
(:func:`~tflth.data.names`):

* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` as an in-memory
  :class:`~tflth.data.ArrayDataset` (uint8 HWC images, integer labels). The arrays come
  from, in this order: ``data_dir`` when it is a ``.npz`` file (keys ``x_train, y_train,
  x_test, y_test``); ``data_dir`` when it is a directory of MNIST-format IDX files
  (``train-images-idx3-ubyte[.gz]`` and friends, :mod:`tflth.data.idx`); for
  ``fashion_mnist`` without a ``data_dir``, the Debian package ``dataset-fashion-mnist``
  (:data:`DEBIAN_FASHION_MNIST_DIR`); otherwise TensorFlow Datasets (which needs a
  network the first time).
* ``imagenet2012`` as a :class:`~tflth.data.StreamDataset` read from a prepared tfds
  directory, since it does not fit in memory (see :func:`~tflth.data.load_stream`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from tflth.data.datasets import ArrayDataset, StreamDataset
from tflth.data.errors import DataError
from tflth.data.idx import _has_idx_files, read_idx_dir
from tflth.data.imagenet import load_stream
from tflth.data.registry import _spec

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "load", "from_arrays"]

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def from_arrays(name: str, x_train, y_train, x_test, y_test, source: str = "arrays") -> ArrayDataset:
    """Validate four arrays as dataset ``name`` (whose normalisation they will get).

    Images must be integers in [0, 255], shaped ``(N, H, W)`` (a channel axis is added)
    or ``(N, H, W, C)`` with ``C`` matching the dataset's normalisation constants; labels
    are integers in ``[0, num_classes)``.
    """
    spec = _spec(name)
    arrays = {}
    for key, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        arrays["x_" + key] = _as_images(np.asarray(images), f"x_{key} of {source}")
        arrays["y_" + key] = _as_labels(np.asarray(labels), spec.num_classes, f"y_{key} of {source}")
        if arrays["x_" + key].shape[0] != arrays["y_" + key].shape[0]:
            raise DataError(f"{source}: x_{key} has {arrays['x_' + key].shape[0]} images but y_{key} "
                            f"has {arrays['y_' + key].shape[0]} labels.")
    shape = arrays["x_train"].shape[1:]
    if arrays["x_test"].shape[1:] != shape:
        raise DataError(f"{source}: train images are {shape} but test images are {arrays['x_test'].shape[1:]}.")
    if shape[-1] != len(spec.mean):
        raise DataError(f"{source}: images have {shape[-1]} channel(s) but {name} is normalised over "
                        f"{len(spec.mean)}.")
    if arrays["x_train"].shape[0] == 0:
        raise DataError(f"{source}: the training split is empty.")
    for key, array in arrays.items():
        arrays[key] = view = array.view()  # read-only views leave the caller's arrays writable
        view.setflags(write=False)
    return ArrayDataset(name=name, num_classes=spec.num_classes, input_shape=tuple(int(d) for d in shape),
                        source=source, **arrays)


def _as_images(x: np.ndarray, what: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise DataError(f"{what}: expected images shaped (N, H, W) or (N, H, W, C), found {x.shape}.")
    if x.dtype != np.uint8:
        if not np.issubdtype(x.dtype, np.integer) or (x.size and (x.min() < 0 or x.max() > 255)):
            raise DataError(f"{what}: expected uint8 pixels (0-255), found {x.dtype}.")
        x = x.astype(np.uint8)
    return x


def _as_labels(y: np.ndarray, classes: int, what: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{what}: expected a 1-D integer label array, found {y.dtype} {y.shape}.")
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"{what}: labels must lie in [0, {classes}), found [{y.min()}, {y.max()}].")
    return y.astype(np.int64, copy=False)


def _read_npz(path: str) -> tuple[np.ndarray, ...]:
    keys = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise DataError(f"{path} lacks the key(s) {', '.join(missing)}; expected {', '.join(keys)}.")
            return tuple(archive[k] for k in keys)
    except DataError:
        raise
    except Exception as e:  # np.load raises many types for a bad archive
        raise DataError(f"Cannot read {path} as a .npz archive: {e}") from e


def _dataset_to_numpy(ds: tf.data.Dataset, what: str, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in ds.batch(chunk).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(f"{what} is empty.")
    return np.concatenate(xs), np.concatenate(ys)


def _load_tfds(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
    # Iterating and concatenating (rather than ``batch_size=-1``) also works under
    # ``tfds.testing.mock_data``, where split sizes are unknown.
    import tensorflow_datasets as tfds

    try:
        train, test = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir,
                                shuffle_files=False)
        x_train, y_train = _dataset_to_numpy(train, f"tfds {name} train")
        x_test, y_test = _dataset_to_numpy(test, f"tfds {name} test")
    except DataError:
        raise
    except Exception as e:  # tfds raises many types (download, missing files, ...)
        raise DataError(f"tfds could not load {name!r} (data_dir={data_dir!r}): {e}. Without a network, pass "
                        f"data_dir= a .npz file or a directory of MNIST-format IDX files.") from e
    return x_train, y_train, x_test, y_test


def _resolve(name: str, data_dir: str | None) -> tuple[str, str | None]:
    """``(kind, location)`` with kind ``npz``, ``idx`` or ``tfds``; see :func:`load`."""
    if data_dir is not None:
        if os.path.isfile(data_dir):
            if data_dir.endswith(".npz"):
                return "npz", data_dir
            raise DataError(f"data_dir={data_dir} is a file but not a .npz archive (with keys x_train, y_train, "
                            f"x_test, y_test).")
        if os.path.isdir(data_dir) and _has_idx_files(data_dir):
            return "idx", data_dir
        return "tfds", data_dir
    if name == "fashion_mnist" and os.path.isdir(DEBIAN_FASHION_MNIST_DIR):
        return "idx", DEBIAN_FASHION_MNIST_DIR
    return "tfds", None


def load(name: str, data_dir: str | os.PathLike | None = None) -> ArrayDataset | StreamDataset:
    """Load dataset ``name`` (see the module docstring for where from); logs the source.

    ``imagenet2012`` gives a :class:`StreamDataset` (:func:`load_stream`); every other
    name an :class:`ArrayDataset`.
    """
    if _spec(name).streaming:
        return load_stream(name, data_dir)
    data_dir = None if data_dir is None else os.fspath(data_dir)
    kind, where = _resolve(name, data_dir)
    if kind == "npz":
        arrays, source = _read_npz(where), f"npz file {where}"
    elif kind == "idx":
        arrays, source = read_idx_dir(where), f"IDX files in {where}"
    else:
        arrays, source = _load_tfds(name, where), f"tfds {name}" + (f" in {where}" if where else "")
    ds = from_arrays(name, *arrays, source=source)
    logging.info("Dataset %s: %d train / %d test images of shape %s from %s.",
                 name, ds.num_train, ds.num_test, ds.input_shape, source)
    return ds

"""Data sources and a step-exact, seeded input pipeline.

Sources
-------
:func:`load` returns the training and test split of a named dataset (``names()``):

* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` as an in-memory
  :class:`ArrayDataset` (uint8 HWC images, integer labels). The arrays come from, in
  this order: ``data_dir`` when it is a ``.npz`` file (keys ``x_train, y_train, x_test,
  y_test``); ``data_dir`` when it is a directory of MNIST-format IDX files
  (``train-images-idx3-ubyte[.gz]`` and friends); for ``fashion_mnist`` without a
  ``data_dir``, the Debian package ``dataset-fashion-mnist``
  (:data:`DEBIAN_FASHION_MNIST_DIR`); otherwise TensorFlow Datasets (which needs a
  network the first time).
* ``imagenet2012`` as a :class:`StreamDataset` read from a prepared tfds directory,
  since it does not fit in memory (see :func:`load_stream`).

Preprocessing
-------------
Images are scaled to [0, 1] and normalised with fixed per-dataset, per-channel
mean/std (:data:`NORMALIZATION`). Training augmentation (:func:`augments`): none for the
MNISTs; for the CIFARs a random 32x32 crop of the image zero-padded by 4 pixels plus a
random horizontal flip (:func:`random_crop_flip`, padding applied to the raw pixels as
torchvision's ``RandomCrop(32, padding=4)`` does); for ImageNet a random-resized crop to
224 plus a flip, and resize-256 / centre-crop-224 for evaluation.

The training stream
-------------------
:func:`train_batches` is an infinite stream whose element ``i`` is the batch of global
step ``start_step + i``. It is a pure function of ``(dataset, batch_size,
data_order_seed, augment_seed, step)``:

* epoch ``e`` visits the training set in the order :func:`epoch_permutation` draws
  statelessly from ``(data_order_seed, e)``; its batches are consecutive slices of that
  permutation, ``iterations_per_epoch = ceil(N / B)`` of them, the last possibly short;
  batches never span two epochs;
* the augmentation of the batch of step ``s`` is drawn statelessly from
  ``(augment_seed, s)`` and so does not depend on the data order;
* starting at step ``s`` skips only index slices, never image work, and yields exactly
  the batches ``s, s + 1, ...`` of a run started at 0, bit for bit.

No op in the pipeline uses a stateful random generator, so it runs under
``tf.config.experimental.enable_op_determinism()``.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import operator
import os
import weakref
import zlib
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

__all__ = [
    "DataError",
    "ArrayDataset",
    "StreamDataset",
    "NORMALIZATION",
    "DEBIAN_FASHION_MNIST_DIR",
    "CROP_PADDING",
    "IDX_FILES",
    "names",
    "augments",
    "normalization",
    "num_classes",
    "load",
    "load_stream",
    "from_arrays",
    "read_idx",
    "read_idx_dir",
    "iterations_per_epoch",
    "epoch_permutation",
    "normalize",
    "random_crop_flip",
    "train_batches",
    "eval_batches",
]


class DataError(ValueError):
    """A dataset cannot be found, read or used as asked."""


# ------------------------------------------------------------------ the registry


@dataclasses.dataclass(frozen=True)
class _Spec:
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    streaming: bool = False


_SPECS: dict[str, _Spec] = {
    "mnist": _Spec(10, (0.1307,), (0.3081,), augment=False),
    "fashion_mnist": _Spec(10, (0.2860,), (0.3530,), augment=False),
    "cifar10": _Spec(10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), augment=True),
    "cifar100": _Spec(100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True),
    "imagenet2012": _Spec(1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), augment=True, streaming=True),
}

#: ``{name: (per-channel mean, per-channel std)}`` of pixels scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    name: (spec.mean, spec.std) for name, spec in _SPECS.items()
}

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: Padding (pixels per side) of the random-crop augmentation of in-memory datasets.
CROP_PADDING = 4

#: ImageNet geometry: training crop size and the eval resize before the centre crop.
IMAGENET_SIZE = 224
IMAGENET_RESIZE = 256


def names() -> tuple[str, ...]:
    """The accepted dataset names."""
    return tuple(_SPECS)


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise DataError(f"Unknown dataset {name!r}; expected one of: {', '.join(names())}.") from None


def augments(name: str) -> bool:
    """Whether ``name`` is trained with data augmentation by default."""
    return _spec(name).augment


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel, for pixels scaled to [0, 1]."""
    spec = _spec(name)
    return spec.mean, spec.std


def num_classes(name: str) -> int:
    """The number of classes of ``name``."""
    return _spec(name).num_classes


# ------------------------------------------------------------------ datasets


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset:
    """A dataset held in memory: uint8 HWC images and integer labels (read-only arrays)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name!r}, train={self.num_train}, test={self.num_test}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})")


@dataclasses.dataclass(frozen=True, eq=False)
class StreamDataset:
    """A tfds dataset too large for memory, read as a stream (ImageNet).

    Same attributes as :class:`ArrayDataset` minus the arrays; :func:`train_batches` and
    :func:`eval_batches` accept either.
    """

    name: str
    builder: Any = dataclasses.field(repr=False)
    num_train: int
    num_test: int
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    train_split: str = "train"
    test_split: str = "validation"
    shuffle_buffer: int = 10_000


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


# ------------------------------------------------------------------ IDX files

#: The four MNIST-format files of a dataset directory, each optionally gzipped.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_maybe_gzipped(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e}.") from e
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise DataError(f"{path}: truncated or corrupt gzip data ({e}).") from e


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (raw or gzipped) as a native-endian array.

    The header is the magic ``0x00 0x00 <type> <ndim>`` (type 0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) followed by ``ndim`` big-endian
    uint32 sizes; the payload must hold exactly the data those sizes promise.
    """
    path = os.fspath(path)
    data = _read_maybe_gzipped(path)
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES or data[3] == 0:
        codes = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise DataError(f"{path}: not an IDX file: expected the magic bytes 00 00 <type in {codes}> <ndim >= 1>, "
                        f"found {data[:4].hex(' ') or 'an empty file'}.")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX header for {ndim} dimensions, "
                        f"found only {len(data)} bytes.")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected, found = math.prod(shape) * dtype.itemsize, len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "trailing data"
        raise DataError(f"{path}: expected {expected} bytes of {dtype.name} data for shape {shape} after the "
                        f"{header}-byte header, found {found} ({problem}).")
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _idx_path(directory: str, base: str) -> str | None:
    for candidate in (base, base + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _has_idx_files(directory: str) -> bool:
    return any(_idx_path(directory, base) for base in IDX_FILES.values())


def read_idx_dir(directory: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from the four IDX files of :data:`IDX_FILES`.

    Images are returned as stored, ``(N, H, W)`` for MNIST-like data.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise DataError(f"{directory} is not a directory of IDX files.")
    paths = {key: _idx_path(directory, base) for key, base in IDX_FILES.items()}
    missing = [IDX_FILES[key] + "[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise DataError(f"{directory} lacks the IDX file(s) {', '.join(missing)}; a dataset directory needs "
                        f"{', '.join(IDX_FILES.values())} (each optionally .gz).")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        x, y = arrays["x_" + split], arrays["y_" + split]
        if x.ndim < 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
            raise DataError(f"{paths['x_' + split]} holds images {x.shape} but {paths['y_' + split]} holds labels "
                            f"{y.shape}: expected (N, H, W[, C]) images and N labels.")
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


# ------------------------------------------------------------------ loading


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
    spec = _spec(name)
    if not spec.streaming:
        raise DataError(f"{name} is an in-memory dataset; use load().")
    import tensorflow_datasets as tfds

    data_dir = None if data_dir is None else os.fspath(data_dir)
    try:
        builder = tfds.builder(name, data_dir=data_dir)
        num_train, num_test = _split_size(builder, "train"), _split_size(builder, "validation")
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
        raise DataError(f"tfds could not open {name!r} (data_dir={data_dir!r}): {e}. {name} must be prepared "
                        f"beforehand; see tflth.data.load_stream.") from e
    source = f"tfds {name} (streamed)" + (f" in {data_dir}" if data_dir else "")
    logging.info("Dataset %s: %d train / %d validation images streamed from %s.", name, num_train, num_test, source)
    return StreamDataset(name=name, builder=builder, num_train=num_train, num_test=num_test,
                         num_classes=spec.num_classes, input_shape=(IMAGENET_SIZE, IMAGENET_SIZE, 3),
                         source=source, shuffle_buffer=shuffle_buffer)


# ------------------------------------------------------------------ building blocks


def _positive_int(value, what: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}.") from None
    if value <= 0:
        raise DataError(f"{what} must be positive, got {value}.")
    return value


def _int64(value, what: str) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise DataError(f"{what} must be an integer, got {value!r}.") from None
    if not -(2**63) <= value < 2**63:
        raise DataError(f"{what} must fit in int64, got {value}.")
    return value


def iterations_per_epoch(num_examples: int, batch_size: int) -> int:
    """Steps per epoch, ``ceil(num_examples / batch_size)`` (the last batch may be short)."""
    num_examples = _positive_int(num_examples, "num_examples")
    batch_size = _positive_int(batch_size, "batch_size")
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


def _crop_flip_params(batch_size, seed, padding: int) -> tuple[tf.Tensor, tf.Tensor]:
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
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    offsets, flips = _crop_flip_params(batch, seed, padding)
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    rows = offsets[:, :1] + tf.range(height)[tf.newaxis]
    forward = tf.range(width)[tf.newaxis]
    cols = offsets[:, 1:] + tf.where(flips[:, tf.newaxis], width - 1 - forward, forward)
    out = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(out, cols, axis=2, batch_dims=1)


_HOST_TENSORS: "weakref.WeakKeyDictionary[ArrayDataset, dict]" = weakref.WeakKeyDictionary()


def _host_tensors(ds: ArrayDataset, split: str) -> tuple[tf.Tensor, tf.Tensor]:
    """``(images, int32 labels)`` of a split as host tensors, converted once per dataset
    (a trainer builds a new pipeline for every ``train`` call: every IMP level)."""
    cache = _HOST_TENSORS.setdefault(ds, {})
    if split not in cache:
        x, y = (ds.x_train, ds.y_train) if split == "train" else (ds.x_test, ds.y_test)
        with tf.device("/cpu:0"):
            cache[split] = (tf.convert_to_tensor(x), tf.convert_to_tensor(y, dtype=tf.int32))
    return cache[split]


def _finish(dataset: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.deterministic = True
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


# ------------------------------------------------------------------ pipelines


def train_batches(ds: ArrayDataset | StreamDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                  start_step: int = 0, augment: bool | None = None) -> tf.data.Dataset:
    """The infinite training stream from global step ``start_step``: ``(x float32 [B, H, W, C], y int32 [B])``.

    ``augment=None`` uses the dataset's standard choice (:func:`augments`). See the
    module docstring for the exact contract.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    data_order_seed = _int64(data_order_seed, "data_order_seed")
    augment_seed = _int64(augment_seed, "augment_seed")
    start_step = operator.index(start_step)
    if start_step < 0:
        raise DataError(f"start_step must be >= 0, got {start_step}.")
    augment = augments(ds.name) if augment is None else bool(augment)
    if isinstance(ds, StreamDataset):
        return _stream_train_batches(ds, batch_size, data_order_seed, augment_seed, start_step, augment)
    return _array_train_batches(ds, batch_size, data_order_seed, augment_seed, start_step, augment)


def _array_train_batches(ds: ArrayDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                         start_step: int, augment: bool) -> tf.data.Dataset:
    n = ds.num_train
    ipe = iterations_per_epoch(n, batch_size)
    start_epoch, offset = divmod(start_step, ipe)
    x_all, y_all = _host_tensors(ds, "train")
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
    return _finish(steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def eval_batches(ds: ArrayDataset | StreamDataset, split: str = "test", batch_size: int = 1000) -> tf.data.Dataset:
    """One pass over ``split`` (``test`` or ``train``) in a fixed order, normalised, unaugmented."""
    batch_size = _positive_int(batch_size, "batch_size")
    if split not in ("test", "train"):
        raise DataError(f"split must be 'test' or 'train', got {split!r}.")
    if isinstance(ds, StreamDataset):
        return _stream_eval_batches(ds, split, batch_size)
    x_all, y_all = _host_tensors(ds, split)
    batches = tf.data.Dataset.range(iterations_per_epoch(int(x_all.shape[0]), batch_size))

    def make_batch(b):
        window = slice(b * batch_size, (b + 1) * batch_size)
        return normalize(x_all[window], ds.name), y_all[window]

    return _finish(batches.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


# ------------------------------------------------------------------ ImageNet streaming


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


def _stream_train_batches(ds: StreamDataset, batch_size: int, data_order_seed: int, augment_seed: int,
                          start_step: int, augment: bool) -> tf.data.Dataset:
    """As :func:`_array_train_batches`, with a buffer shuffle seeded from ``(seed, epoch)``.

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
        batches = records.shuffle(ds.shuffle_buffer, seed=shuffle_seed, reshuffle_each_iteration=False)
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
    return _finish(steps.map(make_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _stream_eval_batches(ds: StreamDataset, split: str, batch_size: int) -> tf.data.Dataset:
    records = _records(ds, ds.test_split if split == "test" else ds.train_split)
    images = records.map(lambda encoded, label: (_imagenet_eval_image(encoded), label),
                         num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _finish(images.batch(batch_size))

"""Where the arrays of a dataset come from: :func:`load` and :func:`from_arrays`.

:func:`load` returns the training and test split of a named dataset
(:func:`~tflth.data.names`):

* ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100`` as an in-memory
  :class:`~tflth.data.ArrayDataset` (uint8 HWC images, integer labels). The arrays come
  from, in this order: ``data_dir`` when it is a ``.npz`` file (keys ``x_train, y_train,
  x_test, y_test``); ``data_dir`` when it is a directory of MNIST-format IDX files
  (``train-images-idx3-ubyte[.gz]`` and friends, :mod:`tflth.data.idx`); for
  ``fashion_mnist`` without a ``data_dir``, the Debian package ``dataset-fashion-mnist``
  (:data:`DEBIAN_FASHION_MNIST_DIR`); ``data_dir`` when it is a tfds data directory in
  which the dataset is prepared (nothing is downloaded into a ``data_dir``: any other
  directory is refused); without a ``data_dir``, TensorFlow Datasets in its default data
  directory, which downloads the dataset the first time when its server answers (when
  it does not, the error comes at once, says how to prepare the dataset and leaves the
  directory as it was).
* ``imagenet2012`` as a :class:`~tflth.data.StreamDataset` read from a prepared tfds
  directory, since it does not fit in memory (see :func:`~tflth.data.load_stream`).

MNIST and Fashion-MNIST share file names, shapes and label range, so the arrays given as
one of them are checked not to be the other's (:data:`KNOWN_LABEL_PREFIXES`): normalising
one with the other's constants would train silently under the wrong name.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
import urllib.request
import zipfile
import zlib
from typing import TYPE_CHECKING

import numpy as np
from absl import logging

from tflth.data.datasets import ArrayDataset, StreamDataset
from tflth.data.errors import DataError
from tflth.data import registry
from tflth.data.idx import IDX_FILES, has_idx_files, read_idx_dir
from tflth.data.imagenet import load_stream

if TYPE_CHECKING:
    import tensorflow as tf

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "KNOWN_LABEL_PREFIXES", "TFDS_DOWNLOAD_SERVERS", "load", "from_arrays",
           "check_not_another_dataset", "download_unreachable"]

#: Where the Debian package ``dataset-fashion-mnist`` installs its IDX files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

#: The first ten labels of each split of the original MNIST and Fashion-MNIST files (in
#: their published order, as the IDX files and ``keras.datasets`` hold them): what tells
#: the two apart, since they share file names, image shape and label range.
KNOWN_LABEL_PREFIXES: dict[str, dict[str, tuple[int, ...]]] = {
    "mnist": {"train": (5, 0, 4, 1, 9, 2, 1, 3, 1, 4), "test": (7, 2, 1, 0, 4, 1, 4, 9, 5, 9)},
    "fashion_mnist": {"train": (9, 0, 0, 3, 0, 2, 7, 2, 5, 5), "test": (9, 2, 1, 1, 6, 1, 4, 6, 5, 7)},
}
_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}

#: ``(host, port)`` each dataset's tfds builder downloads from (tensorflow_datasets'
#: ``image_classification/mnist.py`` and ``cifar.py``), asked before a download starts so
#: that a machine without a network fails at once instead of after tfds's retries.
TFDS_DOWNLOAD_SERVERS: dict[str, tuple[str, int]] = {
    "mnist": ("storage.googleapis.com", 443),
    "fashion_mnist": ("fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80),
    "cifar10": ("www.cs.toronto.edu", 443),
    "cifar100": ("www.cs.toronto.edu", 443),
}
_PROBE_SECONDS = 5.0


def from_arrays(name: str, x_train, y_train, x_test, y_test, source: str = "arrays") -> ArrayDataset:
    """Validate four arrays as dataset ``name`` (whose normalisation they will get).

    Images must be integers in [0, 255], shaped ``(N, H, W)`` (a channel axis is added)
    or ``(N, H, W, C)`` with ``C`` matching the dataset's normalisation constants; labels
    are integers in ``[0, num_classes)``.
    """
    facts = registry.spec(name)
    arrays = {}
    for key, images, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        arrays["x_" + key] = _as_images(np.asarray(images), f"x_{key} of {source}")
        arrays["y_" + key] = _as_labels(np.asarray(labels), facts.num_classes, f"y_{key} of {source}")
        if arrays["x_" + key].shape[0] != arrays["y_" + key].shape[0]:
            raise DataError(f"{source}: x_{key} has {arrays['x_' + key].shape[0]} images but y_{key} "
                            f"has {arrays['y_' + key].shape[0]} labels.")
    shape = arrays["x_train"].shape[1:]
    if arrays["x_test"].shape[1:] != shape:
        raise DataError(f"{source}: train images are {shape} but test images are {arrays['x_test'].shape[1:]}.")
    if shape[-1] != len(facts.mean):
        raise DataError(f"{source}: images have {shape[-1]} channel(s) but {name} is normalised over "
                        f"{len(facts.mean)}.")
    if arrays["x_train"].shape[0] == 0:
        raise DataError(f"{source}: the training split is empty.")
    check_not_another_dataset(name, arrays["y_train"], arrays["y_test"], source)
    for key, array in arrays.items():
        arrays[key] = view = array.view()  # read-only views leave the caller's arrays writable
        view.setflags(write=False)
    return ArrayDataset(name=name, num_classes=facts.num_classes, input_shape=tuple(int(d) for d in shape),
                        source=source, **arrays)


def check_not_another_dataset(name: str, y_train, y_test, source: str) -> None:
    """Refuse labels whose first ten are those of another dataset's original files
    (:data:`KNOWN_LABEL_PREFIXES`): Fashion-MNIST's files given as ``mnist``, or the
    reverse. Labels of any other order (a user's own data, tfds's shuffled files) pass.

    Raises:
        DataError: one line naming the source, the dataset its labels are, the labels
            found and the ones ``name``'s own files begin with.
    """
    for other, prefixes in KNOWN_LABEL_PREFIXES.items():
        if other == name:
            continue
        for split, labels in (("train", y_train), ("test", y_test)):
            prefix = prefixes[split]
            found = tuple(int(v) for v in np.asarray(labels).ravel()[:len(prefix)])
            if found != prefix:
                continue
            title = _TITLES[other]
            own = KNOWN_LABEL_PREFIXES.get(name, {}).get(split)
            expected = (f"{_TITLES[name]}'s begin {' '.join(map(str, own))}" if own is not None
                        else f"expected {name}'s own data")
            raise DataError(f"{source} hold {title}, not {name}: their {split} labels begin "
                            f"{' '.join(map(str, found))}, as {title}'s do, where {expected}; give {name}'s own "
                            f"files, or load these as {other!r}.")


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
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:  # what np.load raises
        raise DataError(f"Cannot read {path} as a .npz archive: {e}") from e


def _dataset_to_numpy(ds: tf.data.Dataset, what: str, chunk: int = 10_000) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for x, y in ds.batch(chunk).as_numpy_iterator():
        xs.append(x)
        ys.append(y)
    if not xs:
        raise DataError(f"{what} is empty.")
    return np.concatenate(xs), np.concatenate(ys)


class _NotPrepared(DataError):
    """tfds has no prepared copy of the dataset where it looked (caught in this module)."""


def _tfds_arrays(name: str, data_dir: str | None, download: bool) -> tuple[np.ndarray, ...]:
    # Iterating and concatenating (rather than ``batch_size=-1``) also works under
    # ``tfds.testing.mock_data``, where split sizes are unknown.
    import tensorflow_datasets as tfds

    try:
        train, test = tfds.load(name, split=["train", "test"], as_supervised=True, data_dir=data_dir,
                                shuffle_files=False, download=download)
        x_train, y_train = _dataset_to_numpy(train, f"tfds {name} train")
        x_test, y_test = _dataset_to_numpy(test, f"tfds {name} test")
    except DataError:
        raise
    except AssertionError as e:  # what tfds raises for a dataset not prepared (download=False)
        if not download and not tfds.builder(name, data_dir=data_dir).is_prepared():
            raise _NotPrepared from None
        raise DataError(f"tfds could not load {name!r} (data_dir={data_dir!r}): {e}") from e
    except Exception as e:  # broad on purpose: tfds raises many types (download, missing or damaged files, ...)
        raise DataError(f"tfds could not load {name!r} (data_dir={data_dir!r}): {e}. Without a network, pass "
                        f"data_dir= a .npz file or a directory of MNIST-format IDX files.") from e
    return x_train, y_train, x_test, y_test


def _how_to_prepare(name: str, where: str) -> str:
    return f"tfds.builder({name!r}, data_dir={where!r}).download_and_prepare() on a machine with a network"


def _listing(directory: str) -> str:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        return f"an unreadable directory ({e.strerror or e})"
    if not entries:
        return "an empty directory"
    shown = ", ".join(entries[:5]) + (f", ... ({len(entries)} entries)" if len(entries) > 5 else "")
    return f"a directory holding {shown}"


def download_unreachable(name: str, timeout: float = _PROBE_SECONDS) -> str | None:
    """Why tfds could not download ``name`` now (its server, or the proxy configured for
    it, refuses or does not answer within ``timeout`` seconds), or ``None`` when it
    answers or tflth does not know ``name``'s server (:data:`TFDS_DOWNLOAD_SERVERS`).
    Opens one TCP connection and closes it; writes nothing."""
    if name not in TFDS_DOWNLOAD_SERVERS:
        return None
    host, port = TFDS_DOWNLOAD_SERVERS[name]
    proxy = urllib.request.getproxies().get("https" if port == 443 else "http")
    if proxy:
        parsed = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if parsed.hostname:
            host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    outcome: list[str | None] = []

    def probe():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as e:
            outcome.append(f"{host}:{port}: {e.strerror or e}")

    thread = threading.Thread(target=probe, daemon=True)  # name resolution has no timeout of its own
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"{host}:{port}: no answer within {timeout:g} s"


def _load_tfds(name: str, data_dir: str | None) -> tuple[np.ndarray, ...]:
    """The arrays of a prepared tfds dataset, in ``data_dir`` (never downloaded into) or
    in tfds's default data directory (downloaded the first time if its server answers)."""
    try:
        return _tfds_arrays(name, data_dir, download=False)
    except _NotPrepared:
        pass
    if data_dir is not None:
        raise DataError(f"data_dir={data_dir} is {_listing(data_dir)}, not a dataset: expected MNIST-format IDX files "
                        f"({', '.join(IDX_FILES.values())}, each optionally .gz), a .npz file or a tfds data "
                        f"directory with {name!r} prepared in it (nothing is downloaded into a data_dir; prepare "
                        f"one with {_how_to_prepare(name, data_dir)}).")
    import tensorflow_datasets as tfds

    where = tfds.builder(name).data_dir
    root = where.split(f"{os.sep}{name}{os.sep}")[0]
    unreachable = download_unreachable(name)
    if unreachable is not None:
        raise DataError(f"tfds {name} is not prepared in {root} and cannot be downloaded now ({unreachable}): "
                        f"prepare it with {_how_to_prepare(name, root)}, or pass data_dir= a .npz file (x_train, "
                        "y_train, x_test, y_test) or a directory of MNIST-format IDX files.")
    return _tfds_arrays(name, None, download=True)


def _resolve(name: str, data_dir: str | None) -> tuple[str, str | None]:
    """``(kind, location)`` with kind ``npz``, ``idx`` or ``tfds``; see :func:`load`."""
    if data_dir is not None:
        if os.path.isfile(data_dir):
            if data_dir.endswith(".npz"):
                return "npz", data_dir
            raise DataError(f"data_dir={data_dir} is a file but not a .npz archive (with keys x_train, y_train, "
                            f"x_test, y_test).")
        if not os.path.isdir(data_dir):
            raise DataError(f"data_dir={data_dir} does not exist; expected a .npz file, a directory of MNIST-format "
                            f"IDX files or a tfds data directory with {name!r} prepared in it.")
        if has_idx_files(data_dir):
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
    if registry.spec(name).streaming:
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

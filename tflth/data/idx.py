"""Reading MNIST-format IDX files, raw or gzipped, one at a time or as a dataset directory."""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

from tflth.data.errors import DataError

__all__ = ["IDX_FILES", "read_idx", "read_idx_dir", "has_idx_files"]

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


def has_idx_files(directory: str) -> bool:
    """Whether ``directory`` holds any of the :data:`IDX_FILES` (raw or ``.gz``)."""
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

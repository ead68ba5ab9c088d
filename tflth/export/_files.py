"""Bytes of files that a writer insists on producing at a path of its own.

Keras writes ``.keras`` files and ``.tflite`` exports to a path it is given; the export
formats want the bytes (so that everything is produced before anything is written,
and then written atomically by :mod:`tflth.fileio`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

from tflth import fileio

__all__ = ["bytes_of", "write_bytes"]


def bytes_of(filename: str, write: Callable[[str], object]) -> bytes:
    """Call ``write(path)`` with ``path`` a fresh file named ``filename`` in a temporary
    directory, and return what it wrote there (the directory is removed)."""
    with tempfile.TemporaryDirectory(prefix="tflth_export_") as tmp:
        path = os.path.join(tmp, filename)
        write(path)
        with open(path, "rb") as f:
            return f.read()


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """``data`` written to ``path`` atomically (:func:`tflth.fileio.atomic_write`); returns ``path``."""
    return fileio.atomic_write(path, lambda f: f.write(data))

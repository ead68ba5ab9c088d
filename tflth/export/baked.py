"""Baked tickets: a plain ``.keras`` file with the pruned weights stored as zeros.

The file is what ``model.save`` writes for :func:`tflth.masking.unmasked` ``(model)``:
Keras's own format, loadable by plain ``keras.saving.load_model`` without tflth, the
same layers and outputs as the masked model; its size is the dense network's (zeros
take as much room as any weight), the reference the other formats are compared with.
"""

from __future__ import annotations

import os

from tflth import masking
from tflth.export import _files

__all__ = ["keras_bytes", "save_baked"]


def keras_bytes(model) -> bytes:
    """The bytes of ``model.save(...)`` of ``model`` as it is (masks included if it has them)."""
    return _files.bytes_of("model.keras", model.save)


def save_baked(model, path: str | os.PathLike) -> str:
    """Write ``model`` (with or without masks) as a plain ``.keras`` file, zeros baked in.

    Args:
        model: a Keras model with tflth masks (or without).
        path: the ``.keras`` file to write (atomically).

    Returns:
        ``path``.

    Example:

    >>> import os, tempfile, keras, numpy as np, tflth
    >>> from tflth import export
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> tflth.masking.apply_masks(net, {"net/fc/kernel": np.eye(4, 3)})
    >>> path = export.save_baked(net, os.path.join(tempfile.mkdtemp(), "baked.keras"))
    >>> plain = keras.saving.load_model(path)
    >>> tflth.masking.has_masks(plain), int(np.count_nonzero(plain.get_layer("fc").kernel))
    (False, 3)
    """
    return _files.write_bytes(path, keras_bytes(masking.unmasked(model)))

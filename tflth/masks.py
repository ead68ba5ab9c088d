"""Masks as data: ``{layer_path: bool ndarray}`` read from, written to and saved for models.

A *layer path* is the ``/``-joined chain of layer names from the model down to a masked
layer (just the layer name for a layer at the top level). Prunable weights are exactly
the kernels of tflth masked layers; biases, BatchNorm and embeddings never are.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import numpy as np

from tflth import _keras, fileio
from tflth.layers import is_masked

__all__ = [
    "MaskError",
    "prunable_layers",
    "get_masks",
    "set_masks",
    "get_kernels",
    "kernels_in",
    "ones_like",
    "apply_mask",
    "save_masks",
    "load_masks",
    "LayerDensity",
    "DensityReport",
    "density_report",
]

Masks = dict[str, np.ndarray]


class MaskError(ValueError):
    """A mask does not fit the model or is not a valid mask."""


def _walk(layer, prefix):
    for child in getattr(layer, "layers", None) or _keras.sublayers(layer, recursive=False):
        path = f"{prefix}/{child.name}" if prefix else child.name
        if is_masked(child):
            yield path, child
        yield from _walk(child, path)


def prunable_layers(model) -> dict:
    """``{layer_path: layer}`` for every masked (prunable) layer of ``model``, in model order.

    A layer path is the ``/``-joined chain of layer names from ``model`` down to the
    layer (just its name at the top level); the paths are the keys of every mask
    mapping in tflth. Nested models and custom layers holding masked sublayers are
    walked; only tflth masked layers are listed (plain Keras layers are not prunable).

    Args:
        model: A Keras model (or layer) containing tflth masked layers.

    Returns:
        A dict ``{path: layer}``, in the order of the model's layers; empty when the
        model has no masked layer.

    Raises:
        MaskError: two masked layers have the same path (give them distinct names).

    Example:

    >>> import keras, tflth
    >>> block = keras.Sequential([keras.Input((3,)), tflth.MaskedDense(2, name="inner")], name="block")
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc"),
    ...                           keras.layers.BatchNormalization(name="bn"), block])
    >>> {path: type(layer).__name__ for path, layer in tflth.masks.prunable_layers(model).items()}
    {'fc': 'MaskedDense', 'block/inner': 'MaskedDense'}
    """
    layers = {}
    for path, layer in _walk(model, ""):
        if path in layers:
            raise MaskError(f"Two masked layers share the path '{path}'; give them distinct names.")
        layers[path] = layer
    return layers


def get_masks(model) -> Masks:
    """All masks of ``model`` as boolean arrays (``True`` = weight kept).

    Args:
        model: A Keras model containing tflth masked layers.

    Returns:
        ``{layer_path: ndarray}``, one boolean array per masked layer (see
        :func:`prunable_layers`), shaped like that layer's kernel; a copy, not a view of
        the model's variables.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc1"),
    ...                           tflth.MaskedDense(2, name="fc2")])
    >>> masks = tflth.masks.get_masks(model)
    >>> {path: (m.dtype.name, m.shape, bool(m.all())) for path, m in masks.items()}
    {'fc1': ('bool', (4, 3), True), 'fc2': ('bool', (3, 2), True)}
    """
    return {path: layer.kernel_mask.numpy() != 0 for path, layer in prunable_layers(model).items()}


def get_kernels(model) -> dict[str, np.ndarray]:
    """The kernel of every masked layer, as float arrays.

    The kernel variables as stored: pruned entries are zero once :func:`set_masks` (or
    any training step) has applied the mask.

    Args:
        model: A Keras model containing tflth masked layers.

    Returns:
        ``{layer_path: ndarray}`` with the kernel of each masked layer (copies).

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc1"),
    ...                           tflth.MaskedDense(2, name="fc2")])
    >>> {path: k.shape for path, k in tflth.masks.get_kernels(model).items()}
    {'fc1': (4, 3), 'fc2': (3, 2)}
    """
    return {path: layer.kernel_variable.numpy() for path, layer in prunable_layers(model).items()}


def kernels_in(weights: Mapping[str, np.ndarray], model) -> dict[str, np.ndarray]:
    """The prunable kernels of ``model`` taken from ``weights`` (``{variable path: array}``,
    as ``Trainer.get_weights`` and checkpoints hold them), keyed by layer path like masks."""
    return {p: weights[layer.kernel_variable.path] for p, layer in prunable_layers(model).items()}


def ones_like(model) -> Masks:
    """A full (dense) mask for ``model``: every weight kept.

    Args:
        model: A Keras model containing tflth masked layers.

    Returns:
        ``{layer_path: ndarray}`` of all-``True`` boolean arrays shaped like the
        kernels: a starting point for building a mask by hand.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc1"),
    ...                           tflth.MaskedDense(2, name="fc2")])
    >>> masks = tflth.masks.ones_like(model)
    >>> masks["fc2"][:, 1] = False  # prune every weight into output unit 1 of fc2
    >>> tflth.masks.set_masks(model, masks)
    >>> int(tflth.masks.get_masks(model)["fc2"].sum())
    3
    """
    return {p: np.ones(layer.kernel_variable.shape, bool) for p, layer in prunable_layers(model).items()}


def _check(masks: Mapping[str, np.ndarray], layers: Mapping, strict: bool) -> None:
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise MaskError(f"Masks name unknown layers {unknown}; the model's prunable layers are {sorted(layers)}.")
    missing = sorted(set(layers) - set(masks))
    if strict and missing:
        raise MaskError(f"Masks are missing layers {missing} (strict=True).")
    for path, mask in masks.items():
        expected = tuple(layers[path].kernel_variable.shape)
        if tuple(np.shape(mask)) != expected:
            raise MaskError(
                f"Mask for layer '{path}' has shape {tuple(np.shape(mask))}; expected {expected}."
            )


def set_masks(model, masks: Mapping[str, np.ndarray], strict: bool = True) -> None:
    """Write ``masks`` into ``model`` and zero the pruned kernel entries.

    Each mask is written to its layer's ``kernel_mask`` variable (as ``1.0`` / ``0.0``)
    and the kernel is multiplied by it, so pruned weights are exactly zero from now on
    (the masked layers keep them there during training). Surviving weights keep their
    values. Call in cross-replica context (outside ``strategy.run``), e.g. between
    training rounds.

    Args:
        model: A Keras model containing tflth masked layers.
        masks: ``{layer_path: array}`` (see :func:`prunable_layers`), each array shaped
            like the layer's kernel; nonzero / ``True`` keeps a weight.
        strict: If ``True`` (default), every masked layer of ``model`` must have a
            mask; if ``False``, layers missing from ``masks`` keep their current mask.

    Raises:
        MaskError: a path is not a masked layer of ``model``, a mask's shape differs
            from its kernel's, or (``strict``) a masked layer has no mask. Nothing is
            written then.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc1"),
    ...                           tflth.MaskedDense(2, name="fc2")])
    >>> keep = np.zeros((4, 3), bool)
    >>> keep[0] = True  # only input 0 feeds fc1
    >>> tflth.masks.set_masks(model, {"fc1": keep}, strict=False)
    >>> int(np.count_nonzero(tflth.masks.get_kernels(model)["fc1"]))
    3
    >>> tflth.masks.set_masks(model, {"fc1": keep})
    Traceback (most recent call last):
    ...
    tflth.masks.MaskError: Masks are missing layers ['fc2'] (strict=True).
    """
    layers = prunable_layers(model)
    _check(masks, layers, strict)
    for path, mask in masks.items():
        layer = layers[path]
        value = np.asarray(mask).astype(layer.kernel_mask.dtype)
        layer.kernel_mask.assign(value)
        kernel = layer.kernel_variable
        kernel.assign(kernel.numpy() * value.astype(kernel.dtype))


def apply_mask(weights: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``weights ⊙ mask`` for every layer path present in ``masks`` (others unchanged).

    Pure NumPy, no model involved: e.g. to mask kernels read from a checkpoint or from
    :func:`get_kernels`.

    Args:
        weights: ``{layer_path: array}`` of kernels (may hold more paths than ``masks``).
        masks: ``{layer_path: array}``; each mask must have its kernel's shape.

    Returns:
        A new dict with every entry of ``weights``; those named in ``masks`` multiplied
        by their mask (in the kernel's dtype).

    Raises:
        MaskError: a mask has no kernel in ``weights`` or a different shape.

    Example:

    >>> import numpy as np, tflth
    >>> weights = {"fc": np.array([[1.0, 2.0], [3.0, 4.0]]), "bias": np.array([5.0])}
    >>> out = tflth.masks.apply_mask(weights, {"fc": np.array([[True, False], [False, True]])})
    >>> out["fc"], out["bias"]
    (array([[1., 0.],
           [0., 4.]]), array([5.]))
    """
    out = dict(weights)
    for path, mask in masks.items():
        if path not in weights:
            raise MaskError(f"No weights for masked layer '{path}'.")
        w = np.asarray(weights[path])
        if w.shape != np.shape(mask):
            raise MaskError(f"Mask for layer '{path}' has shape {np.shape(mask)}; weights have {w.shape}.")
        out[path] = w * np.asarray(mask, dtype=w.dtype)
    return out


def save_masks(path: str, masks: Mapping[str, np.ndarray]) -> None:
    """Save masks to ``path`` as a compressed ``.npz`` file, atomically.

    One boolean array per layer path. The file is written through
    :func:`tflth.fileio.write_npz` (a temporary file, then a rename): a reader never
    sees half a file, and an interrupted save leaves any previous file intact.

    Args:
        path: The file to write (conventionally ending in ``.npz``).
        masks: ``{layer_path: array}``; nonzero / ``True`` means kept.

    Raises:
        tflth.fileio.StorageFullError: the filesystem is full.

    Example:

    >>> import os, tempfile, numpy as np, tflth
    >>> path = os.path.join(tempfile.mkdtemp(), "mask.npz")
    >>> tflth.masks.save_masks(path, {"block/fc": np.array([[1, 0], [0, 1]])})
    >>> tflth.masks.load_masks(path)
    {'block/fc': array([[ True, False],
           [False,  True]])}
    """
    fileio.write_npz(path, {k: np.asarray(v, bool) for k, v in masks.items()}, compressed=True)


def load_masks(path: str) -> Masks:
    """Load masks saved by :func:`save_masks`.

    Args:
        path: A ``.npz`` file written by :func:`save_masks` (e.g. a ``mask.npz`` of a
            lottery-ticket run).

    Returns:
        ``{layer_path: ndarray}`` of boolean arrays, ready for :func:`set_masks`.

    Raises:
        MaskError: there is no file at ``path``.
        tflth.fileio.DamagedFileError: the file is not a readable ``.npz`` archive.

    Example: see :func:`save_masks`.
    """
    if not os.path.exists(path):
        raise MaskError(f"No mask file at '{path}'.")
    return {k: v.astype(bool) for k, v in fileio.read_npz(path).items()}


@dataclasses.dataclass(frozen=True)
class LayerDensity:
    path: str
    total: int
    survivors: int

    @property
    def density(self) -> float:
        return self.survivors / self.total if self.total else 1.0


@dataclasses.dataclass(frozen=True)
class DensityReport:
    layers: tuple[LayerDensity, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def survivors(self) -> int:
        return sum(layer.survivors for layer in self.layers)

    @property
    def density(self) -> float:
        return self.survivors / self.total if self.total else 1.0

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "survivors": self.survivors,
            "density": self.density,
            "layers": {
                l.path: {"total": l.total, "survivors": l.survivors, "density": l.density}
                for l in self.layers
            },
        }

    def table(self) -> str:
        rows = [f"{'layer':<40} {'survivors':>12} {'total':>12} {'density':>8}"]
        for l in self.layers + (LayerDensity("TOTAL", self.total, self.survivors),):
            rows.append(f"{l.path:<40} {l.survivors:>12,} {l.total:>12,} {100 * l.density:>7.2f}%")
        return "\n".join(rows)


def density_report(masks_or_model) -> DensityReport:
    """Per-layer and total counts of prunable weights and survivors.

    Args:
        masks_or_model: A mask mapping ``{layer_path: array}`` (as from
            :func:`get_masks` or :func:`load_masks`) or a model with masked layers (its
            current masks are read).

    Returns:
        A :class:`DensityReport`: ``layers`` (one :class:`LayerDensity` per path, with
        ``path``, ``total``, ``survivors`` and ``density``), the totals ``total``,
        ``survivors`` and ``density`` (survivors / total; ``1.0`` when empty),
        ``table()`` for printing and ``to_dict()`` for JSON.

    Example:

    >>> import numpy as np, tflth
    >>> report = tflth.masks.density_report({"fc1": np.ones((4, 3), bool), "fc2": np.eye(3, 2, dtype=bool)})
    >>> report.total, report.survivors, round(report.density, 3)
    (18, 14, 0.778)
    >>> print(report.table())  # doctest: +NORMALIZE_WHITESPACE
    layer                                       survivors        total  density
    fc1                                                12           12  100.00%
    fc2                                                 2            6   33.33%
    TOTAL                                              14           18   77.78%
    """
    masks = masks_or_model if isinstance(masks_or_model, Mapping) else get_masks(masks_or_model)
    return DensityReport(
        tuple(LayerDensity(p, int(np.size(m)), int(np.count_nonzero(m))) for p, m in masks.items())
    )

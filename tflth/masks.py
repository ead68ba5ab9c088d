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

from tflth import fileio
from tflth.layers import is_masked

__all__ = [
    "MaskError",
    "prunable_layers",
    "get_masks",
    "set_masks",
    "get_kernels",
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
    for child in getattr(layer, "layers", None) or layer._flatten_layers(include_self=False, recursive=False):
        path = f"{prefix}/{child.name}" if prefix else child.name
        if is_masked(child):
            yield path, child
        yield from _walk(child, path)


def prunable_layers(model) -> dict:
    """``{layer_path: layer}`` for every masked layer of ``model``, in model order."""
    layers = {}
    for path, layer in _walk(model, ""):
        if path in layers:
            raise MaskError(f"Two masked layers share the path '{path}'; give them distinct names.")
        layers[path] = layer
    return layers


def get_masks(model) -> Masks:
    """All masks of ``model`` as boolean arrays (True = weight kept)."""
    return {path: layer.kernel_mask.numpy() != 0 for path, layer in prunable_layers(model).items()}


def get_kernels(model) -> dict[str, np.ndarray]:
    """The (unmasked) kernel of every masked layer, as float arrays."""
    return {path: layer.kernel_variable.numpy() for path, layer in prunable_layers(model).items()}


def ones_like(model) -> Masks:
    """A full (dense) mask for ``model``."""
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

    Call in cross-replica context (outside ``strategy.run``). With ``strict`` every
    prunable layer must have a mask; otherwise missing layers keep theirs.
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
    """``weights ⊙ mask`` for every layer path present in ``masks`` (others unchanged)."""
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
    """Save masks to ``path`` (``.npz``), atomically."""
    fileio.write_npz(path, {k: np.asarray(v, bool) for k, v in masks.items()}, compressed=True)


def load_masks(path: str) -> Masks:
    """Load masks saved by :func:`save_masks`; a damaged file raises
    :class:`tflth.fileio.DamagedFileError`."""
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
    """Per-layer and total counts of prunable weights and survivors."""
    masks = masks_or_model if isinstance(masks_or_model, Mapping) else get_masks(masks_or_model)
    return DensityReport(
        tuple(LayerDensity(p, int(np.size(m)), int(np.count_nonzero(m))) for p, m in masks.items())
    )

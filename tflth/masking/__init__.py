"""Masks for any Keras 3 model, keyed by variable path.

* :class:`Masks` — the value type (``{variable path: bool array}``), its checks, files
  and density report (:mod:`tflth.masking.masks`);
* :func:`maskable_variables`, :func:`select` — which variables can be masked, and which
  a run masks; :func:`output_variables` — a model's head, from its layer graph
  (:mod:`tflth.masking.maskable`);
* :func:`apply_masks`, :func:`masks_of`, :func:`remove_masks`, :func:`masked` — masks
  held in place in a model under any optimizer (:mod:`tflth.masking.state`);
* :func:`load_model`, :func:`unmasked` — ``.keras`` files with masks (tflth 0.1's
  included), and plain copies (:mod:`tflth.masking.saving`);
* :class:`RewindPoint`, :func:`rewind` (:class:`RewindError`) — lottery tickets for
  ``model.fit`` users (:mod:`tflth.masking.fit`).
"""

from __future__ import annotations

from collections.abc import Sequence

from tflth.masking.masks import DensityReport, LayerDensity, MaskError, Masks, layer_path_of, legacy_aliases, path_matches
from tflth.masking.maskable import (MASKABLE, Maskable, maskable_variables, output_layer_path, output_variables,
                                    select)
from tflth.masking.state import (MaskConstraint, apply_masks, constraints_paused, has_masks, masked_variables,
                                 masked_weights, masks_of, remove_masks, zero_pruned)
from tflth.masking.saving import LEGACY_LAYERS, LegacyFileError, load_model, unmasked
from tflth.masking.fit import RewindError, RewindPoint, rewind

__all__ = ["DensityReport", "LayerDensity", "MaskError", "Masks", "layer_path_of", "legacy_aliases", "path_matches", "MASKABLE",
           "Maskable", "maskable_variables", "output_layer_path", "output_variables", "select", "MaskConstraint", "apply_masks",
           "constraints_paused", "has_masks", "masked_variables", "masked_weights", "masks_of", "remove_masks",
           "zero_pruned", "LEGACY_LAYERS", "LegacyFileError", "load_model", "unmasked", "RewindError", "RewindPoint", "rewind", "masked", "shapes"]


def shapes(model) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of ``model``'s masked variables (for :meth:`Masks.ones`, :meth:`Masks.check`)."""
    return {p: tuple(int(d) for d in v.shape) for p, (v, _) in masked_variables(model).items()}


def masked(model, patterns: Sequence[str] = (), exclude_output: bool = False):
    """Make ``model`` prunable in place, with every selected variable's mask all ones;
    returns ``model`` itself.

    Selects variables with :func:`select` (``patterns``, ``exclude_output``) and applies
    all-ones masks (:func:`apply_masks`): the model computes exactly what it computed
    before, and from now on :func:`apply_masks` prunes it. A model that has masks
    already is returned unchanged. Call inside ``strategy.scope()`` under
    ``tf.distribute``.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2, name="out")], name="net")
    >>> tflth.masked(model) is model
    True
    >>> list(tflth.masking.masks_of(model))
    ['net/hidden/kernel', 'net/out/kernel']
    """
    if has_masks(model):
        return model
    chosen = select(model, patterns, exclude_output=exclude_output)
    apply_masks(model, Masks.ones({p: m.shape for p, m in chosen.items()}))
    return model

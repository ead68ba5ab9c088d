"""``.keras`` files of masked models, and plain copies without tflth.

``model.save("m.keras")`` of a masked model writes Keras's own file — config and weights,
with the pruned entries exactly zero — plus one extra group, ``_tflth_mask_state``, with
the masks and their variable paths (:class:`tflth.masking.state.MaskState`). So:

* ``tflth.masking.load_model("m.keras")`` (or ``tflth.load_model``) loads the model
  *with* its masks: it keeps zeros when trained on;
* plain ``keras.saving.load_model("m.keras")``, without tflth installed, loads the same
  file as an ordinary model with the zeros baked in (Keras ignores the extra group);
* :func:`unmasked` gives that plain copy in memory.

Custom layers and subclassed models need whatever Keras needs to load them
(``@keras.saving.register_keras_serializable`` or ``custom_objects``); tflth adds no
requirement of its own.

Files of tflth 0.1
------------------
tflth 0.1 masked with its own layer classes, registered with Keras as
``tflth>MaskedDense``, ``tflth>MaskedConv2D`` and ``tflth>MaskedDepthwiseConv2D``
(:data:`LEGACY_LAYERS`), each saving ``kernel``, ``bias`` and its ``mask`` itself.
:func:`load_model` reads such a file as today's masked model: each of those layers
becomes the Keras layer it extended (same config, kernel with its pruned entries zero)
and its mask a tflth mask; ``model.save`` then writes today's format. Plain
``keras.saving.load_model`` cannot read them (the classes are gone).
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import keras
import numpy as np

from tflth import _keras
from tflth.masking.masks import MaskError, Masks
from tflth.masking.state import STATE_ATTRIBUTE, apply_masks, masks_detached

__all__ = ["LEGACY_LAYERS", "LegacyFileError", "load_model", "read_masks", "unmasked"]

_WEIGHTS = "model.weights.h5"
_CONFIG = "config.json"

#: tflth 0.1's masked layers, by the name a ``.keras`` file's config registers them
#: under, and the Keras layer each one extended (and is loaded as).
LEGACY_LAYERS: dict[str, type] = {
    "tflth>MaskedDense": keras.layers.Dense,
    "tflth>MaskedConv2D": keras.layers.Conv2D,
    "tflth>MaskedDepthwiseConv2D": keras.layers.DepthwiseConv2D,
}
_LEGACY_PREFIX = "tflth>Masked"


class LegacyFileError(MaskError):
    """A ``.keras`` file names a tflth 0.1 class that this tflth cannot map to a Keras layer."""


def read_masks(path: str | os.PathLike, model=None) -> Masks:
    """The masks stored in a ``.keras`` file by ``model.save`` (empty if it has none).

    Keyed by the saved model's variable paths, or, given the loaded ``model``, by its
    paths (matched by position in ``model.weights``: a model loaded from a file may
    name its variables differently, e.g. a Sequential drops its own name).

    Raises:
        MaskError: no such file, not a ``.keras`` archive, or a damaged mask group.
    """
    import h5py

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MaskError(f"No .keras file at '{path}'.")
    try:
        with zipfile.ZipFile(path) as archive, archive.open(_WEIGHTS) as raw:
            with h5py.File(raw, "r") as h5:
                group = h5.get(f"{STATE_ATTRIBUTE}/vars")
                if group is None:
                    return Masks({})
                index = json.loads(bytes(np.asarray(group["paths"])).decode())
                arrays = [np.asarray(group[str(i)]) for i in range(len(index["paths"]))]
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as e:
        raise MaskError(f"'{path}' is not a .keras file with readable masks ({type(e).__name__}: {e}).") from None
    if model is None:
        return Masks(dict(zip(index["paths"], arrays)))
    weights = model.weights
    out = {}
    for saved, i, array in zip(index["paths"], index["weight_index"], arrays):
        if not 0 <= i < len(weights) or tuple(weights[i].shape) != array.shape:
            raise MaskError(f"'{path}': the mask of '{saved}' (weight {i}, shape {array.shape}) does not fit "
                            f"model '{model.name}'.")
        out[weights[i].path] = array
    return Masks(out)



def _legacy_class(registered: str, base: type) -> type:
    """A ``base`` layer that reads one tflth 0.1 masked layer's weights: ``0`` (kernel),
    ``1`` (bias) and ``mask`` (absent in a store the plain layer wrote: all ones). The
    kernel is loaded with its pruned entries zero; the mask is kept for :func:`load_model`.
    The class has the 0.1 class's name (``MaskedDense``): Keras finds a layer's weights in
    the file by its class name."""

    class Legacy(base):
        def load_own_variables(self, store):
            keys = list(store.keys())
            own = {k: store[k] for k in keys if k != "mask"}
            super().load_own_variables(own)
            mask = np.asarray(store["mask"]) if "mask" in keys else None
            if mask is not None:
                if mask.shape != tuple(self.kernel.shape):
                    raise LegacyFileError(f"Layer '{self.name}' of a tflth 0.1 file has a mask of shape {mask.shape} "
                                          f"for a kernel of shape {tuple(self.kernel.shape)}.")
                self.kernel.assign(np.where(mask != 0, np.asarray(self.kernel.numpy()), 0).astype(self.kernel.dtype))
            object.__setattr__(self, "_tflth_legacy_mask", mask)

    Legacy.__name__ = Legacy.__qualname__ = registered.split(">", 1)[1]
    return Legacy


def _registered_names(config) -> set[str]:
    """Every ``registered_name`` in a ``.keras`` config (nested layers and models included)."""
    found = set()
    if isinstance(config, dict):
        if isinstance(config.get("registered_name"), str):
            found.add(config["registered_name"])
        for value in config.values():
            found |= _registered_names(value)
    elif isinstance(config, list):
        for value in config:
            found |= _registered_names(value)
    return found


def _legacy_names(path: str) -> set[str]:
    """The tflth 0.1 class names (``tflth>Masked*``) a ``.keras`` file's config uses."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read(_CONFIG))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError):
        return set()  # not a readable .keras file: Keras says so when it loads it
    return {n for n in _registered_names(config) if n.startswith(_LEGACY_PREFIX)}


def _load_legacy(path: str, names: set[str], kwargs: dict):
    """A tflth 0.1 file as today's model: its masked layers as plain Keras layers, with masks."""
    unknown = sorted(names - set(LEGACY_LAYERS))
    if unknown:
        raise LegacyFileError(f"'{path}' was written by tflth 0.1 and uses {', '.join(unknown)}, which this tflth "
                              f"does not know; expected only {', '.join(LEGACY_LAYERS)}: load it with tflth 0.1 and "
                              "save tflth.unmasked(model) (plain Keras layers), then mask that copy again.")
    shims = {name: _legacy_class(name, base) for name, base in LEGACY_LAYERS.items()}
    custom = {**shims, **dict(kwargs.pop("custom_objects", None) or {})}
    model = keras.saving.load_model(path, custom_objects=custom, **kwargs)
    plain = {cls: LEGACY_LAYERS[name] for name, cls in shims.items()}
    masks = {}
    for layer in [model, *_keras.sublayers(model)]:
        base = plain.get(type(layer))
        if base is None:
            continue
        mask = layer.__dict__.pop("_tflth_legacy_mask", None)
        masks[layer.kernel.path] = np.ones(tuple(layer.kernel.shape), bool) if mask is None else mask != 0
        # the shim differs from the Keras layer it extends only in reading the weights: from
        # now on the layer is that Keras layer (and model.save writes it as one)
        object.__setattr__(layer, "__class__", base)
    if masks:
        apply_masks(model, masks)
    return model


def load_model(path: str | os.PathLike, **kwargs):
    """``keras.saving.load_model(path, **kwargs)``, then the file's masks applied in place.

    Call inside ``strategy.scope()`` to load for ``tf.distribute`` training. A file
    written by tflth 0.1 (``tflth>MaskedDense`` and the other :data:`LEGACY_LAYERS`) is
    loaded as today's masked model (module docstring).

    Example:

    >>> import os, tempfile, keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> tflth.masking.apply_masks(model, {"net/fc/kernel": np.eye(4, 3)})
    >>> path = os.path.join(tempfile.mkdtemp(), "ticket.keras"); model.save(path)
    >>> loaded = tflth.masking.load_model(path)
    >>> int(tflth.masking.masks_of(loaded).density().survivors)
    3
    >>> plain = keras.saving.load_model(path)              # without tflth: zeros baked in
    >>> tflth.masking.has_masks(plain), int(np.count_nonzero(plain.get_layer("fc").kernel))
    (False, 3)
    """
    read_masks(path)  # a bad file fails before Keras loads anything
    legacy = _legacy_names(os.fspath(path))
    if legacy:
        return _load_legacy(os.fspath(path), legacy, dict(kwargs))
    model = keras.saving.load_model(path, **kwargs)
    masks = read_masks(path, model)
    if len(masks):
        apply_masks(model, masks)
    return model


def unmasked(model):
    """A plain Keras copy of ``model`` without masks: pruned weights are zero (baked in).

    The copy is what plain ``keras.saving.load_model`` gives for the model's ``.keras``
    file: the same layers and config, the same outputs; training it lets pruned
    weights grow back. Works for every model Keras can save (Sequential, functional,
    subclassed with ``get_config``, KerasHub backbones; custom layers must be registered
    with Keras, as for any ``.keras`` file). ``model`` is not changed.

    Args:
        model: a Keras model, with or without tflth masks.

    Returns:
        A new model without masks (example: :func:`load_model`'s, which is the same
        copy read back from a file).
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "plain.keras")
        with masks_detached(model):
            model.save(path)
        # the file is the one just written from this model, so its Lambda layers are trusted
        return keras.saving.load_model(path, safe_mode=False)

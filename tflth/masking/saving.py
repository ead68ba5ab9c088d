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
from tflth.masking.state import STATE_ATTRIBUTE, _state, apply_masks

__all__ = ["load_model", "read_masks", "unmasked"]

_WEIGHTS = "model.weights.h5"


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



def load_model(path: str | os.PathLike, **kwargs):
    """``keras.saving.load_model(path, **kwargs)``, then the file's masks applied in place.

    Call inside ``strategy.scope()`` to load for ``tf.distribute`` training.

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
    state = _state(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "plain.keras")
        _keras.attach_untracked(model, STATE_ATTRIBUTE, None)
        try:
            model.save(path)
        finally:
            if state is not None:
                _keras.attach_untracked(model, STATE_ATTRIBUTE, state)
        # the file is the one just written from this model, so its Lambda layers are trusted
        return keras.saving.load_model(path, safe_mode=False)

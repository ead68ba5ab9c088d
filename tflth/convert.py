"""Convert a user's Keras model into one with masked (prunable) layers."""

from __future__ import annotations

import warnings

import keras

from tflth import _keras
from tflth.layers import MaskedConv2D, MaskedDense, MaskedDepthwiseConv2D, is_masked

__all__ = ["masked", "unmasked", "MASKED_EQUIVALENTS"]

# Exact Keras type -> masked equivalent. Subclasses of these are not converted (they may
# override call), and are reported like any other unmaskable kernel-bearing layer.
MASKED_EQUIVALENTS = {
    keras.layers.Dense: MaskedDense,
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
}


def _has_kernel(layer) -> bool:
    return any(v.name.endswith("kernel") for v in layer.trainable_weights)


def _all_layers(model):
    return _keras.sublayers(model)


def _clone_with_classes(model, classes):
    """Clone ``model`` with layers of exact type ``k`` rebuilt as ``classes[k]`` (same
    config); returns the clone and its ``(original, new)`` leaf-layer pairs by name."""

    def clone_layer(layer):
        return classes.get(type(layer), layer.__class__).from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    originals = {layer.name: layer for layer in _all_layers(model)}
    pairs = [(originals[new.name], new) for new in _all_layers(clone)
             if new.name in originals and not isinstance(new, keras.Model)]
    return clone, pairs


def masked(model: keras.Model) -> keras.Model:
    """Return a copy of a Sequential or functional ``model`` with masked (prunable) layers.

    Every ``keras.layers.Dense``, ``Conv2D`` and ``DepthwiseConv2D`` (exactly these
    types, in nested models too) becomes its tflth equivalent (:class:`tflth.MaskedDense`,
    :class:`tflth.MaskedConv2D`, :class:`tflth.MaskedDepthwiseConv2D`) with the same
    config, the original weights and an all-ones mask; every other layer is cloned
    unchanged with its weights. Before any pruning the copy computes the same function.
    ``model`` itself is not modified. Then prune with :func:`tflth.masks.set_masks`,
    using the layer paths of :func:`tflth.masks.prunable_layers`.

    Args:
        model: A built ``keras.Sequential`` or functional ``keras.Model`` (e.g. a
            ``keras.applications`` network).

    Returns:
        A new model of the same structure with masked layers.

    Raises:
        TypeError: ``model`` is not a ``keras.Model``.
        ValueError: ``model`` is a subclassed model (build it from the tflth masked
            layers instead) or is not built.

    Warns:
        UserWarning: listing the layers that hold a kernel tflth cannot mask
            (``Conv1D``, ``EinsumDense``, subclasses of ``Dense``, custom layers, ...);
            they stay dense.

    The copy's ``.keras`` file needs ``import tflth`` before ``keras.saving.load_model``
    (the masked layers register on import); :func:`unmasked` gives a plain Keras copy.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)),
    ...                           keras.layers.Dense(8, activation="relu", name="hidden"),
    ...                           keras.layers.Dense(2, name="out")])
    >>> prunable = tflth.masked(model)
    >>> [type(layer).__name__ for layer in prunable.layers]
    ['MaskedDense', 'MaskedDense']
    >>> list(tflth.masks.prunable_layers(prunable))
    ['hidden', 'out']
    >>> x = np.ones((3, 4), "float32")
    >>> bool(np.allclose(prunable(x), model(x)))
    True
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"tflth.masked expects a keras.Model, got {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or _keras.is_functional(model)):
        raise ValueError(
            f"tflth.masked supports Sequential and functional models; "
            f"'{model.name}' is a subclassed {type(model).__name__}. "
            "Build it from tflth.MaskedDense / MaskedConv2D instead."
        )
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built; call it on an input first.")

    clone, pairs = _clone_with_classes(model, MASKED_EQUIVALENTS)
    skipped = []
    for old, new in pairs:
        if is_masked(new):
            new.kernel_variable.assign(old.kernel)
            if new.bias is not None:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())
            if _has_kernel(new):
                skipped.append(f"{new.name} ({type(new).__name__})")
    if skipped:
        warnings.warn(
            "tflth.masked left these layers dense (no masked equivalent): " + ", ".join(skipped),
            UserWarning,
            stacklevel=2,
        )
    return clone


def unmasked(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with every masked layer replaced by its plain Keras parent.

    ``MaskedDense`` becomes ``keras.layers.Dense``, ``MaskedConv2D`` ``Conv2D`` and
    ``MaskedDepthwiseConv2D`` ``DepthwiseConv2D``, with the same config. Kernels are
    copied as ``kernel * mask`` (pruned entries are exactly zero), so the copy computes
    the same function with standard Keras layers only; the masks themselves are not
    kept. Other layers are cloned with their weights; ``model`` is not modified.

    This is the model to hand to someone without tflth: its ``.keras`` file loads with
    plain ``keras.saving.load_model`` (a masked model's file needs ``import tflth``
    first). Training the copy further would let pruned weights grow back; keep
    training the masked model instead.

    Args:
        model: A Sequential or functional model with tflth masked layers (e.g. from
            :func:`masked`, or a tflth model after pruning).

    Returns:
        A new model of the same structure with plain Keras layers.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc")])
    >>> mask = np.eye(4, 3, dtype=bool)  # keep 3 of 12 weights
    >>> tflth.masks.set_masks(model, {"fc": mask})
    >>> plain = tflth.unmasked(model)
    >>> type(plain.get_layer("fc")).__name__, int(np.count_nonzero(plain.get_layer("fc").kernel))
    ('Dense', 3)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.allclose(plain(x), model(x)))
    True
    """
    plain = {masked_cls: keras_cls for keras_cls, masked_cls in MASKED_EQUIVALENTS.items()}
    clone, pairs = _clone_with_classes(model, plain)
    for old, new in pairs:
        if is_masked(old):
            new.kernel.assign(old.masked_kernel)
            if old.bias is not None:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())
    return clone

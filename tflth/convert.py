"""Convert a user's Keras model into one with masked (prunable) layers."""

from __future__ import annotations

import warnings

import keras

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
    return model._flatten_layers(include_self=False, recursive=True)


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
    """Return a copy of a Sequential or functional ``model`` with masked layers.

    Every ``Dense``, ``Conv2D`` and ``DepthwiseConv2D`` becomes its tflth masked
    equivalent (all-ones mask) with the original weights copied; every other layer is
    cloned unchanged with its weights. A layer that holds a kernel tflth cannot mask
    (``Conv1D``, ``EinsumDense``, a custom layer, ...) stays dense and is listed in a
    ``UserWarning``. Before any pruning the copy computes the same function.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"tflth.masked expects a keras.Model, got {type(model).__name__}")
    if not (isinstance(model, keras.Sequential) or model.__class__.__name__ == "Functional"
            or getattr(model, "_is_graph_network", False)):
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

    Kernels are copied as ``kernel * mask`` (pruned entries are zero), so the copy
    computes the same function with standard layers only.
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

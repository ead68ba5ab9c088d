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

    def clone_layer(layer):
        cls = MASKED_EQUIVALENTS.get(type(layer))
        if cls is not None:
            return cls.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    originals = {layer.name: layer for layer in _all_layers(model)}
    skipped = []
    for new in _all_layers(clone):
        old = originals.get(new.name)
        if old is None or isinstance(new, keras.Model):
            continue
        if is_masked(new):
            new.kernel_variable.assign(old.kernel)
            if new.bias is not None:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())
            if _has_kernel(new) and not is_masked(new):
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

    def clone_layer(layer):
        cls = plain.get(type(layer), layer.__class__)
        return cls.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    originals = {layer.name: layer for layer in _all_layers(model)}
    for new in _all_layers(clone):
        old = originals.get(new.name)
        if old is None or isinstance(new, keras.Model):
            continue
        if is_masked(old):
            new.kernel.assign(old.masked_kernel)
            if old.bias is not None:
                new.bias.assign(old.bias)
        else:
            new.set_weights(old.get_weights())
    return clone

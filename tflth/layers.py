"""Fixed-mask Keras 3 layers.

Each masked layer is a drop-in subclass of its Keras counterpart (same constructor
arguments and defaults) that owns one extra, non-trainable variable, ``kernel_mask``,
the shape of its kernel and holding 0.0 / 1.0. The forward pass uses
``kernel * kernel_mask``, so pruned weights receive zero gradient, and the kernel
variable carries a constraint that re-applies the mask after every optimizer update
(Keras optimizers apply variable constraints after each step, e.g. in ``model.fit``).
Together these keep pruned kernel entries exactly ``0.0`` under any optimizer,
including momentum, Adam and decoupled weight decay, and even when an optimizer's slots
still hold non-zero history for a pruned weight (after a rewind). tflth's own training
loop masks once per compiled run of many steps instead (:func:`masking_deferred`),
with the same result for every weight it exposes.

The mask variable uses ``aggregation="only_first_replica"``: under
``tf.distribute`` it has one identical copy per replica and is never summed. Masks are
meant to be written in cross-replica context (between training rounds), which
``tflth.masks.set_masks`` does.

Saving: each layer writes ``kernel``, ``bias`` and ``mask`` itself, so ``.keras`` files
round-trip through ``keras.saving.load_model`` without ``custom_objects``. A weights
store written by the plain Keras layer (no mask) loads too, with an all-ones mask.
"""

from __future__ import annotations

import contextlib

import keras
import tensorflow as tf
from keras import ops

from tflth import _keras

__all__ = ["MaskedDense", "MaskedConv2D", "MaskedDepthwiseConv2D", "MaskedLayer", "is_masked", "masking_deferred"]


class _MaskConstraint(keras.constraints.Constraint):
    """Variable constraint: the user's kernel constraint (if any), then the mask.

    A ``keras.constraints.Constraint``: Keras 3.12 and 3.13 accept nothing else as a
    variable's ``constraint`` (later releases take any callable). Never serialized (the layer's config holds the user's
    ``kernel_constraint`` only).
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * ops.cast(self.mask, w.dtype)


class MaskedLayer:
    """Mixin adding a fixed kernel mask to a Keras layer that has one kernel.

    Subclasses name their kernel variable through ``_kernel_variable`` and call
    ``_build_mask`` at the end of ``build``.
    """

    kernel_mask = None
    _deferred = None  # inside masking_deferred: "gradient" or "kernel" (read when a step is traced)

    @property
    def kernel_variable(self):
        """The (unmasked) kernel variable the optimizer updates."""
        return self._kernel_variable()

    def _kernel_variable(self):
        return self.kernel

    @property
    def masked_kernel(self):
        """The kernel as used in the forward pass: ``kernel * kernel_mask``."""
        kernel = self._kernel_variable()
        if self._deferred == "kernel":
            return ops.convert_to_tensor(kernel)  # the optimizer keeps pruned entries at zero
        mask = ops.cast(self.kernel_mask, kernel.dtype)
        if self._deferred == "gradient":
            return _mask_passing_gradient(ops.convert_to_tensor(kernel), ops.convert_to_tensor(mask))
        return kernel * mask

    def _build_mask(self):
        kernel = self._kernel_variable()
        self.kernel_mask = self.add_weight(
            name="mask",
            shape=tuple(kernel.shape),
            initializer="ones",
            trainable=False,
            dtype=self.variable_dtype,
            aggregation="only_first_replica",
        )
        kernel.constraint = _MaskConstraint(self.kernel_mask, kernel.constraint)

    def apply_mask(self) -> None:
        """Zero the pruned kernel entries: ``kernel.assign(kernel * mask)``."""
        kernel = self._kernel_variable()
        kernel.assign(kernel * ops.cast(self.kernel_mask, kernel.dtype))

    def _check_supported(self):
        if getattr(self, "quantization_mode", None) is not None:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' does not support quantization "
                f"(mode={self.quantization_mode!r}); export a compact model first."
            )
        if getattr(self, "lora_enabled", False):
            raise ValueError(f"{type(self).__name__} '{self.name}' does not support LoRA.")

    # --- saving: kernel, bias, mask (the Keras parents save only kernel and bias) ---

    def save_own_variables(self, store):
        if not self.built:
            return
        self._check_supported()
        store[_keras.KERNEL_KEY] = self._kernel_variable()
        if self.bias is not None:
            store[_keras.BIAS_KEY] = self.bias
        store["mask"] = self.kernel_mask

    def load_own_variables(self, store):
        if not self.built:
            return
        self._check_supported()
        keys = set(store.keys())
        expected = {_keras.KERNEL_KEY, _keras.BIAS_KEY} if self.bias is not None else {_keras.KERNEL_KEY}
        if not expected <= keys or not keys <= expected | {"mask"}:
            raise ValueError(
                f"Layer '{self.name}' expected weights {sorted(expected | {'mask'})}, "
                f"but the file holds {sorted(keys)}."
            )
        self._kernel_variable().assign(store[_keras.KERNEL_KEY])
        if self.bias is not None:
            self.bias.assign(store[_keras.BIAS_KEY])
        if "mask" in keys:
            self.kernel_mask.assign(store["mask"])
        else:
            self.kernel_mask.assign(ops.ones(self.kernel_mask.shape, self.kernel_mask.dtype))

    def _add_bias_and_activate(self, outputs, bias_shape=None):
        if self.bias is not None:
            bias = self.bias if bias_shape is None else ops.reshape(self.bias, bias_shape)
            outputs = ops.add(outputs, bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="tflth")
class MaskedDense(MaskedLayer, keras.layers.Dense):
    """``keras.layers.Dense`` with a fixed kernel mask: the prunable dense layer.

    Computes ``activation(dot(inputs, kernel * kernel_mask) + bias)``. It takes exactly
    the constructor arguments of ``keras.layers.Dense``, with the same defaults and the
    same ``get_config``, so it replaces ``Dense`` anywhere (:func:`tflth.masked` does
    that for a whole model). When built it adds one non-trainable variable,
    ``kernel_mask``, shaped like the kernel and holding ``1.0`` (weight kept) or ``0.0``
    (pruned). The mask starts all ones, so an unpruned layer computes exactly what
    ``Dense`` computes.

    Pruned kernel entries stay exactly ``0.0`` under any optimizer (SGD, momentum,
    Adam, decoupled weight decay): the forward pass multiplies by the mask, so they get
    no gradient, and the kernel variable carries a constraint that re-applies the mask
    after every optimizer update (``model.fit`` and custom loops that call
    ``optimizer.apply`` alike). Write masks with :func:`tflth.masks.set_masks`, which
    also zeroes the pruned entries, and read them with :func:`tflth.masks.get_masks`.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function to use. If you don't specify anything, no
            activation is applied.
        use_bias: Boolean, whether the layer uses a bias vector (never masked).
        kernel_initializer, bias_initializer, kernel_regularizer, bias_regularizer,
            activity_regularizer, bias_constraint: As for ``keras.layers.Dense``.
        kernel_constraint: As for ``keras.layers.Dense``; applied after each update,
            before the mask.
        **kwargs: Base layer keyword arguments, such as ``name`` and ``dtype``.
            Quantization and LoRA (``lora_rank``) are not supported: building or
            saving such a layer raises ``ValueError``.

    Input shape:
        N-D tensor with shape ``(batch_size, ..., input_dim)``. The most common
        situation is a 2D input with shape ``(batch_size, input_dim)``.

    Output shape:
        N-D tensor with shape ``(batch_size, ..., units)``. For a 2D input with shape
        ``(batch_size, input_dim)``, the output has shape ``(batch_size, units)``.

    Attributes (once built):
        kernel_variable: The kernel variable, unmasked (what the optimizer updates),
            shape ``(input_dim, units)``.
        kernel_mask: The mask variable, same shape, ``1.0`` / ``0.0``.
        masked_kernel: ``kernel * kernel_mask``, the kernel the forward pass uses.

    Saving: ``model.save("m.keras")`` stores kernel, bias and mask of every masked
    layer. ``keras.saving.load_model`` needs ``import tflth`` first (importing tflth
    registers the masked layers with Keras; no ``custom_objects``). To hand a model to
    someone without tflth, save ``tflth.unmasked(model)``: plain Keras layers, pruned
    weights zero.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc")])
    >>> layer = model.get_layer("fc")
    >>> tuple(layer.kernel_mask.shape), float(layer.kernel_mask.numpy().min())
    ((4, 3), 1.0)
    >>> mask = np.ones((4, 3), bool)
    >>> mask[:, 0] = False  # prune every weight into output unit 0
    >>> tflth.masks.set_masks(model, {"fc": mask})
    >>> layer.kernel_variable.numpy()[:, 0] == 0
    array([ True,  True,  True,  True])
    >>> y = model(np.ones((2, 4), "float32"))
    >>> tuple(y.shape), np.asarray(y)[:, 0]  # the bias starts at zero
    ((2, 3), array([0., 0.], dtype=float32))
    """

    def _kernel_variable(self):
        return _keras.dense_kernel(self)

    def build(self, input_shape):
        super().build(input_shape)
        self._check_supported()
        self._build_mask()

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.masked_kernel)
        return self._add_bias_and_activate(x)


class _MaskedConv(MaskedLayer):
    """Shared build/call for masked convolutions (kernel attribute ``kernel``)."""

    def build(self, input_shape):
        super().build(input_shape)
        self._build_mask()

    def _bias_shape(self, channels):
        if self.data_format == "channels_last":
            return (1,) * (self.rank + 1) + (channels,)
        return (1, channels) + (1,) * self.rank


@keras.saving.register_keras_serializable(package="tflth")
class MaskedConv2D(_MaskedConv, keras.layers.Conv2D):
    """``keras.layers.Conv2D`` with a fixed kernel mask: the prunable 2D convolution.

    Computes ``activation(conv2d(inputs, kernel * kernel_mask) + bias)``. It takes
    exactly the constructor arguments of ``keras.layers.Conv2D``, with the same defaults
    and the same ``get_config``, so it replaces ``Conv2D`` anywhere
    (:func:`tflth.masked` does that for a whole model). When built it adds one
    non-trainable variable, ``kernel_mask``, shaped like the kernel ``(kernel_rows,
    kernel_cols, input_channels // groups, filters)`` and holding ``1.0`` (kept) or
    ``0.0`` (pruned); it starts all ones.

    Pruned kernel entries stay exactly ``0.0`` under any optimizer: the forward pass
    multiplies by the mask and the kernel variable carries a constraint that re-applies
    it after every optimizer update. Write masks with :func:`tflth.masks.set_masks`.

    Args:
        filters: Int, the number of filters (output channels).
        kernel_size: Int or tuple of 2 ints, the size of the convolution window.
        strides, padding, data_format, dilation_rate, groups, activation, use_bias,
            kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer, activity_regularizer, bias_constraint: As for
            ``keras.layers.Conv2D``.
        kernel_constraint: As for ``keras.layers.Conv2D``; applied after each update,
            before the mask.
        **kwargs: Base layer keyword arguments, such as ``name`` and ``dtype``.
            Quantization and LoRA are not supported (saving raises ``ValueError``).

    Input shape:
        4D tensor ``(batch_size, height, width, channels)`` with
        ``data_format="channels_last"``, or ``(batch_size, channels, height, width)``
        with ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, filters)`` with
        ``data_format="channels_last"``, or ``(batch_size, filters, new_height,
        new_width)`` with ``data_format="channels_first"``.

    Attributes (once built):
        kernel_variable: The kernel variable, unmasked (what the optimizer updates).
        kernel_mask: The mask variable, same shape, ``1.0`` / ``0.0``.
        masked_kernel: ``kernel * kernel_mask``, the kernel the forward pass uses.

    Saving: ``.keras`` files hold kernel, bias and mask; loading one needs ``import
    tflth`` first (the masked layers register with Keras on import). For a copy with
    plain Keras layers, to use without tflth, save ``tflth.unmasked(model)``.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((6, 6, 2)), tflth.MaskedConv2D(8, 3, name="conv")])
    >>> tuple(model.output_shape), tuple(model.get_layer("conv").kernel_mask.shape)
    ((None, 4, 4, 8), (3, 3, 2, 8))
    >>> mask = np.zeros((3, 3, 2, 8), bool)
    >>> mask[1, 1] = True  # keep only the centre tap of every filter
    >>> tflth.masks.set_masks(model, {"conv": mask})
    >>> tflth.masks.density_report(model).density
    0.1111111111111111
    """

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.masked_kernel)
        return self._add_bias_and_activate(outputs, self._bias_shape(self.filters))


@keras.saving.register_keras_serializable(package="tflth")
class MaskedDepthwiseConv2D(_MaskedConv, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with a fixed kernel mask: the prunable depthwise
    convolution.

    Convolves each input channel with its own ``depth_multiplier`` filters, using
    ``kernel * kernel_mask``, then adds the bias and applies the activation. It takes
    exactly the constructor arguments of ``keras.layers.DepthwiseConv2D``, with the same
    defaults and the same ``get_config`` (:func:`tflth.masked` converts a model's
    ``DepthwiseConv2D`` layers to it, e.g. in MobileNets). When built it adds one
    non-trainable variable, ``kernel_mask``, shaped like the kernel ``(kernel_rows,
    kernel_cols, input_channels, depth_multiplier)`` and holding ``1.0`` (kept) or
    ``0.0`` (pruned); it starts all ones.

    Pruned kernel entries stay exactly ``0.0`` under any optimizer: the forward pass
    multiplies by the mask and the kernel variable carries a constraint that re-applies
    it after every optimizer update. Write masks with :func:`tflth.masks.set_masks`.

    Args:
        kernel_size: Int or tuple of 2 ints, the size of the depthwise window.
        strides, padding, depth_multiplier, data_format, dilation_rate, activation,
            use_bias, depthwise_initializer, bias_initializer,
            depthwise_regularizer, bias_regularizer, activity_regularizer,
            bias_constraint: As for ``keras.layers.DepthwiseConv2D``.
        depthwise_constraint: As for ``keras.layers.DepthwiseConv2D``; applied after
            each update, before the mask.
        **kwargs: Base layer keyword arguments, such as ``name`` and ``dtype``.
            Quantization and LoRA are not supported (saving raises ``ValueError``).

    Input shape:
        4D tensor ``(batch_size, height, width, channels)`` with
        ``data_format="channels_last"``, or ``(batch_size, channels, height, width)``
        with ``data_format="channels_first"``.

    Output shape:
        4D tensor ``(batch_size, new_height, new_width, channels * depth_multiplier)``
        with ``data_format="channels_last"``, or ``(batch_size, channels *
        depth_multiplier, new_height, new_width)`` with ``data_format="channels_first"``.

    Attributes (once built):
        kernel_variable: The depthwise kernel variable, unmasked (what the optimizer
            updates).
        kernel_mask: The mask variable, same shape, ``1.0`` / ``0.0``.
        masked_kernel: ``kernel * kernel_mask``, the kernel the forward pass uses.

    Saving: ``.keras`` files hold kernel, bias and mask; loading one needs ``import
    tflth`` first (the masked layers register with Keras on import). For a copy with
    plain Keras layers, to use without tflth, save ``tflth.unmasked(model)``.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((6, 6, 2)),
    ...                           tflth.MaskedDepthwiseConv2D(3, depth_multiplier=2, name="dw")])
    >>> tuple(model.output_shape), tuple(model.get_layer("dw").kernel_mask.shape)
    ((None, 4, 4, 4), (3, 3, 2, 2))
    >>> tflth.masks.set_masks(model, {"dw": np.zeros((3, 3, 2, 2), bool)})  # prune everything
    >>> float(np.abs(model(np.ones((1, 6, 6, 2), "float32"))).max())
    0.0
    """

    def call(self, inputs):
        input_channel = _keras.depthwise_input_channels(self, inputs.shape)
        outputs = ops.depthwise_conv(
            inputs,
            self.masked_kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        channels = self.depth_multiplier * input_channel
        return self._add_bias_and_activate(outputs, self._bias_shape(channels))


def is_masked(layer) -> bool:
    """True for tflth masked layers (the prunable ones)."""
    return isinstance(layer, MaskedLayer)


def _mask_passing_gradient(kernel, mask):
    """``kernel * mask`` whose gradient reaches ``kernel`` unmasked (one multiply saved).

    The mask is captured rather than passed, so the op has one differentiable input.
    """

    @tf.custom_gradient
    def masked(k):
        return k * mask, lambda grad: grad

    return masked(kernel)


@contextlib.contextmanager
def masking_deferred(layers, kernels_stay_masked: bool = False):
    """Within the block, training steps traced for ``layers`` leave masking to the caller.

    For a training loop that zeroes the pruned kernel entries itself
    (:meth:`MaskedLayer.apply_mask`) before it starts and after every compiled run of
    several steps, and so never exposes a pruned weight. In steps traced inside the
    block, optimizer updates skip the per-step mask constraint, and:

    * by default the gradient of ``kernel * mask`` reaches the kernel unmasked: pruned
      entries may drift inside the run, and their optimizer slots collect gradients,
      until ``apply_mask`` zeroes them again. The forward pass still uses
      ``kernel * mask``, so pruned entries never affect outputs, gradients of surviving
      entries are unchanged (``grad * 1``) and optimizers update elementwise, so
      surviving weights follow the per-step-masked trajectory bit for bit (tested). Each
      step saves the constraint's and the gradient's pass over every kernel.
    * with ``kernels_stay_masked`` (the optimizer's step of a pruned entry is exactly
      zero: :class:`tflth.training.optimizers.Adam`) the forward pass uses the kernel as
      it is, which is ``kernel * mask`` exactly, so no step makes a pass over a kernel
      for its mask.

    A user's own kernel constraint still runs every step.
    """
    kernels = [layer._kernel_variable() for layer in layers]
    saved = [k.constraint for k in kernels]
    try:
        for layer, k, c in zip(layers, kernels, saved):
            k.constraint = c.inner if isinstance(c, _MaskConstraint) else c
            layer._deferred = "kernel" if kernels_stay_masked else "gradient"
        yield
    finally:
        for layer, k, c in zip(layers, kernels, saved):
            k.constraint = c
            layer._deferred = None

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

__all__ = ["MaskedDense", "MaskedConv2D", "MaskedDepthwiseConv2D", "MaskedLayer", "is_masked", "masking_deferred"]


class _MaskConstraint:
    """Variable constraint: the user's kernel constraint (if any), then the mask."""

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
        store["0"] = self._kernel_variable()
        if self.bias is not None:
            store["1"] = self.bias
        store["mask"] = self.kernel_mask

    def load_own_variables(self, store):
        if not self.built:
            return
        self._check_supported()
        keys = set(store.keys())
        expected = {"0", "1"} if self.bias is not None else {"0"}
        if not expected <= keys or not keys <= expected | {"mask"}:
            raise ValueError(
                f"Layer '{self.name}' expected weights {sorted(expected | {'mask'})}, "
                f"but the file holds {sorted(keys)}."
            )
        self._kernel_variable().assign(store["0"])
        if self.bias is not None:
            self.bias.assign(store["1"])
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
    """``keras.layers.Dense`` with a fixed kernel mask."""

    def _kernel_variable(self):
        return self._kernel

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
    """``keras.layers.Conv2D`` with a fixed kernel mask."""

    def call(self, inputs):
        outputs = self.convolution_op(inputs, self.masked_kernel)
        return self._add_bias_and_activate(outputs, self._bias_shape(self.filters))


@keras.saving.register_keras_serializable(package="tflth")
class MaskedDepthwiseConv2D(_MaskedConv, keras.layers.DepthwiseConv2D):
    """``keras.layers.DepthwiseConv2D`` with a fixed kernel mask."""

    def call(self, inputs):
        input_channel = self._get_input_channel(inputs.shape)
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

"""Which axes of a masked variable are its inputs and its output units.

Structured pruning needs to know what a kernel's axes mean: N:M groups lie along the
axis the layer *contracts* with its input (Dense ``(in, out)``: ``in``), and a channel
is one index of the axes it *produces* (Dense: ``out``). :func:`layout_of` reads this
from the layer that owns a variable:

=============================================  ===================  ==================
layer (and subclasses) . variable              input axes           output axes
=============================================  ===================  ==================
``Dense.kernel`` ``(in, out)``                 ``(0,)``             ``(1,)``
``Conv1D/2D/3D.kernel`` ``(*k, in, out)``      ``(-2,)``            ``(-1,)``
``SeparableConv*.pointwise_kernel``            ``(-2,)``            ``(-1,)``
``Conv*Transpose.kernel`` ``(*k, out, in)``    ``(-1,)``            ``(-2,)``
``EinsumDense.kernel``                         kernel letters       kernel letters
                                               absent from the      present in the
                                               output               output
``SimpleRNN/LSTM/GRU`` cells' kernels          ``(0,)``             ``(1,)``
=============================================  ===================  ==================

Depthwise kernels, embeddings and variables a ``+`` pattern selected have no input
axis (``input_axes == ()``): structured strategies refuse them by name. All axes are
normalised to non-negative numbers.

Which *other* variables hold a kernel's output units (the next layer's rows, a
BatchNormalization, a residual partner) is not a layout question: it is read from the
model's graph by :func:`tflth.unit_graph.unit_groups`, the one reader of that.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

import keras

__all__ = ["VariableLayout", "axes_of", "layout_of", "layouts", "einsum_axes"]


@dataclasses.dataclass(frozen=True)
class VariableLayout:
    """A masked variable's shape and the meaning of its axes.

    ``input_axes``: the axes contracted with the layer's input (N:M groups run along the
    last of them); ``output_axes``: the axes that index the layer's output units
    (channels); both empty when the variable has no such structure. ``kind`` is
    ``"<layer class>.<variable name>"`` and ``layer`` the owning layer's name.
    """

    path: str
    shape: tuple[int, ...]
    kind: str
    input_axes: tuple[int, ...] = ()
    output_axes: tuple[int, ...] = ()
    layer: str = ""

    @property
    def structured(self) -> bool:
        return bool(self.input_axes) and bool(self.output_axes)

    @property
    def group_axis(self) -> int:
        """The axis N:M groups run along (the last input axis)."""
        if not self.input_axes:
            raise ValueError(f"Variable '{self.path}' ({self.kind}) has no input axis.")
        return self.input_axes[-1]

    @property
    def units(self) -> int:
        """Output units (channels): the product of the output axes' sizes."""
        n = 1
        for a in self.output_axes:
            n *= self.shape[a]
        return n


def einsum_axes(equation: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(input axes, output axes)`` of an ``EinsumDense`` kernel from its equation.

    >>> einsum_axes("ab,bc->ac"), einsum_axes("abc,cde->abde"), einsum_axes("abcd,cde->abe")
    (((0,), (1,)), ((0,), (1, 2)), ((0, 1), (2,)))
    >>> einsum_axes("...b,bc->...c")
    ((0,), (1,))
    """
    match = re.fullmatch(r"\s*([a-zA-Z.]+)\s*,\s*([a-zA-Z]+)\s*->\s*([a-zA-Z.]+)\s*", equation)
    if not match:
        raise ValueError(f"EinsumDense equation {equation!r} is not of the form 'in,kernel->out'.")
    inputs, kernel, output = match.groups()
    contracted = tuple(i for i, c in enumerate(kernel) if c in inputs and c not in output)
    produced = tuple(i for i, c in enumerate(kernel) if c in output)
    return contracted, produced


_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_CELLS = (keras.layers.SimpleRNNCell, keras.layers.LSTMCell, keras.layers.GRUCell)


def axes_of(layer, name: str, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(input axes, output axes)`` of ``layer``'s variable called ``name`` of rank
    ``rank`` (the table above; ``((), ())`` for a variable without them)."""
    # In Keras 3 the convolution families are disjoint: Conv*D, Conv*DTranspose, DepthwiseConv*D
    # and SeparableConv*D each derive their own base (BaseConv, BaseConvTranspose,
    # BaseDepthwiseConv, BaseSeparableConv) from Layer, none subclasses another, so no
    # isinstance below shadows another and their order does not matter.
    if isinstance(layer, _TRANSPOSE) and name == "kernel":
        return (rank - 1,), (rank - 2,)
    if isinstance(layer, _SEPARABLE):
        return ((rank - 2,), (rank - 1,)) if name == "pointwise_kernel" else ((), ())
    if isinstance(layer, _DEPTHWISE):
        return (), ()
    if isinstance(layer, _CONV) and name == "kernel":
        return (rank - 2,), (rank - 1,)
    if isinstance(layer, keras.layers.EinsumDense) and name == "kernel":
        return einsum_axes(layer.equation)
    if isinstance(layer, (keras.layers.Dense, *_CELLS)) and name in ("kernel", "recurrent_kernel") and rank == 2:
        return (0,), (1,)
    return (), ()


def layout_of(maskable) -> VariableLayout:
    """The :class:`VariableLayout` of a :class:`tflth.masking.Maskable`."""
    shape = maskable.shape
    inputs, outputs = axes_of(maskable.layer, maskable.variable.name, len(shape))
    return VariableLayout(maskable.path, shape, maskable.kind, inputs, outputs, getattr(maskable.layer, "name", ""))


def layouts(model, selected: Mapping[str, object] | None = None) -> dict[str, VariableLayout]:
    """``{path: VariableLayout}`` of ``model``'s masked variables, in model order.

    ``selected`` (``{path: Maskable}``, as :func:`tflth.masking.select` returns) names
    the variables instead: for a model not masked yet. Without it, an unmasked model's
    maskable-by-default variables."""
    from tflth import masking  # noqa: PLC0415
    from tflth.masking import maskable  # noqa: PLC0415

    if selected is not None:
        found = dict(selected)
    elif masking.has_masks(model):
        owners = maskable.owners_of(model)
        found = {p: masking.Maskable(p, v, owners.get(id(v), model))
                 for p, (v, _) in masking.masked_variables(model).items()}
    else:
        found = masking.maskable_variables(model)
    return {p: layout_of(m) for p, m in found.items()}

"""A smaller dense model computing what a masked chain of Dense/Conv layers computes.

:func:`shrink` removes the output units (Dense units, convolution channels) of a masked
model that do not change its function, and slices what lies between accordingly:

* **dead-out**: a unit none of whose surviving *outgoing* weights reaches a unit that is
  kept (every input slice of the next weighted layer that reads it is pruned). Through
  ``Flatten`` a channel ``c`` of ``C`` feeds the next Dense layer's rows ``i`` with
  ``i % C == c``; through global pooling, row ``c``. Removing it is exact whatever its
  value.
* **dead-in**: a unit with no surviving *incoming* weight except from constant units
  removed before it: it outputs a constant, ``act(bias)`` (after pooling, BatchNorm and
  activations between, computed by running those layers on it). It is removed and its
  contribution folded into the next layer's bias **where that is exact**: the next
  weighted layer is a Dense, or a convolution with ``padding="valid"`` (every output
  position then sees the constant through the whole kernel). Before a ``"same"``- or
  ``"causal"``-padded convolution the borders see zeros instead, so such units are kept
  (counted as ``constant_kept``).

Both rules are applied until nothing changes (removing a unit can make the units
feeding it dead-out, and folding constants can make the units they fed constant). The
output layer's units are never removed; the input features are never removed either
(the input signature stays): the first layer's *dead inputs* (features with no
surviving weight into a kept unit) are only counted. A layer that would lose every unit
keeps its first one. BatchNormalization between removed channels is sliced too.

Masks decide what survives: a masked variable's pruned entries are zero, an unmasked
variable's entries all count as surviving. The result is a plain functional Keras model
(no masks; the surviving weights keep their values, pruned ones inside kept units stay
zero) with the same layer names, input shape and outputs, equal to the masked model's
up to float rounding (the folded sums are added in another order).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tflth import masking
from tflth.export import graph
from tflth.export.errors import ExportError

__all__ = ["LayerShrink", "ShrinkReport", "shrink"]


@dataclasses.dataclass(frozen=True)
class LayerShrink:
    """One weighted layer's units before and after :func:`shrink`.

    ``dead_in``: units with no surviving incoming weight (from a non-constant unit);
    ``dead_out``: units with no surviving outgoing weight to a kept unit (0 for the
    output layer); ``constant_kept``: dead-in units kept (before a ``"same"``-padded
    convolution, in the output layer, or the one unit a layer keeps).
    """

    name: str
    kind: str
    units_before: int
    units_after: int
    dead_in: int
    dead_out: int
    constant_kept: int


@dataclasses.dataclass(frozen=True)
class ShrinkReport:
    """What :func:`shrink` removed: per weighted layer (:class:`LayerShrink`), the first
    layer's ``inputs`` and ``dead_inputs`` (features with no surviving weight into a kept
    unit; counted, not removed), and ``params_before`` / ``params_after``
    (``count_params()`` of the two models)."""

    layers: tuple[LayerShrink, ...]
    inputs: int
    dead_inputs: int
    params_before: int
    params_after: int

    def layer(self, name: str) -> LayerShrink:
        """The entry of the layer called ``name``."""
        for entry in self.layers:
            if entry.name == name:
                return entry
        raise KeyError(f"No weighted layer '{name}' in this report; expected one of {[e.name for e in self.layers]}.")

    def to_dict(self) -> dict:
        return {"layers": [dataclasses.asdict(e) for e in self.layers], "inputs": self.inputs,
                "dead_inputs": self.dead_inputs, "params_before": self.params_before,
                "params_after": self.params_after}

    def summary(self) -> str:
        """One line: the layers that lost units (``"fc1 300->292, fc2 100->95"``) or ``"no unit removed"``."""
        return ", ".join(f"{e.name} {e.units_before}->{e.units_after}" for e in self.layers
                         if e.units_after != e.units_before) or "no unit removed"

    def table(self) -> str:
        """A text table, one row per weighted layer, then the inputs and parameters."""
        rows = [f"{'layer':<24} {'kind':<8} {'units':>7} {'kept':>7} {'dead-in':>8} {'dead-out':>8} {'const kept':>10}"]
        for e in self.layers:
            rows.append(f"{e.name:<24} {e.kind:<8} {e.units_before:>7,} {e.units_after:>7,} {e.dead_in:>8,} "
                        f"{e.dead_out:>8,} {e.constant_kept:>10,}")
        rows.append(f"dead inputs {self.dead_inputs:,} of {self.inputs:,} (kept); parameters {self.params_before:,} -> "
                    f"{self.params_after:,} ({self.params_after / max(self.params_before, 1):.1%})")
        return "\n".join(rows)


@dataclasses.dataclass
class _Weighted:
    """A weighted layer of the chain, the layers after it up to the next one, and the
    map from the next layer's input rows to this layer's units."""

    layer: keras.layers.Layer
    kernel: np.ndarray  # (..., in, out), pruned entries zero
    bias: np.ndarray | None
    live: np.ndarray  # (in, out): some surviving kernel entry connects row i to unit o
    after: list
    owner_next: np.ndarray | None = None  # rows of the next weighted layer -> units of this one
    owners_at: dict = dataclasses.field(default_factory=dict)  # id(BatchNormalization after) -> its features' units
    foldable: bool = False  # constant units may be folded into the next layer's bias

    @property
    def units(self) -> int:
        return self.kernel.shape[-1]


def _masks_by_variable(model) -> dict[int, np.ndarray]:
    return {id(v): np.asarray(m.numpy()) != 0 for v, m in masking.masked_variables(model).values()}


def _weighted(chain: list, model) -> tuple[list, list[_Weighted]]:
    masks = _masks_by_variable(model)
    positions = [i for i, layer in enumerate(chain) if graph.is_weighted(layer)]
    if not positions:
        raise ExportError(f"Cannot shrink model '{model.name}': it has no Dense or Conv layer; expected at least one.")
    out = []
    for k, i in enumerate(positions):
        layer = chain[i]
        kernel = np.asarray(layer.kernel.numpy())
        mask = masks.get(id(layer.kernel), np.ones(kernel.shape, bool))
        live = mask.reshape(-1, *kernel.shape[-2:]).any(axis=0)
        bias = np.asarray(layer.bias.numpy()) if layer.use_bias else None
        end = positions[k + 1] if k + 1 < len(positions) else len(chain)
        out.append(_Weighted(layer, kernel, bias, live, chain[i + 1:end]))
    return chain[:positions[0]], out


def _static(shape) -> bool:
    return all(d is not None for d in shape[1:])


def _link(w: _Weighted, nxt: _Weighted, model) -> None:
    """Which units of ``w`` each input row of ``nxt`` reads, through the layers between."""
    owner = np.arange(w.units)
    for p in w.after:
        if isinstance(p, keras.layers.BatchNormalization):
            w.owners_at[id(p)] = owner
        if isinstance(p, keras.layers.Flatten):
            if not _static(p.input.shape):
                raise ExportError(f"Cannot shrink model '{model.name}': layer '{p.name}' flattens a tensor of "
                                  f"unknown shape {tuple(p.input.shape)}; expected a fixed input shape.")
            size = int(np.prod(p.input.shape[1:]))
            owner = owner[np.arange(size) % owner.size]
    rows = nxt.kernel.shape[-2]
    if owner.size != rows:
        raise ExportError(f"Cannot shrink model '{model.name}': layer '{nxt.layer.name}' reads {rows} features where "
                          f"'{w.layer.name}' and the layers after it give {owner.size}; expected them to match.")
    w.owner_next = owner
    exact_consumer = type(nxt.layer) is keras.layers.Dense or nxt.layer.padding == "valid"
    w.foldable = exact_consumer and _static(w.layer.output.shape)


def _analyse(ws: list[_Weighted]):
    """Fixed point of the dead-out / dead-in rules: ``(removed, folded, constant, dead_out)``
    per layer (bool arrays over units)."""
    count = len(ws)
    pinned = [np.zeros(w.units, bool) for w in ws]
    while True:
        removed = [np.zeros(w.units, bool) for w in ws]
        folded = [np.zeros(w.units, bool) for w in ws]
        while True:
            constant, dead_out = [], []
            for k, w in enumerate(ws):
                rows_live = np.ones(w.live.shape[0], bool) if k == 0 else ~folded[k - 1][ws[k - 1].owner_next]
                constant.append(~(w.live & rows_live[:, None]).any(axis=0))
                if k == count - 1:
                    dead_out.append(np.zeros(w.units, bool))
                    continue
                into_kept = (ws[k + 1].live & ~removed[k + 1][None, :]).any(axis=1)
                alive = np.zeros(w.units, bool)
                np.logical_or.at(alive, w.owner_next, into_kept)
                dead_out.append(~alive)
            new_removed = [~pinned[k] & (dead_out[k] | (constant[k] & w.foldable)) if k < count - 1
                           else np.zeros(w.units, bool) for k, w in enumerate(ws)]
            new_folded = [r & c for r, c in zip(new_removed, constant)]
            if all(np.array_equal(a, b) for a, b in zip(new_removed + new_folded, removed + folded)):
                break
            removed, folded = new_removed, new_folded
        empty = [k for k in range(count - 1) if removed[k].all()]
        if not empty:
            return removed, folded, constant, dead_out
        for k in empty:
            pinned[k][0] = True


def _constants(w: _Weighted, pre_activation: np.ndarray) -> np.ndarray:
    """What the next weighted layer's input rows hold when every unit of ``w`` outputs its
    constant ``act(pre_activation)``: the layers between run on it (inference mode)."""
    shape = tuple(w.layer.output.shape[1:])
    x = np.broadcast_to(pre_activation.astype(np.float32), (1, *shape))
    y = w.layer.activation(keras.ops.convert_to_tensor(x))
    for p in w.after:
        y = p(y, training=False)
    return np.asarray(keras.ops.convert_to_numpy(y), np.float64).reshape(-1, w.owner_next.size)[0]


def _copy(layer):
    """A new layer of the same type and configuration (weights not copied)."""
    return type(layer).from_config(layer.get_config())


def _input_name(model) -> str:
    first = model.layers[0] if model.layers else None
    return first.name if isinstance(first, keras.layers.InputLayer) else "input"


def shrink(model) -> tuple[keras.Model, ShrinkReport]:
    """A smaller dense Keras model computing the same function as masked ``model``.

    ``model`` must be a Sequential or functional model whose layers form a chain of
    ``Dense`` / ``Conv1D`` / ``Conv2D`` layers with ``Activation``, ``ReLU``,
    ``Dropout``, pooling, ``Flatten`` and ``BatchNormalization`` between (see the module
    docstring for what is removed and when folding a constant unit is exact).

    Args:
        model: a built model, usually with tflth masks (without masks nothing is dead).

    Returns:
        ``(shrunk, report)``: a new functional ``keras.Model`` (same name, layer names,
        input shape and output) and a :class:`ShrinkReport`. ``model`` is not changed.

    Raises:
        ExportError: the model is not such a chain (a residual ``Add``, attention, a
            subclassed model, a layer of another type); the message names the first
            layer that breaks it.

    Example:

    >>> import keras, numpy as np, tflth
    >>> from tflth import export
    >>> net = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="relu", name="hidden"),
    ...                         keras.layers.Dense(2, name="out")], name="net")
    >>> into = np.ones((6, 4), bool); into[:, 3] = False          # unit 3 gets no input: dead-in
    >>> out_of = np.ones((4, 2), bool); out_of[1] = False           # unit 1 feeds nothing: dead-out
    >>> tflth.masking.apply_masks(net, {"net/hidden/kernel": into, "net/out/kernel": out_of})
    >>> small, report = export.shrink(net)
    >>> small.get_layer("hidden").units, report.layer("hidden").dead_in, report.layer("hidden").dead_out
    (2, 1, 1)
    >>> x = np.random.default_rng(0).normal(size=(3, 6)).astype("float32")
    >>> bool(np.allclose(small(x), net(x), atol=1e-6))
    True
    """
    prefix, ws = _weighted(graph.chain(model), model)
    for w, nxt in zip(ws, ws[1:]):
        _link(w, nxt, model)
    removed, folded, constant, dead_out = _analyse(ws)

    biases = [np.zeros(w.units) if w.bias is None else w.bias.astype(np.float64) for w in ws]
    with_bias = [w.bias is not None for w in ws]
    for k, w in enumerate(ws[:-1]):
        if not folded[k].any():
            continue
        values = _constants(w, biases[k])
        rows = np.nonzero(folded[k][w.owner_next])[0]
        nxt = ws[k + 1]
        summed = nxt.kernel.reshape(-1, *nxt.kernel.shape[-2:]).astype(np.float64).sum(axis=0)
        biases[k + 1] = biases[k + 1] + values[rows] @ summed[rows]
        with_bias[k + 1] = True

    plan = [(_copy(layer), layer.get_weights()) for layer in prefix]  # (new layer, its weights), in chain order
    for k, w in enumerate(ws):
        kept = ~removed[k]
        rows = np.ones(w.kernel.shape[-2], bool) if k == 0 else ~removed[k - 1][ws[k - 1].owner_next]
        config = w.layer.get_config()
        config["units" if type(w.layer) is keras.layers.Dense else "filters"] = int(kept.sum())
        config["use_bias"] = with_bias[k]
        bias = [biases[k][kept].astype(w.kernel.dtype)] if with_bias[k] else []
        plan.append((type(w.layer).from_config(config), [w.kernel[..., rows, :][..., kept], *bias]))
        for p in w.after:
            weights = p.get_weights()
            if id(p) in w.owners_at:  # a BatchNormalization between: its features of removed units go
                keep = ~removed[k][w.owners_at[id(p)]]
                weights = [v[keep] for v in weights]
            plan.append((_copy(p), weights))
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), dtype=model.inputs[0].dtype, name=_input_name(model))
    x = inputs
    for layer, _ in plan:
        x = layer(x)
    shrunk = keras.Model(inputs, x, name=model.name)
    for layer, weights in plan:
        layer.set_weights(weights)

    first_kept = ~removed[0]
    report = ShrinkReport(
        layers=tuple(LayerShrink(w.layer.name, type(w.layer).__name__, w.units, int((~removed[k]).sum()),
                                 int(constant[k].sum()), int(dead_out[k].sum()),
                                 int((constant[k] & ~removed[k]).sum())) for k, w in enumerate(ws)),
        inputs=int(ws[0].live.shape[0]),
        dead_inputs=int((~(ws[0].live & first_kept[None, :]).any(axis=1)).sum()),
        params_before=int(model.count_params()), params_after=int(shrunk.count_params()))
    return shrunk, report

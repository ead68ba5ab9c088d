"""A smaller dense model computing what a masked model computes.

:func:`shrink` removes the hidden units of a masked model that do not change its function,
wherever they lie: the units are the model's **unit groups**
(:func:`tflth.unit_graph.unit_groups`, the one reader of which axes of which variables hold
the same units: kernel columns and biases that produce a unit, normalisation entries, the
rows of every layer that reads it, through ``Flatten`` in either data format, residual
``Add``\\ s tying several producers, separable and depthwise convolutions, attention heads).
A unit goes from **every** variable of its group at once. Two rules decide which:

* **dead-out**: a unit none of whose surviving *outgoing* weights reaches a unit that is
  kept (every row that reads it, in every layer that reads it, is pruned towards kept
  units). Removing it is exact whatever its value.
* **dead-in**: a unit with no surviving *incoming* weight except from constant units
  removed before it, in a group whose producers are Dense or convolution kernels (and
  their biases): it outputs a constant. It is removed and its contribution folded into
  the bias of each layer that reads it **where that is exact**: every reader is a
  ``Dense``, or a convolution with ``padding="valid"`` and ``groups=1`` whose input holds
  the constant at every position. The constant is the masked model's own value (it is
  computed by running the model, in inference mode, up to each reader's input); before a
  ``"same"``-padded convolution the borders see zeros instead, so such units are kept
  (counted as ``constant_kept``).

Both rules are applied until nothing changes (removing a unit can make the units feeding it
dead-out, and folding constants can make the units they fed constant). Groups that cannot
lose units are left whole: the model's inputs (the input signature stays; their *dead
inputs* are only counted) and outputs, units normalised together (LayerNormalization),
GroupNormalization blocks go only whole. A group that would lose every unit keeps its
first one.

Masks decide what survives: a masked variable's pruned entries are zero, an unmasked
variable's entries all count as surviving. The result is a Keras model of the same kind
(layers rebuilt from their configurations with fewer units, filters, heads or
GroupNormalization groups; no masks; the surviving weights keep their values) with the
same layer names, inputs and outputs, equal to the masked model's up to float rounding
(the folded sums are added in another order).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tflth import masking
from tflth.export.errors import ExportError

__all__ = ["LayerShrink", "ShrinkReport", "shrink"]


@dataclasses.dataclass(frozen=True)
class LayerShrink:
    """One weighted layer's output units before and after :func:`shrink`.

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
    """What :func:`shrink` removed: per weighted layer (:class:`LayerShrink`), the model's
    ``inputs`` and ``dead_inputs`` (input features with no surviving weight into a kept
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


# Layers whose kernel produces units that may be constant (their output is kernel · input + bias).
_CONV = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSE = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_PRODUCERS = (keras.layers.Dense, *_CONV, *_TRANSPOSE, *_SEPARABLE)
_REPORTED = {"kernel": (keras.layers.Dense, *_CONV, *_TRANSPOSE), "pointwise_kernel": _SEPARABLE}


@dataclasses.dataclass
class _Variable:
    path: str
    name: str
    layer: object
    value: np.ndarray
    alive: np.ndarray  # surviving entries: the mask, or all of them
    inputs: tuple[int, ...]  # the axes contracted with the layer's input (kernels)
    outputs: tuple[int, ...]


def _refuse(model, why: str) -> ExportError:
    return ExportError(f"Cannot shrink model '{model.name}': {why}.")


def _read(model):
    from tflth import unit_graph  # noqa: PLC0415  (it imports the model zoo)
    from tflth.masking import maskable  # noqa: PLC0415
    from tflth.pruning.layout import axes_of  # noqa: PLC0415

    try:
        graph = unit_graph.unit_groups(model, strict=True, streams_prunable=True)
    except unit_graph.UnitGraphError as e:
        raise ExportError(f"Cannot shrink: {e.what}") from None  # it names the model and every unplaced layer
    masks = {p: np.asarray(m.numpy()) != 0 for p, (_, m) in masking.masked_variables(model).items()}
    owners = maskable.owners_of(model)
    variables = {}
    for v in model.weights:
        value = np.asarray(v.numpy())
        layer = owners.get(id(v), model)
        inputs, outputs = axes_of(layer, v.name, value.ndim) if value.ndim else ((), ())
        variables[v.path] = _Variable(v.path, v.name, layer, value, masks.get(v.path, np.ones(value.shape, bool)),
                                      inputs, outputs)
    return graph, variables


class _Analysis:
    """The dead-out / dead-in fixed point over a model's unit groups, per block."""

    def __init__(self, model, graph, variables):
        from tflth.unit_graph import INPUTS_REASON  # noqa: PLC0415

        self.model, self.groups, self.vars = model, list(graph.groups), variables
        self.at: dict[tuple[str, int], list] = {}  # (path, axis) -> [(group index, member)]
        for i, g in enumerate(self.groups):
            for m in g.members:
                self.at.setdefault((m.path, m.axis), []).append((i, m))
        self.inputs = [i for i, g in enumerate(self.groups) if INPUTS_REASON in g.reason]
        self.removable = [g.blocks_prunable for g in self.groups]
        self.producing = [self._producing(g) for g in self.groups]
        self.readers = [[m for m in g.members if m.role == "in"] for g in self.groups]
        self.foldable = [self.producing[i] is not None and self._exact_readers(i) for i in range(len(self.groups))]

    # -- structure
    def _producing(self, g):
        """The kernel members that compute ``g``'s units, or None when a unit's value is
        not kernel · input + bias (a depthwise member, an embedding, an added variable...)."""
        kernels = []
        for m in g.members:
            var = self.vars[m.path]
            if m.role in ("in", "norm", "stat", "alpha"):
                continue
            if m.role != "out" or not isinstance(var.layer, _PRODUCERS):
                return None
            if var.inputs:
                kernels.append(m)
            elif var.name != "bias":
                return None
        return kernels or None

    def _exact_readers(self, i) -> bool:
        for m in self.readers[i]:
            layer = self.vars[m.path].layer
            if type(layer) is keras.layers.Dense:
                continue
            if type(layer) in _CONV and layer.padding == "valid" and layer.groups == 1:
                continue
            return False
        return True

    def blocks(self, i, member, flags) -> np.ndarray:
        """Per index of ``member``'s axis: whether it belongs to a flagged block of group ``i``."""
        g = self.groups[i]
        out = np.zeros(self.vars[member.path].value.shape[member.axis], bool)
        out[member.positions.reshape(g.blocks, -1)[flags].ravel()] = True
        return out

    def dead_along(self, path, axis, flags) -> np.ndarray:
        """Per index of ``axis`` of ``path``: whether some group's flagged block holds it."""
        out = np.zeros(self.vars[path].value.shape[axis], bool)
        for i, m in self.at.get((path, axis), []):
            out |= self.blocks(i, m, flags[i])
        return out

    def per_block(self, i, member, array) -> np.ndarray:
        """``any`` of ``array`` (shaped like ``member``'s variable) over each block's indices."""
        g = self.groups[i]
        moved = np.moveaxis(array, member.axis, 0)
        rows = member.positions.reshape(g.blocks, -1).ravel()
        return moved[rows].reshape(g.blocks, -1).any(axis=1)

    # -- the rules
    def constant(self, folded) -> list:
        out = []
        for i, g in enumerate(self.groups):
            kernels = self.producing[i]
            if kernels is None:
                out.append(np.zeros(g.blocks, bool))
                continue
            alive = np.zeros(g.blocks, bool)
            for m in kernels:
                var = self.vars[m.path]
                live = var.alive.copy()
                for a in var.inputs:
                    dead = self.dead_along(m.path, a, folded)
                    live &= ~dead.reshape([-1 if k == a else 1 for k in range(live.ndim)])
                alive |= self.per_block(i, m, live)
            out.append(~alive)
        return out

    def dead_out(self, removed) -> list:
        out = []
        for i, g in enumerate(self.groups):
            read = np.zeros(g.blocks, bool)
            for m in self.readers[i]:
                var = self.vars[m.path]
                live = var.alive.copy()
                for a in var.outputs:
                    dead = self.dead_along(m.path, a, removed)
                    live &= ~dead.reshape([-1 if k == a else 1 for k in range(live.ndim)])
                read |= self.per_block(i, m, live)
            out.append(~read)
        return out

    def run(self, foldable_values):
        count = len(self.groups)
        pinned = [np.zeros(g.blocks, bool) for g in self.groups]
        while True:
            removed = [np.zeros(g.blocks, bool) for g in self.groups]
            folded = [np.zeros(g.blocks, bool) for g in self.groups]
            while True:
                constant = self.constant(folded)
                dead_out = self.dead_out(removed)
                new_removed = [self.removable[i] & ~pinned[i] & (dead_out[i] | (constant[i] & foldable_values[i]))
                               if self.removable[i] else np.zeros_like(removed[i]) for i in range(count)]
                new_folded = [r & c & foldable_values[i] for i, (r, c) in enumerate(zip(new_removed, constant))]
                if all(np.array_equal(a, b) for a, b in zip(new_removed + new_folded, removed + folded)):
                    break
                removed, folded = new_removed, new_folded
            empty = [i for i in range(count) if removed[i].size and removed[i].all()]
            if not empty:
                return removed, folded, constant, dead_out
            for i in empty:
                pinned[i][0] = True


def _graph_layers(model) -> list:
    """The layers of ``model``'s graph, nested Sequential and functional models walked
    (their layers, not the models themselves)."""
    out = []
    for layer in model.layers:
        out += _graph_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return out


def _reader_inputs(model, layers) -> dict:
    """Each layer's input in the masked model, on one all-zero example (inference mode)."""
    if not layers:
        return {}
    single = len(model.inputs) == 1
    probe = keras.Model(model.inputs[0] if single else model.inputs, [layer.input for layer in layers])
    x = [np.zeros((1, *t.shape[1:]), t.dtype) for t in model.inputs]
    values = probe(x[0] if single else x, training=False)
    values = values if isinstance(values, (list, tuple)) else [values]
    return {id(layer): np.asarray(keras.ops.convert_to_numpy(v), np.float64) for layer, v in zip(layers, values)}


def _channels_last(layer, x: np.ndarray) -> np.ndarray:
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        x = np.moveaxis(x, 1, -1)
    return x.reshape(-1, x.shape[-1])


def _fold_values(analysis: _Analysis):
    """``([foldable per block, per group], {id(reader layer): (values per input row, uniform per row)})``:
    a block is foldable when every reader sees each of its rows as one value at every
    position (so a constant unit can go into the reader's bias)."""
    readers = {}
    for i, ok in enumerate(analysis.foldable):
        if ok:
            for m in analysis.readers[i]:
                layer = analysis.vars[m.path].layer
                readers[id(layer)] = layer
    try:
        inputs = _reader_inputs(analysis.model, list(readers.values()))
    except (ValueError, AttributeError):  # called more than once, or inside a nested model: no input here
        inputs = None
    rows = {}
    for key, layer in readers.items():
        if inputs is None:
            continue
        x = _channels_last(layer, inputs[key])
        rows[key] = (x[0], np.all(np.abs(x - x[:1]) <= 1e-6 * np.maximum(1.0, np.abs(x[:1])), axis=0))
    foldable = []
    for i, g in enumerate(analysis.groups):
        ok = np.full(g.blocks, bool(analysis.foldable[i]) and inputs is not None)
        if ok.any():
            for m in analysis.readers[i]:
                layer = analysis.vars[m.path].layer
                uniform = rows[id(layer)][1]
                ok &= np.asarray([uniform[idx].all() for idx in m.positions.reshape(g.blocks, -1)])
        foldable.append(ok)
    return foldable, rows


def _new_config(layer, arrays: dict, ordered: list, with_bias: bool):
    config = layer.get_config()
    if isinstance(layer, keras.layers.Dense):
        config["units"] = int(arrays["kernel"].shape[-1])
    elif isinstance(layer, _CONV):
        config["filters"] = int(arrays["kernel"].shape[-1])
    elif isinstance(layer, _TRANSPOSE):
        config["filters"] = int(arrays["kernel"].shape[-2])
    elif isinstance(layer, _SEPARABLE):
        config["filters"] = int(arrays["pointwise_kernel"].shape[-1])
    elif isinstance(layer, keras.layers.Embedding):
        config["output_dim"] = int(arrays["embeddings"].shape[-1])
    elif isinstance(layer, keras.layers.GroupNormalization) and int(layer.groups) != -1:
        size = int(layer.gamma.shape[0]) // int(layer.groups)
        config["groups"] = int(arrays["gamma"].shape[0]) // size
    elif isinstance(layer, keras.layers.MultiHeadAttention):  # its weights start with the query kernel (in, heads, dim)
        config["num_heads"] = int(ordered[0].shape[1])
    if with_bias:
        config["use_bias"] = True
    return config


def shrink(model) -> tuple[keras.Model, ShrinkReport]:
    """A smaller dense Keras model computing the same function as masked ``model``.

    ``model`` must be a built Sequential or functional model whose every layer the unit
    reader places (:func:`tflth.unit_graph.unit_groups`; see the module docstring for what
    is removed and when folding a constant unit is exact).

    Args:
        model: a built model, usually with tflth masks (without masks nothing is dead).

    Returns:
        ``(shrunk, report)``: a new Keras model (same name, layer names, inputs and
        outputs) and a :class:`ShrinkReport`. ``model`` is not changed.

    Raises:
        ExportError: a subclassed model, or layers the unit reader cannot place (all of
            them named in one line). Nested Sequential and functional models are rebuilt
            too (their constant units are kept: only dead-out units go inside them).

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
    graph, variables = _read(model)
    analysis = _Analysis(model, graph, variables)
    foldable, rows = _fold_values(analysis)
    removed, folded, constant, dead_out = analysis.run(foldable)

    # Fold the removed constant units into their readers' biases (float64, full size).
    extra_bias: dict[str, np.ndarray] = {}  # reader layer name -> added to its bias (output units, full size)
    for i, g in enumerate(analysis.groups):
        if not folded[i].any():
            continue
        for m in analysis.readers[i]:
            var = variables[m.path]
            index = m.positions.reshape(g.blocks, -1)[folded[i]].ravel()
            values = rows[id(var.layer)][0][index]
            kernel = np.moveaxis(var.value.astype(np.float64), var.inputs[-1], 0)[index]  # (rows, *k, out)
            summed = kernel.reshape(len(index), -1, kernel.shape[-1]).sum(axis=1)
            add = values @ summed
            extra_bias[id(var.layer)] = extra_bias.get(id(var.layer), 0.0) + add

    # Keep, per variable axis, the indices of blocks not removed; slice every variable.
    arrays = {}
    for path, var in variables.items():
        value = var.value
        for axis in range(value.ndim):
            dead = analysis.dead_along(path, axis, removed)
            if dead.any():
                value = np.take(value, np.flatnonzero(~dead), axis=axis)
        arrays[path] = value
    plans = {}  # id(layer) -> (layer, its weights in order, a new bias or None, a new config or None)
    for layer in _graph_layers(model):
        own = {v.path: v for v in layer.weights}
        if not own:
            continue
        names = {variables[p].name: p for p in own}
        add = extra_bias.get(id(layer))
        bias_path = names.get("bias")
        new_bias = None
        if add is not None:
            kernel = variables[names["kernel"]]
            keep = ~analysis.dead_along(kernel.path, kernel.outputs[-1], removed)
            full = (variables[bias_path].value.astype(np.float64) if bias_path else np.zeros(keep.size)) + add
            new_bias = full[keep].astype(kernel.value.dtype)
        ordered = [arrays[p] for p in own]
        if new_bias is None and all(a.shape == variables[p].value.shape for a, p in zip(ordered, own)):
            plans[id(layer)] = (layer, ordered, None, None)  # same shapes: its own configuration
            continue
        by_name = {variables[p].name: arrays[p] for p in own}
        plans[id(layer)] = (layer, ordered, new_bias, _new_config(layer, by_name, ordered,
                                                                  new_bias is not None and not layer.use_bias))
    clones = {}

    def rebuild(layer):
        plan = plans.get(id(layer))
        config = plan[3] if plan is not None and plan[3] is not None else layer.get_config()
        clones[id(layer)] = layer.__class__.from_config(config)
        return clones[id(layer)]

    try:
        small = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
        for key, (old, weights, new_bias, _) in plans.items():
            layer = clones[key]
            if new_bias is not None:
                kernel_at = [v.name for v in old.weights].index("kernel")
                weights = list(weights)
                if old.use_bias:
                    weights[[v.name for v in old.weights].index("bias")] = new_bias
                else:
                    weights.insert(kernel_at + 1, new_bias)
            layer.set_weights(weights)
    except (ValueError, TypeError, KeyError) as e:
        raise _refuse(model, f"rebuilding it with fewer units failed ({type(e).__name__}: {e})") from None

    return small, _report(model, small, analysis, variables, removed, constant, dead_out)


def _report(model, small, analysis, variables, removed, constant, dead_out) -> ShrinkReport:
    entries = []
    for path, var in variables.items():
        kinds = _REPORTED.get(var.name)
        if kinds is None or not isinstance(var.layer, kinds) or not var.outputs:
            continue
        axis = var.outputs[-1]
        size = var.value.shape[axis]
        flags = {}
        for key, per_group in (("removed", removed), ("constant", constant), ("dead_out", dead_out)):
            flags[key] = analysis.dead_along(path, axis, per_group)
        is_output = any(not analysis.removable[i] for i, _ in analysis.at.get((path, axis), []))
        dead = np.zeros(size, bool) if is_output else flags["dead_out"]
        entries.append(LayerShrink(var.layer.name, type(var.layer).__name__, int(size), int((~flags["removed"]).sum()),
                                   int(flags["constant"].sum()), int(dead.sum()),
                                   int((flags["constant"] & ~flags["removed"]).sum())))
    inputs = dead_inputs = 0
    for i in analysis.inputs:
        inputs += analysis.groups[i].units
        dead_inputs += int(dead_out[i].sum())
    return ShrinkReport(tuple(entries), inputs, dead_inputs, int(model.count_params()), int(small.count_params()))

"""Unit groups: which axes of which variables hold the same hidden units, read from a model's graph.

A *unit* is one hidden feature of a network: a Dense unit, a convolution channel, an
embedding feature, an attention head. Its weights lie in several variables at once: the
kernel column and bias entry that produce it, the BatchNorm entries that scale it, the
kernel rows of every layer that reads it (through a ``Flatten``: many rows). A *unit
group* is a set of units laid out alike in the same variables: removing a unit (structured
pruning) or reordering the units (permutation, alignment of two networks) must touch every
place the group lists, or the network computes something else. :func:`unit_groups` reads
the groups of a built Sequential or functional Keras 3 model from the graph Keras records,
walking nested models too.

Each group lists its :class:`Member` entries: ``(variable path, axis, positions, role)``,
where ``positions[u]`` are the indices along ``axis`` that belong to unit ``u`` (an
``(units, k)`` integer array, each row ascending; the ``j``-th index of every unit plays the
same part: the same spatial position of a ``Flatten``, the same copy of a ``Concatenate``).
Roles: ``"out"`` (a producer: kernel output axis, bias, attention heads of the query / key /
value projections), ``"in"`` (a consumer: the input axis of a layer that reads the units),
``"norm"`` (gamma / beta of a normalisation), ``"stat"`` (BatchNorm moving statistics),
``"depthwise"`` (a depthwise kernel and bias: they act on each unit alone), ``"alpha"``
(PReLU's per-channel slope), ``"add"`` (a variable added to, or put in front of, the units:
the zoo ViT's class token and position embeddings).

Layers, by what they do to the units that reach them (exact types: a subclass may compute
something else in its ``call`` and is refused):

=========================================  ===============================================
layer                                      units
=========================================  ===============================================
``Dense``                                  consumes its input's units (kernel axis 0);
                                           starts a group (kernel axis 1, bias)
``Conv1D/2D/3D`` (either data format)      consumes (kernel axis -2); starts a group
                                           (kernel axis -1, bias). ``groups=G > 1``: input
                                           channel ``r`` of every group is one unit (kernel
                                           row ``r``), output channel ``j`` of every group is
                                           one unit (positions ``(units, G)``)
``Conv1D/2D/3DTranspose``                  kernel ``(*k, out, in)``: consumes axis -1,
                                           starts a group on axis -2
``DepthwiseConv1D/2D``                     joins its input's group (kernel axis 2, bias);
                                           a multiplier ``m`` repeats each unit ``m`` times
``SeparableConv1D/2D``                     depthwise kernel joins its input's group, the
                                           pointwise kernel consumes the depthwise outputs
                                           (positions ``(units, m)``) and starts a group
``Embedding``                              starts a group (embeddings axis 1)
``MultiHeadAttention``                     consumes query / key / value (their kernels'
                                           axis 0); the heads are one group (query, key,
                                           value kernels axis 1 and biases axis 0: "out";
                                           output projection kernel axis 0: "in"); the
                                           output projection starts a group (kernel axis 2,
                                           bias)
``BatchNormalization``                     joins (gamma, beta "norm"; moving statistics
                                           "stat") on its axis
``LayerNormalization`` (one axis)          joins ("norm"); not prunable: its mean and
                                           variance read every unit
``GroupNormalization``                     joins ("norm"); the group's ``granularity`` is the
                                           units per normalised block, and with blocks of
                                           more than one unit it is not prunable
``Add``, ``Subtract``, ``Multiply``,       tie their inputs' units index by index: the
``Average``, ``Maximum``, ``Minimum``      groups merge
``Concatenate`` (on the channel axis)      lays its inputs' units side by side
``Flatten``                                lays each channel out over the map's positions:
                                           channels last ``(H, W, C)``: channel ``c`` feeds
                                           rows ``c + C*i``; channels first ``(C, H, W)``:
                                           rows ``c*H*W + i``
``Reshape``                                placed when every unit stays on one axis of its
                                           output (a ``Flatten``, or a reshape that keeps the
                                           channel axis last), else refused
pass-through layers (:data:`PASS_THROUGH`)  keep each unit on its own; see below
nested Sequential / functional models      walked
=========================================  ===============================================

:data:`PASS_THROUGH` is the one table of layers that hand each unit on unchanged in
position, with the condition each must meet (it is checked):

* ``"elementwise"``: ``ReLU``, ``LeakyReLU``, ``ELU``, ``Dropout``, ``SpatialDropout1D/2D/3D``,
  ``GaussianNoise``, ``GaussianDropout``, ``AlphaDropout``, ``ActivityRegularization``,
  ``Identity``: always.
* ``"activation"``: ``Activation``: when its function acts on each value alone (relu, gelu,
  tanh, ...); softmax, log_softmax, sparsemax and glu mix the last axis and are refused
  there unless their output is the model's output. The activation of a Dense or a
  convolution is checked the same way.
* ``"softmax"``: ``Softmax``: when it normalises axes other than the units' axis (or
  produces the model's output).
* ``"prelu"``: ``PReLU``: its ``alpha`` joins the group when it has one slope per channel;
  a slope shared across channels passes.
* ``"spatial"``: ``MaxPooling``, ``AveragePooling`` 1D/2D/3D, ``ZeroPadding``, ``Cropping``,
  ``UpSampling`` 1D/2D/3D: when their ``data_format`` puts the channels where the units are.
* ``"global"``: ``GlobalAveragePooling``, ``GlobalMaxPooling`` 1D/2D/3D: likewise; the
  units end on axis 1 (or stay put with ``keepdims``).
* ``"last"``: the zoo ViT's ``TakeClassToken``: when the units are on the last axis.

The zoo ViT's ``ClassToken`` and ``PositionEmbedding`` join the group on the last axis of
their variable ("add"). Layers that cannot be placed (anything else: ``Dot``, recurrent
layers, ``Permute``, a custom layer, a subclassed nested model, a mixing softmax, a
LayerNormalization over several axes, a Reshape that spreads units over axes, a layer
with LoRA or quantisation enabled) are collected in :attr:`UnitGraph.unplaced`. So is a
``channels_first`` convolution with a bias whose output width equals its channels: Keras's
TensorFlow backend adds that bias along the width (see ``_bias_lands_on_last_axis``).

Groups that cannot be pruned say why in ``reason`` (``prunable=False``), and those whose
units cannot even be reordered have ``permutable=False``:

* the model's inputs and outputs (not permutable);
* units read by an unplaced layer, or coming out of one (not permutable);
* units normalised together (LayerNormalization; GroupNormalization blocks: permute whole
  blocks, see ``granularity``);
* a *residual stream*: units that a layer reads and that a merge (``Add`` ...) then adds
  back to, so the same feature runs past a block and into it (the zoo ViT's model
  dimension, a ResNet stage with identity shortcuts): pruning one removes a feature from
  every block. Permutable; prunable only with ``streams_prunable=True``.

Example:

>>> import keras
>>> from tflth import unit_graph
>>> net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu", name="fc"),
...                         keras.layers.Dense(2, name="out")], name="net")
>>> graph = unit_graph.unit_groups(net)
>>> hidden = graph.group_of("net/fc/kernel", 1)
>>> hidden.name, hidden.units, hidden.prunable
('net/fc', 4, True)
>>> [(m.path, m.axis, m.role) for m in hidden.members]
[('net/fc/kernel', 1, 'out'), ('net/fc/bias', 0, 'out'), ('net/out/kernel', 0, 'in')]
>>> graph.group_of("net/out/kernel", 1).reason
"the model's outputs"
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras
import numpy as np

from tflth import _keras
from tflth.errors import InputError
from tflth.models import vit as _vit

__all__ = ["UnitGraphError", "Member", "UnitGroup", "UnitGraph", "unit_groups", "PASS_THROUGH", "ROLES"]

#: The roles of a :class:`Member` (see the module docstring).
ROLES = ("out", "in", "norm", "stat", "depthwise", "alpha", "add")

_L = keras.layers

#: Layers that hand each unit on unchanged in position, by exact type, with their condition
#: (the rule checked; see the module docstring).
PASS_THROUGH = {
    **{t: "elementwise" for t in (_L.ReLU, _L.LeakyReLU, _L.ELU, _L.Dropout, _L.SpatialDropout1D,
                                  _L.SpatialDropout2D, _L.SpatialDropout3D, _L.GaussianNoise, _L.GaussianDropout,
                                  _L.AlphaDropout, _L.ActivityRegularization, _L.Identity)},
    _L.Activation: "activation",
    _L.Softmax: "softmax",
    _L.PReLU: "prelu",
    **{t: "spatial" for t in (_L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D, _L.AveragePooling1D,
                              _L.AveragePooling2D, _L.AveragePooling3D, _L.ZeroPadding1D, _L.ZeroPadding2D,
                              _L.ZeroPadding3D, _L.Cropping1D, _L.Cropping2D, _L.Cropping3D, _L.UpSampling1D,
                              _L.UpSampling2D, _L.UpSampling3D)},
    **{t: "global" for t in (_L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
                             _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D)},
    _vit.TakeClassToken: "last",
}

_ELEMENTWISE_NAMES = ("linear", "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish",
                      "hard_silu", "hard_swish", "sigmoid", "hard_sigmoid", "log_sigmoid", "tanh", "hard_tanh",
                      "tanh_shrink", "soft_shrink", "hard_shrink", "softplus", "softsign", "exponential", "mish",
                      "sparse_plus", "sparse_sigmoid", "squareplus")
_MIXING_NAMES = ("softmax", "log_softmax", "sparsemax", "glu")
_ELEMENTWISE = {id(getattr(keras.activations, n)) for n in _ELEMENTWISE_NAMES if hasattr(keras.activations, n)}
_MIXING = {id(getattr(keras.activations, n)) for n in _MIXING_NAMES if hasattr(keras.activations, n)}

_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_DEPTHWISE = (_L.DepthwiseConv1D, _L.DepthwiseConv2D)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)
_TIES = (_L.Add, _L.Subtract, _L.Multiply, _L.Average, _L.Maximum, _L.Minimum)

INPUTS_REASON = "the model's inputs"
OUTPUTS_REASON = "the model's outputs"
STREAM_REASON = "the residual stream: pruning it removes a feature from every block"
_LN_NOTE = "LayerNormalization:"  # + path; the notes of several LayerNormalizations are merged into one reason


class UnitGraphError(InputError):
    """A model whose unit groups cannot be read: a subclassed model, or (``strict=True``)
    layers that cannot be placed. ``what``: the message without the library-level hint
    (``strict=False``), for tools that cannot offer it."""

    @property
    def what(self) -> str:
        return self.__dict__.get("_what", str(self))

    @what.setter
    def what(self, value: str) -> None:
        self._what = value


@dataclasses.dataclass(frozen=True, eq=False)
class Member:
    """One variable axis a :class:`UnitGroup` indexes.

    ``path``: the variable's Keras path (as ``model.weights`` reports it); ``axis``: the
    axis (non-negative); ``positions``: an ``(units, k)`` integer array, row ``u`` the
    indices along ``axis`` that belong to unit ``u`` of the group (ascending; the ``j``-th
    index of every row plays the same part); ``role``: one of :data:`ROLES`.
    """

    path: str
    axis: int
    positions: np.ndarray
    role: str


@dataclasses.dataclass(frozen=True, eq=False)
class UnitGroup:
    """A set of hidden units laid out alike in the same variables.

    ``name``: the path of the layer that first produces the units (the model's name, then
    layer names); ``units``: how many; ``members``: every :class:`Member` (variable axis)
    the units occupy. Pruning unit ``u`` zeroes (or removes) ``positions[u]`` along
    ``axis`` of every member; permuting the units by ``perm`` reorders the rows of every
    member's ``positions`` alike (``new[positions[u]] = old[positions[perm[u]]]``) and leaves
    the model's function unchanged when ``permutable``.

    ``prunable``: whether units may be removed one by one (zeroing all of a unit's members
    then equals removing it); ``reason``: why not (``""`` when prunable); ``granularity``:
    units that must move together: every valid permutation maps each block of
    ``granularity`` consecutive units onto a block (a GroupNormalization's channel blocks;
    1 otherwise); ``permutable``: whether the units may be reordered at all (not the
    model's inputs or outputs, nor units reaching an unplaced layer); ``blocks_prunable``:
    whether whole blocks of ``granularity`` units may be removed (``prunable`` when
    ``granularity`` is 1; a GroupNormalization's blocks otherwise: removing every unit of
    a block leaves the other blocks' statistics as they were).
    """

    name: str
    units: int
    members: tuple[Member, ...]
    prunable: bool
    reason: str = ""
    granularity: int = 1
    permutable: bool = True
    blocks_prunable: bool = True

    @property
    def blocks(self) -> int:
        """The blocks of ``granularity`` units (``units`` when ``granularity`` is 1)."""
        return self.units // self.granularity

    def member(self, path: str, axis: int) -> Member:
        """The member on ``axis`` (non-negative) of variable ``path``."""
        for m in self.members:
            if m.path == path and m.axis == axis:
                return m
        raise KeyError(f"Group '{self.name}' has no member ({path!r}, axis {axis}); expected one of "
                       f"{[(m.path, m.axis) for m in self.members]}.")


@dataclasses.dataclass(frozen=True, eq=False)
class UnitGraph:
    """The unit groups of a model, as :func:`unit_groups` reads them.

    ``groups``: every :class:`UnitGroup`, in the order their units are first produced;
    ``unplaced``: ``(layer path, layer class name, reason)`` of every layer that could not
    be placed (empty unless ``strict=False``); ``model_name``.

    ``group_of(path, axis)`` is the group a variable's axis belongs to (``None`` when no
    group covers it); an axis a ``Concatenate`` splits between groups needs ``index``.
    ``groups_of(path, axis)`` lists them all; ``variables()`` are the paths of the
    variables some group covers, in ``model.weights`` order.
    """

    model_name: str
    groups: tuple[UnitGroup, ...]
    unplaced: tuple[tuple[str, str, str], ...]
    weight_paths: tuple[str, ...] = dataclasses.field(repr=False)
    ranks: dict = dataclasses.field(repr=False)

    def _axis(self, path: str, axis: int) -> int:
        rank = self.ranks.get(path)
        if rank is None or not -rank <= axis < rank:
            return axis
        return axis % rank

    def groups_of(self, path: str, axis: int) -> list[UnitGroup]:
        """Every group with a member on ``axis`` of variable ``path`` (``[]`` when none)."""
        axis = self._axis(path, axis)
        return [g for g in self.groups if any(m.path == path and m.axis == axis for m in g.members)]

    def group_of(self, path: str, axis: int, index: int | None = None) -> UnitGroup | None:
        """The group that ``axis`` of variable ``path`` belongs to, or ``None``.

        With ``index``: the group holding that index of the axis. Without, the axis must
        belong to one group; a ``ValueError`` names the groups when several share it.
        """
        found = self.groups_of(path, axis)
        if index is not None:
            axis = self._axis(path, axis)
            for g in found:
                if np.any(g.member(path, axis).positions == index):
                    return g
            return None
        if len(found) > 1:
            raise ValueError(f"Axis {axis} of {path!r} is split between {len(found)} groups "
                             f"({', '.join(repr(g.name) for g in found)}); pass index= to pick one.")
        return found[0] if found else None

    def variables(self) -> list[str]:
        """Paths of the variables some group covers, in ``model.weights`` order."""
        covered = {m.path for g in self.groups for m in g.members}
        return [p for p in self.weight_paths if p in covered]

    def summary(self) -> str:
        """One line per group: name, units, whether prunable (or why not), members."""
        lines = []
        for g in self.groups:
            state = "prunable" if g.prunable else f"not prunable ({g.reason})"
            members = ", ".join(f"{m.path}[{m.axis}]x{m.positions.shape[1]}" for m in g.members)
            lines.append(f"{g.name}: {g.units} units, {state}: {members}")
        lines += [f"unplaced {path} ({kind}): {why}" for path, kind, why in self.unplaced]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- reading the graph


class _Refused(Exception):
    """A layer that cannot be placed; the message says why."""


@dataclasses.dataclass
class _Units:
    """A tensor's units: index ``c`` of axis ``axis`` (counted with the batch axis) carries
    unit (atom) ``atoms[c]``."""

    axis: int
    atoms: np.ndarray


@dataclasses.dataclass
class _Open:
    """A tensor whose units are fixed and whose channel axis is not known yet (the model's
    inputs, the output of an unplaced layer): fixed atoms are made per axis when a layer
    reads it (``resolved``)."""

    source: str
    reason: str
    resolved: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class _Slot:
    role: str
    atoms: np.ndarray  # index of the variable axis -> atom


def _graph_outputs(model):
    """The symbolic outputs of a Sequential or functional ``model``, or ``None`` when Keras
    recorded no graph for it (a subclassed model)."""
    if not isinstance(model, keras.Model):
        return None
    try:
        outputs = model.outputs
        inputs = model.inputs
    except (AttributeError, ValueError):  # a subclassed model, or a Sequential never built
        return None
    if not isinstance(outputs, (list, tuple)) or not outputs or not isinstance(inputs, (list, tuple)):
        return None
    if any(_keras.graph_producer(t) is None for t in outputs):
        return None
    return list(outputs)


def _rank(tensor) -> int:
    return len(tensor.shape)


def _bias_lands_on_last_axis(layer, output) -> bool:
    """Keras behaviour, TensorFlow backend (seen in Keras 3.15): a ``channels_first``
    convolution adds its bias as ``keras.ops.add(outputs, reshape(bias, (1, C, 1, ...)))``,
    and the backend's ``add`` turns a bias-like operand into ``tf.nn.bias_add`` in NHWC
    format whenever the output's *last* dimension equals ``C``: the bias is then added
    along the last spatial axis, not the channels (``keras/src/backend/tensorflow/numpy.py``,
    ``add``). Such a layer's bias belongs to no channel."""
    return (keras.backend.backend() == "tensorflow" and getattr(layer, "data_format", "") == "channels_first"
            and getattr(layer, "use_bias", False) and len(output.shape) > 2
            and output.shape[-1] is not None and output.shape[-1] == output.shape[1])


def _variable(layer, name: str):
    """``layer.<name>`` when it is a variable (``None`` when the layer has none); a computed
    kernel (LoRA, quantisation) is refused."""
    v = getattr(layer, name, None)
    if v is None or isinstance(v, keras.Variable):
        return v
    raise _Refused(f"its {name} is computed (LoRA or quantisation enabled), not a variable; merge it first")


def _check_bias(layer, output) -> None:
    if _bias_lands_on_last_axis(layer, output):
        raise _Refused(f"Keras's TensorFlow backend adds its bias along the last axis, not the channels, because "
                       f"both have size {output.shape[1]} (keras.ops.add reads the reshaped bias as channels-last); "
                       "give the map another width or use use_bias=False")


class _Reader:
    """Walks a model's graph, giving each tensor the atoms (units) of its channel axis, and
    recording which atoms each variable axis index holds; ties are unions of atoms."""

    def __init__(self, streams_prunable: bool):
        self.streams_prunable = streams_prunable
        self.parent: list[int] = []
        self.origin: list[str] = []
        self.notes: dict[int, dict[str, bool]] = {}  # root -> {reason: permutable}
        self.read: set[int] = set()  # roots of atoms a layer reads ("in")
        self.blocks: list[tuple[int, str, int]] = []  # (atom, GroupNormalization path, block)
        self.slots: dict[tuple[str, int], _Slot] = {}
        self.ranks: dict[str, int] = {}
        self.produced: dict[tuple[int, str], np.ndarray] = {}
        self.unplaced: dict[str, tuple[str, str]] = {}
        self.outputs: set[int] = set()

    # -- atoms
    def new(self, n: int, origin: str) -> np.ndarray:
        start = len(self.parent)
        self.parent.extend(range(start, start + n))
        self.origin.extend([origin] * n)
        return np.arange(start, start + n)

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(int(a)), self.find(int(b))
        if ra == rb:
            return
        ra, rb = min(ra, rb), max(ra, rb)  # the earliest atom stays the root (it names the group)
        self.parent[rb] = ra
        for reason, permutable in self.notes.pop(rb, {}).items():
            self.note_root(ra, reason, permutable)
        if rb in self.read:
            self.read.discard(rb)
            self.read.add(ra)

    def note_root(self, root: int, reason: str, permutable: bool) -> None:
        mine = self.notes.setdefault(root, {})
        mine[reason] = mine.get(reason, True) and permutable

    def note(self, atoms, reason: str, permutable: bool) -> None:
        for root in {self.find(int(a)) for a in np.ravel(atoms)}:
            self.note_root(root, reason, permutable)

    def produce(self, layer, key: str, n: int, origin: str) -> np.ndarray:
        """The atoms of ``layer``'s output units (the same for every call of a shared layer)."""
        cached = self.produced.get((id(layer), key))
        if cached is None or cached.size != n:
            cached = self.produced[(id(layer), key)] = self.new(n, origin)
        return cached

    # -- variables
    def record(self, variable, axis: int, atoms, role: str) -> None:
        """Index ``i`` of ``axis`` of ``variable`` holds ``atoms[i]`` (a row of atoms: all of them, tied)."""
        if variable is None:
            return
        rank = len(variable.shape)
        axis %= rank
        size = int(variable.shape[axis])
        atoms = np.asarray(atoms)
        if atoms.size % size:
            raise _Refused(f"its {variable.path!r} has {size} entries on axis {axis}, where {atoms.size} units "
                           "reach it")
        atoms = atoms.reshape(size, -1)
        key = (variable.path, axis)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = _Slot(role, atoms[:, 0].copy())
            self.ranks[variable.path] = rank
        for i in range(size):
            for a in atoms[i]:
                self.union(slot.atoms[i], a)
        if role == "in":
            self.read.update(self.find(int(a)) for a in slot.atoms)

    # -- tensors
    def units_on(self, tensor, value, axis: int) -> _Units:
        """``value`` (a tensor's map) as units on ``axis``; fixed atoms for an open tensor."""
        axis %= _rank(tensor)
        if isinstance(value, _Units):
            if value.axis != axis:
                raise _Refused(f"it reads units on axis {axis} of its input, whose units lie on axis {value.axis}")
            return value
        found = value.resolved.get(axis)
        if found is None:
            size = tensor.shape[axis]
            if size is None:
                raise _Refused(f"its input has an unknown size on axis {axis}")
            found = value.resolved[axis] = _Units(axis, self.new(int(size), value.source))
            self.note(found.atoms, value.reason, False)
        return found

    def check_activation(self, fn, call, axis: int) -> None:
        if id(fn) in _ELEMENTWISE:
            return
        name = getattr(fn, "__name__", type(fn).__name__)
        if id(fn) in _MIXING:
            if axis != _rank(call.tensor) - 1 or id(call.tensor) in self.outputs:
                return
            raise _Refused(f"its activation {name} mixes the units of the last axis")
        raise _Refused(f"its activation {name!r} is not known to act on each value alone")

    # -- walking
    def walk(self, model, prefix: str, seeds: dict) -> list:
        outputs = _graph_outputs(model)
        values = dict(seeds)
        keep = list(outputs)  # tensors stay alive while their ids key ``values``
        stack = [(t, False) for t in reversed(outputs)]
        while stack:
            tensor, ready = stack.pop()
            if id(tensor) in values:
                continue
            producer = _keras.graph_producer(tensor)
            if producer is None:  # a constant (eager) tensor: no units of the graph
                values[id(tensor)] = _Open(prefix, "a constant")
                continue
            operation, inputs, _ = producer
            if not ready:
                stack.append((tensor, True))
                stack.extend((t, False) for t in reversed(inputs) if id(t) not in values)
                continue
            keep.extend(inputs)
            values[id(tensor)] = self.place(operation, inputs, tensor, values, prefix)
        return [values[id(t)] for t in outputs]

    def place(self, operation, inputs, tensor, values, prefix):
        path = f"{prefix}/{operation.name}"
        call = _Call(operation, path, list(inputs), [values[id(t)] for t in inputs], tensor, values)
        try:
            return self.handle(call)
        except _Refused as refused:
            self.unplaced.setdefault(path, (type(operation).__name__, str(refused)))
            for value in call.values:
                if isinstance(value, _Units):
                    self.note(value.atoms, f"read by unplaced layer '{path}' ({type(operation).__name__})", False)
            return _Open(path, f"the output of unplaced layer '{path}' ({type(operation).__name__})")

    def handle(self, call):
        layer = call.layer
        kind = type(layer)
        if isinstance(layer, keras.layers.InputLayer):
            return _Open(call.path, INPUTS_REASON)
        if isinstance(layer, keras.Model):
            return self.nested(call)
        if not isinstance(layer, keras.layers.Layer):
            raise _Refused(f"is a Keras operation ({kind.__name__}) called on symbolic tensors, not a layer")
        rule = PASS_THROUGH.get(kind)
        if rule is not None:
            return self.pass_through(call, rule)
        handler = _HANDLERS.get(kind)
        if handler is None:
            raise _Refused("is not a layer whose units can be read (see the table of tflth.unit_graph)")
        return handler(self, call)

    def nested(self, call):
        inner = call.layer
        if _graph_outputs(inner) is None:
            raise _Refused("is a subclassed model, whose graph Keras does not record")
        if len(inner.inputs) != len(call.inputs):
            raise _Refused(f"takes {len(call.inputs)} tensors where its graph has {len(inner.inputs)} inputs")
        seeds = {id(t): v for t, v in zip(inner.inputs, call.values)}
        outputs = self.walk(inner, call.path, seeds)
        return outputs[call.index] if call.index < len(outputs) else _Open(call.path, "an unread output")

    # -- the layers
    def pass_through(self, call, rule):
        layer, tensor, value = call.layer, call.inputs[0], call.values[0]
        if rule == "elementwise":
            return value
        if rule == "activation":
            if isinstance(value, _Units):
                self.check_activation(layer.activation, call, value.axis)
            return value
        if isinstance(value, _Open):
            return _Open(value.source, value.reason)
        if rule == "softmax":
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if value.axis in {a % _rank(tensor) for a in axes} and id(call.tensor) not in self.outputs:
                raise _Refused(f"mixes the channel axis (softmax over axis {value.axis}, where the units lie)")
            return value
        if rule == "prelu":
            alpha = _variable(layer, "alpha")
            if int(alpha.shape[value.axis - 1]) == value.atoms.size:
                self.record(alpha, value.axis - 1, value.atoms, "alpha")
            return value
        if rule == "last":
            if value.axis != _rank(tensor) - 1:
                raise _Refused(f"keeps the last axis, but its input's units lie on axis {value.axis}")
            return _Units(_rank(call.tensor) - 1, value.atoms)
        # "spatial" and "global": the data format says where the channels are
        channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
        axis = 1 if channels_first else _rank(tensor) - 1
        if value.axis != axis:
            raise _Refused(f"works on data_format={'channels_first' if channels_first else 'channels_last'} "
                           f"tensors (channels on axis {axis}), but its input's units lie on axis {value.axis}")
        if rule == "global" and not getattr(layer, "keepdims", False):
            return _Units(1, value.atoms)
        return _Units(axis if channels_first else _rank(call.tensor) - 1, value.atoms)

    def dense(self, call):
        layer, tensor = call.layer, call.inputs[0]
        kernel, bias = _variable(layer, "kernel"), _variable(layer, "bias")
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise _Refused("has LoRA or quantisation enabled; merge it first")
        x = self.units_on(tensor, call.values[0], -1)
        self.check_activation(layer.activation, call, _rank(call.tensor) - 1)
        out = self.produce(layer, "units", int(kernel.shape[1]), call.path)
        self.record(kernel, 0, x.atoms, "in")
        self.record(kernel, 1, out, "out")
        self.record(bias, 0, out, "out")
        return _Units(_rank(call.tensor) - 1, out)

    def conv(self, call):
        layer, tensor = call.layer, call.inputs[0]
        _check_bias(layer, call.tensor)
        kernel, bias = _variable(layer, "kernel"), _variable(layer, "bias")
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise _Refused("has LoRA or quantisation enabled; merge it first")
        first = layer.data_format == "channels_first"
        x = self.units_on(tensor, call.values[0], 1 if first else -1)
        out_axis = 1 if first else _rank(call.tensor) - 1
        self.check_activation(layer.activation, call, out_axis)
        transpose = isinstance(layer, _TRANSPOSE)
        in_axis, k_out = (-1, -2) if transpose else (-2, -1)
        groups = 1 if transpose else int(layer.groups)
        filters = int(kernel.shape[k_out])
        out = self.produce(layer, "filters", filters // groups, call.path)
        # groups > 1: input channel g*per_group + r is row r of the kernel for every group g (tied),
        # output channel g*(filters/groups) + j is unit j for every g.
        self.record(kernel, in_axis, x.atoms.reshape(groups, -1).T, "in")
        channels = np.tile(out, groups)
        self.record(kernel, k_out, channels, "out")
        self.record(bias, 0, channels, "out")
        return _Units(out_axis, channels)

    def depthwise(self, call):
        layer, tensor = call.layer, call.inputs[0]
        _check_bias(layer, call.tensor)
        first = layer.data_format == "channels_first"
        x = self.units_on(tensor, call.values[0], 1 if first else -1)
        out_axis = 1 if first else _rank(call.tensor) - 1
        self.check_activation(layer.activation, call, out_axis)
        m = int(layer.depth_multiplier)
        spread = np.repeat(x.atoms, m)  # output channel c*m + j comes from input channel c
        if isinstance(layer, _SEPARABLE):
            depthwise, pointwise = _variable(layer, "depthwise_kernel"), _variable(layer, "pointwise_kernel")
            bias = _variable(layer, "bias")
            out = self.produce(layer, "filters", int(pointwise.shape[-1]), call.path)
            self.record(depthwise, -2, x.atoms, "depthwise")
            self.record(pointwise, -2, spread, "in")
            self.record(pointwise, -1, out, "out")
            self.record(bias, 0, out, "out")
            return _Units(out_axis, out)
        kernel, bias = _variable(layer, "kernel"), _variable(layer, "bias")
        self.record(kernel, -2, x.atoms, "depthwise")
        self.record(bias, 0, spread, "depthwise")
        return _Units(out_axis, spread)

    def embedding(self, call):
        layer = call.layer
        table = _variable(layer, "embeddings")
        if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
            raise _Refused("has LoRA or quantisation enabled; merge it first")
        out = self.produce(layer, "features", int(table.shape[1]), call.path)
        self.record(table, 1, out, "out")
        return _Units(_rank(call.tensor) - 1, out)

    def batch_norm(self, call):
        layer, tensor = call.layer, call.inputs[0]
        x = self.units_on(tensor, call.values[0], int(layer.axis))
        for name, role in (("gamma", "norm"), ("beta", "norm"), ("moving_mean", "stat"),
                           ("moving_variance", "stat")):
            self.record(_variable(layer, name), 0, x.atoms, role)
        return x

    def layer_norm(self, call):
        layer, tensor = call.layer, call.inputs[0]
        axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
        axes = sorted({int(a) % _rank(tensor) for a in axes})
        if len(axes) != 1:
            raise _Refused(f"normalises axes {tuple(axes)} together, so its units are not kept apart")
        x = self.units_on(tensor, call.values[0], axes[0])
        self.record(_variable(layer, "gamma"), 0, x.atoms, "norm")
        self.record(_variable(layer, "beta"), 0, x.atoms, "norm")
        self.note(x.atoms, _LN_NOTE + call.path, True)
        return x

    def group_norm(self, call):
        layer, tensor = call.layer, call.inputs[0]
        x = self.units_on(tensor, call.values[0], int(layer.axis))
        channels = x.atoms.size
        groups = channels if layer.groups == -1 else int(layer.groups)
        self.record(_variable(layer, "gamma"), 0, x.atoms, "norm")
        self.record(_variable(layer, "beta"), 0, x.atoms, "norm")
        size = channels // groups
        self.blocks.extend((int(a), call.path, c // size) for c, a in enumerate(x.atoms))
        return x

    def tie(self, call):
        shapes = {tuple(t.shape[1:]) for t in call.inputs}
        if len(shapes) != 1:
            raise _Refused(f"combines tensors of different shapes {sorted(shapes, key=str)} (broadcasting)")
        known = [v for v in call.values if isinstance(v, _Units)]
        if not known:
            return _Open(call.values[0].source, call.values[0].reason)
        axis = known[0].axis
        units = [self.units_on(t, v, axis) for t, v in zip(call.inputs, call.values)]
        stream = any(self.find(int(a)) in self.read for x in known for a in x.atoms)
        for x in units[1:]:
            for a, b in zip(units[0].atoms, x.atoms):
                self.union(a, b)
        if stream and not self.streams_prunable:
            self.note(units[0].atoms, STREAM_REASON, True)
        return _Units(axis, units[0].atoms)

    def concatenate(self, call):
        layer = call.layer
        axis = int(layer.axis) % _rank(call.tensor)
        if all(isinstance(v, _Open) for v in call.values):
            return _Open(call.values[0].source, call.values[0].reason)
        for v in call.values:
            if isinstance(v, _Units) and v.axis != axis:
                raise _Refused(f"concatenates along axis {axis}, not along the axis its inputs' units lie on "
                               f"({v.axis})")
        units = [self.units_on(t, v, axis) for t, v in zip(call.inputs, call.values)]
        return _Units(axis, np.concatenate([x.atoms for x in units]))

    def atom_map(self, tensor, value) -> np.ndarray:
        """An array shaped like ``tensor`` (batch left out) holding each element's atom."""
        shape = tuple(tensor.shape[1:])
        if any(d is None for d in shape):
            raise _Refused(f"reshapes a tensor of unknown shape {shape}")
        index = [1] * len(shape)
        index[value.axis - 1] = -1
        return np.broadcast_to(value.atoms.reshape(index), shape)

    def from_atom_map(self, full: np.ndarray) -> _Units:
        """The axis along which ``full`` varies (constant along every other axis)."""
        for axis in reversed(range(full.ndim)):
            moved = np.moveaxis(full, axis, 0).reshape(full.shape[axis], -1)
            if (moved == moved[:, :1]).all():
                return _Units(axis + 1, moved[:, 0].copy())
        raise _Refused(f"spreads each unit over several axes of its output shape {full.shape}")

    def flatten(self, call):
        tensor, value = call.inputs[0], call.values[0]
        if isinstance(value, _Open):
            return _Open(value.source, value.reason)
        full = self.atom_map(tensor, value)
        if call.layer.data_format == "channels_first" and full.ndim > 1:
            full = np.moveaxis(full, 0, -1)  # Keras's Flatten moves channels first to the end first
        return _Units(1, full.reshape(-1).copy())

    def reshape(self, call):
        tensor, value = call.inputs[0], call.values[0]
        if isinstance(value, _Open):
            return _Open(value.source, value.reason)
        shape = tuple(call.tensor.shape[1:])
        if any(d is None for d in shape):
            raise _Refused(f"reshapes to an unknown shape {shape}")
        return self.from_atom_map(self.atom_map(tensor, value).reshape(shape))

    def attention(self, call):
        layer = call.layer
        args, kwargs, _ = _keras.call_site(call.tensor)
        query = args[0] if len(args) > 0 else kwargs["query"]
        value = args[1] if len(args) > 1 else kwargs["value"]
        key = args[2] if len(args) > 2 else kwargs.get("key")
        key = value if key is None else key
        if layer.get_config().get("use_gate"):
            raise _Refused("has a gate (use_gate=True), which this reader does not place")
        heads = int(layer.num_heads)
        dense = (layer.query_dense, layer.key_dense, layer.value_dense)
        out_dense = layer.output_dense
        kernels = [_variable(d, "kernel") for d in dense]
        out_kernel = _variable(out_dense, "kernel")
        if any(len(k.shape) != 3 or int(k.shape[1]) != heads for k in kernels) or len(out_kernel.shape) != 3:
            raise _Refused("has projections of an unexpected shape (an output_shape of several axes?)")
        inputs = [self.units_on(t, call.values_of(t), -1) for t in (query, key, value)]
        head_atoms = self.produce(layer, "heads", heads, f"{call.path}:heads")
        out = self.produce(layer, "output", int(out_kernel.shape[2]), call.path)
        for d, kernel, x in zip(dense, kernels, inputs):
            self.record(kernel, 0, x.atoms, "in")
            self.record(kernel, 1, head_atoms, "out")
            self.record(_variable(d, "bias"), 0, head_atoms, "out")
        self.record(out_kernel, 0, head_atoms, "in")
        self.record(out_kernel, 2, out, "out")
        self.record(_variable(out_dense, "bias"), 0, out, "out")
        if call.index == 1:  # the attention scores (batch, heads, target, source)
            return _Units(1, head_atoms)
        return _Units(_rank(call.tensor) - 1, out)

    def vit_token(self, call):
        layer, tensor = call.layer, call.inputs[0]
        x = self.units_on(tensor, call.values[0], -1)
        variable = _variable(layer, "cls" if isinstance(layer, _vit.ClassToken) else "embeddings")
        self.record(variable, -1, x.atoms, "add")
        return _Units(_rank(call.tensor) - 1, x.atoms)


@dataclasses.dataclass
class _Call:
    """One call of a layer in the graph: its input tensors and their maps, the output tensor."""

    layer: object
    path: str
    inputs: list
    values: list
    tensor: object
    all_values: dict

    @property
    def index(self) -> int:
        return _keras.call_site(self.tensor)[2]

    def values_of(self, tensor):
        return self.all_values[id(tensor)]


_HANDLERS = {
    _L.Dense: _Reader.dense,
    **{t: _Reader.conv for t in _CONV + _TRANSPOSE},
    **{t: _Reader.depthwise for t in _DEPTHWISE + _SEPARABLE},
    _L.Embedding: _Reader.embedding,
    _L.BatchNormalization: _Reader.batch_norm,
    _L.LayerNormalization: _Reader.layer_norm,
    _L.GroupNormalization: _Reader.group_norm,
    **{t: _Reader.tie for t in _TIES},
    _L.Concatenate: _Reader.concatenate,
    _L.Flatten: _Reader.flatten,
    _L.Reshape: _Reader.reshape,
    _L.MultiHeadAttention: _Reader.attention,
    _vit.ClassToken: _Reader.vit_token,
    _vit.PositionEmbedding: _Reader.vit_token,
}


# ----------------------------------------------------------------------------- building the groups


def _blocks(roots: Sequence[int], gn_blocks: dict) -> tuple[dict, int, str]:
    """``({root: block}, granularity, text)`` for a group's units under GroupNormalization:
    ``text`` is the GroupNormalization's path, or, when ``{root: block}`` is empty, why the
    units cannot be put in blocks (``""`` when no GroupNormalization normalises them)."""
    norms = sorted({gn for r in roots for gn in gn_blocks.get(r, {})})
    if not norms:
        return {}, 1, ""
    if len(norms) > 1:
        return {}, 1, f"normalised in blocks by several GroupNormalization layers ({', '.join(norms)})"
    (gn,) = norms
    block = {}
    for r in roots:
        found = gn_blocks.get(r, {}).get(gn, set())
        if len(found) != 1:
            return {}, 1, f"its units cross the blocks of GroupNormalization '{gn}'"
        block[r] = next(iter(found))
    counts = {b: list(block.values()).count(b) for b in set(block.values())}
    if len(set(counts.values())) != 1:
        return {}, 1, f"its units fill the blocks of GroupNormalization '{gn}' unevenly"
    return block, next(iter(counts.values())), gn


def _frozen(rows) -> np.ndarray:
    array = np.array(rows, dtype=np.int64)
    array.setflags(write=False)
    return array


def _groups(reader: _Reader) -> list[UnitGroup]:
    order = {key: i for i, key in enumerate(reader.slots)}
    units: dict[int, dict[tuple[str, int], list[int]]] = {}
    for key, slot in reader.slots.items():
        for i, atom in enumerate(slot.atoms):
            units.setdefault(reader.find(int(atom)), {}).setdefault(key, []).append(i)
    gn_blocks: dict[int, dict[str, set]] = {}
    for atom, gn, block in reader.blocks:
        gn_blocks.setdefault(reader.find(atom), {}).setdefault(gn, set()).add(block)
    by_signature: dict[tuple, list[int]] = {}
    for root, members in units.items():
        signature = (tuple(sorted((key, len(ix)) for key, ix in members.items())),
                     tuple(sorted(reader.notes.get(root, {}).items())))
        by_signature.setdefault(signature, []).append(root)

    groups, names = [], {}
    for signature, roots in sorted(by_signature.items(), key=lambda item: min(item[1])):
        keys = sorted((key for key, _ in signature[0]), key=order.get)
        first = keys[0]
        block, granularity, gn = _blocks(roots, gn_blocks)
        roots = sorted(roots, key=lambda r: (block.get(r, 0), units[r][first][0]))
        notes = dict(signature[1])
        reasons = [r for r in notes if not r.startswith(_LN_NOTE)]
        norms = [f"'{r[len(_LN_NOTE):]}'" for r in notes if r.startswith(_LN_NOTE)]
        if norms:
            reasons.append(f"normalised together by LayerNormalization {', '.join(norms)} (its mean and variance "
                           "read every unit)")
        permutable = all(notes.values())
        in_blocks = not reasons
        if gn and not block:
            reasons.append(gn)
            permutable = in_blocks = False
        elif granularity > 1:
            reasons.append(f"GroupNormalization '{gn}' normalises its units in blocks of {granularity}: "
                           "prune or permute whole blocks")
        members = tuple(Member(path, axis, _frozen([units[r][(path, axis)] for r in roots]),
                               reader.slots[(path, axis)].role) for path, axis in keys)
        name = reader.origin[min(roots)]
        names[name] = names.get(name, 0) + 1
        if names[name] > 1:
            name = f"{name} #{names[name]}"
        groups.append(UnitGroup(name, len(roots), members, prunable=not reasons, reason="; ".join(reasons),
                                granularity=granularity, permutable=permutable, blocks_prunable=in_blocks))
    return groups


def unit_groups(model, strict: bool = True, streams_prunable: bool = False) -> UnitGraph:
    """The unit groups of a built Sequential or functional Keras model (see the module
    docstring for what a unit group is and how each layer is read).

    Args:
        model: a built ``keras.Sequential`` or functional ``keras.Model``; nested
            Sequential and functional models inside it are walked too.
        strict: raise when any layer cannot be placed (``True``), or return the other
            groups and list those layers in ``UnitGraph.unplaced`` (``False``); groups
            reaching an unplaced layer are then neither prunable nor permutable.
        streams_prunable: report residual streams (units added back to after a layer
            read them, such as a transformer's model dimension) as prunable.

    Returns:
        A :class:`UnitGraph`. ``model`` is not changed.

    Raises:
        UnitGraphError: ``model`` is subclassed (Keras records no graph for it), or
            ``strict`` and some layers cannot be placed: one line naming each of them with
            its reason.

    Example:

    >>> import keras
    >>> from tflth.unit_graph import unit_groups
    >>> inputs = keras.Input((4, 4, 3))
    >>> x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    >>> outputs = keras.layers.Dense(5, name="fc")(keras.layers.Flatten(name="flat")(x))
    >>> graph = unit_groups(keras.Model(inputs, outputs, name="m"))
    >>> channels = graph.group_of("conv/kernel", 3)
    >>> channels.member("fc/kernel", 0).positions[:, :4]     # channel c feeds rows c + 2*i
    array([[0, 2, 4, 6],
           [1, 3, 5, 7]])
    """
    outputs = _graph_outputs(model)
    if outputs is None:
        name = getattr(model, "name", repr(model))
        raise UnitGraphError(
            f"Cannot read the unit groups of model '{name}' ({type(model).__name__}): it is not a built Sequential "
            "or functional model (a subclassed model's graph is not recorded by Keras), so which axes belong "
            "together cannot be read; expected a built Sequential or functional Keras model.")
    reader = _Reader(streams_prunable)
    reader.outputs = {id(t) for t in outputs}
    for value in reader.walk(model, model.name, {}):
        if isinstance(value, _Units):
            reader.note(value.atoms, OUTPUTS_REASON, False)
    unplaced = tuple((path, kind, why) for path, (kind, why) in reader.unplaced.items())
    if strict and unplaced:
        listed = "; ".join(f"'{path}' ({kind}): {why}" for path, kind, why in unplaced)
        what = (f"Cannot read the unit groups of model '{model.name}': cannot place {len(unplaced)} "
                f"layer{'s' if len(unplaced) > 1 else ''}: {listed}.")
        error = UnitGraphError(f"{what} Pass strict=False to get the groups of the other layers.")
        error.what = what
        raise error
    weight_paths = tuple(dict.fromkeys(v.path for v in model.weights))
    return UnitGraph(model.name, tuple(_groups(reader)), unplaced, weight_paths, dict(reader.ranks))

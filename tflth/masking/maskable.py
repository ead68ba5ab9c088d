"""Which variables of a Keras 3 model can carry a mask, and which ones a run masks.

tflth masks *variables*, not layers: a pruned entry of a variable is held at exactly
zero (:mod:`tflth.masking.state`), so any layer that reads the variable as it is in its
forward pass computes with the ticket, whatever its ``call`` does. The table below says
which variables of which layer types are *maskable by default* (their kernels); any
other trainable variable, such as one a custom layer makes with ``add_weight``, can be
masked by asking for it by path (a ``+`` pattern, see :func:`select`).

=====================================================  ===========================================
layer type (and subclasses)                            maskable variables
=====================================================  ===========================================
``Dense``, ``EinsumDense`` (also inside                ``kernel``
``MultiHeadAttention``: query/key/value/output)
``Conv1D/2D/3D``, ``Conv1D/2D/3DTranspose``            ``kernel``
``SeparableConv1D/2D``                                 ``depthwise_kernel``, ``pointwise_kernel``
``DepthwiseConv1D/2D``                                 ``kernel``
``Embedding``, ``ReversibleEmbedding``                 ``embeddings`` (a tied embedding is one
                                                       variable, one mask, used at input and output),
                                                       ``reverse_embeddings`` when untied
``SimpleRNN``/``LSTM``/``GRU`` (their cells)           ``kernel``, ``recurrent_kernel``
=====================================================  ===========================================

A ``keras.layers.Embedding`` whose name says it holds positions (``position`` in its
name, as KerasHub's ViT names its learned position embedding) is left out of the
default like the rest of tflth leaves position embeddings out; ask for it by path.

Not maskable: a layer with LoRA enabled (its kernel is ``kernel + A @ B``) or quantized
(merge or export it first): :func:`maskable_variables` raises on them only when asked to
mask them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import keras

from tflth import _keras
from tflth.masking.masks import MaskError, layer_path_of, path_matches

__all__ = ["MASKABLE", "Maskable", "maskable_variables", "owners_of", "select", "output_layer_path",
           "output_variables"]

# (layer type, names of its maskable variables). isinstance: subclasses (KerasHub's layers,
# a user's Dense subclass) are covered, since masking never depends on the layer's call.
MASKABLE: tuple[tuple[type, tuple[str, ...]], ...] = (
    (keras.layers.Dense, ("kernel",)),
    (keras.layers.EinsumDense, ("kernel",)),
    (keras.layers.SeparableConv1D, ("depthwise_kernel", "pointwise_kernel")),
    (keras.layers.SeparableConv2D, ("depthwise_kernel", "pointwise_kernel")),
    (keras.layers.DepthwiseConv1D, ("kernel",)),
    (keras.layers.DepthwiseConv2D, ("kernel",)),
    (keras.layers.Conv1D, ("kernel",)),
    (keras.layers.Conv2D, ("kernel",)),
    (keras.layers.Conv3D, ("kernel",)),
    (keras.layers.Conv1DTranspose, ("kernel",)),
    (keras.layers.Conv2DTranspose, ("kernel",)),
    (keras.layers.Conv3DTranspose, ("kernel",)),
    (keras.layers.Embedding, ("embeddings", "reverse_embeddings")),
    (keras.layers.SimpleRNNCell, ("kernel", "recurrent_kernel")),
    (keras.layers.LSTMCell, ("kernel", "recurrent_kernel")),
    (keras.layers.GRUCell, ("kernel", "recurrent_kernel")),
)


@dataclasses.dataclass(frozen=True)
class Maskable:
    """One maskable variable: its path, the variable, and the layer that owns it."""

    path: str
    variable: object
    layer: object

    @property
    def kind(self) -> str:
        """``"<layer class>.<variable name>"``, e.g. ``"EinsumDense.kernel"``."""
        return f"{type(self.layer).__name__}.{self.variable.name}"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)


def _names_for(layer) -> tuple[str, ...]:
    for cls, names in MASKABLE:
        if isinstance(layer, cls):
            return names
    return ()


def _is_position(layer) -> bool:
    return isinstance(layer, keras.layers.Embedding) and "position" in layer.name


def _unsupported(layer) -> str | None:
    if getattr(layer, "lora_enabled", False):
        return "has LoRA enabled (its kernel is kernel + A @ B); merge the LoRA weights first"
    if getattr(layer, "quantization_mode", None) is not None:
        return f"is quantized ({layer.quantization_mode}); mask the float model, then quantize"
    return None


def owners_of(model) -> dict[int, object]:
    """``{id(variable): owning layer}`` for the own variables of ``model`` and every sublayer."""
    owners = {}
    for layer in [model, *_keras.sublayers(model)]:
        for v in _keras.own_variables(layer):
            owners.setdefault(id(v), layer)
    return owners


def _trainable(model) -> list:
    seen, out = set(), []
    for v in model.trainable_variables:
        if id(v) not in seen:
            seen.add(id(v))
            out.append(v)
    return out


def maskable_variables(model) -> dict[str, Maskable]:
    """``{variable path: Maskable}`` for every maskable-by-default variable of ``model``
    (see the table above), in the model's variable order.

    Works for any built Keras 3 model: Sequential, functional, subclassed, nested models
    and layers, KerasHub backbones. A layer with LoRA or quantization is left out.

    Raises:
        MaskError: ``model`` is not built, or two variables share a path.

    Example:

    >>> import keras, tflth
    >>> inputs = keras.Input((5, 8))
    >>> x = keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs)
    >>> x = keras.layers.Conv1D(3, 2, name="conv")(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    >>> {p: m.kind for p, m in tflth.masking.maskable_variables(model).items()}  # doctest: +NORMALIZE_WHITESPACE
    {'mha/query/kernel': 'EinsumDense.kernel', 'mha/key/kernel': 'EinsumDense.kernel',
     'mha/value/kernel': 'EinsumDense.kernel', 'mha/attention_output/kernel': 'EinsumDense.kernel',
     'conv/kernel': 'Conv1D.kernel', 'out/kernel': 'Dense.kernel'}
    """
    if not getattr(model, "built", False):
        raise MaskError(f"Model '{getattr(model, 'name', model)}' is not built; call it on an input (or build it) first.")
    owners = owners_of(model)
    out: dict[str, Maskable] = {}
    for v in _trainable(model):
        layer = owners.get(id(v))
        if layer is None or v.name not in _names_for(layer) or _unsupported(layer) or _is_position(layer):
            continue
        if v.path in out:
            raise MaskError(f"Two variables share the path '{v.path}'; give their layers distinct names.")
        out[v.path] = Maskable(v.path, v, layer)
    return out


def _unique(items: list) -> list:
    seen, out = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            out.append(item)
    return out


def _graph_heads(model) -> list | None:
    """The layers (and variables read directly by ops) nearest the model's outputs that
    hold trainable variables, found by walking the layer graph back from the outputs
    through layers and ops without variables (activations, reshapes, pooling, ...);
    ``None`` for a model without a layer graph (a subclassed model)."""
    if isinstance(model, keras.Sequential):
        for layer in reversed(model.layers):
            if isinstance(layer, keras.Model):
                inner = _graph_heads(layer)
                if inner is None or inner:
                    return [layer] if inner is None else inner
            elif layer.trainable_variables:
                return [layer]
        return []
    outputs = getattr(model, "outputs", None)
    if not outputs or any(_keras.graph_producer(t) is None for t in outputs):
        return None
    heads, pending, seen = [], list(outputs), set()
    while pending:
        tensor = pending.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        produced = _keras.graph_producer(tensor)
        if produced is None:
            continue
        operation, inputs, variables = produced
        if isinstance(operation, keras.layers.InputLayer):
            continue
        if isinstance(operation, keras.Model) and operation is not model:
            inner = _graph_heads(operation)
            if inner is None:
                heads.append(operation)
                continue
            if inner:
                heads.extend(inner)
                continue
        else:
            own = list(getattr(operation, "trainable_variables", None) or [])
            read = [v for v in variables if getattr(v, "trainable", False)]  # an op given a variable itself
            if own or read:
                heads.extend(([operation] if own else []) + read)
                continue
        pending.extend(inputs)
    return _unique(heads)


def output_variables(model) -> list[str]:
    """The paths of the maskable variables that produce the model's outputs: its head.

    Found from the model's layer graph (Sequential, functional, KerasHub tasks): walking
    back from each output through layers and ops that hold no variables, the first layer
    that holds trainable variables is the output layer, and its maskable variables are
    the head, whoever owns them. So a head that reuses a tied embedding matrix (a layer
    computing ``x @ embeddings.T``, KerasHub's ``ReversibleEmbedding`` called in reverse)
    gives the embedding variable, not the last feed-forward kernel; an output layer with
    variables but none maskable (a final normalisation) gives none. A model without a
    layer graph (subclassed) gives the variables of the layer owning the last maskable
    variable in the model's variable order, its usual head, unless it has embeddings,
    which such an output may reuse unseen: that is refused.

    Raises:
        MaskError: a subclassed model with embeddings (name its output layer with a ``!``
            pattern in :func:`select` instead).
    """
    maskable = maskable_variables(model)
    if not maskable:
        return []
    heads = _graph_heads(model)
    if heads is None:
        found = list(maskable.values())
        if any(isinstance(m.layer, keras.layers.Embedding) for m in found):
            tied = ", ".join(sorted({m.path for m in found if isinstance(m.layer, keras.layers.Embedding)})[:3])
            raise MaskError(f"Model '{model.name}' ({type(model).__name__}) has no layer graph (a subclassed model) "
                            f"and has embeddings ({tied}) that its output may reuse: its output layer cannot be told "
                            f"from its code; expected a functional model, or the output layer named with a '!' "
                            f"pattern (e.g. patterns=['!{layer_path_of(found[-1].path)}']) instead of "
                            "exclude_output.")
        last = layer_path_of(found[-1].path)
        return [p for p in maskable if layer_path_of(p) == last]
    by_id = {id(m.variable): p for p, m in maskable.items()}
    chosen = set()
    for head in heads:
        variables = [head] if isinstance(head, keras.Variable) else list(head.trainable_variables)
        paths = [by_id[id(v)] for v in variables if id(v) in by_id]
        owners = [layer_path_of(p) for p in paths]
        if len(set(owners)) > 1:  # a custom block: its last maskable layer is the head
            paths = [p for p, o in zip(paths, owners) if o == owners[-1]]
        chosen.update(paths)
    return [p for p in maskable if p in chosen]


def output_layer_path(model) -> str | None:
    """The layer path of the owner of the model's head variables (:func:`output_variables`):
    for a classifier its output layer, for a head tied to the input embedding the
    embedding layer; ``None`` when no maskable variable produces the outputs."""
    found = output_variables(model)
    return layer_path_of(found[0]) if found else None


def select(model, patterns: Sequence[str] = (), exclude_output: bool = False) -> dict[str, Maskable]:
    """The variables a run masks, ``{path: Maskable}`` in model order.

    Args:
        model: a built Keras model.
        patterns: globs over variable paths (:func:`tflth.masking.path_matches`: the
            whole path, or the owning layer's path, ``*`` crossing ``/``). Empty: the
            default, every maskable variable of the table (less the output layer's with
            ``exclude_output``). A plain pattern selects among the maskable variables
            (``"*/attention/*"``, ``"fc1"``, ``"conv*"``); a ``+`` pattern among *all*
            trainable variables (``"+*/bias"``, ``"+my_layer/w"``: opt-in for biases,
            normalisation, position embeddings or a custom layer's ``add_weight``); a
            ``!`` pattern removes what it matches (``"!output"``). Only ``!`` patterns:
            the default minus those.
        exclude_output: leave the head, the maskable variables that produce the
            outputs (:func:`output_variables`: a tied embedding included), out of the
            default, with or without ``!`` patterns (what a user's own model runs with on
            the command line, as open_lth does); a plain or ``+`` pattern that names the
            head masks it.

    Raises:
        MaskError: a pattern selects nothing, or selects a variable of a LoRA-enabled or
            quantized layer; ``exclude_output`` on a model whose head cannot be told
            (:func:`output_variables`).

    >>> import keras, tflth
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
    ...                           keras.layers.LayerNormalization(name="norm"), keras.layers.Dense(2, name="out")], name="net")
    >>> list(tflth.masking.select(model))
    ['net/fc/kernel', 'net/out/kernel']
    >>> list(tflth.masking.select(model, exclude_output=True))
    ['net/fc/kernel']
    >>> list(tflth.masking.select(model, ["fc", "+norm/gamma"]))
    ['net/fc/kernel', 'net/norm/gamma']
    """
    maskable = maskable_variables(model)
    patterns = list(patterns)
    plus = [p[1:] for p in patterns if p.startswith("+")]
    minus = [p[1:] for p in patterns if p.startswith("!")]
    plain = [p for p in patterns if not p.startswith(("+", "!"))]
    if not plus and not plain:
        chosen = dict(maskable)
        if exclude_output:  # also under '!' patterns: they remove more, never bring the head back
            head = set(output_variables(model))
            chosen = {p: m for p, m in chosen.items() if p not in head}
    else:
        chosen = {}
        owners = owners_of(model)
        trainable = _trainable(model)
        refused = {v.path: (layer, why) for layer in _keras.sublayers(model) if (why := _unsupported(layer))
                   for v in _keras.own_variables(layer)}

        def refuse(pattern):
            for path, (layer, why) in refused.items():
                if path_matches(pattern.lstrip("+"), path):
                    raise MaskError(f"Variable '{path}' cannot be masked: layer '{layer.name}' {why}.")

        for pattern in plain:
            hits = [p for p in maskable if path_matches(pattern, p)]
            if not hits:
                refuse(pattern)
                raise MaskError(f"Pattern '{pattern}' matches no maskable variable; the maskable variables are "
                                f"{list(maskable)[:10]}{' ...' if len(maskable) > 10 else ''} (a '+{pattern}' "
                                "pattern selects among all trainable variables).")
            chosen.update({p: maskable[p] for p in hits})
        for pattern in plus:
            hits = [v for v in trainable if path_matches(pattern, v.path)]
            if not hits:
                refuse(pattern)
                raise MaskError(f"Pattern '+{pattern}' matches no trainable variable of model "
                                f"'{model.name}'.")
            for v in hits:
                layer = owners.get(id(v), model)
                if (why := _unsupported(layer)) is not None:
                    raise MaskError(f"Variable '{v.path}' cannot be masked: layer '{layer.name}' {why}.")
                chosen.setdefault(v.path, Maskable(v.path, v, layer))
        order = {v.path: i for i, v in enumerate(trainable)}
        chosen = dict(sorted(chosen.items(), key=lambda kv: order[kv[0]]))
    for pattern in minus:
        hits = [p for p in chosen if path_matches(pattern, p)]
        if not hits:
            raise MaskError(f"Pattern '!{pattern}' removes nothing: it matches none of {list(chosen)[:10]}.")
        chosen = {p: m for p, m in chosen.items() if p not in hits}
    return chosen

"""Masks applied in place to any built Keras 3 model.

:func:`apply_masks` gives each masked variable a mask variable (non-trainable, one
identical copy per replica under ``tf.distribute``), zeroes the variable's pruned
entries, and sets the variable's ``constraint`` to re-apply the mask after every
optimizer update (Keras optimizers apply variable constraints after each step, in
``model.fit`` and in any loop that calls ``optimizer.apply``). The layer itself is not
touched: it reads a variable whose pruned entries *are* zero, so every forward pass
computes with the ticket, whatever the layer's ``call`` does (Dense, EinsumDense inside
MultiHeadAttention, convolutions, embeddings used at input and output, RNN cells, a
custom layer's ``add_weight``).

Invariant: pruned entries are exactly ``0.0`` after :func:`apply_masks` and after every
optimizer step, under any optimizer (SGD, momentum, Nesterov, Adam, AdamW, RMSprop,
Lion, ...), whatever the optimizer's slots hold (e.g. history after a rewind). Surviving
weights follow the trajectory of a per-step-masked model bit for bit for optimizers
that update elementwise.

Gradient clipping by norm is the exception: the layer reads the variable itself, so
the gradient Keras computes has entries for the pruned weights too (what they would get
if they were not pruned), and a Keras optimizer clips before it updates. With
``clipnorm`` (each variable's gradient scaled to norm at most ``clipnorm``) or
``global_clipnorm`` (all gradients together) the norm includes those entries: when it
clips, the survivors take a smaller step than in a per-step-masked model, whose
gradients are zero there (``tests/test_house_masking.py`` shows both). ``clipvalue``,
elementwise, does not differ. tflth cannot change this without replacing the user's
optimizer (Keras clips inside ``optimizer.apply``, after every hook a variable or layer
offers); to clip as a masked model would, multiply the gradients by the masks
(:func:`masked_variables`) in your own ``train_step`` before ``optimizer.apply``.
tflth's own training loop does not clip.

Why this mechanism (README, *Design decisions worth knowing*; only its own cost is
measured, in ``benchmarks/train_speed.py``): Keras's ``kernel`` property hook (LoRA,
quantization) exists only on Dense, EinsumDense and Embedding; replacing layers needs ``clone_model``, which cannot reach layers built inside
another layer's ``build`` (MultiHeadAttention's) nor subclassed models; a variable
constraint reaches every variable of every model. tflth's own loop replaces the
per-step constraint by a free per-entry epsilon under Adam
(:mod:`tflth.training.optimizers`).

The mask state is attached to the model untracked (:func:`tflth._keras.attach_untracked`):
masks are not weights (``model.weights``, ``get_weights`` and checkpoints are Keras's
own), but ``model.save`` writes them (see :mod:`tflth.masking.saving`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping

import keras
import numpy as np
from keras import ops

from tflth import _keras
from tflth.masking.masks import Masks

__all__ = ["MaskConstraint", "apply_masks", "masks_of", "masked_variables", "masked_weights", "remove_masks",
           "has_masks", "zero_pruned", "constraints_paused", "masks_detached", "STATE_ATTRIBUTE"]

STATE_ATTRIBUTE = "_tflth_mask_state"


class MaskConstraint(keras.constraints.Constraint):
    """Variable constraint: the user's own constraint (if any), then ``w * mask``.

    A ``keras.constraints.Constraint`` (Keras 3.12 and 3.13 accept nothing else as a
    variable's ``constraint``). Never serialised: layer configs hold the user's own
    constraint arguments only.
    """

    def __init__(self, mask, inner=None):
        self.mask = mask
        self.inner = inner

    def __call__(self, w):
        if self.inner is not None:
            w = self.inner(w)
        return w * ops.cast(self.mask, w.dtype)


class MaskState(keras.layers.Layer):
    """The masks of one model: a mask variable per masked variable, by path.

    Attached to the model as an untracked attribute (``model._tflth_mask_state``), so
    ``model.save`` writes it beside the model's weights (one group, the masks and their
    paths) while ``model.weights`` stays the model's own.
    """

    def __init__(self, targets: Mapping[str, object], indices=(), **kwargs):
        super().__init__(name="tflth_masks", trainable=False, **kwargs)
        paths = list(targets)
        self.masks = {}
        for i, (path, variable) in enumerate(targets.items()):
            self.masks[path] = self.add_weight(
                name=f"mask_{i}", shape=tuple(variable.shape), initializer="ones", trainable=False,
                dtype=variable.dtype, aggregation="only_first_replica")
        object.__setattr__(self, "targets", dict(targets))
        object.__setattr__(self, "paths", paths)
        # each masked variable's position in model.weights: variable paths depend on how a
        # model was built (a Sequential loaded from a file drops its own name from them),
        # positions do not, so a loaded model's masks are matched by position.
        object.__setattr__(self, "indices", [int(i) for i in indices])
        self.built = True

    def pairs(self):
        """``[(path, variable, mask variable)]`` in order."""
        return [(p, self.targets[p], self.masks[p]) for p in self.paths]

    def save_own_variables(self, store):
        for i, p in enumerate(self.paths):
            store[str(i)] = self.masks[p]
        store["paths"] = np.frombuffer(json.dumps({"paths": self.paths, "weight_index": self.indices}).encode(),
                                       np.uint8)

    def load_own_variables(self, store):
        for i, p in enumerate(self.paths):
            self.masks[p].assign(store[str(i)])


def _state(model) -> MaskState | None:
    return model.__dict__.get(STATE_ATTRIBUTE)


def has_masks(model) -> bool:
    """Whether :func:`apply_masks` has given ``model`` masks."""
    return _state(model) is not None


def _variables_by_path(model) -> dict[str, object]:
    out = {}
    for v in model.trainable_variables:
        out.setdefault(v.path, v)
    return out


def apply_masks(model, masks: Mapping[str, object], strict: bool = True) -> None:
    """Mask ``model``'s variables in place: ``masks`` is ``{variable path: 0/1 array}``.

    The first call on a model fixes *which* variables are masked (the keys of
    ``masks``; e.g. :func:`tflth.masking.masked` with all-ones masks) and creates their
    mask variables: call it inside ``strategy.scope()`` when training under
    ``tf.distribute``. Later calls assign new masks to those variables (``strict``:
    all of them). Every call zeroes the pruned entries; surviving entries keep their
    values. Call in cross-replica context (between training runs).

    Args:
        model: a built Keras 3 model (any kind).
        masks: a :class:`Masks` or a mapping convertible to one.
        strict: later calls must give a mask for every masked variable.

    Raises:
        MaskError: a key is not a trainable variable of ``model`` (or, after the first
            call, not a masked one), a shape differs, a value is not 0/1, or
            (``strict``) a masked variable has no mask. Nothing is changed then.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> keep = np.ones((4, 3), bool); keep[:, 0] = False       # prune every weight into unit 0
    >>> tflth.masking.apply_masks(model, {"net/fc/kernel": keep})
    >>> model.get_layer("fc").kernel.numpy()[:, 0]
    array([0., 0., 0., 0.], dtype=float32)
    >>> model.compile("adam", "mse"); _ = model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=2, verbose=0)
    >>> bool(np.all(model.get_layer("fc").kernel.numpy()[:, 0] == 0))   # still exactly zero
    True
    """
    masks = masks if isinstance(masks, Masks) else Masks(masks)
    state = _state(model)
    if state is None:
        variables = _variables_by_path(model)
        masks.check({p: tuple(v.shape) for p, v in variables.items()}, strict=False,
                    what=f"model '{model.name}' (trainable variables)")
        position = {id(v): i for i, v in enumerate(model.weights)}
        chosen = {p: variables[p] for p in variables if p in masks}
        state = MaskState(chosen, indices=[position[id(v)] for v in chosen.values()])
        for _, variable, mask in state.pairs():
            variable.constraint = MaskConstraint(mask, variable.constraint)
        _keras.attach_untracked(model, STATE_ATTRIBUTE, state)
    else:
        masks.check({p: tuple(v.shape) for p, v, _ in state.pairs()}, strict=strict,
                    what=f"model '{model.name}' (its masked variables)")
    for path, variable, mask in state.pairs():
        if path in masks:
            value = masks[path].astype(np.dtype(mask.dtype.name if hasattr(mask.dtype, "name") else mask.dtype))
            mask.assign(value)
    zero_pruned(model)


def zero_pruned(model) -> None:
    """Set every masked variable's pruned entries to ``+0.0`` (eager; the per-step
    constraint multiplies, which may leave ``-0.0``, equal to ``0.0`` in every comparison)."""
    state = _state(model)
    if state is None:
        return
    for _, variable, mask in state.pairs():  # select, not multiply: +0.0 where pruned, never -0.0
        variable.assign(ops.where(ops.not_equal(mask, 0), variable, ops.zeros_like(variable)))


def masks_of(model) -> Masks:
    """The current masks of ``model`` (a :class:`Masks`; empty if it has none)."""
    state = _state(model)
    if state is None:
        return Masks({})
    return Masks({p: np.asarray(m.numpy()) != 0 for p, _, m in state.pairs()})


def masked_variables(model) -> dict[str, tuple[object, object]]:
    """``{path: (variable, mask variable)}`` of the masked variables, in order."""
    state = _state(model)
    return {} if state is None else {p: (v, m) for p, v, m in state.pairs()}


def masked_weights(model) -> dict[str, np.ndarray]:
    """The masked variables' values (copies; pruned entries are zero)."""
    return {p: v.numpy() for p, (v, _) in masked_variables(model).items()}


def remove_masks(model) -> None:
    """Drop the masks from ``model`` in place: pruned entries stay zero (baked in) but may
    grow back if it is trained; the model's own constraints are restored."""
    state = _state(model)
    if state is None:
        return
    zero_pruned(model)
    for _, variable, _ in state.pairs():
        c = variable.constraint
        variable.constraint = c.inner if isinstance(c, MaskConstraint) else c
    _keras.attach_untracked(model, STATE_ATTRIBUTE, None)


@contextlib.contextmanager
def constraints_paused(model):
    """Within the block, the masked variables carry only their own constraints: for a
    training step that keeps pruned entries at zero otherwise (tflth's Adam) and is
    traced inside the block."""
    pairs = list(masked_variables(model).values())
    saved = [v.constraint for v, _ in pairs]
    try:
        for (v, _), c in zip(pairs, saved):
            v.constraint = c.inner if isinstance(c, MaskConstraint) else c
        yield
    finally:
        for (v, _), c in zip(pairs, saved):
            v.constraint = c


@contextlib.contextmanager
def masks_detached(model):
    """Within the block, ``model`` carries no mask state (``model.save`` writes a plain
    Keras file); the masks are attached again on exit, unchanged. The variables keep
    their values and constraints throughout."""
    state = _state(model)
    _keras.attach_untracked(model, STATE_ATTRIBUTE, None)
    try:
        yield
    finally:
        if state is not None:
            _keras.attach_untracked(model, STATE_ATTRIBUTE, state)

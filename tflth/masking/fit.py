"""Lottery tickets for ``model.fit`` users: keep W_k, prune, rewind, fit again.

>>> import keras, numpy as np, tflth
>>> x, y = np.random.default_rng(0).normal(size=(64, 8)), np.arange(64) % 2
>>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(2)])
>>> _ = tflth.masked(model, exclude_output=True)
>>> point = tflth.masking.RewindPoint(step=2)                # keep W_k at iteration k = 2
>>> model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
>>> _ = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[point])
>>> ticket = tflth.pruning.prune(model, fraction=0.5)       # magnitude pruning of the trained weights
>>> tflth.masking.rewind(model, point, ticket)              # W_k ⊙ m
>>> _ = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
>>> round(tflth.masking.masks_of(model).density().density, 2)
0.5
"""

from __future__ import annotations

from collections.abc import Mapping

import keras
import numpy as np

from tflth.masking.masks import MaskError
from tflth.masking.state import apply_masks, zero_pruned

__all__ = ["RewindError", "RewindPoint", "rewind"]


class RewindError(MaskError):
    """A rewind point cannot be used as asked: never reached, or kept from another model
    or optimizer (a :class:`~tflth.masking.MaskError`, so a ``ValueError``)."""


class RewindPoint(keras.callbacks.Callback):
    """Keeps every model variable (and the optimizer's state) at training iteration ``step``.

    The iteration is the optimizer's step counter (``optimizer.iterations``): ``step=0``
    keeps the weights before the first update, ``step=k`` those after the k-th
    (counting across ``fit`` calls). :func:`rewind` puts them back.

    Args:
        step: the iteration k to keep (>= 0).

    Attributes:
        weights: ``{variable path: array}`` once iteration ``step`` was reached, else ``None``.
        optimizer_state: the optimizer's variables at that iteration (a list of arrays).
    """

    def __init__(self, step: int):
        super().__init__()
        try:
            valid = not isinstance(step, bool) and int(step) == step and step >= 0
        except (TypeError, ValueError, OverflowError):  # not a number, nan, inf
            valid = False
        if not valid:
            raise RewindError(f"RewindPoint(step={step!r}): expected an integer >= 0.")
        self.step = int(step)
        self.weights = None
        self.optimizer_state = None

    def _keep(self):
        self.weights = {v.path: np.array(v.numpy()) for v in self.model.weights}
        opt = getattr(self.model, "optimizer", None)
        self.optimizer_state = [np.array(v.numpy()) for v in opt.variables] if opt is not None and opt.built else None

    def _iterations(self) -> int:
        opt = getattr(self.model, "optimizer", None)
        return int(opt.iterations.numpy()) if opt is not None else 0

    def on_train_begin(self, logs=None):
        if self.weights is None and self._iterations() == self.step:
            self._keep()

    def on_train_batch_end(self, batch, logs=None):
        if self.weights is None and self._iterations() == self.step:
            self._keep()


def rewind(model, point: RewindPoint | Mapping[str, np.ndarray], masks=None, optimizer: bool = False) -> None:
    """Set ``model``'s variables to those kept at iteration k, then apply ``masks``.

    Args:
        model: the model (with masks, see :func:`tflth.masked`).
        point: a :class:`RewindPoint` that has reached its step, or ``{path: array}``.
        masks: the ticket's masks (``None``: keep the current ones); pruned entries
            become zero, survivors take their W_k values.
        optimizer: also restore the optimizer's state at k (same optimizer object,
            e.g. to continue the learning-rate schedule from k); by default a user
            recompiles and starts a fresh optimizer.

    Raises:
        RewindError: the point has not been reached, its weights do not fit ``model``,
            or (``optimizer=True``) it kept no optimizer state or state that does not fit
            ``model.optimizer`` (another number of variables or other shapes). Nothing is
            changed then.
    """
    weights = point.weights if isinstance(point, RewindPoint) else point
    if weights is None:
        raise RewindError(f"RewindPoint(step={point.step}) was never reached: train at least that many iterations.")
    variables = {v.path: v for v in model.weights}
    missing = sorted(set(variables) - set(weights))
    if missing:
        raise RewindError(f"The rewind point has no values for {missing[:5]}: was it kept from this model?")
    wrong = [p for p, v in variables.items() if tuple(v.shape) != np.shape(weights[p])]
    if wrong:
        raise RewindError(f"The rewind point's '{wrong[0]}' has shape {np.shape(weights[wrong[0]])}, the model's "
                          f"{tuple(variables[wrong[0]].shape)}: was it kept from this model?")
    if optimizer:
        _check_optimizer_state(model, point)
    for path, v in variables.items():
        v.assign(weights[path])
    if optimizer:
        for v, value in zip(model.optimizer.variables, point.optimizer_state):
            v.assign(value)
    if masks is not None:
        apply_masks(model, masks, strict=False)
    else:
        zero_pruned(model)


def _check_optimizer_state(model, point) -> None:
    """The kept optimizer state must fit ``model.optimizer`` one to one (count and shapes):
    a mismatch would otherwise be truncated silently by ``zip``."""
    if not isinstance(point, RewindPoint) or point.optimizer_state is None:
        raise RewindError("optimizer=True needs a RewindPoint that kept the optimizer's state.")
    opt = getattr(model, "optimizer", None)
    variables = list(opt.variables) if opt is not None else []
    kept = point.optimizer_state
    name = type(opt).__name__ if opt is not None else "no optimizer"
    if len(kept) != len(variables):
        raise RewindError(f"RewindPoint(step={point.step}) kept {len(kept)} optimizer values, but the model's "
                          f"optimizer ({name}) has {len(variables)} variables; expected the optimizer the point "
                          "was kept with, built (trained at least one step): rewind with optimizer=False and a fresh "
                          "optimizer otherwise.")
    for i, (v, value) in enumerate(zip(variables, kept)):
        if tuple(v.shape) != np.shape(value):
            raise RewindError(f"RewindPoint(step={point.step}): optimizer value {i} has shape {np.shape(value)}, "
                              f"the model's optimizer variable '{v.path}' {tuple(v.shape)}; expected the optimizer "
                              "the point was kept with.")

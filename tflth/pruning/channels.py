"""Channel pruning: whole output units (Dense units, convolution filters) at a time.

A level prunes ``fraction`` of each layer's remaining output units (``scope="layerwise"``,
per ``layer_rates`` where a pattern matches) or of all layers' units ranked together
(``"global"``), lowest ``channel_norm`` first: the L1 (``"l1"``) or L2 (``"l2"``) norm of
a unit's surviving weights. A pruned unit loses every weight that computes it *and*
the next layer's input slice it feeds (:attr:`VariableLayout.feeds`, read from the
model's graph: through activations, pooling, BatchNormalization, ``Flatten``), so the
ticket is a smaller dense network: :func:`tflth.export.shrink` removes the units.

Where the graph does not say which slice of which kernel a unit feeds — a residual
``Add`` (ResNets), attention, a subclassed model — the layer is refused by name, with
the way out: ``--layer_rates=<layer>:0`` keeps its units (its input slices still go
with the previous layer's units). The output layer's units (the logits) are never
pruned. Every layer keeps at least one unit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tflth.hparams import HparamError, PruningHparams, field
from tflth.masking.masks import Masks, path_matches
from tflth.pruning.layout import VariableLayout
from tflth.pruning.pruners import (Pruner, allocate, check_layer_rates, check_shapes, exact_allocation,
                                   last_changing, rate_for, register, unit_counts)

__all__ = ["ChannelPruning", "unit_view", "alive_units", "channel_mask"]


def unit_view(array: np.ndarray, layout: VariableLayout) -> np.ndarray:
    """``array`` as ``(units, fan-in)``: one row per output unit (output axes flattened in order)."""
    a = np.asarray(array)
    rest = [i for i in range(a.ndim) if i not in layout.output_axes]
    return np.transpose(a, list(layout.output_axes) + rest).reshape(layout.units, -1)


def _from_units(alive: np.ndarray, layout: VariableLayout) -> np.ndarray:
    """A weight mask that is ``alive[u]`` over all of unit ``u``'s weights."""
    out_shape = [layout.shape[a] for a in layout.output_axes]
    full = np.broadcast_to(alive.reshape(out_shape + [1] * (len(layout.shape) - len(out_shape))),
                           out_shape + [layout.shape[i] for i in range(len(layout.shape)) if i not in layout.output_axes])
    order = list(layout.output_axes) + [i for i in range(len(layout.shape)) if i not in layout.output_axes]
    return np.transpose(full, np.argsort(order))


def alive_units(mask: np.ndarray, layout: VariableLayout) -> np.ndarray:
    """Per output unit: whether any of its weights survives."""
    return unit_view(np.asarray(mask, bool), layout).any(axis=1)


def channel_mask(mask: Mapping[str, np.ndarray], units: Mapping[str, np.ndarray],
                 layouts: Mapping[str, VariableLayout]) -> Masks:
    """``mask`` with the dead ``units`` (``{path: bool per unit}``) of each variable removed,
    with the input slices they feed in the next kernel."""
    out = {p: np.array(mask[p], bool) for p in mask}
    for p, alive in units.items():
        lay = layouts[p]
        out[p] &= _from_units(alive, lay)
        if lay.feeds and lay.feeds in out:
            consumer = layouts[lay.feeds]
            dead = np.flatnonzero(~alive)
            rows = (dead[None, :] + lay.units * np.arange(lay.feed_repeat)[:, None]).ravel()
            index = [slice(None)] * len(consumer.shape)
            index[consumer.group_axis] = rows
            out[lay.feeds][tuple(index)] = False
    return Masks(out)


@register("channels")
class ChannelPruning(Pruner):
    """Prune whole output units by their weights' L1/L2 norm, with the next layer's inputs.

    Hyperparameters (:class:`tflth.hparams.PruningHparams`): ``fraction`` of the remaining
    units per level, ``scope`` (``"layerwise"``: each layer alike; ``"global"``: one
    ranking of the norms across layers), ``layer_rates`` (per-layer rates; 0 keeps a
    layer's units), ``channel_norm`` (``"l1"``, ``"l2"``). Counts (:meth:`survivor_counts`)
    are in units.

    Example::

        strategy = ChannelPruning(PruningHparams(0.5, "layerwise", strategy="channels"),
                                  layouts=tflth.pruning.layout.layouts(model))
        mask = strategy(weights, all_ones)  # half of every hidden layer's units, and their fan-out
    """

    name = "channels"
    unit = "channels"

    @dataclasses.dataclass(frozen=True)
    class Hparams(PruningHparams):
        """Channel pruning's settings: the norm a unit is ranked by."""

        channel_norm: str = field("l1", "--pruning_strategy=channels: the norm a unit is ranked by.",
                                  choices=("l1", "l2"))

        def __post_init__(self):
            super().__post_init__()
            if self.channel_norm not in ("l1", "l2"):
                raise HparamError(f"PruningHparams.channel_norm={self.channel_norm!r} is invalid: expected 'l1' or "
                                  "'l2'.", owner="PruningHparams", field="channel_norm", value=self.channel_norm)

    def pruned(self, layouts: Mapping[str, VariableLayout]) -> list[str]:
        """The variables whose units this strategy prunes (not the head, not rate 0)."""
        default = None if self.hparams.scope == "global" else self.hparams.fraction
        return [p for p, lay in layouts.items() if not lay.head and rate_for(p, self.hparams.layer_rates, default) != 0]

    def check(self) -> None:
        layouts = self.require_layouts()
        check_layer_rates(self.hparams.layer_rates, list(layouts))
        for p in self.pruned(layouts):
            lay = layouts[p]
            name = lay.layer or p
            if not lay.structured:
                raise HparamError(f"Channel pruning: '{p}' ({lay.kind}) has no output units; keep it out with "
                                  f"PruningHparams.layer_rates={name}:0.", owner="PruningHparams", field="strategy",
                                  value="channels")
            if not lay.feeds:
                raise HparamError(f"Channel pruning cannot remove the units of '{p}': {lay.feeds_problem}, so which "
                                  f"inputs they feed is not well-defined; keep its units with PruningHparams.layer_rates={name}:0.",
                                  owner="PruningHparams", field="strategy", value="channels")
            consumer = layouts.get(lay.feeds)
            if consumer is None or consumer.shape[consumer.group_axis] != lay.units * lay.feed_repeat:
                raise HparamError(f"Channel pruning: '{p}' feeds '{lay.feeds}', whose input axis does not hold its "
                                  f"{lay.units} units × {lay.feed_repeat} positions; keep its units with "
                                  f"PruningHparams.layer_rates={name}:0.", owner="PruningHparams", field="strategy",
                                  value="channels")

    def _norms(self, weights, mask, layouts, paths) -> dict[str, np.ndarray]:
        out = {}
        for p in paths:
            w = unit_view(np.asarray(weights[p], np.float64) * np.asarray(mask[p], bool), layouts[p])
            out[p] = np.abs(w).sum(axis=1) if self.hparams.channel_norm == "l1" else np.sqrt((w * w).sum(axis=1))
        return out

    def __call__(self, weights, mask, level: int = 1) -> Masks:
        self.check()
        check_shapes(weights, mask)
        layouts = self.layouts
        paths = self.pruned({p: layouts[p] for p in mask})
        alive = {p: alive_units(mask[p], layouts[p]) for p in paths}
        norms = self._norms(weights, mask, layouts, paths)
        kept = allocate(self.hparams, norms, alive)
        for p in paths:  # every layer keeps a unit: its best one
            if not kept[p].any():
                kept[p][int(np.argmax(np.where(alive[p], norms[p], -np.inf)))] = True
        return channel_mask(mask, kept, layouts)

    def from_scores(self, scores, level, alive=None, exponent=None) -> Masks:
        """Level ``level``'s channels in one shot: each prunable unit scored by the sum of
        its alive weights' ``scores``, exactly ``round(density × units)`` units kept at the
        level's :meth:`level_density` (globally or per layer, as ``scope`` and
        ``layer_rates`` say; a layer that would keep none keeps its best), their fan-out
        removed as :meth:`__call__` removes it. ``alive`` and ``exponent`` as the base's."""
        self.check()
        layouts = self.layouts
        alive = {p: (np.ones(np.shape(s), bool) if alive is None else np.asarray(alive[p], bool))
                 for p, s in scores.items()}
        paths = self.pruned({p: layouts[p] for p in scores})
        units = {p: alive_units(alive[p], layouts[p]) for p in paths}
        unit_scores = {p: unit_view(np.where(alive[p], np.asarray(scores[p], np.float64), 0.0), layouts[p]).sum(axis=1)
                       for p in paths}
        density, rates = self.level_density(level)
        rates = tuple((g, r) for g, r in rates if any(path_matches(g, p) for p in paths))  # rate-0 layers are out
        kept = exact_allocation(unit_scores, density, self.hparams.scope, rates, units, exponent=exponent)
        for p in paths:
            if not kept[p].any():
                kept[p][int(np.argmax(np.where(units[p], unit_scores[p], -np.inf)))] = True
        return channel_mask(alive, kept, layouts)

    def random_like(self, mask, seed: int = 0) -> Masks:
        """Random channels: per layer as many surviving units as ``mask`` has, at random,
        with their fan-out removed as the strategy removes it (same per-layer counts)."""
        layouts = self.require_layouts()
        rng = np.random.default_rng(seed)
        units = {}
        for p in self.pruned({q: layouts[q] for q in mask}):
            count = int(alive_units(mask[p], layouts[p]).sum())
            alive = np.zeros(layouts[p].units, bool)
            alive[rng.permutation(layouts[p].units)[:count]] = True
            units[p] = alive
        return channel_mask({p: np.ones(np.shape(mask[p]), bool) for p in mask}, units, layouts)

    def _unit_sizes(self) -> dict[str, int]:
        layouts = self.require_layouts()
        return {p: layouts[p].units for p in self.pruned(layouts)}

    def survivor_counts(self, levels: int) -> list[int]:
        counts = unit_counts(self.hparams, self._unit_sizes())
        return [next(counts) for _ in range(levels + 1)]

    def max_levels(self) -> int:
        return last_changing(unit_counts(self.hparams, self._unit_sizes()))

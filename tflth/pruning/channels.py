"""Channel pruning: whole hidden units (Dense units, convolution filters, attention heads) at a time.

The units are the model's **unit groups** (:func:`tflth.unit_graph.unit_groups`, the one
reader of which axes belong together): a group lists every variable axis its units occupy
— the kernels and biases that produce them, the normalisation entries that scale them,
the rows of every layer that reads them (through a ``Flatten``: one row per position, in
either data format), residual ``Add``\\ s tying several producers into one group, the
depthwise kernel of a separable convolution. Pruning a unit zeroes its entries in **every
masked member** of its group, so nothing reads it any more and the ticket is a smaller
dense network (:func:`tflth.export.shrink` removes the units). A GroupNormalization's
channels go a whole block at a time (its ``groups`` blocks; removing a block leaves the
others' statistics as they were).

A level prunes ``fraction`` of each group's remaining units (``scope="layerwise"``, per
``layer_rates`` where a pattern matches one of the group's masked producers) or of all
groups' units ranked together (``"global"``), lowest ``channel_norm`` first: the L1
(``"l1"``) or L2 (``"l2"``) norm of the unit's surviving *producing* weights (every masked
kernel member with role ``"out"`` or ``"depthwise"``, summed over a residual group's
producers and over a block).

What is not pruned, and when it is refused:

* the model's outputs (the logits) are never pruned;
* groups the graph says cannot be pruned (normalised together by a LayerNormalization,
  crossing GroupNormalization blocks) are kept whole; :attr:`ChannelPruning.kept_whole` lists them with the reason, and giving one a
  ``layer_rates`` rate above 0 is refused with that reason;
* a group read by a variable that is **not masked** (the head of your own model, which
  ``--prune`` leaves out by default) cannot be removed by masks: refused, naming that
  variable and the two ways out (mask it, or ``--layer_rates=<layer>:0``);
* a model whose graph Keras does not record (subclassed), or with layers the reader
  cannot place, is refused in one line naming every such layer.

Every group keeps at least one unit (block).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tflth.hparams import HparamError, PruningHparams, field
from tflth.masking.masks import Masks, path_matches
from tflth.unit_graph import OUTPUTS_REASON
from tflth.pruning.pruners import (Pruner, allocate, check_layer_rates, check_shapes, exact_allocation,
                                   last_changing, register, unit_counts)

__all__ = ["ChannelPruning", "ChannelGroup", "channel_groups", "channel_mask"]

_PRODUCING = ("out", "depthwise")


@dataclasses.dataclass(frozen=True, eq=False)
class ChannelGroup:
    """A prunable unit group restricted to the masked variables.

    ``name``: the group's name (its first producing layer's path); ``blocks``: how many
    prunable blocks (units, or GroupNormalization blocks of ``width`` units); ``members``:
    the group's :class:`tflth.unit_graph.Member` entries on masked variables; ``paths``:
    their variable paths (``layer_rates`` patterns are matched against the producers').
    """

    name: str
    blocks: int
    width: int
    members: tuple
    producers: tuple[str, ...]

    def positions(self, member, blocks) -> np.ndarray:
        """The indices along ``member.axis`` of the given blocks (an index array or bools)."""
        rows = member.positions.reshape(self.blocks, -1)
        return rows[np.asarray(blocks)].ravel()

    def _view(self, member, array: np.ndarray) -> np.ndarray:
        """``array`` as ``(blocks, entries)``: block ``b``'s entries of this member."""
        a = np.moveaxis(np.asarray(array), member.axis, 0)
        rows = member.positions.reshape(self.blocks, -1)
        return a[rows.ravel()].reshape(self.blocks, -1)

    def alive(self, mask: Mapping[str, np.ndarray]) -> np.ndarray:
        """Per block: whether any masked producing entry of it survives in ``mask``."""
        out = np.zeros(self.blocks, bool)
        for m in self.members:
            if m.role in _PRODUCING:
                out |= self._view(m, np.asarray(mask[m.path], bool)).any(axis=1)
        return out

    def totals(self, values: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray], how: str) -> np.ndarray:
        """Per block: the ``"l1"`` or ``"l2"`` norm, or the ``"sum"``, of its surviving
        producing entries of ``values``."""
        total = np.zeros(self.blocks)
        for m in self.members:
            if m.role not in _PRODUCING:
                continue
            v = self._view(m, np.where(np.asarray(mask[m.path], bool), np.asarray(values[m.path], np.float64), 0.0))
            total += np.abs(v).sum(axis=1) if how == "l1" else (v * v).sum(axis=1) if how == "l2" else v.sum(axis=1)
        return np.sqrt(total) if how == "l2" else total


def channel_mask(mask: Mapping[str, np.ndarray], kept: Mapping[str, np.ndarray],
                 groups: Mapping[str, ChannelGroup]) -> Masks:
    """``mask`` with every block ``kept[name]`` marks dead (``False``) removed from every
    masked member of its group: the kernels and biases that produce it and the rows that
    read it."""
    out = {p: np.array(mask[p], bool) for p in mask}
    for name, alive in kept.items():
        group = groups[name]
        dead = np.flatnonzero(~np.asarray(alive, bool))
        if not dead.size:
            continue
        for m in group.members:
            index = [slice(None)] * out[m.path].ndim
            index[m.axis] = group.positions(m, dead)
            out[m.path][tuple(index)] = False
    return Masks(out)


@dataclasses.dataclass(frozen=True)
class _Groups:
    """What :func:`channel_groups` reads: the prunable groups, those kept whole (name →
    (reason, masked producers)) and the refusals (name → message)."""

    prunable: dict
    kept_whole: dict
    refused: dict


def _layer_hint(group) -> str:
    return group.name.split("/", 1)[-1] if "/" in group.name else group.name


def channel_groups(model, masked: list[str]) -> _Groups:
    """The channel groups of ``model`` whose producers include a ``masked`` variable (see
    the module docstring for which are pruned, kept whole or refused)."""
    from tflth import unit_graph  # noqa: PLC0415  (it imports the model zoo)

    try:
        graph = unit_graph.unit_groups(model, strict=True, streams_prunable=True)
    except unit_graph.UnitGraphError as e:
        raise HparamError(f"Channel pruning needs the model's unit groups: {e.what}", owner="PruningHparams",
                          field="strategy", value="channels") from None
    masked_set = set(masked)
    prunable, kept_whole, refused = {}, {}, {}
    for g in graph.groups:
        producers = tuple(dict.fromkeys(m.path for m in g.members if m.role in _PRODUCING and m.path in masked_set))
        if not producers:
            continue
        if not g.blocks_prunable:
            kept_whole[g.name] = (g.reason, producers)
            continue
        unmasked = sorted({m.path for m in g.members if m.role == "in" and m.path not in masked_set})
        if unmasked:
            refused[g.name] = (
                f"the units of '{g.name}' are read by {', '.join(repr(p) for p in unmasked)}, which "
                f"{'is' if len(unmasked) == 1 else 'are'} not masked (ModelHparams.prune leaves "
                f"{'it' if len(unmasked) == 1 else 'them'} out), so zeroing the units' weights would not remove "
                f"them; mask {'it' if len(unmasked) == 1 else 'them'} too (ModelHparams.prune) or keep these units with "
                f"PruningHparams.layer_rates={_layer_hint(g)}:0")
            # still listed, so a rate of 0 can keep it
        members = tuple(m for m in g.members if m.path in masked_set)
        prunable[g.name] = ChannelGroup(g.name, g.blocks, g.granularity, members, producers)
    return _Groups(prunable, kept_whole, refused)


@register("channels")
class ChannelPruning(Pruner):
    """Prune whole hidden units by their weights' L1/L2 norm, in every variable they occupy.

    Hyperparameters (:class:`tflth.hparams.PruningHparams`): ``fraction`` of the remaining
    units per level, ``scope`` (``"layerwise"``: each unit group alike; ``"global"``: one
    ranking of the norms across groups), ``layer_rates`` (per-group rates, matched against
    the group's producing kernels; 0 keeps a group's units), ``channel_norm`` (``"l1"``,
    ``"l2"``). Counts (:meth:`survivor_counts`) are in units (GroupNormalization blocks
    count once). Built with the model (``pruner_for(hparams, layouts=..., model=model)``
    or :func:`tflth.pruning.for_model`): the groups are read from its graph.

    Example::

        strategy = tflth.pruning.for_model(PruningHparams(0.5, "layerwise", strategy="channels"), model)
        mask = strategy(weights, all_ones)  # half of every hidden group's units, wherever they are read
        strategy.kept_whole                 # {group: why it is not pruned}
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

    def __init__(self, hparams, seed=0, layouts=None, model=None):
        super().__init__(hparams, seed=seed, layouts=layouts, model=model)
        self._groups = None
        if model is not None and layouts is not None:
            self._groups = channel_groups(model, list(layouts))

    def _read(self) -> _Groups:
        if self._groups is None:
            raise HparamError("Channel pruning needs the model to read its unit groups: build the strategy with "
                              "tflth.pruning.for_model(hparams, model) (or pruner_for(..., layouts=, model=)).",
                              owner="PruningHparams", field="strategy", value="channels")
        return self._groups

    def _rate(self, group: ChannelGroup, default):
        for pattern, rate in self.hparams.layer_rates:
            if any(path_matches(pattern, p) for p in group.producers):
                return rate
        return default

    @property
    def groups(self) -> dict[str, ChannelGroup]:
        """The groups this strategy prunes (not rate 0), by name."""
        read = self._read()
        default = None if self.hparams.scope == "global" else self.hparams.fraction
        return {n: g for n, g in read.prunable.items() if self._rate(g, default) != 0}

    @property
    def kept_whole(self) -> dict[str, str]:
        """Groups with masked producers that are not pruned, and why (the logits:
        ``"the model's outputs"``)."""
        return {n: reason for n, (reason, _) in self._read().kept_whole.items()}

    def check(self) -> None:
        layouts = self.require_layouts()
        check_layer_rates(self.hparams.layer_rates, list(layouts))
        read = self._read()
        for pattern, rate in self.hparams.layer_rates:
            for name, (reason, producers) in read.kept_whole.items():
                if rate and reason != OUTPUTS_REASON and any(path_matches(pattern, p) for p in producers):
                    raise HparamError(f"Channel pruning: PruningHparams.layer_rates={pattern}:{rate:g} asks to prune "
                                      f"the units of '{name}', which cannot be pruned: {reason}.",
                                      owner="PruningHparams", field="layer_rates", value=pattern)
        problems = [read.refused[n] for n in self.groups if n in read.refused]
        if problems:
            raise HparamError(f"Channel pruning: {'; '.join(problems)}.", owner="PruningHparams", field="strategy",
                              value="channels")
        if not self.groups:
            why = "; ".join(f"'{n}': {r}" for n, (r, _) in read.kept_whole.items()) or "no masked kernel produces units"
            raise HparamError(f"Channel pruning has no unit group to prune in this model ({why}).",
                              owner="PruningHparams", field="strategy", value="channels")

    def __call__(self, weights, mask, level: int = 1) -> Masks:
        self.check()
        check_shapes(weights, mask)
        groups = self.groups
        alive = {n: g.alive(mask) for n, g in groups.items()}
        norms = {n: g.totals(weights, mask, self.hparams.channel_norm) for n, g in groups.items()}
        kept = allocate(self._group_hparams(), norms, alive)
        for n in groups:  # every group keeps a unit: its best one
            if not kept[n].any():
                kept[n][int(np.argmax(np.where(alive[n], norms[n], -np.inf)))] = True
        return channel_mask(mask, kept, groups)

    def _group_hparams(self) -> PruningHparams:
        """The hparams with ``layer_rates`` keyed by group name (allocation ranks groups)."""
        rates = []
        for n, g in self.groups.items():
            rate = self._rate(g, None)
            if rate is not None:
                rates.append((n, rate))
        return PruningHparams(self.hparams.fraction, self.hparams.scope, tuple(rates))

    def from_scores(self, scores, level, alive=None, exponent=None) -> Masks:
        """Level ``level``'s channels in one shot: each prunable unit scored by the sum of
        its alive producing weights' ``scores``, exactly ``round(density × units)`` units
        kept at the level's :meth:`level_density` (globally or per group, as ``scope`` and
        ``layer_rates`` say; a group that would keep none keeps its best), every member of
        the dead units removed as :meth:`__call__` removes them. ``alive`` and ``exponent``
        as the base's."""
        self.check()
        alive = {p: (np.ones(np.shape(s), bool) if alive is None else np.asarray(alive[p], bool))
                 for p, s in scores.items()}
        groups = self.groups
        units = {n: g.alive(alive) for n, g in groups.items()}
        unit_scores = {n: g.totals(scores, alive, "sum") for n, g in groups.items()}
        density, _ = self.level_density(level)
        rates = tuple((n, 1.0 - (1.0 - r) ** level) for n, r in self._group_hparams().layer_rates)
        kept = exact_allocation(unit_scores, density, self.hparams.scope, rates, units, exponent=exponent)
        for n in groups:
            if not kept[n].any():
                kept[n][int(np.argmax(np.where(units[n], unit_scores[n], -np.inf)))] = True
        return channel_mask(alive, kept, groups)

    def random_like(self, mask, seed: int = 0) -> Masks:
        """Random channels: per group as many surviving units as ``mask`` has, at random,
        removed from every member as the strategy removes them (same per-group counts)."""
        rng = np.random.default_rng(seed)
        kept = {}
        for n, g in self.groups.items():
            count = int(g.alive(mask).sum())
            alive = np.zeros(g.blocks, bool)
            alive[rng.permutation(g.blocks)[:count]] = True
            kept[n] = alive
        return channel_mask({p: np.ones(np.shape(mask[p]), bool) for p in mask}, kept, self.groups)

    def _unit_sizes(self) -> dict[str, int]:
        return {n: g.blocks for n, g in self.groups.items()}

    def survivor_counts(self, levels: int) -> list[int]:
        counts = unit_counts(self._group_hparams(), self._unit_sizes())
        return [next(counts) for _ in range(levels + 1)]

    def max_levels(self) -> int:
        return last_changing(unit_counts(self._group_hparams(), self._unit_sizes()))

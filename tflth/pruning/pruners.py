"""Pruners: trained weights + current mask → next mask.

A pruner is a :class:`Pruner`: a callable ``pruner(weights, mask) -> mask`` over
``{variable path: array}`` dicts, built from :class:`PruningHparams` and a seed.
Pruners are registered by the name of their pruning strategy in :data:`REGISTRY`
(``PruningHparams.strategy``, ``--pruning_strategy``, picks one), so a new way to prune
(structured N:M masks, say) is one more class with :func:`register`. ("Strategy" alone
is tf.distribute's word in tflth: :mod:`tflth.training.strategy`.) The built-in fraction strategies prune a fraction of the weights that are still *remaining* (so density
after L levels at fraction p is (1-p)^L), never re-grows a pruned weight, and breaks
ties deterministically (by magnitude, then by position in the flattened layer order).

* :class:`MagnitudePruning` — smallest |w|, one threshold across all layers
  (``scope="global"``) or the same fraction within each variable (``"layerwise"``).
  Variables matching a ``layer_rates`` glob (:func:`tflth.masking.path_matches`: a
  variable path, or its layer's path as tflth 0.1 spelled it) are pruned within
  themselves at their own rate (0 excludes them) in either scope.
* :class:`RandomPruning` — the same counts as magnitude pruning, chosen at random.
* :func:`random_like` — a random mask with the same per-layer survivor counts as a
  given mask (the random-pruning control of the papers).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from tflth.errors import InputError
from tflth.hparams import HparamError, PruningHparams
from tflth.masking.masks import Masks, path_matches
from tflth.pruning.layout import VariableLayout

__all__ = ["Pruner", "REGISTRY", "register", "MagnitudePruning", "RandomPruning", "random_like",
           "allocate", "check_layer_rates", "rate_for", "pruner_for", "pruned_count", "exact_allocation", "one_shot_names",
           "SaliencyError"]


#: Registered pruning strategies by name (``PruningHparams.strategy``).
REGISTRY: dict[str, type[Pruner]] = {}


def register(name: str):
    """Class decorator: register a strategy under ``name`` (``PruningHparams.strategy``),
    with its own settings when it declares them: a nested dataclass ``Hparams`` deriving
    from :class:`PruningHparams` (:meth:`PruningHparams.register`)."""

    def add(cls):
        if "Hparams" in vars(cls):
            PruningHparams.register(name, cls.Hparams)
        REGISTRY[name] = cls
        return cls

    return add


def pruned_count(fraction: float, alive: int) -> int:
    """How many of ``alive`` weights a level at ``fraction`` prunes."""
    return int(round(fraction * alive))


def check_layer_rates(layer_rates, paths) -> None:
    """Every ``layer_rates`` pattern must match at least one masked variable."""
    for pattern, _ in layer_rates:
        if not any(path_matches(pattern, p) for p in paths):
            raise HparamError(f"PruningHparams.layer_rates: '{pattern}' matches no masked variable; the masked "
                              f"variables are {list(paths)}.", owner="PruningHparams", field="layer_rates",
                              value=pattern)


def rate_for(path: str, layer_rates, default: float | None) -> float | None:
    """The first ``layer_rates`` rate whose pattern matches ``path``, else ``default``."""
    for pattern, rate in layer_rates:
        if path_matches(pattern, path):
            return rate
    return default


def _prune_smallest(scores: np.ndarray, alive: np.ndarray, fraction: float) -> np.ndarray:
    """Flat ``alive`` with the ``round(fraction · alive)`` lowest-scoring alive entries dropped."""
    alive = alive.copy()
    idx = np.flatnonzero(alive)
    k = pruned_count(fraction, idx.size)
    if k:
        order = np.argsort(scores[idx], kind="stable")  # ties: lower position first
        alive[idx[order[:k]]] = False
    return alive


def check_shapes(weights: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray]) -> None:
    for p in mask:
        if np.shape(weights[p]) != np.shape(mask[p]):
            raise HparamError(f"Weights of '{p}' have shape {np.shape(weights[p])}; mask {np.shape(mask[p])}.")


def allocate(hparams: PruningHparams, scores: Mapping[str, np.ndarray],
             alive: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The allocation of the fraction strategies: which of the ``alive`` entries (weights,
    or units for :class:`~tflth.pruning.channels.ChannelPruning`) survive a level.

    ``hparams.fraction`` of the alive entries go, lowest ``scores`` first: one ranking
    across every variable without a ``layer_rates`` rate (``scope="global"``), or within
    each variable (``"layerwise"``, and for every variable a rate matches, at its rate).
    """
    paths = list(alive)
    default = None if hparams.scope == "global" else hparams.fraction
    new, pooled = {}, []
    for p in paths:
        rate = rate_for(p, hparams.layer_rates, default)
        if rate is None:
            pooled.append(p)
            continue
        a = np.asarray(alive[p], bool)
        new[p] = _prune_smallest(np.asarray(scores[p]).ravel(), a.ravel(), rate).reshape(a.shape)
    if pooled:
        flat_alive = np.concatenate([np.asarray(alive[p], bool).ravel() for p in pooled])
        flat = np.concatenate([np.asarray(scores[p]).ravel() for p in pooled])
        kept = _prune_smallest(flat, flat_alive, hparams.fraction)
        offset = 0
        for p in pooled:
            n = np.size(alive[p])
            new[p] = kept[offset:offset + n].reshape(np.shape(alive[p]))
            offset += n
    return {p: new[p] for p in paths}


def unit_counts(hparams: PruningHparams, sizes: Mapping[str, int]):
    """Entries left after level 0, 1, 2, ... of :func:`allocate` (endless), from the
    counts alone: the counts do not depend on the scores."""
    default = None if hparams.scope == "global" else hparams.fraction
    rates = {p: rate_for(p, hparams.layer_rates, default) for p in sizes}
    alive = {p: int(n) for p, n in sizes.items() if rates[p] is not None}
    pool = sum(int(n) for p, n in sizes.items() if rates[p] is None)
    while True:
        yield pool + sum(alive.values())
        for p in alive:
            alive[p] -= pruned_count(rates[p], alive[p])
        pool -= pruned_count(hparams.fraction, pool)


def last_changing(counts) -> int:
    """The last level of an endless count sequence that still changes it."""
    previous, level = next(counts), 0
    for count in counts:
        if count == previous:
            return level
        previous, level = count, level + 1
    raise AssertionError("unreachable")


class SaliencyError(InputError):
    """A saliency score or a one-shot mask cannot be made for this model or these arguments."""


def _check_allocation(density, scope, layer_rates, scores, alive):
    if not (isinstance(density, (int, float, np.floating)) and 0 < density <= 1):
        raise SaliencyError(f"density={density!r} is invalid: expected a number in (0, 1].")
    if scope not in ("global", "layerwise"):
        raise HparamError(f"scope={scope!r} is invalid: expected 'global' or 'layerwise'.")
    for pattern, rate in layer_rates:
        if not 0 <= float(rate) < 1:
            raise HparamError(f"layer_rates: '{pattern}:{rate}' is invalid: expected rates in [0, 1).")
    check_layer_rates(layer_rates, list(scores))
    if alive is not None and set(alive) != set(scores):
        raise SaliencyError(f"alive has the variables {sorted(alive)}; the scores {sorted(scores)}.")
    for p, s in scores.items():
        a = None if alive is None else np.asarray(alive[p], bool)
        if a is not None and a.shape != np.shape(s):
            raise SaliencyError(f"alive['{p}'] has shape {a.shape}; its scores {np.shape(s)}.")
        live = np.asarray(s) if a is None else np.asarray(s)[a]
        if not np.all(np.isfinite(live)):
            raise SaliencyError(f"The scores of '{p}' are not all finite; a mask cannot rank them.")


def _pools(paths, density, scope, layer_rates) -> list[tuple[list[str], float]]:
    """``[(paths, density)]``: the variables ranked together and the density they keep."""
    default = None if scope == "global" else density
    pools, pooled = [], []
    for p in paths:
        rate = rate_for(p, layer_rates, None)
        own = (1.0 - rate) if rate is not None else default
        if own is None:
            pooled.append(p)
        else:
            pools.append(([p], own))
    if pooled:
        pools.insert(0, (pooled, density))
    return pools


def exact_allocation(scores, density, scope, layer_rates, alive, exponent: float | None = None):
    """The kept entries of each pool of ``scores`` (lower = pruned first): exactly
    ``round(d × count)`` (``d`` the pool's density, or ``d^exponent`` for a round of
    SynFlow's schedule, then at most what is ``alive``); the pools are
    :func:`tflth.pruning.saliency.one_shot_mask`'s, which documents the rule. A one-shot
    mask's allocation, for weights and (:mod:`tflth.pruning.channels`) for units."""
    layer_rates = tuple((str(g), float(r)) for g, r in layer_rates)
    _check_allocation(density, scope, layer_rates, scores, alive)
    alive = {p: (np.ones(np.shape(s), bool) if alive is None else np.asarray(alive[p], bool))
             for p, s in scores.items()}
    kept = {}
    for pool, pool_density in _pools(list(scores), density, scope, layer_rates):
        count = sum(int(np.size(scores[p])) for p in pool)
        live = sum(int(alive[p].sum()) for p in pool)
        target = pool_density if exponent is None else pool_density ** exponent
        keep = int(round(target * count))
        if keep > live:
            if exponent is None or exponent == 1:
                raise SaliencyError(f"Keeping {keep} of {count} weights of {pool} (density {pool_density:g}) needs "
                                    f"more than the {live} still alive; a one-shot mask never re-grows a weight.")
            keep = live  # an early round of the schedule above the starting density keeps everything
        if keep == live:
            kept.update({p: alive[p].copy() for p in pool})
        elif keep == 0:
            kept.update({p: np.zeros_like(alive[p]) for p in pool})
        else:
            # allocate() prunes round(fraction × alive) of the alive entries; with this fraction
            # that is exactly live − keep (the product is within an ulp of an integer).
            hparams = PruningHparams(fraction=(live - keep) / live, scope="global")
            kept.update(allocate(hparams, {p: scores[p] for p in pool}, {p: alive[p] for p in pool}))
        assert sum(int(kept[p].sum()) for p in pool) == keep, pool
    return {p: kept[p] for p in scores}



class Pruner:
    """What IMP calls at each level: trained kernels + current mask → the next mask; the base
    of every strategy (its hparams, seed and the masked variables' layouts).

    ``strategy(kernels, mask, level=1) -> Masks``: both arguments are ``{variable path:
    array}`` with the same keys and shapes; the result is a :class:`tflth.masking.Masks`; a
    strategy never re-grows a pruned weight. ``level`` is the level being made (1, 2, ...),
    for strategies whose schedule is per level (N:M). Constructed as ``cls(hparams, seed=0,
    layouts=None, model=None)`` (``layouts``: ``{path: VariableLayout}``,
    :func:`tflth.pruning.layout.layouts`; the structured strategies need them, the
    unstructured ones only their shapes; ``model``: the model itself, for a strategy that
    reads its graph: channels). :func:`tflth.pruning.for_model` builds one from a model.

    Subclasses set ``name`` and ``unit`` (what their counts count) and implement
    ``__call__``; :meth:`random_like` (the random-pruning control), :meth:`survivor_counts`,
    :meth:`max_levels` and :meth:`check` default to the unstructured ones.

    **A strategy owns its settings**: those beyond :class:`PruningHparams`' (``fraction``,
    ``scope``, ``layer_rates``, which every strategy is given) are fields of a nested
    dataclass ``Hparams`` deriving from :class:`PruningHparams`, declared with
    :func:`tflth.hparams.field` (default, help, flag), which :func:`register` registers with
    the strategy: ``PruningHparams(strategy=name, ...)`` then builds them, their flags are
    generated, and setting one for another strategy is an error. Adding a strategy is this
    one class::

        @register("snip")
        class SnipPruning(Pruner):
            @dataclasses.dataclass(frozen=True)
            class Hparams(PruningHparams):
                snip_batches: int = field(1, "Batches the gradient is averaged over.")

            def __call__(self, weights, mask, level=1): ...
    """

    name = ""
    unit = "weights"
    one_shot = False  # True: a one-shot method (tflth.pruning.one_shot), every level scored once at W_k
    levels_hint = ""  # why the level count is what it is, for the error on too many levels

    def __init__(self, hparams: PruningHparams, seed: int = 0, layouts: Mapping[str, VariableLayout] | None = None,
                 model=None):
        self.hparams = hparams
        self.seed = seed
        self.layouts = dict(layouts) if layouts is not None else None

    def require_layouts(self) -> dict[str, VariableLayout]:
        if self.layouts is None:
            raise HparamError(f"Pruning strategy {self.name!r} needs the layouts of the masked variables "
                              "(tflth.pruning.layout.layouts(model)).")
        return self.layouts

    def check(self) -> None:
        """Validate the hparams against the masked variables (``layouts``); raise HparamError."""
        if self.layouts is not None:
            check_layer_rates(self.hparams.layer_rates, list(self.layouts))

    def check_model(self, model) -> None:
        """Refuse, in one line, a model this strategy cannot prune (SynFlow's undefined ``R``)."""

    def random_like(self, mask: Mapping[str, np.ndarray], seed: int = 0) -> Masks:
        """A random mask of this strategy's structure with the per-variable counts of ``mask``."""
        return random_like(mask, seed)

    def sizes(self) -> dict[str, int]:
        return {p: int(np.prod(lay.shape)) for p, lay in self.require_layouts().items()}

    def survivor_counts(self, levels: int) -> list[int]:
        """Prunable ``unit`` left after each of levels 0..``levels``."""
        counts = unit_counts(self.hparams, self.sizes())
        return [next(counts) for _ in range(levels + 1)]

    def max_levels(self) -> int:
        """The last level that still prunes something: any level after it prunes nothing."""
        return last_changing(unit_counts(self.hparams, self.sizes()))

    def level_density(self, level: int) -> tuple[float, tuple[tuple[str, float], ...]]:
        """Level ``level``'s density in one shot, and the per-variable pruned fractions:
        IMP's schedule, ``(1 − fraction)^level`` and ``1 − (1 − rate)^level``."""
        hp = self.hparams
        rates = tuple((p, 1.0 - (1.0 - r) ** level) for p, r in hp.layer_rates)
        return (1.0 - hp.fraction) ** level, rates

    def from_scores(self, scores: Mapping[str, np.ndarray], level: int,
                    alive: Mapping[str, np.ndarray] | None = None, exponent: float | None = None) -> Masks:
        """Level ``level``'s mask of this strategy's **structure**, made in one shot from
        per-weight ``scores`` (``{path: array}``, lower = pruned first) instead of from a
        previous level: what a one-shot method (:mod:`tflth.pruning.one_shot`) keeps when
        it prunes with this strategy's structure and allocation.

        Unstructured (here): exactly ``round(density × count)`` weights at the level's
        :meth:`level_density`, ranked globally or per variable as ``scope`` and
        ``layer_rates`` say (:func:`exact_allocation`). N:M and channels override it.
        ``alive`` (default: every entry) limits what may survive; ``exponent`` in (0, 1]
        is how far along the level's schedule a round of SynFlow is (``density^exponent``).
        """
        density, rates = self.level_density(level)
        return Masks(exact_allocation(dict(scores), density, self.hparams.scope, rates, alive, exponent=exponent))


class _FractionPruning(Pruner):
    """Unstructured: subclasses give the per-weight scores (lower = pruned first)."""


    def scores(self, weights: Mapping[str, np.ndarray], paths: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, weights: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray], level: int = 1) -> Masks:
        paths = list(mask)
        check_layer_rates(self.hparams.layer_rates, paths)
        check_shapes(weights, mask)
        return Masks(allocate(self.hparams, self.scores(weights, paths), {p: np.asarray(mask[p], bool) for p in paths}))


@register("magnitude")
class MagnitudePruning(_FractionPruning):
    """Prune the smallest-magnitude remaining weights (global or layerwise)."""

    name = "magnitude"

    def scores(self, weights, paths):
        return {p: np.abs(np.asarray(weights[p], np.float64)) for p in paths}


@register("random")
class RandomPruning(_FractionPruning):
    """Prune as many remaining weights as magnitude pruning would, chosen at random."""

    name = "random"

    def scores(self, weights, paths):
        rng = np.random.default_rng(self.seed)
        return {p: rng.random(np.shape(weights[p])) for p in paths}


def random_like(mask: Mapping[str, np.ndarray], seed: int = 0) -> Masks:
    """A random mask with exactly the per-layer survivor counts of ``mask``."""
    rng = np.random.default_rng(seed)
    out = {}
    for p, m in mask.items():
        m = np.asarray(m, bool)
        flat = np.zeros(m.size, bool)
        flat[rng.permutation(m.size)[: int(m.sum())]] = True
        out[p] = flat.reshape(m.shape)
    return Masks(out)


def one_shot_names() -> list[str]:
    """The registered one-shot methods (``LotteryHparams.one_shot``), in registration order."""
    return [name for name, cls in REGISTRY.items() if cls.one_shot]


def pruner_for(hparams: PruningHparams, seed: int = 0,
               layouts: Mapping[str, VariableLayout] | None = None, model=None) -> Pruner:
    """The registered strategy ``hparams.strategy``, built for ``hparams``, ``seed``, the
    masked variables' ``layouts`` (:func:`tflth.pruning.layout.layouts`) and, for a
    strategy that reads the model's graph, ``model``."""
    try:
        cls = REGISTRY[hparams.strategy]
    except KeyError:
        raise HparamError(f"PruningHparams.strategy={hparams.strategy!r} is invalid: expected one of {list(REGISTRY)}.",
                          owner="PruningHparams", field="strategy", value=hparams.strategy) from None
    return cls(hparams, seed=seed, layouts=layouts, model=model)

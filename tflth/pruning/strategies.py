"""Pruning strategies: trained weights + current mask → next mask.

A strategy is any callable ``strategy(weights, mask) -> mask`` over ``{variable path:
array}`` dicts (:class:`PruningStrategy`), built from :class:`PruningHparams` and a seed.
Strategies are registered by name in :data:`REGISTRY` (``PruningHparams.strategy``
picks one), so a new way to prune (structured N:M masks, say) is one more class with
:func:`register`. The built-in fraction strategies prune a fraction of the weights that are still *remaining* (so density
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

from typing import Callable, Mapping, Protocol

import numpy as np

from tflth.hparams import HparamError, PruningHparams
from tflth.masking.masks import Masks, path_matches

__all__ = ["PruningStrategy", "REGISTRY", "register", "MagnitudePruning", "RandomPruning", "random_like",
           "check_layer_rates", "strategy_for", "pruned_count", "survivor_counts", "max_levels"]


class PruningStrategy(Protocol):
    """What IMP calls at each level: trained kernels + current mask → the next mask.

    Both arguments are ``{variable path: array}`` with the same keys and shapes; the
    result is a :class:`tflth.masking.Masks`; a strategy never re-grows a pruned weight. Construct with
    ``cls(hparams: PruningHparams, seed: int = 0)``.
    """

    def __call__(self, kernels: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray]) -> Masks: ...


#: Registered pruning strategies by name (``PruningHparams.strategy``).
REGISTRY: dict[str, Callable[..., PruningStrategy]] = {}


def register(name: str):
    """Class decorator: register a strategy under ``name``."""

    def add(cls):
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


def _rate_for(path: str, layer_rates, default: float | None) -> float | None:
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


class _FractionPruning:
    """Shared level logic; subclasses give the per-weight scores (lower = pruned first)."""

    def __init__(self, hparams: PruningHparams, seed: int = 0):
        self.hparams = hparams
        self.seed = seed

    def scores(self, weights: Mapping[str, np.ndarray], paths: list[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __call__(self, weights: Mapping[str, np.ndarray], mask: Mapping[str, np.ndarray]) -> Masks:
        paths = list(mask)
        check_layer_rates(self.hparams.layer_rates, paths)
        for p in paths:
            if np.shape(weights[p]) != np.shape(mask[p]):
                raise HparamError(f"Weights of '{p}' have shape {np.shape(weights[p])}; mask {np.shape(mask[p])}.")
        scores = self.scores(weights, paths)
        default = None if self.hparams.scope == "global" else self.hparams.fraction
        new = {}
        pooled = []
        for p in paths:
            rate = _rate_for(p, self.hparams.layer_rates, default)
            if rate is None:
                pooled.append(p)
                continue
            alive = np.asarray(mask[p], bool).ravel()
            new[p] = _prune_smallest(scores[p].ravel(), alive, rate).reshape(np.shape(mask[p]))
        if pooled:
            alive = np.concatenate([np.asarray(mask[p], bool).ravel() for p in pooled])
            flat = np.concatenate([scores[p].ravel() for p in pooled])
            kept = _prune_smallest(flat, alive, self.hparams.fraction)
            offset = 0
            for p in pooled:
                n = np.size(mask[p])
                new[p] = kept[offset:offset + n].reshape(np.shape(mask[p]))
                offset += n
        return Masks({p: new[p] for p in paths})


@register("magnitude")
class MagnitudePruning(_FractionPruning):
    """Prune the smallest-magnitude remaining weights (global or layerwise)."""

    def scores(self, weights, paths):
        return {p: np.abs(np.asarray(weights[p], np.float64)) for p in paths}


@register("random")
class RandomPruning(_FractionPruning):
    """Prune as many remaining weights as magnitude pruning would, chosen at random."""

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


def strategy_for(hparams: PruningHparams, seed: int = 0) -> PruningStrategy:
    """The registered strategy ``hparams.strategy``, built for ``hparams`` and ``seed``."""
    try:
        cls = REGISTRY[hparams.strategy]
    except KeyError:
        raise HparamError(f"PruningHparams.strategy={hparams.strategy!r} is invalid: expected one of {list(REGISTRY)}.",
                          owner="PruningHparams", field="strategy", value=hparams.strategy) from None
    return cls(hparams, seed=seed)


def _level_counts(hparams: PruningHparams, sizes: Mapping[str, int]):
    """Prunable weights left after level 0, 1, 2, ... of a fraction strategy (endless),
    from the layer sizes alone: the counts do not depend on the weights."""
    check_layer_rates(hparams.layer_rates, list(sizes))
    default = None if hparams.scope == "global" else hparams.fraction
    rates = {p: _rate_for(p, hparams.layer_rates, default) for p in sizes}
    alive = {p: int(n) for p, n in sizes.items() if rates[p] is not None}
    pool = sum(int(n) for p, n in sizes.items() if rates[p] is None)
    while True:
        yield pool + sum(alive.values())
        for p in alive:
            alive[p] -= pruned_count(rates[p], alive[p])
        pool -= pruned_count(hparams.fraction, pool)


def survivor_counts(hparams: PruningHparams, sizes: Mapping[str, int], levels: int) -> list[int]:
    """Prunable weights left after each of levels 0..``levels``."""
    counts = _level_counts(hparams, sizes)
    return [next(counts) for _ in range(levels + 1)]


def max_levels(hparams: PruningHparams, sizes: Mapping[str, int]) -> int:
    """The last level that still prunes a weight: any level after it prunes nothing."""
    counts = _level_counts(hparams, sizes)
    previous, level = next(counts), 0
    for count in counts:
        if count == previous:
            return level
        previous, level = count, level + 1
    raise AssertionError("unreachable")

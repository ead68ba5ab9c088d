"""Pruning: which weights a level removes.

Strategies (:mod:`tflth.pruning.strategies`) map trained weights and the current mask
to the next mask, over ``{variable path: array}``; they are registered by name in
:data:`REGISTRY` (``PruningHparams.strategy``, ``--pruning_strategy``). :func:`prune` runs
one on a model's masked variables.
"""

from __future__ import annotations

from tflth.hparams import PruningHparams
from tflth.pruning.strategies import (REGISTRY, MagnitudePruning, PruningStrategy, RandomPruning, check_layer_rates,
                                      max_levels, pruned_count, random_like, register, strategy_for, survivor_counts)

__all__ = ["REGISTRY", "MagnitudePruning", "PruningStrategy", "RandomPruning", "check_layer_rates", "max_levels",
           "pruned_count", "random_like", "register", "strategy_for", "survivor_counts", "prune"]


def prune(model, fraction: float = 0.2, scope: str = "global", strategy: str = "magnitude",
          layer_rates=(), seed: int = 0):
    """The next mask of ``model``: ``strategy`` applied to its masked variables now.

    Prunes ``fraction`` of the weights still alive (of each variable with
    ``scope="layerwise"``; ``layer_rates`` ``((glob, rate), ...)`` give variables their own
    rate); never re-grows a pruned weight. Returns a :class:`tflth.masking.Masks` and
    changes nothing: apply it with :func:`tflth.masking.apply_masks` or
    :func:`tflth.masking.rewind`.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = tflth.masked(keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="fc")]))
    >>> tflth.pruning.prune(model, fraction=0.6).density().survivors
    8
    """
    from tflth import masking  # noqa: PLC0415

    hparams = PruningHparams(fraction, scope, tuple(layer_rates), strategy)
    return strategy_for(hparams, seed=seed)(masking.masked_weights(model), masking.masks_of(model))

"""Pruning: which weights a level removes.

A strategy maps trained weights and the current mask to the next mask, over
``{variable path: array}``, and is registered by name in :data:`REGISTRY`
(``PruningHparams.strategy``, ``--pruning_strategy``). Each is a structure × a score ×
an allocation, with its own hyperparameters and level schedule:

=============  ==================================  ================  =========================
name           structure (what goes together)      score             allocation per level
=============  ==================================  ================  =========================
``magnitude``  one weight (:mod:`.pruners`)         ``|w|``           ``fraction`` of the rest,
                                                                     global or layerwise
``random``     one weight                          random            as ``magnitude``
``nm``         N of every M inputs (:mod:`.nm`)    ``|w|``           the level's N:M (``nm``)
``channels``   a hidden unit wherever it lies      L1/L2 norm        ``fraction`` of the units,
               (its unit group, :mod:`.channels`)                    global or layerwise
=============  ==================================  ================  =========================

Every strategy's :meth:`~Pruner.random_like` is its random-pruning control: the same
structure and per-layer counts, at random. :mod:`.layout` reads what a variable's axes
mean from its layer; which axes of which variables hold the same units is
:func:`tflth.unit_graph.unit_groups`' (channels read it). :func:`for_model` builds a
strategy for a model; :func:`prune` runs one on a model's masked variables. :mod:`.saliency` scores weights once, at the weights of now
(SNIP, GraSP, SynFlow; lower = pruned first), for exact one-shot masks (:func:`one_shot_mask`, :func:`synflow_mask`).
"""

from __future__ import annotations

from tflth.hparams import PruningHparams
from tflth.pruning.pruners import (REGISTRY, MagnitudePruning, RandomPruning, Pruner, allocate, check_layer_rates,
                                      exact_allocation, one_shot_names, pruned_count, random_like, register,
                                      pruner_for)
from tflth.pruning.nm import NMPruning, is_nm, is_pruned_m_by_n
from tflth.pruning.channels import ChannelPruning
from tflth.pruning.layout import VariableLayout, layouts
from tflth.pruning.one_shot import GraspPruning, MagnitudeAtK, OneShotPruner, SnipPruning, SynflowPruning
from tflth.pruning.saliency import (SaliencyError, grasp_scores, one_shot_mask, snip_scores, synflow_mask,
                                    synflow_refusal, synflow_scores)

__all__ = ["REGISTRY", "ChannelPruning", "MagnitudePruning", "NMPruning", "RandomPruning", "Pruner",
           "VariableLayout", "allocate", "check_layer_rates", "is_nm", "is_pruned_m_by_n", "layouts", "pruned_count",
           "random_like", "register", "pruner_for", "for_model", "prune", "exact_allocation", "one_shot_names", "SaliencyError", "grasp_scores", "one_shot_mask",
           "snip_scores", "synflow_mask", "synflow_refusal", "synflow_scores", "OneShotPruner", "MagnitudeAtK",
           "SnipPruning", "GraspPruning", "SynflowPruning"]


def for_model(hparams: PruningHparams, model, selected=None, seed: int = 0) -> Pruner:
    """The strategy ``hparams.strategy`` for ``model``'s masked variables (or, before it is
    masked, the ``selected`` ``{path: Maskable}`` of :func:`tflth.masking.select`): their
    layouts, and the model itself for a strategy that reads its graph."""
    return pruner_for(hparams, seed=seed, layouts=layouts(model, selected), model=model)


def prune(model, fraction: float = 0.2, scope: str = "global", strategy: str = "magnitude",
          layer_rates=(), seed: int = 0, level: int = 1, **settings):
    """The next mask of ``model``: ``strategy`` applied to its masked variables now.

    Prunes ``fraction`` of the weights still alive (of each variable with
    ``scope="layerwise"``; ``layer_rates`` ``((glob, rate), ...)`` give variables their own
    rate); never re-grows a pruned weight. ``settings`` are the other
    :class:`PruningHparams` fields (``nm=((2, 4),)``, ``nm_pad``, ``channel_norm``);
    ``level`` picks a per-level setting (the N:M pattern). Returns a :class:`tflth.masking.Masks` and
    changes nothing: apply it with :func:`tflth.masking.apply_masks` or
    :func:`tflth.masking.rewind`.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = tflth.masked(keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="fc")]))
    >>> tflth.pruning.prune(model, fraction=0.6).density().survivors
    8
    """
    from tflth import masking  # noqa: PLC0415

    hparams = PruningHparams(fraction, scope, tuple(layer_rates), strategy, **settings)
    chosen = for_model(hparams, model, seed=seed)
    chosen.check()
    return chosen(masking.masked_weights(model), masking.masks_of(model), level=level)

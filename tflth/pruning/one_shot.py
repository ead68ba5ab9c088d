"""Pruning once, at the rewind step k, by a score: SNIP, GraSP, SynFlow and magnitude at k.

The pruners IMP compares itself against (Frankle, Dziugaite, Roy & Carbin, *Pruning
Neural Networks at Initialization: Why Are We Missing the Mark?*): each level's mask is
computed **once, from the weights of step k** (the dense run's W_k, masks all ones), to
that level's density, and the network then trains from W_k ⊙ m exactly as an IMP level
does (the experiment's reset, its controls). Nothing is nested: level L's mask is scored
afresh at its own density, not pruned from level L−1's. The densities are IMP's schedule,
``(1 − fraction)^L`` (``layer_rates`` compounded the same way), so a one-shot experiment's
level L sits beside IMP's level L in a report.

========================  ===================================================  ==============
``--pruning_strategy``    score at W_k (:mod:`tflth.pruning.saliency`)            its settings
========================  ===================================================  ==============
``magnitude_at_k``        ``|w|`` (the "prune early" strawman)                  —
``snip``                  ``|g ⊙ w|``, g the loss gradient                      ``snip_batches``
``grasp``                 GraSP's ``−w ⊙ Hg`` (highest pruned first)            ``grasp_batches``
``synflow``               ``|w ⊙ ∂R/∂w|``, data-free, iterative                 ``synflow_rounds``
========================  ===================================================  ==============

The gradients use the training batches the dense run saw from step k on (its data order,
no augmentation), so a rerun scores the same batches. The ``random_prune`` control of a
one-shot level is a random mask with the same per-variable counts (a layerwise shuffle:
the layerwise densities kept, the choice within each layer random), and
``random_reinit`` a new initialisation on the same mask.

Example::

    pruning = PruningHparams(fraction=0.2, strategy="snip", snip_batches=2)
    job = LotteryJob(run, pruning, LotteryHparams(levels=4, rewind_step="100it",
                                                  controls=("random_prune",)))
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np

from tflth.hparams import HparamError, PruningHparams, field
from tflth.masking.masks import Masks
from tflth.pruning import saliency
from tflth.pruning.pruners import Pruner, SaliencyError, register

__all__ = ["OneShotPruner", "MagnitudeAtK", "SnipPruning", "GraspPruning", "SynflowPruning"]


class OneShotPruner(Pruner):
    """A pruner whose every level is one mask scored at W_k (see the module docstring).

    Subclasses give :meth:`scores` (lower = pruned first) and say whether they need data
    (``needs_batches``); :meth:`mask_at` turns the scores into the level's exact mask.
    IMP's ``__call__`` (prune the previous level's trained weights) is refused: a
    one-shot pruner never sees them.
    """

    one_shot = True
    needs_batches = False
    batches_field = ""  # the Hparams field that says how many batches the score averages over

    def __call__(self, weights, mask, level: int = 1) -> Masks:
        raise HparamError(f"Pruning strategy {self.name!r} prunes once at the rewind step (mask_at), not from a "
                          "level's trained weights.", owner="PruningHparams", field="strategy", value=self.name)

    def batch_count(self) -> int:
        return int(getattr(self.hparams, self.batches_field)) if self.batches_field else 0

    def scores(self, model, batches: Sequence, paths: Sequence[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def mask_at(self, model, batches: Sequence, level: int, paths: Sequence[str],
                structure: Pruner | None = None) -> Masks:
        """Level ``level``'s mask of ``model`` as it is now (W_k, unpruned), over ``paths``,
        in the ``structure`` of a pruning strategy (its :meth:`~Pruner.from_scores`: the
        experiment's unstructured, N:M or channel pruner), by default unstructured with
        this method's own ``fraction``, ``scope`` and ``layer_rates``."""
        return (structure or self).from_scores(self.scores(model, batches, paths), level)


@register("magnitude_at_k")
class MagnitudeAtK(OneShotPruner):
    """``|W_k|``, once per level: magnitude pruning without IMP's iterations."""

    name = "magnitude_at_k"

    def scores(self, model, batches, paths):
        variables = _variables(model, paths)
        return {p: np.abs(np.asarray(variables[p].numpy(), np.float64)) for p in paths}


@register("snip")
class SnipPruning(OneShotPruner):
    """SNIP's ``|g ⊙ w|`` at W_k (Lee et al., ICLR 2019), over ``snip_batches`` batches."""

    name = "snip"
    needs_batches = True
    batches_field = "snip_batches"

    @dataclasses.dataclass(frozen=True)
    class Hparams(PruningHparams):
        """SNIP's settings: how many training batches its gradient averages over."""

        snip_batches: int = field(1, "--pruning_strategy=snip: training batches (of the run's batch size, from step "
                                     "k on) the loss gradient is averaged over.")

        def __post_init__(self):
            super().__post_init__()
            _positive("snip_batches", self.snip_batches)

    def scores(self, model, batches, paths):
        return saliency.snip_scores(model, batches, paths=paths)


@register("grasp")
class GraspPruning(OneShotPruner):
    """GraSP's score at W_k (Wang et al., ICLR 2020), over ``grasp_batches`` batches."""

    name = "grasp"
    needs_batches = True
    batches_field = "grasp_batches"

    @dataclasses.dataclass(frozen=True)
    class Hparams(PruningHparams):
        """GraSP's settings: how many training batches its gradient averages over."""

        grasp_batches: int = field(1, "--pruning_strategy=grasp: training batches (of the run's batch size, from "
                                      "step k on) the gradient and its Hessian product are averaged over.")

        def __post_init__(self):
            super().__post_init__()
            _positive("grasp_batches", self.grasp_batches)

    def scores(self, model, batches, paths):
        return saliency.grasp_scores(model, batches, paths=paths)


@register("synflow")
class SynflowPruning(OneShotPruner):
    """SynFlow at W_k (Tanaka et al., NeurIPS 2020): data-free, ``synflow_rounds`` rounds
    of exponentially shrinking density to the level's."""

    name = "synflow"

    @dataclasses.dataclass(frozen=True)
    class Hparams(PruningHparams):
        """SynFlow's settings: its pruning rounds (the paper's 100)."""

        synflow_rounds: int = field(100, "--pruning_strategy=synflow: rounds of re-scoring to each level's density "
                                         "(the paper: 100).")

        def __post_init__(self):
            super().__post_init__()
            _positive("synflow_rounds", self.synflow_rounds)

    def check_model(self, model) -> None:
        reason = saliency.synflow_refusal(model)
        if reason:
            raise SaliencyError(f"SynFlow cannot score this model: {reason}")

    def mask_at(self, model, batches, level, paths, structure=None):
        structure = structure or self
        density, rates = structure.level_density(level)
        return saliency.synflow_mask(model, density, rounds=self.hparams.synflow_rounds, paths=paths,
                                     scope=structure.hparams.scope, layer_rates=rates,
                                     structure=lambda scores, alive, e: structure.from_scores(scores, level, alive, e))


def _variables(model, paths) -> Mapping[str, object]:
    found = {v.path: v for v in model.weights}
    return {p: found[p] for p in paths}


def _positive(name: str, value) -> None:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise HparamError(f"PruningHparams.{name}={value!r} is invalid: expected an integer >= 1.",
                          owner="PruningHparams", field=name, value=value)

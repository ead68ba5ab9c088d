"""Every seed tflth derives from a run's seeds, in one place.

A run has three seeds (``TrainingHparams``: ``seed`` for the initialisation,
``data_order_seed`` and ``augment_seed`` for the SGD noise). Everything else is derived
from them here, so no two derived streams collide by accident:

* replicate ``r`` of an experiment: every seed + ``r`` (:func:`replicate`);
* level L's controls (a new initialisation, a random mask): ``seed + 100003 + L``
  (:func:`control_seed`);
* copy ``a``/``b`` of stability pair ``p``: the replicate's data-order and/or augment
  seed + ``7919 * j``, ``j = 1 + 2p`` for ``a`` and ``2 + 2p`` for ``b`` (:func:`copy_seeds`).
"""

from __future__ import annotations

import dataclasses

from tflth.hparams import NOISES, RunHparams, TrainingHparams

__all__ = ["CONTROL_SEED_OFFSET", "COPY_SEED_OFFSET", "replicate", "control_seed", "copy_seeds", "copy_init_seed"]

CONTROL_SEED_OFFSET = 100_003  # a control's seed = training seed + offset + level
COPY_SEED_OFFSET = 7919  # copy j of a pair draws seeds = replicate seeds + offset * j


def replicate(run: RunHparams, r: int) -> RunHparams:
    """Replicate ``r``: init, data-order and augmentation seeds each + r."""
    t = run.training
    return dataclasses.replace(run, training=dataclasses.replace(
        t, seed=t.seed + r, data_order_seed=t.data_order_seed + r, augment_seed=t.augment_seed + r))


def control_seed(training_seed: int, level: int) -> int:
    """The seed of level ``level``'s controls (new initialisation, random mask)."""
    return int(training_seed) + CONTROL_SEED_OFFSET + int(level)


def copy_seeds(training: TrainingHparams, pair: int, which: str, noise: str) -> tuple[int, int]:
    """(data_order_seed, augment_seed) of copy ``which`` (a/b) of ``pair``; ``training``
    holds the replicate's seeds. ``noise`` (one of :data:`tflth.hparams.NOISES`) says
    which of the two differ between copies."""
    if noise not in NOISES:
        raise ValueError(f"noise={noise!r} is invalid: expected one of {list(NOISES)}.")
    j = 1 + 2 * pair + (0 if which == "a" else 1)
    d, a = training.data_order_seed, training.augment_seed
    if noise in ("data_order_and_augment", "data_order", "init"):
        d += COPY_SEED_OFFSET * j
    if noise in ("data_order_and_augment", "augment", "init"):
        a += COPY_SEED_OFFSET * j
    return d, a


def copy_init_seed(training: TrainingHparams, pair: int) -> int:
    """The initialisation seed of copy b of ``pair`` under ``noise="init"`` (copy a starts
    from the replicate's own initialisation): the replicate's seed + offset × j, j as in
    :func:`copy_seeds`."""
    return int(training.seed) + COPY_SEED_OFFSET * (2 + 2 * pair)

"""How each network of an experiment starts: IMP's resets and the controls, by name.

Every network tflth trains after the dense one starts from some state built from a few
checkpoints: W_k (the dense run's full state at the rewind step k) and, for IMP level
L, the previous level's final weights. A *reset* says how IMP's level-L network starts
from them; a *control* says which mask a baseline network uses and how it starts. Both
are small registered classes, so a new reset or control is one class here and nothing
else changes (the IMP runner, the stability sweeps and the report list them from
:data:`RESETS` and :data:`CONTROLS`).

Resets (``--reset``):

* ``rewind`` — weights W_k ⊙ m, optimizer state and schedule position of step k
  (k = 0 is the original lottery ticket);
* ``lr_rewind`` — the previous level's final weights ⊙ m, optimizer state and schedule
  from k (Renda et al. 2020);
* ``finetune`` — the previous level's final weights ⊙ m, T − k more steps at the final
  learning rate with a fresh optimizer (:meth:`Reset.training`).

Controls (``--controls``), trained exactly like IMP's level L except for what they control:

* ``random_reinit`` — level L's mask, weights from a new initialisation (seed
  :func:`tflth.seeds.control_seed`), optimizer state and schedule of step k;
* ``random_prune`` — a random mask of the pruning strategy's structure (any weights;
  N:M groups; whole channels) with level L's per-variable survivor counts (seed
  :func:`tflth.seeds.control_seed`; :meth:`tflth.pruning.Pruner.random_like`), weights W_k ⊙ m.

Step k's optimizer (``--rewind_optimizer``, :data:`REWIND_OPTIMIZERS`): every start above
that takes "optimizer state and schedule of step k" (``rewind``, ``lr_rewind``,
``random_reinit``, ``random_prune``) does it through :meth:`Start.load_rewind`, which
either restores the dense run's optimizer state at k (``state``: momentum, Adam's
moments and step count, as that run had them) or starts a fresh optimizer at k
(``fresh``: every slot zero, the schedule and data order at step k, Adam's bias
correction counting from k, as open_lth's lottery runner does). ``finetune`` starts a
fresh optimizer anyway. Stability copies from W_k continue one training and keep the full
state (their :class:`Start` has the default, ``state``).

The masks themselves are applied by the caller after ``start`` (``tflth.masking.apply_masks``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from tflth.hparams import REWIND_OPTIMIZERS, field_error, field_note
from tflth.seeds import control_seed
from tflth.training import checkpoint

__all__ = ["Start", "Reset", "Control", "RESETS", "CONTROLS", "REWIND_OPTIMIZERS", "register_reset",
           "register_control", "get_reset", "get_control", "check_names"]


@dataclasses.dataclass(frozen=True)
class Start:
    """The checkpoints a network can start from (paths; ``previous_final`` is ``None`` at level 0)."""

    rewind: str  # W_k: the dense run's full state at the rewind step
    level: int
    seed: int  # the training seed of the replicate
    previous_final: str | None = None
    rewind_optimizer: str = "state"  # a name in REWIND_OPTIMIZERS

    def __post_init__(self):
        if self.rewind_optimizer not in REWIND_OPTIMIZERS:
            raise ValueError(f"Start.rewind_optimizer={self.rewind_optimizer!r} is invalid: expected one of "
                             f"{list(REWIND_OPTIMIZERS)}.")

    def load_rewind(self, trainer) -> int:
        """Put ``trainer`` at W_k: its weights, step k (schedule and data position) and step
        k's optimizer as :attr:`rewind_optimizer` says; returns k. The one way a start
        takes W_k's state."""
        k = trainer.load_checkpoint(self.rewind)
        if self.rewind_optimizer == "fresh":
            trainer.reset_optimizer(k)
        return k


class Reset:
    """How IMP's level-L network starts. Subclasses set ``name`` and :meth:`start`."""

    name = ""

    def start(self, trainer, start: Start) -> None:
        """Put ``trainer`` (its model and optimizer) in the level's start state."""
        raise NotImplementedError

    def training(self, training, final_lr: float, k: int, end: int):
        """The ``TrainingHparams`` the level trains with (default: the run's own)."""
        return training


class Control:
    """A baseline on level L's mask. Subclasses set ``name``, :meth:`mask` and :meth:`start`."""

    name = ""

    def mask(self, level_mask: Mapping[str, np.ndarray], start: Start, strategy=None) -> dict[str, np.ndarray]:
        """The control's mask from level L's IMP mask and the experiment's pruning
        ``strategy`` (a :class:`tflth.pruning.Strategy`, for controls that keep its structure)."""
        return dict(level_mask)

    def start(self, trainer, start: Start) -> None:
        start.load_rewind(trainer)


#: Registered resets and controls by name, in the order they were registered.
RESETS: dict[str, Reset] = {}
CONTROLS: dict[str, Control] = {}


def register_reset(cls):
    RESETS[cls.name] = cls()
    return cls


def register_control(cls):
    CONTROLS[cls.name] = cls()
    return cls


def _lookup(registry: dict[str, Any], kind: str, name: str):
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"Unknown {kind} {name!r}: expected one of {list(registry)}.") from None


def get_reset(name: str) -> Reset:
    return _lookup(RESETS, "reset", name)


def get_control(name: str) -> Control:
    return _lookup(CONTROLS, "control", name)


def _final_weights(start: Start) -> dict[str, np.ndarray]:
    return checkpoint.load(start.previous_final)[1]


@register_reset
class Rewind(Reset):
    name = "rewind"

    def start(self, trainer, start):
        start.load_rewind(trainer)


@register_reset
class LearningRateRewind(Reset):
    name = "lr_rewind"

    def start(self, trainer, start):
        start.load_rewind(trainer)
        trainer.set_weights(_final_weights(start))


@register_reset
class Finetune(Reset):
    name = "finetune"

    def start(self, trainer, start):
        trainer.set_weights(_final_weights(start))
        trainer.reset_optimizer(0)

    def training(self, training, final_lr, k, end):
        return dataclasses.replace(training, lr=final_lr, milestones=(), warmup="0it",
                                   training_steps=f"{end - k}it")


@register_control
class RandomReinit(Control):
    name = "random_reinit"

    def start(self, trainer, start):
        start.load_rewind(trainer)
        fresh = trainer.build_model(control_seed(start.seed, start.level))
        trainer.set_weights({v.path: v.numpy() for v in fresh.variables})


@register_control
class RandomPrune(Control):
    name = "random_prune"

    def mask(self, level_mask, start, strategy=None):
        seed = control_seed(start.seed, start.level)
        if strategy is None:
            from tflth.pruning.pruners import random_like  # noqa: PLC0415

            return random_like(level_mask, seed=seed)
        return strategy.random_like(level_mask, seed=seed)


def check_names(reset: str | None = None, controls=(), owner: str = "LotteryHparams") -> None:
    """``reset`` and ``controls`` name registered resets and controls, else an
    :class:`~tflth.hparams.HparamError` naming ``<owner>.reset`` / ``<owner>.controls``."""
    if reset is not None and reset not in RESETS:
        raise field_error(owner, "reset", repr(reset), f"is invalid: expected one of {list(RESETS)}.")
    for c in controls:
        if c not in CONTROLS:
            raise field_note(owner, "controls", f"unknown control {c!r}: expected some of {list(CONTROLS)}.", c)

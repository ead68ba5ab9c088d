"""Hyperparameters as data: frozen dataclasses, validated, serialised to JSON.

Every run writes its hyperparameters to ``hparams.json`` and is stored in a directory
named by a stable hash of them (:func:`run_hash`), so the same command resumes or
reports instead of training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from tflth import steps

__all__ = [
    "HparamError",
    "DatasetHparams",
    "ModelHparams",
    "TrainingHparams",
    "PruningHparams",
    "RunHparams",
    "run_hash",
    "OPTIMIZERS",
]

OPTIMIZERS = ("sgd", "adam", "adamw")


class HparamError(ValueError):
    """A hyperparameter has a value outside what it accepts."""


def _fail(cls, field, value, expected):
    raise HparamError(f"{cls}.{field}={value!r} is invalid: expected {expected}.")


def _check_step(cls, field, value):
    try:
        steps.parse(value)
    except steps.StepError as e:
        raise HparamError(f"{cls}.{field}: {e}") from None


@dataclasses.dataclass(frozen=True)
class DatasetHparams:
    """Which data, and whether to augment it (``None``: the dataset's standard choice)."""

    name: str = "mnist"
    augment: bool | None = None

    def __post_init__(self):
        if not self.name:
            _fail("DatasetHparams", "name", self.name, "a dataset name")


@dataclasses.dataclass(frozen=True)
class ModelHparams:
    """Which network; ``width`` 0 keeps the model's default width."""

    name: str = "lenet_300_100"
    width: int = 0

    def __post_init__(self):
        if self.width < 0:
            _fail("ModelHparams", "width", self.width, "an integer >= 0 (0 = model default)")


@dataclasses.dataclass(frozen=True)
class TrainingHparams:
    """Optimisation, schedule, length and the three seeds (init, data order, augmentation).

    ``weight_decay`` is coupled L2 (added to the gradient of every trainable variable,
    as PyTorch's SGD/Adam do and open_lth uses) for ``sgd`` and ``adam``, and
    decoupled for ``adamw``. The learning rate is multiplied by ``gamma`` at each
    milestone and ramps linearly from ``lr / warmup`` to ``lr`` over the warmup steps.
    """

    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    milestones: tuple[str, ...] = ()
    gamma: float = 0.1
    warmup: str = "0it"
    batch_size: int = 128
    training_steps: str = "1ep"
    seed: int = 0
    data_order_seed: int = 0
    augment_seed: int = 0

    def __post_init__(self):
        c = "TrainingHparams"
        object.__setattr__(self, "milestones", tuple(self.milestones))
        if self.optimizer not in OPTIMIZERS:
            _fail(c, "optimizer", self.optimizer, f"one of {list(OPTIMIZERS)}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            _fail(c, "lr", self.lr, "a finite number > 0")
        if not 0 <= self.momentum < 1:
            _fail(c, "momentum", self.momentum, "a number in [0, 1)")
        if self.nesterov and self.momentum == 0:
            _fail(c, "nesterov", self.nesterov, "False unless momentum > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            _fail(c, "weight_decay", self.weight_decay, "a number >= 0")
        if not 0 < self.gamma <= 1:
            _fail(c, "gamma", self.gamma, "a number in (0, 1]")
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            _fail(c, "batch_size", self.batch_size, "an integer >= 1")
        for name in ("warmup", "training_steps"):
            _check_step(c, name, getattr(self, name))
        for m in self.milestones:
            _check_step(c, "milestones", m)
        if steps.parse(self.training_steps) == (0, 0):
            _fail(c, "training_steps", self.training_steps, "a positive length such as 24000it or 2ep")
        for name in ("seed", "data_order_seed", "augment_seed"):
            v = getattr(self, name)
            if int(v) != v or v < 0:
                _fail(c, name, v, "an integer >= 0")


@dataclasses.dataclass(frozen=True)
class PruningHparams:
    """Magnitude pruning of a fraction of the *remaining* weights per level.

    ``layer_rates`` overrides the fraction for layers whose path matches a glob pattern
    (first match wins), e.g. ``(("output", 0.1),)``; a rate of 0 excludes the layer.
    """

    fraction: float = 0.2
    scope: str = "global"
    layer_rates: tuple[tuple[str, float], ...] = ()

    def __post_init__(self):
        c = "PruningHparams"
        rates = self.layer_rates.items() if isinstance(self.layer_rates, dict) else self.layer_rates
        object.__setattr__(self, "layer_rates", tuple((str(p), float(r)) for p, r in rates))
        if not 0 < self.fraction < 1:
            _fail(c, "fraction", self.fraction, "a number in (0, 1)")
        if self.scope not in ("global", "layerwise"):
            _fail(c, "scope", self.scope, "'global' or 'layerwise'")
        for pattern, rate in self.layer_rates:
            if not 0 <= rate < 1:
                _fail(c, "layer_rates", f"{pattern}:{rate}", "rates in [0, 1)")


@dataclasses.dataclass(frozen=True)
class RunHparams:
    """Everything that determines a training run's result."""

    dataset: DatasetHparams = DatasetHparams()
    model: ModelHparams = ModelHparams()
    training: TrainingHparams = TrainingHparams()

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunHparams":
        return cls(
            dataset=DatasetHparams(**d.get("dataset", {})),
            model=ModelHparams(**d.get("model", {})),
            training=TrainingHparams(**d.get("training", {})),
        )


def to_dict(hp) -> dict[str, Any]:
    """Any hparams dataclass as plain JSON-able data."""
    out = {}
    for f in dataclasses.fields(hp):
        v = getattr(hp, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        out[f.name] = v
    return out


def run_hash(*parts) -> str:
    """A stable 12-hex-digit hash of hyperparameter dataclasses (or dicts)."""
    data = [to_dict(p) if dataclasses.is_dataclass(p) else p for p in parts]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]

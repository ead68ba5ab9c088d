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
    "field_error",
    "field_note",
    "DatasetHparams",
    "ModelHparams",
    "TrainingHparams",
    "PruningHparams",
    "RunHparams",
    "run_hash",
    "legacy_hash",
    "identity",
    "non_default",
    "defaults_dict",
    "OPTIMIZERS",
    "JIT_MODES",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
#: How the training steps run (TrainingHparams.jit_compile): see tflth.training.compiled.
JIT_MODES = ("off", "step", "chunk")


class HparamError(ValueError):
    """A hyperparameter has a value outside what it accepts.

    ``owner`` and ``field`` name the dataclass field at fault (``"PruningHparams"``,
    ``"fraction"``) when there is one, and the message then begins with
    ``<owner>.<field>``; a command-line front end replaces that reference by the flag
    that sets the field (``tflth.cli.flags``), the library itself knows no flags.
    """

    def __init__(self, message: str, owner: str | None = None, field: str | None = None, value=None):
        super().__init__(message)
        self.owner, self.field, self.value = owner, field, value

    @property
    def reference(self) -> str | None:
        """``"<owner>.<field>"`` when the error names a field, else ``None``."""
        return f"{self.owner}.{self.field}" if self.owner and self.field else None


def field_error(owner: str, field: str, value, detail: str) -> HparamError:
    """``HparamError("<owner>.<field>=<value> <detail>")`` naming the field (a front end
    replaces the reference by its flag). ``value`` is shown as given (``str``)."""
    return HparamError(f"{owner}.{field}={value} {detail}", owner=owner, field=field, value=value)


def field_note(owner: str, field: str, detail: str, value=None) -> HparamError:
    """``HparamError("<owner>.<field>: <detail>")`` naming the field."""
    return HparamError(f"{owner}.{field}: {detail}", owner=owner, field=field, value=value)


def _fail(cls, field, value, expected):
    raise HparamError(f"{cls}.{field}={value!r} is invalid: expected {expected}.", owner=cls, field=field, value=value)


def _check_step(cls, field, value):
    try:
        steps.parse(value)
    except steps.StepError as e:
        raise HparamError(f"{cls}.{field}: {e}", owner=cls, field=field, value=value) from None


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
    """Which network, and which of its variables a run masks.

    ``name`` is a zoo name (``tflth.models.names()``) or a reference to the user's own
    model factory, ``package.module:function`` or ``path/to/file.py:function``
    (:func:`tflth.models.factory`). ``width`` 0 keeps a zoo model's default width;
    ``options`` are a zoo model's other integer options as ``(name, value)`` pairs (a dict
    is accepted), e.g. ``(("depth", 2), ("dim", 32))`` for ``vit_tiny``
    (:func:`tflth.models.options`), kept sorted by name. ``prune`` holds globs over
    variable paths choosing the masked variables (:func:`tflth.masking.select`); empty: every maskable kernel of a zoo model, and
    every maskable kernel but the output layer's of a user's model.
    """

    name: str = "lenet_300_100"
    width: int = 0
    prune: tuple[str, ...] = ()
    options: tuple[tuple[str, int], ...] = ()

    def __post_init__(self):
        items = self.options.items() if isinstance(self.options, dict) else self.options
        options = []
        for item in items:
            name, value = item if len(item) == 2 else (item, None)
            if not isinstance(name, str) or not name or isinstance(value, bool) or not isinstance(value, int) \
                    or value <= 0:
                _fail("ModelHparams", "options", f"{name}={value}", "name=value with a positive integer value, "
                      "e.g. depth=2")
            options.append((name, int(value)))
        if len({n for n, _ in options}) != len(options):
            _fail("ModelHparams", "options", ",".join(f"{n}={v}" for n, v in options), "each option once")
        object.__setattr__(self, "options", tuple(sorted(options)))
        if isinstance(self.prune, str):
            object.__setattr__(self, "prune", (self.prune,))
        object.__setattr__(self, "prune", tuple(str(p) for p in self.prune))
        if self.width < 0:
            _fail("ModelHparams", "width", self.width, "an integer >= 0 (0 = model default)")
        for pattern in self.prune:
            if not pattern.lstrip("+!"):
                _fail("ModelHparams", "prune", pattern, "globs over variable paths, e.g. '*/kernel', '+*/bias', '!output'")


@dataclasses.dataclass(frozen=True)
class TrainingHparams:
    """Optimisation, schedule, length and the three seeds (init, data order, augmentation).

    ``weight_decay`` is coupled L2 (added to the gradient of every trainable variable,
    as PyTorch's SGD/Adam do and open_lth uses) for ``sgd`` and ``adam``, and
    decoupled for ``adamw``. The learning rate is multiplied by ``gamma`` at each
    milestone and ramps linearly from ``lr / warmup`` to ``lr`` over the warmup steps.
    ``deterministic`` runs TensorFlow's ops deterministically
    (``tf.config.experimental.enable_op_determinism()``, for the whole process): reruns
    and resumes are then bit-identical. It changes results, so it is part of a run's name:
    a deterministic and a non-deterministic run never share (or resume) a directory.
    ``jit_compile`` says how the steps run (:mod:`tflth.training.compiled`): ``off``
    (a ``tf.function`` loop over a ``tf.data`` iterator), ``step`` (each step one XLA
    program) or ``chunk`` (each chunk of many steps one XLA program that builds its
    batches from the resident training set). XLA rounds differently, so a compiled run
    is another run: ``step`` and ``chunk`` are part of the run's name, ``off`` is not.
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
    deterministic: bool = False
    jit_compile: str = "off"

    def __post_init__(self):
        c = "TrainingHparams"
        if self.jit_compile not in JIT_MODES:
            _fail(c, "jit_compile", self.jit_compile, f"one of {list(JIT_MODES)}")
        if not isinstance(self.deterministic, bool):
            _fail(c, "deterministic", self.deterministic, "True or False")
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
    """How each IMP level prunes: a registered strategy and its settings.

    ``strategy`` names a registered pruning strategy (:data:`tflth.pruning.REGISTRY`):

    * ``magnitude`` / ``random`` (unstructured): ``fraction`` of the *remaining* weights
      per level, one threshold across layers (``scope="global"``) or per layer
      (``"layerwise"``);
    * ``nm`` (N:M): level L keeps, in every group of M consecutive weights along each
      kernel's input axis, the N of largest magnitude, N from ``nm[L-1]`` (N kept of M,
      NVIDIA's spelling: ``((2, 4), (1, 4))`` is 2:4 at level 1, 1:4 at level 2; one M
      for all levels, N decreasing). An input axis that is not a multiple of M is an
      error unless ``nm_pad``: then the last group is padded with pruned zeros;
    * ``channels``: ``fraction`` of the remaining output units (channels) of each layer
      per level, by the ``channel_norm`` (``"l1"`` or ``"l2"``) of their weights, with
      the next layer's matching input slices.

    ``layer_rates`` overrides the fraction for variables whose path matches a glob
    pattern (first match wins), e.g. ``(("output", 0.1),)``; a rate of 0 excludes the
    variable (the only rate ``nm`` takes).
    """

    fraction: float = 0.2
    scope: str = "global"
    layer_rates: tuple[tuple[str, float], ...] = ()
    strategy: str = "magnitude"
    nm: tuple[tuple[int, int], ...] = ()
    nm_pad: bool = False
    channel_norm: str = "l1"

    def __post_init__(self):
        c = "PruningHparams"
        rates = self.layer_rates.items() if isinstance(self.layer_rates, dict) else self.layer_rates
        object.__setattr__(self, "layer_rates", tuple((str(p), float(r)) for p, r in rates))
        if not 0 < self.fraction < 1:
            _fail(c, "fraction", self.fraction, "a number in (0, 1)")
        if self.scope not in ("global", "layerwise"):
            _fail(c, "scope", self.scope, "'global' or 'layerwise'")
        if not isinstance(self.strategy, str) or not self.strategy:
            _fail(c, "strategy", self.strategy, "the name of a registered pruning strategy")  # checked by tflth.pruning
        for pattern, rate in self.layer_rates:
            if not 0 <= rate < 1:
                _fail(c, "layer_rates", f"{pattern}:{rate}", "rates in [0, 1)")
        object.__setattr__(self, "nm", tuple(_nm_pair(p) for p in self.nm))
        if self.nm:
            text = ",".join(f"{n}:{m}" for n, m in self.nm)
            for n, m in self.nm:
                if not 1 <= n < m:
                    _fail(c, "nm", text, "N:M patterns with 1 <= N < M (N weights kept of every M)")
            if len({m for _, m in self.nm}) > 1:
                _fail(c, "nm", text, "one M for every level (N shrinks at fixed M, e.g. 4:8,2:8,1:8)")
            ns = [n for n, _ in self.nm]
            if any(b >= a for a, b in zip(ns, ns[1:])):
                _fail(c, "nm", text, "N decreasing from level to level (nested masks, e.g. 2:4,1:4)")
        if self.channel_norm not in ("l1", "l2"):
            _fail(c, "channel_norm", self.channel_norm, "'l1' or 'l2'")


def _nm_pair(pattern) -> tuple[int, int]:
    """``(n, m)`` from ``(n, m)`` or ``"n:m"``."""
    if isinstance(pattern, str):
        n, sep, m = pattern.partition(":")
        try:
            return int(n), int(m)
        except ValueError:
            _fail("PruningHparams", "nm", pattern, "N:M with whole numbers, e.g. 2:4")
    n, m = pattern
    if int(n) != n or int(m) != m:
        _fail("PruningHparams", "nm", f"{n}:{m}", "N:M with whole numbers, e.g. 2:4")
    return int(n), int(m)


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
    """Any hparams dataclass as plain JSON-able data (every field)."""
    out = {}
    for f in dataclasses.fields(hp):
        v = getattr(hp, f.name)
        if dataclasses.is_dataclass(v):
            v = to_dict(v)
        elif isinstance(v, tuple):
            v = [list(x) if isinstance(x, tuple) else x for x in v]
        out[f.name] = v
    return out


def defaults_dict(cls) -> dict[str, Any]:
    """:func:`to_dict` of ``cls()`` (every field at its default)."""
    return to_dict(cls())


def non_default(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that differ from ``defaults``, recursively.

    A key absent from ``data`` counts as its default, and a nested dict that differs in
    nothing is left out, so adding a field with a default changes nothing here.
    """
    out = {}
    for key, value in data.items():
        if key in defaults:
            default = defaults[key]
            if isinstance(value, dict) and isinstance(default, dict):
                value = non_default(value, default)
                if not value:
                    continue
            elif value == default:
                continue
        out[key] = value
    return out


def identity(hp) -> dict[str, Any]:
    """What names a run of ``hp`` (an hparams dataclass): the fields whose value differs
    from that field's default, recursively (a nested group at its defaults is left out)."""
    out = {}
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        if dataclasses.is_dataclass(value):
            sub = identity(value)
            if sub:
                out[f.name] = sub
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = to_dict(hp)[f.name]
    return out


def run_hash(*parts) -> str:
    """A stable 12-hex-digit hash of identities (see :func:`identity`) or plain dicts.

    Dataclasses are reduced to their non-default values first, so a run's name survives
    the addition of a hyperparameter with a default (and a changed default renames runs:
    see BUILD.md). Dicts are hashed as given; build them with :func:`non_default`.
    """
    data = [identity(p) if dataclasses.is_dataclass(p) else p for p in parts]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def legacy_hash(*dicts: dict[str, Any]) -> str:
    """The name tflth 0.1 gave a run: a hash of every field of its hparams as dicts
    restricted to tflth 0.1's fields (:data:`V1_FIELDS`). Used to find, and reuse, run
    directories made before run names left out default values."""
    data = [_restrict_v1(d) for d in dicts]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: The fields of each hparams group as tflth 0.1 hashed them (keys of the JSON dicts).
V1_FIELDS = {
    "dataset": ("name", "augment"),
    "model": ("name", "width"),
    "training": ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "milestones", "gamma", "warmup",
                 "batch_size", "training_steps", "seed", "data_order_seed", "augment_seed"),
    "pruning": ("fraction", "scope", "layer_rates"),
}


def _restrict_v1(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if key in V1_FIELDS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in V1_FIELDS[key]}
        elif isinstance(value, dict):
            value = _restrict_v1(value)
        out[key] = value
    return out

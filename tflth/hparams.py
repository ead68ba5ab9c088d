"""Hyperparameters as data: frozen dataclasses, validated, serialised to JSON.

This module is the schema: what each setting is, its default, what it accepts and the
flag that sets it. Every run writes its hyperparameters to ``hparams.json``; how a run
directory is named from them is :mod:`tflth.runs.naming`'s.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from tflth import steps
from tflth.errors import InputError

__all__ = [
    "HparamError",
    "field_error",
    "field_note",
    "DatasetHparams",
    "ModelHparams",
    "TrainingHparams",
    "PruningHparams",
    "RunHparams",
    "defaults_dict",
    "OPTIMIZERS",
    "JIT_MODES",
    "DISTRIBUTION_STRATEGIES",
    "REWIND_OPTIMIZERS",
    "NOISES",
    "ALIGNS",
    "BN_MODES",
    "LotteryHparams",
    "StabilityHparams",
    "field",
    "parse_levels",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
#: How the training steps run (TrainingHparams.jit_compile): see tflth.training.compiled.
JIT_MODES = ("off", "step", "chunk")
#: tf.distribute strategies by name (JobSettings.strategy): see tflth.training.strategy.
DISTRIBUTION_STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")
#: What a start from step k does with step k's optimizer (LotteryHparams.rewind_optimizer).
REWIND_OPTIMIZERS = {
    "state": "step k's optimizer state as the dense run had it (momentum, Adam's moments and step count)",
    "fresh": "a fresh optimizer at step k: every slot zero, the learning-rate schedule (and data order) at "
             "step k, Adam's bias correction counting from k (open_lth's lottery runner)",
}
#: What differs between a stability pair's two copies (StabilityHparams.noise).
NOISES = ("data_order_and_augment", "data_order", "augment", "none", "init")
ALIGNS = ("none", "weights", "activations")
#: BatchNorm along an interpolation path (StabilityHparams.bn): see tflth.stability.evaluate.
BN_MODES = ("recompute", "interpolate")
#: The LMC paper evaluates 30 evenly spaced α in [0, 1] (StabilityHparams.interpolation_points).
PAPER_POINTS = 30
#: Each point costs a full evaluation per pair (StabilityHparams.interpolation_points).
MAX_INTERPOLATION_POINTS = 1000


def field(default=dataclasses.MISSING, help: str = "", *, flag: str | bool | None = None, preset: bool = False,
          choices=None, registry: str | None = None, item=None, text=None, default_factory=dataclasses.MISSING):
    """A schema field: its default, its help, and how a command line sets it.

    The binaries generate their flags from this metadata (:mod:`tflth.cli.flags`), so
    each setting is declared once, here.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: what the setting means (the flag's help).
        flag: the flag's name (default: the field's name); ``False``: no flag.
        preset: the flag's default is "the preset's (or the model's paper default)",
            so it defaults to ``None`` and only a given value overrides the field.
        choices: the accepted values (an enum flag; a list flag checks each item).
        registry: the accepted values are the names in a registry of tflth's, which the
            command line resolves (``"resets"``, ``"controls"``, ``"pruning_strategies"``,
            ``"one_shot"``).
        item: for a tuple field, parses one comma-separated item of the flag
            (``"2:4"`` -> ``(2, 4)``); a bad item raises :class:`HparamError`.
        text: ``(parse, format)`` between the whole field value and the flag's one string
            (``"1/4"`` <-> ``(1, 4)``), for a tuple the flag spells as one word.
    """
    metadata = {"help": help, "flag": flag, "preset": preset, "choices": choices, "registry": registry,
                "item": item, "text": text}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


class HparamError(InputError):
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

    name: str = field("mnist", "Dataset name (tflth.data.names()).", flag="dataset",
                      preset=" Default: the preset's, or the model's.")
    augment: bool | None = field(None, "Override the dataset's standard augmentation.", preset=True)
    task: str = field("", "Your own task instead of a named dataset: package.module:function or "
                          "path/to/file.py:function returning a tflth.tasks.Task (training and evaluation data, "
                          "loss, metrics, the stability barrier's metric); its reference names the runs.")

    def __post_init__(self):
        if not self.name:
            _fail("DatasetHparams", "name", self.name, "a dataset name")
        if self.task and (not isinstance(self.task, str) or ":" not in self.task):
            _fail("DatasetHparams", "task", self.task, "package.module:function or path/to/file.py:function")

    @property
    def label(self) -> str:
        """What the data is called in labels and logs: the task's reference, else the dataset's name."""
        return self.task or self.name


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

    name: str = field("lenet_300_100", "A zoo model (tflth.models.names()) or your own: package.module:function or "
                      "path/to/file.py:function, called as function(seed=, input_shape=, num_classes=) and returning "
                      "a built Keras model of class logits.", flag="model", preset=" Default: the preset's.")
    width: int = field(0, "Model width override (ResNets only); 0 keeps the default.", preset=True)
    prune: tuple[str, ...] = field((), "Which variables are masked: globs over variable paths (or layer paths), "
                                   "'+glob' to add any trainable variable (biases, norms, your add_weight), '!glob' "
                                   "to leave some out. Default: every maskable kernel (Dense, EinsumDense, Conv*, "
                                   "Embedding, RNN kernels) of a zoo model; of your own model, all but the output "
                                   "layer's.", preset=True)
    options: tuple[tuple[str, int], ...] = field((), "A zoo model's options as name=value, e.g. dim=32,depth=2 for "
                                                 "vit_tiny (tflth.models.options(name); the width has --width).",
                                                 flag="model_options", preset=True, item=lambda t: _option(t))

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

    optimizer: str = field("sgd", "The optimizer.", preset=True, choices=OPTIMIZERS)
    lr: float = field(0.1, "Base learning rate.", preset=True)
    momentum: float = field(0.0, "SGD momentum.", preset=True)
    nesterov: bool = field(False, "Nesterov momentum.", preset=True)
    weight_decay: float = field(0.0, "L2 (sgd/adam, coupled) or decoupled (adamw) weight decay.", preset=True)
    milestones: tuple[str, ...] = field((), "Steps (e.g. 32000it,48000it) where the LR is multiplied by gamma.",
                                        preset=True)
    gamma: float = field(0.1, "LR decay factor at each milestone.", preset=True)
    warmup: str = field("0it", "Linear LR warmup length (step notation).", preset=True)
    batch_size: int = field(128, "Global batch size.", preset=True)
    training_steps: str = field("1ep", "Training length: 500it, 2ep, 2ep100it.", preset=True)
    seed: int = field(0, "Initialisation seed.", preset=True)
    data_order_seed: int = field(0, "Data-order seed (SGD noise).", preset=True)
    augment_seed: int = field(0, "Augmentation seed.", preset=True)
    deterministic: bool = field(False, "TensorFlow op determinism (bit-identical reruns and resumes); part of the "
                                "run's name, so a deterministic run never resumes a non-deterministic one.",
                                preset=True)
    jit_compile: str = field("off", "How the training steps run: off (a tf.function loop over a tf.data iterator), "
                             "step (each step one XLA program), chunk (each chunk of steps one XLA program that builds "
                             "its batches from the resident training set; in-memory datasets, one replica). Part of "
                             "the run's name unless off; docs/speed.md 'Compiled training' says which to use where.",
                             preset=True, choices=JIT_MODES)

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


class _PerStrategy(type):
    """The metaclass of :class:`PruningHparams`: ``PruningHparams(strategy=name, ...)``
    builds the settings class the strategy ``name`` registered (:meth:`PruningHparams.register`).

    A setting that belongs to another strategy is dropped at its default (files written
    when every strategy's settings were one record hold them all) and refused otherwise,
    naming the strategy it belongs to, so a flag that would have no effect never passes.
    """

    def __call__(cls, *args, **kwargs):
        base = cls._base()
        names = [f.name for f in dataclasses.fields(base)]
        if len(args) > len(names):
            raise TypeError(f"{base.__name__} takes at most {len(names)} positional arguments ({', '.join(names)})")
        given = dict(zip(names, args), **kwargs)
        strategy = given.get("strategy", base.__dataclass_fields__["strategy"].default)
        variant = base._VARIANTS.get(strategy, base) if isinstance(strategy, str) else base
        own = {f.name for f in dataclasses.fields(variant)}
        kept = {}
        for name, value in given.items():
            if name in own:
                kept[name] = value
                continue
            owner, default = base._owner_of(name)
            if owner is None:
                raise HparamError(f"PruningHparams.{name}: unknown setting; expected some of "
                                  f"{sorted(base.every_default())}.", owner="PruningHparams", field=name, value=value)
            if (tuple(value) if isinstance(value, list) else value) == default:
                continue
            raise HparamError(f"PruningHparams.{name}={_text(value)} has no effect with strategy {strategy!r}; "
                              f"expected the default {default!r} (it is a setting of strategy {owner!r}).",
                              owner="PruningHparams", field=name, value=_text(value))
        return super(_PerStrategy, variant).__call__(**kept)


def _text(value) -> str:
    """A setting as a flag spells it: ``((2, 4), (1, 4))`` -> ``2:4,1:4``."""
    if isinstance(value, (tuple, list)):
        return ",".join(":".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v) for v in value)
    return str(value)


@dataclasses.dataclass(frozen=True)
class PruningHparams(metaclass=_PerStrategy):
    """How each IMP level prunes: a registered strategy and its settings.

    ``strategy`` names a registered pruning strategy (:data:`tflth.pruning.REGISTRY`):
    ``magnitude`` / ``random`` (unstructured), ``nm`` (N:M), ``channels``; the fields
    here are what every strategy is given: ``fraction`` of the *remaining* weights (or
    units) pruned per level, one threshold across layers (``scope="global"``) or per layer
    (``"layerwise"``), and ``layer_rates``, which overrides the fraction for variables whose
    path matches a glob pattern (first match wins), e.g. ``(("output", 0.1),)``; a rate of 0
    excludes the variable.

    **Each strategy owns its other settings**: a strategy class declares them in a
    dataclass deriving from this one (its ``Hparams``, registered with the strategy by
    :func:`tflth.pruning.register`), e.g. ``nm`` and ``nm_pad`` for N:M, ``channel_norm``
    for channels. ``PruningHparams(strategy="nm", nm=((2, 4), (1, 4)))`` builds the N:M
    strategy's settings (an instance of its class, and of this one); a setting of another
    strategy is an error unless at its default. Their flags are generated from their
    fields like every other setting's, and a run's name is made of the non-default values
    of its strategy's fields, so a new strategy's settings rename no existing run.
    """

    fraction: float = field(0.2, "Fraction of remaining weights pruned per level.", flag="pruning_fraction",
                            preset=True)
    scope: str = field("global", "One global threshold or per layer.", flag="pruning_scope", preset=True,
                       choices=("global", "layerwise"))
    layer_rates: tuple[tuple[str, float], ...] = field(
        (), "Per-layer rate overrides 'glob:rate', e.g. output:0.1,conv*:0 (0 excludes a layer).", preset=True,
        item=lambda t: _layer_rate(t))
    strategy: str = field("magnitude", "How a level chooses what to prune: magnitude (unstructured), random, nm "
                          "(N:M, --nm), channels (whole units/filters by norm); or once per level at the rewind "
                          "step, by a score of W_k: magnitude_at_k, snip, grasp, synflow (tflth.pruning.one_shot).",
                          flag="pruning_strategy",
                          registry="pruning_strategies")

    #: The settings class of each strategy that has settings of its own, by strategy name.
    _VARIANTS: typing.ClassVar[dict[str, type]] = {}

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

    @classmethod
    def _base(cls) -> type:
        return PruningHparams

    @classmethod
    def register(cls, strategy: str, settings: type) -> None:
        """Make ``settings`` (a dataclass deriving from this one) the settings class of
        ``strategy``; its own fields must not be another strategy's."""
        if not (isinstance(settings, type) and issubclass(settings, PruningHparams)
                and dataclasses.is_dataclass(settings)):
            raise TypeError(f"{settings!r}: a strategy's settings are a dataclass deriving from PruningHparams")
        for name in _own_fields(settings):
            owner, _ = cls._owner_of(name)
            if owner not in (None, strategy):
                raise TypeError(f"{settings.__qualname__}.{name}: already a setting of strategy {owner!r}")
        PruningHparams._VARIANTS[strategy] = settings

    @classmethod
    def variants(cls) -> dict[str, type]:
        """The settings class of each strategy that has settings of its own."""
        return dict(PruningHparams._VARIANTS)

    @classmethod
    def _owner_of(cls, name: str) -> tuple[str | None, Any]:
        """``(strategy, default)`` of a strategy's own setting ``name`` (``(None, None)``: none has it)."""
        for strategy, variant in PruningHparams._VARIANTS.items():
            if name in _own_fields(variant):
                return strategy, variant.__dataclass_fields__[name].default
        return None, None

    @classmethod
    def every_default(cls) -> dict[str, Any]:
        """Every strategy's settings at their defaults, as one dict (:func:`to_dict` form):
        what a stored record is compared against (:func:`defaults_dict`)."""
        out = to_dict(PruningHparams())
        for variant in PruningHparams._VARIANTS.values():
            for name in _own_fields(variant):
                f = variant.__dataclass_fields__[name]
                out[name] = _plain(f.default)
        return out


def _own_fields(settings: type) -> list[str]:
    """The fields ``settings`` declares beyond :class:`PruningHparams`'."""
    common = {f.name for f in dataclasses.fields(PruningHparams)}
    return [f.name for f in dataclasses.fields(settings) if f.name not in common]


def _option(text: str) -> tuple[str, int]:
    """``"depth=2"`` -> ``("depth", 2)`` (one ``ModelHparams.options`` item)."""
    return _name_value(text, "=", int, "ModelHparams", "options", "name=integer, e.g. depth=2")


def _layer_rate(text: str) -> tuple[str, float]:
    """``"output:0.1"`` -> ``("output", 0.1)`` (one ``PruningHparams.layer_rates`` item)."""
    return _name_value(text, ":", float, "PruningHparams", "layer_rates", "'layer_glob:rate', e.g. output:0.1")


def _name_value(text: str, sep: str, convert, owner: str, name: str, expected: str):
    """``"<name><sep><value>"`` -> ``(name, convert(value))``, split at the last ``sep``
    (a glob may hold one); a bad item raises :class:`HparamError` naming ``owner.name``."""
    key, found, value = str(text).rpartition(sep)
    try:
        number = convert(value)
    except ValueError:
        number = None
    if not found or not key.strip() or number is None:
        raise HparamError(f"{owner}.{name} entry {text!r} is invalid: expected {expected}.", owner=owner, field=name,
                          value=text)
    return key.strip(), number


def parse_levels(text: str, owner: str = "StabilityHparams", name: str = "levels") -> tuple[int, ...]:
    """IMP levels written as ``"8"`` or ``"0,4,8"`` -> ``(8,)``, ``(0, 4, 8)``: the one
    parser of levels (errors name ``<owner>.<name>``)."""
    out = []
    for item in str(text).split(","):
        try:
            out.append(int(item.strip()))
        except ValueError:
            raise HparamError(f"{owner}.{name}={text} is invalid: expected whole numbers, e.g. 8 or 0,4,8.",
                              owner=owner, field=name, value=text) from None
    return tuple(out)


def _last_level(text: str) -> int:
    levels = parse_levels(text, "LotteryHparams")
    if len(levels) != 1:
        raise HparamError(f"LotteryHparams.levels={text} is invalid: expected one number, the last level "
                          "(IMP trains every level up to it).", owner="LotteryHparams", field="levels", value=text)
    return levels[0]


def _compare_levels(text: str) -> tuple[int, ...]:
    return () if not str(text).strip() else parse_levels(text, "LotteryHparams", "compare_levels")


def _join_levels(levels) -> str:
    return ",".join(map(str, levels))


def _shard(text: str) -> tuple[int, int]:
    parts = str(text).split("/")
    try:
        i, n = (int(v) for v in parts)
    except ValueError:
        raise HparamError(f"StabilityHparams.shard={text} is invalid: expected I/N, e.g. 1/4.",
                          owner="StabilityHparams", field="shard", value=text) from None
    return i, n


def _float(owner: str, name: str):
    def parse(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            raise HparamError(f"{owner}.{name}: {text!r} is invalid: expected a number.", owner=owner, field=name,
                              value=text) from None
    return parse


@dataclasses.dataclass(frozen=True)
class LotteryHparams:
    """An IMP experiment: how many levels, where survivors restart, the controls, the replicates.

    ``levels`` rounds of prune → reset → train after the dense level 0; ``rewind_step``
    is k (step notation; ``0it`` is the original lottery ticket); ``reset`` and
    ``controls`` name registered resets and controls (:mod:`tflth.lottery.starts`, which
    checks the names); ``replicates`` independent initialisations (every seed + r);
    ``rewind_optimizer`` what every start from step k does with step k's optimizer
    (:data:`REWIND_OPTIMIZERS`).
    """

    levels: int = field(8, "Pruning levels after the dense level 0, density ≈ (1-fraction)^levels.",
                        preset=" Default: 8, or the number of --nm patterns.", text=(_last_level, str))
    rewind_step: str = field("0it", "Rewind point k (step notation); 0it = original lottery ticket.", preset=True)
    reset: str = field("rewind", "How survivors restart each level.", registry="resets")
    controls: tuple[str, ...] = field((), "Controls on each level's mask.", registry="controls")
    replicates: int = field(1, "Independent initialisations (init, data-order and augment seeds + r).")
    one_shot: tuple[str, ...] = field(
        (), "One-shot methods trained beside IMP in the same experiment: each scores the dense run's W_k once per "
        "level (of --compare_levels) and prunes it to IMP's density with the experiment's pruning structure "
        "(unstructured, N:M or channels), then trains from W_k; the --controls run on their masks too. Some of "
        "magnitude_at_k, snip, grasp, synflow (each with its own settings' defaults).", registry="one_shot")
    compare_levels: tuple[int, ...] = field(
        (), "The levels at which the --controls and the --one_shot methods train, e.g. 3,7,11,15 (default: every "
        "level); IMP itself trains every level up to --levels.", text=(lambda t: _compare_levels(t), _join_levels))
    rewind_optimizer: str = field(
        "state", "What every start from step k (--reset=rewind or lr_rewind, and the --controls) does with step k's "
        "optimizer: state = the dense run's saved state (momentum, Adam's moments and step count); fresh = every "
        "slot zero, learning-rate schedule and data order at step k, Adam's bias correction counting from k "
        "(open_lth's lottery runner).", choices=tuple(REWIND_OPTIMIZERS))

    def __post_init__(self):
        c = "LotteryHparams"
        object.__setattr__(self, "controls", tuple(self.controls))
        object.__setattr__(self, "one_shot", tuple(self.one_shot))
        object.__setattr__(self, "compare_levels", tuple(self.compare_levels))
        if int(self.levels) != self.levels or self.levels < 0:
            raise field_error(c, "levels", self.levels, "is invalid: expected an integer >= 0.")
        if len(set(self.one_shot)) != len(self.one_shot):
            raise field_error(c, "one_shot", ",".join(self.one_shot), "names a method twice; expected each once.")
        wrong = [v for v in self.compare_levels if isinstance(v, bool) or int(v) != v or not 1 <= v <= self.levels]
        if wrong or len(set(self.compare_levels)) != len(self.compare_levels):
            raise field_error(c, "compare_levels", _join_levels(self.compare_levels), "is invalid: expected "
                              f"distinct levels from 1 to LotteryHparams.levels ({self.levels}), e.g. 3,7.")
        _check_step(c, "rewind_step", self.rewind_step)
        for name in ("reset", "rewind_optimizer"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _fail(c, name, getattr(self, name), "a name")
        if int(self.replicates) != self.replicates or self.replicates < 1:
            raise field_error(c, "replicates", self.replicates, "is invalid: expected an integer >= 1.")
        if self.rewind_optimizer not in REWIND_OPTIMIZERS:
            raise field_error(c, "rewind_optimizer", repr(self.rewind_optimizer),
                              f"is invalid: expected one of {list(REWIND_OPTIMIZERS)}.")


@dataclasses.dataclass(frozen=True)
class StabilityHparams:
    """What a stability sweep trains and how it analyses each pair.

    ``rewind_steps`` (step notation; empty: the experiments' rewind steps, in per-k mode
    only, see :class:`tflth.stability.StabilityJob`), ``pairs`` per initialisation,
    ``replicates`` (initialisations: seeds + r as in IMP), ``levels`` of the experiment
    (``(0,)``: the dense network) and ``controls`` on their masks say *which* units exist;
    ``noise`` how the two copies differ (``none`` makes them identical: a check of the
    instrument); the rest is the analysis: ``bn`` (``recompute`` or ``interpolate``),
    ``interpolation_points`` over ``alpha_range``, ``train_examples`` (the fixed training
    subset of the train curve; all of it when the set is smaller), ``bn_batches``
    (training batches BN statistics are recomputed over); ``shard`` = (i, n), 1 ≤ i ≤ n.
    """

    rewind_steps: tuple[str, ...] = field(("0it",), "Rewind steps k whose stability is measured, e.g. "
                                          "0it,100it,500it (with several --experiment: theirs).")
    pairs: int = field(1, "Pairs of copies (different SGD noise) per initialisation and k.")
    replicates: int = field(1, "Independent initialisations (init, data-order and augment seeds + r).")
    levels: tuple[int, ...] = field((0,), "The levels of --experiment whose masks are analysed, e.g. 0,4,8 "
                                    "(0: the dense network).", text=(parse_levels, lambda v: ",".join(map(str, v))))
    controls: tuple[str, ...] = field((), "Controls on each level's mask.", registry="controls")
    noise: str = field("data_order_and_augment", "What differs between the two copies (none: identical copies, a "
                       "check of the instrument; init: two networks from different initialisations, with different "
                       "data orders and augmentation too, from step 0).", choices=NOISES)
    align: str = field("none", "Before comparing the two copies, reorder copy b's hidden units to match copy a "
                       "(weights: Git Re-Basin's weight matching; activations: correlation of unit activations on "
                       "--align_examples training examples); the pair is measured before and after. Needs SciPy "
                       "(pip install 'tflth[align]').", choices=ALIGNS)
    align_examples: int = field(1000, "--align=activations: training examples (unaugmented, the first ones) the "
                                "activations are read on.")
    bn: str = field("recompute", "BatchNorm along the line: recompute the statistics exactly at every point, or "
                    "interpolate them with the weights.", choices=BN_MODES)
    interpolation_points: int = field(PAPER_POINTS, "Evenly spaced α in --alpha_range (endpoints included).")
    alpha_range: tuple[float, float] = field((0.0, 1.0), "low,high of the α grid (low <= 0, high >= 1).",
                                             item=_float("StabilityHparams", "alpha_range"))
    train_examples: int = field(10_000, "Size of the fixed training subset of the train curve (0: test curve only).")
    bn_batches: int = field(20, "Training batches (unaugmented) BatchNorm statistics are recomputed over.")
    shard: tuple[int, int] = field((1, 1), "I/N: run every N-th unit of work, the I-th of each N (1 <= I <= N), so N "
                                   "processes or hosts split a sweep.", text=(_shard, lambda v: "/".join(map(str, v))))

    def __post_init__(self):
        c = "StabilityHparams"
        for name in ("rewind_steps", "levels", "controls", "alpha_range", "shard"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for s in self.rewind_steps:  # empty: the experiments' (per-k mode; StabilityJob.prepare checks)
            _check_step(c, "rewind_steps", s)
        for name in ("pairs", "replicates", "interpolation_points", "bn_batches"):
            value = getattr(self, name)
            low = 2 if name == "interpolation_points" else 1
            if int(value) != value or value < low:
                _invalid(c, name, value, f"an integer >= {low}" + (" (the two endpoints at least)" if low == 2 else ""))
        if self.interpolation_points > MAX_INTERPOLATION_POINTS:
            _invalid(c, "interpolation_points", self.interpolation_points,
                     f"at most {MAX_INTERPOLATION_POINTS}: each point is one evaluation of the test set (and of the "
                     f"train subset) per pair, and the paper's curves use {PAPER_POINTS}")
        if int(self.train_examples) != self.train_examples or self.train_examples < 0:
            _invalid(c, "train_examples", self.train_examples, "an integer >= 0 (0: no train curve)")
        if not self.levels or any(int(v) != v or v < 0 for v in self.levels) or len(set(self.levels)) != len(
                self.levels):
            _invalid(c, "levels", ",".join(map(str, self.levels)), "distinct integers >= 0, e.g. 0,4,8")
        if self.noise not in NOISES:
            _invalid(c, "noise", self.noise, f"one of {list(NOISES)}")
        if self.bn not in BN_MODES:
            _invalid(c, "bn", self.bn, f"one of {list(BN_MODES)}")
        if self.align not in ALIGNS:
            _invalid(c, "align", self.align, f"one of {list(ALIGNS)}")
        if int(self.align_examples) != self.align_examples or self.align_examples < 1:
            _invalid(c, "align_examples", self.align_examples, "an integer >= 1")
        low, high = self.alpha_range if len(self.alpha_range) == 2 else (None, None)
        if low is None or not (math.isfinite(low) and math.isfinite(high) and low <= 0.0 < 1.0 <= high):
            _invalid(c, "alpha_range", ",".join(map(str, self.alpha_range)),
                     "two finite numbers low,high with low <= 0 and high >= 1")
        i, n = self.shard if len(self.shard) == 2 else (0, 0)
        if not (int(n) == n and int(i) == i and 1 <= i <= n):
            _invalid(c, "shard", "/".join(map(str, self.shard)), "I/N with 1 <= I <= N, e.g. 1/4")

    def analysis(self) -> dict:
        """The settings a pair's analysis depends on (a pair analysed otherwise is redone)."""
        out = {"bn": self.bn, "interpolation_points": self.interpolation_points,
               "alpha_range": list(self.alpha_range), "train_examples": self.train_examples,
               "bn_batches": self.bn_batches}
        if self.align != "none":  # absent otherwise: pairs analysed before alignment existed stay valid
            out["align"] = self.align
            if self.align == "activations":
                out["align_examples"] = self.align_examples
        return out


def _invalid(owner, name, value, expected):
    raise field_error(owner, name, value, f"is invalid: expected {expected}.")


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
        """The inverse of :meth:`to_dict`. Every group must be there (a missing one is not
        silently its defaults) and hold only known fields; else :class:`HparamError`."""
        return cls(**{name: from_dict(group, d.get(name) if isinstance(d, dict) else None, name)
                      for name, group in _GROUPS.items()})


def from_dict(cls, d, where: str = ""):
    """``cls(**d)`` for an hparams dataclass read from a file: ``d`` must be a dict of
    ``cls``'s fields (missing ones take their defaults, as when a field was added after
    the file was written); anything else raises :class:`HparamError` naming ``where``."""
    name = where or cls.__name__
    if not isinstance(d, dict):
        raise HparamError(f"{name}: expected the {cls.__name__} settings (a JSON object), found {d!r}.")
    known = (set(PruningHparams.every_default()) if issubclass(cls, PruningHparams)
             else {f.name for f in dataclasses.fields(cls)})
    unknown = sorted(set(d) - known)
    if unknown:
        raise HparamError(f"{name}: unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(known)}.")
    return cls(**d)


_GROUPS = {"dataset": DatasetHparams, "model": ModelHparams, "training": TrainingHparams}


def to_dict(hp) -> dict[str, Any]:
    """Any hparams dataclass as plain JSON-able data (every field)."""
    return {f.name: _plain(getattr(hp, f.name)) for f in dataclasses.fields(hp)}


def _plain(value):
    """One field's value as JSON-able data: a nested group as a dict, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return to_dict(value)
    if isinstance(value, tuple):
        return [list(x) if isinstance(x, tuple) else x for x in value]
    return value


def defaults_dict(cls) -> dict[str, Any]:
    """:func:`to_dict` of ``cls()`` (every field at its default); pruning settings hold
    every strategy's defaults (:meth:`PruningHparams.every_default`), so a stored record
    is compared field by field whichever strategy wrote it."""
    return _every_default(cls())


def _every_default(hp) -> dict[str, Any]:
    if isinstance(hp, PruningHparams):
        return dict(PruningHparams.every_default(), **to_dict(hp))
    out = to_dict(hp)
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _every_default(value)
    return out

"""The one flags module every tflth binary shares.

Hyperparameter flags default to ``None``, meaning "keep the preset's (or the model's
paper default) value"; a value given on the command line overrides that one field.

A binary's module defines its flags (``define_*_flags``), builds its job in
``job_from_flags`` and calls :func:`run` with its ``main``, which

* lists the flags defined by tflth's modules under ``--help`` (exit 0), with their help
  and defaults, and nothing of TensorFlow's or absl's own (``--helpfull`` has those);
* turns a bad flag into one line on stderr and exit status 2 (:func:`fail`,
  :func:`parse_flags_or_fail`, :func:`prepare_or_fail`), naming the flag the user typed
  even when a hyperparameter dataclass found the problem (:func:`hparam_errors_as_flags`);
* turns an error while running (diverged loss, damaged state file, full disk, unusable
  checkpoint or mask) into one line on stderr and exit status 1 (:func:`exit_on_run_error`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import sys

from absl import app, flags
from absl import logging as absl_logging

from tflth import _startup
from tflth import data as data_lib
from tflth import models, presets
from tflth.hparams import JIT_MODES, DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.training.strategy import DISTRIBUTION_STRATEGIES, get_strategy

FLAGS = flags.FLAGS

# TrainingHparams fields settable by flag (flag name == field name).
_TRAINING_FIELDS = [f.name for f in dataclasses.fields(TrainingHparams)]

_FROM_PRESET = " Default: from --preset or --model."


def define_training_flags() -> None:
    """Flags of ``bin/train.py`` (and, through it, ``bin/prune.py``). Idempotent."""
    if "preset" in FLAGS:
        return
    keep = _FROM_PRESET
    flags.DEFINE_string("preset", None, f"Paper settings by name: {', '.join(presets.names())}.")
    flags.DEFINE_string("model", None, "A zoo model (tflth.models.names()) or your own: package.module:function or "
                        "path/to/file.py:function, called as function(seed=, input_shape=, num_classes=) and "
                        "returning a built Keras model of class logits; default: the preset's.")
    flags.DEFINE_list("prune", None, "Which variables are masked: globs over variable paths (or layer paths), "
                      "'+glob' to add any trainable variable (biases, norms, your add_weight), '!glob' to leave "
                      "some out. Default: every maskable kernel (Dense, EinsumDense, Conv*, Embedding, RNN kernels) "
                      "of a zoo model; of your own model, all but the output layer's.")
    flags.DEFINE_list("model_options", None, "A zoo model's options as name=value, e.g. dim=32,depth=2 for "
                      "vit_tiny (tflth.models.options(name); the width has --width)." + keep)
    flags.DEFINE_string("dataset", None, "Dataset name (tflth.data.names()); default: the preset's or model's.")
    flags.DEFINE_string("data_dir", None, "IDX directory, .npz file or tfds data_dir.")
    flags.DEFINE_string("output_dir", "runs", "Where run directories (named by hparam hash) go.")
    flags.DEFINE_enum("augment", None, ["true", "false"], "Override the dataset's standard augmentation." + keep)
    flags.DEFINE_integer("width", None, "Model width override (ResNets only); 0 keeps the default." + keep)
    flags.DEFINE_string("optimizer", None, "sgd, adam or adamw." + keep)
    flags.DEFINE_float("lr", None, "Base learning rate." + keep)
    flags.DEFINE_float("momentum", None, "SGD momentum." + keep)
    flags.DEFINE_boolean("nesterov", None, "Nesterov momentum." + keep)
    flags.DEFINE_float("weight_decay", None, "L2 (sgd/adam, coupled) or decoupled (adamw) weight decay." + keep)
    flags.DEFINE_list("milestones", None, "Steps (e.g. 32000it,48000it) where the LR is multiplied by gamma." + keep)
    flags.DEFINE_float("gamma", None, "LR decay factor at each milestone." + keep)
    flags.DEFINE_string("warmup", None, "Linear LR warmup length (step notation)." + keep)
    flags.DEFINE_integer("batch_size", None, "Global batch size." + keep)
    flags.DEFINE_string("training_steps", None, "Training length: 500it, 2ep, 2ep100it." + keep)
    flags.DEFINE_integer("seed", None, "Initialisation seed." + keep)
    flags.DEFINE_integer("data_order_seed", None, "Data-order seed (SGD noise)." + keep)
    flags.DEFINE_integer("augment_seed", None, "Augmentation seed." + keep)
    flags.DEFINE_list("save_steps", [], "Steps whose full state is kept (rewind points), step notation.")
    flags.DEFINE_string("eval_every", "1ep", "Evaluate (metrics.jsonl) every this many steps.")
    flags.DEFINE_string("checkpoint_every", "1ep", "Checkpoint (for resuming) every this many steps.")
    flags.DEFINE_enum("strategy", "auto", list(DISTRIBUTION_STRATEGIES), "tf.distribute strategy (auto: mirrored over "
                      "all GPUs when there are 2 or more, else the default).")
    flags.DEFINE_boolean("deterministic", None, "TensorFlow op determinism (bit-identical reruns and resumes); part "
                         "of the run's name, so a deterministic run never resumes a non-deterministic one."
                         " Default: off.")
    flags.DEFINE_enum("jit_compile", None, list(JIT_MODES), "How the training steps run: off (a tf.function loop "
                      "over a tf.data iterator), step (each step one XLA program), chunk (each chunk of steps one XLA "
                      "program that builds its batches from the resident training set; in-memory datasets, one "
                      "replica). Part of the run's name unless off; README 'Compiled training' says which to use "
                      "where." + keep)


def base_preset(flag_values=FLAGS) -> presets.Preset | None:
    """The preset named by --preset, else the paper default of --model (if any)."""
    if flag_values.preset:
        return presets.get(flag_values.preset)
    if flag_values.model:
        if models.is_reference(flag_values.model):
            return None  # the user's own model: RunHparams' defaults unless flags say otherwise
        try:
            models.default_dataset(flag_values.model)
        except ValueError as e:
            raise HparamError(f"--model: {e}") from None
        return presets.for_model(flag_values.model)
    raise HparamError("Give --preset (one of " + ", ".join(presets.names()) + ") or --model.")


# Which flag sets each hyperparameter dataclass field (where the field name is not the flag's).
_FIELD_FLAGS: dict[tuple[str, str], str] = {
    ("DatasetHparams", "name"): "dataset",
    ("DatasetHparams", "augment"): "augment",
    ("ModelHparams", "name"): "model",
    ("ModelHparams", "width"): "width",
    ("ModelHparams", "prune"): "prune",
    ("ModelHparams", "options"): "model_options",
    ("PruningHparams", "fraction"): "pruning_fraction",
    ("PruningHparams", "scope"): "pruning_scope",
    ("PruningHparams", "layer_rates"): "layer_rates",
    ("PruningHparams", "strategy"): "pruning_strategy",
    **{("TrainingHparams", f): f for f in _TRAINING_FIELDS},
    # fields whose flag has the field's name
    **{(owner, f): f for owner, fields in {
        "LotteryHparams": ("levels", "rewind_step", "reset", "controls", "replicates", "rewind_optimizer"),
        "PruningHparams": ("nm", "nm_pad", "channel_norm"),
        "StabilityHparams": ("rewind_steps", "pairs", "replicates", "levels", "controls", "noise", "bn",
                             "interpolation_points", "alpha_range", "train_examples", "bn_batches", "shard"),
        "TrainJob": ("save_steps", "eval_every", "checkpoint_every", "output_dir"),
        "LotteryJob": ("eval_every", "checkpoint_every", "output_dir"),
        "StabilityJob": ("eval_every", "checkpoint_every", "experiment", "output_dir"),
        "DataSource": ("data_dir",),
    }.items() for f in fields},
}


def field_flag(cls: str, field: str, flag: str) -> None:
    """Declare that ``--flag`` sets ``cls.field`` (a hyperparameter dataclass's name and
    field), so errors about that field name the flag (see :func:`hparam_errors_as_flags`)."""
    _FIELD_FLAGS[(cls, field)] = flag


def flag_message(error: HparamError) -> str:
    """The error's message with its leading ``Owner.field`` (``HparamError.reference``)
    replaced by the flag that sets that field: ``PruningHparams.fraction=1.5 is invalid:
    ...`` -> ``--pruning_fraction=1.5 is invalid: ...``; unchanged for other errors."""
    message, reference = str(error), getattr(error, "reference", None)
    flag = _FIELD_FLAGS.get((error.owner, error.field)) if reference else None
    if flag and message.startswith(reference):
        return f"--{flag}" + message[len(reference):]
    return message


@contextlib.contextmanager
def hparam_errors_as_flags():
    """Within the block, an :class:`HparamError` naming a dataclass field is raised again
    naming the flag that sets it (:func:`flag_message`)."""
    try:
        yield
    except HparamError as e:
        message = flag_message(e)
        if message == str(e):
            raise
        raise HparamError(message) from None


def run_hparams(flag_values=FLAGS) -> RunHparams:
    """RunHparams from the preset/model defaults overridden by the given flags."""
    preset = base_preset(flag_values)
    base = preset.run if preset else RunHparams()
    model_name = flag_values.model or base.model.name
    if models.is_reference(model_name):
        if not (flag_values.dataset or preset):
            raise HparamError(f"--model={model_name} is your own model: give --dataset (one of {data_lib.names()}).")
        default_dataset = base.dataset.name
    else:
        try:
            default_dataset = models.default_dataset(model_name)
        except ValueError as e:
            raise HparamError(f"--model: {e}") from None
    dataset_name = flag_values.dataset or (base.dataset.name if preset else default_dataset)
    if dataset_name not in data_lib.names():
        raise HparamError(f"--dataset={dataset_name!r} is unknown: expected one of {data_lib.names()}.")
    overrides = {f: flag_values[f].value for f in _TRAINING_FIELDS if flag_values[f].value is not None}
    if "milestones" in overrides:
        overrides["milestones"] = tuple(overrides["milestones"])
    augment = None if flag_values.augment is None else flag_values.augment == "true"
    width = flag_values.width if flag_values.width is not None else base.model.width
    prune = tuple(flag_values.prune) if flag_values.prune is not None else base.model.prune
    options = (base.model.options if flag_values.model_options is None
               else parse_model_options(flag_values.model_options))
    with hparam_errors_as_flags():
        training = dataclasses.replace(base.training, **overrides)
        return RunHparams(DatasetHparams(dataset_name, augment), ModelHparams(model_name, width, prune, options),
                          training)


def parse_model_options(items) -> tuple[tuple[str, int], ...]:
    """``["dim=32", "depth=2"]`` -> ``(("dim", 32), ("depth", 2))``; a bad entry is an
    :class:`HparamError` naming ``--model_options``."""
    out = []
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            number = int(value)
        except ValueError:
            number = None
        if not sep or not name.strip() or number is None:
            raise HparamError(f"--model_options entry {item!r} is invalid: expected name=integer, e.g. depth=2.")
        out.append((name.strip(), number))
    return tuple(out)


def _prog() -> str:
    return sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "tflth"


def _error_exit(message: str, status: int) -> None:
    """``<prog>: error: <message>`` as one line on stderr, then exit ``status``."""
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    sys.stdout.flush()
    print(f"{_prog()}: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (a usage error)."""
    _startup.discard()
    _error_exit(message, 2)


def parse_flags_or_fail(argv: list[str]) -> list[str]:
    """An absl ``flags_parser`` that reports a bad flag in one line, exit 2."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]}; every option is a --flag.")
    check_finite_floats()
    return rest


def check_finite_floats(flag_values=FLAGS) -> None:
    """Every float flag of tflth's (``--lr``, ``--momentum``, ...) must be finite: ``inf``,
    ``nan`` and values that overflow (``1e400``) fail in one line, exit 2."""
    for flag in own_flags(flag_values):
        if isinstance(flag.parser, flags.FloatParser) and flag.value is not None and not math.isfinite(flag.value):
            fail(f"--{flag.name}={flag.value} is invalid: expected a finite number.")


def flags_are_valid() -> None:
    """Call once the flags have been validated: replays TensorFlow's start-up output."""
    _startup.release()


def _define_experiment_flags() -> None:
    """--levels, --controls, --replicates: shared by bin/prune.py and bin/stability.py."""
    if "levels" in FLAGS:
        return
    from tflth.lottery.starts import CONTROLS

    flags.DEFINE_string("levels", None, "bin/prune.py: pruning levels after the dense level 0, density ≈ "
                        "(1-fraction)^levels (default 8). bin/stability.py: the levels of --experiment whose "
                        "masks are analysed, e.g. 0,4,8 (default 0: the dense network).")
    flags.DEFINE_list("controls", [], f"Controls on each level's mask: {', '.join(CONTROLS)}.")
    flags.DEFINE_integer("replicates", 1, "Independent initialisations (init, data-order and augment seeds + r).")


def define_pruning_flags() -> None:
    """Flags of ``bin/prune.py`` on top of the training flags. Idempotent."""
    define_training_flags()
    _define_experiment_flags()
    if "pruning_fraction" in FLAGS:
        return
    from tflth.pruning import REGISTRY as PRUNING_STRATEGIES
    from tflth.lottery.starts import RESETS, REWIND_OPTIMIZERS

    flags.DEFINE_float("pruning_fraction", None, "Fraction of remaining weights pruned per level." + _FROM_PRESET)
    flags.DEFINE_enum("pruning_scope", None, ["global", "layerwise"], "One global threshold or per layer."
                      + _FROM_PRESET)
    flags.DEFINE_enum("pruning_strategy", "magnitude", list(PRUNING_STRATEGIES), "How a level chooses what to prune: "
                      "magnitude (unstructured), random, nm (N:M, --nm), channels (whole units/filters by norm).")
    flags.DEFINE_list("nm", [], "--pruning_strategy=nm: one N:M per level, N kept of every M inputs (NVIDIA's "
                                "spelling; tfmot's (2, 4) is 2:4), one M, N decreasing, e.g. 2:4,1:4 or 4:8,2:8,1:8. "
                                "--levels defaults to their count.")
    flags.DEFINE_boolean("nm_pad", False, "--pruning_strategy=nm: pad an input axis that is not a multiple of M with "
                                          "pruned zeros (else such a layer is an error).")
    flags.DEFINE_enum("channel_norm", "l1", ["l1", "l2"], "--pruning_strategy=channels: the norm a unit is ranked by.")
    flags.DEFINE_list("layer_rates", None, "Per-layer rate overrides 'glob:rate', e.g. output:0.1,conv*:0 "
                                           "(0 excludes a layer)." + _FROM_PRESET)
    flags.DEFINE_string("rewind_step", None, "Rewind point k (step notation); 0it = original lottery ticket."
                        + _FROM_PRESET)
    flags.DEFINE_enum("reset", "rewind", list(RESETS), "How survivors restart each level.")
    flags.DEFINE_enum("rewind_optimizer", "state", list(REWIND_OPTIMIZERS),
                      "What every start from step k (--reset=rewind or lr_rewind, and the --controls) does with "
                      "step k's optimizer: state = the dense run's saved state (momentum, Adam's moments and step "
                      "count); fresh = every slot zero, learning-rate schedule and data order at step k, Adam's "
                      "bias correction counting from k (open_lth's lottery runner).")


def define_stability_flags() -> None:
    """Flags of ``bin/stability.py`` on top of the training flags. Idempotent."""
    define_training_flags()
    _define_experiment_flags()
    if "rewind_steps" in FLAGS:
        return
    from tflth.stability.evaluate import BN_MODES
    from tflth.stability.sweep import NOISES

    flags.DEFINE_list("rewind_steps", ["0it"], "Rewind steps k whose stability is measured, e.g. 0it,100it,500it "
                      "(with several --experiment: theirs).")
    flags.DEFINE_integer("pairs", 1, "Pairs of copies (different SGD noise) per initialisation and k.")
    flags.DEFINE_string("experiment", None, "An IMP experiment directory (lottery_<hash> of bin/prune.py) whose "
                        "--levels masks (and --controls on them) are analysed at every k; or several, comma-separated, "
                        "that differ only in their --rewind_step: each k then analyses the masks of the one rewound "
                        "to k (per-k mode). Default: the dense network.")
    flags.DEFINE_enum("noise", "data_order_and_augment", list(NOISES), "What differs between the two copies "
                      "(none: identical copies, a check of the instrument).")
    flags.DEFINE_enum("bn", "recompute", list(BN_MODES), "BatchNorm along the line: recompute the statistics "
                      "exactly at every point, or interpolate them with the weights.")
    flags.DEFINE_integer("interpolation_points", 30, "Evenly spaced α in --alpha_range (endpoints included).")
    flags.DEFINE_list("alpha_range", ["0", "1"], "low,high of the α grid (low <= 0, high >= 1).")
    flags.DEFINE_integer("train_examples", 10_000, "Size of the fixed training subset of the train curve "
                         "(0: test curve only).")
    flags.DEFINE_integer("bn_batches", 20, "Training batches (unaugmented) BatchNorm statistics are recomputed over.")
    flags.DEFINE_string("shard", "1/1", "I/N: run every N-th unit of work, the I-th of each N (1 <= I <= N), so N "
                        "processes or hosts split a sweep.")


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise HparamError(f"--{flag}={text} is invalid: expected an integer.") from None


def experiment_dirs(flag_values=FLAGS) -> tuple[str, ...]:
    """The directories of ``--experiment`` (comma-separated; empty entries dropped)."""
    return tuple(e.strip() for e in (flag_values.experiment or "").split(",") if e.strip())


def stability_hparams(flag_values=FLAGS):
    """StabilityHparams from the stability flags. Without ``--rewind_steps``, several
    ``--experiment`` (per-k mode) sweep their own rewind steps (``rewind_steps=()``)."""
    from tflth.stability.sweep import StabilityHparams

    rewind_steps = tuple(flag_values.rewind_steps or ())
    if flag_values["rewind_steps"].using_default_value and len(experiment_dirs(flag_values)) > 1:
        rewind_steps = ()
    levels = tuple(_int("levels", v) for v in (flag_values.levels or "0").split(","))
    try:
        alpha_range = tuple(float(v) for v in flag_values.alpha_range)
    except ValueError:
        raise HparamError(f"--alpha_range={','.join(flag_values.alpha_range)} is invalid: expected two numbers "
                          "low,high.") from None
    shard = flag_values.shard.split("/")
    if len(shard) != 2:
        raise HparamError(f"--shard={flag_values.shard} is invalid: expected I/N, e.g. 1/4.")
    return StabilityHparams(
        rewind_steps=rewind_steps, pairs=flag_values.pairs, replicates=flag_values.replicates,
        levels=levels, controls=tuple(flag_values.controls), noise=flag_values.noise, bn=flag_values.bn,
        interpolation_points=flag_values.interpolation_points, alpha_range=alpha_range,
        train_examples=flag_values.train_examples, bn_batches=flag_values.bn_batches,
        shard=tuple(_int("shard", v) for v in shard))


def parse_layer_rates(items) -> tuple[tuple[str, float], ...]:
    out = []
    for item in items or ():
        pattern, sep, rate = item.rpartition(":")
        try:
            value = float(rate)
        except ValueError:
            value = None
        if not sep or not pattern or value is None:
            raise HparamError(f"--layer_rates entry {item!r} is invalid: expected 'layer_glob:rate', e.g. output:0.1.")
        out.append((pattern, value))
    return tuple(out)


def pruning_hparams(flag_values=FLAGS):
    """PruningHparams and LotteryHparams from the preset overridden by flags."""
    from tflth.hparams import PruningHparams
    from tflth.lottery import LotteryHparams

    preset = base_preset(flag_values)
    base = preset.pruning if preset else PruningHparams()
    with hparam_errors_as_flags():
        pruning = PruningHparams(
            fraction=base.fraction if flag_values.pruning_fraction is None else flag_values.pruning_fraction,
            scope=flag_values.pruning_scope or base.scope,
            strategy=flag_values.pruning_strategy,
            layer_rates=(base.layer_rates if flag_values.layer_rates is None
                         else parse_layer_rates(flag_values.layer_rates)),
            nm=tuple(flag_values.nm),
            nm_pad=flag_values.nm_pad,
            channel_norm=flag_values.channel_norm,
        )
    rewind = flag_values.rewind_step or (preset.rewind_step if preset else "0it")
    default_levels = len(pruning.nm) if pruning.strategy == "nm" and pruning.nm else 8
    levels = default_levels if flag_values.levels is None else _int("levels", flag_values.levels)
    lottery = LotteryHparams(levels=levels, rewind_step=rewind, reset=flag_values.reset,
                             controls=tuple(flag_values.controls), replicates=flag_values.replicates,
                             rewind_optimizer=flag_values.rewind_optimizer)
    return pruning, lottery


class _HeldLogs(logging.Handler):
    """absl log records held back until the command is known to go on."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def replay(self) -> None:
        logger = absl_logging.get_absl_logger()
        for record in self.records:
            logger.handle(record)
        self.records = []


@contextlib.contextmanager
def _held_logs():
    """Within the block, absl log records are held (see :class:`_HeldLogs`), not written."""
    logger, held = absl_logging.get_absl_logger(), _HeldLogs()
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(held)
    try:
        yield held
    finally:
        logger.removeHandler(held)
        logger.propagate = propagate


def prepare_or_fail(job_from_flags):
    """Build the job from flags and validate it against its data, or fail in one line.

    Validation is building the job's ``--strategy`` (which the run then reuses: see
    :func:`get_strategy`) and ``job.prepare()`` (which loads the data and writes nothing). A bad
    value fails with exit status 2; a damaged state file found meanwhile, with 1. Returns
    ``(job, dataset)``; then replays TensorFlow's start-up output and the log lines
    written while validating.
    """
    from tflth.fileio import RunFileError

    with _held_logs() as held:
        try:
            with hparam_errors_as_flags():
                job = job_from_flags()
                if getattr(job, "strategy", None):
                    get_strategy(job.strategy)  # before loading data: it needs none
                dataset = job.prepare()  # logs the data source, say
        except ValueError as e:
            fail(str(e))  # the one line; what was logged meanwhile is dropped
        except RunFileError as e:
            _startup.discard()
            _error_exit(str(e), 1)
    flags_are_valid()
    held.replay()
    return job, dataset


def run_errors() -> tuple[type[BaseException], ...]:
    """What :func:`exit_on_run_error` reports in one line: a diverged run, a damaged state
    file or a full disk (:class:`tflth.fileio.RunFileError`), an unusable checkpoint or mask."""
    from tflth.fileio import RunFileError
    from tflth.masking import MaskError
    from tflth.training.checkpoint import CheckpointError
    from tflth.training.trainer import TrainingDiverged

    return TrainingDiverged, RunFileError, CheckpointError, MaskError


def exit_on_run_error(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; an error of :func:`run_errors` while running exits 1 with
    ``<prog>: error: <message>`` on stderr (one line, no traceback)."""
    try:
        return fn(*args, **kwargs)
    except run_errors() as e:
        _error_exit(str(e), 1)


exit_on_divergence = exit_on_run_error  # its former name


class _HelpFlag(app.HelpFlag):
    """``--help`` / ``-?``: the command's own flags on stdout, exit status 0."""

    doc = ""  # the command's description, set by run()

    def parse(self, arg):
        if self._parse(arg):
            print_help(self.doc)
            sys.exit(0)


class _HelpshortFlag(_HelpFlag):
    NAME = "helpshort"
    SHORT_NAME = None


class _HelpfullFlag(app.HelpfullFlag):
    """``--helpfull``: every flag, TensorFlow's and absl's included; exit status 0."""

    NAME = "helpfull"

    def parse(self, arg):
        if self._parse(arg):
            app.usage(writeto_stdout=True)
            sys.exit(0)


def _own_help_flags(doc: str) -> None:
    """Replace absl's help flags (which exit 1, and print the ``__main__`` docstring) by ours."""
    app.define_help_flags()
    _HelpFlag.doc = doc
    for cls in (_HelpFlag, _HelpshortFlag, _HelpfullFlag):
        old = FLAGS[cls.NAME]
        if isinstance(old, cls):
            continue
        for name in {old.name, old.short_name} - {None}:
            delattr(FLAGS, name)
        flags.DEFINE_flag(cls(), FLAGS, module_name=app.__name__)


def own_flags(flag_values=FLAGS) -> list:
    """The flags tflth's own modules defined (not TensorFlow's or absl's), by name."""
    found = {f.name: f for module, module_flags in flag_values.flags_by_module_dict().items()
             if module.split(".")[0] == "tflth" for f in module_flags}
    return [found[name] for name in sorted(found)]


def print_help(doc: str = "") -> None:
    """Usage, ``doc`` and the key flags of the main module (see :func:`run`) on stdout."""
    text = f"USAGE: {_prog()} [--flag=value ...]\n"
    if doc and doc.strip():
        text += "\n" + doc.strip().replace("``", "") + "\n"
    listing = FLAGS.main_module_help().lstrip("\n")
    header = f"{sys.argv[0]}:\n"  # absl names the main module; the usage line did already
    text += "\nflags:\n" + (listing[len(header):] if listing.startswith(header) else listing) + "\n"
    text += "\n--helpfull also lists TensorFlow's and absl's own flags.\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def run(main, doc: str | None = None) -> None:
    """``absl.app.run(main)`` for a tflth command.

    The flags tflth's modules defined become key flags of the main module (so absl's
    ``--help`` lists them, and only them), ``--help`` prints ``doc`` (default: the
    docstring of ``main``'s module) with them and exits 0, and flag errors are one line,
    exit 2 (:func:`parse_flags_or_fail`).
    """
    if doc is None:
        doc = sys.modules[main.__module__].__doc__ or ""
    for flag in own_flags():
        FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    _own_help_flags(doc)
    app.run(main, flags_parser=parse_flags_or_fail)


def define_export_flags() -> None:
    """Flags of ``bin/export.py`` (``tflth.cli.export``). Idempotent."""
    if "formats" in FLAGS:
        return
    from tflth.export import DEFAULT_FORMATS, FORMATS

    flags.DEFINE_string("source", None, "What to export: a run directory (an IMP level lottery_<hash>/replicate_<r>/"
                        "level_<L>, a control level_<L>/<control>, a stability copy .../copy_a) or a .keras file "
                        "saved with masks. Required.")
    flags.DEFINE_list("formats", list(DEFAULT_FORMATS), f"Export formats, some of {', '.join(FORMATS)}.")
    flags.DEFINE_string("export_dir", None, "Where the files go. Default: <source>/export for a run directory, "
                        "beside the file for a .keras file.")
    flags.DEFINE_string("step", None, "The checkpoint step of a run directory to export (iterations, e.g. 500 or "
                        "500it). Default: its final step (result.json).")

"""The one flags module every tflth binary shares.

Hyperparameter flags default to ``None``, meaning "keep the preset's (or the model's
paper default) value"; a value given on the command line overrides that one field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys

from absl import flags
from absl import logging as absl_logging

from tflth import _startup
from tflth import data as data_lib
from tflth import models, presets
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.training.strategy import STRATEGIES

FLAGS = flags.FLAGS

# TrainingHparams fields settable by flag (flag name == field name).
_TRAINING_FIELDS = [f.name for f in dataclasses.fields(TrainingHparams)]


def define_training_flags() -> None:
    """Flags of ``bin/train.py`` (and, through it, ``bin/prune.py``). Idempotent."""
    if "preset" in FLAGS:
        return
    flags.DEFINE_string("preset", None, f"Paper settings by name: {', '.join(presets.names())}.")
    flags.DEFINE_string("model", None, "Model name (tflth.models.names()); default: the preset's.")
    flags.DEFINE_string("dataset", None, "Dataset name (tflth.data.names()); default: the preset's or model's.")
    flags.DEFINE_string("data_dir", None, "IDX directory, .npz file or tfds data_dir.")
    flags.DEFINE_string("output_dir", "runs", "Where run directories (named by hparam hash) go.")
    flags.DEFINE_enum("augment", None, ["true", "false"], "Override the dataset's standard augmentation.")
    flags.DEFINE_integer("width", None, "Model width override (ResNets/VGG); 0 keeps the default.")
    flags.DEFINE_string("optimizer", None, "sgd, adam or adamw.")
    flags.DEFINE_float("lr", None, "Base learning rate.")
    flags.DEFINE_float("momentum", None, "SGD momentum.")
    flags.DEFINE_boolean("nesterov", None, "Nesterov momentum.")
    flags.DEFINE_float("weight_decay", None, "L2 (sgd/adam, coupled) or decoupled (adamw) weight decay.")
    flags.DEFINE_list("milestones", None, "Steps (e.g. 32000it,48000it) where the LR is multiplied by gamma.")
    flags.DEFINE_float("gamma", None, "LR decay factor at each milestone.")
    flags.DEFINE_string("warmup", None, "Linear LR warmup length (step notation).")
    flags.DEFINE_integer("batch_size", None, "Global batch size.")
    flags.DEFINE_string("training_steps", None, "Training length: 500it, 2ep, 2ep100it.")
    flags.DEFINE_integer("seed", None, "Initialisation seed.")
    flags.DEFINE_integer("data_order_seed", None, "Data-order seed (SGD noise).")
    flags.DEFINE_integer("augment_seed", None, "Augmentation seed.")
    flags.DEFINE_list("save_steps", [], "Steps whose full state is kept (rewind points), step notation.")
    flags.DEFINE_string("eval_every", "1ep", "Evaluate (metrics.jsonl) every this many steps.")
    flags.DEFINE_string("checkpoint_every", "1ep", "Checkpoint (for resuming) every this many steps.")
    flags.DEFINE_enum("strategy", "auto", list(STRATEGIES), "tf.distribute strategy.")
    flags.DEFINE_boolean("deterministic", False, "tf.config.experimental.enable_op_determinism().")


def base_preset(flag_values=FLAGS) -> presets.Preset | None:
    """The preset named by --preset, else the paper default of --model (if any)."""
    if flag_values.preset:
        return presets.get(flag_values.preset)
    if flag_values.model:
        try:
            models.default_dataset(flag_values.model)
        except ValueError as e:
            raise HparamError(f"--model: {e}") from None
        return presets.for_model(flag_values.model)
    raise HparamError("Give --preset (one of " + ", ".join(presets.names()) + ") or --model.")


def run_hparams(flag_values=FLAGS) -> RunHparams:
    """RunHparams from the preset/model defaults overridden by the given flags."""
    preset = base_preset(flag_values)
    base = preset.run if preset else RunHparams()
    model_name = flag_values.model or base.model.name
    try:
        models.default_dataset(model_name)
    except ValueError as e:
        raise HparamError(f"--model: {e}") from None
    dataset_name = flag_values.dataset or (base.dataset.name if preset else models.default_dataset(model_name))
    if dataset_name not in data_lib.names():
        raise HparamError(f"--dataset={dataset_name!r} is unknown: expected one of {data_lib.names()}.")
    overrides = {f: flag_values[f].value for f in _TRAINING_FIELDS if flag_values[f].value is not None}
    if "milestones" in overrides:
        overrides["milestones"] = tuple(overrides["milestones"])
    training = dataclasses.replace(base.training, **overrides)
    augment = None if flag_values.augment is None else flag_values.augment == "true"
    width = flag_values.width if flag_values.width is not None else base.model.width
    return RunHparams(DatasetHparams(dataset_name, augment), ModelHparams(model_name, width), training)


def fail(message: str) -> None:
    """One line on stderr, exit status 2 (a usage error)."""
    _startup.discard()
    prog = sys.argv[0].rsplit("/", 1)[-1] if sys.argv and sys.argv[0] else "tflth"
    print(f"{prog}: error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags_or_fail(argv: list[str]) -> list[str]:
    """An absl ``flags_parser`` that reports a bad flag in one line, exit 2."""
    try:
        rest = FLAGS(argv)
    except flags.Error as e:
        fail(str(e))
    if len(rest) > 1:
        fail(f"unexpected arguments {rest[1:]}; every option is a --flag.")
    return rest


def flags_are_valid() -> None:
    """Call once the flags have been validated: replays TensorFlow's start-up output."""
    _startup.release()


def define_pruning_flags() -> None:
    """Flags of ``bin/prune.py`` on top of the training flags. Idempotent."""
    define_training_flags()
    if "levels" in FLAGS:
        return
    from tflth.lottery import CONTROLS, RESETS

    flags.DEFINE_integer("levels", 8, "Pruning levels after the dense level 0 (density ≈ (1-fraction)^levels).")
    flags.DEFINE_float("pruning_fraction", None, "Fraction of remaining weights pruned per level (default 0.2).")
    flags.DEFINE_enum("pruning_scope", None, ["global", "layerwise"], "One global threshold or per layer.")
    flags.DEFINE_list("layer_rates", None, "Per-layer rate overrides 'glob:rate', e.g. output:0.1,conv*:0 "
                                           "(0 excludes a layer).")
    flags.DEFINE_string("rewind_step", None, "Rewind point k (step notation); 0it = original lottery ticket.")
    flags.DEFINE_enum("reset", "rewind", list(RESETS), "How survivors restart each level.")
    flags.DEFINE_list("controls", [], f"Control experiments on each level's mask: {', '.join(CONTROLS)}.")
    flags.DEFINE_integer("replicates", 1, "Independent IMP runs (init and data-order seeds + r).")


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
    pruning = PruningHparams(
        fraction=base.fraction if flag_values.pruning_fraction is None else flag_values.pruning_fraction,
        scope=flag_values.pruning_scope or base.scope,
        layer_rates=base.layer_rates if flag_values.layer_rates is None else parse_layer_rates(flag_values.layer_rates),
    )
    rewind = flag_values.rewind_step or (preset.rewind_step if preset else "0it")
    lottery = LotteryHparams(levels=flag_values.levels, rewind_step=rewind, reset=flag_values.reset,
                             controls=tuple(flag_values.controls), replicates=flag_values.replicates)
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

    Returns ``(job, dataset)``; then replays TensorFlow's start-up output and the log
    lines written while validating, and applies ``--deterministic``.
    """
    with _held_logs() as held:
        try:
            job = job_from_flags()
            dataset = job.prepare()  # logs the data source, say
        except ValueError as e:
            fail(str(e))  # the one line; what was logged meanwhile is dropped
    flags_are_valid()
    held.replay()
    if FLAGS.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    return job, dataset


def exit_on_divergence(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``; a diverged run (NaN loss) exits 1 with its message."""
    from tflth.training import TrainingDiverged

    try:
        return fn(*args, **kwargs)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)

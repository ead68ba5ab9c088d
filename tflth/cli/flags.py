"""The one flags module every tflth binary shares: flags generated from the schema.

Every setting is declared once, as a field of a frozen dataclass with its help and its
flag in the field's metadata (:func:`tflth.hparams.field`); a binary names the classes
whose fields it takes (:func:`define`), and this module generates their flags and builds
the dataclasses back from them (:func:`values`). Nothing here lists a field by hand.

Hyperparameter flags marked ``preset`` default to ``None``, meaning "keep the preset's (or
the model's paper default) value"; a value given on the command line overrides that one
field. Errors a dataclass raises about a field (``PruningHparams.fraction=1.5 ...``) are
raised again naming the flag that sets it (``--pruning_fraction=1.5 ...``:
:func:`hparam_errors_as_flags`). The process around it (help, exit codes, held logs) is
:mod:`tflth.cli.harness`.
"""

from __future__ import annotations

import dataclasses

from absl import flags

from tflth import data as data_lib
from tflth import models, presets, pruning
from tflth.cli import harness
from tflth.cli.harness import hparam_errors_as_flags
from tflth.hparams import (DatasetHparams, HparamError, LotteryHparams, ModelHparams, PruningHparams, RunHparams,
                           StabilityHparams, TrainingHparams)
from tflth.lottery import LotteryJob, starts
from tflth.stability.sweep import StabilityJob
from tflth.training.job import TrainJob
from tflth.training.kit import JobSettings

FLAGS = flags.FLAGS

_FROM_PRESET = " Default: from --preset or --model."

#: tflth's registries by the name a field's ``registry`` metadata gives (the CLI sits
#: above every registry; the schema below them names them).
REGISTRIES = {"resets": starts.RESETS, "controls": starts.CONTROLS, "pruning_strategies": pruning.REGISTRY,
              "one_shot": {name: pruning.REGISTRY[name] for name in pruning.one_shot_names()}}


def _registry(name: str) -> list[str]:
    return list(REGISTRIES[name])


def _flag_fields(cls):
    """The fields of ``cls`` that have a flag (a help in their metadata and ``flag`` not False)."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help") and f.metadata.get("flag") is not False]


def flag_name(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or f.name


def _kind(f: dataclasses.Field) -> str:
    """``text``, ``list``, ``bool``, ``int``, ``float``, ``enum`` or ``string`` (from the annotation)."""
    meta, annotation = f.metadata, str(f.type)
    if meta.get("text"):
        return "text"
    if annotation.startswith("tuple"):
        return "list"
    base = annotation.split("|")[0].strip()
    if base in ("bool", "int", "float"):
        return base
    return "enum" if (meta.get("choices") or meta.get("registry")) else "string"


def _choices(f: dataclasses.Field) -> list[str] | None:
    meta = f.metadata
    if meta.get("registry"):
        return _registry(meta["registry"])
    return list(meta["choices"]) if meta.get("choices") else None


def _flag_default(f: dataclasses.Field):
    """The flag's default: ``None`` for a preset field, else the field's default in flag form."""
    if f.metadata.get("preset"):
        return None
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return None  # a required field: its absence is the job's error
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    kind = _kind(f)
    if kind == "text":
        return f.metadata["text"][1](value) if value is not None else None
    if kind == "list":
        return [":".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value]
    return value


def _help(f: dataclasses.Field) -> str:
    meta = f.metadata
    text = meta["help"]
    if _kind(f) == "list" and _choices(f):
        text += f" Some of: {', '.join(_choices(f))}."
    preset = meta.get("preset")
    if preset:
        text += preset if isinstance(preset, str) else _FROM_PRESET
    return text


def name_flags(*classes) -> None:
    """Record which flag sets each field of ``classes`` (and of the dataclasses they
    derive from), so errors about a field name its flag (:func:`harness.flag_message`)."""
    for cls in classes:
        for f in _flag_fields(cls):
            for owner in {c.__name__ for c in cls.__mro__ if dataclasses.is_dataclass(c)}:
                harness.FIELD_FLAGS[(owner, f.name)] = flag_name(f)


def define(*classes, flag_values=FLAGS) -> None:
    """Define a flag for every field of ``classes`` that declares one (idempotent: a flag
    already defined, by this binary or another in the same process, is kept)."""
    name_flags(*classes)
    for cls in classes:
        for f in _flag_fields(cls):
            name = flag_name(f)
            if name in flag_values:
                continue
            kind, default, help_text = _kind(f), _flag_default(f), _help(f)
            if kind == "enum":
                flags.DEFINE_enum(name, default, _choices(f), help_text, flag_values=flag_values)
            elif kind == "list":
                flags.DEFINE_list(name, default, help_text, flag_values=flag_values)
            elif kind == "bool":
                flags.DEFINE_boolean(name, default, help_text, flag_values=flag_values)
            elif kind == "int":
                flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
            elif kind == "float":
                flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
            else:
                flags.DEFINE_string(name, default, help_text, flag_values=flag_values)


def _parse(f: dataclasses.Field, value):
    """A flag's value as the field's value (items parsed by the field's ``item``/``text``)."""
    meta, kind = f.metadata, _kind(f)
    if kind == "text":
        return meta["text"][0](value)
    if kind == "list":
        item = meta.get("item")
        return tuple(item(v) for v in value) if item else tuple(value)
    if kind == "string" and value == "" and "None" in str(f.type):
        return None  # --eval_every= : never
    return value


def parse(cls, field_name: str, value):
    """The value of ``cls.field_name`` from its flag's value (a string, or a list for a
    list flag); a bad value raises :class:`HparamError` naming the flag."""
    with hparam_errors_as_flags():
        return _parse({f.name: f for f in dataclasses.fields(cls)}[field_name], value)


def values(cls, flag_values=FLAGS) -> dict:
    """``{field: value}`` from the flags of ``cls``'s fields: every flag with a value
    (preset fields only when given), parsed back into the field's type."""
    out = {}
    with hparam_errors_as_flags():
        for f in _flag_fields(cls):
            flag = flag_values[flag_name(f)]
            if flag.value is None:
                continue
            out[f.name] = _parse(f, flag.value)
    return out


# ----------------------------------------------------------------- the binaries' flags

def _pruning_classes() -> tuple[type, ...]:
    """:class:`PruningHparams` and every registered strategy's own settings class."""
    return (PruningHparams, *PruningHparams.variants().values())


name_flags(DatasetHparams, ModelHparams, TrainingHparams, *_pruning_classes(), LotteryHparams, StabilityHparams,
           JobSettings, TrainJob, LotteryJob, StabilityJob)


def define_training_flags() -> None:
    """Flags of ``bin/train.py``: the run's hyperparameters and the job's settings."""
    _define_preset()
    define(DatasetHparams, ModelHparams, TrainingHparams, TrainJob)


def define_pruning_flags() -> None:
    """Flags of ``bin/prune.py``."""
    _define_preset()
    define(DatasetHparams, ModelHparams, TrainingHparams, *_pruning_classes(), LotteryHparams, JobSettings)



def define_stability_flags() -> None:
    """Flags of ``bin/stability.py``."""
    _define_preset()
    define(DatasetHparams, ModelHparams, TrainingHparams, StabilityHparams, StabilityJob)


def _define_preset() -> None:
    if "preset" not in FLAGS:
        flags.DEFINE_string("preset", None, f"Paper settings by name: {', '.join(presets.names())}.")


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


def run_hparams(flag_values=FLAGS) -> RunHparams:
    """RunHparams from the preset/model defaults overridden by the given flags."""
    preset = base_preset(flag_values)
    base = preset.run if preset else RunHparams()
    model_name = flag_values.model or base.model.name
    if flag_values.task:
        if flag_values.dataset:
            raise HparamError(f"--dataset={flag_values.dataset} and --task={flag_values.task}: give one (a task "
                              "brings its own data).")
        with hparam_errors_as_flags():
            dataset = dataclasses.replace(base.dataset, **values(DatasetHparams, flag_values))
            model = dataclasses.replace(base.model, **dict(values(ModelHparams, flag_values), name=model_name))
            return RunHparams(dataset, model, dataclasses.replace(base.training, **values(TrainingHparams,
                                                                                          flag_values)))
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
    with hparam_errors_as_flags():
        dataset = dataclasses.replace(base.dataset, **dict(values(DatasetHparams, flag_values), name=dataset_name))
        model = dataclasses.replace(base.model, **dict(values(ModelHparams, flag_values), name=model_name))
        training = dataclasses.replace(base.training, **values(TrainingHparams, flag_values))
        return RunHparams(dataset, model, training)


def pruning_hparams(flag_values=FLAGS) -> tuple[PruningHparams, LotteryHparams]:
    """PruningHparams and LotteryHparams from the preset overridden by flags."""
    preset = base_preset(flag_values)
    with hparam_errors_as_flags():
        given = {}
        for cls in _pruning_classes():
            given.update(values(cls, flag_values))
        pruning = dataclasses.replace(preset.pruning if preset else PruningHparams(), **given)
        lottery = values(LotteryHparams, flag_values)
        lottery.setdefault("rewind_step", preset.rewind_step if preset else LotteryHparams.rewind_step)
        lottery.setdefault("levels", len(pruning.nm) if pruning.strategy == "nm" and pruning.nm
                           else LotteryHparams.levels)
        return pruning, LotteryHparams(**lottery)


def stability_hparams(flag_values=FLAGS) -> StabilityHparams:
    """StabilityHparams from the stability flags. Without ``--rewind_steps``, several
    ``--experiment`` (per-k mode) sweep their own rewind steps (``rewind_steps=()``)."""
    with hparam_errors_as_flags():
        given = values(StabilityHparams, flag_values)
        experiments = values(StabilityJob, flag_values).get("experiment") or ()
        if flag_values["rewind_steps"].using_default_value and len(experiments) > 1:
            given["rewind_steps"] = ()
        return StabilityHparams(**given)

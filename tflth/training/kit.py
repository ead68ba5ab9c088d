"""The job kit: what every job (train, IMP, stability sweep) shares.

* :class:`JobSettings` — the settings of *where and how* a job runs, declared once
  (output and data directories, the tf.distribute strategy, evaluation and checkpoint
  intervals, a model factory), which every job class derives from;
* the checks every job's ``prepare()`` makes before anything is written
  (:meth:`JobSettings.load_checked`, :func:`check_step_in_run`, :func:`checked_model`):
  a bad request raises :class:`tflth.hparams.HparamError` naming the field at fault;
* :func:`load_mask` — a stored mask, checked against the model it is for.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from absl import logging

from tflth import data as data_lib
from tflth import fileio, masking, models, steps, tasks
from tflth.hparams import DISTRIBUTION_STRATEGIES, HparamError, ModelHparams, RunHparams, field, field_error, field_note
from tflth.runs.dirs import check_output_dir
from tflth.training import compiled

__all__ = ["JobSettings", "check_model", "checked_model", "check_schedule_steps", "check_step_in_run",
           "load_for_run", "load_mask"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class JobSettings:
    """Where and how a job runs; every job (``TrainJob``, ``LotteryJob``, ``StabilityJob``)
    derives from this class, so these settings are keyword arguments of each, with one
    meaning and one default. None of them changes a result: they never enter a run's name.

    Args:
        output_dir: where the job's run directories go.
        data_dir: IDX directory, ``.npz`` file or tfds data directory (``None``: the
            dataset's standard source).
        strategy: the tf.distribute strategy by name (:func:`tflth.training.get_strategy`).
        eval_every: evaluate (``metrics.jsonl``) every this many steps (step notation;
            ``None``: only at the end).
        checkpoint_every: checkpoint for resuming every this many steps (``None``: never
            between the kept steps).
        model_fn: the model factory (``model_fn(seed=, input_shape=, num_classes=)`` ->
            built Keras model) instead of ``run.model.name``'s, which must then name it
            uniquely (it names the runs). The binaries pass ``--model=module:function``
            references in ``run.model.name`` instead.
    """

    output_dir: str = field("runs", "Where run directories (named by a hash of their hyperparameters) go.")
    data_dir: str | None = field(None, "IDX directory, .npz file or tfds data_dir.")
    strategy: str = field("auto", "tf.distribute strategy (auto: mirrored over all GPUs when there are 2 or more, "
                                  "else the default).", choices=DISTRIBUTION_STRATEGIES)
    eval_every: str | None = field("1ep", "Evaluate (metrics.jsonl) every this many steps.")
    checkpoint_every: str | None = field("1ep", "Checkpoint (for resuming) every this many steps.")
    model_fn: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    def load_checked(self, run: RunHparams, owner: str):
        """``(dataset, iterations per epoch, end iteration)`` of ``run``, after checking the
        output directory, the data source, the model's options and the intervals (errors
        name job ``owner``'s fields). Writes nothing."""
        check_output_dir(owner, self.output_dir)
        dataset, ipe, end = load_for_run(run, self.data_dir)
        check_schedule_steps(run.training, self.eval_every, self.checkpoint_every, ipe, end, owner)
        return dataset, ipe, end


def check_step_in_run(field_ref: tuple[str, str], step: str, iterations_per_epoch: int, end: int) -> int:
    """Resolve ``step`` and check ``0 <= step <= end``; errors name ``field_ref``, an
    ``(owner, field)`` pair such as ``("LotteryHparams", "rewind_step")``."""
    try:
        it = steps.to_iterations(step, iterations_per_epoch)
    except steps.StepError as e:
        raise field_note(*field_ref, str(e), step) from None
    if it > end:
        raise field_error(*field_ref, step, f"is iteration {it}, beyond the end of training at iteration {end} "
                                            f"({iterations_per_epoch} iterations per epoch).")
    return it


def check_model(model: ModelHparams) -> None:
    """A width other than the default only for a zoo model that has a width option."""
    if model.width > 0 and models.is_reference(model.name):
        raise HparamError(f"ModelHparams.width={model.width}: model {model.name!r} is your own function; widths are "
                          "options of the zoo's ResNets (give your function its own argument instead), expected 0.",
                          owner="ModelHparams", field="width", value=model.width)
    if model.width > 0 and "width" not in models.options(model.name):
        raise HparamError(f"ModelHparams.width={model.width}: model {model.name!r} has no width option; expected "
                          f"a width only with a ResNet (resnet<D>, resnet18, resnet50), or 0.",
                          owner="ModelHparams", field="width", value=model.width)
    if not model.options:
        return
    given = ",".join(f"{n}={v}" for n, v in model.options)
    if models.is_reference(model.name):
        raise HparamError(f"ModelHparams.options={given}: model {model.name!r} is your own function; options are "
                          "the zoo's (give your function its own arguments instead), expected none.",
                          owner="ModelHparams", field="options", value=model.options)
    accepted = [o for o in models.options(model.name) if o != "width"]
    unknown = [n for n, _ in model.options if n not in accepted]
    if unknown:
        raise HparamError(f"ModelHparams.options={given}: model {model.name!r} has no option "
                          f"{', '.join(unknown)}; expected some of {accepted or 'none'}"
                          + (" (its width has its own setting)" if "width" in unknown else "") + ".",
                          owner="ModelHparams", field="options", value=model.options)


def checked_model(hparams: RunHparams, dataset, model_fn=None, zoo_unchecked: bool = False):
    """``(factory, model)``: the run's :class:`tflth.models.ModelFactory` and one model it
    built, checked (a built classifier of ``dataset``; its ``prune`` globs select
    something). Raises :class:`HparamError` naming ``ModelHparams.name`` / ``prune``.
    ``zoo_unchecked``: a zoo model with the default selection needs no build to be known
    good (returns ``(factory, None)``), for jobs that need no model to validate."""
    factory = models.factory(hparams.model, dataset.input_shape, dataset.num_classes, fn=model_fn)
    if zoo_unchecked and not factory.user and not hparams.model.prune and not hparams.model.options:
        return factory, None
    model = factory.check()
    factory.prunable(model)
    if hparams.dataset.task:
        tasks.load(hparams.dataset.task).check(model)  # its loss and metrics give one value per example
    return factory, model


def load_for_run(hparams: RunHparams, data_dir: str | None):
    """``(dataset, iterations per epoch, end iteration)`` for a run; raises on a bad data_dir
    or model option (:func:`check_model`) before loading anything."""
    check_model(hparams.model)
    if data_dir and not os.path.exists(data_dir):
        raise field_error("JobSettings", "data_dir", data_dir, "does not exist.")
    if hparams.dataset.task:
        dataset = tasks.load(hparams.dataset.task).data
    else:
        dataset = data_lib.load(hparams.dataset.name, data_dir or None)
    compiled.check_mode(hparams.training.jit_compile, dataset)
    ipe = data_lib.iterations_per_epoch(dataset.num_train, hparams.training.batch_size)
    return dataset, ipe, steps.to_iterations(hparams.training.training_steps, ipe)


def check_schedule_steps(training, eval_every, checkpoint_every, iterations_per_epoch: int, end: int,
                         owner: str = "JobSettings") -> None:
    """Intervals (fields of job ``owner``) must parse and be positive; a warmup longer than
    training is an error (the learning rate would never reach ``lr``); milestones past the
    end only warn."""
    for name, s in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if s:
            try:
                every = steps.to_iterations(s, iterations_per_epoch)
            except steps.StepError as e:
                raise field_note(owner, name, str(e), s) from None
            if every <= 0:
                raise field_error(owner, name, s, "is invalid: expected a positive interval.")
    warmup = steps.to_iterations(training.warmup, iterations_per_epoch)
    if warmup > end:
        raise field_error("TrainingHparams", "warmup", training.warmup,
                          f"is iteration {warmup}, past the end of training (iteration {end}): the learning rate "
                          f"would never reach lr; expected a warmup of at most {end} iterations.")
    for name, s in [("milestones", m) for m in training.milestones]:
        if steps.to_iterations(s, iterations_per_epoch) > end:
            logging.warning("%s=%s is past the end of training (iteration %d); it has no effect.", name, s, end)


def load_mask(path: str, model) -> masking.Masks:
    """A stored ``mask.npz``, checked against ``model``'s masked variables (files of
    tflth 0.1, keyed by layer path, are read through their aliases); one that does not
    fit raises :class:`tflth.fileio.DamagedFileError`."""
    shapes = masking.shapes(model)
    mask = masking.Masks.load(path, aliases=masking.legacy_aliases(shapes))
    try:
        mask.check(shapes, what=f"model '{model.name}'")
    except masking.MaskError as e:
        raise fileio.DamagedFileError(path, str(e)) from None
    return mask

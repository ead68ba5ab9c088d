"""A training job: hyperparameters → hash-named run directory → resumable training.

:func:`train_or_resume` is the one way a run is trained unless finished and resumed if
killed; IMP levels, controls and stability copies use it too.

``TrainJob.prepare()`` loads the data and checks every step against the run length
before anything is written, so a bad request raises ``ValueError`` and touches no file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

from absl import logging

from tflth import data as data_lib
from tflth import fileio, models, paths, steps
from tflth.hparams import HparamError, ModelHparams, field_error, field_note, RunHparams, defaults_dict, legacy_hash, non_default, run_hash
from tflth.training import checkpoint, compiled
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["TrainJob", "check_model", "checked_model", "check_schedule_steps", "check_step_in_run", "load_for_run", "open_run_dir",
           "named_run_dir", "read_result", "train_or_resume"]


def check_step_in_run(field: tuple[str, str], step: str, iterations_per_epoch: int, end: int) -> int:
    """Resolve ``step`` and check ``0 <= step <= end``; errors name ``field``, an
    ``(owner, field)`` pair such as ``("LotteryHparams", "rewind_step")``."""
    try:
        it = steps.to_iterations(step, iterations_per_epoch)
    except steps.StepError as e:
        raise field_note(*field, str(e), step) from None
    if it > end:
        raise field_error(*field, step, f"is iteration {it}, beyond the end of training at iteration {end} "
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
    return factory, model


def check_output_dir(owner: str, path: str, field: str = "output_dir") -> None:
    """``path`` (job ``owner``'s ``field``) can hold run directories, else an
    :class:`HparamError` naming it and what is wrong (:func:`tflth.fileio.output_dir_problem`)."""
    problem = fileio.output_dir_problem(path)
    if problem:
        raise field_error(owner, field, path, f"{problem}; expected a directory that exists or can be made.")


def load_for_run(hparams: RunHparams, data_dir: str | None):
    """``(dataset, iterations per epoch, end iteration)`` for a run; raises on a bad data_dir
    or model option (:func:`check_model`) before loading anything."""
    check_model(hparams.model)
    if data_dir and not os.path.exists(data_dir):
        raise field_error("DataSource", "data_dir", data_dir, "does not exist.")
    dataset = data_lib.load(hparams.dataset.name, data_dir or None)
    compiled.check_mode(hparams.training.jit_compile, dataset)
    ipe = data_lib.iterations_per_epoch(dataset.num_train, hparams.training.batch_size)
    return dataset, ipe, steps.to_iterations(hparams.training.training_steps, ipe)


def check_schedule_steps(training, eval_every, checkpoint_every, iterations_per_epoch: int, end: int,
                         owner: str = "TrainJob") -> None:
    """Intervals (fields of job ``owner``) must parse and be positive; a warmup longer than
    training is an error (the learning rate would never reach ``lr``); milestones past the
    end only warn."""
    for field, s in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if s:
            try:
                every = steps.to_iterations(s, iterations_per_epoch)
            except steps.StepError as e:
                raise field_note(owner, field, str(e), s) from None
            if every <= 0:
                raise field_error(owner, field, s, "is invalid: expected a positive interval.")
    warmup = steps.to_iterations(training.warmup, iterations_per_epoch)
    if warmup > end:
        raise field_error("TrainingHparams", "warmup", training.warmup,
                          f"is iteration {warmup}, past the end of training (iteration {end}): the learning rate "
                          f"would never reach lr; expected a warmup of at most {end} iterations.")
    for field, s in [("milestones", m) for m in training.milestones]:
        if steps.to_iterations(s, iterations_per_epoch) > end:
            logging.warning("%s=%s is past the end of training (iteration %d); it has no effect.", field, s, end)


def open_run_dir(path: str, hparams: dict, defaults: dict, ignore: tuple[str, ...] = ("label",)) -> None:
    """Create ``path`` with ``hparams.json`` (``hparams`` in full); an existing directory
    must hold the same run: the same non-default values (see :func:`hparams.non_default`;
    keys in ``ignore`` are descriptive and not compared). A damaged ``hparams.json``
    raises :class:`tflth.fileio.DamagedFileError`."""
    hp_path = os.path.join(path, paths.HPARAMS)
    if os.path.exists(hp_path):
        stored = fileio.read_json(hp_path)

        def same(d):
            return non_default({k: v for k, v in d.items() if k not in ignore}, defaults)

        if not isinstance(stored, dict) or same(stored) != same(hparams):
            raise HparamError(f"{path} holds a run with other hyperparameters; choose another --output_dir.")
        return
    os.makedirs(path, exist_ok=True)
    fileio.write_json(hp_path, hparams)


def named_run_dir(new: str, legacy: str) -> str:
    """``new``, unless only ``legacy`` (the name tflth 0.1 gave the same run) exists:
    then that one, reused in place, with one log line on how to rename it."""
    if not os.path.exists(new) and os.path.isdir(legacy):
        logging.warning("Reusing %s, named by tflth 0.1; `mv %s %s` gives it today's name.", legacy, legacy, new)
        return legacy
    return new


def read_result(run_dir: str) -> dict:
    """A finished run's ``result.json`` (a damaged one raises DamagedFileError)."""
    return fileio.read_json(paths.RunDir(run_dir).result, required=("step", "test_accuracy", "test_loss"))


def train_or_resume(trainer: Trainer, run_dir: str, start: Callable[[Trainer], None] | None = None,
                    masks=None, **train_kwargs) -> dict:
    """Train one run to the end unless it has finished; return its ``result.json``.

    A finished run (``result.json``) is read, never retrained. A run with checkpoints
    resumes from the latest (weights, optimizer, step). A fresh run first calls
    ``start(trainer)`` to put the model in its start state. ``masks`` (a
    :class:`tflth.masking.Masks`; checkpoints hold none) are applied either way, after
    ``start``, and kept as the run's ``mask.npz`` (unless it has one: an IMP level's). ``train_kwargs`` go to :meth:`Trainer.train` (a resumed run must get the
    same ones again).
    """
    from tflth import masking  # noqa: PLC0415

    run = paths.RunDir(run_dir)
    if run.finished():
        return read_result(run.path)
    if start is not None and checkpoint.latest(run.checkpoints) is None:
        start(trainer)
    if masks is not None:
        masks = masking.Masks(masks)
        if is_chief() and not os.path.exists(run.mask):  # every trained network keeps its mask (for export)
            os.makedirs(run.path, exist_ok=True)
            masks.save(run.mask)
        masking.apply_masks(trainer.model, masks)
    return trainer.train(run.path, **train_kwargs).to_dict()  # every worker's own (only the chief writes)


@dataclasses.dataclass(frozen=True)
class TrainJob:
    hparams: RunHparams
    output_dir: str = "runs"
    data_dir: str | None = None
    save_steps: tuple[str, ...] = ()
    eval_every: str | None = "1ep"
    checkpoint_every: str | None = "1ep"
    strategy: str = "auto"
    model_fn: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def run_dir(self) -> str:
        return named_run_dir(paths.train_run(self.output_dir, run_hash(self.hparams)).path,
                             paths.train_run(self.output_dir, legacy_hash(self.hparams.to_dict())).path)

    def prepare(self):
        """Load data and validate every step; returns the dataset. Writes nothing."""
        check_output_dir("TrainJob", self.output_dir)
        dataset, ipe, end = load_for_run(self.hparams, self.data_dir)
        for s in self.save_steps:
            check_step_in_run(("TrainJob", "save_steps"), s, ipe, end)
        check_schedule_steps(self.hparams.training, self.eval_every, self.checkpoint_every, ipe, end)
        checked_model(self.hparams, dataset, self.model_fn, zoo_unchecked=True)
        return dataset

    def finished_result(self) -> dict | None:
        run_dir = self.run_dir
        return read_result(run_dir) if paths.RunDir(run_dir).finished() else None

    def run(self, dataset=None) -> dict:
        """Train (or resume) to the end; returns ``result.json`` (a finished run's as stored)."""
        dataset = dataset if dataset is not None else self.prepare()
        run_dir = self.run_dir
        done = self.finished_result()
        if done is not None:
            logging.info("Run %s already finished: test accuracy %.4f", run_dir, done["test_accuracy"])
            return done
        open_run_dir(run_dir, self.hparams.to_dict(), defaults_dict(RunHparams))
        trainer = Trainer(self.hparams, dataset=dataset, strategy=get_strategy(self.strategy), model_fn=self.model_fn)
        logging.info("Training %s on %s (%s) in %s", self.hparams.model.name, dataset.name, dataset.source, run_dir)
        return train_or_resume(trainer, run_dir, save_steps=self.save_steps, eval_every=self.eval_every,
                               checkpoint_every=self.checkpoint_every)

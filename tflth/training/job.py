"""A training job: hyperparameters → hash-named run directory → resumable training.

``TrainJob.prepare()`` loads the data and checks every step against the run length
before anything is written, so a bad request raises ``ValueError`` and touches no file.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from tflth import data as data_lib
from tflth import steps
from tflth.hparams import HparamError, RunHparams, run_hash
from tflth.training.metrics import read_json, write_json
from tflth.training.strategy import get_strategy
from tflth.training.trainer import Trainer, TrainResult

__all__ = ["TrainJob", "check_schedule_steps", "check_step_in_run", "load_for_run", "open_run_dir"]


def check_step_in_run(label: str, step: str, iterations_per_epoch: int, end: int) -> int:
    """Resolve ``step`` and check ``0 <= step <= end``; errors name the flag."""
    try:
        it = steps.to_iterations(step, iterations_per_epoch)
    except steps.StepError as e:
        raise HparamError(f"{label}: {e}") from None
    if it > end:
        raise HparamError(
            f"{label}={step} is iteration {it}, beyond the end of training at iteration {end} "
            f"({iterations_per_epoch} iterations per epoch)."
        )
    return it


def load_for_run(hparams: RunHparams, data_dir: str | None):
    """``(dataset, iterations per epoch, end iteration)`` for a run; raises on a bad data_dir."""
    if data_dir and not os.path.exists(data_dir):
        raise data_lib.DataError(f"--data_dir={data_dir} does not exist.")
    dataset = data_lib.load(hparams.dataset.name, data_dir or None)
    ipe = data_lib.iterations_per_epoch(dataset.num_train, hparams.training.batch_size)
    return dataset, ipe, steps.to_iterations(hparams.training.training_steps, ipe)


def check_schedule_steps(training, eval_every, checkpoint_every, iterations_per_epoch: int, end: int) -> None:
    """Intervals must parse and be positive; milestones/warmup past the end only warn."""
    for label, s in (("--eval_every", eval_every), ("--checkpoint_every", checkpoint_every)):
        if s:
            try:
                every = steps.to_iterations(s, iterations_per_epoch)
            except steps.StepError as e:
                raise HparamError(f"{label}: {e}") from None
            if every <= 0:
                raise HparamError(f"{label}={s} is invalid: expected a positive interval.")
    for label, s in [("--warmup", training.warmup)] + [("--milestones", m) for m in training.milestones]:
        if steps.to_iterations(s, iterations_per_epoch) > end:
            logging.warning("%s=%s is past the end of training (iteration %d); it has no effect.", label, s, end)


def open_run_dir(path: str, hparams: dict) -> None:
    """Create ``path`` with ``hparams.json``; an existing directory must hold the same."""
    hp_path = os.path.join(path, "hparams.json")
    if os.path.exists(hp_path):
        if read_json(hp_path) != hparams:
            raise HparamError(f"{path} holds a run with other hyperparameters; choose another --output_dir.")
        return
    os.makedirs(path, exist_ok=True)
    write_json(hp_path, hparams)


@dataclasses.dataclass(frozen=True)
class TrainJob:
    hparams: RunHparams
    output_dir: str = "runs"
    data_dir: str | None = None
    save_steps: tuple[str, ...] = ()
    eval_every: str | None = "1ep"
    checkpoint_every: str | None = "1ep"
    strategy: str = "auto"

    @property
    def run_dir(self) -> str:
        return os.path.join(self.output_dir, f"train_{run_hash(self.hparams)}")

    def prepare(self):
        """Load data and validate every step; returns the dataset. Writes nothing."""
        dataset, ipe, end = load_for_run(self.hparams, self.data_dir)
        for s in self.save_steps:
            check_step_in_run("--save_steps", s, ipe, end)
        check_schedule_steps(self.hparams.training, self.eval_every, self.checkpoint_every, ipe, end)
        return dataset

    def finished_result(self) -> dict | None:
        path = os.path.join(self.run_dir, "result.json")
        return read_json(path) if os.path.exists(path) else None

    def run(self, dataset=None) -> TrainResult | dict:
        """Train (or resume) to the end; a finished run returns its stored result."""
        dataset = dataset if dataset is not None else self.prepare()
        done = self.finished_result()
        if done is not None:
            logging.info("Run %s already finished: test accuracy %.4f", self.run_dir, done["test_accuracy"])
            return done
        open_run_dir(self.run_dir, self.hparams.to_dict())
        trainer = Trainer(self.hparams, dataset=dataset, strategy=get_strategy(self.strategy))
        logging.info("Training %s on %s (%s) in %s", self.hparams.model.name, dataset.name, dataset.source,
                     self.run_dir)
        return trainer.train(self.run_dir, save_steps=self.save_steps, eval_every=self.eval_every,
                             checkpoint_every=self.checkpoint_every)

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

from tflth import masking
from tflth.hparams import RunHparams, defaults_dict, field
from tflth.runs import layout
from tflth.runs.dirs import open_run_dir, read_result, train_run_dir
from tflth.training import checkpoint
from tflth.training.kit import JobSettings, check_step_in_run, checked_model
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["TrainJob", "train_or_resume", "result_summary"]


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
    run = layout.RunDir(run_dir)
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


def result_summary(result: dict) -> str:
    """``test_accuracy=0.8912 test_loss=0.3100`` (a task's: each of its reported metrics)
    from a ``result.json``: the numbers a finished run reports, for logs and the binaries."""
    return " ".join(f"{k}={v:.4f}" for k, v in result.items()
                    if k.startswith("test_") and isinstance(v, (int, float)) and not isinstance(v, bool))


@dataclasses.dataclass(frozen=True)
class TrainJob(JobSettings):
    """One training run (``bin/train.py``): ``hparams`` → ``train_<hash>/`` → trained or resumed.

    Args:
        hparams: what determines the result (:class:`tflth.hparams.RunHparams`); the run
            directory is named by a hash of its non-default values.
        save_steps: steps (step notation) whose full state is kept as rewind points.
        output_dir, data_dir, strategy, eval_every, checkpoint_every, model_fn: keyword
            arguments, as for every job (:class:`tflth.training.kit.JobSettings`).

    ``prepare()`` loads the data and checks every setting, writing nothing; ``run()``
    trains what is missing and returns ``result.json``.

    Example::

        job = TrainJob(RunHparams(), save_steps=("100it",), output_dir="runs")
        result = job.run(job.prepare())
    """

    hparams: RunHparams
    save_steps: tuple[str, ...] = field((), "Steps whose full state is kept (rewind points), step notation.")

    @property
    def run_dir(self) -> str:
        return train_run_dir(self.output_dir, self.hparams).path

    def prepare(self):
        """Load data and validate every step; returns the dataset. Writes nothing."""
        dataset, ipe, end = self.load_checked(self.hparams, "TrainJob")
        for s in self.save_steps:
            check_step_in_run(("TrainJob", "save_steps"), s, ipe, end)
        checked_model(self.hparams, dataset, self.model_fn, zoo_unchecked=True)
        return dataset

    def finished_result(self) -> dict | None:
        run_dir = self.run_dir
        return read_result(run_dir) if layout.RunDir(run_dir).finished() else None

    def run(self, dataset=None) -> dict:
        """Train (or resume) to the end; returns ``result.json`` (a finished run's as stored)."""
        dataset = dataset if dataset is not None else self.prepare()
        run_dir = self.run_dir
        done = self.finished_result()
        if done is not None:
            logging.info("Run %s already finished: %s", run_dir, result_summary(done))
            return done
        open_run_dir(run_dir, self.hparams.to_dict(), defaults_dict(RunHparams))
        trainer = Trainer(self.hparams, dataset=dataset, strategy=get_strategy(self.strategy), model_fn=self.model_fn)
        logging.info("Training %s on %s (%s) in %s", self.hparams.model.name, self.hparams.dataset.label,
                     dataset.source, run_dir)
        return train_or_resume(trainer, run_dir, save_steps=self.save_steps, eval_every=self.eval_every,
                               checkpoint_every=self.checkpoint_every)

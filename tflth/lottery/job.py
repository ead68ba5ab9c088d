"""Iterative magnitude pruning (IMP) with rewinding, its reset modes and controls.

The layout of an experiment is :class:`tflth.paths.Experiment`'s (``lottery_<hash>/
replicate_<r>/level_<L>[/<control>]/``); its directory is named by a hash of the
non-default hyperparameters that change a result, so rerunning the same command resumes it.

Level 0 trains the dense network and keeps W_k, the full state at the rewind step k.
Level L ≥ 1 prunes level L-1's final weights with the registered pruning strategy
(``PruningHparams.strategy``, :mod:`tflth.pruning`), starts as the registered reset says
(``rewind``, ``lr_rewind``, ``finetune``: :mod:`tflth.lottery.starts`), and trains to the end.
Controls (``random_reinit``, ``random_prune``: :mod:`tflth.lottery.starts`) train on level L's
mask exactly like IMP's level L except for what they control. Every start from step k takes
step k's optimizer state (``rewind_optimizer="state"``, the default) or a fresh optimizer
at step k (``"fresh"``, open_lth's way; :data:`tflth.lottery.starts.REWIND_OPTIMIZERS`). A finished level
(``result.json``) is never recomputed; a killed one resumes from its latest checkpoint;
raising ``levels`` extends a finished experiment.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

from absl import logging

from tflth import fileio, masking, paths, pruning, steps
from tflth.lottery import starts
from tflth.hparams import (PruningHparams, RunHparams, defaults_dict, field_error, field_note, identity, legacy_hash,
                           run_hash, to_dict)
from tflth.report.experiments import last_evals_range
from tflth.training.job import (check_output_dir, check_schedule_steps, check_step_in_run, checked_model, load_for_run,
                                named_run_dir, open_run_dir, train_or_resume)
from tflth.training.strategy import get_strategy, is_chief
from tflth.training import checkpoint
from tflth.training.trainer import Trainer

__all__ = ["RESETS", "CONTROLS", "LotteryHparams", "LotteryJob", "replicate_hparams"]

RESETS = starts.RESETS  # name -> Reset (registered in tflth.lottery.starts)
CONTROLS = starts.CONTROLS  # name -> Control
REINIT_SEED_OFFSET = starts.REINIT_SEED_OFFSET
_L = "LotteryHparams"


@dataclasses.dataclass(frozen=True)
class LotteryHparams:
    levels: int = 8
    rewind_step: str = "0it"
    reset: str = "rewind"
    controls: tuple[str, ...] = ()
    replicates: int = 1
    rewind_optimizer: str = "state"

    def __post_init__(self):
        object.__setattr__(self, "controls", tuple(self.controls))
        if int(self.levels) != self.levels or self.levels < 0:
            raise field_error(_L, "levels", self.levels, "is invalid: expected an integer >= 0.")
        try:
            steps.parse(self.rewind_step)
        except steps.StepError as e:
            raise field_note(_L, "rewind_step", str(e), self.rewind_step) from None
        if self.reset not in RESETS:
            raise field_error(_L, "reset", repr(self.reset), f"is invalid: expected one of {list(RESETS)}.")
        for c in self.controls:
            if c not in CONTROLS:
                raise field_note(_L, "controls", f"unknown control {c!r}: expected some of {list(CONTROLS)}.", c)
        if int(self.replicates) != self.replicates or self.replicates < 1:
            raise field_error(_L, "replicates", self.replicates, "is invalid: expected an integer >= 1.")
        if self.rewind_optimizer not in starts.REWIND_OPTIMIZERS:
            raise field_error(_L, "rewind_optimizer", repr(self.rewind_optimizer),
                              f"is invalid: expected one of {list(starts.REWIND_OPTIMIZERS)}.")


def replicate_hparams(run: RunHparams, r: int) -> RunHparams:
    """Replicate ``r``: init, data-order and augmentation seeds each + r."""
    t = run.training
    return dataclasses.replace(run, training=dataclasses.replace(
        t, seed=t.seed + r, data_order_seed=t.data_order_seed + r, augment_seed=t.augment_seed + r))


@dataclasses.dataclass(frozen=True)
class ExperimentKey:
    """The hyperparameters that name an IMP experiment (``lottery_<hash>``)."""

    run: RunHparams = RunHparams()
    pruning: PruningHparams = PruningHparams()
    rewind_step: str = "0it"
    reset: str = "rewind"
    rewind_optimizer: str = "state"


@dataclasses.dataclass(frozen=True)
class LotteryJob:
    """An IMP experiment: dense training, then ``levels`` rounds of prune → reset → train.

    Args:
        run: the training hyperparameters (:class:`RunHparams`).
        pruning: :class:`PruningHparams` (fraction, scope, per-layer rates, strategy).
        lottery: :class:`LotteryHparams` (levels, rewind step k, reset, controls,
            replicates, and ``rewind_optimizer``: what every start from step k does with
            step k's optimizer, ``state`` (its saved state, the default) or ``fresh``
            (zeroed slots, schedule at k, Adam's bias correction from k)).
        output_dir: where ``lottery_<hash>/`` goes (named by the non-default values of
            ``run``, ``pruning``, the rewind step, the reset and the rewind optimizer).
        data_dir, strategy: as for :class:`~tflth.training.Trainer`.
        eval_every, checkpoint_every: evaluation and resume-checkpoint intervals.
        model_fn: the model factory (``model_fn(seed=, input_shape=, num_classes=)`` ->
            built Keras model) instead of ``run.model.name``'s; ``run.model.name`` must
            then name it uniquely (it names the experiment). The binaries pass
            ``--model=module:function`` references in ``run.model.name`` instead.

    ``prepare()`` validates every setting against the data and writes nothing;
    ``run_all(dataset, on_level=None)`` trains what is missing and returns one result row
    per network (``method``, ``level``, ``replicate``, ``density``, ``test_accuracy``,
    ``last_evals_range``, ...; as :func:`tflth.report.collect` reads them back), ready for :func:`tflth.report.write_report`. Rerunning resumes; raising
    ``levels`` extends.

    Example::

        job = LotteryJob(run, PruningHparams(0.2, "global"),
                         LotteryHparams(levels=3, rewind_step="500it", controls=("random_reinit",)),
                         output_dir="runs")
        rows = job.run_all(job.prepare())
        tflth.report.write_report(job.experiment_dir, rows)
    """

    run: RunHparams
    pruning: PruningHparams = PruningHparams()
    lottery: LotteryHparams = LotteryHparams()
    output_dir: str = "runs"
    data_dir: str | None = None
    strategy: str = "auto"
    eval_every: str | None = "1ep"
    checkpoint_every: str | None = "1ep"
    model_fn: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------ identity

    def key(self) -> ExperimentKey:
        """What determines results (not ``levels``, ``controls`` or ``replicates``,
        which only add runs to the same experiment)."""
        return ExperimentKey(self.run, self.pruning, self.lottery.rewind_step, self.lottery.reset,
                             self.lottery.rewind_optimizer)

    def hparams_dict(self) -> dict:
        """:meth:`key` in full (``hparams.json``), except ``rewind_optimizer`` at its default,
        which is left out: a ``state`` experiment's file and tflth 0.1 name
        (:func:`~tflth.hparams.legacy_hash`) stay what they were before the field existed,
        and a ``fresh`` one can never be taken for a tflth 0.1 directory."""
        d = to_dict(self.key())
        if d["rewind_optimizer"] == ExperimentKey.rewind_optimizer:
            del d["rewind_optimizer"]
        return d

    def identity(self) -> dict:
        """The non-default part of :meth:`key`: what names the experiment."""
        return identity(self.key())

    @property
    def experiment(self) -> paths.Experiment:
        new = paths.experiment(self.output_dir, run_hash(self.identity()))
        legacy = paths.experiment(self.output_dir, legacy_hash(self.hparams_dict()))
        return paths.Experiment(named_run_dir(new.path, legacy.path))

    @property
    def experiment_dir(self) -> str:
        return self.experiment.path

    @property
    def label(self) -> str:
        p = self.pruning
        how = {"magnitude": p.scope, "nm": "nm " + ",".join(f"{n}:{m}" for n, m in p.nm)}.get(
            p.strategy, f"{p.strategy} {p.scope}")
        fresh = " fresh optimizer" if self.lottery.rewind_optimizer == "fresh" else ""
        return (f"{self.run.model.name} {self.run.dataset.name} {how} {self.lottery.reset}@{self.lottery.rewind_step}"
                + fresh)

    def level_dir(self, replicate: int, level: int, control: str | None = None) -> str:
        e = self.experiment
        return (e.control(replicate, level, control) if control else e.level(replicate, level)).path

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it. Writes nothing."""
        check_output_dir("LotteryJob", self.output_dir)
        dataset, ipe, end = load_for_run(self.run, self.data_dir)
        k = check_step_in_run((_L, "rewind_step"), self.lottery.rewind_step, ipe, end)
        if k == end:
            raise field_error(_L, "rewind_step", self.lottery.rewind_step, "is the end of training; "
                              f"expected a step before iteration {end}.")
        check_schedule_steps(self.run.training, self.eval_every, self.checkpoint_every, ipe, end, "LotteryJob")
        pruning.strategy_for(self.pruning)  # a known strategy with consistent settings
        factory, model = checked_model(self.run, dataset, self.model_fn)
        pruner = pruning.strategy_for(self.pruning, layouts=pruning.layouts(model, factory.prunable(model)))
        pruner.check()
        last = pruner.max_levels()
        if self.lottery.levels > last:
            counts = pruner.survivor_counts(last)
            raise field_error(_L, "levels", self.lottery.levels, "is past the last level that prunes anything: "
                              f"level {last} leaves {counts[-1]} of {counts[0]} {pruner.unit} and no later level "
                              f"prunes one; expected levels <= {last}{pruner.levels_hint}.")
        return dataset

    # ------------------------------------------------------------- running

    def run_all(self, dataset=None, on_level=None) -> list[dict]:
        """Every replicate, level and control; returns result rows (see tflth.report)."""
        dataset = dataset if dataset is not None else self.prepare()
        experiment = self.experiment
        open_run_dir(experiment.path, dict(self.hparams_dict(), label=self.label), defaults_dict(ExperimentKey))
        strategy = get_strategy(self.strategy)
        rows = []
        for r in range(self.lottery.replicates):
            rows += _ImpTrajectory(self, experiment, r, dataset, strategy).run(on_level)
        return rows


def load_level_mask(path: str, trainer: Trainer) -> masking.Masks:
    """A level's stored ``mask.npz``, checked against the trainer's masked variables
    (files of tflth 0.1, keyed by layer path, are read through their aliases)."""
    shapes = masking.shapes(trainer.model)
    mask = masking.Masks.load(path, aliases=masking.legacy_aliases(shapes))
    try:
        mask.check(shapes, what=f"model '{trainer.model.name}'")
    except masking.MaskError as e:
        raise fileio.DamagedFileError(path, str(e)) from None
    return mask


class _ImpTrajectory:
    """One IMP trajectory: one Trainer (one model) reused for every level and control."""

    def __init__(self, job: LotteryJob, experiment: paths.Experiment, r: int, dataset, strategy):
        self.job, self.experiment, self.r = job, experiment, r
        self.hparams = replicate_hparams(job.run, r)
        self.trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy, model_fn=job.model_fn)
        self.k = self.trainer.to_iterations(job.lottery.rewind_step)
        self.end = self.trainer.end_step
        self.reset = starts.get_reset(job.lottery.reset)
        self._reset_trainer = None
        self.pruner = pruning.strategy_for(job.pruning, seed=self.hparams.training.seed,
                                           layouts=pruning.layouts(self.trainer.model))

    # --- helpers

    def _level(self, level: int) -> paths.RunDir:
        return self.experiment.level(self.r, level)

    def _final_checkpoint(self, run: paths.RunDir) -> str:
        return run.checkpoint(fileio.read_json(run.result, required=("step",))["step"])

    def _start(self, level: int) -> starts.Start:
        prev = self._final_checkpoint(self._level(level - 1)) if level > 0 else None
        return starts.Start(rewind=self._level(0).checkpoint(self.k), level=level,
                            seed=self.hparams.training.seed, previous_final=prev,
                            rewind_optimizer=self.job.lottery.rewind_optimizer)

    def _masked_weights(self, ckpt_path: str) -> dict:
        _, weights, _ = checkpoint.load(ckpt_path)
        return {p: weights[p] for p in self.trainer.masked_paths}

    def _mask_for(self, level: int) -> masking.Masks:
        """Level ``level``'s IMP mask (computed once from level-1's final weights, then stored)."""
        if level == 0:
            return masking.Masks.ones(masking.shapes(self.trainer.model))
        path = self._level(level).mask
        if os.path.exists(path):
            return load_level_mask(path, self.trainer)
        prev = self._level(level - 1)
        mask = self.pruner(self._masked_weights(self._final_checkpoint(prev)), self._mask_for(level - 1), level=level)
        if is_chief():  # the other workers compute the same mask
            mask.save(path)
        return mask

    def _trainer_for_reset(self) -> Trainer:
        """The reset's trainer: this replicate's, or one with the reset's own schedule (finetune)."""
        training = self.reset.training(self.hparams.training, self.trainer.schedule.value_at(self.end - 1),
                                       self.k, self.end)
        if training == self.hparams.training:
            return self.trainer
        if self._reset_trainer is None:
            self._reset_trainer = Trainer(dataclasses.replace(self.hparams, training=training),
                                          dataset=self.trainer.dataset, strategy=self.trainer.strategy,
                                          model_fn=self.job.model_fn)
        return self._reset_trainer

    # --- one training run

    def _train(self, run: paths.RunDir, mask: dict, init, trainer: Trainer | None = None,
               keep_steps=(), label: str = "") -> dict:
        """Train one network on ``mask`` unless finished; ``init`` sets its start state."""
        trainer = trainer or self.trainer
        mask = masking.Masks(mask)  # a control's mask may come as a plain dict

        def start(t):
            if is_chief():
                fileio.write_json(run.density, mask.density().to_dict())
            init(t)

        finished = run.finished()
        result = train_or_resume(trainer, run.path, start, masks=mask, save_steps=keep_steps, eval_every=self.job.eval_every,
                                 checkpoint_every=self.job.checkpoint_every, label=label)
        if not finished and is_chief():
            self._tidy(run, keep=set(keep_steps), final=result["step"])
        density = fileio.read_json(run.density, required=("density",))["density"]
        return {"test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
                "density": density, "step": result["step"], "last_evals_range": last_evals_range(run)}

    @staticmethod
    def _tidy(run: paths.RunDir, keep: set[int], final: int) -> None:
        """Drop intermediate checkpoints of a finished run. Kept: the start (the ticket,
        e.g. W_k ⊙ m), the final one (what the next level prunes) and ``keep``."""
        found = run.checkpoint_steps()
        keep = set(keep) | {found[0], final}
        for s in found:
            if s not in keep:
                os.unlink(run.checkpoint(s))

    # --- levels

    def run(self, on_level=None) -> list[dict]:
        job, rows = self.job, []
        base = {"experiment": self.experiment.name, "label": job.label, "replicate": self.r}

        def add(method, level, res):
            rows.append(dict(base, method=method, level=level, **res))
            if on_level:
                on_level(rows[-1])

        add("imp", 0, self._train(self._level(0), self._mask_for(0), lambda t: None, keep_steps=(self.k,),
                                  label=f"replicate {self.r} level 0"))
        for level in range(1, job.lottery.levels + 1):
            mask = self._mask_for(level)
            begin = self._start(level)
            add("imp", level, self._train(self._level(level), mask, lambda t: self.reset.start(t, begin),
                                          self._trainer_for_reset(), label=f"replicate {self.r} level {level}"))
            for name in job.lottery.controls:
                control = starts.get_control(name)
                add(name, level, self._train(self.experiment.control(self.r, level, name), control.mask(mask, begin, self.pruner),
                                             lambda t: control.start(t, begin),
                                             label=f"replicate {self.r} level {level} {name}"))
        logging.info("replicate %d done", self.r)
        return rows

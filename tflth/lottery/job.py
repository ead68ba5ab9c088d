"""Iterative magnitude pruning (IMP) with rewinding, its reset modes and controls.

The layout of an experiment is :class:`tflth.runs.layout.Experiment`'s (``lottery_<hash>/
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

from absl import logging

from tflth import data as data_lib
from tflth import fileio, masking, pruning, seeds, tasks
from tflth.conventions import ACCURACY, Measure
from tflth.hparams import (LotteryHparams, PruningHparams, RunHparams, defaults_dict, field_error, field_note,
                           to_dict)
from tflth.lottery import starts
from tflth.runs import layout
from tflth.runs.dirs import experiment_dir, last_evals_range, open_run_dir
from tflth.runs.naming import ExperimentKey, identity
from tflth.training import checkpoint
from tflth.training.kit import JobSettings, check_step_in_run, checked_model, load_mask
from tflth.training.job import train_or_resume
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["RESETS", "CONTROLS", "LotteryJob"]

RESETS = starts.RESETS  # name -> Reset (registered in tflth.lottery.starts)
CONTROLS = starts.CONTROLS  # name -> Control
_L = "LotteryHparams"


@dataclasses.dataclass(frozen=True)
class LotteryJob(JobSettings):
    """An IMP experiment: dense training, then ``levels`` rounds of prune → reset → train.

    Args:
        run: the training hyperparameters (:class:`RunHparams`).
        pruning: :class:`PruningHparams` (fraction, scope, per-layer rates, strategy).
        lottery: :class:`LotteryHparams` (levels, rewind step k, reset, controls,
            replicates, and ``rewind_optimizer``: what every start from step k does with
            step k's optimizer, ``state`` (its saved state, the default) or ``fresh``
            (zeroed slots, schedule at k, Adam's bias correction from k)).
        output_dir, data_dir, strategy, eval_every, checkpoint_every, model_fn: keyword
            arguments, as for every job (:class:`tflth.training.kit.JobSettings`);
            ``lottery_<hash>/`` goes in ``output_dir``, named by the non-default values of
            ``run``, ``pruning``, the rewind step, the reset and the rewind optimizer.

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

    def __post_init__(self):
        starts.check_names(self.lottery.reset, self.lottery.controls, owner=_L)
        known = pruning.one_shot_names()
        for name in self.lottery.one_shot:
            if name not in known:
                raise field_note(_L, "one_shot", f"unknown one-shot method {name!r}: expected some of {known}.", name)
        if self.lottery.one_shot and self.pruning.strategy in known:
            raise field_note(_L, "one_shot", f"runs one-shot methods beside IMP, with the experiment's pruning "
                             f"structure; PruningHparams.strategy={self.pruning.strategy} is one-shot itself: expected an "
                             "IMP strategy (magnitude, random, nm, channels).", ",".join(self.lottery.one_shot))

    # ------------------------------------------------------------ identity

    def key(self) -> ExperimentKey:
        """What determines results (not ``levels``, ``controls`` or ``replicates``,
        which only add runs to the same experiment)."""
        return ExperimentKey(self.run, self.pruning, self.lottery.rewind_step, self.lottery.reset,
                             self.lottery.rewind_optimizer)

    def hparams_dict(self) -> dict:
        """:meth:`key` in full (``hparams.json``), except ``rewind_optimizer`` at its default,
        which is left out: a ``state`` experiment's file and tflth 0.1 name
        (:func:`~tflth.runs.naming.legacy_hash`) stay what they were before the field existed,
        and a ``fresh`` one can never be taken for a tflth 0.1 directory."""
        d = to_dict(self.key())
        if d["rewind_optimizer"] == ExperimentKey.rewind_optimizer:
            del d["rewind_optimizer"]
        if self.measure != ACCURACY:  # a task's: what its report compares
            d["measure"] = self.measure.to_dict()
        return d

    @property
    def measure(self) -> Measure:
        """What the result rows and the report compare: test accuracy, or the task's metric."""
        return tasks.measure_of(self.run)

    def identity(self) -> dict:
        """The non-default part of :meth:`key`: what names the experiment."""
        return identity(self.key())

    @property
    def experiment(self) -> layout.Experiment:
        return experiment_dir(self.output_dir, self.key(), self.hparams_dict())

    @property
    def experiment_dir(self) -> str:
        return self.experiment.path

    @property
    def label(self) -> str:
        p = self.pruning
        how = (p.scope if p.strategy == "magnitude" else "nm " + ",".join(f"{n}:{m}" for n, m in p.nm)
               if p.strategy == "nm" else f"{p.strategy} {p.scope}")
        fresh = " fresh optimizer" if self.lottery.rewind_optimizer == "fresh" else ""
        return (f"{self.run.model.name} {self.run.dataset.label} {how} {self.lottery.reset}@{self.lottery.rewind_step}"
                + fresh)

    def level_dir(self, replicate: int, level: int, control: str | None = None) -> str:
        e = self.experiment
        return (e.control(replicate, level, control) if control else e.level(replicate, level)).path

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it. Writes nothing."""
        dataset, ipe, end = self.load_checked(self.run, "LotteryJob")
        k = check_step_in_run((_L, "rewind_step"), self.lottery.rewind_step, ipe, end)
        if k == end:
            raise field_error(_L, "rewind_step", self.lottery.rewind_step, "is the end of training; "
                              f"expected a step before iteration {end}.")
        pruning.pruner_for(self.pruning)  # a known strategy with consistent settings
        factory, model = checked_model(self.run, dataset, self.model_fn)
        pruner = pruning.for_model(self.pruning, model, factory.prunable(model))
        pruner.check()
        for arm in [pruner] + self.arms():
            arm.check_model(model)
        last = pruner.max_levels()
        if self.lottery.levels > last:
            counts = pruner.survivor_counts(last)
            raise field_error(_L, "levels", self.lottery.levels, "is past the last level that prunes anything: "
                              f"level {last} leaves {counts[-1]} of {counts[0]} {pruner.unit} and no later level "
                              f"prunes one; expected levels <= {last}{pruner.levels_hint}.")
        return dataset

    def arms(self, seed: int = 0, layouts=None) -> list:
        """The ``lottery.one_shot`` methods' pruners (their own settings at their defaults;
        the structure they prune in is this experiment's pruner)."""
        p = self.pruning
        return [pruning.pruner_for(PruningHparams(p.fraction, p.scope, p.layer_rates, name), seed=seed,
                                   layouts=layouts) for name in self.lottery.one_shot]

    def compared(self, level: int) -> bool:
        """Whether the controls and one-shot methods train at ``level`` (``compare_levels``)."""
        return not self.lottery.compare_levels or level in self.lottery.compare_levels

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


class _ImpTrajectory:
    """One IMP trajectory: one Trainer (one model) reused for every level and control."""

    def __init__(self, job: LotteryJob, experiment: layout.Experiment, r: int, dataset, strategy):
        self.job, self.experiment, self.r = job, experiment, r
        self.hparams = seeds.replicate(job.run, r)
        self.trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy, model_fn=job.model_fn)
        self.k = self.trainer.to_iterations(job.lottery.rewind_step)
        self.end = self.trainer.end_step
        self.reset = starts.get_reset(job.lottery.reset)
        self._reset_trainer = None
        layouts = pruning.layouts(self.trainer.model)
        self.pruner = pruning.for_model(job.pruning, self.trainer.model, seed=self.hparams.training.seed)
        self.arms = job.arms(seed=self.hparams.training.seed, layouts=layouts)

    # --- helpers

    def _level(self, level: int) -> layout.RunDir:
        return self.experiment.level(self.r, level)

    def _final_checkpoint(self, run: layout.RunDir) -> str:
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
        """Level ``level``'s mask (computed once, then stored): IMP's from level-1's final
        weights, a one-shot pruner's from W_k (:mod:`tflth.pruning.one_shot`)."""
        if level == 0:
            return masking.Masks.ones(masking.shapes(self.trainer.model))
        path = self._level(level).mask
        if os.path.exists(path):
            return load_mask(path, self.trainer.model)
        if self.pruner.one_shot:
            mask = self._one_shot_mask(level, self.pruner)
        else:
            prev = self._level(level - 1)
            mask = self.pruner(self._masked_weights(self._final_checkpoint(prev)), self._mask_for(level - 1),
                               level=level)
        if is_chief():  # the other workers compute the same mask
            mask.save(path)
        return mask

    def _arm_mask(self, arm, level: int) -> masking.Masks:
        """One-shot method ``arm``'s mask at ``level`` (computed once, then stored), in the
        experiment's pruning structure."""
        path = self.experiment.method(self.r, level, arm.name).mask
        if os.path.exists(path):
            return load_mask(path, self.trainer.model)
        mask = self._one_shot_mask(level, arm, structure=self.pruner)
        if is_chief():
            mask.save(path)
        return mask

    def _one_shot_mask(self, level: int, pruner, structure=None) -> masking.Masks:
        """A one-shot pruner's level mask, scored on W_k (all ones masks) with the batches
        the dense run saw from step k on (unaugmented)."""
        t = self.trainer
        t.load_checkpoint(self._level(0).checkpoint(self.k), optimizer=False)
        masking.apply_masks(t.model, masking.Masks.ones(masking.shapes(t.model)))
        batches = []
        if pruner.needs_batches:
            th = self.hparams.training
            stream = data_lib.train_batches(t.dataset, th.batch_size, th.data_order_seed, th.augment_seed,
                                            start_step=self.k, augment=False)
            batches = list(stream.take(pruner.batch_count()))
        return pruner.mask_at(t.model, batches, level, t.masked_paths, structure=structure)

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

    def _train(self, run: layout.RunDir, mask: dict, init, trainer: Trainer | None = None,
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
        measure = self.job.measure
        out = {measure.key: result[measure.key], "test_loss": result["test_loss"],
               "density": density, "step": result["step"], "last_evals_range": last_evals_range(run)}
        if measure != ACCURACY:
            out.update(metric=measure.name, higher_is_better=measure.higher_is_better)
        return out

    @staticmethod
    def _tidy(run: layout.RunDir, keep: set[int], final: int) -> None:
        """Drop intermediate checkpoints of a finished run. Kept: the start (the ticket,
        e.g. W_k ⊙ m), the final one (what the next level prunes) and ``keep``."""
        found = run.checkpoint_steps()
        keep = set(keep) | {found[0], final}
        for s in found:
            if s not in keep:
                os.unlink(run.checkpoint(s))

    def _controls(self, level: int, method: str, mask, begin: starts.Start, add) -> None:
        """The experiment's controls on ``mask``: IMP's level mask (``method=""``) or a
        one-shot method's (rows named ``<method>/<control>``)."""
        for name in self.job.lottery.controls:
            control = starts.get_control(name)
            key = f"{method}/{name}" if method else name
            add(key, level, self._train(self.experiment.method(self.r, level, key),
                                        control.mask(mask, begin, self.pruner), lambda t: control.start(t, begin),
                                        label=f"replicate {self.r} level {level} {key}"))

    # --- levels

    def run(self, on_level=None) -> list[dict]:
        job, rows = self.job, []
        base = {"experiment": self.experiment.name, "label": job.label, "replicate": self.r}
        rewind = starts.get_reset("rewind")

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
            if not job.compared(level):
                continue
            self._controls(level, "", mask, begin, add)
            for arm in self.arms:  # one-shot methods: W_k scored, pruned to this level, trained from W_k
                arm_mask = self._arm_mask(arm, level)
                add(arm.name, level, self._train(self.experiment.method(self.r, level, arm.name), arm_mask,
                                                 lambda t: rewind.start(t, begin),
                                                 label=f"replicate {self.r} level {level} {arm.name}"))
                self._controls(level, arm.name, arm_mask, begin, add)
        logging.info("replicate %d done", self.r)
        return rows

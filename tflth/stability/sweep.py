"""Stability sweeps: pairs of copies trained from W_k with different SGD noise, per k.

For every unit of work — (replicate r, level L, method m, rewind step k, pair p) — the
sweep trains two copies of a network from the same start, built from W_k (the dense
network's full state at step k, optimizer and schedule included), that differ only in
their SGD noise (data order and/or augmentation seeds, ``noise``), to the end of
training; then it measures (``pair.json``):

* distances between the copies' final weights (:mod:`tflth.stability.distances`): over
  the prunable kernels restricted to the mask, and over all trainable weights, with the
  displacement from W_k; for a subnetwork of an IMP experiment also its *stability to
  pruning* (copy a vs the experiment's dense final weights restricted to the mask);
* the interpolation curves on the test set and a fixed training subset
  (:class:`tflth.stability.evaluate.CurveEvaluator`): instability (error barrier), loss
  barrier, and the endpoints' disagreement.

What is analysed (the *mask mode*, :attr:`StabilityJob.mask_mode`, recorded in every
``pair.json``):

* ``dense`` — no experiment: the dense network (level 0, method ``imp``);
* ``one_mask`` — one IMP experiment (``experiment``): level L's IMP mask and the controls
  on it (``random_prune``, ``random_reinit`` from :mod:`tflth.lottery.starts`, built exactly
  as the experiment builds them), the same masks (found with the experiment's rewind
  step) at every k;
* ``per_k`` — several IMP experiments that differ only in their rewind step: each k
  uses the experiment rewound to k (level L's mask, its controls, its W_k), which is the
  paper's "IMP subnetwork at k". Each k must have one; the ks default to theirs.

W_k comes from the k's experiment's level-0 checkpoints where they hold it (nothing an
experiment holds is retrained), else from a *parent*: the dense network of replicate r
trained once to the largest k missing (every such k kept).

Everything resumes: finished copies are reused, a killed copy resumes from its last
checkpoint, and a finished pair is not re-analysed unless the analysis settings changed.
``shard=(i, n)`` runs every n-th unit (the i-th of each n, 1-based) so n processes,
hosts or GPUs can split a sweep over a shared directory; the report merges whatever
pairs exist. The parent of a replicate is trained by the first shard that needs it
(a lock file keeps the others waiting).
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from tflth import data as data_lib
from tflth import fileio, masking, pruning, seeds, steps, tasks, unit_graph
from tflth.conventions import ACCURACY, IMP, Measure
from tflth.hparams import (NOISES, HparamError, PruningHparams, RunHparams, StabilityHparams, defaults_dict, field,
                           field_error, from_dict, to_dict)
from tflth.lottery import starts
from tflth.runs import layout
from tflth.runs.dirs import open_run_dir, read_result, sweep_dir
from tflth.runs.lock import RunLock
from tflth.runs.naming import ExperimentKey, SweepKey, per_k_name
from tflth.stability import alignment
from tflth.stability import curve as curve_lib
from tflth.stability import distances as distances_lib
from tflth.stability.evaluate import CurveEvaluator
from tflth.training import checkpoint
from tflth.training.kit import JobSettings, check_step_in_run, checked_model, load_mask
from tflth.training.job import train_or_resume
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["NOISES", "MASK_MODES", "StabilityHparams", "StabilityJob", "Unit"]

MASK_MODES = ("dense", "one_mask", "per_k")  # see the module docstring and StabilityJob.mask_mode
PER_K_FREE = ("rewind_step", "label")  # what per-k experiments may differ in (hparams.json keys)
# ... and what a k = 0 experiment may differ in besides: at k = 0 both optimizer choices are
# the same computation (a fresh optimizer at step 0 is the dense run's optimizer at step 0).
AT_ZERO_FREE = ("rewind_optimizer",)
_S = "StabilityHparams"


@dataclasses.dataclass(frozen=True)
class Unit:
    """One pair of copies: (replicate, level, method, k in iterations, pair)."""

    replicate: int
    level: int
    method: str
    k: int
    pair: int

    def label(self) -> str:
        return f"replicate {self.replicate} level {self.level} {self.method} k={self.k}it pair {self.pair}"


@dataclasses.dataclass(frozen=True)
class StabilityJob(JobSettings):
    """A stability sweep (``bin/stability.py``); see the module docstring.

    Args:
        run: the training hyperparameters of the dense network (with ``experiment``,
            they must equal the experiments').
        stability: :class:`StabilityHparams`.
        experiment: what is analysed (:attr:`mask_mode`): ``None``, the dense network;
            one IMP experiment directory (``lottery_<hash>``), its level masks (and W_k)
            at every k (``one_mask``); or a sequence of two or more, which must differ only
            in their rewind step (``hparams.json``'s ``rewind_step``; every other setting
            equal, defaults included, e.g. the reset and the pruning settings): each k
            then analyses the masks of the experiment rewound to k (``per_k``), matched in
            iterations, one experiment per rewind step. In per-k mode every k of
            ``stability.rewind_steps`` needs an experiment, and empty ``rewind_steps``
            means all of theirs. A sequence of one is that one directory (one-mask mode).
        output_dir, data_dir, strategy, eval_every, checkpoint_every, model_fn: keyword
            arguments, as for every job (:class:`tflth.training.kit.JobSettings`).

    The sweep directory is ``stability_<hash>`` of :meth:`key`: in one-mask mode the
    experiment's name, in per-k mode a hash of the settings its experiments share, so a
    per-k sweep never shares a directory with a one-mask one, and adding an experiment of
    the same settings (another k) extends the same per-k sweep. Every ``pair.json``
    records ``mask_mode``, the ``experiment`` whose masks and W_k it used (its directory
    name; ``None`` for the dense network) and that experiment's rewind step
    ``experiment_k`` (iterations), and the report shows them.

    Example (per-k: the IMP subnetworks found with rewinding to 0 and to 500 iterations)::

        job = StabilityJob(run, StabilityHparams(rewind_steps=(), levels=(4,)),
                           experiment=("runs/lottery_<k=0>", "runs/lottery_<k=500>"))
        pairs = job.run_all(job.prepare())
    """

    run: RunHparams
    stability: StabilityHparams = StabilityHparams()
    experiment: str | tuple[str, ...] | None = field(
        None, "An IMP experiment directory (lottery_<hash> of bin/prune.py) whose --levels masks (and --controls on "
        "them) are analysed at every k; or several, comma-separated, that differ only in their --rewind_step: each k "
        "then analyses the masks of the one rewound to k (per-k mode). Default: the dense network.",
        text=(lambda t: tuple(e.strip() for e in t.split(",") if e.strip()) or None, lambda v: v or ""))

    def __post_init__(self):
        starts.check_names(None, self.stability.controls, owner=_S)
        e = self.experiment
        if e is not None and not isinstance(e, str):
            e = tuple(os.fspath(x) for x in e)
            e = None if not e else e[0] if len(e) == 1 else e
        object.__setattr__(self, "experiment", e)

    # ------------------------------------------------------------ identity

    @property
    def experiments(self) -> tuple[str, ...]:
        """The experiment directories given (none, one, or several in per-k mode)."""
        e = self.experiment
        return () if e is None else (e,) if isinstance(e, str) else e

    @property
    def mask_mode(self) -> str:
        """``dense`` (no experiment), ``one_mask`` (one) or ``per_k`` (several): see :data:`MASK_MODES`."""
        return MASK_MODES[min(len(self.experiments), 2)]

    def key(self) -> SweepKey:
        if self.mask_mode == "per_k":
            shared = {}  # what the experiments share, whichever is given first (a k = 0 one lacks AT_ZERO_FREE)
            for e in sorted(self.experiments, key=lambda e: layout.Experiment(e).name):
                shared.update(_settings(_read_experiment(e)))
            defaults = _settings(defaults_dict(ExperimentKey), at_zero_free=False)
            return SweepKey(self.run, "", self.stability.noise, per_k=per_k_name(shared, defaults))
        name = layout.Experiment(self.experiment).name if self.experiment else ""
        return SweepKey(self.run, name, self.stability.noise)

    @property
    def sweep(self) -> layout.Sweep:
        return sweep_dir(self.output_dir, self.key())

    @property
    def measure(self) -> Measure:
        """What the barrier is taken on and the copies compared by: test error (accuracy), or
        the task's barrier metric (:meth:`tflth.tasks.Task.badness`)."""
        return tasks.measure_of(self.run)

    @property
    def label(self) -> str:
        mode = self.mask_mode
        what = ("dense" if mode == "dense" else "IMP per-k masks" if mode == "per_k"
                else f"IMP {layout.Experiment(self.experiment).name}")
        return f"{self.run.model.name} {self.run.dataset.label} {what} ({self.stability.noise} noise)"

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it and the experiments. Writes nothing."""
        st = self.stability
        dataset, ipe, end = self.load_checked(self.run, "StabilityJob")
        if not st.rewind_steps and self.mask_mode != "per_k":
            raise field_error(_S, "rewind_steps", "", "is invalid: expected one or more steps such as 0it,100it,500it "
                              "(none: the experiments' rewind steps, with several experiments only).")
        ks = [check_step_in_run((_S, "rewind_steps"), s, ipe, end) for s in st.rewind_steps]
        for s, k in zip(st.rewind_steps, ks):
            if k >= end:
                raise field_error(_S, "rewind_steps", s, f"is iteration {k}, the end of training or past it; "
                                  f"expected steps before iteration {end}.")
        if st.noise == "init" and any(ks):
            bad = next(s for s, k in zip(st.rewind_steps, ks) if k)
            raise field_error(_S, "rewind_steps", bad, "is not step 0: noise='init' trains two networks from different "
                              "initialisations, so both start at step 0; expected 0it.")
        if st.align != "none":
            try:
                alignment._assignment()
            except alignment.AlignError as e:
                raise field_error(_S, "align", st.align, f"cannot run: {e}") from None
        if st.noise == "augment" and not data_lib.augmented(self.run.dataset):
            raise field_error(_S, "noise", st.noise, f"cannot make the copies differ: {self.run.dataset.name} is "
                              "trained without augmentation here, so both copies would see the same data in the same "
                              "order; expected data_order or data_order_and_augment (or augmentation switched on, "
                              "DatasetHparams.augment=True).")
        checked_model(self.run, dataset, self.model_fn, zoo_unchecked=True)
        if self.experiment is None:
            if st.levels != (0,) or st.controls:
                raise HparamError("StabilityJob.experiment is needed: levels other than 0 and controls analyse an IMP "
                                  "experiment's masks.", owner="StabilityJob", field="experiment")
        else:
            self._check_experiments(lambda s: steps.to_iterations(s, ipe), ks)
            if st.noise == "init" and not st.pairs < st.replicates:
                raise field_error(_S, "pairs", st.pairs, f"is too many for {st.replicates} replicate(s): with noise="
                                  "'init' and an experiment, copy b of pair p of replicate r is the experiment's "
                                  f"replicate (r + 1 + p) mod replicates; expected replicates >= 2 and pairs <= "
                                  "replicates - 1.")
        return dataset

    def _check_experiments(self, to_iterations, ks: list[int]) -> None:
        given = self.experiments
        seen: dict[str, str] = {}
        for e in given:
            real = os.path.realpath(e)
            if real in seen:
                raise field_error("StabilityJob", "experiment", ",".join(given), f"names one experiment twice "
                                  f"({seen[real]} and {e}); expected each experiment once.")
            seen[real] = e
        stored = {e: _read_experiment(e) for e in given}
        if self.mask_mode == "per_k":
            _check_same_settings(given, stored)
        for e in given:
            self._check_run(e, stored[e])
        used = given
        if self.mask_mode == "per_k":
            sources = self._per_k_sources(to_iterations, stored)
            for s, k in zip(self.stability.rewind_steps, ks):
                if k not in sources:
                    raise field_error(_S, "rewind_steps", s, f"is iteration {k}, and no experiment given was rewound "
                                      f"to it; expected rewind steps of the experiments: {_rewinds_text(sources)} "
                                      "(or no rewind steps: all of theirs).")
            used = [sources[k] for k in sorted(set(ks))] if ks else list(sources.values())
        for e in used:
            self._check_levels(e)

    def _check_run(self, experiment: str, stored: dict) -> None:
        theirs = RunHparams.from_dict(stored["run"])
        if theirs != self.run:
            mine, other = to_dict(self.run), to_dict(theirs)
            diff = [f"{group}.{k}: experiment {other[group][k]!r}, flags {mine[group][k]!r}"
                    for group in mine for k in mine[group] if mine[group][k] != other[group].get(k)]
            raise field_error("StabilityJob", "experiment", experiment, "was trained with other settings ("
                              + "; ".join(diff[:4]) + "); give the settings it was trained with (e.g. its preset).")

    def _check_levels(self, experiment: str) -> None:
        exp = layout.Experiment(experiment)
        for r in range(self.stability.replicates):
            for level in self.stability.levels:
                if not exp.level(r, level).finished():
                    raise field_error(_S, "levels", ','.join(map(str, self.stability.levels)), f"names level {level} "
                                      f"of replicate {r}, not trained in {experiment} yet; run bin/prune.py "
                                      "with more levels (or replicates) first.")

    def _per_k_sources(self, to_iterations, stored: dict | None = None) -> dict[int, str]:
        """Per-k mode: ``{rewind iteration: experiment directory}``; two experiments of one
        rewind step are an :class:`HparamError`."""
        out: dict[int, str] = {}
        for e in self.experiments:
            data = stored[e] if stored else _read_experiment(e)
            k = to_iterations(data.get("rewind_step", ExperimentKey.rewind_step))
            if k in out:
                raise field_error("StabilityJob", "experiment", ",".join(self.experiments), f"has two experiments "
                                  f"rewound to iteration {k}, {out[k]} and {e}; expected one experiment per rewind "
                                  "step.")
            out[k] = e
        return dict(sorted(out.items()))

    # ------------------------------------------------------------- units

    def rewind_iterations(self, trainer: Trainer) -> list[int]:
        if not self.stability.rewind_steps and self.mask_mode == "per_k":
            return sorted(self._per_k_sources(trainer.to_iterations))
        return sorted({trainer.to_iterations(s) for s in self.stability.rewind_steps})

    def mask_sources(self, trainer: Trainer, ks: list[int]) -> dict[int, tuple[str, int] | None]:
        """``{k: (experiment directory, its rewind iteration)}``: whose masks and W_k each k
        uses (``None``: the dense network)."""
        if self.mask_mode == "dense":
            return {k: None for k in ks}
        if self.mask_mode == "one_mask":
            e = self.experiment
            own = trainer.to_iterations(_read_experiment(e).get("rewind_step", ExperimentKey.rewind_step))
            return {k: (e, own) for k in ks}
        sources = self._per_k_sources(trainer.to_iterations)
        missing = [k for k in ks if k not in sources]
        if missing:  # prepare() refuses this; a sweep run without it says so here
            raise field_error(_S, "rewind_steps", ",".join(f"{k}it" for k in missing), "has no experiment rewound to "
                              f"it; expected rewind steps of the experiments: {_rewinds_text(sources)}.")
        return {k: (sources[k], k) for k in ks}

    def methods(self, level: int) -> list[str]:
        return [IMP] + (list(self.stability.controls) if level > 0 else [])

    def units(self, ks: list[int]) -> list[Unit]:
        """Every unit of the sweep, in order (replicate, level, method, k, pair)."""
        st = self.stability
        return [Unit(r, level, m, k, p) for r in range(st.replicates) for level in st.levels
                for m in self.methods(level) for k in ks for p in range(st.pairs)]

    def shard_units(self, ks: list[int]) -> list[Unit]:
        i, n = self.stability.shard
        return [u for j, u in enumerate(self.units(ks)) if j % n == i - 1]

    # ------------------------------------------------------------- running

    def run_all(self, dataset=None, on_pair=None) -> list[dict]:
        """Train and analyse this shard's units; returns their ``pair.json`` contents."""
        dataset = dataset if dataset is not None else self.prepare()
        sweep = self.sweep
        hparams = dict(to_dict(self.key()), label=self.label)
        if self.measure != ACCURACY:  # a task's: what the barrier is taken on
            hparams["measure"] = self.measure.to_dict()
        open_run_dir(sweep.path, hparams, defaults_dict(SweepKey))
        strategy = get_strategy(self.strategy)
        results = []
        by_replicate: dict[int, list[Unit]] = {}
        probe = Trainer(self.run, dataset=dataset, strategy=strategy, model_fn=self.model_fn)
        ks = self.rewind_iterations(probe)
        sources = self.mask_sources(probe, ks)
        for u in self.shard_units(ks):
            by_replicate.setdefault(u.replicate, []).append(u)
        for r, units in by_replicate.items():
            replicate = _SweepReplicate(self, sweep, r, dataset, strategy, ks, sources,
                                        trainer=probe if r == 0 else None)
            for unit in units:
                results.append(replicate.pair(unit))
                if on_pair:
                    on_pair(results[-1])
        return results


def _read_experiment(path: str) -> dict:
    """An IMP experiment's ``hparams.json``, checked to be one (errors name ``StabilityJob.experiment``)."""
    hp = layout.Experiment(path).hparams
    if not os.path.isfile(hp):
        raise field_error("StabilityJob", "experiment", path, "is not an IMP experiment directory "
                          "(lottery_<hash> with hparams.json, made by bin/prune.py).")
    stored = fileio.read_json(hp)
    if not isinstance(stored, dict) or not isinstance(stored.get("run"), dict) or "pruning" not in stored:
        raise field_error("StabilityJob", "experiment", path, "is not an IMP experiment: its hparams.json has no "
                          "run and pruning settings.")
    try:  # read every setting now, before anything trains: a renamed key is a damaged file, not a traceback
        RunHparams.from_dict(stored["run"])
        from_dict(PruningHparams, stored["pruning"], "pruning")
    except HparamError as e:
        raise fileio.DamagedFileError(hp, str(e)) from None
    return stored


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def _settings(stored: dict, at_zero_free: bool = True) -> dict:
    """An experiment's settings as ``{"group.field": value}``, defaults filled in (a field
    added since it was made counts as its default), without what per-k experiments may
    differ in (:data:`PER_K_FREE`)."""
    out = _flat(defaults_dict(ExperimentKey))
    out.update(_flat(stored))
    at_zero = at_zero_free and steps.parse(out["rewind_step"]) == (0, 0)
    free = PER_K_FREE + (AT_ZERO_FREE if at_zero else ())
    return {k: v for k, v in out.items() if k not in free}


def _check_same_settings(given: tuple[str, ...], stored: dict) -> None:
    """Per-k experiments must differ in nothing but the rewind step (and, for one rewound to
    k = 0, :data:`AT_ZERO_FREE`): the first field in which one differs from those before
    it is an :class:`HparamError`."""
    seen: dict[str, tuple[object, str]] = {}  # field -> (value, the first experiment that had it)
    for e in given:
        for k, v in _settings(stored[e]).items():
            if k in seen and seen[k][0] != v:
                raise field_error("StabilityJob", "experiment", ",".join(given), f"mixes experiments that differ in "
                                  f"{k} ({layout.Experiment(seen[k][1]).name}: {seen[k][0]!r}, "
                                  f"{layout.Experiment(e).name}: {v!r}); expected experiments that differ "
                                  "only in their rewind step.")
            seen.setdefault(k, (v, e))


def _rewinds_text(sources: dict[int, str]) -> str:
    return ", ".join(f"{k}it ({layout.Experiment(e).name})" for k, e in sources.items())


class _SweepReplicate:
    """One initialisation: its parent (W_k for every k), its copies and their analysis,
    all on one Trainer (one model)."""

    def __init__(self, job: StabilityJob, sweep: layout.Sweep, r: int, dataset, strategy, ks: list[int],
                 sources: dict[int, tuple[str, int] | None], trainer: Trainer | None = None):
        self.job, self.sweep, self.r, self.ks = job, sweep, r, ks
        # k -> (the experiment whose masks and W_k it uses, that experiment's rewind step), or None (dense)
        self.sources = {k: (layout.Experiment(s[0]), s[1]) if s else None for k, s in sources.items()}
        self.hparams = seeds.replicate(job.run, r)
        if trainer is None or trainer.hparams != self.hparams:
            trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy, model_fn=job.model_fn)
        self.trainer = trainer
        self.end = trainer.end_step
        self._rewinds: dict[int, str] | None = None
        self._evaluator = None
        self._graph = None  # the model's unit groups (--align)
        self._examples = None  # activation matching's inputs
        self._pruners: dict[str, pruning.Strategy] = {}

    def experiment(self, k: int) -> layout.Experiment | None:
        """The experiment k's masks and W_k come from (``None``: the dense network)."""
        source = self.sources.get(k)
        return source[0] if source else None

    # --- W_k

    def rewind_checkpoint(self, k: int) -> str:
        """The checkpoint holding W_k (training the parent the first time it is needed)."""
        if self._rewinds is None:
            self._rewinds = self._rewind_points()
        return self._rewinds[k]

    def _rewind_points(self) -> dict[int, str]:
        found = {}
        for k in self.ks:
            experiment = self.experiment(k)
            if experiment is not None:
                level0 = experiment.level(self.r, 0)
                if k in level0.checkpoint_steps():
                    found[k] = level0.checkpoint(k)
        missing = [k for k in self.ks if k not in found]
        if missing:
            parent = self.sweep.parent(self.r)
            with RunLock(parent.path, enabled=is_chief()):  # the other workers train it with the chief
                train_or_resume(self.trainer, parent.path, masks=self._level_mask(0), end_step=max(missing),
                                save_steps=missing,
                                checkpoint_every=self.job.checkpoint_every,
                                label=f"replicate {self.r} parent to k={max(missing)}it")
            have = set(parent.checkpoint_steps())
            for k in missing:
                if k not in have:
                    raise fileio.DamagedFileError(parent.checkpoint(k), "the parent run lacks this rewind point")
                found[k] = parent.checkpoint(k)
        return found

    # --- masks and starts

    def _level_mask(self, level: int, experiment: layout.Experiment | None = None,
                    replicate: int | None = None) -> masking.Masks:
        if level == 0:
            return masking.Masks.ones(masking.shapes(self.trainer.model))
        r = self.r if replicate is None else replicate
        return load_mask(experiment.level(r, level).mask, self.trainer.model)

    def _start(self, unit: Unit):
        """``(mask, start function)`` of a unit's copies (the mask is applied after the start,
        and again on a resume: checkpoints hold no masks)."""
        begin = starts.Start(rewind=self.rewind_checkpoint(unit.k), level=unit.level,
                             seed=self.hparams.training.seed)
        experiment = self.experiment(unit.k)
        mask = self._level_mask(unit.level, experiment)
        if unit.method == IMP:
            def init(t):
                t.load_checkpoint(begin.rewind)
        else:
            control = starts.get_control(unit.method)
            mask = masking.Masks(control.mask(mask, begin, self._pruning_strategy(experiment)))

            def init(t):
                control.start(t, begin)

        return mask, init

    def _pruning_strategy(self, experiment: layout.Experiment):
        """The experiment's pruning strategy, whose structure its controls keep."""
        if experiment.path not in self._pruners:
            stored = _read_experiment(experiment.path)
            self._pruners[experiment.path] = pruning.for_model(from_dict(PruningHparams, stored["pruning"]),
                                                                 self.trainer.model)
        return self._pruners[experiment.path]

    # --- one pair

    def _train_copy(self, unit: Unit, which: str, start, mask) -> tuple[dict, dict]:
        run = self.sweep.copy(unit.replicate, unit.level, unit.method, unit.k, unit.pair, which)
        d, a = seeds.copy_seeds(self.hparams.training, unit.pair, which, self.job.stability.noise)
        result = train_or_resume(self.trainer, run.path, start, masks=mask, data_order_seed=d, augment_seed=a,
                                 eval_every=self.job.eval_every, checkpoint_every=self.job.checkpoint_every,
                                 label=f"{unit.label()} copy {which}")
        final = result["step"]
        for s in run.checkpoint_steps() if is_chief() else ():  # keep the start and the final weights
            if s not in (unit.k, final):
                os.unlink(run.checkpoint(s))
        return dict(result, data_order_seed=d, augment_seed=a), checkpoint.load(run.checkpoint(final))[1]

    def pair(self, unit: Unit) -> dict:
        """Train (or reuse) the two copies of ``unit`` and analyse them (or reuse the analysis)."""
        st = self.job.stability
        path = self.sweep.pair_result(unit.replicate, unit.level, unit.method, unit.k, unit.pair)
        if os.path.exists(path):
            done = fileio.read_json(path, required=("analysis", "curve"))
            if done["analysis"] == st.analysis():
                return done
        mask, start = self._start(unit)
        mask_b, start_b, partner = self._start_b(unit, mask, start)
        result_a, w_a = self._train_copy(unit, "a", start, mask)
        result_b, w_b = self._train_copy(unit, "b", start_b, mask_b)
        union = _union(mask, mask_b)
        t0 = time.perf_counter()
        w_k = checkpoint.load(self.rewind_checkpoint(unit.k))[1]
        experiment, source = self.experiment(unit.k), self.sources.get(unit.k)
        out = {
            "sweep": self.sweep.name, "label": self.job.label, "replicate": unit.replicate,
            "level": unit.level, "method": unit.method, "k": unit.k, "end": self.end,
            "k_fraction": unit.k / self.end, "pair": unit.pair, "noise": st.noise,
            "mask_mode": self.job.mask_mode, "experiment": experiment.name if experiment else None,
            "experiment_k": source[1] if source else None,
            "density": mask.density().density, "analysis": st.analysis(),
            "copies": {"a": result_a, "b": result_b},
            "distances": self._distances(w_a, w_b, w_k, union),
            "distances_trainable": distances_lib.compare_weights(
                *(distances_lib.select_weights(w, self._trainable()) for w in (w_a, w_b)),
                reference=w_k).total.to_dict(),
            "pruning_stability": self._pruning_stability(unit, w_a, w_k, mask),
            "dense_accuracy": (read_result(experiment.level(self.r, 0).path)["test_accuracy"]
                               if experiment is not None else None),
        }
        measure = self.job.measure
        if measure != ACCURACY:  # a task's: its measure, and the dense networks' value of it
            out["measure"] = measure.to_dict()
            out["dense_measure"] = (read_result(experiment.level(self.r, 0).path)[measure.key]
                                    if experiment is not None else None)
        if partner is not None:  # copy b is another replicate's network: its initialisation and its mask
            out.update(partner_replicate=partner, density_b=mask_b.density().density,
                       mask_overlap=_overlap(mask, mask_b), mask_overlap_random=_random_overlap(mask, mask_b))
        out["curve"] = self._with_mask(union, lambda: self._curve(w_a, w_b))
        if st.align != "none":
            out["aligned"] = self._aligned(w_a, w_b, w_k, mask, mask_b)
        out["seconds"] = {"copies": result_a["seconds"] + result_b["seconds"],
                          "analysis": time.perf_counter() - t0}
        if is_chief():
            fileio.write_json(path, out)
        return out

    # --- analysis

    def _trainable(self) -> list[str]:
        return [v.path for v in self.trainer.model.trainable_variables]

    def _kernels(self, weights: dict) -> dict:
        """The masked variables' values in ``weights`` (keyed, like masks, by variable path)."""
        return {p: weights[p] for p in self.trainer.masked_paths}

    def _distances(self, w_a, w_b, w_k, mask) -> dict:
        return distances_lib.compare_weights(self._kernels(w_a), self._kernels(w_b), mask,
                                             reference=self._kernels(w_k)).to_dict()

    def _pruning_stability(self, unit: Unit, w_a, w_k, mask) -> dict | None:
        """Copy a vs the experiment's dense final weights restricted to the mask (levels ≥ 1)."""
        experiment = self.experiment(unit.k)
        if experiment is None or unit.level == 0:
            return None
        dense = experiment.level(self.r, 0)
        final = read_result(dense.path)["step"]
        full = checkpoint.load(dense.checkpoint(final))[1]
        return distances_lib.stability_to_pruning(self._kernels(w_a), self._kernels(full), mask,
                                                  reference=self._kernels(w_k)).total.to_dict()

    def _start_b(self, unit: Unit, mask, start):
        """``(mask, start, partner replicate or None)`` of copy b: copy a's, except under
        ``noise="init"``: another replicate's network of the experiment (its W_0 and its
        level mask: two tickets from different initialisations), or without an
        experiment a fresh initialisation (seed :func:`tflth.seeds.copy_init_seed`)."""
        if self.job.stability.noise != "init":
            return mask, start, None
        experiment = self.experiment(unit.k)
        if experiment is None:
            seed = seeds.copy_init_seed(self.hparams.training, unit.pair)

            def fresh(t):
                start(t)
                t.set_weights({v.path: v.numpy() for v in t.build_model(seed).variables})

            return mask, fresh, None
        partner = partner_replicate(self.r, unit.pair, self.job.stability.replicates)
        mask_b = self._level_mask(unit.level, experiment, replicate=partner)
        level0 = experiment.level(partner, 0)
        if 0 not in level0.checkpoint_steps():
            raise fileio.DamagedFileError(level0.checkpoint(0), "copy b (noise='init') starts from this replicate's "
                                          "initial weights, and the checkpoint is missing")
        begin = starts.Start(rewind=level0.checkpoint(0), level=unit.level,
                             seed=seeds.replicate(self.job.run, partner).training.seed)
        if unit.method != IMP:
            control = starts.get_control(unit.method)
            mask_b = masking.Masks(control.mask(mask_b, begin, self._pruning_strategy(experiment)))
            return mask_b, lambda t: control.start(t, begin), partner
        return mask_b, lambda t: t.load_checkpoint(begin.rewind), partner

    def _with_mask(self, mask, compute):
        """``compute()`` with ``mask`` held on the model (the union of two copies' masks),
        then the model's own mask back."""
        own = masking.masks_of(self.trainer.model)
        if own == mask:
            return compute()
        masking.apply_masks(self.trainer.model, mask)
        try:
            return compute()
        finally:
            masking.apply_masks(self.trainer.model, own)

    def _aligned(self, w_a, w_b, w_k, mask, mask_b) -> dict:
        """The pair again after copy b's hidden units are reordered to match copy a's
        (``--align``): the permutations' count, the L2 distances and the curve (both masks'
        union held while it is evaluated: a permuted ticket's mask is permuted too)."""
        st = self.job.stability
        model = self.trainer.model
        t0 = time.perf_counter()
        if self._graph is None:
            self._graph = unit_graph.unit_groups(model)
        examples = None
        if st.align == "activations":
            examples = self._align_examples(st.align_examples)
        perms, aligned, aligned_mask = alignment.align(model, w_a, w_b, method=st.align, examples=examples,
                                                       masks_b=dict(mask_b), graph=self._graph)
        seconds = time.perf_counter() - t0
        union = _union(mask, aligned_mask)
        distances = distances_lib.compare_weights(self._kernels(w_a), self._kernels(aligned), union,
                                                  reference=self._kernels(w_k)).to_dict()
        curve = self._with_mask(union, lambda: self._curve(w_a, aligned))
        moved = {n: int(np.sum(p != np.arange(len(p)))) for n, p in perms.items()}
        return {"method": st.align, "groups_permuted": len(perms), "units_moved": moved,
                "mask_overlap": _overlap(mask, aligned_mask), "distances": distances, "curve": curve,
                "seconds": seconds}

    def _align_examples(self, count: int) -> np.ndarray:
        """The first ``count`` training inputs, unaugmented (the inputs activation matching reads)."""
        if self._examples is None or len(self._examples) != count:
            xs, have = [], 0
            for x, _ in data_lib.eval_batches(self.trainer.dataset, "train", self.hparams.training.batch_size):
                xs.append(np.asarray(x))
                have += len(xs[-1])
                if have >= count:
                    break
            self._examples = np.concatenate(xs)[:count]
        return self._examples

    def _curve(self, w_a, w_b) -> dict:
        st = self.job.stability
        if self._evaluator is None:
            self._evaluator = CurveEvaluator(self.trainer, st.train_examples, st.bn, st.bn_batches)
        grid = curve_lib.alphas(st.interpolation_points, *st.alpha_range)
        return self._evaluator.curve(w_a, w_b, grid)


def _overlap(a, b) -> float | None:
    """Jaccard overlap of two masks' survivors (``None`` for dense masks: nothing to compare)."""
    both = sum(int(np.sum(np.asarray(a[p], bool) & np.asarray(b[p], bool))) for p in a)
    either = sum(int(np.sum(np.asarray(a[p], bool) | np.asarray(b[p], bool))) for p in a)
    total = sum(int(np.size(a[p])) for p in a)
    return None if either == total and both == total else both / max(either, 1)


def partner_replicate(r: int, pair: int, replicates: int) -> int:
    """The experiment replicate whose network is copy b of ``pair`` for replicate ``r`` under
    ``noise="init"``: ``(r + 1 + pair) mod replicates`` (never ``r`` while ``pair <
    replicates - 1``)."""
    return (r + 1 + pair) % replicates


def _union(a, b) -> masking.Masks:
    return masking.Masks({p: np.asarray(a[p], bool) | np.asarray(b[p], bool) for p in a})


def _random_overlap(a, b) -> float | None:
    """The Jaccard overlap two random masks with ``a``'s and ``b``'s per-variable counts
    have on average (the ratio of the expected intersection, Σ n_a·n_b / n, to the expected
    union), ``None`` for dense masks."""
    inter = union = 0.0
    for p in a:
        n, ca, cb = np.size(a[p]), int(np.sum(a[p])), int(np.sum(b[p]))
        inter += ca * cb / n
        union += ca + cb - ca * cb / n
    return None if inter == union else inter / union

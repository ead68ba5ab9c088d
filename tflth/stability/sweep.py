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
import math
import os
import socket
import time
from collections.abc import Callable

from absl import logging

from tflth import data as data_lib
from tflth import fileio, masking, paths, pruning, steps
from tflth.lottery import starts
from tflth.hparams import HparamError, PruningHparams, RunHparams, field_error, field_note, defaults_dict, identity, run_hash, to_dict
from tflth.lottery.job import ExperimentKey, load_level_mask, replicate_hparams
from tflth.stability import curve as curve_lib
from tflth.stability import distances as distances_lib
from tflth.stability.evaluate import BN_MODES, CurveEvaluator
from tflth.training import checkpoint
from tflth.training.job import (check_output_dir, check_schedule_steps, check_step_in_run, checked_model, load_for_run,
                                open_run_dir, read_result, train_or_resume)
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["NOISES", "MASK_MODES", "StabilityHparams", "SweepKey", "StabilityJob", "Unit", "copy_seeds"]

NOISES = ("data_order_and_augment", "data_order", "augment", "none")
MAX_INTERPOLATION_POINTS = 1000  # each point costs a full evaluation per pair (see StabilityHparams)
COPY_SEED_OFFSET = 7919  # copy j of a pair draws seeds = replicate seeds + offset * j
DENSE = "imp"  # the method name of the dense network at level 0 and of IMP's subnetworks
MASK_MODES = ("dense", "one_mask", "per_k")  # see the module docstring and StabilityJob.mask_mode
PER_K_FREE = ("rewind_step", "label")  # what per-k experiments may differ in (hparams.json keys)
# ... and what an experiment rewound to k = 0 may differ in too: at step 0 the optimizer has no
# state, so "state" and "fresh" are one computation under two names
AT_ZERO_FREE = ("rewind_optimizer",)


_S = "StabilityHparams"


def _flag_error(field: str, value, expected: str) -> HparamError:
    return field_error(_S, field, value, f"is invalid: expected {expected}.")


@dataclasses.dataclass(frozen=True)
class StabilityHparams:
    """What a stability sweep trains and how it analyses each pair.

    ``rewind_steps`` (step notation; empty: the experiments' rewind steps, in per-k mode
    only, see :class:`StabilityJob`), ``pairs`` per initialisation, ``replicates``
    (initialisations: seeds + r as in IMP), ``levels`` of the experiment (``(0,)``: the
    dense network) and ``controls`` on their masks say *which* units exist; ``noise`` how
    the two copies differ (``none`` makes them identical: a check of the instrument);
    the rest is the analysis: ``bn`` (``recompute`` or ``interpolate``),
    ``interpolation_points`` over ``alpha_range``, ``train_examples`` (the fixed training
    subset of the train curve; all of it when the set is smaller), ``bn_batches`` (training batches BN statistics are
    recomputed over); ``shard`` = (i, n), 1 ≤ i ≤ n.
    """

    rewind_steps: tuple[str, ...] = ("0it",)
    pairs: int = 1
    replicates: int = 1
    levels: tuple[int, ...] = (0,)
    controls: tuple[str, ...] = ()
    noise: str = "data_order_and_augment"
    bn: str = "recompute"
    interpolation_points: int = curve_lib.PAPER_POINTS
    alpha_range: tuple[float, float] = (0.0, 1.0)
    train_examples: int = 10_000
    bn_batches: int = 20
    shard: tuple[int, int] = (1, 1)

    def __post_init__(self):
        for name in ("rewind_steps", "levels", "controls", "alpha_range", "shard"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for s in self.rewind_steps:  # empty: the experiments' (per-k mode; StabilityJob.prepare checks)
            try:
                steps.parse(s)
            except steps.StepError as e:
                raise field_note(_S, "rewind_steps", str(e), s) from None
        for name in ("pairs", "replicates", "interpolation_points", "bn_batches"):
            value = getattr(self, name)
            low = 2 if name == "interpolation_points" else 1
            if int(value) != value or value < low:
                raise _flag_error(name, value, f"an integer >= {low}"
                                  + (" (the two endpoints at least)" if low == 2 else ""))
        if self.interpolation_points > MAX_INTERPOLATION_POINTS:
            raise _flag_error("interpolation_points", self.interpolation_points,
                              f"at most {MAX_INTERPOLATION_POINTS}: each point is one evaluation of the test set "
                              f"(and of the train subset) per pair, and the paper's curves use "
                              f"{curve_lib.PAPER_POINTS}")
        if int(self.train_examples) != self.train_examples or self.train_examples < 0:
            raise _flag_error("train_examples", self.train_examples, "an integer >= 0 (0: no train curve)")
        if not self.levels or any(int(v) != v or v < 0 for v in self.levels) or len(set(self.levels)) != len(
                self.levels):
            raise _flag_error("levels", ",".join(map(str, self.levels)), "distinct integers >= 0, e.g. 0,4,8")
        for c in self.controls:
            if c not in starts.CONTROLS:
                raise field_note(_S, "controls", f"unknown control {c!r}: expected some of {list(starts.CONTROLS)}.",
                                 c)
        if self.noise not in NOISES:
            raise _flag_error("noise", self.noise, f"one of {list(NOISES)}")
        if self.bn not in BN_MODES:
            raise _flag_error("bn", self.bn, f"one of {list(BN_MODES)}")
        low, high = self.alpha_range if len(self.alpha_range) == 2 else (None, None)
        if low is None or not (math.isfinite(low) and math.isfinite(high) and low <= 0.0 < 1.0 <= high):
            raise _flag_error("alpha_range", ",".join(map(str, self.alpha_range)),
                              "two finite numbers low,high with low <= 0 and high >= 1")
        i, n = self.shard if len(self.shard) == 2 else (0, 0)
        if not (int(n) == n and int(i) == i and 1 <= i <= n):
            raise _flag_error("shard", "/".join(map(str, self.shard)), "I/N with 1 <= I <= N, e.g. 1/4")

    def analysis(self) -> dict:
        """The settings a pair's analysis depends on (a pair analysed otherwise is redone)."""
        return {"bn": self.bn, "interpolation_points": self.interpolation_points,
                "alpha_range": list(self.alpha_range), "train_examples": self.train_examples,
                "bn_batches": self.bn_batches}


@dataclasses.dataclass(frozen=True)
class SweepKey:
    """What names a sweep directory (``stability_<hash>``): what the copies are trained
    from and with. Rewind steps, pairs, replicates, levels and controls only add units
    (in per-k mode, so does another experiment of the same settings: another k)."""

    run: RunHparams = RunHparams()
    experiment: str = ""  # one-mask mode: the IMP experiment's directory name (lottery_<hash>)
    noise: str = "data_order_and_augment"
    per_k: str = ""  # per-k mode: a hash of what its experiments share (all but the rewind step)


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


def copy_seeds(training, pair: int, which: str, noise: str) -> tuple[int, int]:
    """(data_order_seed, augment_seed) of copy ``which`` (a/b) of ``pair``; ``training``
    holds the replicate's seeds. ``noise`` says which of the two differ between copies."""
    j = 1 + 2 * pair + (0 if which == "a" else 1)
    d, a = training.data_order_seed, training.augment_seed
    if noise in ("data_order_and_augment", "data_order"):
        d += COPY_SEED_OFFSET * j
    if noise in ("data_order_and_augment", "augment"):
        a += COPY_SEED_OFFSET * j
    return d, a


@dataclasses.dataclass(frozen=True)
class StabilityJob:
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
        output_dir, data_dir, strategy, eval_every, checkpoint_every: as for training.
        model_fn: the model factory instead of ``run.model.name``'s (as for
            :class:`tflth.lottery.LotteryJob`).

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
    experiment: str | tuple[str, ...] | None = None
    output_dir: str = "runs"
    data_dir: str | None = None
    strategy: str = "auto"
    eval_every: str | None = None
    checkpoint_every: str | None = "1ep"
    model_fn: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
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
            for e in sorted(self.experiments, key=lambda e: paths.Experiment(e).name):
                shared.update(_settings(_read_experiment(e)))
            defaults = _settings(defaults_dict(ExperimentKey), at_zero_free=False)
            return SweepKey(self.run, "", self.stability.noise, per_k=run_hash(
                {k: v for k, v in shared.items() if k not in defaults or defaults[k] != v}))
        name = paths.Experiment(self.experiment).name if self.experiment else ""
        return SweepKey(self.run, name, self.stability.noise)

    @property
    def sweep(self) -> paths.Sweep:
        return paths.sweep(self.output_dir, run_hash(identity(self.key())))

    @property
    def label(self) -> str:
        mode = self.mask_mode
        what = ("dense" if mode == "dense" else "IMP per-k masks" if mode == "per_k"
                else f"IMP {paths.Experiment(self.experiment).name}")
        return f"{self.run.model.name} {self.run.dataset.name} {what} ({self.stability.noise} noise)"

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it and the experiments. Writes nothing."""
        st = self.stability
        check_output_dir("StabilityJob", self.output_dir)
        dataset, ipe, end = load_for_run(self.run, self.data_dir)
        if not st.rewind_steps and self.mask_mode != "per_k":
            raise _flag_error("rewind_steps", "", "one or more steps such as 0it,100it,500it (none: the experiments' "
                              "rewind steps, with several experiments only)")
        ks = [check_step_in_run((_S, "rewind_steps"), s, ipe, end) for s in st.rewind_steps]
        for s, k in zip(st.rewind_steps, ks):
            if k >= end:
                raise field_error(_S, "rewind_steps", s, f"is iteration {k}, the end of training or past it; "
                                  f"expected steps before iteration {end}.")
        check_schedule_steps(self.run.training, self.eval_every, self.checkpoint_every, ipe, end, "StabilityJob")
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
                              + "; ".join(diff[:4]) + "); give the flags it was trained with (e.g. its --preset).")

    def _check_levels(self, experiment: str) -> None:
        exp = paths.Experiment(experiment)
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
        return [DENSE] + (list(self.stability.controls) if level > 0 else [])

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
    hp = paths.Experiment(path).hparams
    if not os.path.isfile(hp):
        raise field_error("StabilityJob", "experiment", path, "is not an IMP experiment directory "
                          "(lottery_<hash> with hparams.json, made by bin/prune.py).")
    stored = fileio.read_json(hp)
    if not isinstance(stored, dict) or not isinstance(stored.get("run"), dict) or "pruning" not in stored:
        raise field_error("StabilityJob", "experiment", path, "is not an IMP experiment: its hparams.json has no "
                          "run and pruning settings.")
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
                                  f"{k} ({paths.Experiment(seen[k][1]).name}: {seen[k][0]!r}, "
                                  f"{paths.Experiment(e).name}: {v!r}); expected experiments that differ "
                                  "only in their rewind step.")
            seen.setdefault(k, (v, e))


def _rewinds_text(sources: dict[int, str]) -> str:
    return ", ".join(f"{k}it ({paths.Experiment(e).name})" for k, e in sources.items())


class _SweepReplicate:
    """One initialisation: its parent (W_k for every k), its copies and their analysis,
    all on one Trainer (one model)."""

    def __init__(self, job: StabilityJob, sweep: paths.Sweep, r: int, dataset, strategy, ks: list[int],
                 sources: dict[int, tuple[str, int] | None], trainer: Trainer | None = None):
        self.job, self.sweep, self.r, self.ks = job, sweep, r, ks
        # k -> (the experiment whose masks and W_k it uses, that experiment's rewind step), or None (dense)
        self.sources = {k: (paths.Experiment(s[0]), s[1]) if s else None for k, s in sources.items()}
        self.hparams = replicate_hparams(job.run, r)
        if trainer is None or trainer.hparams != self.hparams:
            trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy, model_fn=job.model_fn)
        self.trainer = trainer
        self.end = trainer.end_step
        self._rewinds: dict[int, str] | None = None
        self._evaluator = None
        self._pruners: dict[str, pruning.Strategy] = {}

    def experiment(self, k: int) -> paths.Experiment | None:
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
            with _ParentLock(parent.path, enabled=is_chief()):  # the other workers train it with the chief
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

    def _level_mask(self, level: int, experiment: paths.Experiment | None = None) -> masking.Masks:
        if level == 0:
            return masking.Masks.ones(masking.shapes(self.trainer.model))
        return load_level_mask(experiment.level(self.r, level).mask, self.trainer)

    def _start(self, unit: Unit):
        """``(mask, start function)`` of a unit's copies (the mask is applied after the start,
        and again on a resume: checkpoints hold no masks)."""
        begin = starts.Start(rewind=self.rewind_checkpoint(unit.k), level=unit.level,
                             seed=self.hparams.training.seed)
        experiment = self.experiment(unit.k)
        mask = self._level_mask(unit.level, experiment)
        if unit.method == DENSE:
            def init(t):
                t.load_checkpoint(begin.rewind)
        else:
            control = starts.get_control(unit.method)
            mask = masking.Masks(control.mask(mask, begin, self._pruning_strategy(experiment)))

            def init(t):
                control.start(t, begin)

        return mask, init

    def _pruning_strategy(self, experiment: paths.Experiment):
        """The experiment's pruning strategy, whose structure its controls keep."""
        if experiment.path not in self._pruners:
            stored = fileio.read_json(experiment.hparams)
            self._pruners[experiment.path] = pruning.strategy_for(PruningHparams(**stored["pruning"]),
                                                                  layouts=pruning.layouts(self.trainer.model))
        return self._pruners[experiment.path]

    # --- one pair

    def _train_copy(self, unit: Unit, which: str, start, mask) -> tuple[dict, dict]:
        run = self.sweep.copy(unit.replicate, unit.level, unit.method, unit.k, unit.pair, which)
        d, a = copy_seeds(self.hparams.training, unit.pair, which, self.job.stability.noise)
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
        result_a, w_a = self._train_copy(unit, "a", start, mask)
        result_b, w_b = self._train_copy(unit, "b", start, mask)
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
            "distances": self._distances(w_a, w_b, w_k, mask),
            "distances_trainable": distances_lib.compare_weights(
                *(distances_lib.select_weights(w, self._trainable()) for w in (w_a, w_b)),
                reference=w_k).total.to_dict(),
            "pruning_stability": self._pruning_stability(unit, w_a, w_k, mask),
            "dense_accuracy": (read_result(experiment.level(self.r, 0).path)["test_accuracy"]
                               if experiment is not None else None),
        }
        out["curve"] = self._curve(w_a, w_b)
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

    def _curve(self, w_a, w_b) -> dict:
        st = self.job.stability
        if self._evaluator is None:
            self._evaluator = CurveEvaluator(self.trainer, st.train_examples, st.bn, st.bn_batches)
        grid = curve_lib.alphas(st.interpolation_points, *st.alpha_range)
        return self._evaluator.curve(w_a, w_b, grid)


class _ParentLock:
    """An exclusive lock file beside a parent run, so one shard trains it while the
    others wait. A lock left by a killed process on this host is taken over; one left
    on another host must be removed by hand (the message says which file)."""

    def __init__(self, run_dir: str, poll: float = 5.0, enabled: bool = True):
        self.path = run_dir.rstrip("/") + ".lock"
        self.poll = poll
        self.enabled = enabled
        self.held = False

    def _owner_dead(self) -> bool:
        try:
            host, pid = open(self.path).read().split()
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __enter__(self):
        if not self.enabled:
            return self
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        told = False
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if self._owner_dead():
                    os.unlink(self.path)
                    continue
                if not told:
                    logging.info("Waiting for %s: another shard is training this parent (remove the file if "
                                 "no process is).", self.path)
                    told = True
                time.sleep(self.poll)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{socket.gethostname()} {os.getpid()}\n")
            self.held = True
            return self

    def __exit__(self, *exc):
        if self.held:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

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

What is analysed: the dense network (level 0, method ``imp``), or — with an IMP
experiment (``experiment``) — level L's IMP mask and the controls on it
(``random_prune``, ``random_reinit`` from :mod:`tflth.lottery.starts`, built exactly as the
experiment builds them). W_k comes from a *parent*: the dense network of replicate r
trained once to the largest k (every k kept); an experiment's level-0 checkpoints are
reused where they hold the k asked for, and nothing the experiment holds is retrained.

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
from tflth.lottery.job import load_level_mask, replicate_hparams
from tflth.stability import curve as curve_lib
from tflth.stability import distances as distances_lib
from tflth.stability.evaluate import BN_MODES, CurveEvaluator
from tflth.training import checkpoint
from tflth.training.job import (check_output_dir, check_schedule_steps, check_step_in_run, checked_model, load_for_run,
                                open_run_dir, read_result, train_or_resume)
from tflth.training.strategy import get_strategy, is_chief
from tflth.training.trainer import Trainer

__all__ = ["NOISES", "StabilityHparams", "SweepKey", "StabilityJob", "Unit", "copy_seeds"]

NOISES = ("data_order_and_augment", "data_order", "augment", "none")
MAX_INTERPOLATION_POINTS = 1000  # each point costs a full evaluation per pair (see StabilityHparams)
COPY_SEED_OFFSET = 7919  # copy j of a pair draws seeds = replicate seeds + offset * j
DENSE = "imp"  # the method name of the dense network at level 0 and of IMP's subnetworks


_S = "StabilityHparams"


def _flag_error(field: str, value, expected: str) -> HparamError:
    return field_error(_S, field, value, f"is invalid: expected {expected}.")


@dataclasses.dataclass(frozen=True)
class StabilityHparams:
    """What a stability sweep trains and how it analyses each pair.

    ``rewind_steps`` (step notation), ``pairs`` per initialisation, ``replicates``
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
        if not self.rewind_steps:
            raise _flag_error("rewind_steps", "", "one or more steps such as 0it,100it,500it")
        for s in self.rewind_steps:
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
    from and with. Rewind steps, pairs, replicates, levels and controls only add units."""

    run: RunHparams = RunHparams()
    experiment: str = ""  # the IMP experiment's directory name (lottery_<hash>), if any
    noise: str = "data_order_and_augment"


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
            they must equal the experiment's).
        stability: :class:`StabilityHparams`.
        experiment: an IMP experiment directory (``lottery_<hash>``) whose level masks
            and W_k are analysed; ``None``: the dense network.
        output_dir, data_dir, strategy, eval_every, checkpoint_every: as for training.
        model_fn: the model factory instead of ``run.model.name``'s (as for
            :class:`tflth.lottery.LotteryJob`).
    """

    run: RunHparams
    stability: StabilityHparams = StabilityHparams()
    experiment: str | None = None
    output_dir: str = "runs"
    data_dir: str | None = None
    strategy: str = "auto"
    eval_every: str | None = None
    checkpoint_every: str | None = "1ep"
    model_fn: Callable | None = dataclasses.field(default=None, compare=False, repr=False)

    # ------------------------------------------------------------ identity

    def key(self) -> SweepKey:
        name = paths.Experiment(self.experiment).name if self.experiment else ""
        return SweepKey(self.run, name, self.stability.noise)

    @property
    def sweep(self) -> paths.Sweep:
        return paths.sweep(self.output_dir, run_hash(identity(self.key())))

    @property
    def label(self) -> str:
        what = f"IMP {paths.Experiment(self.experiment).name}" if self.experiment else "dense"
        return f"{self.run.model.name} {self.run.dataset.name} {what} ({self.stability.noise} noise)"

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it and the experiment. Writes nothing."""
        st = self.stability
        check_output_dir("StabilityJob", self.output_dir)
        dataset, ipe, end = load_for_run(self.run, self.data_dir)
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
            self._check_experiment()
        return dataset

    def _check_experiment(self) -> None:
        exp = paths.Experiment(self.experiment)
        if not os.path.isfile(exp.hparams):
            raise field_error("StabilityJob", "experiment", self.experiment, "is not an IMP experiment directory "
                              "(lottery_<hash> with hparams.json, made by bin/prune.py).")
        stored = fileio.read_json(exp.hparams)
        if not isinstance(stored, dict) or "run" not in stored or "pruning" not in stored:
            raise field_error("StabilityJob", "experiment", self.experiment, "is not an IMP experiment: its "
                              "hparams.json has no "
                              "run and pruning settings.")
        theirs = RunHparams.from_dict(stored["run"])
        if theirs != self.run:
            mine, other = to_dict(self.run), to_dict(theirs)
            diff = [f"{group}.{k}: experiment {other[group][k]!r}, flags {mine[group][k]!r}"
                    for group in mine for k in mine[group] if mine[group][k] != other[group].get(k)]
            raise field_error("StabilityJob", "experiment", self.experiment, "was trained with other settings ("
                              + "; ".join(diff[:4]) + "); give the flags it was trained with (e.g. its --preset).")
        for r in range(self.stability.replicates):
            for level in self.stability.levels:
                run = exp.level(r, level)
                if not run.finished():
                    raise field_error(_S, "levels", ','.join(map(str, self.stability.levels)), f"names level {level} of "
                                      f"replicate {r}, not trained in {self.experiment} yet; run bin/prune.py "
                                      "with more levels (or replicates) first.")

    # ------------------------------------------------------------- units

    def rewind_iterations(self, trainer: Trainer) -> list[int]:
        return sorted({trainer.to_iterations(s) for s in self.stability.rewind_steps})

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
        for u in self.shard_units(ks):
            by_replicate.setdefault(u.replicate, []).append(u)
        for r, units in by_replicate.items():
            replicate = _SweepReplicate(self, sweep, r, dataset, strategy, ks,
                                   trainer=probe if r == 0 else None)
            for unit in units:
                results.append(replicate.pair(unit))
                if on_pair:
                    on_pair(results[-1])
        return results


class _SweepReplicate:
    """One initialisation: its parent (W_k for every k), its copies and their analysis,
    all on one Trainer (one model)."""

    def __init__(self, job: StabilityJob, sweep: paths.Sweep, r: int, dataset, strategy, ks: list[int],
                 trainer: Trainer | None = None):
        self.job, self.sweep, self.r, self.ks = job, sweep, r, ks
        self.hparams = replicate_hparams(job.run, r)
        if trainer is None or trainer.hparams != self.hparams:
            trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy, model_fn=job.model_fn)
        self.trainer = trainer
        self.end = trainer.end_step
        self.experiment = paths.Experiment(job.experiment) if job.experiment else None
        self._rewinds: dict[int, str] | None = None
        self._evaluator = None
        self._pruner = None

    # --- W_k

    def rewind_checkpoint(self, k: int) -> str:
        """The checkpoint holding W_k (training the parent the first time it is needed)."""
        if self._rewinds is None:
            self._rewinds = self._rewind_points()
        return self._rewinds[k]

    def _rewind_points(self) -> dict[int, str]:
        found = {}
        if self.experiment is not None:
            level0 = self.experiment.level(self.r, 0)
            found = {k: level0.checkpoint(k) for k in self.ks if k in level0.checkpoint_steps()}
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

    def _level_mask(self, level: int) -> masking.Masks:
        if level == 0:
            return masking.Masks.ones(masking.shapes(self.trainer.model))
        return load_level_mask(self.experiment.level(self.r, level).mask, self.trainer)

    def _start(self, unit: Unit):
        """``(mask, start function)`` of a unit's copies (the mask is applied after the start,
        and again on a resume: checkpoints hold no masks)."""
        begin = starts.Start(rewind=self.rewind_checkpoint(unit.k), level=unit.level,
                             seed=self.hparams.training.seed)
        mask = self._level_mask(unit.level)
        if unit.method == DENSE:
            def init(t):
                t.load_checkpoint(begin.rewind)
        else:
            control = starts.get_control(unit.method)
            mask = masking.Masks(control.mask(mask, begin, self._pruning_strategy()))

            def init(t):
                control.start(t, begin)

        return mask, init

    def _pruning_strategy(self):
        """The experiment's pruning strategy, whose structure its controls keep."""
        if self._pruner is None:
            stored = fileio.read_json(self.experiment.hparams)
            self._pruner = pruning.strategy_for(PruningHparams(**stored["pruning"]),
                                                layouts=pruning.layouts(self.trainer.model))
        return self._pruner

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
        out = {
            "sweep": self.sweep.name, "label": self.job.label, "replicate": unit.replicate,
            "level": unit.level, "method": unit.method, "k": unit.k, "end": self.end,
            "k_fraction": unit.k / self.end, "pair": unit.pair, "noise": st.noise,
            "density": mask.density().density, "analysis": st.analysis(),
            "copies": {"a": result_a, "b": result_b},
            "distances": self._distances(w_a, w_b, w_k, mask),
            "distances_trainable": distances_lib.compare_weights(
                *(distances_lib.select_weights(w, self._trainable()) for w in (w_a, w_b)),
                reference=w_k).total.to_dict(),
            "pruning_stability": self._pruning_stability(unit, w_a, w_k, mask),
            "dense_accuracy": (read_result(self.experiment.level(self.r, 0).path)["test_accuracy"]
                               if self.experiment is not None else None),
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
        if self.experiment is None or unit.level == 0:
            return None
        dense = self.experiment.level(self.r, 0)
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

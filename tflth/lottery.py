"""Iterative magnitude pruning (IMP) with rewinding, its reset modes and controls.

Layout of one experiment (the directory is named by a hash of every hyperparameter that
changes a result, so rerunning the same command resumes it)::

    lottery_<hash>/hparams.json
    lottery_<hash>/replicate_<r>/level_<L>/        one training run (Trainer run dir)
        mask.npz  density.json  checkpoints/  metrics.jsonl  result.json
    lottery_<hash>/replicate_<r>/level_<L>/<control>/   a control trained on level L's mask

Level 0 trains the dense network and keeps W_k, the full state at the rewind step k.
Level L ≥ 1 prunes level L-1's final weights, resets, and trains to the end:

* ``rewind``: weights W_k ⊙ m, optimizer state and schedule position of step k
  (k = 0 is the original lottery ticket);
* ``lr_rewind``: keep level L-1's final weights ⊙ m, replay the schedule from k with the
  optimizer state of step k (Renda et al. 2020);
* ``finetune``: keep the final weights ⊙ m and train T-k more steps at the final rate
  with a fresh optimizer.

Controls on level L's mask, trained exactly like IMP's level L except for what they
control: ``random_reinit`` (same mask, weights from a new initialisation seed) and
``random_prune`` (a random mask with the same per-layer survivor counts, weights W_k).
A finished level (``result.json``) is never recomputed; a killed one resumes from its
latest checkpoint; raising ``levels`` extends a finished experiment.
"""

from __future__ import annotations

import dataclasses
import os

from absl import logging

from tflth import masks as masks_lib
from tflth import models, pruning, steps
from tflth.hparams import HparamError, PruningHparams, RunHparams, run_hash, to_dict
from tflth.training import checkpoint
from tflth.training.job import check_schedule_steps, check_step_in_run, load_for_run, open_run_dir
from tflth.training.metrics import read_json, write_json
from tflth.training.strategy import get_strategy
from tflth.training.trainer import Trainer

__all__ = ["RESETS", "CONTROLS", "LotteryHparams", "LotteryJob"]

RESETS = ("rewind", "finetune", "lr_rewind")
CONTROLS = ("random_reinit", "random_prune")
REINIT_SEED_OFFSET = 100_003  # new-initialisation seed = seed + offset + level


@dataclasses.dataclass(frozen=True)
class LotteryHparams:
    levels: int = 8
    rewind_step: str = "0it"
    reset: str = "rewind"
    controls: tuple[str, ...] = ()
    replicates: int = 1

    def __post_init__(self):
        object.__setattr__(self, "controls", tuple(self.controls))
        if int(self.levels) != self.levels or self.levels < 0:
            raise HparamError(f"--levels={self.levels} is invalid: expected an integer >= 0.")
        try:
            steps.parse(self.rewind_step)
        except steps.StepError as e:
            raise HparamError(f"--rewind_step: {e}") from None
        if self.reset not in RESETS:
            raise HparamError(f"--reset={self.reset!r} is invalid: expected one of {list(RESETS)}.")
        for c in self.controls:
            if c not in CONTROLS:
                raise HparamError(f"--controls: unknown control {c!r}: expected some of {list(CONTROLS)}.")
        if int(self.replicates) != self.replicates or self.replicates < 1:
            raise HparamError(f"--replicates={self.replicates} is invalid: expected an integer >= 1.")


def _replicate_hparams(run: RunHparams, r: int) -> RunHparams:
    t = run.training
    return dataclasses.replace(run, training=dataclasses.replace(
        t, seed=t.seed + r, data_order_seed=t.data_order_seed + r, augment_seed=t.augment_seed + r))


@dataclasses.dataclass(frozen=True)
class LotteryJob:
    run: RunHparams
    pruning: PruningHparams = PruningHparams()
    lottery: LotteryHparams = LotteryHparams()
    output_dir: str = "runs"
    data_dir: str | None = None
    strategy: str = "auto"
    eval_every: str | None = "1ep"
    checkpoint_every: str | None = "1ep"

    # ------------------------------------------------------------ identity

    def identity(self) -> dict:
        """What determines results (not ``levels``, ``controls`` or ``replicates``,
        which only add runs to the same experiment)."""
        return {"run": self.run.to_dict(), "pruning": to_dict(self.pruning),
                "rewind_step": self.lottery.rewind_step, "reset": self.lottery.reset}

    @property
    def experiment_dir(self) -> str:
        return os.path.join(self.output_dir, f"lottery_{run_hash(self.identity())}")

    @property
    def label(self) -> str:
        return (f"{self.run.model.name} {self.run.dataset.name} {self.pruning.scope} "
                f"{self.lottery.reset}@{self.lottery.rewind_step}")

    def level_dir(self, replicate: int, level: int, control: str | None = None) -> str:
        d = os.path.join(self.experiment_dir, f"replicate_{replicate}", f"level_{level}")
        return os.path.join(d, control) if control else d

    # ---------------------------------------------------------- validation

    def prepare(self):
        """Load data and validate every setting against it. Writes nothing."""
        dataset, ipe, end = load_for_run(self.run, self.data_dir)
        k = check_step_in_run("--rewind_step", self.lottery.rewind_step, ipe, end)
        if k == end:
            raise HparamError(f"--rewind_step={self.lottery.rewind_step} is the end of training; "
                              f"expected a step before iteration {end}.")
        check_schedule_steps(self.run.training, self.eval_every, self.checkpoint_every, ipe, end)
        overrides = {"width": self.run.model.width} if self.run.model.width else {}
        model = models.get(self.run.model.name, dataset.input_shape, dataset.num_classes, **overrides)
        pruning.check_layer_rates(self.pruning.layer_rates, list(masks_lib.prunable_layers(model)))
        return dataset

    # ------------------------------------------------------------- running

    def run_all(self, dataset=None, on_level=None) -> list[dict]:
        """Every replicate, level and control; returns result rows (see tflth.report)."""
        dataset = dataset if dataset is not None else self.prepare()
        identity = dict(self.identity(), label=self.label)
        open_run_dir(self.experiment_dir, identity)
        strategy = get_strategy(self.strategy)
        rows = []
        for r in range(self.lottery.replicates):
            rows += _Replicate(self, r, dataset, strategy).run(on_level)
        return rows


class _Replicate:
    """One IMP trajectory: one Trainer (one model) reused for every level and control."""

    def __init__(self, job: LotteryJob, r: int, dataset, strategy):
        self.job, self.r = job, r
        self.hparams = _replicate_hparams(job.run, r)
        self.trainer = Trainer(self.hparams, dataset=dataset, strategy=strategy)
        self.k = self.trainer.to_iterations(job.lottery.rewind_step)
        self.end = self.trainer.end_step
        self._finetuner = None
        self.layers = masks_lib.prunable_layers(self.trainer.model)
        self.pruner = pruning.MagnitudePruning(job.pruning)

    # --- helpers

    def _final_checkpoint(self, level_dir: str) -> str:
        return checkpoint.path_for(os.path.join(level_dir, "checkpoints"), read_json(
            os.path.join(level_dir, "result.json"))["step"])

    def _rewind_checkpoint(self) -> str:
        return checkpoint.path_for(os.path.join(self.job.level_dir(self.r, 0), "checkpoints"), self.k)

    def _kernels(self, ckpt_path: str) -> dict:
        _, weights, _ = checkpoint.load(ckpt_path)
        return {p: weights[layer.kernel_variable.path] for p, layer in self.layers.items()}

    def _mask_for(self, level: int) -> dict:
        """Level ``level``'s IMP mask (computed once from level-1's final weights, then stored)."""
        if level == 0:
            return masks_lib.ones_like(self.trainer.model)
        path = os.path.join(self.job.level_dir(self.r, level), "mask.npz")
        if os.path.exists(path):
            return masks_lib.load_masks(path)
        prev = self.job.level_dir(self.r, level - 1)
        mask = self.pruner(self._kernels(self._final_checkpoint(prev)), self._mask_for(level - 1))
        masks_lib.save_masks(path, mask)
        return mask

    def _finetune_trainer(self) -> Trainer:
        if self._finetuner is None:
            t = self.hparams.training
            ft = dataclasses.replace(t, lr=self.trainer.schedule.value_at(self.end - 1), milestones=(),
                                     warmup="0it", training_steps=f"{self.end - self.k}it")
            self._finetuner = Trainer(dataclasses.replace(self.hparams, training=ft),
                                      dataset=self.trainer.dataset, strategy=self.trainer.strategy)
        return self._finetuner

    def _weights_from(self, ckpt_path: str) -> dict:
        return checkpoint.load(ckpt_path)[1]

    # --- one training run

    def _train(self, run_dir: str, mask: dict, init, trainer: Trainer | None = None,
               keep_steps=(), label: str = "") -> dict:
        """Train one network on ``mask`` unless finished; ``init`` sets its start state."""
        trainer = trainer or self.trainer
        result_path = os.path.join(run_dir, "result.json")
        density_path = os.path.join(run_dir, "density.json")
        if not os.path.exists(result_path):
            write_json(density_path, masks_lib.density_report(mask).to_dict())
            if checkpoint.latest(os.path.join(run_dir, "checkpoints")) is None:
                init(trainer)
                masks_lib.set_masks(trainer.model, mask)
            trainer.train(run_dir, save_steps=keep_steps, eval_every=self.job.eval_every,
                          checkpoint_every=self.job.checkpoint_every, label=label)
            self._tidy(run_dir, keep=set(keep_steps))
        result = read_json(result_path)
        return {"test_accuracy": result["test_accuracy"], "test_loss": result["test_loss"],
                "density": read_json(density_path)["density"], "step": result["step"]}

    @staticmethod
    def _tidy(run_dir: str, keep: set[int]) -> None:
        """Drop intermediate checkpoints of a finished run. Kept: the start (the ticket,
        e.g. W_k ⊙ m), the final one (what the next level prunes) and ``keep``."""
        ckpt_dir = os.path.join(run_dir, "checkpoints")
        found = checkpoint.list_steps(ckpt_dir)
        keep = set(keep) | {found[0], read_json(os.path.join(run_dir, "result.json"))["step"]}
        for s in found:
            if s not in keep:
                os.unlink(checkpoint.path_for(ckpt_dir, s))

    # --- levels

    def _init_level(self, level: int):
        """The reset for IMP level ``level`` ≥ 1 (a function of the trainer)."""
        reset = self.job.lottery.reset
        prev_final = self._final_checkpoint(self.job.level_dir(self.r, level - 1))

        def init(trainer):
            if reset == "rewind":
                trainer.load_checkpoint(self._rewind_checkpoint())
            elif reset == "lr_rewind":
                trainer.load_checkpoint(self._rewind_checkpoint())
                trainer.set_weights(self._weights_from(prev_final))
            else:  # finetune
                trainer.set_weights(self._weights_from(prev_final))
                trainer.reset_optimizer(0)

        return init

    def _init_control(self, control: str, level: int):
        def init(trainer):
            trainer.load_checkpoint(self._rewind_checkpoint())
            if control == "random_reinit":
                seed = self.hparams.training.seed + REINIT_SEED_OFFSET + level
                fresh = trainer.build_model(seed)
                trainer.set_weights({v.path: v.numpy() for v in fresh.variables})

        return init

    def run(self, on_level=None) -> list[dict]:
        job, rows = self.job, []
        base = {"experiment": os.path.basename(job.experiment_dir), "label": job.label, "replicate": self.r}

        def add(method, level, res):
            rows.append(dict(base, method=method, level=level, **res))

        level0 = job.level_dir(self.r, 0)
        res = self._train(level0, self._mask_for(0), lambda t: None, keep_steps=(self.k,),
                          label=f"replicate {self.r} level 0")
        add("imp", 0, res)
        if on_level:
            on_level(rows[-1])
        for level in range(1, job.lottery.levels + 1):
            mask = self._mask_for(level)
            trainer = self._finetune_trainer() if job.lottery.reset == "finetune" else self.trainer
            res = self._train(job.level_dir(self.r, level), mask, self._init_level(level), trainer,
                              label=f"replicate {self.r} level {level}")
            add("imp", level, res)
            if on_level:
                on_level(rows[-1])
            for control in job.lottery.controls:
                cmask = mask if control == "random_reinit" else pruning.random_like(
                    mask, seed=self.hparams.training.seed + REINIT_SEED_OFFSET + level)
                res = self._train(job.level_dir(self.r, level, control), cmask,
                                  self._init_control(control, level), label=f"replicate {self.r} level {level} {control}")
                add(control, level, res)
                if on_level:
                    on_level(rows[-1])
        logging.info("replicate %d done", self.r)
        return rows

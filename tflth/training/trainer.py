"""The training engine: a custom loop under ``tf.distribute`` with step-exact state.

One :class:`Trainer` owns one model and one optimizer, built once inside the strategy's
scope. Everything an experiment needs is an operation on that pair, never a rebuild:

* ``train(run_dir, end_step)`` trains from the current step to ``end_step`` in compiled
  chunks of many steps per ``tf.function`` call, saving checkpoints at requested steps
  and resuming from ``run_dir``'s latest checkpoint if there is one;
* ``load_checkpoint(path)`` restores weights, masks and optimizer state (including the
  step, hence the learning-rate schedule position and the data-order position) from
  any checkpoint — of this run or of another one (the rewind operation);
* ``get_weights`` / ``set_weights`` assign weights into the same model repeatedly.

The input pipeline is a pure function of (data_order_seed, augment_seed, step), so a
checkpoint's step alone positions the data stream: a copy started from step k of
another run with a different ``data_order_seed`` sees its own order from step k on.
Losses are summed per replica and divided by the number of examples in the *global*
batch, so results do not depend on the number of replicas beyond float rounding.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tflth import data as data_lib
from tflth import fileio, masking, models, steps, tasks
from tflth.errors import RunError
from tflth.hparams import RunHparams
from tflth.runs.layout import RunDir
from tflth.data.resident import ResidentTrainData
from tflth.training import checkpoint, compiled
from tflth.training.metrics import MetricsLog, Progress
from tflth.training.optimizers import PrunedStayZero, get_start_step, make_optimizer, set_start_step
from tflth.training.schedule import StepSchedule
from tflth.training.strategy import barrier, get_strategy, is_chief

__all__ = ["Trainer", "TrainingDiverged", "TrainResult"]

_SUM = tf.distribute.ReduceOp.SUM
MAX_STEPS_PER_CALL = 250
EVAL_BATCH_SIZE = 1000
_TRAIN_SUMS = "train_sums"  # checkpoint extra: the training-metric sums since the last evaluation
_OPTIMIZER_START = "optimizer_start_step"  # checkpoint extra: StartStep.start_step, when not 0


def _legacy_mask_key(key: str, variables) -> bool:
    """A tflth 0.1 checkpoint's mask entry (``<layer>/mask`` beside ``<layer>/kernel``)."""
    return key not in variables and key.endswith("/mask") and (key[: -len("mask")] + "kernel") in variables


class TrainingDiverged(RunError):
    """The training loss became NaN or infinite."""


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """A finished ``train`` call: the step, the reported evaluation's loss and accuracy and
    the training ones since the last evaluation (``None`` where the task has no metric
    named ``accuracy``), the seconds, and a task's other metrics (``others``:
    ``{"test_<metric>": ..., "train_<metric>": ...}``, empty for image classification)."""

    step: int
    test_loss: float
    test_accuracy: float | None
    train_loss: float | None
    train_accuracy: float | None
    seconds: float
    others: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out.update(out.pop("others"))
        return out


class Trainer:
    """Trains one model with one optimizer under one ``tf.distribute`` strategy.

    The model and optimizer are built once (inside the strategy's scope); every later
    operation — training, evaluating, loading a checkpoint, assigning weights or masks —
    reuses them, so IMP levels and stability copies never rebuild a network.

    Args:
        hparams: :class:`tflth.hparams.RunHparams` (dataset, model, training).
        dataset: an already loaded dataset (``tflth.data.load``); default: load
            ``hparams.dataset.name`` from ``data_dir``.
        data_dir: where to load the dataset from (IDX directory, ``.npz``, tfds dir).
        strategy: a ``tf.distribute.Strategy``; default ``get_strategy("auto")``
            (MirroredStrategy over 2+ GPUs, else the default strategy).
        model_fn: the model factory, ``model_fn(seed=, input_shape=, num_classes=)`` ->
            built Keras model; default: ``hparams.model.name`` (a zoo name or a
            ``module:function`` reference, :func:`tflth.models.factory`).
        model: an already built model to train (e.g. one made in this strategy's
            scope); it keeps its masks if it has some, else gets all-ones masks on the
            variables ``hparams.model.prune`` selects. Its variable paths must be unique.
        task: what to train and measure, a :class:`tflth.tasks.Task` (your data, loss,
            metrics); default: ``hparams.dataset.task``'s (a reference, :func:`tflth.tasks.load`),
            else the image classification of ``hparams.dataset`` (:func:`tflth.tasks.classification`). A task's examples are ordered by the
            engine (``data_order_seed``), never augmented; ``jit_compile="chunk"`` needs
            a named image data set (``step`` compiles any task).

    Masks: the masked variables are fixed when the Trainer is built
    (:attr:`masked_paths`); assign masks with ``tflth.masking.apply_masks(trainer.model,
    masks)`` between ``train`` calls. Pruned entries stay exactly zero at every step.

    Main methods:
        ``train(run_dir=None, end_step=None, save_steps=(), checkpoint_every=None,
        eval_every=None, data_order_seed=None, augment_seed=None)`` trains from the
        current step (resuming ``run_dir``'s latest checkpoint) to ``end_step`` and
        returns a :class:`TrainResult`; ``evaluate(split, examples=None)`` returns
        ``(loss, accuracy)``; ``load_checkpoint(path)`` restores weights, masks,
        optimizer state and step (a rewind); ``get_weights()`` / ``set_weights(d)``
        read and assign every variable by path.

    Example (a copy from step 5 of another run, with another data order):

    >>> import numpy as np
    >>> from tflth import data
    >>> from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
    >>> from tflth.training import Trainer
    >>> x = np.random.default_rng(0).integers(0, 255, (64, 28, 28), dtype=np.uint8)
    >>> ds = data.from_arrays("mnist", x, np.arange(64) % 10, x[:16], np.arange(16) % 10)
    >>> hp = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_16"),
    ...                 TrainingHparams(optimizer="adam", lr=1e-3, batch_size=16, training_steps="12it"))
    >>> trainer = Trainer(hp, dataset=ds)
    >>> result = trainer.train(end_step=5)
    >>> w5 = trainer.get_weights()
    >>> result = trainer.train(data_order_seed=1)            # on to the end with another data order
    >>> trainer.step
    12
    """

    def __init__(self, hparams: RunHparams, dataset=None, data_dir: str | None = None,
                 strategy: tf.distribute.Strategy | None = None, model: keras.Model | None = None,
                 model_fn=None, task: tasks.Task | None = None):
        self.hparams = hparams
        th = hparams.training
        if th.deterministic:  # process-wide and one-way in TensorFlow
            tf.config.experimental.enable_op_determinism()
        self.strategy = strategy or get_strategy("auto")
        if task is None and hparams.dataset.task:
            task = tasks.load(hparams.dataset.task)
        if task is not None:
            self.dataset = task.data
        else:
            self.dataset = dataset if dataset is not None else data_lib.load(hparams.dataset.name, data_dir)
            task = tasks.classification(self.dataset)
        self.task = task
        self.iterations_per_epoch = data_lib.iterations_per_epoch(self.dataset.num_train, th.batch_size)
        self.end_step = self.to_iterations(th.training_steps)
        self.schedule = StepSchedule(
            th.lr, [self.to_iterations(m) for m in th.milestones], th.gamma, self.to_iterations(th.warmup)
        )
        compiled.check_mode(th.jit_compile, self.dataset, self.strategy)
        self.factory = models.factory(hparams.model, self.dataset.input_shape, self.dataset.num_classes, fn=model_fn)
        with self.strategy.scope():
            self.model = model if model is not None else self.build_model(th.seed)
            if not masking.has_masks(self.model):
                chosen = self.factory.prunable(self.model)
                masking.apply_masks(self.model, masking.Masks.ones({p: m.shape for p, m in chosen.items()}))
            self._masked = list(masking.masked_variables(self.model).values())  # [(variable, mask)]
            self.optimizer = make_optimizer(th, self.schedule)
            self.optimizer.build(self.model.trainable_variables)
            # Adam keeps pruned entries at zero itself: the per-step mask constraint is not needed.
            self._optimizer_masks = isinstance(self.optimizer, PrunedStayZero) and bool(self._masked)
            if self._optimizer_masks:
                self.optimizer.track_masks([v for v, _ in self._masked])
        self.task.check(self.model)
        compiled.warn_if_slow(th.jit_compile, self.model)
        self._model_vars = {v.path: v for v in self.model.variables}
        if len(self._model_vars) != len(self.model.variables):
            raise ValueError("Model variable paths are not unique; give the layers distinct names.")
        self._coupled_decay = th.weight_decay if th.optimizer in ("sgd", "adam") else 0.0
        self._resident = None  # jit_compile=chunk: the resident training set
        self._train_chunk = self._make_train_chunk()
        self._eval_fn = self._make_eval_fn()
        self._eval_data = {}
        self._stream = None  # (next step, iterator) left by the last train() call

    # ----------------------------------------------------------------- building

    def to_iterations(self, step: str | int) -> int:
        """A step string (``500it``, ``2ep``) or int as an absolute iteration."""
        return int(step) if isinstance(step, (int, np.integer)) else steps.to_iterations(step, self.iterations_per_epoch)

    def build_model(self, seed: int) -> keras.Model:
        """A new model from the factory (same variable paths as :attr:`model`; no masks)."""
        return self.factory(seed)

    @property
    def masked_paths(self) -> list[str]:
        """The variable paths of the masked variables, in model order."""
        return list(masking.masked_variables(self.model))

    def _augment(self) -> bool:
        return data_lib.augmented(self.hparams.dataset)

    def _distribute(self, ds: tf.data.Dataset):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        options.deterministic = True
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))

    def _make_train_chunk(self):
        strategy, model, optimizer = self.strategy, self.model, self.optimizer
        variables = model.trainable_variables
        decay = self._coupled_decay
        task = self.task

        batch_size = self.hparams.training.batch_size
        num_train, per_epoch = self.dataset.num_train, self.iterations_per_epoch

        mode = self.hparams.training.jit_compile

        def replica_step(x, y, global_count):
            replicas = tf.distribute.get_replica_context().num_replicas_in_sync
            with tf.GradientTape() as tape:
                outputs = model(x, training=True)
                per_example = task.example_losses(y, outputs)
                loss = tf.reduce_sum(per_example) / global_count
                if model.losses:
                    loss += tf.add_n(model.losses) / replicas
            grads = tape.gradient(loss, variables)
            if decay:
                grads = [g + (decay / replicas) * v.value for g, v in zip(grads, variables)]
            optimizer.apply(grads, variables)
            return task.batch_sums(y, outputs, per_example)  # [Σ loss, Σ metric..., count]

        pruned_epsilon = optimizer.pruned_epsilon if self._optimizer_masks else None
        if mode == "chunk":
            with strategy.scope():  # on the replica's device (one replica: compiled.check_mode)
                self._resident = ResidentTrainData(self.dataset, batch_size, self._augment())
            return compiled.chunk_program(replica_step, strategy, self._resident, pruned_epsilon)
        step_fn = compiled.compile_step(replica_step) if mode == "step" else replica_step

        @tf.function
        def train_chunk(iterator, num_steps, epsilons):
            # The global batch of step s holds min(B, N - (s mod epoch) * B) examples (the
            # last batch of an epoch is short): the loss is averaged over exactly those,
            # without a collective to count them. ``epsilons``: Adam's per-entry epsilons
            # of the masked kernels (empty otherwise), arguments rather than variables.
            start = tf.identity(optimizer.iterations)
            totals = tf.zeros([task.sums], tf.float32)
            pruned_epsilon = (optimizer.pruned_epsilon(epsilons) if self._optimizer_masks
                              else contextlib.nullcontext())
            with pruned_epsilon:
                for i in tf.range(num_steps):
                    x, y = next(iterator)
                    position = (tf.cast(start, tf.int64) + tf.cast(i, tf.int64)) % per_epoch
                    remaining = tf.constant(num_train, tf.int64) - position * batch_size
                    global_count = tf.cast(tf.minimum(tf.constant(batch_size, tf.int64), remaining), tf.float32)
                    totals += strategy.reduce(_SUM, strategy.run(step_fn, args=(x, y, global_count)),
                                              axis=None)
            return totals

        return train_chunk

    def _make_eval_fn(self):
        strategy, model, task = self.strategy, self.model, self.task

        def replica_eval(x, y):
            return task.batch_sums(y, model(x, training=False))

        @tf.function
        def eval_fn(dist_ds):
            totals = tf.zeros([task.sums], tf.float32)
            for x, y in dist_ds:
                totals += strategy.reduce(_SUM, strategy.run(replica_eval, args=(x, y)), axis=None)
            return totals

        return eval_fn

    # -------------------------------------------------------------------- state

    @property
    def step(self) -> int:
        return int(self.optimizer.iterations.numpy())

    def get_weights(self) -> dict[str, np.ndarray]:
        """Every model variable (kernels, biases, masks, BN statistics) by path."""
        return {k: v.numpy() for k, v in self._model_vars.items()}

    def set_weights(self, weights: dict[str, np.ndarray], strict: bool = True) -> None:
        """Assign weights by variable path (cross-replica; no rebuild).

        Entries ``<layer>/mask`` of checkpoints written by tflth 0.1 (whose masks were
        layer variables) are ignored: masks are set from the run's ``mask.npz``.
        """
        weights = {k: v for k, v in weights.items() if not _legacy_mask_key(k, self._model_vars)}
        unknown = sorted(set(weights) - set(self._model_vars))
        missing = sorted(set(self._model_vars) - set(weights))
        if unknown or (strict and missing):
            raise checkpoint.CheckpointError(
                f"Weights do not fit model '{self.model.name}': unknown {unknown[:5]}, missing {missing[:5]}."
            )
        for k, value in weights.items():
            var = self._model_vars[k]
            if tuple(var.shape) != tuple(np.shape(value)):
                raise checkpoint.CheckpointError(
                    f"Variable '{k}' has shape {tuple(var.shape)}; the weights give {tuple(np.shape(value))}."
                )
            var.assign(value)

    def get_optimizer_state(self) -> list[np.ndarray]:
        return [v.numpy() for v in self.optimizer.variables]

    def set_optimizer_state(self, values: list[np.ndarray]) -> None:
        variables = self.optimizer.variables
        if len(values) != len(variables) or any(tuple(v.shape) != np.shape(x) for v, x in zip(variables, values)):
            raise checkpoint.CheckpointError(
                f"Optimizer state does not fit: {len(values)} saved values for {len(variables)} variables "
                f"of a {type(self.optimizer).__name__}."
            )
        for v, x in zip(variables, values):
            v.assign(x)

    def reset_optimizer(self, step: int = 0) -> None:
        """A fresh optimizer whose first step is ``step``: every slot zero, the step
        counter (schedule and data position) at ``step``, and Adam's bias correction
        counting from it (:class:`tflth.training.optimizers.StartStep`), so the next
        update is a newly built optimizer's first one at the schedule's rate for ``step``."""
        for v in self.optimizer.variables:
            v.assign(np.zeros(v.shape, v.dtype))
        self.optimizer.iterations.assign(step)
        set_start_step(self.optimizer, step)

    @property
    def optimizer_start_step(self) -> int:
        """The step at which the optimizer last started fresh (:meth:`reset_optimizer`;
        0 for one that has counted from 0)."""
        return get_start_step(self.optimizer)

    def save_checkpoint(self, path: str, writer: checkpoint.Writer | None = None,
                        extras: dict[str, np.ndarray] | None = None) -> None:
        """Save the full state at the current step to ``path`` (atomically), with the
        training loop's ``extras`` (:func:`tflth.training.checkpoint.save`) and, when not
        0, the optimizer's start step (an extra: the optimizer values stay Keras's own).

        With a ``writer`` the file is written in the background from a host copy of the
        state taken now; otherwise before this returns.
        """
        if self.optimizer_start_step:
            extras = dict(extras or {}, **{_OPTIMIZER_START: np.int64(self.optimizer_start_step)})
        state = (path, self.step, self.get_weights(), self.get_optimizer_state(), extras)
        (writer.save if writer is not None else checkpoint.save)(*state)

    def load_checkpoint(self, path: str, weights: bool = True, optimizer: bool = True) -> int:
        """Restore from a checkpoint of this or another run; returns its step."""
        return self._restore(checkpoint.read(path), weights, optimizer)

    def _restore(self, state: checkpoint.State, weights: bool = True, optimizer: bool = True) -> int:
        if weights:
            self.set_weights(state.model)
        if optimizer:  # the start step too (absent: 0, as in every checkpoint written before it existed)
            self.set_optimizer_state(state.optimizer)
            set_start_step(self.optimizer, int(state.extras.get(_OPTIMIZER_START, 0)))
        return state.step

    # -------------------------------------------------------------- evaluation

    def evaluate(self, split: str = "test", examples: int | None = None) -> tuple[float, float]:
        """``(mean loss, accuracy)`` over a split (``test`` or ``train``, never augmented):
        all of it, or its first ``examples`` examples (a fixed subset, cached in memory).
        For a task, its first metric stands where accuracy is (``None`` when it has none);
        :meth:`evaluate_all` has them all."""
        values = self.evaluate_all(split, examples)
        names = self.task.metric_names
        return values["loss"], (values[names[0]] if names else None)

    def evaluate_all(self, split: str | None = None, examples: int | None = None) -> dict[str, float]:
        """``{"loss": ..., <metric>: ...}`` over ``split`` (default: the reported one,
        ``test``; a task's evaluation sets by name, or ``train``)."""
        return self.task.means(self._eval_sums(split or self.reported_split, examples))

    @property
    def reported_split(self) -> str:
        """The evaluation set a run reports: ``test``, or a task's :attr:`~tflth.data.ExampleDataset.reported`."""
        return getattr(self.dataset, "reported", "test")

    def _eval_sums(self, split: str, examples: int | None) -> np.ndarray:
        key = (split, examples)
        if key not in self._eval_data:
            ds = data_lib.eval_batches(self.dataset, split=split, batch_size=EVAL_BATCH_SIZE)
            if examples is not None:
                ds = ds.unbatch().take(int(examples)).batch(EVAL_BATCH_SIZE).cache()
            self._eval_data[key] = self._distribute(ds)
        return self._eval_fn(self._eval_data[key]).numpy()

    # ---------------------------------------------------------------- training

    def train(self, run_dir: str | None = None, end_step: int | str | None = None, save_steps=(),
              checkpoint_every: int | str | None = None, eval_every: int | str | None = None,
              progress_interval: float = 10.0, label: str = "train", data_order_seed: int | None = None,
              augment_seed: int | None = None) -> TrainResult:
        """Train from the current step to ``end_step`` (default: the full length).

        With a ``run_dir``: resume from its latest checkpoint if any, checkpoint the
        start, every ``save_steps`` entry (kept), every ``checkpoint_every`` steps (the
        latest kept) and the end; write ``metrics.jsonl``, TensorBoard summaries and
        ``result.json``. A NaN/inf loss raises :class:`TrainingDiverged` before any
        later checkpoint is written.

        ``data_order_seed`` / ``augment_seed`` replace the hparams' seeds for this call
        (a copy of a network trained with other SGD noise needs no second Trainer); a
        resumed run must be given the same seeds again.
        """
        t0 = time.perf_counter()
        end = self.end_step if end_step is None else self.to_iterations(end_step)
        th = self.hparams.training
        seeds = (th.data_order_seed if data_order_seed is None else int(data_order_seed),
                 th.augment_seed if augment_seed is None else int(augment_seed))
        chief = is_chief()
        ckpt_dir = RunDir(run_dir).checkpoints if run_dir else None
        keep = {self.to_iterations(s) for s in save_steps}
        if run_dir:
            os.makedirs(run_dir, exist_ok=True)
        running = np.zeros(self.task.sums)  # training loss sum, metric sums (correct count), examples since the last evaluation
        resumed_periodic = None  # a periodic checkpoint resumed from: removed like the run's own would be
        if ckpt_dir and (found := checkpoint.list_steps(ckpt_dir)):
            latest = found[-1]
            if latest != found[0] and latest not in keep:
                resumed_periodic = latest
            periodic = self.to_iterations(checkpoint_every) if checkpoint_every else 0
            if chief and periodic:  # a kill between saving a periodic checkpoint and removing the one
                for s in found[1:-1]:  # before leaves both: drop the older, as the uninterrupted run did
                    if s not in keep and s % periodic == 0:
                        fileio.remove(checkpoint.path_for(ckpt_dir, s))
            state = checkpoint.read(checkpoint.path_for(ckpt_dir, latest))  # one read: state and extras
            self._restore(state)
            saved = state.extras.get(_TRAIN_SUMS)
            if saved is not None and saved.shape == running.shape:
                running[:] = saved  # so the next evaluation averages what an uninterrupted run's does
            logging.info("%s: resuming from the checkpoint at step %d in %s", label, latest, ckpt_dir)
        start = self.step
        if start > end:
            raise ValueError(f"The run is at step {start}, past the requested end step {end}.")
        metrics = MetricsLog(run_dir, resume_step=start, enabled=chief) if run_dir else None
        writer = checkpoint.Writer() if ckpt_dir and chief else None
        try:
            outcome = self._train_loop(start, end, seeds, ckpt_dir, writer, keep, checkpoint_every, eval_every,
                                       metrics, progress_interval, label, running, resumed_periodic)
        finally:
            if writer is not None:
                writer.close()  # every checkpoint the loop saved is on disk before we return or raise
            if metrics:
                metrics.close()
        test, train = outcome[1:]
        named = lambda d, name: None if d is None else d.get(name)  # noqa: E731
        others = {f"{split}_{m}": named(values, m) for split, values in (("test", test), ("train", train))
                  for m in self.task.metric_names if m != tasks.ACCURACY}
        result = TrainResult(outcome[0], test["loss"], named(test, tasks.ACCURACY), named(train, "loss"),
                             named(train, tasks.ACCURACY), seconds=time.perf_counter() - t0, others=others)
        if run_dir and chief:
            fileio.write_json(RunDir(run_dir).result, result.to_dict())
        barrier(self.strategy)  # other workers read the chief's files only once they are written
        return result

    def _sync_masks(self) -> None:
        """Before training: zero every pruned entry (whatever was assigned since the last
        run) and, under Adam, hand the current masks to the optimizer."""
        if self._masked:
            masking.zero_pruned(self.model)
        if self._optimizer_masks:
            self.optimizer.set_masks([m for _, m in self._masked])

    def _train_iterator(self, start: int, seeds: tuple[int, int]):
        """The training stream from step ``start`` with ``seeds`` (data order, augmentation):
        the last call's iterator when it stopped exactly there with the same seeds (the
        stream is a pure function of seeds and step), else a new one."""
        stream, self._stream = self._stream, None  # dropped unless this call completes
        if stream is not None and stream[:2] == (start, seeds):
            return stream[2]
        return iter(self._distribute(data_lib.train_batches(
            self.dataset, self.hparams.training.batch_size, seeds[0], seeds[1], start_step=start,
            augment=self._augment())))

    def _run_steps(self, iterator, step: int, n: int, seeds: tuple[int, int], epsilons) -> np.ndarray:
        """Steps ``step .. step + n - 1``: the summed ``[loss, metric..., examples]`` (``correct`` for accuracy)."""
        if self._resident is None:
            return self._train_chunk(iterator, tf.constant(n, tf.int64), epsilons).numpy()
        plan = self._resident.plan(seeds[0], seeds[1], step, n, pad_to=MAX_STEPS_PER_CALL)
        return self._train_chunk(plan, tf.constant(step, tf.int64), tf.constant(n, tf.int64), epsilons).numpy()

    def _train_loop(self, start, end, seeds, ckpt_dir, writer, keep, checkpoint_every, eval_every, metrics,
                    progress_interval, label, running, last_periodic=None) -> tuple:
        """The steps of :meth:`train` from the training-metric sums ``running`` (updated in
        place) and the latest periodic checkpoint ``last_periodic`` (removed once the next
        is saved); returns ``(step, test means, train means)``: :meth:`tflth.tasks.Task.means`
        of the reported evaluation and of training since the last evaluation (``None``: none)."""
        self._sync_masks()
        epsilons = self.optimizer.epsilon_values if self._optimizer_masks else ()
        if writer is not None:
            checkpoint.remove_partial(ckpt_dir)  # temporary files of a killed run
            if checkpoint.latest(ckpt_dir) is None:
                self.save_checkpoint(checkpoint.path_for(ckpt_dir, start), writer, {_TRAIN_SUMS: running.copy()})
        periodic = self.to_iterations(checkpoint_every) if checkpoint_every else 0
        evaluate_every = self.to_iterations(eval_every) if eval_every else 0
        stops = {end} | {s for s in keep if start < s < end}
        for every in (periodic, evaluate_every):
            if every:
                stops |= set(range((start // every + 1) * every, end, every))
        iterator = self._train_iterator(start, seeds) if self._resident is None else None
        progress = Progress(start, end, label, progress_interval)
        train = test = None
        step = start
        for stop in sorted(stops):
            while step < stop:
                n = min(MAX_STEPS_PER_CALL, stop - step)
                # SGD: each step's mask constraint zeroes the pruned entries; Adam leaves them at zero.
                with (masking.constraints_paused(self.model) if self._optimizer_masks else contextlib.nullcontext()):
                    totals = self._run_steps(iterator, step, n, seeds, epsilons)
                if not math.isfinite(float(totals[0])):
                    if writer is not None:
                        writer.flush()
                    good = checkpoint.latest(ckpt_dir) if ckpt_dir else None
                    raise TrainingDiverged(
                        f"{label}: the training loss became {totals[0]} between steps {step} and {step + n}; "
                        + (f"the last good checkpoint is step {good} in {ckpt_dir}." if good is not None
                           else "no checkpoint was kept.")
                    )
                running += totals
                step += n
                if step < end:  # the end has one line, below
                    progress.update(step, float(totals[0] / totals[2]))
            if running[-1]:
                train = self.task.means(running)
            if step == end or (metrics and evaluate_every and step % evaluate_every == 0):
                test = self.evaluate_all(self.reported_split)
                if metrics:
                    record = {"step": step, "epoch": step / self.iterations_per_epoch,
                              "lr": self.schedule.value_at(max(step - 1, 0))}
                    for split, values in (("train", train), ("test", test)):
                        record.update({f"{split}_{name}": (None if values is None else values[name])
                                       for name in ["loss"] + self.task.metric_names})
                    metrics.write(record)
                running[:] = 0
            if writer is not None and (step in keep or step == end or (periodic and step % periodic == 0)):
                self.save_checkpoint(checkpoint.path_for(ckpt_dir, step), writer, {_TRAIN_SUMS: running.copy()})
                if periodic and step % periodic == 0 and step not in keep and step != end:
                    if last_periodic is not None and last_periodic not in keep:
                        writer.remove(checkpoint.path_for(ckpt_dir, last_periodic))  # after the new one is saved
                    last_periodic = step
        progress.update(step, None if train is None else train["loss"], force=True)
        self._stream = (step, seeds, iterator) if iterator is not None else None
        return step, test, train

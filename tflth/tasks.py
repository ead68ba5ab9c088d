"""What the engine trains and measures: a :class:`Task` (data, loss, metrics, the barrier's metric).

tflth's runs, IMP and stability analysis were written for one task, image classification
of a named data set; a :class:`Task` says the same things for any Keras model and data:
the training examples, named evaluation sets, the loss, the metrics, and which metric the
stability barrier is taken on and in which direction. The built-in image classification is
one such task (:func:`classification`), computed with exactly the operations the engine has
always used, so its runs, checkpoints and results are unchanged bit for bit.

**Per-example values.** The engine sums every quantity over examples and divides by their
count (a global batch, an evaluation set), which is exact under any number of replicas.
So the loss and each metric are functions ``fn(y, outputs)`` returning one value per
example: a Keras loss object is called with ``reduction=None``; a function that returns
more axes (a language model's per-token loss ``[batch, tokens]``) is averaged over them;
one that returns a single number for the whole batch is refused when the model is first
run. Keras's metric *functions* (``keras.metrics.sparse_categorical_accuracy``,
``keras.metrics.mean_squared_error``, ...) return per-example values; its stateful metric
classes do not and are refused.

**Data order is the engine's.** The examples are held in memory (arrays, or dicts of arrays
such as KerasHub's ``token_ids`` / ``padding_mask``; a finite ``tf.data.Dataset`` of single
examples is read into arrays once) and visited in the seeded per-epoch order of every tflth
run (:func:`tflth.data.epoch_permutation`), so a copy from step k differs from another only
in its data-order seed, a killed run resumes at the same batch, and two runs with the same
seeds are identical. An infinite stream is refused.

Example::

    task = tflth.tasks.Task(
        name="parity",
        train=(x_train, y_train),
        evals={"test": (x_test, y_test)},
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics={"accuracy": keras.metrics.sparse_categorical_accuracy},
        barrier="accuracy", higher_is_better=True)
    trainer = tflth.training.Trainer(hparams, task=task, model_fn=my_model)
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable, Mapping

import keras
import numpy as np
import tensorflow as tf

from tflth.conventions import Measure
from tflth.data.datasets import ArrayDataset, ExampleDataset, StreamDataset, example_count
from tflth.errors import InputError
from tflth.hparams import HparamError
from tflth.references import resolve

__all__ = ["Task", "TaskError", "classification", "load", "measure_of", "ACCURACY"]

ACCURACY = "accuracy"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TaskError(InputError):
    """A task's data, loss, metrics or barrier setting is unusable (named in the message)."""


def _error(field: str, value, expected: str) -> TaskError:
    return TaskError(f"Task.{field}={value!r} is invalid: expected {expected}.")


def _examples(value, field: str):
    """``(x, y)`` as numpy nests, from arrays, dicts of arrays or a finite tf.data.Dataset."""
    if isinstance(value, tf.data.Dataset):
        if value.cardinality() == tf.data.INFINITE_CARDINALITY:
            raise TaskError(f"Task.{field} is an infinite tf.data.Dataset: tflth holds a task's examples in memory "
                            "to own their order (step-exact resume, seeded copies); give a finite dataset of "
                            "(x, y) examples or arrays.")
        items = list(value.as_numpy_iterator())
        if not items:
            raise TaskError(f"Task.{field} is empty: expected at least one example.")
        value = tf.nest.map_structure(lambda *leaves: np.stack(leaves), *items)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise _error(field, type(value).__name__, "(x, y): arrays or dicts of arrays, or a finite tf.data.Dataset "
                     "of (x, y) examples")
    x, y = (tf.nest.map_structure(np.asarray, part) for part in value)
    counts = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in tf.nest.flatten((x, y))}
    if None in counts or len(counts) != 1:
        raise TaskError(f"Task.{field}: every array of x and y needs the same first axis (the examples); the "
                        f"shapes are {[np.shape(leaf) for leaf in tf.nest.flatten((x, y))]}.")
    if example_count(x) == 0:
        raise TaskError(f"Task.{field} is empty: expected at least one example.")
    return x, y


def _per_example(fn: Callable, what: str) -> Callable:
    """``fn(y, outputs)`` as one float32 value per example (mean over the other axes)."""
    if isinstance(fn, keras.metrics.Metric):
        raise TaskError(f"Task.{what}: {type(fn).__name__} is a stateful Keras metric; give its per-example "
                        f"function instead (e.g. keras.metrics.{_snake(type(fn).__name__)}).")
    if isinstance(fn, keras.losses.Loss):
        fn = copy.copy(fn)
        fn.reduction = None
    if not callable(fn):
        raise _error(what, fn, "a Keras loss or a function (y, outputs) -> one value per example")

    def values(y, outputs):
        out = tf.cast(fn(y, outputs), tf.float32)
        if out.shape.rank == 0:
            raise TaskError(f"Task.{what} returned one number for the whole batch: expected one value per example "
                            "(a Keras loss is called with reduction=None; a function must not average over "
                            "the batch).")
        if out.shape.rank > 1:
            out = tf.reduce_mean(out, axis=list(range(1, out.shape.rank)))
        return out

    return values


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """What a run trains and measures.

    Args:
        name: names the task in logs and reports (and, for a task given by reference,
            its reference enters the run name).
        train: the training examples ``(x, y)``: arrays or dicts of arrays (first axis:
            the examples), or a finite ``tf.data.Dataset`` of single ``(x, y)`` examples.
        evals: evaluation sets by name, each like ``train``; ``"test"`` (else the first)
            is what a run reports as its result.
        loss: a Keras loss (called with ``reduction=None``) or ``loss(y, outputs)`` with
            one value per example (more axes are averaged).
        metrics: ``{name: fn(y, outputs)}``, per-example metric functions, e.g.
            ``keras.metrics.sparse_categorical_accuracy``; names are identifiers.
        barrier: what the stability barrier is taken on: ``"loss"`` or a metric's name.
        higher_is_better: the direction of ``barrier``'s metric (the loss: lower).

    Raises:
        TaskError: an empty or ragged data set, a bad name, a barrier on no metric, a
            direction that contradicts the loss, a stateful Keras metric.
    """

    name: str
    train: object
    evals: Mapping[str, object]
    loss: Callable
    metrics: Mapping[str, Callable] = dataclasses.field(default_factory=dict)
    barrier: str = "loss"
    higher_is_better: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise _error("name", self.name, "a non-empty string")
        if not isinstance(self.evals, Mapping) or not self.evals:
            raise _error("evals", self.evals, "{name: (x, y)} with at least one evaluation set, e.g. {'test': ...}")
        for name in list(self.metrics) + list(self.evals):
            if not isinstance(name, str) or not _NAME.match(name) or name in ("loss", "train"):
                raise TaskError(f"Task: the name {name!r} is invalid: expected an identifier other than 'loss' and "
                                "'train' for every metric and evaluation set.")
        if self.barrier != "loss" and self.barrier not in self.metrics:
            raise _error("barrier", self.barrier, f"'loss' or one of the metrics {list(self.metrics)}")
        if not isinstance(self.higher_is_better, bool):
            raise _error("higher_is_better", self.higher_is_better, "True or False")
        if self.barrier == "loss" and self.higher_is_better:
            raise _error("higher_is_better", True, "False for barrier='loss' (a loss is lower-is-better)")
        object.__setattr__(self, "metrics", dict(self.metrics))
        object.__setattr__(self, "evals", dict(self.evals))
        object.__setattr__(self, "_losses", _per_example(self.loss, "loss"))
        object.__setattr__(self, "_metric_fns", [_per_example(fn, f"metrics[{name!r}]")
                                                 for name, fn in self.metrics.items()])
        if not isinstance(self.train, ExampleDataset):
            examples = {"train": _examples(self.train, "train")}
            examples.update({k: _examples(v, f"evals[{k!r}]") for k, v in self.evals.items()})
            object.__setattr__(self, "data", ExampleDataset(self.name, examples.pop("train"), examples))

    #: Whether this is the built-in image classification (its curves keep their historical
    #: form: error and loss, prediction disagreement).
    is_classification = False

    def badness(self, values: Mapping[str, float]) -> float:
        """What the stability barrier is taken on, from :meth:`means` or ``evaluate_all``
        values: the barrier metric where lower is better, ``1 − metric`` where higher is
        (the error for accuracy; the barrier of any affine image of a metric is the same)."""
        value = values[self.barrier]
        return value if not self.higher_is_better else 1.0 - value

    def check(self, model) -> None:
        """Run ``model`` on two training examples and the loss and metrics on its outputs,
        eagerly, so that a loss or metric without one value per example is refused in one
        line before anything trains (an error of the model itself propagates as it is)."""
        x, y = tf.nest.map_structure(lambda a: a[:2], tuple(self.data.train))
        outputs = model(x, training=False)
        self.example_losses(y, outputs)
        self.example_metrics(y, outputs)

    # --- what the engine calls

    @property
    def measure(self) -> Measure:
        """What reports compare between networks: the barrier's metric and its direction."""
        return Measure(self.barrier, self.higher_is_better)

    @property
    def metric_names(self) -> list[str]:
        return list(self.metrics)

    @property
    def sums(self) -> int:
        """How many sums a batch yields: the loss, each metric, the example count."""
        return 2 + len(self.metrics)

    def example_losses(self, y, outputs) -> tf.Tensor:
        """The loss of each example, float32 ``[batch]``."""
        return self._losses(y, outputs)

    def example_metrics(self, y, outputs) -> list[tf.Tensor]:
        """Each metric of each example, float32 ``[batch]`` each, in :attr:`metric_names` order."""
        return [fn(y, outputs) for fn in self._metric_fns]

    @staticmethod
    def count(y) -> tf.Tensor:
        """The number of examples in a batch, float32."""
        return tf.cast(tf.shape(tf.nest.flatten(y)[0])[0], tf.float32)

    def batch_sums(self, y, outputs, losses=None) -> tf.Tensor:
        """``[Σ loss, Σ metric_1, ..., Σ metric_k, count]`` of one batch (``losses``: the
        per-example losses when already computed)."""
        losses = self.example_losses(y, outputs) if losses is None else losses
        return tf.stack([tf.reduce_sum(losses)] + [tf.reduce_sum(v) for v in self.example_metrics(y, outputs)]
                        + [self.count(y)])

    def means(self, sums) -> dict[str, float]:
        """``{"loss": ..., <metric>: ...}`` from :meth:`batch_sums` totals (``None`` where no example)."""
        sums = np.asarray(sums)  # in its own precision: float32 evaluation sums divide as float32
        count = sums[-1]
        names = ["loss"] + self.metric_names
        return {n: (float(sums[i] / count) if count else None) for i, n in enumerate(names)}


def classification(dataset: ArrayDataset | StreamDataset) -> Task:
    """The built-in task of a named image data set: sparse categorical cross-entropy on
    logits and accuracy (argmax), evaluated on ``"test"``, barrier on accuracy (the
    error barrier). Computed with exactly the engine's historical operations."""
    return _Classification(dataset)


class _Classification(Task):
    """:func:`classification`'s task: the data set's own pipeline (normalisation,
    augmentation), no per-example wrappers, so every op is the engine's original one."""

    train = None
    evals = {"test": None}
    metrics = {ACCURACY: None}
    barrier = ACCURACY
    higher_is_better = True

    def __init__(self, dataset):  # not the dataclass's: the data set keeps its own pipeline
        object.__setattr__(self, "name", dataset.name)
        object.__setattr__(self, "data", dataset)
        object.__setattr__(self, "loss", keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                                                   reduction=None))

    is_classification = True

    def check(self, model) -> None:
        """Nothing to check: the zoo's and a user's classifier are checked by the model factory."""

    def example_losses(self, y, outputs):
        return self.loss(y, outputs)

    def example_metrics(self, y, outputs):
        return [tf.cast(tf.equal(tf.argmax(outputs, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)]


_LOADED: dict[str, Task] = {}


def load(reference: str) -> Task:
    """The task a ``DatasetHparams.task`` reference names: its function called once per
    process (without arguments), the :class:`Task` reused by every run after.

    Raises:
        HparamError: naming ``DatasetHparams.task``: the reference cannot be imported or
            its function does not return a :class:`Task`.
    """
    if reference not in _LOADED:
        made = resolve(reference, "DatasetHparams", "task")()
        if not isinstance(made, Task):
            raise HparamError(f"DatasetHparams.task={reference!r} is invalid: its function returned "
                              f"{type(made).__name__}; expected a tflth.tasks.Task.", owner="DatasetHparams",
                              field="task", value=reference)
        _LOADED[reference] = made
    return _LOADED[reference]


def measure_of(run) -> Measure:
    """What a run's reports compare (:class:`tflth.conventions.Measure`): its task's
    (``run.dataset.task``), else test accuracy."""
    return load(run.dataset.task).measure if run.dataset.task else Measure()

"""Evaluating the straight line between two trained copies, in one model.

:class:`CurveEvaluator` assigns ``W(α) = (1 − α)·W1 + α·W2`` (:func:`curve.interpolate`)
into a :class:`~tflth.training.Trainer`'s model at every point of an α grid — no model
is rebuilt — and measures error and loss on the test set and on a fixed training subset
(its first ``train_examples`` examples, never augmented). Both copies must be zero
where the model's masks prune (copies of one ticket; two networks with different masks
are refused), so pruned weights are exactly zero at every α.

BatchNorm (``bn``), recorded in every output:

* ``recompute`` (default): at every α, endpoints included, each BN layer's moving mean
  and variance are set to the exact statistics of its inputs over a fixed set of
  training batches (augmentation off; :mod:`tflth.stability.batchnorm`). The endpoints
  are then evaluated exactly like the midpoints, which is what the barrier compares.
* ``interpolate``: the moving statistics are interpolated with the weights, like any
  other variable.

Networks without BatchNorm are evaluated the same way under both modes.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import tensorflow as tf

from tflth import data as data_lib
from tflth import masking
from tflth.hparams import BN_MODES
from tflth.stability import curve as curve_lib
from tflth.stability.batchnorm import batchnorm_layers, recompute_bn_statistics

__all__ = ["BN_MODES", "CurveEvaluator"]


class CurveEvaluator:
    """Error and loss along the line between two copies, on test and train data.

    Args:
        trainer: the :class:`~tflth.training.Trainer` whose model is evaluated (its
            weights are overwritten; reload a checkpoint to train again).
        train_examples: size of the fixed training subset (its first examples); 0
            measures the test set alone.
        bn: ``"recompute"`` or ``"interpolate"`` (see the module docstring).
        bn_batches: how many training batches (of the run's batch size, unaugmented)
            BN statistics are recomputed over.

    Example::

        evaluator = CurveEvaluator(trainer, train_examples=10_000)
        result = evaluator.curve(weights_a, weights_b, curve.alphas(30))
        result["test"]["instability"]
    """

    def __init__(self, trainer, train_examples: int = 10_000, bn: str = "recompute", bn_batches: int = 20):
        if bn not in BN_MODES:
            raise ValueError(f"bn={bn!r} is invalid: expected one of {list(BN_MODES)}.")
        self.trainer = trainer
        self.train_examples = int(train_examples)
        self.bn = bn
        self.has_bn = bool(batchnorm_layers(trainer.model))
        self.splits = ("test", "train") if self.train_examples > 0 else ("test",)
        self._bn_inputs = None
        if self.has_bn and bn == "recompute":
            batches = data_lib.eval_batches(trainer.dataset, "train", trainer.hparams.training.batch_size)
            self._bn_inputs = [x for x, _ in batches.take(int(bn_batches))]
        self._predict = tf.function(lambda x: tf.argmax(trainer.model(x, training=False), -1, output_type=tf.int32))
        self._test_inputs = None
        self.seconds = {"assign": 0.0, "bn": 0.0, "evaluate": 0.0}

    def _assign(self, weights: Mapping[str, np.ndarray], full: bool = True) -> None:
        t0 = time.perf_counter()
        self.trainer.set_weights(weights, strict=full)
        t1 = time.perf_counter()
        if self._bn_inputs is not None:
            recompute_bn_statistics(self.trainer.model, self._bn_inputs)
        self.seconds["assign"] += t1 - t0
        self.seconds["bn"] += time.perf_counter() - t1

    def point(self, weights: Mapping[str, np.ndarray], full: bool = True) -> dict[str, float]:
        """Assign ``weights`` (BN treated per ``bn``) and evaluate: test and train error/loss.
        ``full=False`` allows ``weights`` to hold only some variables. For a task
        (:class:`tflth.tasks.Task`) the "error" is :meth:`~tflth.tasks.Task.badness` of its
        barrier metric, and every metric is recorded too (``<split>_<metric>``)."""
        self._assign(weights, full)
        t0 = time.perf_counter()
        out = {}
        task = self.trainer.task
        for split in self.splits:
            examples = self.train_examples if split == "train" else None
            if task.is_classification:
                loss, acc = self.trainer.evaluate(split, examples=examples)
                out.update({f"{split}_error": 1.0 - acc, f"{split}_loss": loss})
                continue
            values = self.trainer.evaluate_all(self._split(split), examples=examples)
            out.update({f"{split}_error": task.badness(values), f"{split}_loss": values["loss"]})
            out.update({f"{split}_{name}": values[name] for name in task.metric_names})
        self.seconds["evaluate"] += time.perf_counter() - t0
        return out

    def _split(self, split: str) -> str:
        """The trainer's name of the curve's ``test`` set: a task's reported evaluation set."""
        return self.trainer.reported_split if split == "test" else split

    def predictions(self) -> np.ndarray:
        """Predicted test labels of the weights assigned now."""
        if self._test_inputs is None:
            self._test_inputs = [x for x, _ in data_lib.eval_batches(self.trainer.dataset, "test")]
        return np.concatenate([self._predict(x).numpy() for x in self._test_inputs])

    def curve(self, w1: Mapping[str, np.ndarray], w2: Mapping[str, np.ndarray],
              alphas: Sequence[float]) -> dict:
        """The whole curve: ``{"bn", "alphas", "test": CurveResult dict, "train": ...,
        "disagreement", "points": [per-α measurements]}``."""
        alphas = [float(a) for a in alphas]
        for name, w in (("first", w1), ("second", w2)):
            for path, m in masking.masks_of(self.trainer.model).items():
                if path in w and np.any(np.asarray(w[path])[~m] != 0):
                    raise ValueError(f"The {name} copy's '{path}' is nonzero where the model's mask prunes it: "
                                     "the two copies have different masks (only copies of one ticket are "
                                     "interpolated).")
        points, ends = [], {}
        for i, a in enumerate(alphas):
            weights = curve_lib.interpolate(w1, w2, a)
            points.append(dict(alpha=a, **self.point(weights, full=i == 0)))
            if a in (0.0, 1.0) and self.trainer.task.is_classification:
                ends[a] = self.predictions()
        out = {"bn": self.bn, "has_batchnorm": self.has_bn, "alphas": alphas, "points": points,
               "disagreement": curve_lib.disagreement(ends[0.0], ends[1.0]) if ends else None}
        for split in self.splits:
            out[split] = curve_lib.summarize_curve(alphas, [p[f"{split}_error"] for p in points],
                                                   [p[f"{split}_loss"] for p in points]).to_dict()
        return out

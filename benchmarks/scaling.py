#!/usr/bin/env python3
"""Scaling of tflth's training loop: replicas, and model size. Figures only, no bounds.

1. **Replicas**: one LeNet-300-100 epoch (Fashion-MNIST, global batch 60, Adam 1.2e-3)
   of tflth's :class:`~tflth.training.Trainer` under ``MirroredStrategy`` over 1 and over
   2 logical CPU devices (the one physical CPU split in two before TensorFlow
   initialises, as ``tests/conftest.py`` does), and under the default strategy for
   reference. The three trainers take turns, one epoch each, rotating which goes first;
   rows are medians of per-turn ratios with quartiles. The two logical devices share the
   same cores, so this measures what replication costs (per-replica batches of 30, the
   cross-replica sum of gradients), not a speed-up; on a multi-GPU host the same code
   path runs one replica per GPU.
2. **Model size**: the time of one training step at batch 128 (input 28x28x1, default
   strategy, dense masks) for LeNet-300-100, Conv-2 and a CIFAR ResNet-20 of width 8,
   each with its preset's optimizer (Adam 1.2e-3, Adam 2e-4, SGD 0.1 with momentum 0.9
   and weight decay 1e-4). Timed: windows of consecutive steps (one ``Trainer.train``
   call each, evaluation off), the models taking turns; printed: parameters, median
   ms/step with quartiles over windows, steps/s, and the implied seconds per epoch of
   60,000 images (469 steps).

Usage::

    python benchmarks/scaling.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic]
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, before anything initialises TensorFlow's runtime.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from tflth import data as data_lib  # noqa: E402
from tflth import models, presets  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

flags.DEFINE_boolean("quick", False, "Smoke check: 3 short turns of everything.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory or .npz (default: tflth's resolution).")
flags.DEFINE_boolean("synthetic", False, "Synthetic arrays of Fashion-MNIST's shape instead of real data.")
flags.DEFINE_integer("epoch_turns", 10, "Replicas: timed epochs per strategy.")
flags.DEFINE_integer("windows", 10, "Model size: timed windows per model.")
FLAGS = flags.FLAGS

# name, preset, model overrides, steps per window (full run)
MODELS = (
    ("LeNet-300-100", "lenet_300_100_mnist", ModelHparams("lenet_300_100"), 200),
    ("Conv-2", "conv2_cifar10", ModelHparams("conv2"), 20),
    ("ResNet-20, width 8", "resnet20_cifar10", ModelHparams("resnet20", width=8), 20),
)
BATCH = 128


def _dataset():
    if FLAGS.synthetic or (FLAGS.data_dir is None and not os.path.isdir(data_lib.DEBIAN_FASHION_MNIST_DIR)):
        rng = np.random.default_rng(0)

        def make(n):
            y = rng.integers(0, 10, size=n)
            x = rng.integers(0, 60, size=(n, 28 * 28), dtype=np.uint8)
            for c in range(10):
                x[y == c, c * 8:(c + 1) * 8] = 255
            return x.reshape(n, 28, 28, 1), y

        return data_lib.from_arrays("fashion_mnist", *make(60000), *make(10000),
                                    source="synthetic arrays of Fashion-MNIST's shape")
    return data_lib.load("fashion_mnist", FLAGS.data_dir)


def _hparams(preset: str, model: ModelHparams, batch_size: int):
    run = presets.get(preset).run
    return dataclasses.replace(run, dataset=DatasetHparams("fashion_mnist"), model=model,
                               training=dataclasses.replace(run.training, batch_size=batch_size,
                                                            training_steps="1000000it"))


def _quiet(trainer: Trainer) -> Trainer:
    trainer.evaluate = lambda split="test": (0.0, 0.0)  # time training only
    return trainer


def _timed_steps(trainer: Trainer, steps: int) -> float:
    t0 = time.perf_counter()
    trainer.train(end_step=trainer.step + steps)
    return time.perf_counter() - t0


def _quartiles(values):
    return statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3


def replicas(dataset, turns: int, examples: int) -> list[dict]:
    if examples < dataset.num_train:
        dataset = data_lib.from_arrays("fashion_mnist", dataset.x_train[:examples], dataset.y_train[:examples],
                                       dataset.x_test, dataset.y_test, source=f"{dataset.source}, first {examples}")
    hp = _hparams("lenet_300_100_mnist", ModelHparams("lenet_300_100"), 60)
    strategies = {
        "default": tf.distribute.get_strategy(),
        "mirrored x1": tf.distribute.MirroredStrategy(["/cpu:0"]),
        "mirrored x2": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    trainers = {k: _quiet(Trainer(hp, dataset=dataset, strategy=s)) for k, s in strategies.items()}
    epoch = trainers["default"].iterations_per_epoch
    for t in trainers.values():  # trace and warm up
        _timed_steps(t, epoch)
    names = list(trainers)
    times = {k: [] for k in names}
    for i in range(turns):
        for k in names[i % 3:] + names[:i % 3]:
            times[k].append(_timed_steps(trainers[k], epoch))
    rows = []
    for a, b in (("mirrored x2", "mirrored x1"), ("mirrored x1", "default")):
        ratios = [x / y for x, y in zip(times[a], times[b])]
        q1, _, q3 = _quartiles(ratios)
        rows.append({"name": f"LeNet-300-100 epoch ({epoch} steps, batch 60): {a} / {b}",
                     "a": statistics.median(times[a]), "b": statistics.median(times[b]),
                     "ratio": statistics.median(ratios), "q1": q1, "q3": q3, "n": turns})
    return rows


def model_size(dataset, windows: int, quick: bool) -> list[dict]:
    built = []
    for label, preset, model, steps in MODELS:
        t = _quiet(Trainer(_hparams(preset, model, BATCH), dataset=dataset))
        steps = max(2, steps // 20) if quick else steps
        _timed_steps(t, steps)  # trace and warm up
        built.append((label, preset, t, steps))
    times = {label: [] for label, *_ in built}
    for i in range(windows):
        for label, _, t, steps in built[i % 3:] + built[:i % 3]:
            times[label].append(_timed_steps(t, steps) / steps)
    per_epoch = math.ceil(60000 / BATCH)
    rows = []
    for label, preset, t, steps in built:
        ms = [1000 * s for s in times[label]]
        q1, _, q3 = _quartiles(ms)
        med = statistics.median(ms)
        rows.append({"name": label, "optimizer": t.hparams.training.optimizer, "params": models.count_params(t.model),
                     "ms": med, "q1": q1, "q3": q3, "steps_per_s": 1000 / med, "epoch_s": med * per_epoch / 1000,
                     "window": steps, "n": windows})
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    dataset = _dataset()
    print(f"data: {dataset.source}; TF {tf.__version__}; {os.cpu_count()} CPU cores as "
          f"{len(tf.config.list_logical_devices('CPU'))} logical devices; "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    if FLAGS.quick:
        rep_rows = replicas(dataset, 3, 6000)
        size_rows = model_size(dataset, 3, quick=True)
    else:
        rep_rows = replicas(dataset, FLAGS.epoch_turns, dataset.num_train)
        size_rows = model_size(dataset, FLAGS.windows, quick=False)
    print("\nReplicas (two logical devices on the same cores). A/B is the median over turns of the per-turn "
          "ratio; times are medians (s).\n"
          "| comparison | A (s) | B (s) | A/B | quartiles of A/B | turns |\n|---|---|---|---|---|---|")
    for r in rep_rows:
        print(f"| {r['name']} | {r['a']:.3f} | {r['b']:.3f} | {r['ratio']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} | "
              f"{r['n']} |")
    print(f"\nOne training step at batch {BATCH}, input 28x28x1, default strategy (median over windows).\n"
          "| model | optimizer | parameters | ms/step | quartiles | steps/s | s/epoch (469 steps) | window x n |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in size_rows:
        print(f"| {r['name']} | {r['optimizer']} | {r['params']:,} | {r['ms']:.2f} | {r['q1']:.2f}-{r['q3']:.2f} | "
              f"{r['steps_per_s']:.1f} | {r['epoch_s']:.1f} | {r['window']} x {r['n']} |")
    sys.exit(0)


if __name__ == "__main__":
    app.run(main)

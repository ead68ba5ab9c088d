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
   strategy, dense masks) for LeNet-300-100, Conv-2 and CIFAR ResNets of width 8 at
   depths 8 (the CPU-scale rewinding network of docs/results-resnet.md) and 20, each with its preset's
   optimizer (Adam 1.2e-3, Adam 2e-4, SGD 0.1 with momentum 0.9 and weight decay 1e-4;
   the ResNets use ResNet-20's preset). Timed: windows of consecutive steps (one ``Trainer.train``
   call each, evaluation off), the models taking turns; printed: parameters, median
   ms/step with quartiles over windows, steps/s, and the implied seconds per epoch of
   60,000 images (469 steps).

``--quick`` (a smoke check) times 3 turns of everything, the replicas' epochs over the
first 6,000 images (``--epoch_examples``) and the model-size windows 20x shorter. Usage::

    python benchmarks/scaling.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic]
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402

# Two logical CPU devices, before anything initialises TensorFlow's runtime.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

from absl import app, flags  # noqa: E402

from _common import (  # noqa: E402
    define_flags, first, no_evaluation, print_table, rotating, row, start, timed_steps)
from tflth import models, presets  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

define_flags("Smoke check: 3 short turns of everything (replicas: epochs of 6,000 images).")
flags.DEFINE_integer("epoch_turns", 10, "Replicas: timed epochs per strategy.")
flags.DEFINE_integer("epoch_examples", 60000, "Replicas: training images per epoch (at most all).")
flags.DEFINE_integer("windows", 10, "Model size: timed windows per model.")
FLAGS = flags.FLAGS
QUICK = dict(epoch_turns=3, epoch_examples=6000, windows=3)

# name, preset, model overrides, steps per window (full run)
MODELS = (
    ("LeNet-300-100", "lenet_300_100_mnist", ModelHparams("lenet_300_100"), 200),
    ("Conv-2", "conv2_cifar10", ModelHparams("conv2"), 20),
    ("ResNet-8, width 8 (docs/results-resnet.md's CPU-scale net)", "resnet20_cifar10", ModelHparams("resnet8", width=8), 50),
    ("ResNet-20, width 8", "resnet20_cifar10", ModelHparams("resnet20", width=8), 20),
)
BATCH = 128


def _hparams(preset: str, model: ModelHparams, batch_size: int):
    run = presets.get(preset).run
    return dataclasses.replace(run, dataset=DatasetHparams("fashion_mnist"), model=model,
                               training=dataclasses.replace(run.training, batch_size=batch_size,
                                                            training_steps="1000000it"))


def _quartiles(values):
    return statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3


def replicas(dataset, turns: int, examples: int) -> list[dict]:
    dataset = first(dataset, examples)
    hp = _hparams("lenet_300_100_mnist", ModelHparams("lenet_300_100"), 60)
    strategies = {
        "default": tf.distribute.get_strategy(),
        "mirrored x1": tf.distribute.MirroredStrategy(["/cpu:0"]),
        "mirrored x2": tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
    }
    trainers = {k: no_evaluation(Trainer(hp, dataset=dataset, strategy=s)) for k, s in strategies.items()}
    epoch = trainers["default"].iterations_per_epoch
    for t in trainers.values():  # trace and warm up
        timed_steps(t, epoch)
    times = rotating({k: (lambda t=t: timed_steps(t, epoch)) for k, t in trainers.items()}, turns)
    return [row(f"LeNet-300-100 epoch ({epoch} steps, batch 60): {a} / {b}", None, times[a], times[b])
            for a, b in (("mirrored x2", "mirrored x1"), ("mirrored x1", "default"))]


def model_size(dataset, windows: int, quick: bool) -> list[dict]:
    built = []
    for label, preset, model, steps in MODELS:
        t = no_evaluation(Trainer(_hparams(preset, model, BATCH), dataset=dataset))
        steps = max(2, steps // 20) if quick else steps
        timed_steps(t, steps)  # trace and warm up
        built.append((label, preset, t, steps))
    times = rotating({label: (lambda t=t, steps=steps: timed_steps(t, steps) / steps)
                      for label, _, t, steps in built}, windows)
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
    dataset = start(FLAGS, **QUICK)
    print(f"data: {dataset.source}; TF {tf.__version__}; {os.cpu_count()} CPU cores as "
          f"{len(tf.config.list_logical_devices('CPU'))} logical devices; "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    rep_rows = replicas(dataset, FLAGS.epoch_turns, FLAGS.epoch_examples)
    size_rows = model_size(dataset, FLAGS.windows, quick=FLAGS.quick)
    print_table(rep_rows, what="turns", title="Replicas (two logical devices on the same cores).")
    print(f"\nOne training step at batch {BATCH}, input 28x28x1, default strategy (median over windows).\n"
          "| model | optimizer | parameters | ms/step | quartiles | steps/s | s/epoch (469 steps) | window x n |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in size_rows:
        print(f"| {r['name']} | {r['optimizer']} | {r['params']:,} | {r['ms']:.2f} | {r['q1']:.2f}-{r['q3']:.2f} | "
              f"{r['steps_per_s']:.1f} | {r['epoch_s']:.1f} | {r['window']} x {r['n']} |")
    sys.exit(0)


if __name__ == "__main__":
    app.run(main)

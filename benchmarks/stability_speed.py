#!/usr/bin/env python3
"""Stability-analysis speed, side by side in one process.

1. A 30-point interpolation curve on the test set vs 30 plain ``Trainer.evaluate``
   calls of the same model (bound: <= 1.1). The curve's extra work is the interpolation
   and assignment of the weights at each point and the two endpoints' predictions (for
   the disagreement). LeNet-300-100 (no BatchNorm) and a ResNet-8 of width 8 with BN in
   ``interpolate`` mode; the same ResNet in ``recompute`` mode is shown without a bound,
   with the cost it adds per point (exact BN statistics over 20 training batches).
2. A stability sweep's wall time vs the sum of its trainings' own times (parent and
   copies, from their ``result.json``) and its pairs' analysis times (distances and the
   curves, from ``pair.json``) (bound: <= 1.05): the rest is bookkeeping, building the
   trainer, spawning and reloading copies.

Usage::

    python benchmarks/stability_speed.py [--quick] [--data_dir=DIR|FILE.npz] [--lenet_pairs=N] ...
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from _common import (  # noqa: E402
    define_flags, fashion_mnist_dir, paired, print_table, quick_overrides, row, timed)
from tflth import data as data_lib  # noqa: E402
from tflth.runs import layout as paths  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.stability import curve  # noqa: E402
from tflth.stability.evaluate import CurveEvaluator  # noqa: E402
from tflth.stability.sweep import StabilityHparams, StabilityJob  # noqa: E402
from tflth.training import Trainer  # noqa: E402

define_flags("Smoke check: 2 LeNet pairs, 1 ResNet pair, one short sweep.", synthetic=False)
flags.DEFINE_integer("lenet_pairs", 6, "LeNet-300-100: timed (curve, evaluations) pairs.")
flags.DEFINE_integer("resnet_pairs", 3, "ResNet-8: timed pairs per comparison.")
flags.DEFINE_integer("sweeps", 2, "Stability sweeps timed whole.")
flags.DEFINE_string("sweep_steps", "2ep", "Training length of each sweep's runs.")
FLAGS = flags.FLAGS
QUICK = dict(lenet_pairs=2, resnet_pairs=1, sweeps=1, sweep_steps="300it")

POINTS = 30


def _two_networks(dataset, model: str, width: int, optimizer: str, lr: float, steps: int):
    hp = RunHparams(DatasetHparams("fashion_mnist"), ModelHparams(model, width),
                    TrainingHparams(optimizer=optimizer, lr=lr, momentum=0.9 if optimizer == "sgd" else 0.0,
                                    batch_size=128, training_steps=f"{2 * steps}it"))
    trainer = Trainer(hp, dataset=dataset)
    trainer.train(end_step=steps, data_order_seed=1)
    a = trainer.get_weights()
    trainer.train(data_order_seed=2)
    return trainer, a, trainer.get_weights()


def curve_vs_evaluations(dataset, name, model, width, optimizer, lr, steps, pairs) -> list[dict]:
    trainer, a, b = _two_networks(dataset, model, width, optimizer, lr, steps)
    grid = curve.alphas(POINTS)
    modes = ("interpolate", "recompute") if model != "lenet_300_100" else ("interpolate",)
    evaluators = {bn: CurveEvaluator(trainer, train_examples=0, bn=bn) for bn in modes}
    for e in evaluators.values():  # trace once
        e.curve(a, b, [0.0, 1.0])
    plain = lambda: timed(lambda: [trainer.evaluate("test") for _ in range(POINTS)])  # noqa: E731
    rows = []
    a_int, b_plain = paired(lambda: timed(lambda: evaluators["interpolate"].curve(a, b, grid)), plain, pairs)
    what = "BN interpolate" if len(modes) > 1 else "no BN"
    rows.append(row(f"{name} ({what}): {POINTS}-point test curve / {POINTS} evaluations", 1.1, a_int, b_plain))
    if "recompute" in modes:
        a_rec, b_int = paired(lambda: timed(lambda: evaluators["recompute"].curve(a, b, grid)),
                              lambda: timed(lambda: evaluators["interpolate"].curve(a, b, grid)), pairs)
        r = row(f"{name}: BN recompute curve / BN interpolate curve", None, a_rec, b_int)
        per_point = (r["a"] - r["b"]) / POINTS
        print(f"{name}: BN recompute adds {1000 * per_point:.0f} ms per point "
              f"({per_point / (r['b'] / POINTS):.0%} of an interpolate point)", flush=True)
        rows.append(r)
    return rows


def sweep_overhead(data_dir: str, tmp: str, sweeps: int, training_steps: str) -> dict:
    run = RunHparams(DatasetHparams("fashion_mnist"), ModelHparams("lenet_300_100"),
                     TrainingHparams(optimizer="adam", lr=1.2e-3, batch_size=60, training_steps=training_steps))
    walls, sums = [], []
    for i in range(sweeps):
        job = StabilityJob(run, StabilityHparams(rewind_steps=("0it", "100it"), pairs=2, train_examples=10_000),
                           output_dir=os.path.join(tmp, f"sweep_{i}"), data_dir=data_dir, eval_every=None,
                           checkpoint_every="1ep")
        dataset = job.prepare()
        pairs = []
        walls.append(timed(lambda: pairs.extend(job.run_all(dataset))))
        parent = paths.RunDir(job.sweep.parent(0).path)
        own = json.load(open(parent.result))["seconds"] if parent.finished() else 0.0
        own += sum(p["seconds"]["copies"] + p["seconds"]["analysis"] for p in pairs)
        sums.append(own)
        print(f"sweep {i}: wall {walls[-1]:.2f} s, trainings + analyses {own:.2f} s", flush=True)
    return row("LeNet-300-100 sweep (2 k x 2 pairs): wall / own times of trainings and curves", 1.05, walls, sums)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    quick_overrides(FLAGS, **QUICK)
    tmp = tempfile.mkdtemp(prefix="tflth_stability_bench_")
    try:
        data_dir = fashion_mnist_dir(FLAGS.data_dir, tmp)
        dataset = data_lib.load("fashion_mnist", data_dir)
        print(f"data: {dataset.source}; TF {tf.__version__}; {os.cpu_count()} CPU cores", flush=True)
        rows = curve_vs_evaluations(dataset, "LeNet-300-100", "lenet_300_100", 0, "adam", 1.2e-3, 200,
                                    FLAGS.lenet_pairs)
        rows += curve_vs_evaluations(dataset, "ResNet-8 width 8", "resnet8", 8, "sgd", 0.05, 50, FLAGS.resnet_pairs)
        rows.append(sweep_overhead(data_dir, tmp, FLAGS.sweeps, FLAGS.sweep_steps))
        ok = print_table(rows)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    app.run(main)

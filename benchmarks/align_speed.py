#!/usr/bin/env python3
"""What aligning two networks costs: weight matching and activation matching, in seconds. Figures only, no bounds.

For each network (the zoo's, at Fashion-MNIST's input shape, 10 classes) two copies are
built from different seeds (random initialisations: the times depend on the shapes and on
how many rounds weight matching takes, not on training), and timed, after one untimed
call each (tracing, SciPy's import), ``--repetitions`` times, the two methods taking turns:

* ``weight_matching`` (``tflth.stability.alignment``): coordinate descent over the unit
  groups in a seeded order, one ``linear_sum_assignment`` per group and step, until a round
  changes nothing (cap 100 rounds); the unit graph read once before the clock;
* ``activation_matching`` on ``--examples`` inputs (normal noise of the input's shape),
  batch 256: both networks' activations, correlations, one assignment per group.

Networks: LeNet-300-100; ResNet-8 width 8 (the CPU-scale rewinding network of
docs/results-resnet.md); ResNet-20 width 16 (the paper's CIFAR ResNet-20, here on 28×28×1).
Printed: network, unit groups permuted, method, seconds (median [min, max]).
``--quick``: 1 repetition, 200 examples. Usage::

    python benchmarks/align_speed.py [--quick]
"""

from __future__ import annotations

import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from _common import quick_overrides, rotating, timed  # noqa: E402
from tflth import models, permutations, unit_graph  # noqa: E402
from tflth.stability import alignment  # noqa: E402

flags.DEFINE_boolean("quick", False, "Smoke check: 1 repetition, 200 examples.")
flags.DEFINE_integer("repetitions", 3, "Timed repetitions of each method (after one untimed call).")
flags.DEFINE_integer("examples", 1000, "Inputs activation matching reads.")
FLAGS = flags.FLAGS

NETWORKS = (("LeNet-300-100", "lenet_300_100", {}), ("ResNet-8, width 8", "resnet8", {"width": 8}),
            ("ResNet-20, width 16", "resnet20", {"width": 16}))


def measure(label: str, name: str, options: dict) -> list[dict]:
    model = models.get(name, input_shape=(28, 28, 1), num_classes=10, seed=0, **options)
    other = models.get(name, input_shape=(28, 28, 1), num_classes=10, seed=1, **options)
    a = {v.path: v.numpy() for v in model.weights}
    b = {v.path: v.numpy() for v in other.weights}
    graph = unit_graph.unit_groups(model)
    groups = len(permutations.permutable_groups(graph))
    x = np.random.default_rng(0).normal(size=(FLAGS.examples, 28, 28, 1)).astype("float32")
    sides = {"weight matching": lambda: timed(lambda: alignment.weight_matching(graph, a, b)),
             f"activation matching ({FLAGS.examples} examples)":
                 lambda: timed(lambda: alignment.activation_matching(model, a, b, x, graph=graph))}
    for side in sides.values():  # untimed: tracing, SciPy's import
        side()
    times = rotating(sides, FLAGS.repetitions)
    return [{"network": label, "groups": groups, "method": method, "seconds": statistics.median(t),
             "low": min(t), "high": max(t)} for method, t in times.items()]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    quick_overrides(FLAGS, repetitions=1, examples=200)
    rows = [row for net in NETWORKS for row in measure(*net)]
    print("| network | permutable groups | method | seconds (median [min, max]) |")
    print("|---|---:|---|---:|")
    for r in rows:
        print(f"| {r['network']} | {r['groups']} | {r['method']} | {r['seconds']:.3f} [{r['low']:.3f}, "
              f"{r['high']:.3f}] |")
    return 0


if __name__ == "__main__":
    app.run(main)

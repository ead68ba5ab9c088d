#!/usr/bin/env python3
"""What one-shot scoring costs: seconds per method, and as a fraction of one training. Figures only, no bounds.

For each network, built as tflth's engine builds it (a :class:`~tflth.training.Trainer`
with its preset's optimizer, all-ones masks on the zoo's prunable kernels) on arrays of
Fashion-MNIST's shape (synthetic by default: no dataset needed; the values do not change
the times):

* **LeNet-300-100** (``lenet_300_100_mnist``: Adam 1.2e-3, batch 60); one training:
  the paper's 24,000 it;
* **ResNet-8, width 8** (the ``resnet20_cifar10`` preset with ``ModelHparams("resnet8",
  width=8)``: SGD 0.1, momentum 0.9, batch 128); one training: the 800 it of
  docs/results-resnet.md's CPU-scale experiment (milestones 400 and 600 it);
* **vit_tiny**, default options (``vit_tiny_mnist``'s AdamW, weight decay 0.05, here LR
  1e-2, batch 128); one training: the 1,000 it of docs/results-vit.md (milestones 500
  and 750 it; that page trains ``depth=2``, this row the default depth).

Timed, per network (the model first trained ``--train_steps`` steps, so every score is
taken at an iteration k > 0; every function called once untimed first, to trace and
warm up, then ``--repetitions`` times, the methods taking turns and rotating which goes
first):

* ``snip_scores`` over ``--batches`` training batches of the network's batch size
  (the batches made before the clock starts);
* ``grasp_scores`` over the same batches;
* SynFlow: one round (``synflow_scores``) and the full ``synflow_mask`` (``--synflow_rounds``
  rounds, the paper's 100) to density ``--density`` (3.6 %, issue 30's lowest), global;
  where SynFlow refuses the model (vit_tiny: its LayerNormalization and attention), the
  row gives ``synflow_refusal``'s reason instead. Each call traces a new ``tf.function``
  (``tflth.pruning.saliency._Flow``), and that tracing is part of its time;
* the baseline, magnitude at k: ``np.abs`` of the scored weights and ``one_shot_mask``
  to the same density (global): about the cost of the mask allocation alone;
* a training window (no evaluation; 500 steps of LeNet, 100 of the others, times
  ``--window_scale``), whose median s/step times the length of one training is the
  denominator of the fraction column.

Printed: one table, network, method, seconds (median [min, max] over repetitions) and
the fraction of one training. ``--quick``: 1 repetition, 3 SynFlow rounds, short
training windows (a smoke check of a minute or two). Usage::

    python benchmarks/saliency_speed.py [--quick] [--data_dir=DIR|FILE.npz]
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from _common import fashion_mnist, no_evaluation, quick_overrides, rotating, timed, timed_steps  # noqa: E402
from tflth import data as data_lib  # noqa: E402
from tflth import masking, models, presets, pruning  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

flags.DEFINE_boolean("quick", False, "Smoke check: 1 repetition, 3 SynFlow rounds, short training windows.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory or .npz (default: synthetic arrays of its shape; "
                    "the times do not depend on the values).")
flags.DEFINE_integer("repetitions", 3, "Timed repetitions of every method (after one untimed warm-up call).")
flags.DEFINE_integer("batches", 1, "Batches of SNIP's and GraSP's gradient (each of the network's batch size).")
flags.DEFINE_integer("synflow_rounds", 100, "Rounds of the full synflow_mask (the paper: 100).")
flags.DEFINE_float("density", 0.036, "Density of the SynFlow and magnitude masks.")
flags.DEFINE_integer("train_steps", 20, "Training steps before scoring (the scores are taken at this k).")
flags.DEFINE_float("window_scale", 1.0, "Scales each network's timed training window (--quick: 0.2).")
FLAGS = flags.FLAGS
QUICK = dict(repetitions=1, synflow_rounds=3, window_scale=0.2)


@dataclasses.dataclass(frozen=True)
class Network:
    label: str
    preset: str
    model: ModelHparams
    training: dict  # TrainingHparams overrides: one training as the docs run it
    window: int  # steps per timed training window (full run)
    source: str  # where the training length comes from


NETWORKS = (
    Network("LeNet-300-100", "lenet_300_100_mnist", ModelHparams("lenet_300_100"),
            dict(training_steps="24000it"), 500, "the paper's"),
    Network("ResNet-8, width 8", "resnet20_cifar10", ModelHparams("resnet8", width=8),
            dict(training_steps="800it", milestones=("400it", "600it")), 100, "docs/results-resnet.md's T"),
    Network("vit_tiny (default options)", "vit_tiny_mnist", ModelHparams("vit_tiny"),
            dict(training_steps="1000it", lr=1e-2, milestones=("500it", "750it")), 100, "docs/results-vit.md's T"),
)


def _trainer(net: Network, dataset) -> Trainer:
    run = presets.get(net.preset).run
    hp = dataclasses.replace(run, dataset=DatasetHparams("fashion_mnist"), model=net.model,
                             training=dataclasses.replace(run.training, **net.training))
    return no_evaluation(Trainer(hp, dataset=dataset))


def _batches(trainer: Trainer, count: int) -> list:
    """``count`` training batches of the trainer's batch size, as tensors (made before timing)."""
    stream = data_lib.train_batches(trainer.dataset, trainer.hparams.training.batch_size, 7, 7, augment=False)
    return [(tf.constant(x), tf.constant(y)) for x, y in stream.take(count).as_numpy_iterator()]


def _synflow_methods(model) -> dict:
    density, rounds = FLAGS.density, FLAGS.synflow_rounds
    return {"SynFlow scores (1 round)": lambda: pruning.synflow_scores(model),
            f"SynFlow mask ({rounds} rounds to {100 * density:g} %)":
                lambda: pruning.synflow_mask(model, density, rounds=rounds)}


def measure(net: Network, dataset) -> list[dict]:
    trainer = _trainer(net, dataset)
    model, th = trainer.model, trainer.hparams.training
    paths = trainer.masked_paths
    timed_steps(trainer, FLAGS.train_steps)  # trace the training loop; the scores are taken at this k
    batches = _batches(trainer, FLAGS.batches)
    density = FLAGS.density
    window = max(5, round(net.window * FLAGS.window_scale))
    n_batch = f"{FLAGS.batches} batch{'es' if FLAGS.batches > 1 else ''} of {th.batch_size}"

    variables = {p: v for p, (v, _) in masking.masked_variables(model).items()}

    def magnitude():
        return pruning.one_shot_mask({p: np.abs(v.numpy()) for p, v in variables.items()}, density)

    synflow = _synflow_methods(model)
    methods = {
        f"SNIP scores ({n_batch})": lambda: pruning.snip_scores(model, batches),
        f"GraSP scores ({n_batch})": lambda: pruning.grasp_scores(model, batches),
        **synflow,
        f"magnitude (|w| + one_shot_mask to {100 * density:g} %)": magnitude,
    }
    refused = {}
    reason = pruning.synflow_refusal(model)  # read from the layers before anything runs
    if reason:
        try:
            pruning.synflow_scores(model)  # the refusal is SaliencyError's, in one line
        except pruning.SaliencyError:
            refused = {name: reason for name in synflow}
    sides = {name: (lambda fn=fn: timed(fn)) for name, fn in methods.items() if name not in refused}
    train_name = f"training window ({window} steps, batch {th.batch_size}, {th.optimizer})"
    sides[train_name] = lambda: timed_steps(trainer, window)
    for side in sides.values():  # warm up (tf.function tracing, first allocations)
        side()
    times = rotating(sides, FLAGS.repetitions)

    per_step = [t / window for t in times.pop(train_name)]
    steps = trainer.end_step
    one_training = statistics.median(per_step) * steps
    rows = [{"network": net.label, "method": f"one training: {steps:,} it ({net.source}) at "
             f"{1000 * statistics.median(per_step):.2f} ms/step ({FLAGS.repetitions} × {window} steps, batch "
             f"{th.batch_size}, {th.optimizer})",
             "times": [s * steps for s in per_step], "fraction": 1.0}]
    for name in methods:
        if name in refused:
            rows.append({"network": net.label, "method": name, "refused": refused[name]})
        else:
            rows.append({"network": net.label, "method": name, "times": times[name],
                         "fraction": statistics.median(times[name]) / one_training})
    print(f"{net.label}: {models.count_params(model):,} parameters, {len(paths)} scored kernels "
          f"({sum(int(np.prod(v.shape)) for v in variables.values()):,} weights); "
          f"one training ≈ {one_training:.1f} s", flush=True)
    return rows


def _seconds(t: float) -> str:
    return f"{t:.3f}" if t < 10 else f"{t:.1f}"


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")  # each SynFlow call traces anew: its retracing warnings are expected here
    quick_overrides(FLAGS, **QUICK)
    with tempfile.TemporaryDirectory(prefix="tflth_bench_") as tmp:
        dataset = fashion_mnist(FLAGS.data_dir, tmp, synthetic=not FLAGS.data_dir)
    print(f"data: {dataset.source}; TF {tf.__version__}; {os.cpu_count()} CPU cores; "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    rows = [r for net in NETWORKS for r in measure(net, dataset)]
    print(f"\nSeconds: median [min, max] over {FLAGS.repetitions} repetition(s) after one warm-up call; fraction: "
          "the median over the time of one training (its median s/step × its length). Scores at k = "
          f"{FLAGS.train_steps} it.\n"
          "| network | method | seconds | fraction of one training |\n|---|---|---|---|")
    for r in rows:
        if "refused" in r:
            print(f"| {r['network']} | {r['method']} | refused: {r['refused']} | — |")
            continue
        t = r["times"]
        print(f"| {r['network']} | {r['method']} | {_seconds(statistics.median(t))} [{_seconds(min(t))}, "
              f"{_seconds(max(t))}] | {r['fraction']:.2g} |", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    app.run(main)

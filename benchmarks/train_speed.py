#!/usr/bin/env python3
"""Training-engine speed, as ratios measured side by side in one process.

1. masked vs unmasked: train step time of tflth's loop on the same architecture built
   from tflth masked layers (80 % pruned) vs plain keras.layers.Dense/Conv2D (bound:
   ratio <= 1.05), for LeNet-300-100 and Conv-2;
2. tflth's loop vs Keras ``model.fit``: one epoch of LeNet-300-100 at batch 60 on
   in-memory Fashion-MNIST (bound: ratio <= 0.7);
3. rewind-point checkpoints: what 10 of them add to the paper's 24,000-iteration
   LeNet-300-100 run (bound: <= 2 %); the same for a 2-epoch run (12x stricter) is shown
   without a bound.

Every comparison times its two sides as adjacent pairs, alternating which goes first;
the figure is the median over pairs of the per-pair ratio, with its quartiles, because
this shared 2-core VM runs the same work 5-15 % slower or faster from one second to the
next and two identical networks built at different times differ by a few percent (the
masked comparison therefore spreads its pairs over several fresh builds). The cost of a
rewind checkpoint is measured the same way, as 200-step windows with and without one
checkpoint in the middle, and scaled to 10 checkpoints per run: differencing whole
25-second runs cannot resolve 2 % here. The script exits 1 if a bound is missed. Usage::

    python benchmarks/train_speed.py [--data_dir=/usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tflth  # noqa: E402
from tflth import data as data_lib  # noqa: E402
from tflth import masks, presets  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.training import Trainer, checkpoint  # noqa: E402

flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory (default: tflth's resolution).")
flags.DEFINE_integer("rounds", 10, "Masked/unmasked: fresh builds of both networks.")
flags.DEFINE_integer("round_pairs", 6, "Masked/unmasked: timed pairs per build.")
flags.DEFINE_integer("lenet_steps", 500, "Steps per LeNet-300-100 masked/unmasked measurement.")
flags.DEFINE_integer("conv_steps", 20, "Steps per Conv-2 masked/unmasked measurement.")
flags.DEFINE_integer("fit_pairs", 16, "Timed epoch pairs for tflth loop vs Keras fit.")
flags.DEFINE_integer("checkpoint_pairs", 100, "Timed window pairs for the cost of a rewind checkpoint.")
FLAGS = flags.FLAGS

WINDOW = 200  # steps per window of the checkpoint measurement


def _hparams(model: str, steps: str, optimizer: str = "adam", lr: float = 1.2e-3) -> RunHparams:
    return RunHparams(DatasetHparams("fashion_mnist"), ModelHparams(model),
                      TrainingHparams(optimizer=optimizer, lr=lr, batch_size=60, training_steps=steps))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _train_for(trainer: Trainer, steps: int) -> None:
    """``steps`` more training steps; the end-of-call test evaluation is skipped."""
    trainer.evaluate = lambda split="test": (0.0, 0.0)
    trainer.train(end_step=trainer.step + steps)


def _timed_train(trainer: Trainer, steps: int) -> float:
    """Seconds for ``steps`` more training steps (no evaluation, no run directory)."""
    return _timed(lambda: _train_for(trainer, steps))


def _pairs(rounds, pairs_per_round) -> tuple[list[float], list[float]]:
    """Time sides a and b as adjacent pairs, alternating which goes first.

    ``rounds`` is a list of functions, each returning an ``(a, b)`` pair of callables
    that return seconds; each round runs ``pairs_per_round`` pairs.
    """
    a_times, b_times = [], []
    for make_sides in rounds:
        side_a, side_b = make_sides()
        for _ in range(pairs_per_round):
            if len(a_times) % 2:
                b, a = side_b(), side_a()
            else:
                a, b = side_a(), side_b()
            a_times.append(a)
            b_times.append(b)
    return a_times, b_times


def _row(name, bound, a_times, b_times, ratios=None) -> dict:
    """Median times, the median per-pair ratio and its quartiles."""
    ratios = ratios or [a / b for a, b in zip(a_times, b_times)]
    ratio = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {"name": name, "a": statistics.median(a_times), "b": statistics.median(b_times), "ratio": ratio,
            "q1": q1, "q3": q3, "n": len(ratios), "bound": bound, "ok": bound is None or ratio <= bound}


def masked_vs_unmasked(dataset, model_name, steps) -> dict:
    """Masked (80 % pruned, as IMP trains it) vs plain Keras layers, same loop and weights."""
    hp = _hparams(model_name, "1000000it")

    def make_sides():
        gc.collect()  # the previous round's networks
        masked = Trainer(hp, dataset=dataset)
        plain = Trainer(hp, dataset=dataset, model=tflth.unmasked(masked.model))
        # The masked forward pass costs the same at any density: pruned weights are zeros, not skipped.
        rng = np.random.default_rng(0)
        masks.set_masks(masked.model, {p: rng.random(m.shape) < 0.2 for p, m in masks.get_masks(masked.model).items()})
        for t in (masked, plain):  # trace and warm up
            _timed_train(t, steps)
        return (lambda: _timed_train(masked, steps)), (lambda: _timed_train(plain, steps))

    a, b = _pairs([make_sides] * FLAGS.rounds, FLAGS.round_pairs)
    return _row(f"{model_name}: masked / unmasked, {steps} steps", 1.05, a, b)


def loop_vs_fit(dataset) -> dict:
    trainer = Trainer(_hparams("lenet_300_100", "1000000it"), dataset=dataset)
    epoch = trainer.iterations_per_epoch
    x = ((dataset.x_train.astype("float32") / 255.0 - 0.2860) / 0.3530)
    y = dataset.y_train
    model = tflth.models.get("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def fit_epoch():
        return _timed(lambda: model.fit(x, y, batch_size=60, epochs=1, shuffle=True, verbose=0))

    _timed_train(trainer, epoch)  # trace
    fit_epoch()
    a, b = _pairs([lambda: (lambda: _timed_train(trainer, epoch), fit_epoch)], FLAGS.fit_pairs)
    return _row("LeNet-300-100 epoch: tflth loop / keras fit", 0.7, a, b)


def checkpoint_overhead(dataset) -> list[dict]:
    """What 10 rewind checkpoints add to a LeNet-300-100 run, from the cost of one.

    A: train half a window, save a checkpoint as the loop does at a rewind point (a host
    copy of the state, written on the background thread, waited for at the end of the
    window), train the other half; B: the same two halves without the checkpoint. A - B is
    the cost of one checkpoint; a run with 10 of them is 10 x that longer. (On this
    2-core machine the background write competes with training for the CPU, so it costs
    about what a synchronous write does; on a GPU machine it overlaps the steps.)
    """
    trainer = Trainer(dataclasses.replace(presets.get("lenet_300_100_mnist").run,
                                          dataset=DatasetHparams("fashion_mnist")), dataset=dataset)
    root = tempfile.mkdtemp(prefix="tflth_bench_")
    writer = checkpoint.Writer()

    def window(save: bool):
        def run():
            _train_for(trainer, WINDOW // 2)
            if save:
                trainer.save_checkpoint(checkpoint.path_for(root, trainer.step), writer)
            _train_for(trainer, WINDOW - WINDOW // 2)
            writer.flush()
        return _timed(run)

    _timed_train(trainer, 1000)  # trace and warm up
    window(True)
    a, b = _pairs([lambda: (lambda: window(True), lambda: window(False))], FLAGS.checkpoint_pairs)
    writer.close()
    shutil.rmtree(root, ignore_errors=True)
    window_seconds, extra = statistics.median(b), [x - y for x, y in zip(a, b)]
    rows = []
    # The bound is for the paper's run; the 2-epoch run (12x stricter) is shown for reference.
    for label, run_steps, bound in (("24,000-it", trainer.end_step, 1.02),
                                    ("2-epoch", 2 * trainer.iterations_per_epoch, None)):
        run_seconds = window_seconds * run_steps / WINDOW
        ratios = [1 + 10 * e / run_seconds for e in extra]
        row = _row(f"LeNet-300-100 {label} run: with 10 rewind checkpoints / without", bound,
                   [run_seconds + 10 * e for e in extra], [run_seconds, run_seconds], ratios)
        rows.append(row)
    return rows


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    dataset = data_lib.load("fashion_mnist", FLAGS.data_dir)
    print(f"data: {dataset.source}; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    results = [
        masked_vs_unmasked(dataset, "lenet_300_100", FLAGS.lenet_steps),
        masked_vs_unmasked(dataset, "conv2", FLAGS.conv_steps),
        loop_vs_fit(dataset),
        *checkpoint_overhead(dataset),
    ]
    print("\nA/B is the median over timed pairs of the per-pair ratio; times are medians.\n"
          "| comparison | A (s) | B (s) | A/B | quartiles of A/B | pairs | bound | ok |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in results:
        bound = "—" if r["bound"] is None else f"<= {r['bound']}"
        ok = "—" if r["bound"] is None else "yes" if r["ok"] else "NO"
        print(f"| {r['name']} | {r['a']:.3f} | {r['b']:.3f} | {r['ratio']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} | "
              f"{r['n']} | {bound} | {ok} |")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    app.run(main)

#!/usr/bin/env python3
"""Training-engine speed, as ratios measured side by side in one process.

1. masked vs unmasked: tflth's loop on the same architecture built from tflth masked
   layers vs plain keras.layers.Dense/Conv2D (bound: ratio <= 1.05), for LeNet-300-100
   and Conv-2;
2. tflth's loop vs Keras ``model.fit``: one epoch of LeNet-300-100 at batch 60 on
   in-memory Fashion-MNIST (bound: ratio <= 0.7);
3. rewind-point checkpoints: a LeNet run saving 10 of them vs saving none
   (bound: overhead <= 2%).

Each measurement is repeated and alternated between the two sides; the table shows the
median time of each side and their ratio. Usage::

    python benchmarks/train_speed.py [--data_dir=/usr/share/datasets/fashion-mnist] [--repeats=5]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import tflth  # noqa: E402
from tflth import data as data_lib  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory (default: tflth's resolution).")
flags.DEFINE_integer("repeats", 7, "Repetitions per comparison (order alternates).")
flags.DEFINE_integer("conv_steps", 150, "Steps per Conv-2 measurement.")
FLAGS = flags.FLAGS


def _hparams(model: str, steps: str, optimizer: str = "adam", lr: float = 1.2e-3) -> RunHparams:
    return RunHparams(DatasetHparams("fashion_mnist"), ModelHparams(model),
                      TrainingHparams(optimizer=optimizer, lr=lr, batch_size=60, training_steps=steps))


def _timed_train(trainer: Trainer, steps: int, **kwargs) -> float:
    """Seconds for ``steps`` more training steps (evaluation excluded)."""
    trainer.evaluate = lambda split="test": (0.0, 0.0)  # keep the end-of-run evaluation out of the timing
    start = trainer.step
    t0 = time.perf_counter()
    trainer.train(end_step=start + steps, **kwargs)
    return time.perf_counter() - t0


def _compare(name, bound, side_a, side_b, repeats):
    """Run a and b ``repeats`` times each, alternating which goes first; ratio = min(a) / min(b).

    The minimum is the least-disturbed run: on a shared machine interference only adds time.
    """
    a_times, b_times = [], []
    for i in range(repeats):
        if i % 2:
            b_times.append(side_b())
            a_times.append(side_a())
        else:
            a_times.append(side_a())
            b_times.append(side_b())
    a, b = min(a_times), min(b_times)
    ratio = a / b
    return {"name": name, "a": a, "b": b, "ratio": ratio, "bound": bound, "ok": ratio <= bound}


def masked_vs_unmasked(dataset, model_name, steps, repeats):
    hp = _hparams(model_name, f"{10 * steps}it")
    masked = Trainer(hp, dataset=dataset)
    plain_model = tflth.unmasked(masked.model)
    plain = Trainer(hp, dataset=dataset, model=plain_model)
    for t in (masked, plain):  # trace and warm up
        _timed_train(t, steps)
    return _compare(f"{model_name}: masked / unmasked step time", 1.05,
                    lambda: _timed_train(masked, steps), lambda: _timed_train(plain, steps), repeats)


def loop_vs_fit(dataset, repeats):
    hp = _hparams("lenet_300_100", "100ep")
    trainer = Trainer(hp, dataset=dataset)
    epoch = trainer.iterations_per_epoch
    x = ((dataset.x_train.astype("float32") / 255.0 - 0.2860) / 0.3530)
    y = dataset.y_train
    model = tflth.models.get("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def fit_epoch():
        t0 = time.perf_counter()
        model.fit(x, y, batch_size=60, epochs=1, shuffle=True, verbose=0)
        return time.perf_counter() - t0

    _timed_train(trainer, epoch)  # trace
    fit_epoch()
    return _compare("LeNet-300-100 epoch: tflth loop / keras fit", 0.7,
                    lambda: _timed_train(trainer, epoch), fit_epoch, repeats)


def checkpoint_overhead(dataset, repeats):
    hp = _hparams("lenet_300_100", "100ep")
    trainer = Trainer(hp, dataset=dataset)
    steps = 2 * trainer.iterations_per_epoch
    root = tempfile.mkdtemp(prefix="tflth_bench_")

    def run(save: bool):
        run_dir = tempfile.mkdtemp(dir=root)
        start = trainer.step
        save_steps = [start + (i + 1) * steps // 10 for i in range(10)] if save else []
        t = _timed_train(trainer, steps, run_dir=run_dir, save_steps=save_steps,
                         checkpoint_every=None, eval_every=None)
        shutil.rmtree(run_dir)
        return t

    # Both sides write the same start and end checkpoints and logs; only the 10 rewind points differ.
    _timed_train(trainer, steps)
    out = _compare("LeNet-300-100 2 epochs: with 10 rewind checkpoints / without", 1.02,
                   lambda: run(True), lambda: run(False), repeats)
    shutil.rmtree(root, ignore_errors=True)
    return out


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    dataset = data_lib.load("fashion_mnist", FLAGS.data_dir)
    print(f"data: {dataset.source}; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    results = [
        masked_vs_unmasked(dataset, "lenet_300_100", 1000, FLAGS.repeats),
        masked_vs_unmasked(dataset, "conv2", FLAGS.conv_steps, FLAGS.repeats),
        loop_vs_fit(dataset, FLAGS.repeats),
        checkpoint_overhead(dataset, FLAGS.repeats),
    ]
    print(f"\n| comparison | A (s, best of N) | B (s, best of N) | A/B | bound | ok |\n|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {r['a']:.3f} | {r['b']:.3f} | {r['ratio']:.3f} | <= {r['bound']} | "
              f"{'yes' if r['ok'] else 'NO'} |")
    sys.exit(0 if all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    app.run(main)

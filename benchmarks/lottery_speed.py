#!/usr/bin/env python3
"""IMP overhead: what the lottery driver adds around its trainings.

The run: ``bin/prune.py --preset=lenet_300_100_mnist --dataset=fashion_mnist
--training_steps=2ep --levels=5`` (rewind to step 0, evaluation and a resume checkpoint
every epoch as the command's defaults say): 6 trainings of LeNet-300-100, levels 0-5.
Data: real Fashion-MNIST where tflth finds it, else a synthetic ``.npz`` of its shape
written here. Each training's own time is the ``seconds`` field of its ``result.json``:
``Trainer.train`` from entry to return, i.e. its steps, evaluations, checkpoint and
metrics writes and the tracing of the first call.

1. **In-process** (bound <= 1.05): wall time of ``LotteryJob.run_all(dataset)`` / the sum
   of the 6 ``seconds``. ``run_all`` is the part of ``bin/prune.py`` that runs IMP;
   before it the command loads and validates the data (``LotteryJob.prepare``), after
   it it writes the report. Neither is IMP, so neither is in this figure; what is:
   building the trainer, computing, saving and applying each level's mask, the rewind
   (loading the step-k checkpoint), deleting intermediate checkpoints and the per-level
   JSON files. The overhead is a fixed cost per level, so the ratio falls as trainings
   get longer; the absolute cost per level is printed too. Several runs, each in a
   fresh output directory; the figure is the median over runs of the per-run ratio.
2. **The whole command** (no bound): wall time of ``bin/prune.py`` as a subprocess,
   minus its start-up (the wall time of ``bin/prune.py --helpshort``, which imports
   tflth and TensorFlow and parses the flags, measured next to it), / the sum of its
   6 ``seconds``. This adds loading the data and writing the report (plots).

The script exits 1 if the bound is missed. Usage::

    python benchmarks/lottery_speed.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from _common import define_flags, fashion_mnist_dir, print_table, quick_overrides, row, timed  # noqa: E402
from tflth import presets  # noqa: E402
from tflth.hparams import DatasetHparams  # noqa: E402
from tflth.lottery import LotteryHparams, LotteryJob  # noqa: E402

define_flags("Smoke check: 5 levels of 100 steps, 2 in-process runs, 1 command run.")
flags.DEFINE_string("training_steps", "2ep", "Length of each of the 6 trainings.")
flags.DEFINE_integer("levels", 5, "Pruning levels after the dense level 0.")
flags.DEFINE_integer("runs", 3, "In-process runs of the whole job.")
flags.DEFINE_integer("command_runs", 2, "Runs of bin/prune.py as a subprocess.")
FLAGS = flags.FLAGS

PRESET = "lenet_300_100_mnist"
BOUND = 1.05
QUICK = dict(training_steps="100it", runs=2, command_runs=1)


def _job(output_dir: str, data_dir: str, training_steps: str) -> LotteryJob:
    """The job ``bin/prune.py --preset=... --dataset=fashion_mnist --training_steps=...
    --levels=...`` builds (the command's defaults for everything else)."""
    preset = presets.get(PRESET)
    run = dataclasses.replace(preset.run, dataset=DatasetHparams("fashion_mnist"),
                              training=dataclasses.replace(preset.run.training, training_steps=training_steps))
    return LotteryJob(run=run, pruning=preset.pruning,
                      lottery=LotteryHparams(levels=FLAGS.levels, rewind_step=preset.rewind_step),
                      output_dir=output_dir, data_dir=data_dir)


def _training_seconds(job: LotteryJob) -> list[float]:
    """The ``seconds`` of every level's result.json (levels 0..L, replicate 0)."""
    seconds = []
    for level in range(FLAGS.levels + 1):
        with open(os.path.join(job.level_dir(0, level), "result.json")) as f:
            seconds.append(json.load(f)["seconds"])
    return seconds


def in_process(data_dir: str, tmp: str, training_steps: str, runs: int) -> tuple[dict, list[float]]:
    walls, sums = [], []
    for i in range(runs):
        job = _job(os.path.join(tmp, f"inproc_{i}"), data_dir, training_steps)
        dataset = job.prepare()  # bin/prune.py's validation, before run_all
        walls.append(timed(lambda: job.run_all(dataset)))
        sums.append(sum(_training_seconds(job)))
        shutil.rmtree(job.output_dir, ignore_errors=True)
    trainings = FLAGS.levels + 1
    per_level = [(w - s) / trainings for w, s in zip(walls, sums)]
    return row(f"IMP {FLAGS.levels} levels, {trainings} x {training_steps}: LotteryJob.run_all / "
               f"sum of its trainings' seconds", BOUND, walls, sums), per_level


def _command(extra: list[str]) -> float:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "prune.py"), *extra], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 and "--helpshort" not in extra:
        sys.exit(f"bin/prune.py {' '.join(extra)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return seconds


def whole_command(data_dir: str, tmp: str, training_steps: str, runs: int) -> tuple[dict, list[float]]:
    adjusted, sums, startups = [], [], []
    for i in range(runs):
        out = os.path.join(tmp, f"command_{i}")
        startups.append(_command(["--helpshort"]))
        wall = _command([f"--preset={PRESET}", "--dataset=fashion_mnist", f"--data_dir={data_dir}",
                         f"--training_steps={training_steps}", f"--levels={FLAGS.levels}", f"--output_dir={out}"])
        job = _job(out, data_dir, training_steps)
        sums.append(sum(_training_seconds(job)))
        adjusted.append(wall - startups[-1])
        shutil.rmtree(out, ignore_errors=True)
    return row(f"bin/prune.py, same run: (wall - start-up) / sum of its trainings' seconds", None,
               adjusted, sums), startups


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    quick_overrides(FLAGS, **QUICK)
    training_steps, runs, command_runs = FLAGS.training_steps, FLAGS.runs, FLAGS.command_runs
    tmp = tempfile.mkdtemp(prefix="tflth_lottery_bench_")
    try:
        data_dir = fashion_mnist_dir(FLAGS.data_dir, tmp, FLAGS.synthetic)
        print(f"data: {data_dir}; TF {tf.__version__}; {os.cpu_count()} CPU cores", flush=True)
        results = []
        result, per_level = in_process(data_dir, tmp, training_steps, runs)
        results.append(result)
        print(f"in-process: IMP's own cost per level (wall - trainings) / {FLAGS.levels + 1}: median "
              f"{statistics.median(per_level):.3f} s", flush=True)
        if command_runs:
            result, startups = whole_command(data_dir, tmp, training_steps, command_runs)
            results.append(result)
            print(f"bin/prune.py start-up (--helpshort): median {statistics.median(startups):.2f} s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(0 if print_table(results, what="runs") else 1)


if __name__ == "__main__":
    app.run(main)

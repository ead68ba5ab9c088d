#!/usr/bin/env python3
"""tflth vs TensorFlow Model Optimization: time per training epoch at 80 % sparsity.

For LeNet-300-100 (784-300-100-10) and Conv-2 (tflth's ``conv2`` at 28x28x1: two 3x3
'same' convolutions of 64 filters, a 2x2 max-pool, dense 256, 256, 10; 3.3M weights),
batch 60, Adam 1.2e-3, three sides train on the same images:

* **tflth**: the network from tflth's zoo (masked layers) with a random 80 %-sparse mask
  on every kernel, trained by tflth's :class:`~tflth.training.Trainer` loop (default
  strategy, input pipeline normalising each batch in ``tf.data``). Timed: one
  ``Trainer.train`` call of one epoch of steps, with its end-of-call test evaluation
  switched off and no run directory (so no checkpoints or metrics files);
* **tfmot**: the same layers in ``tf_keras`` wrapped by
  ``tfmot.sparsity.keras.prune_low_magnitude`` with ``ConstantSparsity(0.8,
  begin_step=0, frequency=100)``, trained by ``model.fit(x, y, batch_size=60, epochs=1,
  shuffle=True, verbose=0, callbacks=[UpdatePruningStep()])`` on pre-normalised float32
  arrays (tf_keras defaults otherwise: one step per ``tf.function`` call, no XLA);
  timed: the ``fit`` call (training only: no validation data, no ``evaluate``);
* **dense fit**: the same ``tf_keras`` network without the pruning wrapper, the same
  ``fit`` call without the callback, for reference.

Each side lives in its own long-lived worker process, because tfmot needs ``tf_keras``
and switches ``tf.keras`` to it on import: tflth in this (core) venv, tfmot and dense fit
in ``.venv-tfmot`` (``benchmarks/_tfmot_worker.py``, built by ``make bench-tfmot``). The
driver loads the data once with tflth's loader (real Fashion-MNIST where present, else
synthetic arrays of its shape), writes it to one ``.npz`` both workers read, has every
side train two warm-up epochs (tracing; the tfmot side at least 100 steps, since it
first prunes at step 100, after which its kernels are 80 % zeros), then asks the sides
in turn for one timed epoch each over a pipe (JSON lines), rotating which side goes
first. Each worker times its own epoch, so the pipe is not in the figure. The tflth
side is at a disadvantage on input (it normalises every batch in its pipeline; ``fit``
gets normalised arrays) and the masks differ in kind (tflth's are fixed and random,
tfmot recomputes magnitude masks every 100 steps): both are what each tool does.
Conv-2's "epoch" is a pass over the first ``--conv_examples`` training images
(12,000 = 200 steps by default) so that a full run takes minutes, not an hour; both
sides see the same subset.

Printed per network, in train_speed.py's style: median times, the median over
repetitions of the per-repetition ratio with its quartiles, the repetition count and the
bound. Bound: tflth <= 0.5 x tfmot on each network; the script exits 1 if one is
missed. Usage::

    make bench-tfmot [TFMOT_BENCH_FLAGS=--quick]   # builds .venv-tfmot if missing, then runs this
    .venv/bin/python benchmarks/tfmot_speed.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from absl import app, flags  # noqa: E402

from _common import (  # noqa: E402
    define_flags, fashion_mnist, first, no_evaluation, print_table, quick_overrides, random_masks, rotating, row,
    serve)

flags.DEFINE_boolean("worker", False, "Internal: serve as the tflth worker (JSON lines on stdin/stdout).")
define_flags("Smoke check: 3 repetitions of short epochs.")
flags.DEFINE_string("tfmot_python", os.path.join(ROOT, ".venv-tfmot", "bin", "python"),
                    "Python of the tfmot environment (make bench-tfmot builds it).")
flags.DEFINE_list("networks", ["lenet_300_100", "conv2"], "Networks to compare.")
flags.DEFINE_integer("repetitions", 10, "Timed epochs per side and network.")
flags.DEFINE_integer("lenet_examples", 60000, "Training images per LeNet-300-100 epoch (all of Fashion-MNIST).")
flags.DEFINE_integer("conv_examples", 12000, "Training images per Conv-2 epoch (a fixed subset).")
FLAGS = flags.FLAGS
QUICK = dict(repetitions=3, lenet_examples=6000, conv_examples=600)

BATCH_SIZE = 60
LR = 1.2e-3
SPARSITY = 0.8
FREQUENCY = 100
BOUND = 0.5  # tflth / tfmot
WARMUP_EPOCHS = 2
SIDES = ("tflth", "tfmot", "dense")
LABELS = {"tflth": "tflth loop, 80 % masked", "tfmot": "tfmot prune_low_magnitude fit",
          "dense": "dense tf_keras fit"}


# ---------------------------------------------------------------------------- workers


class _TflthWorker:
    """The tflth side: tflth's data loader and Trainer, in the core venv."""

    def __init__(self):
        self.trainer = None

    def data(self, data_dir, synthetic, out):
        import keras
        import numpy as np
        import tensorflow as tf
        from tflth import data as data_lib

        with tempfile.TemporaryDirectory(prefix="data_", dir=os.path.dirname(out)) as tmp:
            ds = fashion_mnist(data_dir, tmp, synthetic)
        np.savez(out, x_train=ds.x_train, y_train=ds.y_train, x_test=ds.x_test, y_test=ds.y_test)
        mean, std = data_lib.NORMALIZATION["fashion_mnist"]
        return {"source": str(ds.source), "num_train": int(ds.num_train), "mean": mean[0], "std": std[0],
                "tensorflow": tf.__version__, "keras": keras.__version__}

    def build(self, network, data, examples, batch_size, lr, density, seed=0):
        from tflth import data as data_lib
        from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
        from tflth.training import Trainer

        dataset = first(data_lib.load("fashion_mnist", data), examples)
        hp = RunHparams(DatasetHparams("fashion_mnist"), ModelHparams(network),
                        TrainingHparams(optimizer="adam", lr=lr, batch_size=batch_size,
                                        training_steps="1000000it", seed=seed))
        self.trainer = no_evaluation(Trainer(hp, dataset=dataset))
        random_masks(self.trainer.model, density, seed)
        return {"examples": int(dataset.num_train), "steps_per_epoch": self.trainer.iterations_per_epoch}

    def epoch(self, side="tflth"):
        import numpy as np
        from tflth import masking

        t = self.trainer
        t0 = time.perf_counter()
        result = t.train(end_step=t.step + t.iterations_per_epoch)
        seconds = time.perf_counter() - t0
        kernels = masking.masked_weights(t.model)
        nonzero = sum(int(np.count_nonzero(k)) for k in kernels.values())
        return {"seconds": seconds, "loss": result.train_loss,
                "density": nonzero / sum(k.size for k in kernels.values())}


class WorkerError(RuntimeError):
    pass


class Worker:
    """A worker subprocess spoken to in JSON lines; its stderr goes to a log file."""

    def __init__(self, name: str, argv: list[str], log_path: str, env: dict | None = None):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, bufsize=1, cwd=ROOT, env=env)

    def _tail(self, lines=30) -> str:
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def ask(self, cmd: str, **request) -> dict:
        try:
            self.proc.stdin.write(json.dumps(dict(request, cmd=cmd)) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise WorkerError(f"the {self.name} worker exited (status {self.proc.wait()}); "
                              f"the end of its log {self.log_path}:\n{self._tail()}")
        answer = json.loads(line)
        if "error" in answer:
            raise WorkerError(f"the {self.name} worker failed on {cmd!r}:\n{answer['error']}")
        return answer

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.ask("quit")
                self.proc.wait(timeout=30)
            except (WorkerError, OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# ----------------------------------------------------------------------------- driver


def compare(network: str, examples: int, npz: str, workers: dict, norm: tuple, repetitions: int) -> list[dict]:
    common = {"network": network, "data": npz, "examples": examples, "batch_size": BATCH_SIZE, "lr": LR, "seed": 0}
    built = workers["tflth"].ask("build", density=1 - SPARSITY, **common)
    info = workers["tfmot"].ask("build", sparsity=SPARSITY, frequency=FREQUENCY, mean=norm[0], std=norm[1], **common)
    worker_of = {"tflth": workers["tflth"], "tfmot": workers["tfmot"], "dense": workers["tfmot"]}
    # Warm-up (tracing). tfmot counts steps from 1 and first prunes at step FREQUENCY, so
    # its side warms up until that has happened: from then on its kernels are 80 % zeros.
    steps = built["steps_per_epoch"]
    warmup = {side: WARMUP_EPOCHS for side in SIDES}
    warmup["tfmot"] = max(WARMUP_EPOCHS, -(-(FREQUENCY + 1) // steps))
    last = {}
    for side in SIDES:
        for _ in range(warmup[side]):
            last[side] = worker_of[side].ask("epoch", side=side)
    print(f"{network}: {built['examples']} images = {built['steps_per_epoch']} steps per epoch "
          f"(tfmot side: {info['steps_per_epoch']}); after warm-up: kernel density tflth "
          f"{last['tflth']['density']:.3f}, tfmot {last['tfmot']['density']:.3f}; train loss tflth "
          f"{last['tflth']['loss']:.3f}, tfmot {last['tfmot']['loss']:.3f}, dense fit {last['dense']['loss']:.3f}",
          flush=True)
    times = rotating({side: (lambda side=side: worker_of[side].ask("epoch", side=side)["seconds"])
                      for side in SIDES}, repetitions)
    title = {"lenet_300_100": "LeNet-300-100", "conv2": "Conv-2 (28x28x1)"}.get(network, network)
    return [
        row(f"{title} epoch: {LABELS['tflth']} / {LABELS['tfmot']}", BOUND, times["tflth"], times["tfmot"]),
        row(f"{title} epoch: {LABELS['tfmot']} / {LABELS['dense']}", None, times["tfmot"], times["dense"]),
        row(f"{title} epoch: {LABELS['tflth']} / {LABELS['dense']}", None, times["tflth"], times["dense"]),
    ]


def main(argv):
    del argv
    if FLAGS.worker:
        w = _TflthWorker()
        return serve({"data": w.data, "build": w.build, "epoch": w.epoch})
    quick_overrides(FLAGS, **QUICK)
    repetitions, sizes = FLAGS.repetitions, {"lenet_300_100": FLAGS.lenet_examples, "conv2": FLAGS.conv_examples}
    tfmot_python = os.path.abspath(FLAGS.tfmot_python)
    if not os.access(tfmot_python, os.X_OK):
        sys.exit(f"{tfmot_python} not found: run `make bench-tfmot`, which builds .venv-tfmot first.")
    tmp = tempfile.mkdtemp(prefix="tflth_tfmot_bench_")
    npz = os.path.join(tmp, "data.npz")
    tfmot_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    workers = {}
    try:
        workers["tflth"] = Worker("tflth", [sys.executable, os.path.abspath(__file__), "--worker"],
                                  os.path.join(tmp, "tflth_worker.log"))
        workers["tfmot"] = Worker("tfmot", [tfmot_python, os.path.join(HERE, "_tfmot_worker.py")],
                                  os.path.join(tmp, "tfmot_worker.log"), env=tfmot_env)
        data = workers["tflth"].ask("data", data_dir=FLAGS.data_dir, synthetic=FLAGS.synthetic, out=npz)
        tm = workers["tfmot"].ask("versions")
        print(f"data: {data['source']} ({data['num_train']} training images); core venv: TF {data['tensorflow']}, "
              f"Keras {data['keras']}; tfmot venv: TF {tm['tensorflow']}, tf_keras {tm['tf_keras']}, "
              f"tfmot {tm['tfmot']} (tf.keras is {tm['tf.keras']}); {os.cpu_count()} CPU cores", flush=True)
        if data["tensorflow"] != tm["tensorflow"]:
            print("warning: the two venvs run different TensorFlow versions; rebuild .venv-tfmot "
                  "(rm -r .venv-tfmot && make bench-tfmot)", flush=True)
        results = []
        for network in FLAGS.networks:
            if network not in sizes:
                sys.exit(f"--networks: unknown network {network!r}; expected lenet_300_100 and/or conv2.")
            results += compare(network, min(sizes[network], data["num_train"]), npz, workers,
                               (data["mean"], data["std"]), repetitions)
    except WorkerError as e:
        sys.exit(f"tfmot_speed: {e}")
    finally:
        for w in workers.values():
            w.close()
    shutil.rmtree(tmp, ignore_errors=True)  # only on success: a failure's message names the workers' logs here
    sys.exit(0 if print_table(results, what="repetitions", unit="s per epoch") else 1)


if __name__ == "__main__":
    app.run(main)

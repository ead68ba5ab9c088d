#!/usr/bin/env python3
"""The TensorFlow Model Optimization side of ``benchmarks/tfmot_speed.py``.

Runs in its own virtual environment (``.venv-tfmot``: the core venv's TensorFlow, the
matching ``tf_keras`` and ``tensorflow-model-optimization`` 0.8), because importing tfmot
switches ``tf.keras`` to ``tf_keras`` for the whole process. It never imports tflth.

A long-lived worker: it reads one JSON request per line on stdin and answers one JSON
line on stdout (everything else the process prints goes to stderr):

* ``{"cmd": "build", "network", "data", "examples", "batch_size", "lr", "sparsity",
  "frequency", "mean", "std", "seed"}``: load the first ``examples`` training images of
  the ``.npz`` at ``data`` (uint8 NHWC, normalised here once with ``mean`` / ``std``) and
  build two ``tf_keras`` copies of ``network`` (``lenet_300_100`` or ``conv2``, the same
  layers as tflth's zoo): ``tfmot`` = ``prune_low_magnitude(model,
  ConstantSparsity(sparsity, begin_step=0, frequency))``, ``dense`` = the plain model;
  both compiled with Adam(lr), sparse categorical cross-entropy on logits and accuracy;
* ``{"cmd": "epoch", "side": "tfmot" | "dense"}``: one ``model.fit`` epoch (shuffled,
  ``verbose=0``; the tfmot side with the ``UpdatePruningStep`` callback). The answer's
  ``seconds`` is the wall time of the ``fit`` call alone: training only, no evaluation,
  no validation data;
* ``{"cmd": "versions"}``: TensorFlow, tf_keras and tfmot versions;
* ``{"cmd": "quit"}``.
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # what tfmot sets on import anyway; here before TF loads
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import serve, take_stdout  # noqa: E402  (needs numpy only, not tflth)

# The protocol owns the real stdout; anything else printed goes to stderr.
_PROTOCOL = take_stdout()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402

L = tf_keras.layers


def _network(name: str, input_shape, num_classes: int):
    """tflth's zoo networks, layer for layer, in tf_keras."""
    if name == "lenet_300_100":
        body = [L.Flatten(), L.Dense(300, activation="relu"), L.Dense(100, activation="relu")]
    elif name == "conv2":  # two 3x3 'same' convs (64, 64), 2x2 max-pool, fc 256, 256
        body = [L.Conv2D(64, 3, padding="same", activation="relu"),
                L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(2), L.Flatten(),
                L.Dense(256, activation="relu"), L.Dense(256, activation="relu")]
    else:
        raise ValueError(f"unknown network {name!r}: expected lenet_300_100 or conv2")
    return tf_keras.Sequential([tf_keras.Input(shape=tuple(input_shape)), *body, L.Dense(num_classes)], name=name)


def _compile(model, lr: float):
    model.compile(optimizer=tf_keras.optimizers.Adam(lr),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


class Worker:
    def __init__(self):
        self.models, self.x, self.y, self.batch_size = {}, None, None, None

    def build(self, network, data, examples, batch_size, lr, sparsity, frequency, mean, std, seed=0):
        with np.load(data) as arrays:
            x, y = arrays["x_train"][:examples], arrays["y_train"][:examples]
        self.x = ((x.astype("float32") / 255.0 - np.float32(mean)) / np.float32(std)).astype("float32")
        self.y = y.astype("int64")
        self.batch_size = batch_size
        tf_keras.utils.set_random_seed(seed)
        schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=frequency)
        pruned = tfmot.sparsity.keras.prune_low_magnitude(_network(network, x.shape[1:], 10),
                                                          pruning_schedule=schedule)
        self.models = {"tfmot": _compile(pruned, lr), "dense": _compile(_network(network, x.shape[1:], 10), lr)}
        return {"examples": int(len(self.x)), "steps_per_epoch": -(-len(self.x) // batch_size)}

    def versions(self):
        return {"tensorflow": tf.__version__, "tf_keras": tf_keras.__version__, "tfmot": tfmot.__version__,
                "tf.keras": tf.keras.__name__}

    def _density(self) -> float:
        """Fraction of non-zero entries over the pruned kernels of the tfmot model."""
        nonzero = total = 0
        for layer in self.models["tfmot"].layers:
            for weight, _, _ in getattr(layer, "pruning_vars", ()):
                w = weight.numpy()
                nonzero, total = nonzero + np.count_nonzero(w), total + w.size
        return nonzero / total if total else 1.0

    def epoch(self, side):
        model = self.models[side]
        callbacks = [tfmot.sparsity.keras.UpdatePruningStep()] if side == "tfmot" else []
        t0 = time.perf_counter()
        history = model.fit(self.x, self.y, batch_size=self.batch_size, epochs=1, shuffle=True, verbose=0,
                            callbacks=callbacks)
        seconds = time.perf_counter() - t0
        answer = {"seconds": seconds, "loss": float(history.history["loss"][-1])}
        if side == "tfmot":
            answer["density"] = self._density()
        return answer


def main() -> int:
    worker = Worker()
    return serve({"build": worker.build, "epoch": worker.epoch, "versions": worker.versions}, _PROTOCOL)


if __name__ == "__main__":
    sys.exit(main())

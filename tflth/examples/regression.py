"""Regression of scikit-learn's bundled diabetes data set: a task of your own, offline.

scikit-learn ships the data (Efron et al. 2004: 442 patients, 10 baseline features, a
measure of disease progression one year later) inside its package, so nothing is
downloaded. The examples are split once, with a fixed seed, into 342 for training and
100 for testing; the features and the target are standardised with the training
examples' mean and standard deviation (so a mean squared error of 1.0 is the error of
predicting the training mean). The loss and the barrier are the mean squared error;
the mean absolute error is recorded too.

    bin/prune.py --task=tflth.examples.regression:task --model=tflth.examples.regression:model \\
      --optimizer=adam --lr=1e-3 --batch_size=32 --training_steps=2000it --levels=8 --rewind_step=100it
"""

from __future__ import annotations

import keras
import numpy as np

from tflth.tasks import Task, TaskError

__all__ = ["task", "model", "TEST_EXAMPLES", "SPLIT_SEED"]

TEST_EXAMPLES = 100
SPLIT_SEED = 0


def _data():
    try:
        from sklearn.datasets import load_diabetes  # noqa: PLC0415
    except ImportError:
        raise TaskError("tflth.examples.regression needs scikit-learn (pip install 'tflth[examples]').") from None
    found = load_diabetes()
    x, y = np.asarray(found.data, np.float64), np.asarray(found.target, np.float64)[:, None]
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test, train = order[:TEST_EXAMPLES], order[TEST_EXAMPLES:]
    mean_x, std_x = x[train].mean(0), x[train].std(0)
    mean_y, std_y = y[train].mean(0), y[train].std(0)

    def scaled(idx):
        return ((x[idx] - mean_x) / std_x).astype("float32"), ((y[idx] - mean_y) / std_y).astype("float32")

    return scaled(train), scaled(test)


def task() -> Task:
    """The diabetes regression task: MSE loss and barrier, MAE recorded (standardised units)."""
    train, test = _data()
    return Task(name="diabetes_regression", train=train, evals={"test": test},
                loss=keras.losses.MeanSquaredError(),
                metrics={"mse": keras.metrics.mean_squared_error, "mae": keras.metrics.mean_absolute_error},
                barrier="mse", higher_is_better=False)


def model(seed: int = 0, input_shape=None, num_classes=None, width: int = 64) -> keras.Model:
    """A 10 → 64 → 64 → 1 ReLU MLP (the output layer is named ``output``)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((10,), name="features")
    h = keras.layers.Dense(width, activation="relu", name="fc1")(inputs)
    h = keras.layers.Dense(width, activation="relu", name="fc2")(h)
    return keras.Model(inputs, keras.layers.Dense(1, name="output")(h), name="diabetes_mlp")

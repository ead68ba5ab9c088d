"""Fully-connected LeNet networks for MNIST (LeCun et al. 1998; Frankle & Carbin 2019).

``lenet_<h1>_<h2>...``: ``Flatten`` then one ``Dense`` + ReLU per hidden width,
then the ``output`` logits layer. Layers: ``flatten``, ``fc1`` ... ``fc<k>``, ``output``.
LeNet-300-100 on 28x28x1 -> 10 has 266,610 parameters (open_lth's ``mnist_lenet_300_100``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tflth.models._common import Seeds, check_positive_int, dense


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          hidden: Sequence[int]) -> keras.Model:
    if not hidden:
        raise ValueError(f"Model '{name}': a LeNet needs at least one hidden layer.")
    hidden = [check_positive_int(h, "every hidden-layer width", name) for h in hidden]
    seeds = Seeds(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Flatten(name="flatten")(inputs)
    for i, units in enumerate(hidden, start=1):
        x = dense(seeds, units, f"fc{i}", activation="relu")(x)
    outputs = dense(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

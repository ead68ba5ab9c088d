"""Conv-2 / Conv-4 / Conv-6: the small VGG-like CIFAR-10 networks of Frankle & Carbin (2019).

Pairs of 3x3 'same' convolutions with ReLU (64,64 | 128,128 | 256,256), a 2x2 max-pool
after each pair, then ``Flatten``, two 256-unit ReLU dense layers and the ``output``
logits. Layers: ``conv1`` ... ``conv<N>``, ``pool1`` ... ``pool<N/2>``, ``flatten``,
``fc1``, ``fc2``, ``output``. No BatchNorm, biases on every layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tflth.models._common import Seeds, check_image_shape, conv, dense

PLANS = {
    2: (64, 64),
    4: (64, 64, 128, 128),
    6: (64, 64, 128, 128, 256, 256),
}
DENSE_UNITS = (256, 256)


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          depth: int) -> keras.Model:
    if depth not in PLANS:
        raise ValueError(f"Model '{name}': Conv-N depth must be one of {sorted(PLANS)}, got {depth!r}.")
    seeds = Seeds(seed)
    inputs = keras.Input(shape=check_image_shape(input_shape, name), name="input")
    x = inputs
    for i, filters in enumerate(PLANS[depth], start=1):
        x = conv(seeds, filters, 3, f"conv{i}", activation="relu")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i, units in enumerate(DENSE_UNITS, start=1):
        x = dense(seeds, units, f"fc{i}", activation="relu")(x)
    outputs = dense(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

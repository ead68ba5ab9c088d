"""Conv-2 / Conv-4 / Conv-6: the small VGG-like CIFAR-10 networks of Frankle & Carbin (2019).

Pairs of 3x3 'same' convolutions with ReLU (64,64 | 128,128 | 256,256), a 2x2 max-pool
after each pair, then ``Flatten``, two 256-unit ReLU dense layers and the ``output``
logits. Options (``--model_options``): ``filters`` (the first pair's filters, default
64; each later pair doubles them) and ``dense`` (the dense layers' units, default 256),
for narrow versions on a CPU (``filters=16,dense=64``). Layers: ``conv1`` ... ``conv<N>``, ``pool1`` ... ``pool<N/2>``, ``flatten``,
``fc1``, ``fc2``, ``output``. No BatchNorm, biases on every layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tflth.models._common import Seeds, check_image_shape, check_positive_int, conv
from tflth.models._common import dense as dense_layer

DEPTHS = (2, 4, 6)
DEFAULTS = {"filters": 64, "dense": 256}


def plan(depth: int, filters: int = 64) -> tuple[int, ...]:
    """Filters of each convolution: pairs of ``filters``, ``2·filters``, ``4·filters``."""
    return tuple(filters * 2 ** (i // 2) for i in range(depth))


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          depth: int, filters: int = DEFAULTS["filters"], dense: int = DEFAULTS["dense"]) -> keras.Model:
    if depth not in DEPTHS:
        raise ValueError(f"Model '{name}': Conv-N depth must be one of {list(DEPTHS)}, got {depth!r}.")
    filters = check_positive_int(filters, "filters", name)
    dense_units = check_positive_int(dense, "dense", name)
    seeds = Seeds(seed)
    inputs = keras.Input(shape=check_image_shape(input_shape, name), name="input")
    x = inputs
    for i, f in enumerate(plan(depth, filters), start=1):
        x = conv(seeds, f, 3, f"conv{i}", activation="relu")(x)
        if i % 2 == 0:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i // 2}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = dense_layer(seeds, dense_units, f"fc{i}", activation="relu")(x)
    outputs = dense_layer(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

"""VGG-11/13/16/19 with BatchNorm for CIFAR, as in open_lth's ``cifar_vgg``.

Each number in the plan is a 3x3 'same' convolution (with bias) + BN + ReLU; each
``'M'`` a 2x2 max-pool. The plans are the standard VGG configurations without the
last max-pool; the final 2x2 feature map is averaged (open_lth's ``AvgPool2d(2)``,
here ``GlobalAveragePooling2D``, identical on 32x32 inputs and defined for any input
size) and fed to a single ``output`` dense layer (512 -> classes).

Layer names: ``conv{i}``, ``bn{i}``, ``relu{i}`` for the i-th convolution (1-based,
counted over the whole network), ``pool{j}`` for the j-th max-pool, ``avg_pool``,
``output``.

Parameters (trainable; open_lth's counts): VGG-11 9,231,114; VGG-13 9,416,010;
VGG-16 14,728,266; VGG-19 20,040,522.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tflth.models._common import Seeds, batch_norm, check_image_shape, conv, dense

PLANS = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512),
}


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          depth: int) -> keras.Model:
    if depth not in PLANS:
        raise ValueError(f"Model '{name}': VGG depth must be one of {sorted(PLANS)}, got {depth!r}.")
    seeds = Seeds(seed)
    inputs = keras.Input(shape=check_image_shape(input_shape, name), name="input")
    x = inputs
    n_conv = n_pool = 0
    for spec in PLANS[depth]:
        if spec == "M":
            n_pool += 1
            x = keras.layers.MaxPooling2D(2, name=f"pool{n_pool}")(x)
        else:
            n_conv += 1
            x = conv(seeds, spec, 3, f"conv{n_conv}")(x)
            x = batch_norm(f"bn{n_conv}")(x)
            x = keras.layers.ReLU(name=f"relu{n_conv}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = dense(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

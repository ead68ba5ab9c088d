"""ResNet-D for CIFAR (He et al. 2016, section 4.2), as in open_lth's ``cifar_resnet``.

Depth ``D = 6n + 2``: a 3x3 stem convolution with ``w`` filters + BN + ReLU, three
stages of ``n`` basic blocks with ``w``, ``2w``, ``4w`` filters (stride 2 in the first
block of stages 2 and 3), global average pooling and the ``output`` dense layer. A
basic block is conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut, then ReLU. The
shortcut is the identity, or a 1x1 convolution + BN (a projection, open_lth's choice,
not the zero-padding "option A" of the paper) where the shape changes. Convolutions
have no bias (BN follows each one); the output layer has one. Default width 16.

Layer names: ``conv1``, ``bn1``, ``relu1`` (stem); for block ``b`` of stage ``s``
(both 1-based) ``block{s}_{b}_conv1`` (with ``block{s}_{b}_conv1_pad`` before a
strided one), ``_bn1``, ``_relu1``, ``_conv2``, ``_bn2``, ``_shortcut_conv``,
``_shortcut_bn``, ``_add``, ``_out``; then ``avg_pool`` and ``output``.

Parameters (trainable; open_lth's counts): ResNet-20 272,474; ResNet-56 855,770;
ResNet-110 1,730,714; ResNet-14 at width 128 11,093,130.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from tflth.models._common import (
    Seeds,
    batch_norm,
    check_image_shape,
    check_positive_int,
    conv,
    conv_torch_padding,
    dense,
    is_int,
)

DEFAULT_WIDTH = 16


def blocks_per_stage(depth, name: str) -> int:
    """``n`` for depth ``6n + 2``; ValueError for any other depth."""
    if not is_int(depth) or depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(
            f"Model '{name}': a CIFAR ResNet's depth must be 6n+2 with n >= 1 "
            f"(8, 14, 20, 32, 44, 56, 110, ...), got {depth!r}."
        )
    return (int(depth) - 2) // 6


def basic_block(x, seeds: Seeds, filters: int, strides: int, prefix: str):
    shortcut = x
    y = conv_torch_padding(x, seeds, filters, 3, f"{prefix}_conv1", strides=strides)
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv_torch_padding(y, seeds, filters, 3, f"{prefix}_conv2")
    y = batch_norm(f"{prefix}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(seeds, filters, 1, f"{prefix}_shortcut_conv", strides=strides,
                        padding="valid", use_bias=False)(x)
        shortcut = batch_norm(f"{prefix}_shortcut_bn")(shortcut)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          depth: int, width: int = DEFAULT_WIDTH) -> keras.Model:
    n = blocks_per_stage(depth, name)
    width = check_positive_int(width, "width", name)
    seeds = Seeds(seed)
    inputs = keras.Input(shape=check_image_shape(input_shape, name), name="input")
    x = conv_torch_padding(inputs, seeds, width, 3, "conv1")
    x = batch_norm("bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(1, n + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = basic_block(x, seeds, filters, strides, f"block{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = dense(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

"""ResNet-18 / ResNet-50 for ImageNet, laid out like torchvision's ``resnet18`` / ``resnet50``.

A 7x7 stride-2 stem convolution (``w`` filters) + BN + ReLU, a 3x3 stride-2 max-pool, four
stages of ``w``, ``2w``, ``4w``, ``8w`` filters (stride 2 at the start of stages 2-4),
global average pooling and the ``output`` dense layer. ResNet-18 uses basic blocks
(2, 2, 2, 2); ResNet-50 bottleneck blocks (3, 4, 6, 3) with expansion 4 and the stride
on the 3x3 convolution ("ResNet v1.5", as torchvision). The shortcut is a 1x1
convolution + BN where the shape changes. Convolutions have no bias. Strided
convolutions and the max-pool are padded symmetrically like PyTorch (explicit
``ZeroPadding2D`` + 'valid'; zero padding before the max-pool is exact because its
input is post-ReLU). ``width`` (default 64) scales every stage, like open_lth's
``imagenet_resnet_D_W``.

Layer names: ``conv1_pad``, ``conv1``, ``bn1``, ``relu1``, ``pool1_pad``, ``pool1``;
for block ``b`` of stage ``s`` (both 1-based) ``block{s}_{b}_conv1`` ... ``_conv2``
(``_conv3`` in bottlenecks), matching ``_bn*`` / ``_relu*``, ``_conv2_pad`` before a
strided 3x3, ``_shortcut_conv``, ``_shortcut_bn``, ``_add``, ``_out``; then
``avg_pool`` and ``output``.

Parameters (trainable, as torchvision counts them): ResNet-18 11,689,512;
ResNet-50 25,557,032.
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
)

DEFAULT_WIDTH = 64
EXPANSION = {"basic": 1, "bottleneck": 4}
CONFIGS = {
    18: ("basic", (2, 2, 2, 2)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def _shortcut(x, seeds: Seeds, filters: int, strides: int, prefix: str):
    if strides == 1 and x.shape[-1] == filters:
        return x
    s = conv(seeds, filters, 1, f"{prefix}_shortcut_conv", strides=strides, padding="valid",
             use_bias=False)(x)
    return batch_norm(f"{prefix}_shortcut_bn")(s)


def basic_block(x, seeds: Seeds, planes: int, strides: int, prefix: str):
    y = conv_torch_padding(x, seeds, planes, 3, f"{prefix}_conv1", strides=strides)
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv_torch_padding(y, seeds, planes, 3, f"{prefix}_conv2")
    y = batch_norm(f"{prefix}_bn2")(y)
    shortcut = _shortcut(x, seeds, planes, strides, prefix)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def bottleneck_block(x, seeds: Seeds, planes: int, strides: int, prefix: str):
    y = conv_torch_padding(x, seeds, planes, 1, f"{prefix}_conv1")
    y = batch_norm(f"{prefix}_bn1")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
    y = conv_torch_padding(y, seeds, planes, 3, f"{prefix}_conv2", strides=strides)
    y = batch_norm(f"{prefix}_bn2")(y)
    y = keras.layers.ReLU(name=f"{prefix}_relu2")(y)
    out_filters = planes * EXPANSION["bottleneck"]
    y = conv_torch_padding(y, seeds, out_filters, 1, f"{prefix}_conv3")
    y = batch_norm(f"{prefix}_bn3")(y)
    shortcut = _shortcut(x, seeds, out_filters, strides, prefix)
    y = keras.layers.Add(name=f"{prefix}_add")([y, shortcut])
    return keras.layers.ReLU(name=f"{prefix}_out")(y)


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          depth: int, width: int = DEFAULT_WIDTH) -> keras.Model:
    if depth not in CONFIGS:
        raise ValueError(
            f"Model '{name}': ImageNet ResNet depth must be one of {sorted(CONFIGS)}, got {depth!r}."
        )
    width = check_positive_int(width, "width", name)
    kind, blocks = CONFIGS[depth]
    block_fn = basic_block if kind == "basic" else bottleneck_block
    seeds = Seeds(seed)
    inputs = keras.Input(shape=check_image_shape(input_shape, name), name="input")
    x = conv_torch_padding(inputs, seeds, width, 7, "conv1", strides=2)
    x = batch_norm("bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, num_blocks in enumerate(blocks, start=1):
        planes = width * 2 ** (stage - 1)
        for block in range(1, num_blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = block_fn(x, seeds, planes, strides, f"block{stage}_{block}")
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = dense(seeds, num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

"""Building blocks shared by the model families: seeded initialisers and layer factories.

Every model is built from plain Keras layers (``Dense``, ``Conv2D``, BatchNorm, ...);
``tflth.masking`` masks their kernels in place. Kernels use He normal initialisation
(``keras.initializers.HeNormal``: truncated normal, stddev ``sqrt(2 / fan_in)``, the
Keras counterpart of open_lth's ``kaiming_normal``); biases start at zero; BatchNorm
keeps the Keras default initialisers (gamma 1, beta 0, moving mean 0, moving var 1).

Determinism: a :class:`Seeds` object hands each kernel-bearing layer, in construction
order, its own integer seed derived from ``(seed, layer_index)``. Integer-seeded Keras
initialisers are stateless, so the same ``(seed, architecture)`` gives bit-identical
weights in any process, whatever was built before, without touching the global Keras
random state.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import numpy as np


# BatchNorm hyper-parameters matching PyTorch's defaults (momentum 0.1 there means
# new = 0.9 * old + 0.1 * batch, i.e. Keras momentum 0.9), as used by open_lth and
# torchvision. Only the statistics' update rate and epsilon differ from Keras defaults.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def derive_seed(seed: int, index: int) -> int:
    """A 31-bit integer seed for layer ``index`` of a model built with ``seed``."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(1, dtype=np.uint32)[0]
    return int(state) & 0x7FFFFFFF


class Seeds:
    """Hands out one freshly seeded He-normal initialiser per kernel-bearing layer."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.index = 0

    def he_normal(self) -> keras.initializers.Initializer:
        init = keras.initializers.HeNormal(seed=derive_seed(self.seed, self.index))
        self.index += 1
        return init


# --- argument checking ------------------------------------------------------------------

def is_int(value) -> bool:
    """True for Python / NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_positive_int(value, what: str, model: str) -> int:
    if not is_int(value) or int(value) <= 0:
        raise ValueError(f"Model '{model}': {what} must be a positive integer, got {value!r}.")
    return int(value)


def check_image_shape(input_shape: Sequence[int], model: str) -> tuple[int, int, int]:
    """Convolutional models take ``(height, width, channels)`` (channels last)."""
    if len(input_shape) != 3:
        raise ValueError(
            f"Model '{model}' is convolutional and expects input_shape (height, width, "
            f"channels), got {tuple(input_shape)!r}."
        )
    return tuple(input_shape)


# --- layer factories --------------------------------------------------------------------

def dense(seeds: Seeds, units: int, name: str, activation=None) -> keras.layers.Dense:
    return keras.layers.Dense(
        units,
        activation=activation,
        use_bias=True,
        kernel_initializer=seeds.he_normal(),
        bias_initializer="zeros",
        name=name,
    )


def conv(seeds: Seeds, filters: int, kernel_size: int, name: str, *, strides: int = 1,
         padding: str = "same", use_bias: bool = True, activation=None) -> keras.layers.Conv2D:
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding=padding,
        activation=activation,
        use_bias=use_bias,
        kernel_initializer=seeds.he_normal(),
        bias_initializer="zeros",
        name=name,
    )


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_torch_padding(x, seeds: Seeds, filters: int, kernel_size: int, name: str, *,
                       strides: int = 1, use_bias: bool = False):
    """A convolution padded like PyTorch's ``padding=kernel_size // 2``.

    With stride 1 (odd kernel) that is exactly Keras ``'same'``. With stride > 1 Keras
    ``'same'`` pads asymmetrically (all extra rows at the bottom/right), so the input is
    zero-padded symmetrically by an explicit ``ZeroPadding2D`` (named ``<name>_pad``)
    and convolved with ``'valid'``: the same output size and the same alignment as
    torchvision / open_lth, so weights port between them unchanged.
    """
    pad = kernel_size // 2
    if strides == 1 or pad == 0:
        padding = "same" if pad else "valid"
    else:
        x = keras.layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    return conv(seeds, filters, kernel_size, name, strides=strides, padding=padding,
                use_bias=use_bias)(x)

"""A small vision transformer (Dosovitskiy et al. 2021) for 28x28 and 32x32 images.

``vit_tiny``: pre-norm ViT built from core Keras 3 layers plus three tiny serialisable
layers of this module. The image is cut into non-overlapping ``patch_size`` x
``patch_size`` patches, each projected to ``dim`` features; a learned class token is put
in front, learned position embeddings are added, ``depth`` encoder blocks follow, and
the class token's final features, layer-normalised, feed the logits layer.

Options (``tflth.models.get("vit_tiny", ..., **options)``):

===============  ==========================================================  ==========
option           meaning                                                     default
===============  ==========================================================  ==========
``patch_size``   side of the square patches; must divide height and width    7 on 28x28,
                                                                             4 on 32x32
``dim``          hidden size (token features)                                64
``depth``        number of encoder blocks                                    4
``heads``        attention heads; must divide ``dim`` (key_dim = dim/heads)  4
``mlp_dim``      hidden units of each block's MLP                            2 * dim
===============  ==========================================================  ==========

Other image sizes have no default patch size: pass ``patch_size``. The defaults are
sized for CPUs: on 28x28x1 -> 10 the network has 139,018 parameters and 17 tokens (16
patches + class token).

Layers, in order: ``input``; ``patch_embed`` (``Conv2D(dim, patch_size,
strides=patch_size)``); ``tokens`` (``Reshape`` to ``(patches, dim)``); ``cls_token``
(:class:`ClassToken`: its variable ``cls``, shape ``(1, 1, dim)``, is concatenated in
front); ``pos_embed`` (:class:`PositionEmbedding`: adds its variable ``embeddings``,
shape ``(patches + 1, dim)``); per block ``i`` = 1..depth: ``block<i>_norm1``
(``LayerNormalization``), ``block<i>_attn`` (``MultiHeadAttention`` self-attention,
sublayers ``query``, ``key``, ``value``, ``attention_output``), ``block<i>_add1``
(residual), ``block<i>_norm2``, ``block<i>_mlp1`` (``Dense(mlp_dim)``, GELU),
``block<i>_mlp2`` (``Dense(dim)``), ``block<i>_add2`` (residual); ``norm``
(``LayerNormalization``); ``take_cls`` (:class:`TakeClassToken`: token 0); ``output``
(``Dense(num_classes)``, logits). No dropout. Layer norms use epsilon 1e-6.

Masking: the maskable-by-default variables (:mod:`tflth.masking`) are the kernels of
``patch_embed``, of each block's query / key / value / attention_output projections and
``mlp1`` / ``mlp2``, and of ``output``. Biases, layer norms, ``cls`` and the position
``embeddings`` are not (ask for them with a ``+`` pattern, e.g. ``"+pos_embed/*"``).

Initialisation (as in DeiT / timm, not He normal like the rest of the zoo): every
kernel, the class token and the position embeddings are truncated normal, stddev 0.02
(``keras.initializers.TruncatedNormal``, cut at two standard deviations); biases zero;
layer norms gamma 1, beta 0. A fixed stddev is used because Keras's fan computation
for the attention projections' 3-D kernels (``(dim, heads, key_dim)``) counts
``heads * dim`` as the fan-in, which would make He / Glorot scales differ between the
query and output projections. Each initialiser has its own integer seed, derived from
``(seed, index)`` as in :mod:`tflth.models._common`, so a seed gives bit-identical
weights in any process.

``MultiHeadAttention`` clones its one ``kernel_initializer`` for all four projections,
so a seeded initialiser would give query, key and value (and, reshaped, the output
projection) the same kernel. The builder therefore passes the query's initialiser and,
once the layer is built, assigns the key, value and output kernels from initialisers
with their own seeds. Rebuilding a block from its Keras config alone (e.g.
``keras.models.clone_model``) would lose that; tflth always rebuilds by calling
``tflth.models.get``.

The custom layers are registered with Keras (package ``tflth``), so a saved ``.keras``
file loads with ``keras.saving.load_model`` once ``tflth`` is imported.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import ops

from tflth.models._common import Seeds, check_image_shape, check_positive_int, derive_seed

__all__ = ["ClassToken", "PositionEmbedding", "TakeClassToken", "DEFAULTS", "default_patch_size", "build"]

INIT_STDDEV = 0.02
LN_EPSILON = 1e-6

# Registry options (override -> default). None: derived (patch_size from the image size,
# mlp_dim = 2 * dim).
DEFAULTS = {"patch_size": None, "dim": 64, "depth": 4, "heads": 4, "mlp_dim": None}

_DEFAULT_PATCH = {28: 7, 32: 4}


def _trunc_normal(seeds: Seeds) -> keras.initializers.Initializer:
    """The next seeded truncated-normal (stddev 0.02) initialiser of ``seeds``."""
    init = keras.initializers.TruncatedNormal(mean=0.0, stddev=INIT_STDDEV,
                                              seed=derive_seed(seeds.seed, seeds.index))
    seeds.index += 1
    return init


# --- custom layers ----------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="tflth")
class ClassToken(keras.layers.Layer):
    """Puts a learned token (variable ``cls``, shape ``(1, 1, features)``) in front of
    a ``(batch, tokens, features)`` sequence: the output has ``tokens + 1`` tokens."""

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.cls = self.add_weight(shape=(1, 1, int(input_shape[-1])), initializer=self.initializer,
                                   name="cls", trainable=True)

    def call(self, x):
        cls = ops.cast(self.cls, x.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(x)[0], 1, ops.shape(x)[-1]))
        return ops.concatenate([cls, x], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="tflth")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding (variable ``embeddings``, shape
    ``(tokens, features)``) to a ``(batch, tokens, features)`` sequence.

    Not a ``keras.layers.Embedding``, so :mod:`tflth.masking` does not mask it by default.
    """

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        if input_shape[1] is None:
            raise ValueError(f"Layer '{self.name}' needs a fixed number of tokens, got shape {input_shape}.")
        self.embeddings = self.add_weight(shape=(int(input_shape[1]), int(input_shape[2])),
                                          initializer=self.initializer, name="embeddings", trainable=True)

    def call(self, x):
        return x + ops.cast(self.embeddings, x.dtype)[None]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "initializer": keras.initializers.serialize(self.initializer)}


@keras.saving.register_keras_serializable(package="tflth")
class TakeClassToken(keras.layers.Layer):
    """``(batch, tokens, features) -> (batch, features)``: the first (class) token."""

    def call(self, x):
        return x[:, 0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])


# --- the network ------------------------------------------------------------------------

def default_patch_size(input_shape: Sequence[int], model: str = "vit_tiny") -> int:
    """7 for 28x28 images, 4 for 32x32; other sizes need an explicit ``patch_size``."""
    height, width, _ = check_image_shape(input_shape, model)
    if height == width and height in _DEFAULT_PATCH:
        return _DEFAULT_PATCH[height]
    raise ValueError(
        f"Model '{model}': no default patch_size for {height}x{width} images (defaults: 7 for 28x28, "
        f"4 for 32x32); pass patch_size, a divisor of both {height} and {width}."
    )


def _dense(init, units: int, name: str, activation=None) -> keras.layers.Dense:
    return keras.layers.Dense(units, activation=activation, kernel_initializer=init,
                              bias_initializer="zeros", name=name)


def _attention(x, seeds: Seeds, dim: int, heads: int, name: str):
    """Self-attention whose query / key / value / output kernels have distinct seeds."""
    inits = [_trunc_normal(seeds) for _ in range(4)]  # query, key, value, attention_output
    layer = keras.layers.MultiHeadAttention(heads, key_dim=dim // heads, dropout=0.0,
                                            kernel_initializer=inits[0], bias_initializer="zeros",
                                            name=name)
    y = layer(x, x)
    # Keras gives all four projections a clone of inits[0] (same seed, same values):
    # re-draw key, value and output from their own seeds.
    for sub, init in zip((layer.key_dense, layer.value_dense, layer.output_dense), inits[1:]):
        sub.kernel.assign(init(tuple(sub.kernel.shape), dtype=sub.kernel.dtype))
        sub.kernel_initializer = init
    return y


def build(name: str, input_shape: Sequence[int], num_classes: int, seed: int, *,
          patch_size=None, dim=64, depth=4, heads=4, mlp_dim=None) -> keras.Model:
    height, width, _ = check_image_shape(input_shape, name)
    if patch_size is None:
        patch_size = default_patch_size(input_shape, name)
    patch_size = check_positive_int(patch_size, "patch_size", name)
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"Model '{name}': patch_size {patch_size} does not divide the {height}x{width} image; "
            f"give a divisor of both {height} and {width}."
        )
    dim = check_positive_int(dim, "dim", name)
    depth = check_positive_int(depth, "depth", name)
    heads = check_positive_int(heads, "heads", name)
    if dim % heads:
        raise ValueError(f"Model '{name}': heads {heads} does not divide dim {dim}.")
    mlp_dim = 2 * dim if mlp_dim is None else check_positive_int(mlp_dim, "mlp_dim", name)
    patches = (height // patch_size) * (width // patch_size)

    seeds = Seeds(seed)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = keras.layers.Conv2D(dim, patch_size, strides=patch_size, padding="valid",
                            kernel_initializer=_trunc_normal(seeds), bias_initializer="zeros",
                            name="patch_embed")(inputs)
    x = keras.layers.Reshape((patches, dim), name="tokens")(x)
    x = ClassToken(initializer=_trunc_normal(seeds), name="cls_token")(x)
    x = PositionEmbedding(initializer=_trunc_normal(seeds), name="pos_embed")(x)
    for i in range(1, depth + 1):
        h = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"block{i}_norm1")(x)
        h = _attention(h, seeds, dim, heads, f"block{i}_attn")
        x = keras.layers.Add(name=f"block{i}_add1")([x, h])
        h = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"block{i}_norm2")(x)
        h = _dense(_trunc_normal(seeds), mlp_dim, f"block{i}_mlp1", activation="gelu")(h)
        h = _dense(_trunc_normal(seeds), dim, f"block{i}_mlp2")(h)
        x = keras.layers.Add(name=f"block{i}_add2")([x, h])
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name="norm")(x)
    x = TakeClassToken(name="take_cls")(x)
    outputs = _dense(_trunc_normal(seeds), num_classes, "output")(x)
    return keras.Model(inputs, outputs, name=name)

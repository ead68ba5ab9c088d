"""Models for the tests: one model holding every maskable layer type, and small user
models for ``--model=layer_zoo:<function>`` (the tests put this directory on PYTHONPATH).

Every function takes ``seed=``, ``input_shape=``, ``num_classes=`` as keyword arguments
and returns a built Keras model of class logits, as ``--model=module:function`` requires.
"""

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="tflth_tests")
class Scale(keras.layers.Layer):
    """A user's own layer: ``x * w`` with a weight made by ``add_weight`` (masked only on request)."""

    def build(self, input_shape):
        self.w = self.add_weight(name="w", shape=tuple(input_shape[1:]), initializer="ones")

    def call(self, x):
        return x * self.w


# layer type -> the names of its layers in every_layer_model (one or two layers each)
LAYER_TYPES = {
    "Dense": ["dense"],
    "EinsumDense": ["einsum"],
    "MultiHeadAttention": ["mha"],
    "Conv1D": ["conv1d"],
    "Conv2D": ["conv2d"],
    "Conv3D": ["conv3d"],
    "Conv1DTranspose": ["conv1d_t"],
    "Conv2DTranspose": ["conv2d_t"],
    "Conv3DTranspose": ["conv3d_t"],
    "SeparableConv1D": ["sep1d"],
    "SeparableConv2D": ["sep2d"],
    "DepthwiseConv1D": ["dw1d"],
    "DepthwiseConv2D": ["dw2d"],
    "Embedding": ["embedding"],
    "ReversibleEmbedding": ["tied", "untied"],
    "SimpleRNN": ["simple_rnn"],
    "LSTM": ["lstm"],
    "GRU": ["gru"],
    "custom add_weight": ["scale"],
}


def every_layer_model(seed=0, input_shape=(28, 28, 1), num_classes=10):
    """Every maskable layer type side by side on a 28x28x1 image, concatenated into ``output``."""
    keras.utils.set_random_seed(seed)
    L = keras.layers
    x = keras.Input(input_shape, name="image")
    seq = L.Reshape((28, 28), name="rows")(x)
    small = L.AveragePooling2D(4, name="pool")(x)  # 7x7x1
    vol = L.Reshape((7, 7, 1, 1), name="vol")(small)
    tokens = L.Discretization(bin_boundaries=[-0.5, 0.0, 0.5, 1.0], name="bins")(L.Flatten(name="flat_small")(small))
    tied = keras.layers.ReversibleEmbedding(5, 3, tie_weights=True, name="tied")
    untied = keras.layers.ReversibleEmbedding(5, 3, tie_weights=False, name="untied")
    pooled = L.GlobalAveragePooling1D(name="tok_pool")
    branches = [
        L.Dense(4, activation="tanh", name="dense")(L.Flatten(name="flat")(small)),
        L.EinsumDense("abc,cd->abd", output_shape=(28, 2), name="einsum")(seq),
        L.MultiHeadAttention(2, 2, name="mha")(seq, seq),
        L.Conv1D(2, 3, name="conv1d")(seq),
        L.Conv2D(2, 3, name="conv2d")(small),
        L.Conv3D(2, (3, 3, 1), name="conv3d")(vol),
        L.Conv1DTranspose(2, 3, strides=2, name="conv1d_t")(seq),
        L.Conv2DTranspose(2, 3, name="conv2d_t")(small),
        L.Conv3DTranspose(2, (2, 2, 1), name="conv3d_t")(vol),
        L.SeparableConv1D(2, 3, depth_multiplier=2, name="sep1d")(seq),
        L.SeparableConv2D(2, 3, depth_multiplier=2, name="sep2d")(small),
        L.DepthwiseConv1D(3, depth_multiplier=2, name="dw1d")(seq),
        L.DepthwiseConv2D(3, depth_multiplier=2, name="dw2d")(small),
        L.Embedding(5, 2, name="embedding")(tokens),
        tied(pooled(tied(tokens)), reverse=True),
        untied(pooled(untied(tokens)), reverse=True),
        L.SimpleRNN(3, name="simple_rnn")(seq),
        L.LSTM(3, name="lstm")(seq),
        L.GRU(3, name="gru")(seq),
        Scale(name="scale")(small),
    ]
    merged = L.Concatenate(name="merge")([L.Flatten(name=f"flat_{i}")(b) for i, b in enumerate(branches)])
    outputs = L.Dense(num_classes, name="output")(merged)
    return keras.Model(x, outputs, name="every_layer")


class TinySubclassed(keras.Model):
    """A subclassed model (no functional graph): conv, attention over rows, head."""

    def __init__(self, num_classes=10, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.rows = keras.layers.Reshape((28, 28))
        self.proj = keras.layers.Dense(8, activation="relu")
        self.attn = keras.layers.MultiHeadAttention(2, 4)
        self.pool = keras.layers.GlobalAveragePooling1D()
        self.head = keras.layers.Dense(num_classes)

    def call(self, x):
        h = self.proj(self.rows(x))
        return self.head(self.pool(h + self.attn(h, h)))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def subclassed(seed=0, input_shape=(28, 28, 1), num_classes=10):
    keras.utils.set_random_seed(seed)
    model = TinySubclassed(num_classes, name="tiny_subclassed")
    model(np.zeros((1, *input_shape), "float32"))
    return model


def build(seed=0, input_shape=(28, 28, 1), num_classes=10):
    """A user's functional MLP with Conv1D and attention, for the binaries' tests."""
    keras.utils.set_random_seed(seed)
    x = keras.Input(input_shape)
    h = keras.layers.Reshape((input_shape[0], -1))(x)
    h = keras.layers.Conv1D(8, 3, activation="relu")(h)
    h = h + keras.layers.MultiHeadAttention(2, 4)(h, h)
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(x, keras.layers.Dense(num_classes)(h))


def not_a_model(seed=0, input_shape=(28, 28, 1), num_classes=10):
    return "nope"


def wrong_classes(seed=0, input_shape=(28, 28, 1), num_classes=10):
    x = keras.Input(input_shape)
    return keras.Model(x, keras.layers.Dense(num_classes + 1)(keras.layers.Flatten()(x)))


NOT_CALLABLE = 3


def hub_vit(seed=0, input_shape=(28, 28, 1), num_classes=10):
    """A KerasHub ViTBackbone (built from config, no weights) with a classification head."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.ViTBackbone(image_shape=tuple(input_shape), patch_size=7, num_layers=2, num_heads=2,
                                            hidden_dim=32, mlp_dim=64)
    x = keras.Input(input_shape)
    tokens = backbone(x)
    cls = keras.layers.Lambda(lambda t: t[:, 0], name="class_token")(tokens)
    return keras.Model(x, keras.layers.Dense(num_classes, name="head")(cls))

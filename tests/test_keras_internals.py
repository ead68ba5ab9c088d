"""The Keras internals tflth relies on (all reached through ``tflth/_keras.py``).

One test per internal, asserting the behaviour tflth needs, so that a Keras release
that changes one fails a test named after it. Run this file first when trying a new
Keras release (see "Keras versions" in BUILD.md). The last tests pin public but
load-bearing behaviour: names tflth adds to Keras classes, constraints applied by
optimizers, the variable paths checkpoints are keyed by.
"""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from packaging.requirements import Requirement

import tflth
from tflth import _keras
from tflth.layers import MaskedLayer
from tflth.training import optimizers as tflth_optimizers

SETUP_CFG = pathlib.Path(__file__).resolve().parent.parent / "setup.cfg"


def test_keras_version_within_setup_cfg_bound():
    requirement = next(Requirement(line.strip()) for line in SETUP_CFG.read_text().splitlines()
                       if line.strip().startswith("keras"))
    assert requirement.specifier.contains(keras.__version__), (
        f"Keras {keras.__version__} is outside {requirement} (setup.cfg): see 'Keras versions' in BUILD.md")


# ------------------------------------------------------------- Layer._flatten_layers


class _Pair(keras.layers.Layer):
    """A custom layer holding sublayers (assigned second-first) and a nested sublayer."""

    def __init__(self, shared, **kwargs):
        super().__init__(**kwargs)
        self.second = keras.layers.Dense(3, name="second")
        self.first = keras.layers.Dense(3, name="first")
        self.shared = shared
        self.again = shared  # the same layer twice

    def call(self, x):
        return self.shared(self.first(self.second(x)))


def test_flatten_layers_direct_children_in_assignment_order():
    shared = keras.layers.Dense(3, name="shared")
    pair = _Pair(shared, name="pair")
    pair(np.zeros((1, 3), "float32"))
    # tflth.masks.prunable_layers lists a custom layer's masked sublayers in this order.
    assert [l.name for l in _keras.sublayers(pair, recursive=False)] == ["second", "first", "shared"]


def test_flatten_layers_recursive_lists_every_descendant_once():
    shared = keras.layers.Dense(3, name="shared")
    inner = keras.Sequential([keras.Input((3,)), _Pair(shared, name="pair")], name="inner")
    inputs = keras.Input((3,))
    outputs = keras.layers.Dense(2, name="head")(inner(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    layers = _keras.sublayers(model)
    names = [l.name for l in layers if not isinstance(l, keras.layers.InputLayer)]
    # Order is not relied upon (convert.py and count_params match or count, by name / id).
    assert sorted(names) == sorted(["inner", "pair", "second", "first", "shared", "head"])
    assert len({id(l) for l in layers}) == len(layers)
    assert model not in layers


# ------------------------------------------------------------- class name "Functional"


def test_functional_models_are_recognised():
    inputs = keras.Input((3,))
    functional = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert type(functional).__name__ == "Functional"
    assert _keras.is_functional(functional)
    sequential = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert not _keras.is_functional(sequential)

    class Net(keras.Model):
        def call(self, x):
            return x

    assert not _keras.is_functional(Net())


# ------------------------------------------------------------- Dense._kernel


def test_dense_kernel_is_the_variable_dense_call_reads():
    layer = keras.layers.Dense(3, name="d")
    layer.build((None, 4))
    kernel = _keras.dense_kernel(layer)
    assert isinstance(kernel, keras.Variable) and kernel.trainable
    assert kernel.path.endswith("kernel") and tuple(kernel.shape) == (4, 3)
    assert layer.kernel is kernel  # no LoRA, no quantization
    assert any(v is kernel for v in layer.trainable_variables)
    new = np.arange(12, dtype="float32").reshape(4, 3)
    kernel.assign(new)
    x = np.ones((2, 4), "float32")
    np.testing.assert_array_equal(layer(x), x @ new + layer.bias.numpy())
    # With LoRA, Dense.kernel is a computed tensor; the variable stays where tflth reads it.
    layer.enable_lora(2)
    assert layer.kernel is not kernel and _keras.dense_kernel(layer) is kernel


def test_masked_dense_kernel_variable_is_dense_kernel():
    layer = tflth.MaskedDense(3)
    layer.build((None, 4))
    assert layer.kernel_variable is _keras.dense_kernel(layer) is layer.kernel


# ------------------------------------------------------------- BaseDepthwiseConv._get_input_channel


@pytest.mark.parametrize("data_format,shape", [("channels_last", (None, 8, 8, 5)),
                                                ("channels_first", (None, 5, 8, 8))])
def test_depthwise_input_channels(data_format, shape):
    layer = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, data_format=data_format)
    assert _keras.depthwise_input_channels(layer, shape) == 5
    out = layer.compute_output_shape(shape)
    assert out[-1 if data_format == "channels_last" else 1] == 2 * 5


# ------------------------------------------------------------- weights-store keys "0" / "1"


@pytest.mark.parametrize("make,shape", [
    (lambda bias: keras.layers.Dense(3, use_bias=bias), (None, 4)),
    (lambda bias: keras.layers.Conv2D(3, 2, use_bias=bias), (None, 5, 5, 2)),
    (lambda bias: keras.layers.DepthwiseConv2D(2, use_bias=bias), (None, 5, 5, 2)),
], ids=["dense", "conv2d", "depthwise"])
def test_plain_layers_store_kernel_and_bias_under_keys_0_and_1(make, shape):
    for bias in (True, False):
        layer = make(bias)
        layer.build(shape)
        store = {}
        layer.save_own_variables(store)
        assert set(store) == ({_keras.KERNEL_KEY, _keras.BIAS_KEY} if bias else {_keras.KERNEL_KEY})
        np.testing.assert_array_equal(store[_keras.KERNEL_KEY], layer.kernel.numpy())
        if bias:
            np.testing.assert_array_equal(store[_keras.BIAS_KEY], layer.bias.numpy())


# ------------------------------------------------------------- BaseOptimizer._get_variable_index


def test_optimizer_variable_index_maps_a_variable_to_its_slot():
    a = keras.Variable(np.ones((2, 3), "float32"), name="a")
    b = keras.Variable(np.ones((4,), "float32"), name="b")
    opt = keras.optimizers.Adam(0.1)
    opt.build([a, b])
    assert [_keras.optimizer_variable_index(opt, v) for v in (a, b)] == [0, 1]
    opt.apply([tf.zeros_like(a.value), tf.ones_like(b.value)], [a, b])
    # Keras's Adam finds a variable's slots as self._momentums[self._get_variable_index(v)].
    slot_b = opt._momentums[_keras.optimizer_variable_index(opt, b)]
    slot_a = opt._momentums[_keras.optimizer_variable_index(opt, a)]
    assert tuple(slot_b.shape) == (4,) and np.all(slot_b.numpy() != 0)
    assert tuple(slot_a.shape) == (2, 3) and np.all(slot_a.numpy() == 0)


def test_optimizer_variable_index_same_inside_distributed_traced_update(mirrored_strategy):
    strategy = mirrored_strategy
    seen = []

    class Recording(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            seen.append(_keras.optimizer_variable_index(self, variable))
            return super().update_step(gradient, variable, learning_rate)

    with strategy.scope():
        model = keras.Sequential([keras.Input((3,)), tflth.MaskedDense(4), tflth.MaskedDense(2)])
        opt = Recording(0.1)
        opt.build(model.trainable_variables)
    kernels = [l.kernel_variable for l in model.layers]
    expected = [_keras.optimizer_variable_index(opt, k) for k in kernels]  # eager, as track_masks does
    assert expected == [next(i for i, v in enumerate(model.trainable_variables) if v is k) for k in kernels]

    @tf.function
    def step():
        def replica():
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(model(tf.ones((2, 3))))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        strategy.run(replica)

    step()
    # One update_step per variable and replica (per-replica components), each mapped to the
    # variable's own index.
    n = len(model.trainable_variables)
    assert sorted(seen) == sorted(list(range(n)) * strategy.num_replicas_in_sync)
    assert set(expected) <= set(seen)


# ------------------------------------------------------------- Adam reads self.epsilon in update_step


@pytest.mark.parametrize("make", [lambda: keras.optimizers.Adam(0.1),
                                  lambda: keras.optimizers.AdamW(0.1, weight_decay=0.5)], ids=["adam", "adamw"])
def test_adam_epsilon_swap_changes_the_step(make):
    init = np.array([1.0, 0.0, -2.0, 0.0], "float32")
    keep = np.array([True, False, True, False])
    grads = [np.array([0.3, -0.7, 0.2, 0.9], "float32"), np.array([-0.1, 0.4, 0.5, -0.6], "float32")]

    def run(epsilon_of_step):
        var = keras.Variable(init)
        opt = make()
        opt.build([var])
        scalar = opt.epsilon

        @tf.function
        def step(grad, eps):
            with _keras.adam_epsilon(opt, eps):
                opt.apply([grad], [var])

        for g in grads:  # one trace, two calls: the argument, not a captured constant, is used
            step(tf.constant(g), tf.constant(epsilon_of_step(scalar)))
        assert opt.epsilon == scalar  # restored
        return var.numpy()

    dense = run(lambda eps: np.full(4, eps, "float32"))
    pruned = run(lambda eps: np.where(keep, eps, np.inf).astype("float32"))
    assert np.all(pruned[~keep] == 0.0)  # m / (sqrt(v) + inf) = 0, and decay shrinks 0 to 0
    assert np.all(dense[~keep] != 0.0)
    np.testing.assert_array_equal(pruned[keep], dense[keep])  # bit for bit


def test_tflth_adam_uses_the_swap():
    var = keras.Variable(np.array([1.0, 0.0], "float32"))
    opt = tflth_optimizers.Adam(0.1)
    opt.build([var])
    opt.track_masks([var])
    opt.set_masks([np.array([1.0, 0.0], "float32")])
    with opt.pruned_epsilon(opt.epsilon_values):
        opt.apply([tf.constant([0.5, 0.5])], [var])
    assert var.numpy()[1] == 0.0 and var.numpy()[0] != 1.0


# ------------------------------------------------------------- public but load-bearing


def test_tflth_names_do_not_shadow_keras_attributes():
    """tflth's masked layers and optimizer mixin add these names to Keras subclasses; a
    Keras release defining any of them would silently change its meaning."""
    layer_names = [n for n in vars(MaskedLayer) if not n.startswith("__")]
    layer_names += [n for cls in (tflth.MaskedDense, tflth.MaskedConv2D, tflth.MaskedDepthwiseConv2D)
                    for n in vars(cls) if not n.startswith("__") and n not in ("build", "call")]
    overridden = {"save_own_variables", "load_own_variables", "build", "call"}
    for parent in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D):
        clashes = {n for n in layer_names if hasattr(parent, n)} - overridden
        assert not clashes, f"{parent.__name__} now defines {sorted(clashes)}"
    opt_names = {n for n in vars(tflth_optimizers.PrunedStayZero) if not n.startswith("__")} - {"update_step"}
    for parent in (keras.optimizers.Adam, keras.optimizers.AdamW):
        clashes = {n for n in opt_names if hasattr(parent, n) or hasattr(parent(), n)}
        assert not clashes, f"{parent.__name__} now defines {sorted(clashes)}"


class _ZeroMiddle(keras.constraints.Constraint):
    def __call__(self, w):
        return w * tf.constant([1.0, 0.0, 1.0])


def test_optimizer_applies_a_constraint_set_after_creation():
    var = keras.Variable(np.ones(3, "float32"))
    var.constraint = _ZeroMiddle()  # as MaskedLayer._build_mask does (Keras <= 3.13: Constraint only)
    opt = keras.optimizers.SGD(0.1)
    opt.build([var])
    opt.apply([tf.ones(3)], [var])
    np.testing.assert_allclose(var.numpy(), [0.9, 0.0, 0.9])


def test_variable_paths_checkpoints_are_keyed_by():
    inner = keras.Sequential([keras.Input((3,)), tflth.MaskedDense(2, name="ifc")], name="block")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(tflth.MaskedDense(3, name="fc")(inputs)), name="net")
    assert [v.path for v in model.variables] == [
        "fc/kernel", "fc/bias", "fc/mask", "block/ifc/kernel", "block/ifc/bias", "block/ifc/mask"]
    seq = keras.Sequential([keras.Input((4,)), tflth.MaskedDense(3, name="fc")], name="net")
    assert [v.path for v in seq.variables] == ["net/fc/kernel", "net/fc/bias", "net/fc/mask"]

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


# ------------------------------------------------------------- Layer._trainable_variables


def test_own_variables_are_a_layers_add_weight_variables_only():
    inputs = keras.Input((5, 4))
    mha = keras.layers.MultiHeadAttention(2, 2, name="mha")
    model = keras.Model(inputs, mha(inputs, inputs))
    assert _keras.own_variables(mha) == []  # its variables belong to its EinsumDense sublayers
    query = next(l for l in _keras.sublayers(mha) if l.name == "query")
    assert [v.name for v in _keras.own_variables(query)] == ["kernel", "bias"]
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    assert [v.name for v in _keras.own_variables(bn)] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert len(model.variables) == 8


# ------------------------------------------------------------- untracked attributes, saved by the walk


class _Saved(keras.layers.Layer):
    def __init__(self):
        super().__init__(name="saved")
        self.v = self.add_weight(name="v", shape=(2,), initializer="ones", trainable=False)
        self.built = True


def test_attach_untracked_stays_out_of_weights_but_model_save_writes_it(tmp_path):
    import h5py
    import zipfile

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="fc")], name="net")
    _keras.attach_untracked(model, "_extra", _Saved())
    assert [v.path for v in model.weights] == ["net/fc/kernel", "net/fc/bias"]
    path = str(tmp_path / "m.keras")
    model.save(path)
    with zipfile.ZipFile(path) as z, z.open("model.weights.h5") as f, h5py.File(f, "r") as h5:
        assert "_extra/vars/0" in h5
    loaded = keras.saving.load_model(path)  # plain Keras ignores the extra group
    assert not hasattr(loaded, "_extra")
    _keras.attach_untracked(model, "_extra", None)
    assert not hasattr(model, "_extra")


# ------------------------------------------------------------- object_name_uids


def test_fresh_names_give_every_build_the_names_of_a_first_build():
    def build():
        return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])

    build()
    with _keras.fresh_names():
        first = [v.path for v in build().weights]
    with _keras.fresh_names():
        second = [v.path for v in build().weights]
    assert first == second == ["sequential/dense/kernel", "sequential/dense/bias"]
    assert build().name != "sequential"  # the process's own counters are back


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
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(2)])
        opt = Recording(0.1)
        opt.build(model.trainable_variables)
    kernels = [l.kernel for l in model.layers]
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


# ------------------------------------------------- Adam.update_step's bias correction


@pytest.mark.parametrize("make", [lambda lr: keras.optimizers.Adam(lr),
                                  lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.5)], ids=["adam", "adamw"])
def test_adam_bias_correction_from(make):
    init = np.array([1.0, -2.0, 0.5], "float32")
    grads = [np.array([0.3, -0.7, 0.2], "float32"), np.array([-0.1, 0.4, 0.5], "float32")]

    def run(start_steps, iterations=0):
        """Two updates from ``init`` with zeroed slots, the counter at ``iterations``, the
        bias correction counting from ``start_steps[i]`` (a variable: one trace, two calls)."""
        var = keras.Variable(init)
        opt = make(0.1)
        opt.build([var])
        opt.iterations.assign(iterations)
        start = tf.Variable(0, dtype=tf.int64)
        counter, variables = opt._iterations, list(opt.variables)
        keras_update_step = opt.update_step

        def update_step(gradient, variable, learning_rate):  # the block encloses update_step only, as in tflth
            with _keras.adam_bias_correction_from(opt, start):
                return keras_update_step(gradient, variable, learning_rate)

        opt.update_step = update_step

        @tf.function
        def step(grad):
            opt.apply([grad], [var])

        out = []
        for g, s in zip(grads, start_steps):
            start.assign(s)
            step(tf.constant(g))
            out.append(var.numpy().copy())
        assert opt._iterations is counter and list(opt.variables) == variables  # put back, nothing tracked
        assert int(opt.iterations.numpy()) == iterations + 2
        return out

    plain = run([0, 0])  # Keras's own steps: the offset 0 changes nothing, bit for bit
    var = keras.Variable(init)
    opt = make(0.1)
    opt.build([var])
    for g, p in zip(grads, plain):
        opt.apply([tf.constant(g)], [var])
        np.testing.assert_array_equal(var.numpy(), p)
    # Counter at 7, counting from 7: the first two steps of a new optimizer, bit for bit.
    np.testing.assert_array_equal(np.stack(run([7, 7], iterations=7)), np.stack(plain))
    uncorrected = run([0, 0], iterations=7)  # Keras at step 7 with zeroed slots: another step
    assert np.abs(uncorrected[0] - plain[0]).max() > 1e-2
    assert not np.array_equal(run([7, 0], iterations=7)[1], plain[1])  # the variable's value, not the trace's


def test_tflth_adam_counts_from_its_start_step():
    var = keras.Variable(np.array([1.0, 2.0], "float32"))
    ref = keras.Variable(np.array([1.0, 2.0], "float32"))
    opt, new = tflth_optimizers.Adam(0.1), keras.optimizers.Adam(0.1)
    opt.build([var])
    new.build([ref])
    assert tflth_optimizers.get_start_step(opt) == 0 and all(v is not opt.start_step for v in opt.variables)
    opt.iterations.assign(5)
    tflth_optimizers.set_start_step(opt, 5)
    opt.apply([tf.constant([0.5, -0.5])], [var])
    new.apply([tf.constant([0.5, -0.5])], [ref])
    np.testing.assert_array_equal(var.numpy(), ref.numpy())
    assert len(opt.variables) == len(new.variables)  # checkpoints hold Keras's optimizer state only


# ------------------------------------------------------------- KerasTensor._keras_history / Operation._inbound_nodes


def test_graph_producer_walks_from_an_output_back_to_its_layers():
    inputs = keras.Input((4,), name="x")
    shared = keras.layers.Dense(4, name="shared")
    h = shared(inputs)
    again = shared(keras.layers.ReLU(name="relu")(h))  # the second call of a shared layer
    w = keras.Variable(np.ones((4, 2), "float32"), name="w")
    out = keras.ops.matmul(again, w)  # an op given a variable itself
    model = keras.Model(inputs, out)
    op, read, variables = _keras.graph_producer(model.outputs[0])
    assert not isinstance(op, keras.layers.Layer) and variables == [w] and read == [again]
    layer, (relu_out,), none = _keras.graph_producer(again)
    assert layer is shared and none == []
    relu, (first,), _ = _keras.graph_producer(relu_out)
    assert relu.name == "relu" and _keras.graph_producer(first)[0] is shared and first is h
    entry, nothing, _ = _keras.graph_producer(_keras.graph_producer(first)[1][0])  # the model input
    assert isinstance(entry, keras.layers.InputLayer) and nothing == []
    assert _keras.graph_producer(tf.ones(3)) is None


# ------------------------------------------------------------- public but load-bearing


def test_tflth_names_do_not_shadow_keras_attributes():
    """tflth's optimizer mixins add these names to Keras's Adam; a Keras release defining
    any of them would silently change its meaning. Masks add one attribute to models."""
    opt_names = {n for mixin in (tflth_optimizers.PrunedStayZero, tflth_optimizers.StartStep)
                 for n in vars(mixin) if not n.startswith("__")} - {"update_step", "build"}
    assert "start_step" in opt_names
    for parent in (keras.optimizers.Adam, keras.optimizers.AdamW):
        clashes = {n for n in opt_names if hasattr(parent, n) or hasattr(parent(), n)}
        assert not clashes, f"{parent.__name__} now defines {sorted(clashes)}"
    from tflth.masking.state import STATE_ATTRIBUTE

    assert not hasattr(keras.Model, STATE_ATTRIBUTE)


class _ZeroMiddle(keras.constraints.Constraint):
    def __call__(self, w):
        return w * tf.constant([1.0, 0.0, 1.0])


def test_optimizer_applies_a_constraint_set_after_creation():
    var = keras.Variable(np.ones(3, "float32"))
    var.constraint = _ZeroMiddle()  # as tflth.masking.apply_masks does (Keras <= 3.13: Constraint only)
    opt = keras.optimizers.SGD(0.1)
    opt.build([var])
    opt.apply([tf.ones(3)], [var])
    np.testing.assert_allclose(var.numpy(), [0.9, 0.0, 0.9])


def test_variable_paths_checkpoints_are_keyed_by():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="ifc")], name="block")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, inner(keras.layers.Dense(3, name="fc")(inputs)), name="net")
    assert [v.path for v in model.variables] == ["fc/kernel", "fc/bias", "block/ifc/kernel", "block/ifc/bias"]
    seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    assert [v.path for v in seq.variables] == ["net/fc/kernel", "net/fc/bias"]

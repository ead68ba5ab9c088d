"""tflth.unit_graph: the unit groups of Keras models, checked against hand-written
expectations and, for every group, by function: permuting a group's units (every member
alike) must leave the model's outputs unchanged, and zeroing a unit's consumer entries
must equal zeroing its producer entries (both equal removing it) for a prunable group."""

import doctest

import keras
import numpy as np
import pytest

import tflth.models as zoo
from tflth import unit_graph
from tflth.errors import InputError
from tflth.unit_graph import STREAM_REASON, UnitGraphError, unit_groups

from helpers import randomize_weights

ATOL = 1e-5


# ----------------------------------------------------------------------------- test utilities


def _randomize(model, seed=0):
    return randomize_weights(model, seed)


def _input(model, seed=1):
    shape = (2, *model.inputs[0].shape[1:])
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def _weights(model):
    return {v.path: np.asarray(v.numpy()) for v in model.weights}


def _run(model, weights, x):
    """The model's output with ``weights`` ({path: array}) assigned; the model's own are put back."""
    variables = {v.path: v for v in model.weights}
    saved = {p: np.asarray(variables[p].numpy()) for p in weights}
    try:
        for p, w in weights.items():
            variables[p].assign(w)
        return np.asarray(model(x, training=False))
    finally:
        for p, w in saved.items():
            variables[p].assign(w)


def _permuted(weights, group, perm):
    """``weights`` with ``group``'s units reordered: unit u takes what unit perm[u] had, in every member."""
    out = dict(weights)
    for m in group.members:
        w = out[m.path]
        index = np.arange(w.shape[m.axis])
        index[m.positions.reshape(-1)] = m.positions[perm].reshape(-1)
        out[m.path] = np.take(w, index, axis=m.axis)
    return out


def _zeroed(weights, group, unit, roles):
    """``weights`` with unit ``unit`` of ``group`` zeroed in the members whose role is in ``roles``."""
    out = dict(weights)
    for m in group.members:
        if m.role in roles:
            w = out[m.path].copy()
            w[(slice(None),) * m.axis + (m.positions[unit],)] = 0
            out[m.path] = w
    return out


def _random_perm(rng, units, granularity=1):
    """A permutation that is not the identity, mapping blocks of ``granularity`` units onto blocks."""
    while True:
        blocks = rng.permutation(units // granularity)
        perm = np.concatenate([b * granularity + rng.permutation(granularity) for b in blocks])
        if units < 2 or not np.array_equal(perm, np.arange(units)):
            return perm


def _check_permutations(model, graph, seed=0):
    """Every permutable group: a random permutation of its units keeps the outputs. Returns how many."""
    rng = np.random.default_rng(seed)
    x = _input(model)
    weights = _weights(model)
    base = _run(model, weights, x)
    checked = 0
    for group in graph.groups:
        if not group.permutable or group.units < 2:
            continue
        perm = _random_perm(rng, group.units, group.granularity)
        got = _run(model, _permuted(weights, group, perm), x)
        np.testing.assert_allclose(got, base, atol=ATOL, rtol=ATOL, err_msg=f"group {group.name!r}")
        checked += 1
    return checked


def _check_zeroing(model, graph, seed=0):
    """Every prunable group: zeroing a unit's consumer entries ("in") equals zeroing all its
    entries, and so does zeroing all but the consumer entries (the unit then outputs 0)."""
    rng = np.random.default_rng(seed)
    x = _input(model)
    weights = _weights(model)
    checked = 0
    for group in graph.groups:
        if not group.prunable:
            continue
        unit = int(rng.integers(group.units))
        roles = {m.role for m in group.members}
        everything = _run(model, _zeroed(weights, group, unit, roles), x)
        consumers = _run(model, _zeroed(weights, group, unit, {"in"}), x)
        producers = _run(model, _zeroed(weights, group, unit, roles - {"in"}), x)
        np.testing.assert_allclose(consumers, everything, atol=ATOL, rtol=ATOL, err_msg=f"group {group.name!r} (in)")
        np.testing.assert_allclose(producers, everything, atol=ATOL, rtol=ATOL, err_msg=f"group {group.name!r} (out)")
        checked += 1
    return checked


def _layout(group):
    return [(m.path, m.axis, m.role) for m in group.members]


def _column(n):
    return np.arange(n)[:, None]


# ----------------------------------------------------------------------------- hand-written expectations


def test_tiny_sequential_mlp_groups():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu", name="fc1"),
                              keras.layers.Dense(2, name="out")], name="mlp")
    _randomize(model)
    graph = unit_groups(model)
    assert graph.unplaced == ()
    hidden = graph.group_of("mlp/fc1/kernel", 1)
    assert hidden.name == "mlp/fc1" and hidden.units == 3 and hidden.prunable and hidden.reason == ""
    assert _layout(hidden) == [("mlp/fc1/kernel", 1, "out"), ("mlp/fc1/bias", 0, "out"), ("mlp/out/kernel", 0, "in")]
    for m in hidden.members:
        np.testing.assert_array_equal(m.positions, _column(3))
    assert graph.group_of("mlp/fc1/kernel", -1) is hidden and graph.group_of("mlp/out/kernel", 0) is hidden
    head = graph.group_of("mlp/out/kernel", 1)
    assert _layout(head) == [("mlp/out/kernel", 1, "out"), ("mlp/out/bias", 0, "out")]
    assert not head.prunable and not head.permutable and head.reason == "the model's outputs"
    inputs = graph.group_of("mlp/fc1/kernel", 0)
    assert inputs.units == 4 and not inputs.permutable and inputs.reason == "the model's inputs"
    assert [g.name for g in graph.groups][1:] == ["mlp/fc1", "mlp/out"]
    assert graph.variables() == ["mlp/fc1/kernel", "mlp/fc1/bias", "mlp/out/kernel", "mlp/out/bias"]
    assert graph.group_of("mlp/nothing", 0) is None
    assert _check_permutations(model, graph) == 1 and _check_zeroing(model, graph) == 1


def test_lenet_300_100_groups():
    model = zoo.get("lenet_300_100", input_shape=(28, 28, 1), num_classes=10, seed=0)
    graph = unit_groups(model)
    fc1, fc2 = graph.group_of("fc1/kernel", 1), graph.group_of("fc2/kernel", 1)
    assert (fc1.units, fc2.units) == (300, 100) and fc1.prunable and fc2.prunable
    assert _layout(fc1) == [("fc1/kernel", 1, "out"), ("fc1/bias", 0, "out"), ("fc2/kernel", 0, "in")]
    assert _layout(fc2) == [("fc2/kernel", 1, "out"), ("fc2/bias", 0, "out"), ("output/kernel", 0, "in")]
    np.testing.assert_array_equal(fc2.member("output/kernel", 0).positions, _column(100))
    pixels = graph.group_of("fc1/kernel", 0)
    assert pixels.units == 784 and not pixels.prunable and not pixels.permutable
    assert not graph.group_of("output/kernel", 1).prunable
    assert len(graph.groups) == 4 and graph.unplaced == ()
    _randomize(model)
    assert _check_permutations(model, graph) == 2


def test_conv2_flatten_fan_out_channels_last():
    model = zoo.get("conv2", input_shape=(8, 8, 3), num_classes=3, seed=0, filters=4, dense=8)
    graph = unit_groups(model)
    conv1 = graph.group_of("conv1/kernel", 3)
    assert _layout(conv1) == [("conv1/kernel", 3, "out"), ("conv1/bias", 0, "out"), ("conv2/kernel", 2, "in")]
    conv2 = graph.group_of("conv2/kernel", 3)
    assert _layout(conv2) == [("conv2/kernel", 3, "out"), ("conv2/bias", 0, "out"), ("fc1/kernel", 0, "in")]
    # pool1 leaves a 4x4x4 map: channel c feeds rows c + 4*i of fc1, for the 16 positions i
    expected = np.array([[c + 4 * i for i in range(16)] for c in range(4)])
    np.testing.assert_array_equal(conv2.member("fc1/kernel", 0).positions, expected)
    assert all(g.prunable for g in graph.groups[1:-1])
    _randomize(model)
    assert _check_permutations(model, graph) == 4
    assert _check_zeroing(model, graph) == 4


def _channels_first_model(use_bias=False):
    inputs = keras.Input((3, 6, 6), name="x")
    y = keras.layers.Conv2D(4, 3, data_format="channels_first", activation="relu", use_bias=use_bias,
                            name="conv")(inputs)  # (4, 4, 4)
    y = keras.layers.Flatten(name="flat")(y)  # default data_format channels_last: (C, H, W) flattened as it is
    outputs = keras.layers.Dense(3, name="fc")(y)
    model = keras.Model(inputs, outputs, name="cf")
    _randomize(model)
    return model


def test_channels_first_flatten_positions_are_exact():
    model = _channels_first_model()
    graph = unit_groups(model)
    group = graph.group_of("conv/kernel", 3)
    assert group.units == 4 and group.prunable
    rows = group.member("fc/kernel", 0).positions
    np.testing.assert_array_equal(rows, np.array([[c * 16 + i for i in range(16)] for c in range(4)]))
    assert _check_permutations(model, graph) == 1
    assert _check_zeroing(model, graph) == 1
    # the channels-last formula (rows c + 4*i) the map's equal sides make plausible breaks the model:
    wrong = np.array([[c + 4 * i for i in range(16)] for c in range(4)])
    bad = unit_graph.UnitGroup(group.name, 4, tuple(
        unit_graph.Member(m.path, m.axis, wrong if m.path == "fc/kernel" else m.positions, m.role)
        for m in group.members), prunable=True)
    x, weights = _input(model), _weights(model)
    moved = _run(model, _permuted(weights, bad, np.array([1, 0, 3, 2])), x)
    assert not np.allclose(moved, _run(model, weights, x), atol=1e-3)


def test_channels_first_bias_on_a_square_map_is_refused():
    """Keras's TensorFlow backend adds this layer's bias along the width (4 = filters), not
    the channels: no channel group holds it, so the layer is refused rather than misread."""
    model = _channels_first_model(use_bias=True)
    with pytest.raises(UnitGraphError, match=r"'cf/conv' \(Conv2D\): Keras's TensorFlow backend adds its bias "
                                             r"along the last axis"):
        unit_groups(model)
    bias = model.get_layer("conv").bias
    bias.assign(np.arange(4.0, dtype="float32"))
    model.get_layer("conv").kernel.assign(np.zeros((3, 3, 3, 4), "float32"))
    maps = keras.Model(model.inputs, model.get_layer("conv").output)([np.zeros((1, 3, 6, 6), "float32")])
    np.testing.assert_array_equal(np.asarray(maps)[0, 0, 0], [0, 1, 2, 3])  # the width, not the channels
    if keras.backend.backend() != "tensorflow":
        pytest.skip("the misplaced bias is the TensorFlow backend's")


def test_channels_first_batchnorm_pooling_and_a_flatten_that_moves_channels():
    inputs = keras.Input((2, 6, 6))
    y = keras.layers.Conv2D(3, 3, padding="same", data_format="channels_first", name="c1")(inputs)
    y = keras.layers.BatchNormalization(axis=1, name="bn")(y)
    y = keras.layers.MaxPooling2D(2, data_format="channels_first", name="pool")(y)  # (3, 3, 3)
    z = keras.layers.Conv2D(5, 1, data_format="channels_first", name="c2")(y)
    z = keras.layers.GlobalAveragePooling2D(data_format="channels_first", name="gap")(z)
    w = keras.layers.Flatten(data_format="channels_first", name="flat")(y)  # moves channels last first
    outputs = keras.layers.Dense(2, name="fc")(keras.layers.Concatenate(name="cat")([z, w]))
    model = keras.Model(inputs, outputs, name="cf2")
    _randomize(model)
    graph = unit_groups(model)
    c1 = graph.group_of("c1/kernel", 3)
    assert _layout(c1)[:6] == [("c1/kernel", 3, "out"), ("c1/bias", 0, "out"), ("bn/gamma", 0, "norm"),
                               ("bn/beta", 0, "norm"), ("bn/moving_mean", 0, "stat"), ("bn/moving_variance", 0, "stat")]
    # fc reads [gap (5) | flat (27)]: channel c of the flattened (3, 3, 3) map is at 5 + c + 3*i
    np.testing.assert_array_equal(c1.member("fc/kernel", 0).positions,
                                  np.array([[5 + c + 3 * i for i in range(9)] for c in range(3)]))
    assert graph.group_of("fc/kernel", 0, index=2).name == "cf2/c2"
    with pytest.raises(ValueError, match="split between 2 groups"):
        graph.group_of("fc/kernel", 0)
    assert _check_permutations(model, graph) == 2
    assert _check_zeroing(model, graph) == 2


# ----------------------------------------------------------------------------- residual networks


def test_resnet8_adds_tie_the_stages():
    model = zoo.get("resnet8", input_shape=(8, 8, 3), num_classes=3, seed=0, width=2)
    graph = unit_groups(model)
    stage1 = graph.group_of("conv1/kernel", 3)
    assert stage1 is graph.group_of("block1_1_conv2/kernel", 3)  # identity shortcut: tied to the stem
    assert {("block1_1_conv1/kernel", 2), ("block2_1_conv1/kernel", 2), ("block2_1_shortcut_conv/kernel", 2),
            ("block1_1_bn2/moving_mean", 0), ("bn1/gamma", 0)} <= {(m.path, m.axis) for m in stage1.members}
    assert stage1.units == 2 and not stage1.prunable and stage1.permutable and stage1.reason == STREAM_REASON
    stage2 = graph.group_of("block2_1_conv2/kernel", 3)
    assert stage2 is graph.group_of("block2_1_shortcut_conv/kernel", 3) and stage2 is not stage1
    assert stage2.units == 4 and stage2.prunable
    stage3 = graph.group_of("block3_1_shortcut_bn/gamma", 0)
    assert stage3 is graph.group_of("output/kernel", 0) and stage3.units == 8
    inner = graph.group_of("block1_1_conv1/kernel", 3)
    assert _layout(inner)[-1] == ("block1_1_conv2/kernel", 2, "in") and inner.prunable
    assert len(graph.groups) == 8 and graph.unplaced == ()
    assert unit_groups(model, streams_prunable=True).group_of("conv1/kernel", 3).prunable
    _randomize(model)
    assert _check_permutations(model, graph) == 6
    assert _check_zeroing(model, graph) == 5


def _residual_cnn():
    inputs = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    a = keras.layers.GroupNormalization(groups=2, name="gn")(a)
    a = keras.layers.LeakyReLU(negative_slope=0.2, name="lrelu")(a)
    b = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(a)
    r = keras.layers.Add(name="add")([a, b])
    p = keras.layers.MaxPooling2D(2, name="pool")(r)  # (4, 4, 8)
    t = keras.layers.Conv2DTranspose(6, 2, strides=2, name="up")(p)  # (8, 8, 6)
    t = keras.layers.LeakyReLU(name="lrelu2")(t)
    c = keras.layers.Concatenate(name="cat")([t, a])  # (8, 8, 14)
    d = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(c)  # 28 channels
    h = keras.layers.GlobalAveragePooling2D(name="gap")(d)
    outputs = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inputs, outputs, name="rescnn")
    _randomize(model)
    return model


def test_residual_cnn_with_separable_groupnorm_transpose_concat():
    model = _residual_cnn()
    graph = unit_groups(model)
    assert graph.unplaced == ()
    stem = graph.group_of("stem/kernel", 3)
    assert stem is graph.group_of("sep/pointwise_kernel", 3)  # tied by the Add
    assert stem.units == 8 and stem.granularity == 4 and not stem.prunable and stem.permutable
    assert "GroupNormalization 'rescnn/gn'" in stem.reason and STREAM_REASON in stem.reason
    assert stem.member("sep/depthwise_kernel", 2).role == "depthwise"
    np.testing.assert_array_equal(stem.member("sep/pointwise_kernel", 2).positions,
                                  np.arange(16).reshape(8, 2))  # the depthwise outputs c*2, c*2+1
    assert stem.member("up/kernel", 3).role == "in"  # a transpose reads its last kernel axis
    up = graph.group_of("up/kernel", 2)
    assert up.units == 6 and up.prunable
    assert graph.group_of("dw/kernel", 2, index=3) is up and graph.group_of("dw/kernel", 2, index=6) is stem
    np.testing.assert_array_equal(up.member("dw/bias", 0).positions, np.arange(12).reshape(6, 2))
    np.testing.assert_array_equal(stem.member("dw/bias", 0).positions, 12 + np.arange(16).reshape(8, 2))
    np.testing.assert_array_equal(up.member("head/kernel", 0).positions, np.arange(12).reshape(6, 2))
    assert [g.name for g in graph.groups] == ["rescnn/x", "rescnn/stem", "rescnn/up", "rescnn/head"]
    assert _check_permutations(model, graph) == 2
    assert _check_zeroing(model, graph) == 1


def test_grouped_convolution_ties_channels_across_its_groups():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(8, 3, name="c1")(inputs)
    x = keras.layers.Conv2D(4, 1, groups=2, activation="relu", name="grouped")(x)  # 2 groups: 4 -> 2 channels each
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.GlobalMaxPooling2D(name="gmp")(x))
    model = keras.Model(inputs, outputs, name="g")
    _randomize(model)
    graph = unit_groups(model)
    c1 = graph.group_of("c1/kernel", 3)  # input channel r of each group is kernel row r: r and 4 + r move together
    assert c1.units == 4 and c1.prunable
    np.testing.assert_array_equal(c1.member("c1/kernel", 3).positions, [[0, 4], [1, 5], [2, 6], [3, 7]])
    np.testing.assert_array_equal(c1.member("grouped/kernel", 2).positions, _column(4))
    grouped = graph.group_of("grouped/kernel", 3)  # output channel j of each group is one unit
    np.testing.assert_array_equal(grouped.member("grouped/kernel", 3).positions, [[0, 2], [1, 3]])
    np.testing.assert_array_equal(grouped.member("fc/kernel", 0).positions, [[0, 2], [1, 3]])
    assert _check_permutations(model, graph) == 2
    assert _check_zeroing(model, graph) == 2


def test_vit_tiny_heads_mlp_and_residual_stream():
    model = zoo.get("vit_tiny", input_shape=(28, 28, 1), num_classes=3, seed=0, depth=1, dim=32, heads=2,
                    mlp_dim=64)
    graph = unit_groups(model)
    mlp = graph.group_of("block1_mlp1/kernel", 1)
    assert _layout(mlp) == [("block1_mlp1/kernel", 1, "out"), ("block1_mlp1/bias", 0, "out"),
                            ("block1_mlp2/kernel", 0, "in")]
    assert mlp.units == 64 and mlp.prunable
    heads = graph.group_of("block1_attn/query/kernel", 1)
    assert heads.units == 2 and heads.prunable
    assert {(m.path, m.axis) for m in heads.members} == {
        (f"block1_attn/{p}/kernel", 1) for p in ("query", "key", "value")} | {
        (f"block1_attn/{p}/bias", 0) for p in ("query", "key", "value")} | {("block1_attn/attention_output/kernel", 0)}
    stream = graph.group_of("patch_embed/kernel", 3)
    assert stream.units == 32 and not stream.prunable and stream.permutable and STREAM_REASON in stream.reason
    covered = {(m.path, m.axis) for m in stream.members}
    assert {("cls_token/cls", 2), ("pos_embed/embeddings", 1), ("block1_norm1/gamma", 0), ("norm/beta", 0),
            ("block1_attn/query/kernel", 0), ("block1_attn/attention_output/kernel", 2),
            ("block1_attn/attention_output/bias", 0), ("block1_mlp1/kernel", 0), ("block1_mlp2/kernel", 1),
            ("output/kernel", 0)} <= covered
    assert graph.unplaced == ()
    _randomize(model)
    assert _check_permutations(model, graph) == 3
    assert _check_zeroing(model, graph) == 2


# ----------------------------------------------------------------------------- refusals and small cases


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__(name="subby")
        self.fc = keras.layers.Dense(2)

    def call(self, x):
        return self.fc(x)


def test_subclassed_model_is_refused_in_one_line():
    model = _Subclassed()
    model(np.ones((1, 3), "float32"))
    with pytest.raises(UnitGraphError) as error:
        unit_groups(model)
    message = str(error.value)
    assert "\n" not in message and "'subby'" in message and "not recorded" in message
    assert isinstance(error.value, InputError)


def _softmax_and_reshape():
    inputs = keras.Input((4,))
    y = keras.layers.Dense(6, name="d1")(inputs)
    y = keras.layers.Softmax(name="sm")(y)
    y = keras.layers.Dense(6, name="d2")(y)
    y = keras.layers.Reshape((2, 3), name="r")(y)  # unit u lands on (u // 3, u % 3): two axes
    y = keras.layers.Flatten(name="flat")(y)
    outputs = keras.layers.Dense(2, name="out")(keras.layers.Dense(5, activation="relu", name="d3")(y))
    return keras.Model(inputs, outputs, name="model")


def test_softmax_and_reshape_are_both_named():
    model = _softmax_and_reshape()
    with pytest.raises(UnitGraphError) as error:
        unit_groups(model)
    message = str(error.value)
    assert "\n" not in message and "cannot place 2 layers" in message
    assert "'model/sm' (Softmax): mixes the channel axis" in message and "'model/r' (Reshape)" in message
    graph = unit_groups(model, strict=False)
    assert [(p, k) for p, k, _ in graph.unplaced] == [("model/sm", "Softmax"), ("model/r", "Reshape")]
    for path in ("d1/kernel", "d2/kernel"):  # read by an unplaced layer
        group = graph.group_of(path, 1)
        assert not group.prunable and not group.permutable and "unplaced layer" in group.reason
    d3 = graph.group_of("d3/kernel", 1)
    assert d3.units == 5 and d3.prunable  # the rest is read as usual
    assert not graph.group_of("d3/kernel", 0).permutable  # it reads the unplaced Reshape's output
    _randomize(model)
    assert _check_permutations(model, graph) == 1


def test_leaky_relu_between_dense_layers_is_placed():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5, name="a"), keras.layers.LeakyReLU(name="lr"),
                              keras.layers.Dense(2, name="b")], name="seq")
    graph = unit_groups(model)
    group = graph.group_of("seq/a/kernel", 1)
    assert _layout(group) == [("seq/a/kernel", 1, "out"), ("seq/a/bias", 0, "out"), ("seq/b/kernel", 0, "in")]
    assert group.prunable
    _randomize(model)
    assert _check_permutations(model, graph) == 1 and _check_zeroing(model, graph) == 1


def test_softmax_activation_only_at_the_output():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, activation="softmax", name="h")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="o")(keras.layers.Activation("tanh", name="t")(hidden))
    graph = unit_groups(keras.Model(inputs, outputs, name="sm"), strict=False)
    assert [(p, k) for p, k, _ in graph.unplaced] == [("sm/h", "Dense")]
    assert "softmax mixes the units" in graph.unplaced[0][2]


def test_prelu_slopes_per_channel_join_shared_ones_pass():
    inputs = keras.Input((5, 5, 2))
    x = keras.layers.Conv2D(3, 3, name="c")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="per_channel")(x)  # alpha (1, 1, 3)
    x = keras.layers.PReLU(shared_axes=[3], name="shared")(x)  # alpha (3, 3, 1): one slope for all channels
    outputs = keras.layers.Dense(2, name="fc")(keras.layers.Flatten(name="flat")(x))
    model = keras.Model(inputs, outputs, name="p")
    _randomize(model)
    graph = unit_groups(model)
    group = graph.group_of("c/kernel", 3)
    assert ("per_channel/alpha", 2, "alpha") in _layout(group)
    assert graph.group_of("shared/alpha", 2) is None and "shared/alpha" not in graph.variables()
    assert _check_permutations(model, graph) == 1


def test_embedding_starts_a_group():
    inputs = keras.Input((3,), dtype="int32")
    x = keras.layers.Embedding(10, 4, name="emb")(inputs)
    x = keras.layers.GlobalAveragePooling1D(name="avg")(keras.layers.Dense(5, activation="relu", name="fc")(x))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="e")
    _randomize(model)
    graph = unit_groups(model)
    group = graph.group_of("emb/embeddings", 1)
    assert _layout(group) == [("emb/embeddings", 1, "out"), ("fc/kernel", 0, "in")] and group.prunable
    x = np.array([[1, 2, 3], [4, 5, 9]], "int32")
    base = _run(model, {}, x)
    perm = np.array([2, 0, 3, 1])
    np.testing.assert_allclose(_run(model, _permuted(_weights(model), group, perm), x), base, atol=ATOL)


def test_nested_sequential_is_walked():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, name="fc"), keras.layers.ReLU(name="relu")],
                             name="inner")
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="out")(inner(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    _randomize(model)
    graph = unit_groups(model)
    group = graph.group_of("inner/fc/kernel", 1)
    assert group.name == "outer/inner/fc" and ("out/kernel", 0, "in") in _layout(group)
    assert _check_permutations(model, graph) == 1


def test_concatenate_off_the_channel_axis_and_layer_norm_over_two_axes_are_refused():
    inputs = keras.Input((3, 4))
    a = keras.layers.Dense(4, name="a")(inputs)
    c = keras.layers.Concatenate(axis=1, name="cat")([a, a])
    n = keras.layers.LayerNormalization(axis=(1, 2), name="ln")(keras.layers.Dense(4, name="b")(inputs))
    model = keras.Model(inputs, [c, n], name="m")
    graph = unit_groups(model, strict=False)
    reasons = {p: why for p, _, why in graph.unplaced}
    assert set(reasons) == {"m/cat", "m/ln"}
    assert "concatenates along axis 1" in reasons["m/cat"] and "normalises axes (1, 2)" in reasons["m/ln"]


def test_module_examples_run():
    result = doctest.testmod(unit_graph, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, globs={})
    assert result.failed == 0 and result.attempted > 0

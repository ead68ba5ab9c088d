"""tflth.export.shrink: the smaller dense model computes the masked model's function, and
removes exactly the units a hand count finds dead (zoo LeNet-300-100 and Conv-2)."""

import keras
import numpy as np
import pytest

import tflth
from tflth import export, masking, models

TOL = 1e-5


def _randomize(model, seed=0):
    """Every variable random (biases and BN statistics too, so constants and folding matter)."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        shape = tuple(v.shape)
        if v.path.endswith("moving_variance"):
            v.assign(rng.uniform(0.5, 2.0, shape).astype("float32"))
        elif v.path.endswith("bias") or v.path.endswith("beta") or v.path.endswith("moving_mean"):
            v.assign(rng.uniform(-0.5, 1.0, shape).astype("float32"))
        elif v.path.endswith("gamma"):
            v.assign(rng.uniform(0.5, 1.5, shape).astype("float32"))
        else:
            fan_in = int(np.prod(shape[:-1])) or 1
            v.assign((rng.normal(size=shape) / np.sqrt(fan_in)).astype("float32"))
    return model


def _masked(model, masks, seed=0):
    _randomize(model, seed)
    masking.apply_masks(model, masks)
    return model


def _same_function(small, model, seed=1, batch=16):
    x = np.random.default_rng(seed).normal(size=(batch, *model.input_shape[1:])).astype("float32")
    want, got = np.asarray(model(x, training=False)), np.asarray(small(x, training=False))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def _ones(model):
    return {p: np.ones(s, bool) for p, s in masking.shapes(tflth.masked(model)).items()}


def _lenet():
    return models.get("lenet_300_100", seed=0)


def _conv2():
    return models.get("conv2", input_shape=(12, 12, 1), num_classes=10, seed=0)


def _path(model, layer):
    return model.get_layer(layer).kernel.path


def _units(model, layer):
    layer = model.get_layer(layer)
    return layer.units if isinstance(layer, keras.layers.Dense) else layer.filters


# ------------------------------------------------------------------- (a) structured


def test_whole_units_and_their_consumer_slices_masked_leave_exactly_the_survivors_lenet():
    model = _lenet()
    m = _ones(model)
    gone1, gone2 = [3, 7, 20, 299], [0, 50, 51]
    m[_path(model, "fc1")][:, gone1] = False
    m[_path(model, "fc2")][gone1, :] = False
    m[_path(model, "fc2")][:, gone2] = False
    m[_path(model, "output")][gone2, :] = False
    _masked(model, m)
    small, report = export.shrink(model)
    assert [_units(small, n) for n in ("fc1", "fc2", "output")] == [296, 97, 10]
    assert (report.layer("fc1").dead_in, report.layer("fc1").dead_out) == (4, 4)
    assert report.params_after == model.count_params() - 4 * (784 + 1 + 100) - 3 * (296 + 1 + 10)
    _same_function(small, model)


def test_whole_channels_and_their_consumer_slices_masked_leave_exactly_the_survivors_conv2():
    model = _conv2()
    m = _ones(model)
    gone1, gone2, gone_fc = [0, 5, 9], [2, 4, 63], [10, 11]
    m[_path(model, "conv1")][..., gone1] = False
    m[_path(model, "conv2")][..., gone1, :] = False
    m[_path(model, "conv2")][..., gone2] = False
    rows = np.arange(6 * 6 * 64)
    m[_path(model, "fc1")][np.isin(rows % 64, gone2), :] = False  # through Flatten: channel c feeds rows i % 64 == c
    m[_path(model, "fc1")][:, gone_fc] = False
    m[_path(model, "fc2")][gone_fc, :] = False
    _masked(model, m)
    small, report = export.shrink(model)
    assert [_units(small, n) for n in ("conv1", "conv2", "fc1", "fc2", "output")] == [61, 61, 254, 256, 10]
    assert small.get_layer("fc1").kernel.shape == (6 * 6 * 61, 254)
    assert [e.units_after for e in report.layers] == [61, 61, 254, 256, 10]
    _same_function(small, model)


# --------------------------------------------------------------- (b) unstructured


def _random_masks(model, density, seed=0, keep_whole=("output",)):
    rng = np.random.default_rng(seed)
    out = {}
    for layer in ("fc1", "fc2", "output", "conv1", "conv2"):
        try:
            path = _path(model, layer)
        except ValueError:
            continue
        shape = tuple(model.get_layer(layer).kernel.shape)
        out[path] = np.ones(shape, bool) if layer in keep_whole else rng.random(shape) < density.get(layer, 0.5)
    return out


def test_unstructured_lenet_hand_count_with_cascades():
    model = _lenet()
    m = _random_masks(model, {"fc1": 0.5, "fc2": 0.5})
    fc1, fc2, out = (m[_path(model, n)] for n in ("fc1", "fc2", "output"))
    # sanity of the base mask: nothing is dead by chance
    assert fc1.any(0).all() and fc2.any(0).all() and fc2.any(1).all() and fc1.any(1).all()
    fc1[:10, :] = False                       # input pixels 0-9: dead inputs
    fc1[:, [0, 1, 2, 3]] = False              # fc1 dead-in (constant relu(bias), folded into fc2)
    fc2[[10, 11, 12], :] = False              # fc1 dead-out
    fc1[:, 20] = False; fc2[20, :] = False    # fc1 unit 20: both
    fc2[:, 50] = False; fc2[[0, 1, 2, 3], 50] = True   # fc2 unit 50 reads only constant units: dead-in by cascade
    fc2[:, 60] = False                        # fc2 dead-in
    out[70, :] = False                        # fc2 dead-out ...
    fc2[30, :] = False; fc2[30, 70] = True    # ... so fc1 unit 30, which feeds only unit 70, is dead-out by cascade
    _masked(model, m)
    small, report = export.shrink(model)
    r1, r2, r3 = report.layers
    assert (r1.name, r1.units_before, r1.dead_in, r1.dead_out, r1.units_after, r1.constant_kept) == \
        ("fc1", 300, 5, 5, 300 - 9, 0)  # removed: 0-3, 10-12, 20, 30
    assert (r2.dead_in, r2.dead_out, r2.units_after) == (2, 1, 97)  # removed: 50, 60, 70
    assert (r3.units_after, r3.dead_in, r3.dead_out) == (10, 0, 0)
    assert (report.inputs, report.dead_inputs) == (784, 10)
    assert small.get_layer("fc1").kernel.shape == (784, 291)  # dead inputs counted, not removed
    assert report.params_after == small.count_params() == (784 * 291 + 291) + (291 * 97 + 97) + (97 * 10 + 10)
    _same_function(small, model)


def test_unstructured_conv2_hand_count_same_padding_keeps_constant_channels():
    model = _conv2()
    m = _random_masks(model, {"conv1": 0.8, "conv2": 0.5, "fc1": 0.5, "fc2": 0.5})
    c1, c2, f1, f2 = (m[_path(model, n)] for n in ("conv1", "conv2", "fc1", "fc2"))
    rows = np.arange(6 * 6 * 64)
    assert c1.reshape(-1, 64).any(0).all() and c2.reshape(-1, 64, 64).any(0).any(1).all()
    c1[..., [1, 2]] = False                   # conv1 dead-in, but conv2 is 'same'-padded: kept (constant_kept)
    c2[..., [5, 6], :] = False                # conv1 dead-out
    c2[..., 7, :] = False; c2[..., 7, 8] = True   # conv1 channel 7 feeds only conv2 channel 8 ...
    f1[rows % 64 == 8, :] = False             # ... which is dead-out: so 7 is dead-out by cascade
    c2[..., 3] = False                        # conv2 dead-in: relu(b) -> max-pool -> flatten, folded into fc1
    f1[:, 100] = False                        # fc1 dead-in
    f2[101, :] = False                        # fc1 dead-out
    f1[:, 102] = False; f1[rows % 64 == 3, 102] = True   # fc1 unit 102 reads only conv2's constant channel 3
    _masked(model, m)
    small, report = export.shrink(model)
    got = {e.name: (e.units_after, e.dead_in, e.dead_out, e.constant_kept) for e in report.layers}
    assert got == {"conv1": (61, 2, 3, 2), "conv2": (62, 1, 1, 0), "fc1": (253, 2, 1, 0), "fc2": (256, 0, 0, 0),
                   "output": (10, 0, 0, 0)}
    assert (report.inputs, report.dead_inputs) == (1, 0)
    assert small.get_layer("fc1").kernel.shape == (6 * 6 * 62, 253)
    _same_function(small, model)


def test_valid_convolution_folds_constants_through_batchnorm_and_slices_it():
    inputs = keras.Input((9, 9, 2))
    x = keras.layers.Conv2D(8, 3, padding="valid", name="c1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(6, 3, padding="valid", activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(5, name="out")(x), name="valid_net")
    m = _ones(model)
    m[_path(model, "c1")][..., [1, 6]] = False   # constant after BN and ReLU: folded into c2's bias (valid: exact)
    m[_path(model, "c2")][..., 4, :] = False     # c1 channel 4 dead-out: BN sliced
    m[_path(model, "out")][[0, 5], :] = False    # c2 channels 0, 5 dead-out, through global pooling
    _masked(model, m)
    small, report = export.shrink(model)
    assert [(e.units_after, e.dead_in, e.dead_out) for e in report.layers] == [(5, 2, 1), (4, 0, 2), (5, 0, 0)]
    assert small.get_layer("bn").gamma.shape == (5,)
    _same_function(small, model)


def test_conv1d_chain_with_pooling_and_flatten():
    model = keras.Sequential([keras.Input((20, 3)), keras.layers.Conv1D(6, 3, activation="relu", name="c"),
                              keras.layers.MaxPooling1D(2, name="pool"), keras.layers.Flatten(name="flat"),
                              keras.layers.Dropout(0.5, name="drop"), keras.layers.Dense(4, name="out")], name="seq1d")
    m = _ones(model)
    m[_path(model, "c")][..., 2] = False                    # dead-in, folded through pool and flatten
    m[_path(model, "out")][np.arange(9 * 6) % 6 == 4, :] = False  # channel 4: dead-out through Flatten
    _masked(model, m)
    small, report = export.shrink(model)
    assert _units(small, "c") == 4 and report.layer("c").dead_in == 1 and report.layer("c").dead_out == 1
    _same_function(small, model)


def test_a_layer_that_would_lose_every_unit_keeps_one_and_nothing_changes_without_masks():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="relu", name="h"),
                              keras.layers.Dense(2, name="o")], name="tiny")
    m = _ones(model)
    m[_path(model, "o")][:] = False
    _masked(model, m)
    small, report = export.shrink(model)
    assert _units(small, "h") == 1 and report.layer("h").dead_out == 3
    _same_function(small, model)
    plain = _randomize(_lenet())
    small, report = export.shrink(plain)
    assert [e.units_after for e in report.layers] == [300, 100, 10] and report.params_after == plain.count_params()
    _same_function(small, plain)


# ------------------------------------------------------------- beyond chains


def test_a_residual_add_shrinks_its_tied_units_in_every_layer():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, activation="relu", name="first")(inputs)
    x = keras.layers.Dense(8, name="branch")(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Add(name="add")([h, x])), name="res")
    m = _ones(model)
    m[_path(model, "out")][[2, 5], :] = False       # units 2 and 5 of the sum feed nothing ...
    m[_path(model, "branch")][[2, 5], :] = False    # ... and nothing reads them on the branch either
    _masked(model, m)
    small, report = export.shrink(model)
    assert [_units(small, n) for n in ("first", "branch", "out")] == [6, 6, 2]
    assert report.layer("first").dead_out == report.layer("branch").dead_out == 2
    _same_function(small, model)


def test_a_nested_model_is_rebuilt_with_its_units_removed():
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5, activation="relu", name="fc")], name="inner")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(inner(inputs)), name="outer")
    m = _ones(model)
    m[inner.get_layer("fc").kernel.path][:, [1, 3]] = False  # two units of the nested layer get no input ...
    m[_path(model, "out")][[1, 3], :] = False                 # ... and feed nothing
    _masked(model, m)
    small, report = export.shrink(model)
    assert small.get_layer("inner").get_layer("fc").units == 3 and report.layer("fc").dead_out == 2
    _same_function(small, model)

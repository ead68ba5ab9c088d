"""Exact BatchNorm statistics: hand-computed (numpy) means and variances, the train-mode
convention for later BN layers, unequal batches, nothing else changed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflth
from tflth import masking
from tflth.stability import batchnorm as bn_lib

EPS = 1e-5


def _dense_model():
    """Input → Dense (masked) → BN → ReLU → [nested: Dense → BN] → Dense."""
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="fc1")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, epsilon=EPS, name="bn1")(h)
    h = keras.layers.ReLU(name="relu")(h)
    block = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="fc2"),
         keras.layers.BatchNormalization(momentum=0.9, epsilon=EPS, name="bn2")], name="block")
    h = block(h)
    outputs = keras.layers.Dense(3, name="out")(h)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    masking.apply_masks(model, {"fc1/kernel": rng.random((4, 6)) < 0.6})
    # Non-trivial gamma / beta / moving statistics, so the convention matters.
    for bn in bn_lib.batchnorm_layers(model).values():
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.5, 2.0, c).astype("float32"))
        bn.beta.assign(rng.normal(size=c).astype("float32"))
        bn.moving_mean.assign(rng.normal(size=c).astype("float32"))
        bn.moving_variance.assign(rng.uniform(0.5, 3, c).astype("float32"))
    return model


def _batches(sizes, shape, seed=0, shift=2.0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(size=(n,) + shape) * rng.uniform(0.5, 3.0, shape) + shift).astype("float32")
            for n in sizes]


def _np_bn_train(h, gamma, beta):
    """Keras/PyTorch train-mode BN of one batch: batch mean, biased batch variance."""
    return (h - h.mean(0)) / np.sqrt(h.var(0) + EPS) * gamma + beta


def _snapshot(model):
    return {v.path: v.numpy().copy() for v in model.variables}


def _bn_variable_names(model):
    """Variable paths of every BN layer's ``moving_mean`` and ``moving_variance``, in model order."""
    return [v.path for bn in bn_lib.batchnorm_layers(model).values() for v in (bn.moving_mean, bn.moving_variance)]


def test_finds_nested_bn_layers_and_their_statistics_variables():
    model = _dense_model()
    assert list(bn_lib.batchnorm_layers(model)) == ["bn1", "block/bn2"]
    names = _bn_variable_names(model)
    assert names == ["bn1/moving_mean", "bn1/moving_variance", "block/bn2/moving_mean", "block/bn2/moving_variance"]
    assert set(names) <= {v.path for v in model.variables}


def test_dense_statistics_exact_over_unequal_batches_and_nothing_else_changes():
    model = _dense_model()
    batches = _batches((5, 3, 9), (4,))
    before = _snapshot(model)
    stats = bn_lib.recompute_bn_statistics(model, batches)

    fc1 = model.get_layer("fc1")
    w1 = fc1.kernel.numpy().astype(np.float64)
    b1 = fc1.bias.numpy().astype(np.float64)
    bn1 = model.get_layer("bn1")
    block = model.get_layer("block")
    fc2, bn2 = block.get_layer("fc2"), block.get_layer("bn2")

    # BN 1: its inputs are x @ W1 + b1, over all 17 examples (population variance).
    h1 = [x.astype(np.float64) @ w1 + b1 for x in batches]
    all_h1 = np.concatenate(h1)
    np.testing.assert_allclose(stats["bn1"].mean, all_h1.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["bn1"].variance, all_h1.var(0), rtol=1e-5, atol=1e-6)
    assert stats["bn1"].count == 17
    np.testing.assert_allclose(bn1.moving_mean.numpy(), all_h1.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn1.moving_variance.numpy(), all_h1.var(0), rtol=1e-5, atol=1e-6)
    # Population over all examples, not a mean of the batch means / variances.
    assert not np.allclose(np.mean([h.mean(0) for h in h1], 0), all_h1.mean(0), rtol=1e-3)
    assert not np.allclose(np.mean([h.var(0) for h in h1], 0), all_h1.var(0), rtol=1e-3)

    # BN 2 (nested): its inputs come from BN 1 normalising each batch with that batch's
    # statistics (train mode), not with any moving statistics.
    g1, be1 = bn1.gamma.numpy().astype(np.float64), bn1.beta.numpy().astype(np.float64)
    w2, b2 = fc2.kernel.numpy().astype(np.float64), fc2.bias.numpy().astype(np.float64)
    h2 = np.concatenate([np.maximum(_np_bn_train(h, g1, be1), 0) @ w2 + b2 for h in h1])
    np.testing.assert_allclose(stats["block/bn2"].mean, h2.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(stats["block/bn2"].variance, h2.var(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn2.moving_variance.numpy(), h2.var(0), rtol=1e-4, atol=1e-5)

    # Only the moving statistics changed: kernels, masks, biases, gamma, beta are identical.
    stat_names = set(_bn_variable_names(model))
    for v in model.variables:
        if v.path in stat_names:
            assert not np.array_equal(v.numpy(), before[v.path]), v.path
        else:
            assert np.array_equal(v.numpy(), before[v.path]), v.path
    # The layers' own call is back: a training step updates the moving statistics again.
    assert all("call" not in bn.__dict__ for bn in bn_lib.batchnorm_layers(model).values())
    mean = bn1.moving_mean.numpy().copy()
    model(batches[0], training=True)
    assert not np.array_equal(bn1.moving_mean.numpy(), mean)


def test_repeated_calls_trace_once_and_follow_new_weights():
    model = _dense_model()
    recompute = bn_lib.BatchNormRecomputer(model)
    batches = _batches((4, 7), (4,), seed=3)
    recompute(batches)
    fc1 = model.get_layer("fc1")
    fc1.kernel.assign(fc1.kernel.numpy() * 2.0)
    fc1.bias.assign(np.full(6, 0.5, "float32"))
    stats = recompute(batches + _batches((2,), (4,), seed=4))
    x = np.concatenate(batches + _batches((2,), (4,), seed=4)).astype(np.float64)
    h = x @ (fc1.kernel.numpy()) + 0.5
    np.testing.assert_allclose(stats["bn1"].mean, h.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["bn1"].variance, h.var(0), rtol=1e-5, atol=1e-5)
    assert recompute._forward.experimental_get_tracing_count() == 1


def test_conv_statistics_per_channel_over_examples_and_positions():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 3, padding="valid", name="conv")(inputs)
    h = keras.layers.BatchNormalization(epsilon=EPS, name="bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    rng = np.random.default_rng(5)
    masking.apply_masks(model, {"conv/kernel": rng.random((3, 3, 2, 4)) < 0.7})
    conv = model.get_layer("conv")
    conv.bias.assign(rng.normal(size=4).astype("float32"))
    batches = _batches((3, 5), (6, 6, 2), seed=6, shift=1.0)
    before = _snapshot(model)

    stats = bn_lib.recompute_bn_statistics(model, batches)

    k = conv.kernel.numpy().astype(np.float64)
    x = np.concatenate(batches).astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))  # n, 4, 4, c, 3, 3
    out = np.einsum("nhwcij,ijcf->nhwf", windows, k) + conv.bias.numpy()
    flat = out.reshape(-1, 4)
    assert stats["bn"].count == 8 * 4 * 4
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), flat.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), flat.var(0), rtol=1e-5, atol=1e-5)
    for v in model.variables:
        if v.path not in ("bn/moving_mean", "bn/moving_variance"):
            assert np.array_equal(v.numpy(), before[v.path]), v.path


def test_inference_after_recompute_normalises_the_set():
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization(epsilon=EPS, name="bn")(h))
    batches = _batches((10, 6), (3,), seed=7)
    bn_lib.recompute_bn_statistics(model, batches)
    y = model(np.concatenate(batches), training=False).numpy().astype(np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)  # gamma 1, beta 0
    var = model.get_layer("bn").moving_variance.numpy()
    np.testing.assert_allclose(y.var(0), var / (var + EPS), rtol=1e-4)


def test_model_built_under_a_mirrored_strategy(mirrored_strategy):
    with mirrored_strategy.scope():
        inputs = keras.Input((4,))
        h = keras.layers.Dense(3, name="fc")(inputs)
        model = keras.Model(inputs, keras.layers.BatchNormalization(epsilon=EPS, name="bn")(h))
    batches = _batches((6, 2), (4,), seed=8)
    bn_lib.recompute_bn_statistics(model, batches)
    fc = model.get_layer("fc")
    h = np.concatenate(batches).astype(np.float64) @ fc.kernel.numpy() + fc.bias.numpy()
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), h.mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), h.var(0), rtol=1e-5, atol=1e-5)
    for value in mirrored_strategy.experimental_local_results(bn.moving_variance.value):
        np.testing.assert_allclose(np.asarray(value), h.var(0), rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    model = _dense_model()
    with pytest.raises(ValueError, match="no batches"):
        bn_lib.recompute_bn_statistics(model, [])
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no BatchNormalization"):
        bn_lib.recompute_bn_statistics(plain, _batches((2,), (3,)))
    renorm = keras.Sequential([keras.Input((3,)), keras.layers.BatchNormalization(renorm=True, name="rbn")])
    with pytest.raises(ValueError, match="rbn.*renormalization"):
        bn_lib.BatchNormRecomputer(renorm)


def test_batches_combine_to_the_population_statistics_exactly():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(1000, 3)) * [1e-3, 1.0, 50.0] + [1e3, -2.0, 0.0]
    acc = [0.0, 0.0, 0.0]
    for part in np.split(x, [1, 7, 300, 301, 999]):
        bn_lib._combine(acc, part.mean(0), part.var(0), len(part))
    bn_lib._combine(acc, np.full(3, np.nan), np.full(3, np.nan), 0)  # an empty batch
    assert acc[0] == 1000
    np.testing.assert_allclose(acc[1], x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(acc[2] / acc[0], x.var(0), rtol=1e-9)


def test_a_bn_layer_called_twice_is_refused():
    shared = keras.layers.BatchNormalization(name="shared_bn")
    inputs = keras.Input((3,))
    model = keras.Model(inputs, shared(shared(inputs)))
    with pytest.raises(ValueError, match="shared_bn.*more than once"):
        bn_lib.recompute_bn_statistics(model, _batches((4,), (3,)))
    assert "call" not in shared.__dict__

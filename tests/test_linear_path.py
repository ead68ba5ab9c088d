"""tflth.stability.linear_path: the straight line between two weight sets of a Keras model,
evaluated with ``evaluate``; per-α values and barriers checked by hand (NumPy), BatchNorm
recomputed or interpolated, dict inputs, one-line errors, the model's weights restored."""

import dataclasses
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflth
from tflth import masking
from tflth.errors import InputError
from tflth.stability import LinearPath, PathError, linear_path
from tflth.stability.path import higher_is_better_for

TOL = 1e-6


def _hand_barrier(alphas, errors):
    """``max over α in [0, 1] of E(α) − (E(0) + E(1)) / 2``, written out."""
    alphas, errors = np.asarray(alphas), np.asarray(errors, np.float64)
    inside = (alphas >= 0) & (alphas <= 1)
    return errors[inside].max() - (errors[alphas == 0][0] + errors[alphas == 1][0]) / 2


def _one_line(err):
    assert "\n" not in str(err.value), str(err.value)
    assert isinstance(err.value, InputError)


# ------------------------------------------------------------------ a linear model, by hand

# Integers and halves: every W(α) at α in {0, 1/4, 1/2, 3/4, 1} and every prediction is
# exact in float32, so the hand computation agrees to rounding of the means.
X = np.array([[1, 2, 0], [0, 1, -1], [2, -1, 1], [1, 1, 1]], np.float32)
Y = np.array([[1.0], [-2.0], [0.5], [3.0]], np.float32)
W_A = np.array([[0.5], [1.0], [-1.5]], np.float32)
W_B = np.array([[-1.0], [2.0], [0.5]], np.float32)


def _linear():
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, use_bias=False, name="fc")], name="linear")


@pytest.mark.parametrize("points", [2, 5])
def test_named_metric_values_and_barrier_match_a_hand_computation(points):
    model = _linear()
    path = linear_path(model, [W_A], [W_B], (X, Y), metrics=["mae"], points=points, loss="mse", metric="mae")
    alphas = np.linspace(0, 1, points)
    np.testing.assert_array_equal(path.alphas, alphas)
    residual = [X @ ((1 - a) * W_A + a * W_B) - Y for a in alphas]
    mse = [float(np.mean(r.astype(np.float64) ** 2)) for r in residual]
    mae = [float(np.mean(np.abs(r.astype(np.float64)))) for r in residual]
    assert path.values["loss"] == pytest.approx(mse, abs=TOL)
    assert path.values["mae"] == pytest.approx(mae, abs=TOL)
    assert path.metric == "mae" and path.higher_is_better is False
    assert path.barrier == pytest.approx(_hand_barrier(alphas, mae), abs=TOL)
    # the loss barrier is another number: the metric chosen is the one the barrier is on
    loss_path = linear_path(model, [W_A], [W_B], (X, Y), metrics=["mae"], points=points, loss="mse")
    assert loss_path.metric == "loss"
    assert loss_path.barrier == pytest.approx(_hand_barrier(alphas, mse), abs=TOL)
    assert abs(loss_path.barrier - path.barrier) > 0.1


def test_a_curve_with_an_interior_bump_and_an_extended_range():
    """The model's output negated along the way: MSE rises in the middle only when the
    chosen metric is not convex, so use -MSE as 'higher is better' to get a bump."""
    model = _linear()
    path = linear_path(model, [W_A], [W_B], (X, Y), metrics=[keras.metrics.MeanSquaredError(name="fit_score")],
                       points=5, loss="mse", metric="fit_score", higher_is_better=True, alpha_range=(-0.5, 1.5))
    assert path.alphas == pytest.approx((-0.5, 0.0, 0.5, 1.0, 1.5))
    mse = np.array([np.mean((X @ ((1 - a) * W_A + a * W_B) - Y).astype(np.float64) ** 2) for a in path.alphas])
    assert path.values["fit_score"] == pytest.approx(mse, abs=TOL)
    errors = 1.0 - mse                      # higher is better: the barrier is on 1 − m
    assert path.barrier == pytest.approx(_hand_barrier(path.alphas, errors), abs=TOL)
    assert path.barrier > 0.1               # a real bump at α = 0.5 (points at ±0.5 outside are ignored)
    assert path.worst_alpha == 0.5


def test_accuracy_barrier_is_taken_on_one_minus_accuracy():
    """Logits x @ W; the logit difference u = W[:, 1] − W[:, 0] moves linearly with α.
    Point A is right for α < 1/3, B for α > 2/3, C and D always: accuracy 3/4, 3/4, 1/2,
    3/4, 3/4 at α = 0, 1/4, 1/2, 3/4, 1."""
    x = np.array([[1, 0], [0, 1], [1, 1], [-1, -1]], np.float32)
    y = np.array([1, 1, 0, 1])
    w_a = np.array([[0, 1], [0, -2]], np.float32)
    w_b = np.array([[0, -2], [0, 1]], np.float32)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
    path = linear_path(model, [w_a], [w_b], (x, y), metrics=["accuracy"], points=5, metric="accuracy",
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert path.values["accuracy"] == pytest.approx([0.75, 0.75, 0.5, 0.75, 0.75], abs=TOL)
    assert path.higher_is_better is True
    assert path.barrier == pytest.approx(0.5 - 0.25, abs=TOL)       # on the error 1 − accuracy
    assert path.worst_alpha == 0.5
    losses = []
    for a in path.alphas:
        d = (x @ ((1 - a) * w_a + a * w_b)).astype(np.float64)
        d = d[:, 1] - d[:, 0]
        losses.append(np.mean(np.where(y == 1, np.log1p(np.exp(-d)), np.log1p(np.exp(d)))))
    assert path.values["loss"] == pytest.approx(losses, abs=TOL)


def test_no_batchnorm_gives_the_same_curve_in_both_modes_and_to_dict_is_json():
    model = _linear()
    a = linear_path(model, [W_A], [W_B], (X, Y), points=3, loss="mse", bn="recompute")
    b = linear_path(model, [W_A], [W_B], (X, Y), points=3, loss="mse", bn="interpolate")
    assert a.values == b.values and (a.bn, b.bn) == ("recompute", "interpolate")
    out = json.loads(json.dumps(a.to_dict()))
    assert out["alphas"] == [0.0, 0.5, 1.0] and out["metric"] == "loss"
    assert out["values"]["loss"] == list(a.values["loss"])
    assert isinstance(a, LinearPath)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.barrier = 0.0


# ------------------------------------------------------------------ dict inputs, compiled models

def test_dict_inputs_and_weight_dicts():
    a_in, b_in = keras.Input((2,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Add()([keras.layers.Dense(1, use_bias=False, name="fa")(a_in),
                              keras.layers.Dense(1, use_bias=False, name="fb")(b_in)])
    model = keras.Model({"a": a_in, "b": b_in}, out, name="two_inputs")
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(24, 2)).astype("float32"), rng.normal(size=(24, 3)).astype("float32")
    y = rng.normal(size=(24, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices(({"a": xa, "b": xb}, y)).batch(10)
    w_a = {"fa/kernel": rng.normal(size=(2, 1)).astype("float32"),
           "fb/kernel": rng.normal(size=(3, 1)).astype("float32")}
    w_b = {k: rng.normal(size=v.shape).astype("float32") for k, v in w_a.items()}
    path = linear_path(model, w_a, w_b, data, points=4, loss="mse")
    hand = []
    for t in path.alphas:
        w = {k: (1 - t) * w_a[k].astype(np.float64) + t * w_b[k] for k in w_a}
        hand.append(np.mean((xa @ w["fa/kernel"] + xb @ w["fb/kernel"] - y) ** 2))
    assert path.values["loss"] == pytest.approx(hand, abs=1e-5)
    assert path.barrier == pytest.approx(_hand_barrier(path.alphas, hand), abs=1e-5)


def test_a_compiled_model_is_evaluated_with_its_own_loss_and_metrics_and_keeps_its_compile_state():
    model = _linear()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer, loss="mse", metrics=["mae"])
    own = linear_path(model, [W_A], [W_B], (X, Y), points=3)
    assert sorted(own.values) == ["loss", "mae"]
    other = linear_path(model, [W_A], [W_B], (X, Y), points=3, metrics=["mse"], metric="mse")
    assert sorted(other.values) == ["loss", "mse"] and other.values["mse"] == pytest.approx(own.values["loss"])
    assert model.optimizer is optimizer and model.loss == "mse"
    assert sorted(model.evaluate(X, Y, verbose=0, return_dict=True)) == ["loss", "mae"]


# ------------------------------------------------------------------ BatchNorm

def _bn_model():
    inputs = keras.Input((3,))
    h = keras.layers.Dense(4, name="fc1")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    out = keras.layers.Dense(1, name="out")(keras.layers.ReLU()(h))
    return keras.Model(inputs, out, name="bn_net")


def _bn_data():
    rng = np.random.default_rng(3)
    x = (rng.normal(size=(48, 3)) * [1.0, 2.0, 0.5] + [1.0, -2.0, 3.0]).astype("float32")
    y = rng.normal(size=(48, 1)).astype("float32")
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


def _endpoints(model):
    rng = np.random.default_rng(4)
    w_a = model.get_weights()
    w_b = [w + rng.normal(size=w.shape).astype(w.dtype) for w in w_a]
    for i, v in enumerate(model.weights):          # the stored statistics: arbitrary, variance > 0
        if "moving_variance" in v.path:
            w_a[i], w_b[i] = w_a[i] + 2.0, np.abs(w_b[i]) + 0.5
    return w_a, w_b


def test_recompute_endpoints_equal_each_endpoint_with_its_statistics_recomputed_by_hand():
    model = _bn_model()
    model.compile(loss="mse")
    x, y, data = _bn_data()
    w_a, w_b = _endpoints(model)
    path = linear_path(model, w_a, w_b, data, points=3, bn="recompute", bn_batches=2)
    bn = model.get_layer("bn")
    for weights, value in ((w_a, path.values["loss"][0]), (w_b, path.values["loss"][-1])):
        model.set_weights(weights)
        kernel, bias = model.get_layer("fc1").get_weights()
        h = x[:32].astype(np.float64) @ kernel + bias          # the BN inputs over the first 2 batches
        bn.moving_mean.assign(h.mean(0).astype("float32"))
        bn.moving_variance.assign(h.var(0).astype("float32"))
        assert value == pytest.approx(model.evaluate(data, verbose=0), rel=1e-5)
    # interpolate: the endpoints keep their stored statistics; the midpoint differs from recompute
    inter = linear_path(model, w_a, w_b, data, points=3, bn="interpolate")
    for weights, value in ((w_a, inter.values["loss"][0]), (w_b, inter.values["loss"][-1])):
        model.set_weights(weights)
        assert value == pytest.approx(model.evaluate(data, verbose=0), rel=1e-5)
    assert abs(inter.values["loss"][1] - path.values["loss"][1]) > 1e-2 * path.values["loss"][1]


def test_the_models_weights_and_statistics_are_unchanged_after_the_call_and_after_an_error():
    model = _bn_model()
    x, y, data = _bn_data()
    w_a, w_b = _endpoints(model)
    model.set_weights([w + 0.25 for w in w_a])                 # a third weight set, neither endpoint
    before = [w.copy() for w in model.get_weights()]
    linear_path(model, w_a, w_b, data, points=3, loss="mse")
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    # an error after the first point was assigned (the metric is not evaluated)
    with pytest.raises(PathError, match="not evaluated") as err:
        linear_path(model, w_a, w_b, data, points=3, loss="mse", metric="auc")
    _one_line(err)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------------------ errors

def test_mismatched_weights_are_one_line():
    model = _linear()
    cases = [
        ([W_A, W_A], [W_B], "2 arrays"),
        ([W_A], [W_B.T], "shape"),
        ({"linear/fc/kernel": W_A}, {"linear/fc/kernel": W_B, "other/kernel": W_B}, "weights_b .*1 unknown"),
        ({"linear/fc/kernel": W_A}, {}, "weights_b .*1 missing"),
        ([W_A], "weights", "get_weights"),
    ]
    for w_a, w_b, found in cases:
        with pytest.raises(PathError, match=found) as err:
            linear_path(model, w_a, w_b, (X, Y), points=2, loss="mse")
        _one_line(err)


def test_unknown_metric_direction_and_other_inputs_are_one_line():
    model = _linear()
    metric = keras.metrics.MeanSquaredError(name="my_score")
    with pytest.raises(PathError, match="higher_is_better") as err:
        linear_path(model, [W_A], [W_B], (X, Y), metrics=[metric], metric="my_score", loss="mse")
    _one_line(err)
    ok = linear_path(model, [W_A], [W_B], (X, Y), metrics=[metric], metric=metric, higher_is_better=False,
                     loss="mse", points=2)
    assert ok.values["my_score"] == pytest.approx(ok.values["loss"])
    for kwargs, found in [(dict(loss=None), "loss="), (dict(bn="both"), "bn="), (dict(points=1), "points"),
                          (dict(alpha_range=(0.2, 1.0)), "contain"), (dict(bn_batches=0), "bn_batches")]:
        with pytest.raises(PathError, match=found) as err:
            linear_path(model, [W_A], [W_B], (X, Y), **{"loss": "mse", **kwargs})
        _one_line(err)
    with pytest.raises(PathError, match="tf.data.Dataset") as err:
        linear_path(model, [W_A], [W_B], [X, Y], loss="mse")
    _one_line(err)


@pytest.mark.parametrize("name, expected", [("accuracy", True), ("sparse_categorical_accuracy", True),
                                            ("auc", True), ("loss", False), ("mse", False), ("mae", False),
                                            ("perplexity", False), ("mean_squared_error", False),
                                            ("my_score", None)])
def test_directions_known_by_name(name, expected):
    assert higher_is_better_for(name) is expected


def test_an_endpoint_nonzero_where_the_mask_prunes_is_one_line():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="h"), keras.layers.Dense(1, name="o")],
                             name="masked_net")
    tflth.masked(model)
    masking.apply_masks(model, tflth.pruning.prune(model, fraction=0.5))
    w_a = {v.path: v.numpy() for v in model.weights}
    w_b = {p: w + 1.0 for p, w in w_a.items()}                 # dense: nonzero where pruned
    with pytest.raises(PathError, match="nonzero where the model's mask prunes") as err:
        linear_path(model, w_a, w_b, (X, Y), points=2, loss="mse")
    _one_line(err)
    masks = masking.masks_of(model)
    w_b = {p: w * masks[p] if p in masks else w for p, w in w_b.items()}   # copies of one ticket: fine
    path = linear_path(model, w_a, w_b, (X, Y), points=3, loss="mse")
    assert np.isfinite(path.values["loss"]).all()


# ------------------------------------------------------------------ KerasHub

def test_a_keras_hub_backbone_with_a_head():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16,
                                             intermediate_dim=32, max_sequence_length=8)
    model = keras.Model(backbone.input, keras.layers.Dense(2, name="head")(backbone.output["pooled_output"]))
    rng = np.random.default_rng(0)
    x = {"token_ids": rng.integers(0, 50, (24, 8)).astype("int32"), "segment_ids": np.zeros((24, 8), "int32"),
         "padding_mask": np.ones((24, 8), bool)}
    data = tf.data.Dataset.from_tensor_slices((x, np.arange(24) % 2)).batch(8)
    w_a = model.get_weights()
    w_b = [w + 0.1 * rng.normal(size=w.shape).astype(w.dtype) for w in w_a]
    path = linear_path(model, w_a, w_b, data, metrics=["accuracy"], points=4, metric="accuracy",
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(path.alphas) == 4 and sorted(path.values) == ["accuracy", "loss"]
    assert all(len(v) == 4 and np.isfinite(v).all() for v in path.values.values())
    assert np.isfinite(path.barrier) and path.barrier >= 0
    for a, b in zip(w_a, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_module_example_runs():
    import doctest

    from tflth.stability import path as path_module

    result = doctest.testmod(path_module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
                             report=False, globs={})
    assert result.failed == 0 and result.attempted > 0

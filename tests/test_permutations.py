"""Permutations that keep the function (issue 29, item 3): every permutable unit group of
the zoo's models and of a residual CNN of our own reordered at random leaves the logits
within 1e-5; masks move with their weights (each layer keeps its density); the inverse
restores every weight exactly; bad permutations are refused in one line."""

import keras
import numpy as np
import pytest

import tflth
from tflth import masking, models, permutations
from tflth.permutations import PermutationError
from tflth.unit_graph import unit_groups

from helpers import randomize_weights


def _randomize(model, seed=0):
    return randomize_weights(model, seed)


def _residual_cnn():
    inputs = keras.Input((8, 8, 3), name="x")
    a = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    a = keras.layers.GroupNormalization(groups=2, name="gn")(a)
    a = keras.layers.LeakyReLU(negative_slope=0.2, name="lrelu")(a)
    b = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(a)
    b = keras.layers.BatchNormalization(name="bn")(b)
    r = keras.layers.Add(name="add")([a, b])
    p = keras.layers.MaxPooling2D(2, name="pool")(r)
    t = keras.layers.Conv2DTranspose(6, 2, strides=2, name="up")(p)
    c = keras.layers.Concatenate(name="cat")([t, a])
    h = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(4, 3, strides=2, name="down")(c))
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Dense(16, activation="relu", name="fc")(h))
    return keras.Model(inputs, outputs, name="rescnn")


MODELS = {
    "lenet_300_100": lambda: models.get("lenet_300_100", input_shape=(28, 28, 1), num_classes=10),
    "conv2": lambda: models.get("conv2", input_shape=(16, 16, 3), num_classes=10, filters=4, dense=16),
    "resnet8": lambda: models.get("resnet8", input_shape=(16, 16, 3), num_classes=10, width=4),
    "vit_tiny": lambda: models.get("vit_tiny", input_shape=(28, 28, 1), num_classes=10, depth=1, dim=32, heads=2,
                                   mlp_dim=64),
    "residual_cnn": _residual_cnn,
}


def _x(model, seed=1):
    return np.random.default_rng(seed).normal(size=(2, *model.inputs[0].shape[1:])).astype("float32")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_group_permuted_at_random_keeps_the_logits(name):
    model = _randomize(MODELS[name]())
    graph = unit_groups(model)
    perms = permutations.random_permutations(graph, seed=3)
    assert perms and all(not np.array_equal(p, np.arange(len(p))) for p in perms.values() if len(p) > 2)
    x = _x(model)
    before, weights = np.asarray(model(x, training=False)), {v.path: v.numpy() for v in model.weights}
    permutations.permute(model, perms, graph)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), before, atol=1e-5)
    after = {v.path: v.numpy() for v in model.weights}
    assert any(not np.array_equal(after[p], weights[p]) for p in weights), "nothing moved"
    # the inverse permutation restores every weight exactly
    permutations.permute(model, {n: permutations.invert(p) for n, p in perms.items()}, graph)
    assert all(np.array_equal(v.numpy(), weights[v.path]) for v in model.weights)


def test_masks_move_with_their_weights():
    model = _randomize(_residual_cnn())
    tflth.masked(model)
    rng = np.random.default_rng(5)
    masking.apply_masks(model, {p: rng.random(m.shape) > 0.4 for p, m in masking.masks_of(model).items()})
    masks_before, x = masking.masks_of(model), _x(model)
    before = np.asarray(model(x, training=False))
    graph = unit_groups(model)
    perms = permutations.random_permutations(graph, seed=7)
    permutations.permute(model, perms, graph)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), before, atol=1e-5)
    masks_after = masking.masks_of(model)
    assert any(not np.array_equal(masks_after[p], masks_before[p]) for p in masks_before)
    for p in masks_before:  # each layer keeps its density, and its pruned entries stay zero
        assert masks_after[p].sum() == masks_before[p].sum(), p
    for path, w in masking.masked_weights(model).items():
        assert np.all(w[~masks_after[path]] == 0), path
    assert masks_after == permutations.permute_arrays(dict(masks_before), perms, graph)


def test_a_known_permutation_moves_the_units_it_names():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")],
                             name="net")
    _randomize(model)
    graph = unit_groups(model)
    kernel_a, kernel_b = model.get_layer("a").kernel.numpy(), model.get_layer("b").kernel.numpy()
    perm = np.array([2, 0, 3, 1])
    permutations.permute(model, {"net/a": perm}, graph)
    np.testing.assert_array_equal(model.get_layer("a").kernel.numpy(), kernel_a[:, perm])
    np.testing.assert_array_equal(model.get_layer("b").kernel.numpy(), kernel_b[perm, :])
    assert np.array_equal(permutations.compose(perm, permutations.invert(perm)), np.arange(4))


def test_bad_permutations_are_refused_in_one_line():
    model = _residual_cnn()
    graph = unit_groups(model)
    names = {g.name: g for g in graph.groups}
    gn = next(g for g in graph.groups if g.granularity > 1)
    head = next(g for g in graph.groups if not g.permutable)
    cases = [({"nope": np.arange(3)}, "No unit group named 'nope'"),
             ({gn.name: np.arange(gn.units - 1)}, "must hold each of"),
             ({gn.name: np.zeros(gn.units, int)}, "must hold each of"),
             ({head.name: np.arange(head.units)}, "cannot be permuted"),
             ({gn.name: np.r_[1, 0, np.arange(2, gn.units)]}, "breaks a block")]
    for perms, message in cases:
        with pytest.raises(PermutationError, match=message) as error:
            permutations.permute_arrays({}, perms, graph)
        assert "\n" not in str(error.value)
    assert names

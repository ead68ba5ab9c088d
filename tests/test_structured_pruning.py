"""Structured pruning, N:M: the checker, every layer type, hand counts, padding, nesting,
and the random control keeping the structure and the per-group counts. Channels:
tests/test_channel_tickets.py."""

import dataclasses

import keras
import numpy as np
import pytest

from tflth import masking, pruning
from tflth.hparams import HparamError, PruningHparams
from tflth.pruning import layout as layout_lib
from tflth.pruning import nm as nm_lib

NM = PruningHparams(strategy="nm", nm=((2, 4), (1, 4)))


# ----------------------------------------------------------------- the checker


def test_checker_follows_tfmot_spelling_on_hand_made_kernels():
    # Dense (in=8, out=2): groups are rows 0-3 and 4-7 of each column.
    k = np.zeros((8, 2))
    k[[0, 3, 5, 6], 0] = 1.0
    k[[1, 2, 4, 7], 1] = -2.0
    assert nm_lib.is_pruned_m_by_n(k, (2, 4))          # tfmot: 2 zeros in every 4 = NVIDIA 2:4
    assert nm_lib.is_nm(k, 0, 2, 4) and not nm_lib.is_nm(k, 0, 1, 4)
    assert not nm_lib.is_pruned_m_by_n(k, (3, 4))       # 3 zeros per 4 would be 1:4
    moved = k.copy()
    moved[5, 0], moved[1, 0] = 0.0, 1.0                 # one weight moved into the first group
    assert not nm_lib.is_pruned_m_by_n(moved, (2, 4))
    assert not nm_lib.is_nm(np.repeat(k[:1], 4, axis=0), 0, 2, 4)  # a row of 4 survivors
    # Conv (h, w, in=4, out): groups along in for every (h, w, out)
    c = np.zeros((2, 2, 4, 3))
    c[..., 0:2, :] = 1.0
    assert nm_lib.is_pruned_m_by_n(c, (2, 4)) and not nm_lib.is_pruned_m_by_n(np.ones((2, 2, 4, 3)), (2, 4))
    c[1, 0, 3, 2] = 5.0
    assert not nm_lib.is_pruned_m_by_n(c, (2, 4))


def test_nm_keeps_the_largest_in_each_group_by_hand():
    w = np.array([[1.0, -5.0], [3.0, 0.2], [-2.0, 4.0], [0.1, 0.3]])  # (in=4, out=2)
    kept = nm_lib.nm_mask(w, np.ones_like(w, bool), axis=0, n=2, m=4)
    assert kept.tolist() == [[False, True], [True, False], [True, True], [False, False]]
    ties = nm_lib.nm_mask(np.ones((4, 1)), np.ones((4, 1), bool), axis=0, n=1, m=4)
    assert ties[:, 0].tolist() == [True, False, False, False]  # ties: the lower position stays


def test_padding_the_last_group():
    w = np.arange(1.0, 7.0).reshape(6, 1)  # groups [1 2 3 4] and [5 6 pad pad]
    kept = nm_lib.nm_mask(w, np.ones_like(w, bool), axis=0, n=1, m=4)
    assert kept[:, 0].tolist() == [False, False, False, True, False, True]
    assert nm_lib.is_nm(kept, 0, 1, 4)


# --------------------------------------------------------- every layer type


def _all_layers_model():
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(20, 8, name="embed")(tokens)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.Conv1D(8, 3, padding="same", name="conv1d")(x)
    x = keras.layers.LSTM(4, return_sequences=True, name="lstm")(x)
    x = keras.layers.Reshape((6, 4, 1))(x)
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv2d")(x)
    x = keras.layers.SeparableConv2D(8, 3, padding="same", name="sep")(x)
    x = keras.layers.Conv2DTranspose(4, 3, padding="same", name="convt")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4, name="out")(keras.layers.Dense(8, name="fc")(x))
    return keras.Model(tokens, out)


def test_nm_masks_satisfy_the_checker_on_every_supported_layer_type():
    model = _all_layers_model()
    masking.masked(model, ["!embed", "!sep/depthwise_kernel"])  # no input axis: left out
    layouts = pruning.layouts(model)
    kinds = {lay.kind for lay in layouts.values()}
    assert {"EinsumDense.kernel", "Conv1D.kernel", "LSTMCell.kernel", "LSTMCell.recurrent_kernel",
            "Conv2D.kernel", "SeparableConv2D.pointwise_kernel", "Conv2DTranspose.kernel", "Dense.kernel"} <= kinds
    strategy = pruning.pruner_for(dataclasses.replace(NM, nm_pad=True), layouts=layouts)
    strategy.check()
    weights = masking.masked_weights(model)
    ones = masking.masks_of(model)
    level1 = strategy(weights, ones, level=1)
    level2 = strategy(weights, level1, level=2)
    for path, lay in layouts.items():
        axis = lay.group_axis
        assert nm_lib.is_nm(level1[path], axis, 2, 4), path
        length = lay.shape[axis]
        assert nm_lib.is_nm(level2[path], axis, 1, 4), path
        assert length == 1 or not nm_lib.is_nm(level1[path], axis, 1, 4), path  # one input: nothing to prune
        assert (level2[path] <= level1[path]).all(), path  # nested
        per_line = (length // 4) * 2 + min(2, length % 4)
        assert int(level1[path].sum()) == np.prod(lay.shape) // length * per_line, path
        if length < 4:
            continue
        # one more survivor in a whole group breaks the pattern
        grouped = nm_lib.grouped(level1[path], axis, 4)
        whole = grouped[..., : length // 4, :]
        first = tuple(np.argwhere(whole.sum(-1) == 2)[0])
        broken = grouped.copy()
        broken[first + (int(np.flatnonzero(~whole[first])[0]),)] = True
        assert not nm_lib.is_nm(nm_lib.ungrouped(broken, axis, lay.shape), axis, 2, 4), path
    assert strategy.survivor_counts(2) == [sum(int(m.sum()) for m in mask.values()) for mask in (ones, level1, level2)]


def test_einsum_groups_run_along_the_contracted_axis_of_the_equation():
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, keras.layers.MultiHeadAttention(2, 4, name="mha")(inputs, inputs))
    layouts = pruning.layouts(model)
    assert layouts["mha/query/kernel"].group_axis == 0            # "abc,cde->abde": c (model dim)
    assert layouts["mha/attention_output/kernel"].input_axes == (0, 1)  # "abcd,cde->abe": heads, head dim
    assert layouts["mha/attention_output/kernel"].group_axis == 1
    assert layout_lib.einsum_axes("btd,ndh->btnh") == ((1,), (0, 2))  # Gemma's attention


def test_an_input_axis_that_is_not_a_multiple_of_m_is_refused_unless_padding():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, name="fc")], name="net")
    layouts = pruning.layouts(model)
    with pytest.raises(HparamError, match=r"'net/fc/kernel' \(Dense.kernel, shape \(8, 3\)\) has 8 inputs .* M = 3"):
        pruning.pruner_for(PruningHparams(strategy="nm", nm=((2, 3),)), layouts=layouts).check()
    padded = pruning.pruner_for(PruningHparams(strategy="nm", nm=((2, 3),), nm_pad=True), layouts=layouts)
    padded.check()
    assert padded.survivor_counts(1) == [24, 3 * (2 + 2 + 2)]  # groups [3][3][2]: 2 + 2 + min(2, 2)


def test_nm_settings_are_checked():
    for bad, pattern in [(((3, 2),), "1 <= N < M"), (((2, 4), (1, 8)), "one M"), (((2, 4), (2, 4)), "N decreasing"),
                         (("2:x",), "whole numbers")]:
        with pytest.raises(HparamError, match=pattern):
            PruningHparams(strategy="nm", nm=bad)
    with pytest.raises(HparamError, match="has no effect with strategy 'magnitude'"):
        pruning.pruner_for(PruningHparams(nm=((2, 4),)))
    with pytest.raises(HparamError, match="expected rate 0"):
        pruning.pruner_for(PruningHparams(strategy="nm", nm=((2, 4),), layer_rates=(("output", 0.1),)))
    assert PruningHparams(strategy="nm", nm=("2:4", "1:4")).nm == ((2, 4), (1, 4))


def test_random_nm_control_keeps_every_group_count():
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"), keras.layers.Dense(4, name="b")],
                             name="net")
    masking.masked(model)
    strategy = pruning.pruner_for(NM, layouts=pruning.layouts(model))
    weights = {p: rng.normal(size=w.shape) for p, w in masking.masked_weights(model).items()}
    level = strategy(weights, masking.masks_of(model), level=2)
    control = strategy.random_like(level, seed=5)
    for p in level:
        assert (nm_lib.grouped(control[p], 0, 4).sum(-1) == nm_lib.grouped(level[p], 0, 4).sum(-1)).all()
        assert not np.array_equal(control[p], level[p])
    assert strategy.random_like(level, seed=5) == control

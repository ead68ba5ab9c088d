"""Channel tickets through the unit groups: channel pruning (norms by hand, every member of
a group, residual ties, GroupNormalization blocks, attention heads, refusals naming the
real cause) and the shrunk export of the result (logits equal to the masked model's, fewer
parameters) on models of every kind the reader places."""

import keras
import numpy as np
import pytest

from helpers import randomize_weights
from tflth import export, masking, models, pruning
from tflth.hparams import HparamError, PruningHparams
from tflth.pruning import channels as channels_lib

TOL = 1e-5


def _channels(fraction=0.5, scope="layerwise", rates=(), norm="l1"):
    return PruningHparams(fraction, scope, tuple(rates), strategy="channels", channel_norm=norm)


def _masked(model, exclude_output=False, seed=0):
    masking.masked(model, masking.select(model, (), exclude_output=exclude_output))
    return randomize_weights(model, seed)


def _prune(model, hparams, levels=1):
    strategy = pruning.for_model(hparams, model)
    for level in range(1, levels + 1):
        masking.apply_masks(model, strategy(masking.masked_weights(model), masking.masks_of(model), level=level))
    return strategy


def _same_logits(small, model, batch=8):
    x = np.random.default_rng(1).normal(size=(batch, *model.input_shape[1:])).astype("float32")
    want, got = np.asarray(model(x, training=False)), np.asarray(small(x, training=False))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


def _chain(rows=6):
    model = keras.Sequential([keras.Input((rows,)), keras.layers.Dense(4, activation="relu", name="fc1"),
                              keras.layers.Dense(3, activation="relu", name="fc2"), keras.layers.Dense(2, name="out")],
                             name="net")
    return _masked(model)


def residual_cnn():
    """A CNN of our own with every kind of coupling: a GroupNormalization stem tied by a
    residual Add to a SeparableConv2D, LeakyReLU, pooling, a Conv2DTranspose and a Dense head."""
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.GroupNormalization(4, name="gn")(x)
    x = keras.layers.LeakyReLU(negative_slope=0.1, name="leaky")(x)
    y = keras.layers.SeparableConv2D(8, 3, padding="same", depth_multiplier=2, name="sep")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Conv2DTranspose(6, 2, strides=2, name="up")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(10, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(x), name="cnn")


# ------------------------------------------------------------------- by hand


def test_units_go_by_l1_norm_with_the_rows_that_read_them():
    model = _chain()
    fc1 = np.array([[1, 0, 3, 0], [1, 2, 0, 0], [0, 0, 0, 5], [0, 0, 0, 0], [0, -4, 0, 0], [0, 0, 0, 0]], float)
    fc2 = np.array([[1, 1, 1], [2, 0, 0], [0, 3, 0], [9, 9, 9.]])  # L1 per unit: 12, 13, 10
    weights = {"net/fc1/kernel": fc1, "net/fc2/kernel": fc2, "net/out/kernel": np.ones((3, 2))}
    strategy = pruning.for_model(_channels(), model)
    strategy.check()
    mask = strategy(weights, masking.masks_of(model))
    # fc1 unit norms 2, 6, 3, 5 -> units 1 and 3 stay; fc2 rows 0 and 2 go with them
    assert mask["net/fc1/kernel"].any(axis=0).tolist() == [False, True, False, True]
    assert mask["net/fc2/kernel"].any(axis=1).tolist() == [False, True, False, True]
    # each group is ranked on the level's start mask: fc2 norms 12, 13, 10 -> round(1.5) = 2 go
    assert mask["net/fc2/kernel"].any(axis=0).tolist() == [False, True, False]
    assert mask["net/out/kernel"].tolist() == [[False, False], [True, True], [False, False]]  # logits all kept
    assert strategy.survivor_counts(2) == [7, 3, 2]  # units of fc1 + fc2: 4+3, 2+1, 1+1
    assert strategy.kept_whole == {"net/out": "the model's outputs"}
    l2 = pruning.for_model(_channels(norm="l2"), model)(weights, masking.masks_of(model))
    assert l2["net/fc1/kernel"].any(axis=0).tolist() == [False, True, False, True]  # norms √2, √20, 3, 5


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_a_conv_channel_takes_its_flattened_rows_in_either_data_format(data_format):
    # 3 filters on a 4-wide map: the layout the old reader got wrong for channels_first
    shape = (4, 3, 1) if data_format == "channels_last" else (1, 3, 4)
    inputs = keras.Input(shape)
    x = keras.layers.Conv2D(4, 1, use_bias=False, data_format=data_format, name="conv")(inputs)
    x = keras.layers.Flatten(name="flat")(x)
    model = _masked(keras.Model(inputs, keras.layers.Dense(2, name="out")(x), name="m"))
    strategy = pruning.for_model(_channels(rates=[("conv", 0.25)]), model)
    weights = masking.masked_weights(model)
    weights["conv/kernel"] = np.array([[[[1.0, 0.1, 2.0, 3.0]]]])  # channel 1 has the smallest norm
    mask = strategy(weights, masking.masks_of(model))
    assert mask["conv/kernel"][..., 1].sum() == 0 and mask["conv/kernel"][..., [0, 2, 3]].all()
    rows = np.arange(4 * 3 * 4)
    channel = rows % 4 if data_format == "channels_last" else rows // 12  # (H, W, C) or (C, H, W) flattened
    assert mask["out/kernel"].any(axis=1).tolist() == (channel != 1).tolist()
    masking.apply_masks(model, mask)
    small, _ = export.shrink(model)
    assert small.get_layer("out").kernel.shape == (36, 2)
    _same_logits(small, model)


def test_a_channels_first_conv_with_bias_as_wide_as_its_filters_is_refused_not_pruned_wrong():
    # Keras's TensorFlow backend adds such a bias along the width: the unit reader refuses it
    inputs = keras.Input((1, 3, 4))
    x = keras.layers.Conv2D(4, 1, data_format="channels_first", name="conv")(inputs)
    model = _masked(keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(x))))
    with pytest.raises(HparamError, match=r"Channel pruning needs the model's unit groups: .*'functional.*/conv' "
                                          r"\(Conv2D\): .*adds its bias along the last axis") as info:
        pruning.for_model(_channels(), model)
    assert len(str(info.value).splitlines()) == 1 and "strict=False" not in str(info.value)
    with pytest.raises(export.ExportError, match=r"Cannot shrink: .*/conv' \(Conv2D\)"):
        export.shrink(model)


def test_leaky_relu_passes_pruning_and_shrinking():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="a"), keras.layers.LeakyReLU(name="lr"),
                              keras.layers.Dense(4, name="b"), keras.layers.ELU(name="elu"),
                              keras.layers.Dense(2, name="out")], name="leaky")
    model = _masked(model)
    _prune(model, _channels(0.4))
    small, report = export.shrink(model)
    assert [small.get_layer(n).units for n in ("a", "b", "out")] == [3, 2, 2]
    assert report.params_after < report.params_before
    _same_logits(small, model)


# ------------------------------------------------------------- whole groups


def test_a_residual_group_is_pruned_as_a_whole_in_every_member():
    model = _masked(residual_cnn())
    strategy = pruning.for_model(_channels(), model)
    groups = strategy.groups
    # the stem, its GroupNormalization (4 blocks of 2), the depthwise kernel and the separable
    # output are one group through the Add; the Conv2DTranspose and the hidden Dense their own
    assert {n: (g.blocks, g.width) for n, g in groups.items()} == {"cnn/stem": (4, 2), "cnn/up": (6, 1),
                                                                   "cnn/hidden": (10, 1)}
    mask = strategy(masking.masked_weights(model), masking.masks_of(model))
    stem = mask["stem/kernel"].any(axis=(0, 1, 2))
    assert stem.sum() == 4 and stem.reshape(4, 2).all(axis=1).sum() == 2  # two whole blocks of the GroupNorm
    assert mask["sep/pointwise_kernel"].any(axis=(0, 1, 2)).tolist() == stem.tolist()  # tied by the Add
    depthwise = mask["sep/depthwise_kernel"].any(axis=(0, 1, 3))  # (3, 3, 8, 2): the multiplier on the last axis
    assert depthwise.tolist() == stem.tolist()
    assert mask["sep/pointwise_kernel"].any(axis=(0, 1, 3)).reshape(8, 2).any(axis=1).tolist() == stem.tolist()
    assert mask["up/kernel"].any(axis=(0, 1, 2)).tolist() == stem.tolist()  # (2, 2, out, in): its input rows


def test_channel_pruning_and_the_shrunk_export_on_our_residual_cnn():
    model = _masked(residual_cnn())
    _prune(model, _channels(), levels=2)
    small, report = export.shrink(model)
    assert report.params_after < report.params_before
    assert small.get_layer("gn").groups == 1 and small.get_layer("gn").gamma.shape == (2,)
    assert small.get_layer("stem").filters == small.get_layer("sep").filters == 2
    assert small.get_layer("sep").depthwise_kernel.shape == (3, 3, 2, 2)
    assert small.get_layer("up").filters == 1 and small.get_layer("bn").gamma.shape == (1,)  # 6 -> 3 -> 1
    assert small.get_layer("hidden").units == 3 and small.get_layer("head").units == 4
    _same_logits(small, model)


@pytest.mark.parametrize("name,kw", [("resnet8", dict(width=8)), ("resnet20", dict(width=4)),
                                     ("vgg11", dict(input_shape=(32, 32, 3), num_classes=10))])
def test_zoo_convnets_get_channel_tickets_that_shrink(name, kw):
    model = _masked(models.get(name, seed=0, **kw))
    strategy = _prune(model, _channels(0.5, "global"))
    assert strategy.kept_whole == {f"{model.name}/output": "the model's outputs"}
    small, report = export.shrink(model)
    assert report.params_after < report.params_before
    _same_logits(small, model, batch=2)


def test_the_vit_prunes_attention_heads_and_mlp_units_and_keeps_its_stream():
    model = _masked(models.get("vit_tiny", seed=0, depth=2))
    strategy = _prune(model, _channels(0.5))
    assert sorted(strategy.groups) == ["vit_tiny/block1_attn:heads", "vit_tiny/block1_mlp1",
                                       "vit_tiny/block2_attn:heads", "vit_tiny/block2_mlp1"]
    assert "LayerNormalization" in strategy.kept_whole["vit_tiny/patch_embed"]
    small, report = export.shrink(model)
    assert small.get_layer("block1_attn").num_heads == small.get_layer("block2_attn").num_heads == 2
    assert small.get_layer("block1_mlp1").units == 64
    assert report.params_after < report.params_before
    _same_logits(small, model, batch=2)


def test_random_channels_keep_the_counts_of_every_group():
    model = _masked(residual_cnn())
    strategy = _prune(model, _channels())
    level = masking.masks_of(model)
    groups = strategy.groups
    for seed in range(3):
        control = strategy.random_like(level, seed=seed)
        assert {p: int(m.sum()) for p, m in control.items() if p != "hidden/kernel"} != {} and all(
            g.alive(control).sum() == g.alive(level).sum() for g in groups.values())
        assert any(not np.array_equal(g.alive(control), g.alive(level)) for g in groups.values())


def test_every_group_keeps_a_unit():
    model = _chain()
    strategy = _prune(model, _channels(0.9), levels=3)
    assert [int(g.alive(masking.masks_of(model)).sum()) for g in strategy.groups.values()] == [1, 1]


# ------------------------------------------------------------------ refusals


def test_units_read_by_an_unmasked_head_are_refused_with_the_real_cause_and_the_flags():
    model = _masked(keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="fc"),
                                      keras.layers.Dense(2, name="head")], name="net"), exclude_output=True)
    with pytest.raises(HparamError, match=r"the units of 'net/fc' are read by 'net/head/kernel', which is not masked "
                                          r".*ModelHparams.prune.*layer_rates=fc:0") as info:
        pruning.for_model(_channels(), model).check()
    assert len(str(info.value).splitlines()) == 1
    with pytest.raises(HparamError, match="no unit group to prune"):
        pruning.for_model(_channels(rates=[("fc", 0)]), model).check()


def test_a_rate_for_a_group_that_cannot_be_pruned_names_why():
    model = _masked(models.get("vit_tiny", seed=0, depth=1))
    with pytest.raises(HparamError, match=r"layer_rates=patch_embed:0.5 asks to prune the units of "
                                          r"'vit_tiny/patch_embed', which cannot be pruned: .*LayerNormalization"):
        pruning.for_model(_channels(rates=[("patch_embed", 0.5)]), model).check()


def test_layers_the_reader_cannot_place_are_all_named_in_one_line_by_pruning_and_shrinking():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(6, name="fc")(inputs)
    x = keras.layers.Reshape((3, 2), name="fold")(x)
    x = keras.layers.Permute((2, 1), name="swap")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Flatten(name="flat")(x)), name="odd")
    _masked(model)
    both = r"cannot place 2 layers: 'odd/fold' \(Reshape\).*'odd/swap' \(Permute\)"
    for error, act in ((export.ExportError, lambda: export.shrink(model)),
                       (HparamError, lambda: pruning.for_model(_channels(), model))):
        with pytest.raises(error, match=both) as info:
            act()
        assert len(str(info.value).splitlines()) == 1


def test_a_subclassed_model_is_refused_in_one_line():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__(name="sub")
            self.fc = keras.layers.Dense(3)

        def call(self, x):
            return self.fc(x)

    model = Sub()
    model(np.zeros((1, 4), "float32"))
    masking.masked(model)
    with pytest.raises(HparamError, match=r"model 'sub' \(Sub\): it is not a built Sequential or functional model"):
        pruning.for_model(_channels(), model)
    with pytest.raises(export.ExportError, match=r"model 'sub' \(Sub\)"):
        export.shrink(model)


def test_channel_mask_removes_dead_blocks_from_every_member():
    model = _chain()
    strategy = pruning.for_model(_channels(), model)
    mask = channels_lib.channel_mask(masking.masks_of(model), {"net/fc1": np.array([True, False, True, True])},
                                     strategy.groups)
    assert mask["net/fc1/kernel"].any(axis=0).tolist() == [True, False, True, True]
    assert mask["net/fc2/kernel"].any(axis=1).tolist() == [True, False, True, True]
    assert mask["net/fc2/kernel"].sum() == 9 and mask["net/out/kernel"].all()


def test_a_concatenation_splits_the_readers_rows_between_its_groups_and_prelu_is_sliced():
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, name="a")(inputs)
    b = keras.layers.Conv2D(6, 3, name="b")(inputs)
    x = keras.layers.Concatenate(name="cat")([a, b])
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = keras.layers.Flatten(name="flat")(keras.layers.Conv2D(5, 3, name="c")(x))
    model = _masked(keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="catnet"))
    strategy = _prune(model, _channels(0.5))
    assert {n: g.blocks for n, g in strategy.groups.items()} == {"catnet/a": 4, "catnet/b": 6, "catnet/c": 5}
    rows = masking.masks_of(model)["c/kernel"].any(axis=(0, 1, 3))  # c reads a's 4 channels, then b's 6
    assert rows[:4].tolist() == strategy.groups["catnet/a"].alive(masking.masks_of(model)).tolist()
    assert rows[4:].tolist() == strategy.groups["catnet/b"].alive(masking.masks_of(model)).tolist()
    small, _ = export.shrink(model)
    assert (small.get_layer("a").filters, small.get_layer("b").filters, small.get_layer("c").filters) == (2, 3, 3)
    assert small.get_layer("prelu").alpha.shape == (1, 1, 5)
    _same_logits(small, model)

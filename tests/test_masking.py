"""tflth.masking: the Masks value type, variable selection, in-place masks on any model."""

import keras
import numpy as np
import pytest

import layer_zoo
import tflth
from tflth import masking
from tflth.masking import MaskError, Masks


def _mlp(name="net"):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"),
                             keras.layers.LayerNormalization(name="norm"), keras.layers.Dense(2, name="output")],
                            name=name)


def test_masks_convert_check_and_refuse_bad_values():
    m = Masks({"a/kernel": [[1, 0], [0, 1]], "b/kernel": np.array([True, False])})
    assert m["a/kernel"].dtype == bool and not m["a/kernel"].flags.writeable
    assert m == {"a/kernel": np.eye(2, dtype=bool), "b/kernel": [True, False]}
    with pytest.raises(MaskError, match="'x' holds values other than 0/1"):
        Masks({"x": [0.5, 1.0]})
    with pytest.raises(MaskError, match="variable paths"):
        Masks({"": [1]})
    with pytest.raises(MaskError, match=r"Mask 'a/kernel' has shape \(2, 2\); the variable has shape \(3, 2\)"):
        m.check({"a/kernel": (3, 2), "b/kernel": (2,)})
    with pytest.raises(MaskError, match=r"Masks name \['b/kernel'\], not masked variables"):
        m.check({"a/kernel": (2, 2)})
    with pytest.raises(MaskError, match=r"missing \['c/kernel'\]"):
        m.check({"a/kernel": (2, 2), "b/kernel": (2,), "c/kernel": (1,)})
    m.check({"a/kernel": (2, 2), "b/kernel": (2,), "c/kernel": (1,)}, strict=False)


def test_masks_file_round_trip_and_legacy_keys(tmp_path):
    m = Masks({"fc1/kernel": np.eye(3, dtype=bool), "block/fc/kernel": [1, 0]})
    m.save(tmp_path / "mask.npz")
    assert Masks.load(tmp_path / "mask.npz") == m
    np.savez(tmp_path / "old.npz", fc1=np.eye(3, dtype=bool))  # tflth 0.1: keyed by layer path
    aliases = masking.legacy_aliases(["fc1/kernel", "sep/depthwise_kernel", "sep/pointwise_kernel"])
    assert aliases == {"fc1": "fc1/kernel"}  # ambiguous layers (two variables) get no alias
    assert list(Masks.load(tmp_path / "old.npz", aliases=aliases)) == ["fc1/kernel"]
    with pytest.raises(MaskError, match="No mask file"):
        Masks.load(tmp_path / "none.npz")


def test_density_and_apply_to_by_hand():
    m = Masks({"a": [[1, 0, 0], [1, 1, 0]], "b": [0, 0]})
    report = m.density()
    assert (report.total, report.survivors) == (8, 3)
    assert [(l.path, l.density) for l in report.layers] == [("a", 0.5), ("b", 0.0)]
    out = m.apply_to({"a": np.full((2, 3), 2.0), "b": np.ones(2), "c": np.ones(1)})
    assert out["a"].tolist() == [[2, 0, 0], [2, 2, 0]] and out["b"].tolist() == [0, 0] and out["c"].tolist() == [1]
    with pytest.raises(MaskError, match="No weights for masked variable 'a'"):
        m.apply_to({"b": np.ones(2)})


@pytest.mark.parametrize("pattern, path, expected", [
    ("output", "output/kernel", True), ("output", "net/output/kernel", True), ("conv*", "conv3/kernel", True),
    ("*/query/kernel", "mha/query/kernel", True), ("fc1", "net/fc1/kernel", True), ("fc1", "net/fc10/kernel", False),
    ("output", "output_norm/gamma", False), ("*/bias", "fc/kernel", False), ("mha", "mha/key/kernel", False),
])
def test_path_matches(pattern, path, expected):
    assert masking.path_matches(pattern, path) is expected


def test_select_default_output_plus_and_minus():
    model = _mlp()
    assert list(masking.select(model)) == ["net/fc/kernel", "net/output/kernel"]
    assert list(masking.select(model, exclude_output=True)) == ["net/fc/kernel"]
    assert list(masking.select(model, ["!output"])) == ["net/fc/kernel"]
    assert list(masking.select(model, ["fc", "+*/bias"])) == ["net/fc/kernel", "net/fc/bias", "net/output/bias"]
    assert list(masking.select(model, ["+norm/gamma"])) == ["net/norm/gamma"]
    with pytest.raises(MaskError, match="Pattern 'conv\\*' matches no maskable variable"):
        masking.select(model, ["conv*"])
    with pytest.raises(MaskError, match="'\\+nothing' matches no trainable variable"):
        masking.select(model, ["+nothing"])
    with pytest.raises(MaskError, match="'!conv' removes nothing"):
        masking.select(model, ["!conv"])


def test_subclassed_model_masks_in_place_and_output_layer_is_its_head():
    model = layer_zoo.subclassed()
    head = model.head.kernel.path
    assert masking.output_layer_path(model) == masking.layer_path_of(head)
    assert tflth.masked(model, exclude_output=True) is model
    masks = masking.masks_of(model)
    assert head not in masks and model.proj.kernel.path in masks
    assert model.attn._query_dense.kernel.path in masks
    keep = {p: np.zeros(m.shape, bool) for p, m in masks.items()}
    masking.apply_masks(model, keep)
    assert all(np.all(w == 0) for w in masking.masked_weights(model).values())
    # masks are not weights: the model's own variable list is unchanged
    assert not any("mask" in v.path for v in model.weights)


def test_apply_masks_errors_change_nothing():
    model = _mlp()
    before = [v.numpy() for v in model.weights]
    with pytest.raises(MaskError, match="not masked variables"):
        masking.apply_masks(model, {"net/nope/kernel": np.ones((4, 3))})
    with pytest.raises(MaskError, match="has shape"):
        masking.apply_masks(model, {"net/fc/kernel": np.ones((3, 3))})
    assert not masking.has_masks(model)
    masking.apply_masks(model, {"net/fc/kernel": np.ones((4, 3))})
    with pytest.raises(MaskError, match="not masked variables"):  # the masked set is fixed by the first call
        masking.apply_masks(model, {"net/output/kernel": np.ones((3, 2))}, strict=False)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))


def test_remove_masks_bakes_zeros_and_restores_constraints():
    model = _mlp()
    kernel = model.get_layer("fc").kernel
    masking.apply_masks(model, {"net/fc/kernel": np.eye(4, 3)})
    assert isinstance(kernel.constraint, masking.MaskConstraint)
    masking.remove_masks(model)
    assert kernel.constraint is None and not masking.has_masks(model)
    assert int(np.count_nonzero(kernel.numpy())) == 3


def test_user_kernel_constraint_runs_before_the_mask():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_constraint=keras.constraints.NonNeg(),
                                                                     name="fc")], name="c")
    masking.apply_masks(model, {"c/fc/kernel": np.eye(4, 3)})
    model.compile(keras.optimizers.SGD(0.5), "mse")
    model.fit(np.ones((8, 4)), -np.ones((8, 3)), epochs=3, verbose=0)
    k = model.get_layer("fc").kernel.numpy()
    assert np.all(k >= 0) and np.all(k[~np.eye(4, 3, dtype=bool)] == 0)


def test_lora_layers_are_not_maskable():
    model = _mlp()
    model.get_layer("fc").enable_lora(2)
    assert "net/fc/kernel" not in masking.maskable_variables(model)
    with pytest.raises(MaskError, match="LoRA"):
        masking.select(model, ["+fc/kernel"])


def test_unbuilt_model_is_refused():
    with pytest.raises(MaskError, match="not built"):
        masking.maskable_variables(keras.Sequential([keras.layers.Dense(2)]))


def test_masks_identical_across_mirrored_replicas(mirrored_strategy):
    strategy = mirrored_strategy
    with strategy.scope():
        model = _mlp("mirrored")
        rng = np.random.default_rng(8)
        masks = {p: rng.random(m.shape) < 0.3 for p, m in masking.select(model).items()}
        masking.apply_masks(model, masks)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model.fit(x, np.arange(64) % 2, batch_size=8, epochs=2, verbose=0)
    for path, (variable, mask) in masking.masked_variables(model).items():
        mask_copies = [v.numpy() for v in strategy.experimental_local_results(mask.value)]
        kernel_copies = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
        assert len(mask_copies) == 2 and np.array_equal(mask_copies[0], mask_copies[1]), path
        assert np.array_equal(kernel_copies[0], kernel_copies[1]), path
        assert np.all(kernel_copies[0][~masks[path]] == 0.0), path

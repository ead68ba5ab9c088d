"""Masks as data: read, write, shape checks, npz round trip, density counts."""

import keras
import numpy as np
import pytest

import tflth
from tflth import masks as masks_lib


def _model():
    inner = keras.Sequential([keras.Input((6,)), tflth.MaskedDense(5, name="inner_fc")], name="block")
    inputs = keras.Input((4,))
    x = tflth.MaskedDense(6, name="fc1")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = inner(x)
    outputs = tflth.MaskedDense(2, name="output")(x)
    return keras.Model(inputs, outputs)


def test_paths_cover_nested_models_and_only_kernels():
    model = _model()
    assert list(masks_lib.prunable_layers(model)) == ["fc1", "block/inner_fc", "output"]
    masks = masks_lib.get_masks(model)
    assert {p: m.shape for p, m in masks.items()} == {"fc1": (4, 6), "block/inner_fc": (6, 5), "output": (5, 2)}
    assert all(m.dtype == bool and m.all() for m in masks.values())


def test_set_get_round_trip_zeroes_pruned_kernel_entries():
    model = _model()
    rng = np.random.default_rng(0)
    masks = {p: rng.random(m.shape) < 0.5 for p, m in masks_lib.get_masks(model).items()}
    masks_lib.set_masks(model, masks)
    got = masks_lib.get_masks(model)
    kernels = masks_lib.get_kernels(model)
    for p in masks:
        assert np.array_equal(got[p], masks[p])
        assert np.all(kernels[p][~masks[p]] == 0.0)
        assert np.all(kernels[p][masks[p]] != 0.0)


def test_wrong_shape_names_the_layer():
    model = _model()
    masks = masks_lib.get_masks(model)
    masks["block/inner_fc"] = np.ones((5, 6), bool)
    with pytest.raises(masks_lib.MaskError, match=r"block/inner_fc.*\(5, 6\).*expected \(6, 5\)"):
        masks_lib.set_masks(model, masks)


def test_unknown_and_missing_layers():
    model = _model()
    with pytest.raises(ValueError, match=r"unknown layers \['nope'\]"):
        masks_lib.set_masks(model, {"nope": np.ones((1,), bool)})
    with pytest.raises(ValueError, match="missing layers"):
        masks_lib.set_masks(model, {"fc1": np.ones((4, 6), bool)})
    masks_lib.set_masks(model, {"fc1": np.zeros((4, 6), bool)}, strict=False)
    assert not masks_lib.get_masks(model)["fc1"].any()


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    masks = {"a/b": rng.random((3, 4)) < 0.5, "c": rng.random((2, 2, 1, 3)) < 0.5}
    path = str(tmp_path / "sub" / "mask.npz")
    masks_lib.save_masks(path, masks)
    loaded = masks_lib.load_masks(path)
    assert loaded.keys() == masks.keys()
    assert all(np.array_equal(loaded[k], masks[k]) for k in masks)
    assert [f.name for f in (tmp_path / "sub").iterdir()] == ["mask.npz"]  # no temp file left
    with pytest.raises(ValueError, match="No mask file"):
        masks_lib.load_masks(str(tmp_path / "missing.npz"))


def test_density_report_counts():
    masks = {"fc1": np.array([[1, 0, 0], [1, 1, 0]], bool), "output": np.array([[1], [0]], bool)}
    report = masks_lib.density_report(masks)
    assert [(l.path, l.total, l.survivors) for l in report.layers] == [("fc1", 6, 3), ("output", 2, 1)]
    assert (report.total, report.survivors) == (8, 4)
    assert report.density == 0.5
    assert report.to_dict()["layers"]["fc1"]["density"] == 0.5
    assert "TOTAL" in report.table() and "50.00%" in report.table()


def test_apply_mask():
    w = {"fc1": np.array([[1.0, 2.0], [3.0, 4.0]]), "bias": np.array([5.0])}
    out = masks_lib.apply_mask(w, {"fc1": np.array([[True, False], [False, True]])})
    assert np.array_equal(out["fc1"], [[1.0, 0.0], [0.0, 4.0]])
    assert out["bias"] is w["bias"]
    with pytest.raises(ValueError, match="shape"):
        masks_lib.apply_mask(w, {"fc1": np.ones((3,), bool)})

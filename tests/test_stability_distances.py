"""Distances between two copies, checked against numbers computed by hand."""

import json
import math

import numpy as np
import pytest

from tflth.stability import distances as D


def test_l2_of_a_3_4_5_triangle():
    w1 = {"k": np.array([[3.0, 0.0], [0.0, 4.0]], np.float32)}
    w2 = {"k": np.zeros((2, 2), np.float32)}
    d = D.compare_weights(w1, w2)
    row = d["k"]
    assert row.count == 4
    assert row.l2 == 5.0 and row.norm1 == 5.0 and row.norm2 == 0.0
    assert row.relative == pytest.approx(5.0 / 2.5)  # mean norm (5 + 0) / 2
    assert math.isnan(row.cosine)  # undefined against a zero vector
    assert d.total.l2 == 5.0
    assert d.to_dict()["layers"]["k"]["cosine"] is None


def test_total_is_over_the_concatenation_not_a_sum_of_ratios():
    w1 = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 2.0, 2.0])}
    w2 = {"a": np.array([1.0, 1.0]), "b": np.array([0.0, 2.0, 0.0])}
    d = D.compare_weights(w1, w2)
    assert d["a"].l2 == 1.0 and d["b"].l2 == 2.0
    assert d.total.l2 == pytest.approx(math.sqrt(1 + 4))
    n1, n2 = math.sqrt(1 + 8), math.sqrt(2 + 4)
    assert d.total.norm1 == pytest.approx(n1) and d.total.norm2 == pytest.approx(n2)
    assert d.total.relative == pytest.approx(math.sqrt(5) / ((n1 + n2) / 2))
    assert d.total.cosine == pytest.approx((1 + 4) / (n1 * n2))
    assert d["a"].cosine == pytest.approx(1 / math.sqrt(2))
    assert d.total.count == 5
    assert d.total.relative != pytest.approx(d["a"].relative + d["b"].relative)


def test_masked_entries_are_excluded():
    w1 = {"k": np.array([[1.0, 100.0], [2.0, 3.0]]), "bias": np.array([1.0, 1.0])}
    w2 = {"k": np.array([[1.0, -50.0], [5.0, 7.0]]), "bias": np.array([1.0, 2.0])}
    masks = {"k": np.array([[True, False], [True, True]])}
    d = D.compare_weights(w1, w2, masks)
    assert d["k"].count == 3
    assert d["k"].l2 == pytest.approx(5.0)  # (0, 3, 4)
    assert d["k"].norm1 == pytest.approx(math.sqrt(1 + 4 + 9))
    assert d["bias"].count == 2 and d["bias"].l2 == 1.0  # unmasked: whole array
    assert d.total.l2 == pytest.approx(math.sqrt(26))
    assert d.masked == ("k",)
    # float 0/1 masks (as tflth stores them) work the same
    d2 = D.compare_weights(w1, w2, {"k": masks["k"].astype(np.float32)})
    assert d2.total == d.total


def test_identical_copies():
    rng = np.random.default_rng(0)
    w = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
    d = D.compare_weights(w, {k: v.copy() for k, v in w.items()}, reference={k: v + 1 for k, v in w.items()})
    for row in d.layers + (d.total,):
        assert row.l2 == 0.0 and row.relative == 0.0 and row.relative_to_displacement == 0.0
        assert row.cosine == pytest.approx(1.0)
    # the same copy with itself as reference: every ratio's denominator is 0 -> 0.0
    z = D.compare_weights(w, w, reference=w)
    assert z.total.displacement == 0.0 and z.total.relative_to_displacement == 0.0


def test_cosine_of_opposite_and_scaled_vectors():
    a = {"v": np.array([1.0, 2.0, 3.0])}
    assert D.compare_weights(a, {"v": -a["v"]})["v"].cosine == pytest.approx(-1.0)
    d = D.compare_weights(a, {"v": 3 * a["v"]})
    assert d["v"].cosine == pytest.approx(1.0)
    assert d["v"].relative == pytest.approx(2 * math.sqrt(14) / (2 * math.sqrt(14)))  # |2a| / mean(|a|, |3a|)


def test_normalised_by_how_far_training_moved():
    wk = {"w": np.array([0.0, 0.0]), "u": np.array([1.0])}
    w1 = {"w": np.array([3.0, 4.0]), "u": np.array([1.0])}    # moved 5
    w2 = {"w": np.array([0.0, 1.0]), "u": np.array([1.0])}    # moved 1
    d = D.compare_weights(w1, w2, reference=wk)
    row = d["w"]
    assert row.displacement1 == 5.0 and row.displacement2 == 1.0 and row.displacement == 3.0
    assert row.l2 == pytest.approx(math.sqrt(9 + 9))
    assert row.relative_to_displacement == pytest.approx(math.sqrt(18) / 3.0)
    assert d["u"].displacement == 0.0 and d["u"].relative_to_displacement == 0.0
    assert d.total.displacement == 3.0
    # the reference may hold more arrays than are compared, and is masked like the copies
    d2 = D.compare_weights(w1, w2, {"w": np.array([True, False])}, reference={**wk, "other": np.ones(3)})
    assert d2["w"].displacement1 == 3.0 and d2["w"].displacement2 == 0.0
    assert d2["w"].relative_to_displacement == pytest.approx(3.0 / 1.5)


def test_without_reference_the_fields_are_none_and_to_dict_is_json():
    d = D.compare_weights({"a": np.ones(3)}, {"a": np.zeros(3)}, {"a": np.array([1, 0, 1])})
    assert d.total.displacement is None and d.total.relative_to_displacement is None
    out = json.loads(json.dumps(d.to_dict(), allow_nan=False))
    assert out["total"]["l2"] == pytest.approx(math.sqrt(2))
    assert out["layers"]["a"]["count"] == 2 and out["masked"] == ["a"]


def test_stability_to_pruning_restricts_the_full_network_to_the_mask():
    mask = {"k": np.array([True, False, True])}
    sub = {"k": np.array([1.0, 0.0, 2.0])}
    full = {"k": np.array([4.0, 9.0, 6.0])}
    d = D.stability_to_pruning(sub, full, mask)
    assert d["k"].count == 2
    assert d["k"].l2 == pytest.approx(5.0)  # (3, 4); the pruned 9.0 is left out
    assert d["k"].norm2 == pytest.approx(math.sqrt(16 + 36))
    with pytest.raises(ValueError, match="masks"):
        D.stability_to_pruning(sub, full, None)


def test_select_weights():
    w = {"fc1/kernel": np.ones(2), "fc1/bias": np.ones(1), "fc1/mask": np.ones(2)}
    assert list(D.select_weights(w, ["fc1/kernel"])) == ["fc1/kernel"]
    with pytest.raises(ValueError, match="fc2/kernel"):
        D.select_weights(w, ["fc2/kernel"])


def test_mismatched_inputs_raise_naming_the_layer():
    a = {"fc1": np.zeros((2, 3)), "fc2": np.zeros(3)}
    with pytest.raises(ValueError, match="fc2"):
        D.compare_weights(a, {"fc1": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="fc3"):
        D.compare_weights(a, {**a, "fc3": np.zeros(1)})
    with pytest.raises(ValueError, match="'fc1'.*shape"):
        D.compare_weights(a, {"fc1": np.zeros((3, 2)), "fc2": np.zeros(3)})
    with pytest.raises(ValueError, match="Mask for 'fc1'"):
        D.compare_weights(a, a, {"fc1": np.ones(6, bool)})
    with pytest.raises(ValueError, match="fc9"):
        D.compare_weights(a, a, {"fc9": np.ones(3, bool)})
    with pytest.raises(ValueError, match="'fc2'.*reference"):
        D.compare_weights(a, a, reference={"fc1": np.zeros((2, 3)), "fc2": np.zeros(4)})
    with pytest.raises(ValueError, match="reference lacks"):
        D.compare_weights(a, a, reference={"fc1": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="'step'.*int64"):
        D.compare_weights({"step": np.array([3])}, {"step": np.array([3])})

"""The α grid, interpolation (exact endpoints and pruned zeros), barriers, disagreement."""

import json

import numpy as np
import pytest

from tflth.conventions import STABLE_THRESHOLD
from tflth.stability import curve as C


# ------------------------------------------------------------------ alphas

def test_paper_grid_is_30_evenly_spaced_points_in_0_1():
    a = C.alphas()
    assert a.shape == (30,) and a[0] == 0.0 and a[-1] == 1.0
    np.testing.assert_array_equal(a, np.linspace(0.0, 1.0, 30))
    assert np.allclose(np.diff(a), 1 / 29)
    np.testing.assert_array_equal(C.alphas(2), [0.0, 1.0])


def test_extended_grid_contains_0_and_1_exactly():
    a = C.alphas(5, -0.5, 1.5)  # 0 and 1 fall on the even grid
    np.testing.assert_array_equal(a, [-0.5, 0.0, 0.5, 1.0, 1.5])
    b = C.alphas(30, -0.5, 1.5)  # they do not: inserted
    assert 0.0 in b and 1.0 in b
    assert len(b) == 32 and np.all(np.diff(b) > 0)
    assert b[0] == -0.5 and b[-1] == 1.5
    c = C.alphas(31, -0.2, 1.0)  # step 0.04: 0 hits the grid up to rounding -> snapped
    assert len(c) == 31 and 0.0 in c and c[-1] == 1.0


def test_bad_grids():
    with pytest.raises(ValueError, match="at least 2"):
        C.alphas(1)
    with pytest.raises(ValueError, match="integer"):
        C.alphas(2.5)
    with pytest.raises(ValueError, match="must contain \\[0, 1\\]"):
        C.alphas(10, 0.2, 1.0)
    with pytest.raises(ValueError, match="must contain \\[0, 1\\]"):
        C.alphas(10, 0.0, 0.9)


# ------------------------------------------------------------- interpolate

def _pair(seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((20, 30)) < 0.3
    w1 = {"fc/kernel": (rng.normal(size=(20, 30)) * mask).astype(np.float32),
          "fc/bias": rng.normal(size=30).astype(np.float32),
          "fc/mask": mask.astype(np.float32),
          "counter": np.array(7, np.int64)}
    w2 = {"fc/kernel": (rng.normal(size=(20, 30)) * mask).astype(np.float32),
          "fc/bias": rng.normal(size=30).astype(np.float32),
          "fc/mask": mask.astype(np.float32),
          "counter": np.array(7, np.int64)}
    return w1, w2, mask


def test_endpoints_are_the_copies_bit_for_bit():
    w1, w2, _ = _pair()
    for alpha, target in ((0.0, w1), (1.0, w2)):
        out = C.interpolate(w1, w2, alpha)
        for k in w1:
            assert out[k].dtype == target[k].dtype
            assert out[k].tobytes() == target[k].tobytes(), (alpha, k)
    # float64 arrays where a + 1·(b − a) != b: the endpoints are special-cased
    a, b = np.array([0.1257302210933933]), np.array([0.0011750275636470654])
    assert (a + 1.0 * (b - a))[0] != b[0]
    assert C.interpolate_array(a, b, 1.0)[0] == b[0] and C.interpolate_array(a, b, 0.0)[0] == a[0]
    # and (1 − α)·a + α·a != a in general, while entries equal in both stay exact here
    same = np.random.default_rng(2).normal(size=1000)
    assert np.any((1 - 0.7) * same + 0.7 * same != same)
    assert np.array_equal(C.interpolate_array(same, same.copy(), 0.7), same)


def test_pruned_entries_and_equal_entries_stay_exact_at_every_alpha():
    w1, w2, mask = _pair(1)
    for alpha in np.concatenate([C.alphas(), C.alphas(30, -0.5, 1.5)]):
        out = C.interpolate(w1, w2, alpha)
        assert np.all(out["fc/kernel"][~mask] == 0.0)
        assert out["fc/mask"].tobytes() == w1["fc/mask"].tobytes()
        assert out["counter"] == 7 and out["counter"].dtype == np.int64
        expected = (1 - alpha) * w1["fc/bias"].astype(np.float64) + alpha * w2["fc/bias"].astype(np.float64)
        np.testing.assert_allclose(out["fc/bias"], expected, rtol=1e-6, atol=1e-6)
        assert out["fc/bias"].dtype == np.float32


def test_midpoint_by_hand_and_inputs_untouched():
    w1 = {"a": np.array([0.0, 2.0, 4.0])}
    w2 = {"a": np.array([2.0, 2.0, 0.0])}
    out = C.interpolate(w1, w2, 0.25)
    np.testing.assert_array_equal(out["a"], [0.5, 2.0, 3.0])
    assert out["a"] is not w1["a"]
    np.testing.assert_array_equal(w1["a"], [0.0, 2.0, 4.0])
    ext = C.interpolate(w1, w2, 1.5)
    np.testing.assert_array_equal(ext["a"], [3.0, 2.0, -2.0])


def test_interpolation_refuses_mismatches():
    w1, w2, _ = _pair()
    with pytest.raises(ValueError, match="fc/bias"):
        C.interpolate(w1, {**w2, "fc/bias": np.zeros(31, np.float32)}, 0.5)
    with pytest.raises(ValueError, match="fc/bias.*dtype"):
        C.interpolate(w1, {**w2, "fc/bias": w2["fc/bias"].astype(np.float64)}, 0.5)
    with pytest.raises(ValueError, match="only in the second \\['extra'\\]"):
        C.interpolate(w1, {**w2, "extra": np.zeros(1)}, 0.5)
    with pytest.raises(ValueError, match="'counter' is a non-float"):
        C.interpolate(w1, {**w2, "counter": np.array(8, np.int64)}, 0.5)
    with pytest.raises(ValueError, match="non-float"):
        C.interpolate_array(np.array([True, False]), np.array([True, True]), 0.5)
    with pytest.raises(ValueError, match="finite"):
        C.interpolate(w1, w2, float("nan"))


# ---------------------------------------------------------------- barriers

def test_flat_curve_has_zero_instability():
    a = C.alphas()
    r = C.summarize_curve(a, np.full(30, 0.08), np.full(30, 0.3))
    assert r.instability == 0.0 and r.loss_barrier == 0.0
    assert r.instability < STABLE_THRESHOLD


def test_constructed_curve_barrier_by_hand():
    a = C.alphas(11)  # 0, 0.1, ..., 1
    errors = np.array([0.10, 0.12, 0.20, 0.35, 0.40, 0.42, 0.38, 0.30, 0.20, 0.15, 0.14])
    losses = np.linspace(0.5, 0.7, 11)
    losses[7] = 2.0
    r = C.summarize_curve(a, errors, losses)
    assert r.instability == pytest.approx(0.42 - (0.10 + 0.14) / 2)  # 0.30
    assert r.max_error_alpha == pytest.approx(0.5)
    assert r.loss_barrier == pytest.approx(2.0 - (0.5 + 0.7) / 2)
    assert r.endpoint_errors == (0.10, 0.14) and r.endpoint_losses == (0.5, 0.7)
    assert r.instability >= STABLE_THRESHOLD
    # order of the points does not matter
    perm = np.random.default_rng(0).permutation(11)
    assert C.summarize_curve(a[perm], errors[perm], losses[perm]) == r
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["instability"] == pytest.approx(0.30) and len(d["alphas"]) == 11


def test_monotone_curve_barrier_is_half_the_endpoint_gap():
    a = C.alphas(5)
    assert C.barrier(a, [0.1, 0.11, 0.12, 0.13, 0.14]) == pytest.approx(0.02)


def test_points_outside_0_1_do_not_count():
    a = C.alphas(5, -0.5, 1.5)
    errors = [0.9, 0.1, 0.3, 0.1, 0.9]
    r = C.summarize_curve(a, errors)
    assert r.instability == pytest.approx(0.2) and r.max_error_alpha == 0.5
    assert r.loss_barrier is None and r.to_dict()["losses"] is None


def test_barrier_needs_the_endpoints():
    with pytest.raises(ValueError, match="α=1"):
        C.summarize_curve([0.0, 0.5, 0.9], [0.1, 0.2, 0.1])
    with pytest.raises(ValueError, match="one value per α"):
        C.summarize_curve([0.0, 1.0], [0.1])
    with pytest.raises(ValueError, match="not distinct"):
        C.barrier([0.0, 0.5, 0.5, 1.0], [0.1, 0.2, 0.2, 0.1])
    with pytest.raises(ValueError, match="losses|one value per α"):
        C.summarize_curve([0.0, 1.0], [0.1, 0.1], [0.1])


# ------------------------------------------------------------ disagreement

def test_disagreement_labels_and_logits():
    assert C.disagreement(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])) == 0.5
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.5]])
    assert C.disagreement(logits, np.array([0, 0, 0])) == pytest.approx(1 / 3)
    assert C.disagreement(logits, logits * 2) == 0.0
    with pytest.raises(ValueError, match="examples"):
        C.disagreement(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer labels"):
        C.disagreement(np.array([0.5, 1.0]), np.array([0, 1]))
    with pytest.raises(ValueError, match="no examples"):
        C.disagreement(np.array([], np.int64), np.array([], np.int64))

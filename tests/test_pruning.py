"""Pruning strategies: exact counts, layer overrides, ties, no regrowth, random controls."""

import numpy as np
import pytest

from tflth import pruning
from tflth.hparams import HparamError, PruningHparams

SHAPES = {"conv1": (3, 3, 1, 8), "fc1": (72, 30), "output": (30, 10)}  # 72 + 2160 + 300 = 2532
N = 72 + 2160 + 300


def _weights(seed=0):
    rng = np.random.default_rng(seed)
    return {p: rng.normal(size=s) for p, s in SHAPES.items()}


def _full():
    return {p: np.ones(s, bool) for p, s in SHAPES.items()}


def _count(mask):
    return {p: int(m.sum()) for p, m in mask.items()}


def test_global_levels_follow_hand_computed_counts():
    strategy = pruning.MagnitudePruning(PruningHparams(0.2, "global"))
    mask, remaining = _full(), N
    for level in range(1, 9):
        mask = strategy(_weights(level), mask)
        remaining -= int(round(0.2 * remaining))
        assert sum(_count(mask).values()) == remaining
        assert abs(remaining - round(0.8 ** level * N)) <= level


def test_global_count_sequence_by_hand():
    seq, r = [], N
    for _ in range(8):
        r -= int(round(0.2 * r))
        seq.append(r)
    assert seq == [2026, 1621, 1297, 1038, 830, 664, 531, 425]


def test_global_prunes_smallest_magnitudes_across_layers():
    w = {"a": np.array([[0.1, -5.0], [3.0, 0.2]]), "b": np.array([[-0.05, 4.0, 0.3, 6.0]])}
    mask = pruning.MagnitudePruning(PruningHparams(0.5, "global"))(w, {k: np.ones_like(v, bool) for k, v in w.items()})
    assert mask["a"].tolist() == [[False, True], [True, False]]
    assert mask["b"].tolist() == [[False, True, False, True]]  # 0.05, 0.1, 0.2, 0.3 go


def test_layerwise_prunes_each_layer_by_the_fraction():
    strategy = pruning.MagnitudePruning(PruningHparams(0.2, "layerwise"))
    mask = _full()
    expected = {p: int(np.prod(s)) for p, s in SHAPES.items()}
    for level in range(3):
        mask = strategy(_weights(level), mask)
        expected = {p: n - int(round(0.2 * n)) for p, n in expected.items()}
        assert _count(mask) == expected
    assert expected == {"conv1": 37, "fc1": 1106, "output": 154}  # 72→58→46→37


def test_layer_rate_overrides_and_exclusion():
    hp = PruningHparams(0.2, "layerwise", (("output", 0.1), ("conv*", 0.0)))
    mask = pruning.MagnitudePruning(hp)(_weights(), _full())
    assert _count(mask) == {"conv1": 72, "fc1": 2160 - 432, "output": 270}
    hp = PruningHparams(0.2, "global", (("output", 0.0),))
    mask = pruning.MagnitudePruning(hp)(_weights(), _full())
    assert _count(mask)["output"] == 300
    assert _count(mask)["conv1"] + _count(mask)["fc1"] == 2232 - int(round(0.2 * 2232))


def test_unknown_layer_in_rates_is_named():
    hp = PruningHparams(0.2, "global", (("outptu", 0.1),))
    with pytest.raises(HparamError, match=r"'outptu' matches no masked variable.*'fc1'"):
        pruning.MagnitudePruning(hp)(_weights(), _full())


def test_never_regrows_and_ties_are_deterministic():
    w = {"a": np.zeros((4, 5))}  # all ties
    strategy = pruning.MagnitudePruning(PruningHparams(0.5, "global"))
    m1 = strategy(w, {"a": np.ones((4, 5), bool)})
    assert m1["a"].ravel().tolist() == [False] * 10 + [True] * 10  # lowest positions go first
    big = {"a": np.full((4, 5), 100.0)}  # pruned weights now "large": must stay pruned
    m2 = strategy(big, m1)
    assert not np.any(m2["a"] & ~m1["a"])
    assert m2["a"].sum() == 5


def test_random_pruning_counts_and_seed():
    hp = PruningHparams(0.2, "layerwise")
    a = pruning.RandomPruning(hp, seed=1)(_weights(), _full())
    b = pruning.RandomPruning(hp, seed=1)(_weights(), _full())
    c = pruning.RandomPruning(hp, seed=2)(_weights(), _full())
    assert _count(a) == _count(pruning.MagnitudePruning(hp)(_weights(), _full()))
    assert all(np.array_equal(a[p], b[p]) for p in a) and not all(np.array_equal(a[p], c[p]) for p in a)


def test_random_like_matches_per_layer_density():
    target = pruning.MagnitudePruning(PruningHparams(0.5, "global"))(_weights(), _full())
    rand = pruning.random_like(target, seed=3)
    assert _count(rand) == _count(target)
    assert not np.array_equal(rand["fc1"], target["fc1"])

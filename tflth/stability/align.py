"""Aligning two networks' hidden units before comparing them: weight matching.

Two networks trained from different initialisations compute similar functions with their
hidden units in different orders; the straight line between their weights then crosses a
barrier that a reordering of one of them can remove (Ainsworth, Hayase & Srinivasa, *Git
Re-Basin*, ICLR 2023: weight matching). :func:`weight_matching` finds, for every unit group
of the model (:mod:`tflth.unit_graph`), the permutation of network B's units that best
matches network A's weights: coordinate descent over the groups, in a seeded random order,
each step solving one linear assignment (``scipy.optimize.linear_sum_assignment``) of

    L[i, j] = Σ over the group's members of ⟨A's entries of unit i, B's entries of unit j⟩

with B's other groups as currently permuted, until a whole round changes no group (or
``max_rounds``). :func:`align` applies the result to B's weights (and masks). A network
aligned to a permuted copy of itself gets the inverse permutation back exactly.

**Masks**: the weights are compared as they are (a ticket's pruned entries are zero), so
two tickets are matched on their surviving weights; their masks move with their weights
(``permute_arrays``).

Needs SciPy (``pip install 'tflth[align]'``).

Example::

    graph = tflth.unit_graph.unit_groups(model)
    perms = weight_matching(graph, weights_a, weights_b)       # {group name: permutation of B}
    aligned_b = tflth.permutations.permute_arrays(weights_b, perms, graph)
    tflth.stability.linear_path(model, weights_a, aligned_b, data, metrics=["accuracy"])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tflth.errors import InputError
from tflth.permutations import permutable_groups, permute_arrays
from tflth.unit_graph import UnitGraph, UnitGroup

__all__ = ["AlignError", "weight_matching", "align", "matching_cost"]


class AlignError(InputError):
    """Two weight sets that cannot be aligned (other variables or shapes), or SciPy missing."""


def _assignment():
    try:
        from scipy.optimize import linear_sum_assignment  # noqa: PLC0415
    except ImportError:
        raise AlignError("Weight matching needs SciPy (pip install 'tflth[align]').") from None
    return linear_sum_assignment


def _unit_rows(array: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """``array``'s entries of each unit as one row: ``(units, everything else)``."""
    moved = np.moveaxis(np.asarray(array, np.float64), axis, 0)
    return moved[positions].reshape(positions.shape[0], -1)


def matching_cost(group: UnitGroup, a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> np.ndarray:
    """``L[i, j]``: the summed inner products of unit i's entries in ``a`` with unit j's in
    ``b``, over the group's members present in both."""
    cost = np.zeros((group.units, group.units))
    for m in group.members:
        if m.path in a and m.path in b:
            cost += _unit_rows(a[m.path], m.axis, m.positions) @ _unit_rows(b[m.path], m.axis, m.positions).T
    return cost


def _check(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> None:
    if set(a) != set(b):
        raise AlignError(f"The two weight sets hold other variables: only in the first {sorted(set(a) - set(b))}, "
                         f"only in the second {sorted(set(b) - set(a))}.")
    for p in a:
        if np.shape(a[p]) != np.shape(b[p]):
            raise AlignError(f"'{p}' has shape {np.shape(a[p])} in the first weight set and {np.shape(b[p])} in "
                             "the second.")


def weight_matching(graph: UnitGraph, weights_a: Mapping[str, np.ndarray], weights_b: Mapping[str, np.ndarray],
                    seed: int = 0, max_rounds: int = 100) -> dict[str, np.ndarray]:
    """The permutations of B's unit groups that match B's weights to A's (Git Re-Basin's
    weight matching): ``{group name: perm}``, to apply with
    :func:`tflth.permutations.permute_arrays` (unit ``u`` of aligned B is unit ``perm[u]`` of
    B). Groups that cannot be permuted keep their order; a group with ``granularity`` g > 1
    is matched block by block.

    Args:
        graph: the model's :func:`tflth.unit_graph.unit_groups`.
        weights_a, weights_b: ``{variable path: array}`` of the two networks (the same
            variables and shapes).
        seed: the order in which groups are visited in each round.
        max_rounds: rounds of coordinate descent at most.
    """
    _check(weights_a, weights_b)
    solve = _assignment()
    groups = permutable_groups(graph)
    perms = {name: np.arange(g.units) for name, g in groups.items()}
    rng = np.random.default_rng(seed)
    names = list(groups)
    for _ in range(int(max_rounds)):
        changed = False
        for name in rng.permutation(names):
            group = groups[name]
            others = {n: p for n, p in perms.items() if n != name}
            b = permute_arrays(weights_b, others, graph)
            cost = matching_cost(group, weights_a, b)
            g = group.granularity
            if g > 1:  # blocks move whole: the cost of block I onto block J
                blocks = group.units // g
                cost = cost.reshape(blocks, g, blocks, g).trace(axis1=1, axis2=3)
            _, columns = solve(cost, maximize=True)
            new = (columns[:, None] * g + np.arange(g)).ravel() if g > 1 else columns
            old_value = _value(cost, perms[name], g)
            if not np.array_equal(new, perms[name]) and _value(cost, new, g) > old_value + 1e-12 * abs(old_value):
                perms[name] = new
                changed = True
        if not changed:
            break
    return {name: p for name, p in perms.items() if not np.array_equal(p, np.arange(len(p)))}


def _value(cost: np.ndarray, perm: np.ndarray, g: int) -> float:
    """The matching's total inner product for ``perm`` (on the block cost when ``g`` > 1)."""
    rows = np.asarray(perm)[::g] // g if g > 1 else np.asarray(perm)
    return float(cost[np.arange(len(rows)), rows].sum())


def align(graph: UnitGraph, weights_a: Mapping[str, np.ndarray], weights_b: Mapping[str, np.ndarray],
          masks_b: Mapping[str, np.ndarray] | None = None, seed: int = 0, max_rounds: int = 100):
    """``(perms, aligned_b, aligned_masks_b)``: :func:`weight_matching`'s permutations and
    network B's weights (and masks, when given; else ``None``) reordered by them."""
    perms = weight_matching(graph, weights_a, weights_b, seed=seed, max_rounds=max_rounds)
    aligned = permute_arrays(weights_b, perms, graph)
    masks = None if masks_b is None else permute_arrays(dict(masks_b), perms, graph)
    return perms, aligned, masks

"""Permuting a network's hidden units without changing what it computes.

Hidden units have no order: reorder the units of one group (:mod:`tflth.unit_graph`) in
every variable axis it occupies — the kernel columns and bias entries that produce them,
their normalisation parameters and statistics, the rows of every kernel that reads them —
and the network computes the same function. :func:`permute` does that to a built model
(its masks too: a permuted ticket keeps each layer's density); :func:`permute_arrays` to
any ``{variable path: array}`` (weights, masks, checkpoints). Alignment of two networks
(Git Re-Basin's weight matching, :mod:`tflth.stability.alignment`) searches these
permutations.

A permutation of a group is an integer array ``perm`` of its ``units``: unit ``u`` of the
result is unit ``perm[u]`` of the input. Permutations are given by group name
(:attr:`tflth.unit_graph.UnitGroup.name`); a group left out keeps its order. Only
``permutable`` groups can be permuted (not the model's inputs or outputs), and a group
with ``granularity`` g > 1 (GroupNormalization's blocks) only by permutations that move
whole blocks of g units in order.

Example:

>>> import keras, numpy as np
>>> from tflth import permutations, unit_graph
>>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu", name="a"),
...                           keras.layers.Dense(2, name="b")], name="net")
>>> graph = unit_graph.unit_groups(model)
>>> x = np.ones((1, 3), "float32")
>>> before = model(x).numpy()
>>> permutations.permute(model, {"net/a": np.array([3, 1, 0, 2])}, graph)
>>> bool(np.allclose(model(x).numpy(), before, atol=1e-6))
True
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tflth import masking
from tflth.errors import InputError
from tflth.unit_graph import UnitGraph, UnitGroup, unit_groups

__all__ = ["PermutationError", "permute", "permute_arrays", "random_permutations", "permutable_groups",
           "compose", "invert"]


class PermutationError(InputError):
    """A permutation that does not fit its group: unknown name, wrong length, not a
    permutation, a group that cannot be permuted, or blocks broken."""


def permutable_groups(graph: UnitGraph) -> dict[str, UnitGroup]:
    """``{name: group}`` of the groups that may be permuted; names must be unique."""
    names = [g.name for g in graph.groups]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise PermutationError(f"Unit groups share the names {twice}; permutations are given by name.")
    return {g.name: g for g in graph.groups if g.permutable and g.units > 1}


def _checked(group: UnitGroup | None, name: str, perm, graph: UnitGraph) -> np.ndarray:
    if group is None:
        known = [g.name for g in graph.groups]
        raise PermutationError(f"No unit group named {name!r}; the model's groups are {known}.")
    if not group.permutable:
        raise PermutationError(f"Unit group {name!r} cannot be permuted ({group.reason or 'the inputs or outputs'}).")
    perm = np.asarray(perm)
    if perm.shape != (group.units,) or not np.issubdtype(perm.dtype, np.integer) or \
            not np.array_equal(np.sort(perm), np.arange(group.units)):
        raise PermutationError(f"The permutation of {name!r} must hold each of 0..{group.units - 1} once; got "
                               f"shape {perm.shape}.")
    g = group.granularity
    if g > 1:
        blocks = perm.reshape(-1, g)
        if not np.all(blocks == blocks[:, :1] + np.arange(g)) or np.any(blocks[:, 0] % g):
            raise PermutationError(f"Unit group {name!r} moves in blocks of {g} units (its normalisation groups); "
                                   "the permutation breaks a block.")
    return perm


def permute_arrays(arrays: Mapping[str, np.ndarray], perms: Mapping[str, np.ndarray],
                   graph: UnitGraph) -> dict[str, np.ndarray]:
    """``arrays`` (``{variable path: array}``: weights, masks) with each group in ``perms``
    reordered in every member it has among them; other arrays are returned unchanged
    (copies). Unit ``u`` of the result is unit ``perms[name][u]`` of the input."""
    by_name = {g.name: g for g in graph.groups}
    out = {p: np.array(a, copy=True) for p, a in arrays.items()}
    for name, perm in perms.items():
        group = by_name.get(name)
        perm = _checked(group, name, perm, graph)
        for m in group.members:
            if m.path not in out:
                continue
            moved = np.moveaxis(out[m.path], m.axis, 0)
            source = moved[m.positions[perm].ravel()]
            moved = moved.copy()
            moved[m.positions.ravel()] = source
            out[m.path] = np.moveaxis(moved, 0, m.axis)
    return out


def permute(model, perms: Mapping[str, np.ndarray], graph: UnitGraph | None = None) -> None:
    """Reorder the hidden units of ``model`` in place: every variable of every group in
    ``perms``, and the masks of masked variables alike (so each layer keeps its density
    and the pruned entries stay zero). ``graph``: the model's :func:`unit_groups`
    (read when not given)."""
    graph = graph if graph is not None else unit_groups(model)
    weights = {v.path: v.numpy() for v in model.weights}
    new = permute_arrays(weights, perms, graph)
    masks = masking.masks_of(model) if masking.has_masks(model) else {}
    for v in model.weights:
        if v.path in new and v.path not in masks:
            v.assign(new[v.path])
    if masks:
        permuted = permute_arrays(dict(masks), perms, graph)
        for v in model.weights:  # the masked ones: weights first, then their masks (which re-zero them)
            if v.path in masks:
                v.assign(new[v.path])
        masking.apply_masks(model, masking.Masks(permuted))


def random_permutations(graph: UnitGraph, seed: int = 0) -> dict[str, np.ndarray]:
    """A random permutation of every permutable group (blocks kept for ``granularity`` > 1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, group in permutable_groups(graph).items():
        g = group.granularity
        blocks = rng.permutation(group.units // g)
        out[name] = (blocks[:, None] * g + np.arange(g)).ravel()
    return out


def compose(first: np.ndarray, then: np.ndarray) -> np.ndarray:
    """The permutation of applying ``first`` and then ``then`` (``permute_arrays`` twice)."""
    return np.asarray(first)[np.asarray(then)]


def invert(perm: np.ndarray) -> np.ndarray:
    """The permutation that undoes ``perm``."""
    perm = np.asarray(perm)
    out = np.empty_like(perm)
    out[perm] = np.arange(len(perm))
    return out

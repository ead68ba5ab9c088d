"""Aligning two networks' hidden units before comparing them: weight and activation matching.

Two networks trained from different initialisations compute similar functions with their
hidden units in different orders; the straight line between their weights then crosses a
barrier that a reordering of one of them can remove (Ainsworth, Hayase & Srinivasa, *Git
Re-Basin*, ICLR 2023: weight matching). :func:`weight_matching` finds, for every unit group
of the model (:mod:`tflth.unit_graph`), the permutation of network B's units that best
matches network A's weights: coordinate descent over the groups, in a seeded random order,
each step solving one linear assignment (``scipy.optimize.linear_sum_assignment``) of

    L[i, j] = Σ over the group's members of ⟨A's entries of unit i, B's entries of unit j⟩

with B's other groups as currently permuted, until a whole round changes no group (or
``max_rounds``). :func:`activation_matching` instead correlates the two networks' unit
activations on the same examples (one assignment per group). :func:`align` runs either and
applies the result to B's weights (and masks). A network aligned to a permuted copy of
itself gets the inverse permutation back exactly.

**Masks**: the weights are compared as they are (a ticket's pruned entries are zero), so
two tickets are matched on their surviving weights; their masks move with their weights
(``permute_arrays``).

Needs SciPy (``pip install 'tflth[align]'``).

Example::

    perms, aligned_b, _ = tflth.stability.align(model, weights_a, weights_b, method="weights")
    tflth.stability.linear_path(model, weights_a, aligned_b, data, metrics=["accuracy"])
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from tflth.errors import InputError
from tflth.permutations import permutable_groups, permute_arrays
from tflth.unit_graph import UnitGraph, UnitGroup, unit_groups

__all__ = ["AlignError", "METHODS", "weight_matching", "activation_matching", "align", "matching_cost"]


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


def _reader(model, group: UnitGroup, variables: dict):
    """``(layer, channel axis of its input, member)``: a top-level layer whose input holds
    ``group``'s units on one axis, the member giving their indices there; ``None`` when the
    units are read only inside a layer (attention heads) or by a grouped convolution."""
    top = {id(layer) for layer in model.layers}
    for m in group.members:
        if m.role not in ("in", "depthwise"):
            continue
        layer = variables.get(m.path)
        if layer is None or id(layer) not in top or getattr(layer, "groups", 1) != 1:
            continue
        rank = len(layer.input.shape) if _single_call(layer) else 0
        if not rank:
            continue
        first = getattr(layer, "data_format", "channels_last") == "channels_first"
        return layer, (1 if first else rank - 1), m
    return None


def _single_call(layer) -> bool:
    try:
        layer.input  # noqa: B018  (raises for a layer called more than once)
    except (AttributeError, ValueError):
        return False
    return True


class _Moments:
    """Running sums for the correlation of two sets of unit activations."""

    def __init__(self, units: int):
        self.n = 0
        self.sa = np.zeros(units)
        self.sb = np.zeros(units)
        self.saa = np.zeros(units)
        self.sbb = np.zeros(units)
        self.sab = np.zeros((units, units))

    def add(self, a: np.ndarray, b: np.ndarray) -> None:  # (samples, units) each
        self.n += a.shape[0]
        self.sa += a.sum(0)
        self.sb += b.sum(0)
        self.saa += (a * a).sum(0)
        self.sbb += (b * b).sum(0)
        self.sab += a.T @ b

    def correlation(self) -> np.ndarray:
        n = max(self.n, 1)
        ma, mb = self.sa / n, self.sb / n
        cov = self.sab / n - np.outer(ma, mb)
        sa = np.sqrt(np.maximum(self.saa / n - ma * ma, 0.0))
        sb = np.sqrt(np.maximum(self.sbb / n - mb * mb, 0.0))
        scale = np.outer(sa, sb)
        return np.divide(cov, scale, out=np.zeros_like(cov), where=scale > 0)


def _unit_samples(x: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """``(samples, units)``: every value of each unit (batch, spatial positions and the
    ``k`` indices of a unit all count as samples, in the same order for every unit)."""
    moved = np.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])[:, positions]  # (rest, units, k)
    return np.moveaxis(flat, 1, -1).reshape(-1, positions.shape[0])


def activation_matching(model, weights_a: Mapping[str, np.ndarray], weights_b: Mapping[str, np.ndarray],
                        examples, graph: UnitGraph | None = None, batch_size: int = 256) -> dict[str, np.ndarray]:
    """The permutations of B's unit groups that best correlate B's unit activations with
    A's (Git Re-Basin's activation matching): ``{group name: perm}``, as
    :func:`weight_matching` returns them.

    Each network's activations are read where the units are read (the input of a layer
    that takes them: after activations, pooling and BatchNorm in inference mode) on the
    same ``examples`` (model inputs, e.g. a fixed set of training images); each group's
    permutation is one ``linear_sum_assignment`` maximising the summed Pearson
    correlation of matched units (their values over the examples and spatial positions).
    The groups are independent, so one assignment each (no rounds); units constant on
    every example (dead ReLUs) correlate with nothing, and their ties are broken by their
    weights (the inner products of :func:`matching_cost`, scaled by :data:`TIE_BREAK`). Groups read only inside
    a layer (attention heads) or by a grouped convolution keep their order. ``model`` is
    used as it is for A (its weights are set to ``weights_a`` and put back); a clone of it
    computes B.
    """
    import keras  # noqa: PLC0415

    from tflth.masking import maskable  # noqa: PLC0415

    _check(weights_a, weights_b)
    solve = _assignment()
    graph = graph if graph is not None else unit_groups(model)
    owners = maskable.owners_of(model)
    by_path = {v.path: owners.get(id(v)) for v in model.weights}
    readers = {}
    for name, group in permutable_groups(graph).items():
        found = _reader(model, group, by_path)
        if found is not None:
            readers[name] = found
    if not readers:
        return {}
    layers = list(dict.fromkeys(layer for layer, _, _ in readers.values()))
    single = len(model.inputs) == 1
    original = {v.path: v.numpy() for v in model.weights}
    clone = keras.models.clone_model(model)
    probes = []
    for net, weights in ((model, weights_a), (clone, weights_b)):
        _assign(net, weights)
        tensors = [net.get_layer(layer.name).input for layer in layers]
        probes.append(keras.Model(net.inputs[0] if single else net.inputs, tensors))
    moments = {name: _Moments(g.units) for name, g in permutable_groups(graph).items() if name in readers}
    try:
        examples = np.asarray(examples)
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            outs = [probe(batch, training=False) for probe in probes]
            outs = [[np.asarray(keras.ops.convert_to_numpy(t), np.float64) for t in
                     (o if isinstance(o, (list, tuple)) else [o])] for o in outs]
            for name, (layer, axis, member) in readers.items():
                i = layers.index(layer)
                moments[name].add(_unit_samples(outs[0][i], axis, member.positions),
                                  _unit_samples(outs[1][i], axis, member.positions))
    finally:
        _assign(model, original)
    groups = permutable_groups(graph)
    correlations = {name: m.correlation() for name, m in moments.items()}
    first = {name: _solve(solve, c, groups[name].granularity) for name, c in correlations.items()}
    perms = {}
    for name, corr in correlations.items():
        # Ties (units constant on every example, such as dead ReLUs, correlate with nothing)
        # are broken by the units' weights, the other groups already matched.
        others = permute_arrays(weights_b, {n: q for n, q in first.items() if n != name}, graph)
        weights = matching_cost(groups[name], weights_a, others)
        top = np.abs(weights).max()
        perm = _solve(solve, corr + (TIE_BREAK * weights / top if top > 0 else 0.0), groups[name].granularity)
        if not np.array_equal(perm, np.arange(len(perm))):
            perms[name] = perm
    return perms


#: The weight of the weights' inner products (scaled to [-1, 1]) against the correlations in
#: activation matching: small enough only to break ties.
TIE_BREAK = 1e-6


def _solve(solve, cost: np.ndarray, g: int) -> np.ndarray:
    """The maximising assignment of ``cost`` (per block of ``g`` units when ``g`` > 1)."""
    if g > 1:
        blocks = cost.shape[0] // g
        cost = cost.reshape(blocks, g, blocks, g).trace(axis1=1, axis2=3)
    _, columns = solve(cost, maximize=True)
    return (columns[:, None] * g + np.arange(g)).ravel() if g > 1 else columns


def _assign(model, weights: Mapping[str, np.ndarray]) -> None:
    for v in model.weights:
        if v.path in weights:
            v.assign(np.asarray(weights[v.path], v.dtype))


METHODS = ("weights", "activations")


def align(model, weights_a: Mapping[str, np.ndarray], weights_b: Mapping[str, np.ndarray], method: str = "weights",
          examples=None, masks_b: Mapping[str, np.ndarray] | None = None, graph: UnitGraph | None = None,
          seed: int = 0, max_rounds: int = 100):
    """Network B's weights (and masks) with its hidden units reordered to match network A.

    Args:
        model: a built Sequential or functional model of the two networks' architecture
            (its unit groups are read from it; ``"activations"`` also runs it).
        weights_a, weights_b: ``{variable path: array}`` of the two networks.
        method: ``"weights"`` (:func:`weight_matching`) or ``"activations"``
            (:func:`activation_matching`, on ``examples``).
        examples: model inputs for ``"activations"`` (e.g. 1,000 training images).
        masks_b: B's masks, permuted with its weights (a ticket keeps each layer's density).
        graph: the model's :func:`tflth.unit_graph.unit_groups` (read when not given).
        seed, max_rounds: weight matching's group order and round cap.

    Returns:
        ``(perms, aligned_b, aligned_masks_b)``: ``{group name: permutation}`` (unit ``u`` of
        aligned B is unit ``perm[u]`` of B; unchanged groups left out), B's weights
        reordered, and its masks reordered (``None`` without ``masks_b``). Reordering
        keeps B's function: only the straight line between A and B changes.

    Example:

    >>> import keras, numpy as np
    >>> from tflth import permutations, stability, unit_graph
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="h"),
    ...                           keras.layers.Dense(2, name="out")], name="net")
    >>> a = {v.path: v.numpy() for v in model.weights}
    >>> graph = unit_graph.unit_groups(model)
    >>> b = permutations.permute_arrays(a, permutations.random_permutations(graph, seed=3), graph)
    >>> perms, aligned, _ = stability.align(model, a, b, method="weights")
    >>> all(np.array_equal(aligned[p], a[p]) for p in a)
    True
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> _, aligned, _ = stability.align(model, a, b, method="activations", examples=x)
    >>> all(np.array_equal(aligned[p], a[p]) for p in a)
    True
    """
    if method not in METHODS:
        raise AlignError(f"method={method!r} is invalid: expected one of {list(METHODS)}.")
    graph = graph if graph is not None else unit_groups(model)
    if method == "weights":
        perms = weight_matching(graph, weights_a, weights_b, seed=seed, max_rounds=max_rounds)
    else:
        if examples is None or len(examples) == 0:
            raise AlignError("method='activations' needs examples (model inputs) to read the activations on.")
        perms = activation_matching(model, weights_a, weights_b, examples, graph=graph)
    aligned = permute_arrays(weights_b, perms, graph)
    masks = None if masks_b is None else permute_arrays(dict(masks_b), perms, graph)
    return perms, aligned, masks

"""N:M sparsity: N weights kept in every group of M consecutive input weights.

Spelling: **N:M is NVIDIA's** — N kept of every M (2:4 keeps half). tfmot spells the
same pattern by its zeros, ``m_by_n=(2, 4)`` meaning "2 zeros in each block of 4";
:func:`is_pruned_m_by_n` takes tfmot's spelling and checks tfmot's semantics,
:func:`is_nm` NVIDIA's. tflth's flags (``--nm=2:4``) use NVIDIA's.

Groups run along a kernel's input axis (:attr:`VariableLayout.group_axis`): a Dense
``(in, out)`` kernel is cut into groups of M consecutive ``in`` entries for every
``out``; a Conv ``(h, w, in, out)`` kernel along ``in`` for every ``(h, w, out)``; an
EinsumDense kernel along the last axis its equation contracts. An input axis that is not
a multiple of M is refused, unless padding (``nm_pad``): the axis is then padded to a
multiple of M with pruned zeros, so the last group keeps at most N of its real entries
(``min(N, r)`` of ``r``).

IMP with N:M (:class:`NMPruning`, ``--pruning_strategy=nm --nm=2:4,1:4``) shrinks N at
fixed M, one pattern per level, each level keeping the N largest of the previous level's
survivors in each group (masks nest) and rewinding as any IMP level does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from tflth.hparams import HparamError, PruningHparams, field
from tflth.masking.masks import Masks
from tflth.pruning.layout import VariableLayout
from tflth.pruning.pruners import Pruner, check_layer_rates, check_shapes, rate_for, register

__all__ = ["NMPruning", "nm_mask", "nm_top", "random_nm_like", "is_nm", "is_pruned_m_by_n", "grouped", "ungrouped"]


def grouped(array: np.ndarray, axis: int, m: int, fill=0) -> np.ndarray:
    """``array`` with ``axis`` cut into groups of ``m``: shape ``(..., groups, m)`` (the
    other axes first, in order); a last incomplete group is padded with ``fill``."""
    a = np.moveaxis(np.asarray(array), axis, -1)
    pad = (-a.shape[-1]) % m
    if pad:
        a = np.concatenate([a, np.full(a.shape[:-1] + (pad,), fill, dtype=a.dtype)], axis=-1)
    return a.reshape(a.shape[:-1] + (a.shape[-1] // m, m))


def ungrouped(groups: np.ndarray, axis: int, shape: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`grouped` for an array of ``shape``."""
    length = shape[axis]
    flat = groups.reshape(groups.shape[:-2] + (-1,))[..., :length]
    return np.moveaxis(flat, -1, axis)


def _keep_top(scores: np.ndarray, counts) -> np.ndarray:
    """Per group (last axis) the ``counts`` highest finite scores; ties keep the lower position."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.broadcast_to(np.arange(scores.shape[-1]), order.shape), axis=-1)
    return (ranks < counts) & np.isfinite(scores)


def nm_mask(weights: np.ndarray, alive: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """``alive`` with, in every group of ``m`` along ``axis``, only the ``n`` alive entries
    of largest ``|weights|`` left (padding, when the axis is not a multiple of ``m``,
    counts as pruned)."""
    return nm_top(np.abs(np.asarray(weights, np.float64)), alive, axis, n, m)


def nm_top(scores: np.ndarray, alive: np.ndarray, axis: int, n: int, m: int) -> np.ndarray:
    """``alive`` with, in every group of ``m`` along ``axis``, only the ``n`` alive entries
    of highest ``scores`` left (ties: the lower position); padding counts as pruned."""
    alive = np.asarray(alive, bool)
    ranked = np.where(alive, np.asarray(scores, np.float64), -np.inf)
    keep = _keep_top(grouped(ranked, axis, m, fill=-np.inf), n)
    return ungrouped(keep, axis, alive.shape) & alive


def random_nm_like(mask: np.ndarray, axis: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """A random mask with, in every group of ``m`` along ``axis``, as many survivors as
    ``mask`` has there, at random positions of the group's real entries."""
    mask = np.asarray(mask, bool)
    counts = grouped(mask, axis, m, fill=False).sum(axis=-1, keepdims=True)
    real = grouped(np.ones(mask.shape, bool), axis, m, fill=False)
    scores = np.where(real, rng.random(real.shape), -np.inf)
    return ungrouped(_keep_top(scores, counts), axis, mask.shape)


def is_nm(array, axis: int, n: int, m: int) -> bool:
    """Whether every group of ``m`` consecutive entries along ``axis`` holds at most ``n``
    nonzeros (NVIDIA's N:M; a padded last group counts its padding as zeros)."""
    return bool((grouped(np.asarray(array) != 0, axis, m, fill=False).sum(axis=-1) <= n).all())


def is_pruned_m_by_n(tensor, m_by_n: tuple[int, int] = (2, 4), axis: int | None = None) -> bool:
    """tfmot's ``is_pruned_m_by_n`` semantics: at least ``m`` zeros in each block of ``n``
    consecutive entries along the input-channel axis (``axis``; default: 0 for a 2-D
    ``(in, out)`` kernel, the second-to-last for a convolution's ``(..., in, out)``).
    ``m_by_n=(2, 4)`` is NVIDIA's 2:4.

    >>> import numpy as np
    >>> k = np.array([[1., 0.], [0., 2.], [3., 0.], [0., 0.]])  # (in=4, out=2)
    >>> is_pruned_m_by_n(k, (2, 4)), is_pruned_m_by_n(k, (3, 4)), is_nm(k, 0, 2, 4)
    (True, False, True)
    """
    tensor = np.asarray(tensor)
    m, n = m_by_n
    if axis is None:
        axis = 0 if tensor.ndim <= 2 else tensor.ndim - 2
    if tensor.shape[axis] % n:
        return False  # tfmot needs whole blocks
    return is_nm(tensor, axis, n - m, n)


@register("nm")
class NMPruning(Pruner):
    """N:M pruning: level L keeps the ``nm[L-1][0]`` largest of every ``nm[L-1][1]``.

    Hyperparameters (:class:`tflth.hparams.PruningHparams`): ``nm``, one ``(N, M)`` per
    level, one M, N decreasing (``((2, 4), (1, 4))``); ``nm_pad``; ``layer_rates`` with
    rate 0 to leave a variable dense (no other rate: every pruned layer has the level's
    N:M). ``fraction`` and ``scope`` are not used. Every masked variable needs an input
    axis (:mod:`tflth.pruning.layout`). The level count is ``len(nm)``.

    Example::

        strategy = NMPruning(PruningHparams(strategy="nm", nm=((2, 4), (1, 4))), layouts=layouts(model))
        mask1 = strategy(weights, all_ones, level=1)   # 2:4
        mask2 = strategy(weights2, mask1, level=2)     # 1:4, inside mask1
    """

    name = "nm"

    @dataclasses.dataclass(frozen=True)
    class Hparams(PruningHparams):
        """N:M's settings: one ``(N, M)`` per level and whether to pad a short input axis."""

        nm: tuple[tuple[int, int], ...] = field(
            (), "--pruning_strategy=nm: one N:M per level, N kept of every M inputs (NVIDIA's spelling; tfmot's "
                "(2, 4) is 2:4), one M, N decreasing, e.g. 2:4,1:4 or 4:8,2:8,1:8. --levels defaults to their count.",
            item=lambda t: nm_pair(t))
        nm_pad: bool = field(False, "--pruning_strategy=nm: pad an input axis that is not a multiple of M with "
                                    "pruned zeros (else such a layer is an error).")

        def __post_init__(self):
            super().__post_init__()
            object.__setattr__(self, "nm", tuple(nm_pair(p) for p in self.nm))
            if self.nm:
                text = ",".join(f"{n}:{m}" for n, m in self.nm)
                for n, m in self.nm:
                    if not 1 <= n < m:
                        _invalid("nm", text, "N:M patterns with 1 <= N < M (N weights kept of every M)")
                if len({m for _, m in self.nm}) > 1:
                    _invalid("nm", text, "one M for every level (N shrinks at fixed M, e.g. 4:8,2:8,1:8)")
                ns = [n for n, _ in self.nm]
                if any(b >= a for a, b in zip(ns, ns[1:])):
                    _invalid("nm", text, "N decreasing from level to level (nested masks, e.g. 2:4,1:4)")
    levels_hint = " (one level per N:M pattern of PruningHparams.nm)"

    def __init__(self, hparams, seed: int = 0, layouts: Mapping[str, VariableLayout] | None = None, model=None):
        super().__init__(hparams, seed, layouts, model)
        if not hparams.nm:
            raise HparamError("PruningHparams.nm=() is invalid for strategy 'nm': expected one N:M pattern per "
                              "level, e.g. 2:4,1:4.", owner="PruningHparams", field="nm", value=())
        for pattern, rate in hparams.layer_rates:
            if rate != 0:
                raise HparamError(f"PruningHparams.layer_rates={pattern}:{rate} is invalid for strategy 'nm': every "
                                  "pruned variable gets the level's N:M; expected rate 0 (leave it dense) or no "
                                  "entry (an empty PruningHparams.layer_rates clears a preset's rates).", owner="PruningHparams",
                                  field="layer_rates", value=f"{pattern}:{rate}")

    @property
    def m(self) -> int:
        return self.hparams.nm[0][1]

    def pattern(self, level: int) -> tuple[int, int]:
        if not 1 <= level <= len(self.hparams.nm):
            raise HparamError(f"Level {level} has no N:M pattern: PruningHparams.nm has {len(self.hparams.nm)} "
                              f"({self._text()}).", owner="PruningHparams", field="nm", value=self._text())
        return self.hparams.nm[level - 1]

    def _text(self) -> str:
        return ",".join(f"{n}:{m}" for n, m in self.hparams.nm)

    def pruned(self, paths) -> list[str]:
        """The variables N:M applies to (those without a rate-0 ``layer_rates`` entry)."""
        return [p for p in paths if rate_for(p, self.hparams.layer_rates, None) is None]

    def check(self) -> None:
        layouts = self.require_layouts()
        check_layer_rates(self.hparams.layer_rates, list(layouts))
        for p in self.pruned(layouts):
            lay = layouts[p]
            if not lay.input_axes:
                raise HparamError(f"N:M pruning: '{p}' ({lay.kind}) has no input axis to group along; leave it "
                                  f"dense with PruningHparams.layer_rates={lay.layer or p}:0 or unmasked with "
                                  f"ModelHparams.prune=!{lay.layer or p}.",
                                  owner="PruningHparams", field="nm", value=self._text())
            length = lay.shape[lay.group_axis]
            if length % self.m and not self.hparams.nm_pad:
                raise HparamError(f"PruningHparams.nm={self._text()}: '{p}' ({lay.kind}, shape {lay.shape}) has "
                                  f"{length} inputs along axis {lay.group_axis}, not a multiple of M = {self.m}; "
                                  f"expected M dividing it, padding (PruningHparams.nm_pad) or the variable left dense "
                                  f"(PruningHparams.layer_rates={lay.layer or p}:0).", owner="PruningHparams", field="nm",
                                  value=self._text())

    def __call__(self, weights, mask, level: int = 1) -> Masks:
        self.check()
        check_shapes(weights, mask)
        n, m = self.pattern(level)
        pruned = set(self.pruned(mask))
        return Masks({p: (nm_mask(weights[p], mask[p], self.layouts[p].group_axis, n, m) if p in pruned
                          else np.asarray(mask[p], bool)) for p in mask})

    def from_scores(self, scores, level, alive=None, exponent=None) -> Masks:
        """Level ``level``'s N:M pattern in one shot: in every group, the ``N`` highest
        ``scores`` (of the ``alive`` entries); the variables left dense stay whole. A round
        of SynFlow's schedule (``exponent`` e < 1) keeps ``max(N, round(M · (N/M)^e))``."""
        self.check()
        n, m = self.pattern(level)
        if exponent is not None:
            n = max(n, min(m, int(round(m * (n / m) ** exponent))))
        pruned = set(self.pruned(scores))
        out = {}
        for p, s in scores.items():
            a = np.ones(np.shape(s), bool) if alive is None else np.asarray(alive[p], bool)
            out[p] = nm_top(s, a, self.layouts[p].group_axis, n, m) if p in pruned else a
        return Masks(out)

    def random_like(self, mask, seed: int = 0) -> Masks:
        """Random N:M: in every group, as many survivors as ``mask`` has there, at random."""
        layouts = self.require_layouts()
        rng = np.random.default_rng(seed)
        pruned = set(self.pruned(mask))
        return Masks({p: (random_nm_like(mask[p], layouts[p].group_axis, self.m, rng) if p in pruned
                          else np.asarray(mask[p], bool)) for p in mask})

    def survivor_counts(self, levels: int) -> list[int]:
        layouts = self.require_layouts()
        pruned = set(self.pruned(layouts))
        counts = []
        for level in range(levels + 1):
            total = 0
            for p, lay in layouts.items():
                size = int(np.prod(lay.shape))
                if p not in pruned or level == 0:
                    total += size
                    continue
                n, m = self.pattern(level)
                length = lay.shape[lay.group_axis]
                per_line = (length // m) * n + min(n, length % m)
                total += size // length * per_line
            counts.append(total)
        return counts

    def max_levels(self) -> int:
        return len(self.hparams.nm)


def nm_pair(pattern) -> tuple[int, int]:
    """``(n, m)`` from ``(n, m)`` or ``"n:m"`` (one ``nm`` setting)."""
    if isinstance(pattern, str):
        n, _, m = pattern.partition(":")
        try:
            return int(n), int(m)
        except ValueError:
            _invalid("nm", pattern, "N:M with whole numbers, e.g. 2:4")
    n, m = pattern
    if int(n) != n or int(m) != m:
        _invalid("nm", f"{n}:{m}", "N:M with whole numbers, e.g. 2:4")
    return int(n), int(m)


def _invalid(name: str, value, expected: str):
    raise HparamError(f"PruningHparams.{name}={value!r} is invalid: expected {expected}.", owner="PruningHparams",
                      field=name, value=value)

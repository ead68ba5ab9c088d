"""Linear interpolation between two copies and the barrier along it, on NumPy arrays.

Convention: ``W(α) = (1 − α)·W1 + α·W2``, so ``α = 0`` is copy 1 and ``α = 1`` is copy 2
(the LMC paper writes ``αW1 + (1 − α)W2``; the curve is the same, mirrored).

* :func:`alphas` — the α grid (paper: 30 evenly spaced points in [0, 1]);
* :func:`interpolate` — ``W(α)`` for a dict of arrays; pruned entries (0 in both copies)
  stay exactly 0.0 and the endpoints are the copies bit for bit;
* :func:`summarize_curve` — the error barrier (the LMC paper's *instability*) and the
  loss barrier from E(α) and L(α) measured at the grid points;
* :func:`disagreement` — fraction of examples the two endpoints classify differently.

BatchNorm moving statistics are ordinary entries of the weight dict and are
interpolated like weights; :func:`tflth.stability.batchnorm.recompute_bn_statistics`
recomputes them exactly at an interpolated point instead.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

from tflth.hparams import PAPER_POINTS  # the LMC paper's 30 evenly spaced α in [0, 1]

__all__ = [
    "PAPER_POINTS",
    "alphas",
    "interpolate",
    "interpolate_array",
    "barrier",
    "CurveResult",
    "summarize_curve",
    "disagreement",
]


_SNAP = 1e-9
"""How close (as a fraction of the grid's span ``high − low``) a grid point must be to 0 or 1
to be snapped to exactly 0.0 / 1.0 by :func:`alphas` (``linspace`` rounding leaves e.g.
``1 − 1e-16`` where 1 is meant); not a statistical tolerance. Whether a curve is stable is
the stability report's verdict (:data:`tflth.conventions.STABLE_THRESHOLD`)."""


def alphas(points: int = PAPER_POINTS, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """The α grid: ``points`` evenly spaced values from ``low`` to ``high``, both included.

    The barrier needs the endpoints α = 0 and α = 1, so the range must contain [0, 1]
    (``low <= 0`` and ``high >= 1``), and 0.0 and 1.0 are always exact grid points:
    grid values within ``1e-9·(high − low)`` of them are snapped to exactly 0.0 / 1.0,
    and if 0 or 1 does not fall on the even grid (e.g. ``alphas(30, -0.5, 1.5)``) it is
    inserted, so such a grid has up to ``points + 2`` values and is no longer evenly
    spaced around the inserted ones. With the default range the grid is exactly
    ``np.linspace(0, 1, points)`` (30 points by default, as in the LMC paper).

    Args:
        points: number of evenly spaced values, at least 2.
        low, high: the range, ``low <= 0 < 1 <= high``, finite.

    Returns:
        Sorted float64 array of distinct α values containing 0.0 and 1.0.

    Raises:
        ValueError: ``points < 2`` (or not an integer), or a range that does not
            contain [0, 1].
    """
    if isinstance(points, (bool, np.bool_)) or not isinstance(points, numbers.Integral):
        raise ValueError(f"alphas: points must be an integer >= 2, got {points!r}.")
    if points < 2:
        raise ValueError(
            f"alphas: points must be at least 2 (the endpoints α=0 and α=1 are needed for the barrier), "
            f"got {points}."
        )
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"alphas: the range must be finite, got [{low}, {high}].")
    if low > 0.0 or high < 1.0:
        raise ValueError(
            f"alphas: the range [{low}, {high}] must contain [0, 1] so that the endpoints α=0 and α=1 "
            "(the two trained copies) are evaluated."
        )
    grid = np.linspace(low, high, int(points))
    tol = _SNAP * (high - low)
    grid[np.abs(grid) <= tol] = 0.0
    grid[np.abs(grid - 1.0) <= tol] = 1.0
    return np.unique(np.concatenate([grid, [0.0, 1.0]]))


def _check_alpha(alpha) -> float:
    a = float(alpha)
    if not math.isfinite(a):
        raise ValueError(f"interpolate: α must be finite, got {alpha!r}.")
    return a


def interpolate_array(a, b, alpha: float, name: str = "array") -> np.ndarray:
    """``(1 − α)·a + α·b`` for one array, computed as ``a + α·(b − a)`` in float64.

    Float arrays: the result has ``a``'s dtype; entries equal in both (in particular
    0.0 in both: pruned weights) are returned unchanged, exactly; ``α == 0`` returns a
    copy of ``a`` and ``α == 1`` a copy of ``b``, bit for bit. Non-float arrays
    (integer / bool: counters, masks) are not interpolated: they must be equal in both
    and are returned as they are.

    Args:
        a, b: arrays of the same shape and dtype.
        alpha: the interpolation coefficient (any finite value; outside [0, 1]
            extrapolates).
        name: used in error messages.

    Returns:
        The interpolated array (a new array).

    Raises:
        ValueError: different shapes or dtypes, or unequal non-float arrays.
    """
    alpha = _check_alpha(alpha)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"interpolate: '{name}' has shape {a.shape} in the first copy and {b.shape} in the second.")
    if a.dtype != b.dtype:
        raise ValueError(f"interpolate: '{name}' has dtype {a.dtype} in the first copy and {b.dtype} in the second.")
    if not np.issubdtype(a.dtype, np.floating):
        if not np.array_equal(a, b):
            raise ValueError(
                f"interpolate: '{name}' is a non-float ({a.dtype}) array that differs between the copies; "
                "only float arrays are interpolated, others must be equal."
            )
        return a.copy()
    if alpha == 0.0:
        return a.copy()
    if alpha == 1.0:
        return b.copy()
    wide = np.promote_types(a.dtype, np.float64)
    a64 = a.astype(wide)
    out = a64 + alpha * (b.astype(wide) - a64)
    return out.astype(a.dtype)


def interpolate(w1: Mapping[str, np.ndarray], w2: Mapping[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    """``W(α) = (1 − α)·W1 + α·W2`` for every array of two weight dicts.

    See :func:`interpolate_array` for the per-array guarantees: pruned entries (exactly
    0.0 in both copies) stay exactly 0.0, α = 0 / α = 1 give W1 / W2 bit for bit, and
    non-float arrays must be equal and pass through. Masks are not weights: two copies
    of one ticket share them, and the caller checks that (tflth keeps masks beside the
    model, :mod:`tflth.masking`; :class:`tflth.stability.evaluate.CurveEvaluator` refuses
    copies that are nonzero where the model's masks prune).

    Args:
        w1, w2: ``{name: ndarray}`` with the same names, shapes and dtypes (the result
            follows ``w1``'s order).
        alpha: the interpolation coefficient.

    Returns:
        A new dict ``{name: ndarray}``.

    Raises:
        ValueError: different names, shapes or dtypes, or differing non-float arrays
            (all naming the array).
    """
    missing = [k for k in w1 if k not in w2]
    extra = [k for k in w2 if k not in w1]
    if missing or extra:
        raise ValueError(
            f"interpolate: the copies do not have the same arrays: only in the first {missing}, "
            f"only in the second {extra}."
        )
    return {name: interpolate_array(w1[name], w2[name], alpha, name) for name in w1}


# ------------------------------------------------------------------ barriers

def _curve(alphas_: Sequence[float], values: Sequence[float], what: str) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(alphas_, np.float64)
    v = np.asarray(values, np.float64)
    if a.ndim != 1 or v.shape != a.shape:
        raise ValueError(f"{what}: got {v.shape} values for {a.shape} α values; need one value per α.")
    if a.size != np.unique(a).size:
        raise ValueError(f"{what}: the α values are not distinct.")
    for end in (0.0, 1.0):
        if not np.any(a == end):
            raise ValueError(
                f"{what}: the curve has no point at α={end:g}; the barrier needs both endpoints "
                "(use tflth.stability.curve.alphas to build the grid)."
            )
    return a, v


def barrier(alphas_: Sequence[float], values: Sequence[float]) -> float:
    """``max over α in [0, 1] of V(α) − mean(V(0), V(1))``.

    The LMC paper's instability when ``values`` are errors (the loss barrier for
    losses). Points outside [0, 1] (an extended grid) are ignored: the barrier is about
    the segment between the two copies. The raw value is returned, never clipped.

    Because the endpoints are grid points, the maximum is at least ``max(V(0), V(1))``,
    so the barrier is ``>= |V(0) − V(1)| / 2 >= 0``: a flat curve gives exactly 0, a
    convex curve (maximum at an endpoint) gives ``|V(0) − V(1)| / 2``. It can only come
    out negative if the endpoint values are measured differently from the rest of the
    curve (e.g. the copies' own test errors with their trained BatchNorm statistics,
    averaged against a curve evaluated with recomputed statistics) — evaluate α=0 and
    α=1 the same way as the interior points and take them from the same curve.

    Args:
        alphas_: the α values (must include exactly 0.0 and 1.0).
        values: V(α) at each α.

    Returns:
        The barrier height (float; ``nan`` if a value in [0, 1] is nan).
    """
    a, v = _curve(alphas_, values, "barrier")
    inside = (a >= 0.0) & (a <= 1.0)
    ends = (v[a == 0.0][0] + v[a == 1.0][0]) / 2
    return float(np.max(v[inside]) - ends)


@dataclasses.dataclass(frozen=True)
class CurveResult:
    """The quantities of one interpolation curve on one dataset.

    Attributes:
        alphas: the α values, sorted.
        errors: E(α) at each α (fractions, 0..1).
        losses: L(α) at each α, or ``None``.
        instability: error barrier, ``max_{α∈[0,1]} E(α) − mean(E(0), E(1))``.
        loss_barrier: the same for the loss, or ``None``.
        max_error_alpha: the α in [0, 1] where E is largest (the first one on ties).
        endpoint_errors: ``(E(0), E(1))``.
        endpoint_losses: ``(L(0), L(1))`` or ``None``.
    """

    alphas: tuple[float, ...]
    errors: tuple[float, ...]
    losses: tuple[float, ...] | None
    instability: float
    loss_barrier: float | None
    max_error_alpha: float
    endpoint_errors: tuple[float, float]
    endpoint_losses: tuple[float, float] | None

    def to_dict(self) -> dict:
        """JSON-ready dict (non-finite floats become ``None``)."""

        def f(x):
            if x is None:
                return None
            x = float(x)
            return x if math.isfinite(x) else None

        def seq(xs):
            return None if xs is None else [f(x) for x in xs]

        return {
            "alphas": seq(self.alphas),
            "errors": seq(self.errors),
            "losses": seq(self.losses),
            "instability": f(self.instability),
            "loss_barrier": f(self.loss_barrier),
            "max_error_alpha": f(self.max_error_alpha),
            "endpoint_errors": seq(self.endpoint_errors),
            "endpoint_losses": seq(self.endpoint_losses),
        }


def summarize_curve(alphas_: Sequence[float], errors: Sequence[float],
                    losses: Sequence[float] | None = None) -> CurveResult:
    """Barriers of a curve measured at the α grid.

    Args:
        alphas_: the α values (any order; must include exactly 0.0 and 1.0, as
            :func:`alphas` guarantees).
        errors: E(α), the error (1 − accuracy) at each α.
        losses: optional L(α), the mean loss at each α.

    Returns:
        :class:`CurveResult` with the points sorted by α.

    Raises:
        ValueError: lengths differ, α values repeat, or α=0 or α=1 is missing.
    """
    a, e = _curve(alphas_, errors, "summarize_curve")
    order = np.argsort(a, kind="stable")
    a, e = a[order], e[order]
    l = None
    if losses is not None:
        _, l = _curve(alphas_, losses, "summarize_curve (losses)")
        l = l[order]
    inside = (a >= 0.0) & (a <= 1.0)
    i0, i1 = int(np.flatnonzero(a == 0.0)[0]), int(np.flatnonzero(a == 1.0)[0])
    return CurveResult(
        alphas=tuple(a.tolist()),
        errors=tuple(e.tolist()),
        losses=None if l is None else tuple(l.tolist()),
        instability=barrier(a, e),
        loss_barrier=None if l is None else barrier(a, l),
        max_error_alpha=float(a[inside][int(np.argmax(e[inside]))]),
        endpoint_errors=(float(e[i0]), float(e[i1])),
        endpoint_losses=None if l is None else (float(l[i0]), float(l[i1])),
    )


def disagreement(pred1, pred2) -> float:
    """Fraction of examples that two networks classify differently.

    Args:
        pred1, pred2: predicted labels (1-D integer arrays) or logits / probabilities
            (``[examples, classes]``, argmax over the last axis), for the same examples
            in the same order; one may be labels and the other logits.

    Returns:
        ``mean(label1 != label2)`` in [0, 1].

    Raises:
        ValueError: different numbers of examples, no examples, or float 1-D input
            (ambiguous: pass integer labels or 2-D logits).
    """

    def labels(p, which):
        p = np.asarray(p)
        if p.ndim >= 2:
            return np.argmax(p, axis=-1).reshape(p.shape[0], -1)
        if p.ndim == 1 and (np.issubdtype(p.dtype, np.integer) or p.dtype == bool):
            return p.reshape(-1, 1)
        raise ValueError(
            f"disagreement: {which} must be integer labels [examples] or logits [examples, classes]; "
            f"got shape {p.shape} dtype {p.dtype}."
        )

    l1, l2 = labels(pred1, "pred1"), labels(pred2, "pred2")
    if l1.shape != l2.shape:
        raise ValueError(f"disagreement: the predictions cover {l1.shape} and {l2.shape} examples.")
    if l1.shape[0] == 0:
        raise ValueError("disagreement: no examples.")
    return float(np.mean(np.any(l1 != l2, axis=1)))

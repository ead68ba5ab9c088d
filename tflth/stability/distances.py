"""Distances between two trained copies of a network, on NumPy arrays.

Weights are dicts ``{name: float ndarray}`` — e.g. the masked variables by variable path
(:func:`tflth.masking.masked_weights`) or every variable by variable path
(``Trainer.get_weights``); :func:`select_weights` picks the entries to compare. An
optional mask dict ``{name: ndarray}`` (non-zero / True = weight kept) restricts the
named arrays to their surviving entries; arrays without a mask are compared whole.

For every array and for the whole set (the concatenation of all arrays, *not* a sum or
mean of per-layer ratios) :func:`compare_weights` reports, over the compared entries:

* ``l2`` = ‖W1 − W2‖ (the Stabilizing paper's raw distance);
* ``relative`` = ‖W1 − W2‖ / mean(‖W1‖, ‖W2‖) (normalised by the weights' norm);
* with a reference ``W_k`` (the common starting point, e.g. the rewind point):
  ``displacement`` = mean(‖W1 − W_k‖, ‖W2 − W_k‖), how far training moved each copy,
  and ``relative_to_displacement`` = ‖W1 − W2‖ / displacement. The mean over the two
  copies (rather than one copy's displacement) keeps the measure symmetric in the copies;
* ``cosine`` = ⟨W1, W2⟩ / (‖W1‖ ‖W2‖).

By the triangle inequality both normalised distances lie in [0, 2]; a zero denominator
implies a zero distance, reported as ``0.0``. The cosine of a zero vector (e.g. a layer
whose mask keeps nothing) is undefined: ``nan`` (``None`` in :meth:`Distances.to_dict`).
All sums run in float64.

The two copies are copies of one ticket: one mask (``masks``) restricts both.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = [
    "LayerDistance",
    "Distances",
    "compare_weights",
    "stability_to_pruning",
    "select_weights",
]

Weights = Mapping[str, np.ndarray]


def _json_float(x):
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _ratio(num: float, den: float) -> float:
    """``num / den`` where ``den == 0`` implies ``num == 0`` (reported as 0.0)."""
    if num == 0.0:
        return 0.0
    return num / den if den > 0.0 else math.inf


@dataclasses.dataclass(frozen=True)
class LayerDistance:
    """Distances over one array (or, for :attr:`Distances.total`, over all of them).

    Attributes:
        name: the array's name (``"TOTAL"`` for the concatenation).
        count: number of entries compared (surviving entries under a mask).
        l2: ‖W1 − W2‖.
        norm1, norm2: ‖W1‖ and ‖W2‖.
        relative: ‖W1 − W2‖ / mean(‖W1‖, ‖W2‖).
        cosine: ⟨W1, W2⟩ / (‖W1‖ ‖W2‖); ``nan`` if either norm is zero.
        displacement1, displacement2: ‖W1 − W_k‖, ‖W2 − W_k‖ (``None`` without a reference).
        displacement: their mean (``None`` without a reference).
        relative_to_displacement: ‖W1 − W2‖ / ``displacement`` (``None`` without a reference).
    """

    name: str
    count: int
    l2: float
    norm1: float
    norm2: float
    relative: float
    cosine: float
    displacement1: float | None = None
    displacement2: float | None = None
    displacement: float | None = None
    relative_to_displacement: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict (non-finite floats become ``None``; ``name`` omitted)."""
        out = {"count": int(self.count)}
        for field in dataclasses.fields(self):
            if field.name not in ("name", "count"):
                out[field.name] = _json_float(getattr(self, field.name))
        return out


@dataclasses.dataclass(frozen=True)
class Distances:
    """Result of :func:`compare_weights`: one row per array plus the total.

    Attributes:
        layers: per-array rows, in the order of the first weight dict.
        total: the same quantities over the concatenation of every compared entry.
        masked: names of the arrays that were restricted by a mask.
    """

    layers: tuple[LayerDistance, ...]
    total: LayerDistance
    masked: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> LayerDistance:
        for row in self.layers:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict:
        """``{"total": {...}, "layers": {name: {...}}, "masked": [...]}``, JSON-ready."""
        return {
            "total": self.total.to_dict(),
            "layers": {row.name: row.to_dict() for row in self.layers},
            "masked": list(self.masked),
        }


# --------------------------------------------------------------------- checks

def _as_float(name: str, value, what: str) -> np.ndarray:
    a = np.asarray(value)
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(
            f"Array '{name}' of {what} has dtype {a.dtype}; only float arrays are compared "
            "(select the weights to compare with select_weights)."
        )
    return a


def _check_keys(a: Mapping, b: Mapping, what_a: str, what_b: str, exact: bool = True) -> None:
    missing = [k for k in a if k not in b]
    extra = [k for k in b if k not in a] if exact else []
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{what_b} lacks {missing}")
        if extra:
            parts.append(f"{what_b} has extra {extra}")
        raise ValueError(f"{what_a} and {what_b} do not have the same arrays: " + "; ".join(parts) + ".")


def _mask_array(name: str, mask, shape) -> np.ndarray:
    m = np.asarray(mask)
    if m.shape != tuple(shape):
        raise ValueError(f"Mask for '{name}' has shape {m.shape}; the weights have {tuple(shape)}.")
    return m if m.dtype == bool else m != 0


def select_weights(weights: Weights, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The entries of ``weights`` named in ``names``, in that order.

    Use it to choose what to compare, e.g. from a model's weight dict (variable paths):

    * masked variables only: ``names = list(tflth.masking.masks_of(model))`` (masks and
      weights are both keyed by variable path), or ``tflth.masking.masked_weights(model)``;
    * all trainable weights: ``names = [v.path for v in model.trainable_variables]``
      (excludes BatchNorm moving statistics).

    Args:
        weights: ``{name: ndarray}``.
        names: the names to keep.

    Returns:
        A new dict with those entries.

    Raises:
        ValueError: a name is not in ``weights`` (all missing names are listed).
    """
    names = list(names)
    missing = [n for n in names if n not in weights]
    if missing:
        raise ValueError(f"select_weights: no arrays named {missing} (known: {sorted(weights)[:10]}...).")
    return {n: weights[n] for n in names}


# ------------------------------------------------------------------ distances

_SUMS = ("count", "diff", "sq1", "sq2", "dot", "disp1", "disp2")


def _sums(a, b, ref) -> dict:
    d = a - b
    s = {
        "count": a.size,
        "diff": float(np.dot(d, d)),
        "sq1": float(np.dot(a, a)),
        "sq2": float(np.dot(b, b)),
        "dot": float(np.dot(a, b)),
    }
    if ref is not None:
        d1, d2 = a - ref, b - ref
        s["disp1"] = float(np.dot(d1, d1))
        s["disp2"] = float(np.dot(d2, d2))
    return s


def _row(name: str, s: dict, with_ref: bool) -> LayerDistance:
    l2, n1, n2 = math.sqrt(s["diff"]), math.sqrt(s["sq1"]), math.sqrt(s["sq2"])
    cosine = s["dot"] / (n1 * n2) if n1 > 0 and n2 > 0 else math.nan
    if not math.isnan(cosine):
        cosine = min(1.0, max(-1.0, cosine))
    row = dict(name=name, count=int(s["count"]), l2=l2, norm1=n1, norm2=n2,
               relative=_ratio(l2, (n1 + n2) / 2), cosine=cosine)
    if with_ref:
        d1, d2 = math.sqrt(s["disp1"]), math.sqrt(s["disp2"])
        disp = (d1 + d2) / 2
        row.update(displacement1=d1, displacement2=d2, displacement=disp,
                   relative_to_displacement=_ratio(l2, disp))
    return LayerDistance(**row)


def compare_weights(w1: Weights, w2: Weights, masks: Mapping[str, np.ndarray] | None = None, *,
                    reference: Weights | None = None) -> Distances:
    """Distances between two copies' weights, per array and in total.

    Args:
        w1, w2: ``{name: float ndarray}`` with the same names and shapes (the order of
            ``w1`` is the order of the rows).
        masks: optional ``{name: ndarray}`` for a subset of the names (non-zero = kept),
            the copies' common mask; a masked array is compared over its kept entries only.
        reference: optional ``W_k`` (same names and shapes; extra names are ignored):
            adds the displacement ``mean(‖W1 − W_k‖, ‖W2 − W_k‖)`` and the distance
            normalised by it.

    Returns:
        :class:`Distances`.

    Raises:
        ValueError: different names or shapes (naming the array), a non-float array, a
            mask for an unknown name or of the wrong shape.
    """
    _check_keys(w1, w2, "The first copy's weights", "the second copy's weights")
    masks = dict(masks or {})
    unknown = [k for k in masks if k not in w1]
    if unknown:
        raise ValueError(f"Masks name arrays {unknown} that are not among the weights compared.")
    if reference is not None:
        _check_keys(w1, reference, "The weights", "the reference", exact=False)

    rows, total = [], {k: 0.0 for k in _SUMS}
    for name in w1:
        a = _as_float(name, w1[name], "the first copy")
        b = _as_float(name, w2[name], "the second copy")
        if a.shape != b.shape:
            raise ValueError(f"Array '{name}' has shape {a.shape} in the first copy and {b.shape} in the second.")
        ref = None
        if reference is not None:
            ref = _as_float(name, reference[name], "the reference")
            if ref.shape != a.shape:
                raise ValueError(f"Array '{name}' has shape {ref.shape} in the reference; the copies have {a.shape}.")
        if name in masks:
            keep = _mask_array(name, masks[name], a.shape)
            a, b = a[keep], b[keep]
            ref = ref[keep] if ref is not None else None
        a = np.asarray(a, np.float64).ravel()
        b = np.asarray(b, np.float64).ravel()
        ref = np.asarray(ref, np.float64).ravel() if ref is not None else None
        s = _sums(a, b, ref)
        for k, v in s.items():
            total[k] += v
        rows.append(_row(name, s, reference is not None))
    return Distances(tuple(rows), _row("TOTAL", total, reference is not None),
                     tuple(k for k in w1 if k in masks))


def stability_to_pruning(subnetwork: Weights, full: Weights, masks: Mapping[str, np.ndarray], *,
                         reference: Weights | None = None) -> Distances:
    """The Stabilizing paper's *stability to pruning*.

    The distance between the subnetwork trained in isolation and the full (dense)
    network's final weights restricted to the same mask: every masked array is compared
    over the subnetwork's surviving entries only (the dense network's pruned weights are
    left out, not zeroed). Lower = more stable.

    Args:
        subnetwork: the trained subnetwork's weights, e.g. masked variables by variable path.
        full: the dense network's final weights, same names and shapes.
        masks: the subnetwork's masks (``{name: ndarray}``, non-zero = kept), for all or
            some of the names; unmasked arrays are compared whole.
        reference: optional starting point (e.g. the rewind weights ``W_k``) for the
            displacement-normalised distance, as in :func:`compare_weights`.

    Returns:
        :class:`Distances` with the subnetwork as copy 1 and the full network as copy 2.
    """
    if masks is None:
        raise ValueError("stability_to_pruning needs the subnetwork's masks.")
    return compare_weights(subnetwork, full, masks, reference=reference)

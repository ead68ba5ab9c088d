"""Statistics of the reports: t intervals, Welch differences and the decision rules (the one home).

Every verdict in tflth's reports ("matches dense", "IMP beats <control>", "stable", "first
stable k") is decided here, by the rules below; the reports only name them. The same rules,
with the reasons for the defaults, are in ``docs/statistics.md``.

Quantities (all at confidence ``CONFIDENCE`` = 95 %)
-----------------------------------------------------
* **Sample** (:func:`describe`): n, mean, sample standard deviation s (ddof = 1) and the
  95 % Student t interval of the mean, ``mean ± t(0.975, n − 1) · s / √n``. With n = 1 the
  std and the interval are undefined: ``None``, shown as ``n/a (n=1)``, never an error.
  With n = 2 it is computed (``t(0.975, 1) = 12.71``: wide, honestly so).
* **Difference** (:func:`welch`): ``mean(a) − mean(b)`` with the Welch (unequal variances)
  standard error ``se = √(s_a²/n_a + s_b²/n_b)``, the Welch–Satterthwaite degrees of freedom
  ``df = se⁴ / ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1))``, the 95 % interval
  ``diff ± t(0.975, df) · se`` and the two-sided p-value of ``t = diff / se``. Defined when
  each side has n ≥ 2, else undefined (``None``; shown as ``n/a (n=1)``) and every verdict
  on it is *undecided*. When both variances are 0, ``se = 0``: the interval is the point
  ``[diff, diff]``, ``df = n_a + n_b − 2`` and p is 1 if ``diff == 0`` else 0 (no division
  by zero). The comparison is unpaired even where IMP and its controls share replicate
  seeds: pairing would narrow the interval when they are positively correlated, so Welch
  is the conservative choice.

Decision rules (verdicts are ``"yes"``, ``"no"`` or ``"undecided"``)
-------------------------------------------------------------------
δ is the match margin (:data:`tflth.conventions.MATCH_MARGIN` = 0.005, i.e. 0.5 accuracy
points; ``--match_margin`` of ``bin/report.py``, in points); τ the stability threshold
(:data:`tflth.conventions.STABLE_THRESHOLD` = 0.02, i.e. 2 points of test error;
``--stable_threshold``, in points). Both are fractions here, as every accuracy and error is
(:mod:`tflth.conventions`); the rules in words show them in points. [lo, hi] is the 95 % interval.

* **matches dense** (:func:`matches`), per level and method, on the Welch difference
  (method − dense) of the test accuracies: **yes** if lo > −δ; **no** if hi < −δ;
  otherwise (or undefined) **undecided**.
* **IMP beats <control>** (:func:`beats`), per level, on the Welch difference (IMP −
  control): **yes** if lo > 0 (even when the whole interval is inside ±δ: a small but
  clear win is a win); **no** if hi < 0 (the control is better) or −δ ≤ lo and hi ≤ δ (no
  difference, and the interval is narrow enough to say so); otherwise (or undefined)
  **undecided**.
* **stable** (:func:`stable`), per k, on the pairs' test instabilities (error barriers):
  **yes** if hi < τ (t interval of the mean); **no** if n ≥ 2 and every pair is over the
  threshold (instability ≥ τ, :func:`pairs_over`), or lo > τ; otherwise **undecided**;
  n = 1 is always **undecided**. The "every pair over" branch is there because barriers
  are skewed: three pairs at 9.7, 12 and 26.3 points have a t interval reaching below 0,
  yet no pair is anywhere near stable. Reports also show "pairs over threshold" (``3/3``).
  The unit is the pair: pairs of one initialisation share their start W_k, so with
  several pairs per replicate the interval understates the spread between
  initialisations.
* **first stable k** (:func:`first_stable`), per (level, method), from the verdicts of the
  measured k (sorted, k_1 < … < k_m): the smallest k_j whose verdict is *yes* and every
  larger k's too. The undecided k between the last *no* before k_j and k_j are named, as
  they could still make it earlier: ``100it (10it, 30it undecided)``. When the largest k is
  not *yes* there is no first stable k: ``none`` if the largest k is *no*, ``undecided``
  if it is undecided (naming the undecided k after the last *no*: ``undecided (300it
  undecided)``). A k measured in several settings counts as *yes* only if all are, *no*
  if any is.

The distribution functions are implemented here (standard library only; SciPy is not a
dependency): Student's t CDF through the regularized incomplete beta function
(continued fraction, modified Lentz), its quantile by bisection on the tail probability;
``df = math.inf`` is the normal distribution.

Example::

    >>> from tflth.report import stats
    >>> s = stats.describe([0.90, 0.91, 0.92])
    >>> round(s.mean, 4), round(s.std, 4), round(s.high - s.mean, 4)
    (0.91, 0.01, 0.0248)
    >>> stats.describe([0.9]).low is None
    True
    >>> d = stats.welch([1, 2, 3], [2, 4, 6])
    >>> round(d.diff, 3), round(d.df, 4), round(d.p, 3)
    (-2.0, 2.9412, 0.221)
    >>> stats.matches(d, margin=0.5), stats.beats(d, margin=0.5)
    ('undecided', 'undecided')

Standard library only (``math``; the shared constants from :mod:`tflth.conventions`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping

from tflth.conventions import ACCURACY, MATCH_MARGIN, Measure, to_points

__all__ = ["CONFIDENCE", "YES", "NO", "UNDECIDED", "VERDICTS", "regularized_beta", "t_cdf", "t_sf",
           "t_quantile", "Sample", "describe", "Difference", "welch", "matches", "beats", "stable", "pairs_over",
           "FirstStable", "first_stable", "matches_rule", "beats_rule", "stable_rule", "interval_note", "oriented"]

CONFIDENCE = 0.95
"""Confidence of every interval in the reports."""

YES, NO, UNDECIDED = "yes", "no", "undecided"
VERDICTS = (YES, NO, UNDECIDED)

_EPS = 1e-15
_TINY = 1e-300
_MAX_ITERATIONS = 100_000


# ----------------------------------------------------------------------------- distributions

def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz; converges for x < (a+1)/(a+b+2))."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, _MAX_ITERATIONS + 1):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + num / c
            c = c if abs(c) > _TINY else _TINY
            step = d * c
            h *= step
        if abs(step - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"regularized_beta: no convergence for a={a!r}, b={b!r}, x={x!r}")


def regularized_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b).

    Args:
        a, b: positive shape parameters.
        x: in [0, 1].

    Returns:
        I_x(a, b) in [0, 1] (relative accuracy about 1e-14).

    Raises:
        ValueError: ``a`` or ``b`` not positive, ``x`` outside [0, 1] (or NaN).
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"regularized_beta: a={a!r} and b={b!r} must be positive")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"regularized_beta: x={x!r} must be in [0, 1]")
    return _ibeta(float(a), float(b), float(x), 1.0 - float(x))


def _log_beta(a: float, b: float) -> float:
    """log B(a, b); for a large against b without the cancellation of lgamma(a + b) − lgamma(a)."""
    if a < b:
        a, b = b, a
    if a < 1e5:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    # Stirling: lgamma(a + b) − lgamma(a) = (a − ½)·log1p(b/a) + b·log(a + b) − b + (1/(a+b) − 1/a)/12 + O(a⁻³)
    ratio = (a - 0.5) * math.log1p(b / a) + b * math.log(a + b) - b + (1.0 / (a + b) - 1.0 / a) / 12.0
    return math.lgamma(b) - ratio


def _ibeta(a: float, b: float, x: float, y: float) -> float:
    """I_x(a, b) given ``x`` and ``y = 1 − x``, each as accurate as the caller has it."""
    if x <= 0.0 or y >= 1.0:
        return 0.0
    if y <= 0.0 or x >= 1.0:
        return 1.0
    log_x = math.log1p(-y) if y < 0.5 else math.log(x)
    log_y = math.log1p(-x) if x < 0.5 else math.log(y)
    front = math.exp(a * log_x + b * log_y - _log_beta(a, b))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, y) / b


def _check_df(df: float) -> float:
    df = float(df)
    if not df > 0:  # also NaN
        raise ValueError(f"Student t: degrees of freedom df={df!r} must be positive (math.inf: normal)")
    return df


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (``math.inf``: standard normal)."""
    df = _check_df(df)
    t = float(t)
    if math.isnan(t):
        raise ValueError("t_sf: t is NaN")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    tail = 0.5 * _two_sided_p(t, df)  # P(T > |t|)
    return tail if t >= 0 else 1.0 - tail


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t with ``df`` degrees of freedom (``math.inf``: standard normal).

    Computed as ``1 − I_x(df/2, 1/2) / 2`` with ``x = df / (df + t²)`` for t ≥ 0 (and by
    symmetry below 0); ``df`` may be any positive real (Welch's df is not an integer).
    From df = 1e6 on: the normal CDF with its first-order correction in 1/df.
    """
    return 1.0 - t_sf(t, df)


def t_quantile(p: float, df: float) -> float:
    """The t with P(T ≤ t) = ``p`` (Student's t, ``df`` degrees of freedom, ``math.inf``: normal).

    Bisection on the tail probability (monotone, so it cannot diverge) to the last bits of a
    float. ``t_quantile(0.975, 4)`` is 2.7764.

    Raises:
        ValueError: ``p`` not in (0, 1), ``df`` not positive.
    """
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p={p!r} must be in (0, 1)")
    df = _check_df(df)
    if p == 0.5:
        return 0.0
    tail = min(p, 1.0 - p)  # solve P(T > t) = tail for t > 0, then mirror
    low, high = 0.0, 1.0
    while t_sf(high, df) > tail:
        low, high = high, high * 2.0
        if high > 1e300:
            raise ArithmeticError(f"t_quantile: no bracket for p={p!r}, df={df!r}")
    for _ in range(2000):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if t_sf(mid, df) > tail:
            low = mid
        else:
            high = mid
    t = 0.5 * (low + high)
    return t if p > 0.5 else -t


_LARGE_DF = 1e6  # from here on: the normal with its 1/df correction (the beta fraction loses digits)


def _two_sided_p(t: float, df: float) -> float:
    """P(|T| ≥ |t|), as I_x(df/2, 1/2) directly (no cancellation for small p).

    For df ≥ 1e6 (and ``math.inf``) the continued fraction would cancel digits; there the
    normal tail plus its first-order term in 1/df, ``2·φ(t)·(t³ + t)/(4·df)``, is used
    (what it leaves out is O(df⁻²): below 1e-11).
    """
    t = abs(t)
    if df >= _LARGE_DF:
        normal = math.erfc(t / math.sqrt(2.0))
        if math.isinf(df):
            return normal
        density = math.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
        return min(1.0, normal + 2.0 * density * (t ** 3 + t) / (4.0 * df))
    r = (t / df) * t if df >= 1.0 else t * t / df  # t²/df without overflow where it can be avoided
    if math.isinf(r):
        return 0.0
    return _ibeta(df / 2.0, 0.5, 1.0 / (1.0 + r), r / (1.0 + r))


def _check_confidence(confidence: float) -> float:
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1), e.g. 0.95")
    return confidence


# ----------------------------------------------------------------------------- one sample

@dataclasses.dataclass(frozen=True)
class Sample:
    """One sample summarised: ``n``, ``mean``, ``std`` (ddof = 1) and the t interval
    [``low``, ``high``] of the mean at ``confidence``; ``std``, ``low``, ``high`` and
    ``df`` are ``None`` when n = 1 (undefined, not zero)."""

    values: tuple[float, ...]
    n: int
    mean: float
    std: float | None
    low: float | None
    high: float | None
    df: float | None
    confidence: float = CONFIDENCE

    @property
    def defined(self) -> bool:
        """Whether the interval exists (n ≥ 2)."""
        return self.low is not None

    @property
    def half_width(self) -> float | None:
        """``high − mean`` (the interval is symmetric), ``None`` for n = 1."""
        return None if self.high is None else self.high - self.mean


def describe(values: Iterable[float], confidence: float = CONFIDENCE) -> Sample:
    """Mean, sample std and the t interval of the mean of ``values`` (see the module docstring).

    Args:
        values: at least one finite number.
        confidence: of the interval, in (0, 1).

    Returns:
        :class:`Sample`; for one value its std and interval are ``None``.

    Raises:
        ValueError: no values, a value that is not a finite number, a bad ``confidence``.
    """
    confidence = _check_confidence(confidence)
    xs = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"describe: {v!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"describe: {v!r} is not a finite number")
        xs.append(x)
    n = len(xs)
    if n == 0:
        raise ValueError("describe: no values (expected at least one)")
    mean = math.fsum(xs) / n
    if n == 1:
        return Sample(tuple(xs), 1, mean, None, None, None, None, confidence)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2.0, n - 1) * std / math.sqrt(n)
    return Sample(tuple(xs), n, mean, std, mean - half, mean + half, float(n - 1), confidence)


# ----------------------------------------------------------------------------- two samples

@dataclasses.dataclass(frozen=True)
class Difference:
    """``mean(a) − mean(b)`` by Welch: ``diff``, ``se``, ``df``, the interval [``low``,
    ``high``] at ``confidence`` and the two-sided ``p``. ``se``, ``df``, ``low``, ``high``
    and ``p`` are ``None`` when a side has n < 2 (:attr:`defined` is False)."""

    a: Sample
    b: Sample
    diff: float
    se: float | None
    df: float | None
    low: float | None
    high: float | None
    p: float | None
    confidence: float = CONFIDENCE

    @property
    def defined(self) -> bool:
        """Whether the interval exists (n ≥ 2 on each side)."""
        return self.low is not None

    @property
    def why_undefined(self) -> str | None:
        """``"n=1"`` (the smallest side's n) when undefined, else ``None``."""
        return None if self.defined else f"n={min(self.a.n, self.b.n)}"


def welch(a: Iterable[float] | Sample, b: Iterable[float] | Sample, confidence: float = CONFIDENCE) -> Difference:
    """Welch's comparison of ``mean(a) − mean(b)`` (see the module docstring for the formulas).

    Args:
        a, b: the two samples (values, or :class:`Sample` s from :func:`describe`).
        confidence: of the interval, in (0, 1).

    Returns:
        :class:`Difference`; undefined (``None`` fields, ``defined`` False) when a side has
        one value. Both variances 0: the interval is ``[diff, diff]`` and p is 1 or 0.

    Raises:
        ValueError: as :func:`describe`, for either sample.
    """
    confidence = _check_confidence(confidence)
    a = a if isinstance(a, Sample) else describe(a, confidence)
    b = b if isinstance(b, Sample) else describe(b, confidence)
    diff = a.mean - b.mean
    if a.n < 2 or b.n < 2:
        return Difference(a, b, diff, None, None, None, None, None, confidence)
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(a, b, diff, 0.0, float(a.n + b.n - 2), diff, diff, 1.0 if diff == 0 else 0.0, confidence)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    half = t_quantile(0.5 + confidence / 2.0, df) * se
    return Difference(a, b, diff, se, df, diff - half, diff + half, _two_sided_p(diff / se, df), confidence)


# ----------------------------------------------------------------------------- verdicts

def _check_margin(margin: float) -> float:
    margin = float(margin)
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin={margin!r} must be a finite number >= 0 (a fraction: 0.005 is 0.5 points)")
    return margin


def matches(d: Difference, margin: float = MATCH_MARGIN) -> str:
    """"matches dense" of ``d = welch(method, dense)``: yes if lo > −margin, no if hi < −margin,
    else (or undefined) undecided."""
    margin = _check_margin(margin)
    if not d.defined:
        return UNDECIDED
    if d.low > -margin:
        return YES
    if d.high < -margin:
        return NO
    return UNDECIDED


def beats(d: Difference, margin: float = MATCH_MARGIN) -> str:
    """"IMP beats the control" of ``d = welch(imp, control)``: yes if lo > 0; no if hi < 0 or
    the interval lies within ±margin; else (or undefined) undecided."""
    margin = _check_margin(margin)
    if not d.defined:
        return UNDECIDED
    if d.low > 0:
        return YES
    if d.high < 0 or (d.low >= -margin and d.high <= margin):
        return NO
    return UNDECIDED


def _check_threshold(threshold: float) -> float:
    threshold = float(threshold)
    if not (math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold={threshold!r} must be a finite number > 0 (a fraction: 0.02 is 2 points)")
    return threshold


def pairs_over(values: Iterable[float], threshold: float) -> int:
    """How many ``values`` (instabilities) are over the threshold (``>= threshold``: not stable)."""
    threshold = _check_threshold(threshold)
    return sum(1 for v in values if v >= threshold)


def stable(sample: Sample | Iterable[float], threshold: float) -> str:
    """"stable" of the pairs' instabilities: yes if hi < threshold; no if n ≥ 2 and every pair
    is over the threshold, or lo > threshold; else undecided (always for n = 1)."""
    threshold = _check_threshold(threshold)
    s = sample if isinstance(sample, Sample) else describe(sample)
    if s.n < 2:
        return UNDECIDED
    if s.high < threshold:
        return YES
    if pairs_over(s.values, threshold) == s.n or s.low > threshold:
        return NO
    return UNDECIDED


@dataclasses.dataclass(frozen=True)
class FirstStable:
    """The first stable k of one (level, method): ``k`` (``None`` when there is none or it is
    undecided), ``status`` (``"found"``, ``"none"`` or ``"undecided"``) and ``undecided``,
    the undecided k that could make it earlier (or decide it)."""

    k: int | None
    status: str
    undecided: tuple[int, ...] = ()

    def text(self, fmt: Callable[[int], str] = lambda k: f"{k}it") -> str:
        """``"100it"``, ``"100it (10it, 30it undecided)"``, ``"none"``, ``"undecided (300it undecided)"``."""
        note = f" ({', '.join(fmt(k) for k in self.undecided)} undecided)" if self.undecided else ""
        head = fmt(self.k) if self.status == "found" else self.status
        return head + note


def first_stable(verdicts: Mapping[int, str] | Iterable[tuple[int, str]]) -> FirstStable:
    """The first stable k from the "stable" verdict of each k (see the module docstring).

    ``verdicts`` maps k to ``"yes"`` / ``"no"`` / ``"undecided"``, or is (k, verdict) pairs
    where a k may repeat (several settings): it is *yes* only if all are, *no* if any is.

    Raises:
        ValueError: no k, or a verdict that is not one of :data:`VERDICTS`.
    """
    items = verdicts.items() if isinstance(verdicts, Mapping) else verdicts
    by_k: dict[int, str] = {}
    for k, v in items:
        if v not in VERDICTS:
            raise ValueError(f"first_stable: verdict {v!r} for k={k!r} is not one of {VERDICTS}")
        old = by_k.get(k)
        by_k[k] = v if old is None else (NO if NO in (old, v) else YES if old == v == YES else UNDECIDED)
    if not by_k:
        raise ValueError("first_stable: no k (expected at least one verdict)")
    ks = sorted(by_k)
    j = len(ks)
    while j > 0 and by_k[ks[j - 1]] == YES:
        j -= 1
    last_no = max((i for i in range(j) if by_k[ks[i]] == NO), default=-1)
    if j < len(ks):  # ks[j:] are all yes
        return FirstStable(ks[j], "found", tuple(k for k in ks[last_no + 1:j] if by_k[k] == UNDECIDED))
    if by_k[ks[-1]] == NO:
        return FirstStable(None, "none")
    return FirstStable(None, UNDECIDED, tuple(k for k in ks[last_no + 1:] if by_k[k] == UNDECIDED))


# ----------------------------------------------------------------------------- the rules in words

def _margin_text(margin: float, measure: Measure) -> str:
    m = _check_margin(margin) * measure.scale
    return f"{m:g} {measure.unit}".rstrip()


def matches_rule(margin: float = MATCH_MARGIN, measure: Measure = ACCURACY) -> str:
    """The "matches dense" rule in one sentence, with ``margin`` (a fraction of accuracy,
    or in a task's metric's units) as the report shows it."""
    m = _margin_text(margin, measure)
    if not measure.higher_is_better:
        return (f"matches dense: yes if the 95 % Welch interval of (method − dense) in test {measure.name} (lower is "
                f"better) lies below +{m}, no if above, else undecided")
    return (f"matches dense: yes if the 95 % Welch interval of (method − dense) lies above −{m}, "
            f"no if below, else undecided")


def beats_rule(margin: float = MATCH_MARGIN, measure: Measure = ACCURACY) -> str:
    """The "IMP beats <control>" rule in one sentence, with ``margin`` as :func:`matches_rule`'s."""
    m = _margin_text(margin, measure)
    if not measure.higher_is_better:
        return (f"IMP beats <control>: yes if the 95 % Welch interval of (IMP − control) in test {measure.name} lies "
                f"below 0, no if above 0 or within ±{m}, else undecided")
    return (f"IMP beats <control>: yes if the 95 % Welch interval of (IMP − control) lies above 0, "
            f"no if below 0 or within ±{m}, else undecided")


def oriented(d: Difference, measure: Measure = ACCURACY) -> Difference:
    """``d`` as "better by": itself where higher is better, negated (interval flipped) where
    lower is, so that :func:`matches` and :func:`beats` decide either direction."""
    if measure.higher_is_better:
        return d
    flip = None if d.low is None else (-d.high, -d.low)
    return dataclasses.replace(d, diff=-d.diff, low=None if flip is None else flip[0],
                               high=None if flip is None else flip[1])


def stable_rule(threshold: float) -> str:
    """The "stable" rule in one sentence, with ``threshold`` (a fraction) in points."""
    t = f"{to_points(_check_threshold(threshold)):g}"
    return (f"stable: yes if the 95 % t interval of the mean test instability lies below {t} points, "
            f"no if it lies above or every pair is at or over {t} points (n >= 2), else undecided (always for n = 1)")


def interval_note() -> str:
    """What the intervals in a table are."""
    return "[..]: 95 % interval (t for a mean, Welch for a difference); n/a (n=1): undefined for one value"

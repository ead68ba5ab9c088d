"""The conventions the reports and the stability analysis share, each defined once.

The lowest floor of tflth: this module imports nothing of tflth (and only the standard
library), so :mod:`tflth.stability.curve` (NumPy), :mod:`tflth.report` (the IMP and the
stability reports) and the binaries can all use it.

**Units.** Accuracies, errors, instabilities (error barriers), the stability threshold and
the match margin are **fractions** everywhere in tflth: in ``result.json``, ``pair.json``,
the CSV files and every function's arguments (0.02 is 2 percentage points). They are
turned into percentage points only where a person reads them (table cells, figure labels,
the rules in words, the ``--match_margin`` / ``--stable_threshold`` flags), through
:func:`to_points` and :func:`from_points`.

* :data:`STABLE_THRESHOLD` — τ of the "stable" verdict (0.02: 2 points of test error);
* :data:`MATCH_MARGIN` — δ of "matches dense" and "IMP beats <control>" (0.005: 0.5 points);
* :data:`IMP`, :data:`METHOD_ORDER`, :func:`method_key` — the methods' names and the
  order in which both reports list them;
* :data:`LAST_EVALS` — over how many final evaluations a result row's
  ``last_evals_range`` (how much a run's final accuracy still moved) is taken.

The decision rules that use τ and δ are :mod:`tflth.report.stats`'s (``docs/statistics.md``).
"""

from __future__ import annotations

import dataclasses

__all__ = ["Measure", "ACCURACY", "POINTS_PER_FRACTION", "to_points", "from_points", "STABLE_THRESHOLD", "MATCH_MARGIN", "IMP",
           "METHOD_ORDER", "method_key", "LAST_EVALS"]

POINTS_PER_FRACTION = 100.0
"""Percentage points per unit fraction (0.02 → 2 points)."""


def to_points(fraction: float) -> float:
    """A fraction (accuracy, error, threshold, margin) in percentage points, for display."""
    return fraction * POINTS_PER_FRACTION


def from_points(points: float) -> float:
    """Percentage points (as a person types them, e.g. a flag) as the fraction tflth computes with."""
    return points / POINTS_PER_FRACTION


STABLE_THRESHOLD = 0.02
"""τ, a fraction of test examples: a network is called stable when its instability (the
error barrier between two copies) is below 2 percentage points of error. A project
convention that secondary summaries attribute to the LMC paper (Frankle, Dziugaite, Roy,
Carbin, *Linear Mode Connectivity and the Lottery Ticket Hypothesis*), whose own sentence
we could not find (``docs/statistics.md``). Used by the stability report's "stable" verdict
(:func:`tflth.report.stats.stable`, on the pairs' 95 % interval) and as the default of
``bin/report.py --stable_threshold`` (in points)."""

MATCH_MARGIN = 0.005
"""δ, a fraction of test examples: the margin of "matches dense" and "IMP beats <control>",
0.5 accuracy points. Why (``docs/statistics.md``): with 3 replicates a side and the
replicate spread of this project's experiments (s ≈ 0.2 points) the Welch 95 % half-width
is ≈ 2.3 s ≈ 0.45 points, so a smaller δ could never be decided, while IMP-vs-control gaps
of 0.5–1 points are what the reports must resolve. The default of ``bin/report.py
--match_margin`` (in points)."""

IMP = "imp"
"""The method name of IMP's own networks (level 0: the dense network) in result rows and pairs."""

METHOD_ORDER = (IMP, "random_reinit", "random_prune")
"""Methods listed first in every report, in this order (IMP, then the papers' two
controls); any other method (a newly registered control) follows alphabetically."""


def method_key(method: str) -> tuple:
    """Sort key of a method: :data:`METHOD_ORDER` first, in its order, then the others alphabetically."""
    if method in METHOD_ORDER:
        return (0, METHOD_ORDER.index(method), "")
    return (1, 0, method)


LAST_EVALS = 2
"""Evaluations at the end of a run over which its ``last_evals_range`` (max − min of test
accuracy, a fraction) is taken: what IMP's result rows record and the IMP report states
("the last 2 evaluations of a run differ by ... points")."""


@dataclasses.dataclass(frozen=True)
class Measure:
    """The number the IMP report compares between networks: a metric by name and direction.

    Image classification's is test accuracy (:data:`ACCURACY`, higher is better, shown in
    percent with differences in points); a task's (:class:`tflth.tasks.Task`) is its barrier
    metric (``Task.barrier``, ``Task.higher_is_better``), shown in its own units. A result
    row holds it as ``test_<name>`` (:attr:`key`).
    """

    name: str = "accuracy"
    higher_is_better: bool = True

    @property
    def key(self) -> str:
        """The result row's and ``result.json``'s key: ``test_<name>``."""
        return f"test_{self.name}"

    @property
    def percent(self) -> bool:
        """Shown in percent (differences in points): accuracy only."""
        return self.name == "accuracy"

    @property
    def scale(self) -> float:
        """What a value is multiplied by for display."""
        return POINTS_PER_FRACTION if self.percent else 1.0

    @property
    def digits(self) -> int:
        """Decimals shown: 2 for percent, 3 for a metric in its own units."""
        return 2 if self.percent else 3

    @property
    def unit(self) -> str:
        """The unit of a displayed difference (``points``, or ``""`` for the metric's own units)."""
        return "points" if self.percent else ""

    @property
    def sign(self) -> int:
        """+1 where higher is better, −1 where lower is: a difference times it is "better by"."""
        return 1 if self.higher_is_better else -1

    def to_dict(self) -> dict:
        return {"name": self.name, "higher_is_better": self.higher_is_better}

    @classmethod
    def from_dict(cls, data) -> Measure:
        """The inverse of :meth:`to_dict` (as ``hparams.json`` and ``pair.json`` hold it);
        ``KeyError`` / ``TypeError`` on another shape."""
        return cls(str(data["name"]), bool(data["higher_is_better"]))


ACCURACY = Measure()
"""Image classification's measure: test accuracy, higher is better."""

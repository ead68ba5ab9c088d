"""Result rows of an IMP experiment, their summary per (experiment, method, level), and the CSV.

A *result row* is one trained network, as a plain dict with the keys :data:`COLUMNS`::

    {"experiment": "lenet_fmnist", "label": "lenet_300_100 fashion_mnist rewind@0it",
     "method": "imp", "replicate": 0, "level": 3, "density": 0.512,
     "test_accuracy": 0.8912, "test_loss": 0.31}

and optionally ``"last_evals_range"`` (:data:`OPTIONAL_COLUMNS`): how far the run's test
accuracy moved over its last :data:`tflth.conventions.LAST_EVALS` evaluations (max − min, a fraction;
``None`` when it has fewer), so a table can say how much the final number itself moves.

A task's rows (:class:`tflth.tasks.Task`) compare its metric instead of accuracy: they hold
``"metric"`` and ``"higher_is_better"`` (its :class:`tflth.conventions.Measure`) and the value
as ``"test_<metric>"`` in place of ``"test_accuracy"``; the statistics are the same, the
verdicts follow the direction. One report compares one measure.

``method`` is ``"imp"`` for the IMP subnetworks (level 0 is the dense network, density 1.0),
the control's name for the baselines (``"random_reinit"``, ``"random_prune"``, ...), a
one-shot method's name (``"snip"``) and ``"<method>/<control>"`` for a control on its mask.

Conventions (the statistics and the decision rules are :mod:`tflth.report.stats`'s):

* Per (experiment, method, level): n, mean, sample standard deviation (ddof=1) and the
  95 % t interval of the mean test accuracy (undefined for one replicate).
* ``vs_dense``: the Welch difference (this − dense) against the same experiment's level-0
  ``imp`` networks, and ``matches`` its verdict (:func:`tflth.report.stats.matches`, margin
  ``match_margin``, default :data:`tflth.conventions.MATCH_MARGIN`).
* Methods are listed in :func:`tflth.conventions.method_key` order.
* ``vs_imp`` (every method but IMP): the Welch difference (base − this) at the same level,
  and ``imp_beats`` its verdict (:func:`tflth.report.stats.beats`); the base
  (:func:`base_method`) is IMP, except for a control on a one-shot method's mask
  (``"snip/random_prune"``), whose base is that method.

Standard library only (writes go through :mod:`tflth.fileio`).
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio
from tflth.conventions import ACCURACY, IMP, MATCH_MARGIN, Measure, method_key
from tflth.report import stats
from tflth.report.errors import ReportError

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "SummaryRow", "summarize", "write_csv", "read_csv",
           "normalize", "display_name", "by_experiment", "base_method", "measure_of", "columns"]

#: Column order of ``results.csv`` (and the keys every result row must have).
COLUMNS = ("experiment", "label", "method", "replicate", "level", "density", "test_accuracy", "test_loss")
#: Columns a row may have; ``results.csv`` always has them (empty where unknown).
OPTIONAL_COLUMNS = ("last_evals_range",)
_TYPES = {"experiment": str, "label": str, "method": str, "replicate": int, "level": int,
          "density": float, "test_accuracy": float, "test_loss": float}

_DISPLAY = {IMP: "IMP"}


def display_name(method: str) -> str:
    """A method's name in tables and legends (``"imp"`` is shown as ``"IMP"``)."""
    return _DISPLAY.get(method, method)


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """Replicates of one (experiment, method, level), aggregated.

    ``acc`` is the :class:`~tflth.report.stats.Sample` of the replicates' test accuracies
    (mean, sample std, 95 % t interval; std and interval ``None`` for one replicate);
    ``dense`` that of the same experiment's level-0 ``imp`` networks (``None`` when the
    experiment has none). ``vs_dense`` is the Welch difference (this − dense) and
    ``matches`` its verdict (``"yes"`` / ``"no"`` / ``"undecided"``); both are ``None``
    without a dense reference and for the dense row itself. ``vs_imp`` is the Welch
    difference (base − this) and ``imp_beats`` its verdict, for every method but IMP at a
    level with base networks (the base: :func:`base_method`; else ``None``). ``match_margin`` is the δ the verdicts used (a fraction).
    """

    experiment: str
    label: str
    method: str
    level: int
    density: float  # mean over replicates
    acc: stats.Sample
    loss_mean: float
    dense: stats.Sample | None
    vs_dense: stats.Difference | None
    matches: str | None
    vs_imp: stats.Difference | None
    imp_beats: str | None
    match_margin: float
    last_evals_ranges: tuple[float, ...] = ()  # of the members that have one
    measure: Measure = ACCURACY  # what ``acc`` holds: test accuracy, or a task's metric

    @property
    def n(self) -> int:
        return self.acc.n

    @property
    def acc_mean(self) -> float:
        return self.acc.mean

    @property
    def acc_std(self) -> float:
        """Sample std (ddof=1); 0.0 for one replicate (where tables show the mean only)."""
        return 0.0 if self.acc.std is None else self.acc.std

    @property
    def acc_min(self) -> float:
        return min(self.acc.values)

    @property
    def acc_max(self) -> float:
        return max(self.acc.values)

    @property
    def dense_acc_mean(self) -> float | None:
        return None if self.dense is None else self.dense.mean

    @property
    def dense_acc_std(self) -> float | None:
        return None if self.dense is None else (0.0 if self.dense.std is None else self.dense.std)


def measure_of(row: Mapping) -> Measure:
    """The :class:`Measure` a row compares: its ``metric`` and ``higher_is_better``, else accuracy."""
    name = row.get("metric") or ACCURACY.name
    higher = row.get("higher_is_better", True)
    if isinstance(higher, str):
        higher = higher.strip().lower() not in ("false", "0", "")
    return Measure(str(name), bool(higher))


def columns(measure: Measure) -> tuple[str, ...]:
    """The required columns of a row comparing ``measure``: :data:`COLUMNS` with its key
    (``test_<metric>``) for ``test_accuracy``."""
    return tuple(dict.fromkeys(measure.key if c == "test_accuracy" else c for c in COLUMNS))


def normalize(row: Mapping, index: int) -> dict:
    """``row`` reduced to its columns (:func:`columns`) and :data:`OPTIONAL_COLUMNS` with
    their types (an absent or empty optional value is ``None``), plus ``metric`` and
    ``higher_is_better`` for a task's row; ``ValueError`` naming row ``index``."""
    measure = measure_of(row)
    wanted = columns(measure)
    missing = [c for c in wanted if c not in row]
    if missing:
        raise ReportError(f"result row {index} lacks {', '.join(missing)}: {dict(row)!r}")
    out = {}
    for typed in COLUMNS:
        c = measure.key if typed == "test_accuracy" else typed
        if c in out:
            continue  # a task whose measure is its loss
        try:
            out[c] = _TYPES[typed](row[c])
        except (TypeError, ValueError):
            raise ReportError(f"result row {index}: {c}={row[c]!r} is not a {_TYPES[typed].__name__}") from None
    if measure != ACCURACY:
        out.update(metric=measure.name, higher_is_better=measure.higher_is_better)
    for c in OPTIONAL_COLUMNS:
        value = row.get(c)
        try:
            out[c] = None if value is None or value == "" else float(value)
        except (TypeError, ValueError):
            raise ReportError(f"result row {index}: {c}={value!r} is not a number") from None
    if not 0.0 < out["density"] <= 1.0:
        raise ReportError(f"result row {index}: density {out['density']!r} is not in (0, 1]")
    if out["level"] < 0 or out["replicate"] < 0:
        raise ReportError(f"result row {index}: negative level or replicate")
    return out


def summarize(rows: Iterable[Mapping], match_margin: float = MATCH_MARGIN) -> list[SummaryRow]:
    """Group ``rows`` by (experiment, method, level) into :class:`SummaryRow` s.

    Each row gets its replicates' statistics, its Welch difference to the experiment's
    dense networks with the "matches dense" verdict and, for a control, IMP's Welch
    difference to it with the "IMP beats <control>" verdict (rules:
    :mod:`tflth.report.stats`; ``match_margin`` is δ as a fraction, 0.005 = 0.5 points).

    Sorted by experiment (in the order the rows first name them, so ``bin/report.py
    --experiments=a,b`` reports a before b), level, then method (imp, random_reinit,
    random_prune, others alphabetically). Two rows with the same (experiment, method, level, replicate) raise
    ``ValueError``: they would silently count one network twice, as does a negative or
    non-finite ``match_margin``.
    """
    stats.matches_rule(match_margin)  # checks the margin before any work
    rows = [normalize(r, i) for i, r in enumerate(rows)]
    measures = {measure_of(r) for r in rows}
    if len(measures) > 1:
        raise ReportError(f"the rows compare different measures ({sorted(m.name for m in measures)}): one report "
                          "compares one (report each task's experiments on their own)")
    measure = measures.pop() if measures else ACCURACY
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for r in rows:
        key = (r["experiment"], r["method"], r["level"])
        if key + (r["replicate"],) in seen:
            raise ReportError(f"duplicate result for experiment={key[0]!r} method={key[1]!r} "
                             f"level={key[2]} replicate={r['replicate']}")
        seen.add(key + (r["replicate"],))
        groups.setdefault(key, []).append(r)

    samples = {key: stats.describe(m[measure.key] for m in members) for key, members in groups.items()}
    out = []
    for (exp, method, level), members in groups.items():
        acc = samples[exp, method, level]
        dense = samples.get((exp, IMP, 0))
        vs_dense = None if dense is None or (method, level) == (IMP, 0) else stats.welch(acc, dense)
        reference = samples.get((exp, base_method(method), level))
        vs_imp = None if reference is None or method == IMP else stats.welch(reference, acc)
        moved = [m["last_evals_range"] for m in members if m["last_evals_range"] is not None]
        out.append(SummaryRow(
            experiment=exp, label=members[0]["label"], method=method, level=level,
            density=statistics.fmean(m["density"] for m in members), acc=acc,
            loss_mean=statistics.fmean(m["test_loss"] for m in members), dense=dense,
            vs_dense=vs_dense,
            matches=None if vs_dense is None else stats.matches(stats.oriented(vs_dense, measure), match_margin),
            vs_imp=vs_imp,
            imp_beats=None if vs_imp is None else stats.beats(stats.oriented(vs_imp, measure), match_margin),
            match_margin=match_margin, last_evals_ranges=tuple(moved), measure=measure,
        ))
    order = {e: i for i, e in enumerate(dict.fromkeys(r["experiment"] for r in rows))}
    out.sort(key=lambda s: (order[s.experiment], s.level, method_key(s.method)))
    return out


def base_method(method: str) -> str:
    """What a method is compared with at its level (``vs_imp``): the one-shot method for a
    control on its mask (``"snip/random_prune"`` -> ``"snip"``), else IMP."""
    return method.rsplit("/", 1)[0] if "/" in method else IMP


def by_experiment(summary: Sequence[SummaryRow]) -> list[list[SummaryRow]]:
    """``summary`` split per experiment (experiments and rows in their order in ``summary``)."""
    groups: dict[str, list[SummaryRow]] = {}
    for s in summary:
        groups.setdefault(s.experiment, []).append(s)
    return list(groups.values())


def write_csv(path: str, rows: Iterable[Mapping]) -> str:
    """Write every row to ``path`` with columns :data:`COLUMNS` + :data:`OPTIONAL_COLUMNS`
    (other keys are dropped; an unknown optional value is an empty cell).

    Atomic (:func:`tflth.fileio.atomic_write`): a bad row leaves any previous file intact.
    """
    rows = [normalize(r, i) for i, r in enumerate(rows)]
    measure = measure_of(rows[0]) if rows else ACCURACY
    fields = columns(measure) + OPTIONAL_COLUMNS + (() if measure == ACCURACY else ("metric", "higher_is_better"))

    def write(f):
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        # floats are written with repr(): they read back exactly; None (unknown) is an empty cell
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)

    return fileio.atomic_write(path, write, text=True)


def read_csv(path: str) -> list[dict]:
    """Read a file written by :func:`write_csv` back into typed rows (also one written
    before :data:`OPTIONAL_COLUMNS` existed, with :data:`COLUMNS` only)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        names = tuple(reader.fieldnames or ())
        task = names[-2:] == ("metric", "higher_is_better")
        if not task and names not in (COLUMNS, COLUMNS + OPTIONAL_COLUMNS):
            raise ReportError(f"{path}: columns {reader.fieldnames} are not {list(COLUMNS + OPTIONAL_COLUMNS)}")
        return [normalize(r, i) for i, r in enumerate(reader)]

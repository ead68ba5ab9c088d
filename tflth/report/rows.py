"""Result rows of an IMP experiment, their summary per (experiment, method, level), and the CSV.

A *result row* is one trained network, as a plain dict with the keys :data:`COLUMNS`::

    {"experiment": "lenet_fmnist", "label": "lenet_300_100 fashion_mnist rewind@0it",
     "method": "imp", "replicate": 0, "level": 3, "density": 0.512,
     "test_accuracy": 0.8912, "test_loss": 0.31}

and optionally ``"last_evals_range"`` (:data:`OPTIONAL_COLUMNS`): how far the run's test
accuracy moved over its last :data:`LAST_EVALS` evaluations (max − min, a fraction;
``None`` when it has fewer), so a table can say how much the final number itself moves.

``method`` is ``"imp"`` for the IMP subnetworks (level 0 is the dense network, density 1.0)
and the control's name for the baselines (``"random_reinit"``, ``"random_prune"``, ...).

Conventions:

* The spread over replicates is the **sample** standard deviation (``ddof=1``) when there
  are at least two replicates, else 0.
* A (method, level) cell is *matching* when its mean test accuracy is at least the dense
  network's mean (same experiment, level 0, ``imp``) minus ``match_tolerance`` (default
  0.002: "within 0.2 points", as in the Linear Mode Connectivity paper). The comparison
  allows 1e-9 of floating-point slack so a mean exactly at the boundary matches.

Standard library only (writes go through :mod:`tflth.fileio`).
"""

from __future__ import annotations

import csv
import dataclasses
import statistics
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "LAST_EVALS", "METHOD_ORDER", "SummaryRow", "summarize", "write_csv", "read_csv",
           "normalize", "method_key", "display_name", "by_experiment"]

#: Column order of ``results.csv`` (and the keys every result row must have).
COLUMNS = ("experiment", "label", "method", "replicate", "level", "density", "test_accuracy", "test_loss")
#: Columns a row may have; ``results.csv`` always has them (empty where unknown).
OPTIONAL_COLUMNS = ("last_evals_range",)
#: Evaluations at the end of a run over which ``last_evals_range`` is taken.
LAST_EVALS = 2
_TYPES = {"experiment": str, "label": str, "method": str, "replicate": int, "level": int,
          "density": float, "test_accuracy": float, "test_loss": float}

#: Methods listed first, in this order; any other method follows alphabetically.
METHOD_ORDER = ("imp", "random_reinit", "random_prune")
_DISPLAY = {"imp": "IMP"}
_MATCH_SLACK = 1e-9


def method_key(method: str):
    """Sort key of a method: :data:`METHOD_ORDER` first, then the others alphabetically."""
    if method in METHOD_ORDER:
        return (0, METHOD_ORDER.index(method), "")
    return (1, 0, method)


def display_name(method: str) -> str:
    """A method's name in tables and legends (``"imp"`` is shown as ``"IMP"``)."""
    return _DISPLAY.get(method, method)


@dataclasses.dataclass(frozen=True)
class SummaryRow:
    """Replicates of one (experiment, method, level), aggregated.

    ``acc_std`` is the sample standard deviation (ddof=1), 0 for a single replicate.
    ``dense_acc_mean`` / ``dense_acc_std`` describe the same experiment's level-0 ``imp``
    networks and are ``None`` when the experiment has none; ``matches`` is then ``None``.
    """

    experiment: str
    label: str
    method: str
    level: int
    density: float  # mean over replicates
    n: int
    acc_mean: float
    acc_std: float
    acc_min: float
    acc_max: float
    loss_mean: float
    dense_acc_mean: float | None
    dense_acc_std: float | None
    matches: bool | None
    match_tolerance: float
    last_evals_ranges: tuple[float, ...] = ()  # of the members that have one


def normalize(row: Mapping, index: int) -> dict:
    """``row`` reduced to :data:`COLUMNS` and :data:`OPTIONAL_COLUMNS` with their types
    (an absent or empty optional value is ``None``); ``ValueError`` naming row ``index``."""
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row {index} lacks {', '.join(missing)}: {dict(row)!r}")
    out = {}
    for c in COLUMNS:
        try:
            out[c] = _TYPES[c](row[c])
        except (TypeError, ValueError):
            raise ValueError(f"result row {index}: {c}={row[c]!r} is not a {_TYPES[c].__name__}") from None
    for c in OPTIONAL_COLUMNS:
        value = row.get(c)
        try:
            out[c] = None if value is None or value == "" else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"result row {index}: {c}={value!r} is not a number") from None
    if not 0.0 < out["density"] <= 1.0:
        raise ValueError(f"result row {index}: density {out['density']!r} is not in (0, 1]")
    if out["level"] < 0 or out["replicate"] < 0:
        raise ValueError(f"result row {index}: negative level or replicate")
    return out


def summarize(rows: Iterable[Mapping], match_tolerance: float = 0.002) -> list[SummaryRow]:
    """Group ``rows`` by (experiment, method, level) into :class:`SummaryRow` s.

    Sorted by experiment (in the order the rows first name them, so ``bin/report.py
    --experiments=a,b`` reports a before b), level, then method (imp, random_reinit,
    random_prune, others alphabetically). Two rows with the same (experiment, method, level, replicate) raise
    ``ValueError``: they would silently count one network twice.
    """
    rows = [normalize(r, i) for i, r in enumerate(rows)]
    groups: dict[tuple, list[dict]] = {}
    seen = set()
    for r in rows:
        key = (r["experiment"], r["method"], r["level"])
        if key + (r["replicate"],) in seen:
            raise ValueError(f"duplicate result for experiment={key[0]!r} method={key[1]!r} "
                             f"level={key[2]} replicate={r['replicate']}")
        seen.add(key + (r["replicate"],))
        groups.setdefault(key, []).append(r)

    def stats(members):
        accs = [m["test_accuracy"] for m in members]
        return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)

    dense = {exp: stats(members) for (exp, method, level), members in groups.items()
             if level == 0 and method == "imp"}
    out = []
    for (exp, method, level), members in groups.items():
        mean, std = stats(members)
        accs = [m["test_accuracy"] for m in members]
        dense_mean, dense_std = dense.get(exp, (None, None))
        matches = None if dense_mean is None else bool(mean >= dense_mean - match_tolerance - _MATCH_SLACK)
        moved = [m["last_evals_range"] for m in members if m["last_evals_range"] is not None]
        out.append(SummaryRow(
            experiment=exp, label=members[0]["label"], method=method, level=level,
            density=statistics.fmean(m["density"] for m in members), n=len(members),
            acc_mean=mean, acc_std=std, acc_min=min(accs), acc_max=max(accs),
            loss_mean=statistics.fmean(m["test_loss"] for m in members),
            dense_acc_mean=dense_mean, dense_acc_std=dense_std, matches=matches,
            match_tolerance=match_tolerance,
            last_evals_ranges=tuple(moved),
        ))
    order = {e: i for i, e in enumerate(dict.fromkeys(r["experiment"] for r in rows))}
    out.sort(key=lambda s: (order[s.experiment], s.level, method_key(s.method)))
    return out


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

    def write(f):
        w = csv.DictWriter(f, fieldnames=COLUMNS + OPTIONAL_COLUMNS, lineterminator="\n")
        w.writeheader()
        # floats are written with repr(): they read back exactly; None (unknown) is an empty cell
        w.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)

    return fileio.atomic_write(path, write, text=True)


def read_csv(path: str) -> list[dict]:
    """Read a file written by :func:`write_csv` back into typed rows (also one written
    before :data:`OPTIONAL_COLUMNS` existed, with :data:`COLUMNS` only)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) not in (COLUMNS, COLUMNS + OPTIONAL_COLUMNS):
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(COLUMNS + OPTIONAL_COLUMNS)}")
        return [normalize(r, i) for i, r in enumerate(reader)]

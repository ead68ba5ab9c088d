"""Reports of lottery-ticket experiments: a CSV, Markdown / text tables and a PNG figure.

The input is a list of *result rows*, one per trained network, as plain dicts::

    {"experiment": "lenet_fmnist", "label": "lenet_300_100 fashion_mnist rewind@0it",
     "method": "imp", "replicate": 0, "level": 3, "density": 0.512,
     "test_accuracy": 0.8912, "test_loss": 0.31}

``method`` is ``"imp"`` for the IMP subnetworks (level 0 is the dense network, density 1.0)
and the control's name for the baselines (``"random_reinit"``, ``"random_prune"``, ...).
:func:`collect` reads such rows from an experiment directory, :func:`summarize` groups them
by (experiment, method, level), and :func:`write_report` writes ``results.csv``,
``results.md`` and ``results.png``.

Conventions:

* The spread over replicates is the **sample** standard deviation (``ddof=1``) when there
  are at least two replicates, else 0. The figure draws it as error bars of ±1 std; the
  dense accuracy is a horizontal band of mean ± std of level 0.
* A (method, level) cell is *matching* when its mean test accuracy is at least the dense
  network's mean (same experiment, level 0, ``imp``) minus ``match_tolerance`` (default
  0.002: "within 0.2 points", as in the Linear Mode Connectivity paper). The comparison
  allows 1e-9 of floating-point slack so a mean exactly at the boundary matches.

This module imports only the standard library; matplotlib is imported inside :func:`plot`,
and TensorFlow never.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "COLUMNS",
    "METHOD_ORDER",
    "SummaryRow",
    "collect",
    "markdown_table",
    "plot",
    "read_csv",
    "summarize",
    "text_table",
    "write_csv",
    "write_report",
]

#: Column order of ``results.csv`` (and the keys every result row must have).
COLUMNS = ("experiment", "label", "method", "replicate", "level", "density", "test_accuracy", "test_loss")
_TYPES = {"experiment": str, "label": str, "method": str, "replicate": int, "level": int,
          "density": float, "test_accuracy": float, "test_loss": float}

#: Methods listed first, in this order; any other method follows alphabetically.
METHOD_ORDER = ("imp", "random_reinit", "random_prune")
_DISPLAY = {"imp": "IMP"}
_MATCH_SLACK = 1e-9
_REPLICATE_RE = re.compile(r"^replicate_(\d+)$")
_LEVEL_RE = re.compile(r"^level_(\d+)$")


def _method_key(method: str):
    if method in METHOD_ORDER:
        return (0, METHOD_ORDER.index(method), "")
    return (1, 0, method)


def _display(method: str) -> str:
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


# ----------------------------------------------------------------------------- rows

def _normalize(row: Mapping, index: int) -> dict:
    missing = [c for c in COLUMNS if c not in row]
    if missing:
        raise ValueError(f"result row {index} lacks {', '.join(missing)}: {dict(row)!r}")
    out = {}
    for c in COLUMNS:
        try:
            out[c] = _TYPES[c](row[c])
        except (TypeError, ValueError):
            raise ValueError(f"result row {index}: {c}={row[c]!r} is not a {_TYPES[c].__name__}") from None
    if not 0.0 < out["density"] <= 1.0:
        raise ValueError(f"result row {index}: density {out['density']!r} is not in (0, 1]")
    if out["level"] < 0 or out["replicate"] < 0:
        raise ValueError(f"result row {index}: negative level or replicate")
    return out


def summarize(rows: Iterable[Mapping], match_tolerance: float = 0.002) -> list[SummaryRow]:
    """Group ``rows`` by (experiment, method, level) into :class:`SummaryRow` s.

    Sorted by experiment, level, then method (imp, random_reinit, random_prune, others
    alphabetically). Two rows with the same (experiment, method, level, replicate) raise
    ``ValueError``: they would silently count one network twice.
    """
    rows = [_normalize(r, i) for i, r in enumerate(rows)]
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
        out.append(SummaryRow(
            experiment=exp, label=members[0]["label"], method=method, level=level,
            density=statistics.fmean(m["density"] for m in members), n=len(members),
            acc_mean=mean, acc_std=std, acc_min=min(accs), acc_max=max(accs),
            loss_mean=statistics.fmean(m["test_loss"] for m in members),
            dense_acc_mean=dense_mean, dense_acc_std=dense_std, matches=matches,
            match_tolerance=match_tolerance,
        ))
    out.sort(key=lambda s: (s.experiment, s.level, _method_key(s.method)))
    return out


# ----------------------------------------------------------------------------- files

def _atomic_write(path: str, write, mode: str = "w") -> str:
    """Call ``write(f)`` on a temp file next to ``path``, then ``os.replace`` it into place."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{base}.", suffix=".tmp")
    try:
        kwargs = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_csv(path: str, rows: Iterable[Mapping]) -> str:
    """Write every row to ``path`` with columns :data:`COLUMNS` (extra keys are dropped)."""
    rows = [_normalize(r, i) for i, r in enumerate(rows)]

    def write(f):
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)  # floats are written with repr(): they read back exactly

    return _atomic_write(path, write)


def read_csv(path: str) -> list[dict]:
    """Read a file written by :func:`write_csv` back into typed rows."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not {list(COLUMNS)}")
        return [_normalize(r, i) for i, r in enumerate(reader)]


def _read_json(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def _result_fields(path: str) -> dict:
    data = _read_json(path)
    try:
        return {"test_accuracy": float(data["test_accuracy"]), "test_loss": float(data["test_loss"])}
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: needs numeric test_accuracy and test_loss") from None


def _numbered_subdirs(directory: str, pattern: re.Pattern) -> list[tuple[int, str]]:
    out = []
    for name in os.listdir(directory):
        m = pattern.match(name)
        path = os.path.join(directory, name)
        if m and os.path.isdir(path):
            out.append((int(m.group(1)), path))
    return sorted(out)


def collect(experiment_dir: str) -> list[dict]:
    """Read the result rows of one experiment directory.

    Layout: ``hparams.json`` (its ``"label"`` names the experiment; the directory's name is
    used when it has none), ``replicate_<r>/level_<L>/result.json`` and ``density.json`` for
    the IMP network of each level, and ``replicate_<r>/level_<L>/<control>/result.json`` for
    each control (method ``<control>``, at the level's density). A level without
    ``result.json`` is unfinished and yields no IMP row; a control whose ``result.json``
    exists is collected regardless. Level 0 without ``density.json`` has density 1.0; any
    other level with results but no ``density.json`` raises ``ValueError``.
    """
    experiment_dir = os.fspath(experiment_dir)
    hp_path = os.path.join(experiment_dir, "hparams.json")
    if not os.path.isdir(experiment_dir) or not os.path.isfile(hp_path):
        raise ValueError(f"{experiment_dir} is not an experiment directory (no hparams.json)")
    hparams = _read_json(hp_path)
    name = os.path.basename(os.path.normpath(os.path.abspath(experiment_dir)))
    label = hparams.get("label", name) if isinstance(hparams, dict) else None
    if not isinstance(label, str):
        raise ValueError(f"{hp_path}: 'label' must be a string, got {label!r}")

    rows = []
    for replicate, rep_dir in _numbered_subdirs(experiment_dir, _REPLICATE_RE):
        for level, level_dir in _numbered_subdirs(rep_dir, _LEVEL_RE):
            found = []  # (method, result.json)
            own = os.path.join(level_dir, "result.json")
            if os.path.isfile(own):
                found.append(("imp", own))
            for entry in sorted(os.listdir(level_dir)):
                control = os.path.join(level_dir, entry, "result.json")
                if os.path.isfile(control):
                    found.append((entry, control))
            if not found:
                continue
            density_path = os.path.join(level_dir, "density.json")
            if os.path.isfile(density_path):
                data = _read_json(density_path)
                try:
                    density = float(data["density"])
                except (KeyError, TypeError, ValueError):
                    raise ValueError(f"{density_path}: needs a numeric 'density'") from None
            elif level == 0:
                density = 1.0
            else:
                raise ValueError(f"{level_dir} has results but no density.json")
            for method, result_path in found:
                rows.append({"experiment": name, "label": label, "method": method,
                             "replicate": replicate, "level": level, "density": density,
                             **_result_fields(result_path)})
    rows.sort(key=lambda r: (r["replicate"], r["level"], _method_key(r["method"])))
    return rows


# ----------------------------------------------------------------------------- tables

def _fmt_density(density: float, tick: bool = False) -> str:
    """Density (a fraction) as a percentage: ``16.8``, ``3.5``; 2 significant digits below 1 %."""
    pct = density * 100.0
    s = f"{pct:.1f}" if pct >= 0.995 else f"{pct:.2g}"
    if tick and s.endswith(".0"):
        s = s[:-2]
    return s


def _fmt_acc(s: SummaryRow | None, n_max: int) -> str:
    if s is None:
        return "—"
    text = f"{s.acc_mean * 100:.2f}" if s.n == 1 else f"{s.acc_mean * 100:.2f} ± {s.acc_std * 100:.2f}"
    if s.n < n_max:  # fewer replicates than elsewhere in the experiment (unfinished runs)
        text += f" (n={s.n})"
    return text


def _experiments(summary: Sequence[SummaryRow]) -> list[list[SummaryRow]]:
    by_exp: dict[str, list[SummaryRow]] = {}
    for s in summary:
        by_exp.setdefault(s.experiment, []).append(s)
    return [by_exp[e] for e in sorted(by_exp)]


def _table_parts(rows: list[SummaryRow], long_names: bool = True):
    """Heading text, column names and cell strings of one experiment's table."""
    methods = sorted({s.method for s in rows}, key=_method_key)
    n_max = max(s.n for s in rows)
    first = rows[0]
    tol_pts = first.match_tolerance * 100
    dense_rows = [s for s in rows if s.level == 0 and s.method == "imp"]
    if not dense_rows:
        dense = "no dense (level 0) result"
    elif dense_rows[0].n == 1:
        dense = f"dense test accuracy {first.dense_acc_mean * 100:.2f} %"
    else:
        dense = f"dense test accuracy {first.dense_acc_mean * 100:.2f} ± {first.dense_acc_std * 100:.2f} %"
    reps = f"{n_max} replicate" + ("s" if n_max != 1 else "")
    heading = (f"{first.label} ({first.experiment}): {dense}; {reps}; "
               f"'matches dense' = mean within {tol_pts:g} points of dense")
    suffix = " mean ± std" if long_names else ""
    header = (["level", "density (%)"]
              + [f"{_display(m)} acc (%){suffix}" for m in methods] + ["matches dense"])
    body = []
    for level in sorted({s.level for s in rows}):
        cells = {s.method: s for s in rows if s.level == level}
        density = cells.get("imp", next(iter(cells.values()))).density
        if first.dense_acc_mean is None:
            matching = "n/a"
        else:
            matching = ", ".join(_display(m) for m in methods if m in cells and cells[m].matches) or "no"
        body.append([str(level), _fmt_density(density)]
                    + [_fmt_acc(cells.get(m), n_max) for m in methods] + [matching])
    return heading, header, body


def markdown_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: per experiment, a heading line and a table with one row per level.

    Accuracy cells are ``mean ± std`` in percent (std: sample, ddof=1; only the mean for a
    single replicate; ``(n=k)`` when a cell has fewer replicates than the experiment's
    most). ``matches dense`` lists the methods whose mean matches the dense network.
    """
    if not summary:
        return "_No results._\n"
    parts = []
    for rows in _experiments(summary):
        heading, header, body = _table_parts(rows)
        lines = [f"**{heading}**", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join("---:" if i < len(header) - 1 else ":---" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def text_table(summary: Sequence[SummaryRow]) -> str:
    """The tables of :func:`markdown_table`, aligned in plain text for a terminal."""
    if not summary:
        return "(no results)\n"
    parts = []
    for rows in _experiments(summary):
        heading, header, body = _table_parts(rows, long_names=False)
        heading += "; accuracies: mean ± std"
        widths = [max(len(r[i]) for r in [header] + body) for i in range(len(header))]
        sep = "  "

        def line(cells, widths=widths):
            return sep.join(c.ljust(w) if i == len(cells) - 1 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = sep.join("-" * w for w in widths)
        parts.append("\n".join([heading, line(header), rule] + [line(r) for r in body]) + "\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- figure

_MARKERS = {"imp": "o", "random_reinit": "s", "random_prune": "^"}
_OTHER_MARKERS = ("D", "v", "P", "X", "*", "<", ">")


def _thin_ticks(values: list[float], max_ticks: int = 18) -> list[float]:
    """Densest-first values, dropped where they would crowd on a log axis; keeps both ends."""
    values = sorted(set(values), reverse=True)
    if len(values) <= 2:
        return values
    gap = math.log10(values[0] / values[-1]) / (max_ticks - 1)
    kept = [values[0]]
    for v in values[1:]:
        if math.log10(kept[-1] / v) >= gap * 0.999:
            kept.append(v)
    if kept[-1] != values[-1]:
        if len(kept) > 1 and math.log10(kept[-1] / values[-1]) < gap:
            kept[-1] = values[-1]
        else:
            kept.append(values[-1])
    return kept


def plot(path: str, summary: Sequence[SummaryRow], title: str | None = None) -> str:
    """Write a PNG of test accuracy (%) against density (%) to ``path`` (atomically).

    Log-scaled, inverted x axis (dense on the left) with ticks at the measured densities;
    one line per (experiment, method) with ±1 sample-std error bars over replicates; the
    dense accuracy of each experiment as a band of mean ± std. Uses the Agg canvas directly
    (no pyplot, no global backend change, no display).
    """
    fig = _figure(summary, title)

    def write(f):
        fig.savefig(f, format="png", bbox_inches="tight")

    return _atomic_write(path, write, mode="wb")


def _figure(summary: Sequence[SummaryRow], title: str | None = None):
    """The :func:`plot` figure: a ``matplotlib.figure.Figure`` on an Agg canvas."""
    summary = list(summary)
    if not summary:
        raise ValueError("plot: no results to plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    fig = Figure(figsize=(8.0, 5.0), dpi=150)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    experiments = _experiments(summary)
    multi = len(experiments) > 1
    other_methods = sorted({s.method for s in summary if s.method not in _MARKERS})
    color_i = 0
    densities = []
    for rows in experiments:
        first = rows[0]
        exp_color = colors[color_i % len(colors)]
        if first.dense_acc_mean is not None:
            m, sd = first.dense_acc_mean * 100, first.dense_acc_std * 100
            prefix = f"{first.label}: " if multi else ""
            line = ax.axhline(m, color=exp_color, lw=0.9, ls=":", zorder=1)
            if sd > 0:
                ax.axhspan(m - sd, m + sd, color=exp_color, alpha=0.15, lw=0, zorder=0,
                           label=f"{prefix}dense {m:.2f} ± {sd:.2f} %")
            else:
                line.set_label(f"{prefix}dense {m:.2f} %")
        for method in sorted({s.method for s in rows}, key=_method_key):
            pts = sorted((s for s in rows if s.method == method), key=lambda s: -s.density)
            x = [s.density * 100 for s in pts]
            densities += x
            marker = _MARKERS.get(method) or _OTHER_MARKERS[other_methods.index(method) % len(_OTHER_MARKERS)]
            n = max(s.n for s in pts)
            name = f"{first.label}: {_display(method)}" if multi else _display(method)
            ax.errorbar(x, [s.acc_mean * 100 for s in pts], yerr=[s.acc_std * 100 for s in pts],
                        color=colors[color_i % len(colors)], marker=marker, ms=5,
                        ls="-" if method == "imp" else "--", lw=1.6, capsize=3, elinewidth=1,
                        label=f"{name} (n={n})", zorder=3)
            color_i += 1

    ax.set_xscale("log")
    lo, hi = min(densities), max(densities)
    ax.set_xlim(hi * 1.12, lo / 1.12)  # left > right: inverted, dense on the left
    ticks = _thin_ticks(densities)
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([_fmt_density(t / 100, tick=True) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) > 12:
        for t in ax.get_xticklabels():
            t.set_rotation(45)
            t.set_horizontalalignment("right")
    ax.set_xlabel("Density (% of prunable weights remaining, log scale)")
    ax.set_ylabel("Test accuracy (%)")
    if title is None:
        title = experiments[0][0].label if not multi else "Test accuracy vs. density"
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.35, lw=0.6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small",
              title="error bars: ±1 std\nover replicates", title_fontsize="small", frameon=False)
    return fig


# ----------------------------------------------------------------------------- all of it

def write_report(output_dir: str, rows: Iterable[Mapping], title: str | None = None) -> dict:
    """Write ``results.csv``, ``results.md`` and ``results.png`` into ``output_dir``.

    Returns ``{"csv": path, "markdown": path, "plot": path}``.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("write_report: no result rows")
    os.makedirs(output_dir, exist_ok=True)
    summary = summarize(rows)
    paths = {"csv": os.path.join(output_dir, "results.csv"),
             "markdown": os.path.join(output_dir, "results.md"),
             "plot": os.path.join(output_dir, "results.png")}
    write_csv(paths["csv"], rows)
    md = io.StringIO()
    if title:
        md.write(f"# {title}\n\n")
    md.write(markdown_table(summary))
    md.write("\n![test accuracy vs density](results.png)\n")
    _atomic_write(paths["markdown"], lambda f: f.write(md.getvalue()))
    plot(paths["plot"], summary, title=title)
    return paths

"""The IMP report: per-experiment accuracy tables, the accuracy-vs-density figure, ``write_report``.

Built on the generic :mod:`tflth.report.tables` and :mod:`tflth.report.plots`, from the
:class:`~tflth.report.rows.SummaryRow` s of :func:`tflth.report.rows.summarize`.

* Accuracy cells are ``mean ± std`` in percent (std: sample, ddof=1; only the mean for a
  single replicate; ``(n=k)`` when a cell has fewer replicates than the experiment's most).
* The figure draws the spread as error bars of ±1 std; the dense accuracy is a horizontal
  band of mean ± std of level 0.

Standard library at module level; matplotlib only inside :func:`plot`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio
from tflth.report import plots, tables
from tflth.report.rows import LAST_EVALS, SummaryRow, by_experiment, display_name, method_key, summarize, write_csv

__all__ = ["markdown_table", "comparison_table", "text_table", "plot", "write_report"]

_MARKERS = {"imp": "o", "random_reinit": "s", "random_prune": "^"}
_OTHER_MARKERS = ("D", "v", "P", "X", "*", "<", ">")


# ----------------------------------------------------------------------------- tables

def _fmt_acc(s: SummaryRow | None, n_max: int) -> str:
    if s is None:
        return tables.fmt_mean_std(None)
    return tables.fmt_mean_std(s.acc_mean, s.acc_std, scale=100, n=s.n, n_max=n_max)


def _methods(rows: Iterable[SummaryRow]) -> list[str]:
    """The methods in ``rows``, in report order (:func:`~tflth.report.rows.method_key`)."""
    return sorted({s.method for s in rows}, key=method_key)


def _level_density(at_level: Sequence[SummaryRow]) -> float:
    """A level's density: its IMP row's, else that of its first row."""
    return next((s for s in at_level if s.method == "imp"), at_level[0]).density


def _table_parts(rows: list[SummaryRow], long_names: bool = True):
    """Heading text, column names, alignment and cell strings of one experiment's table."""
    methods = _methods(rows)
    n_max = max(s.n for s in rows)
    first = rows[0]
    tol_pts = first.match_tolerance * 100
    dense_rows = [s for s in rows if s.level == 0 and s.method == "imp"]
    if not dense_rows:
        dense = "no dense (level 0) result"
    else:
        acc = tables.fmt_mean_std(first.dense_acc_mean, first.dense_acc_std, scale=100, n=dense_rows[0].n)
        dense = f"dense test accuracy {acc} %"
    reps = f"{n_max} replicate" + ("s" if n_max != 1 else "")
    heading = (f"{first.label} ({first.experiment}): {dense}; {reps}; "
               f"'matches dense' = mean within {tol_pts:g} points of dense{_last_evals_note(rows)}")
    suffix = " mean ± std" if long_names else ""
    header = (["level", "density (%)"]
              + [f"{display_name(m)} acc (%){suffix}" for m in methods] + ["matches dense"])
    align = "r" * (len(header) - 1) + "l"
    body = []
    for level in sorted({s.level for s in rows}):
        cells = {s.method: s for s in rows if s.level == level}
        density = _level_density(list(cells.values()))
        if first.dense_acc_mean is None:
            matching = "n/a"
        else:
            matching = ", ".join(display_name(m) for m in methods if m in cells and cells[m].matches) or "no"
        body.append([str(level), tables.fmt_percent(density)]
                    + [_fmt_acc(cells.get(m), n_max) for m in methods] + [matching])
    return heading, header, align, body


def _last_evals_note(rows: list[SummaryRow]) -> str:
    """``; last 2 evaluations of a run differ by 0.31 points on average (max 0.80)``, or ``""``."""
    ranges = [r for s in rows for r in s.last_evals_ranges]
    if not ranges:
        return ""
    mean, worst = sum(ranges) / len(ranges) * 100, max(ranges) * 100
    return (f"; the last {LAST_EVALS} evaluations of a run differ by {mean:.2f} points on average "
            f"(max {worst:.2f})")


def markdown_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: per experiment, a heading line and a table with one row per level.

    Accuracy cells are ``mean ± std`` in percent (std: sample, ddof=1; only the mean for a
    single replicate; ``(n=k)`` when a cell has fewer replicates than the experiment's
    most). ``matches dense`` lists the methods whose mean matches the dense network.
    """
    if not summary:
        return "_No results._\n"
    parts = []
    for rows in by_experiment(summary):
        heading, header, align, body = _table_parts(rows)
        parts.append(tables.render_markdown(header, body, align=align, title=heading))
    return "\n".join(parts)


def text_table(summary: Sequence[SummaryRow]) -> str:
    """The tables of :func:`markdown_table`, aligned in plain text for a terminal."""
    if not summary:
        return "(no results)\n"
    parts = []
    for rows in by_experiment(summary):
        heading, header, align, body = _table_parts(rows, long_names=False)
        parts.append(tables.render_text(header, body, align=align, title=heading + "; accuracies: mean ± std"))
    return "\n".join(parts)


def comparison_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: every experiment side by side, one row per level, one column per
    (experiment, method), headed ``<label>: <method>``; ``""`` for fewer than two experiments.

    For experiments that prune alike (the same densities per level) and differ in another
    setting, e.g. IMP rewound to k = 0 and to k > 0 with its controls. The density column
    is the first experiment's that has the level; cells as in :func:`markdown_table`.
    """
    experiments = by_experiment(summary)
    if len(experiments) < 2:
        return ""
    columns = [(rows[0].experiment, rows[0].label, m)
               for rows in experiments for m in _methods(rows)]
    n_max = {rows[0].experiment: max(s.n for s in rows) for rows in experiments}
    cells = {(s.experiment, s.method, s.level): s for s in summary}
    header = ["level", "density (%)"] + [f"{label}: {display_name(m)} acc (%)" for _, label, m in columns]
    body = []
    for level in sorted({s.level for s in summary}):
        density = _level_density([s for s in summary if s.level == level])
        body.append([str(level), tables.fmt_percent(density)]
                    + [_fmt_acc(cells.get((e, m, level)), n_max[e]) for e, _, m in columns])
    return tables.render_markdown(header, body, align="r" * len(header),
                                  title="All experiments by level (mean ± std over replicates)")


# ----------------------------------------------------------------------------- figure

def plot(path: str, summary: Sequence[SummaryRow], title: str | None = None) -> str:
    """Write a PNG of test accuracy (%) against density (%) to ``path`` (atomically).

    Log-scaled, inverted x axis (dense on the left) with ticks at the measured densities;
    one line per (experiment, method) with ±1 sample-std error bars over replicates; the
    dense accuracy of each experiment as a band of mean ± std. Uses the Agg canvas directly
    (no pyplot, no global backend change, no display).
    """
    return plots.save_figure(path, _figure(summary, title))


def _figure(summary: Sequence[SummaryRow], title: str | None = None):
    """The :func:`plot` figure: a ``matplotlib.figure.Figure`` on an Agg canvas."""
    summary = list(summary)
    if not summary:
        raise ValueError("plot: no results to plot")
    fig, ax = plots.new_figure()
    experiments = by_experiment(summary)
    multi = len(experiments) > 1
    other_methods = sorted({s.method for s in summary if s.method not in _MARKERS})
    color_i = 0
    densities = []
    for rows in experiments:
        first = rows[0]
        if first.dense_acc_mean is not None:
            m, sd = first.dense_acc_mean * 100, first.dense_acc_std * 100
            prefix = f"{first.label}: " if multi else ""
            label = f"{prefix}dense {tables.fmt_mean_std(m, sd if sd > 0 else None)} %"
            plots.reference_band(ax, m, sd, color=plots.series_color(color_i), label=label)
        for method in _methods(rows):
            pts = sorted((s for s in rows if s.method == method), key=lambda s: -s.density)
            x = [s.density * 100 for s in pts]
            densities += x
            marker = _MARKERS.get(method) or _OTHER_MARKERS[other_methods.index(method) % len(_OTHER_MARKERS)]
            n = max(s.n for s in pts)
            name = f"{first.label}: {display_name(method)}" if multi else display_name(method)
            plots.errorbar_series(ax, x, [s.acc_mean for s in pts], [s.acc_std for s in pts], scale=100,
                                  color=plots.series_color(color_i), marker=marker,
                                  linestyle="-" if method == "imp" else "--", label=f"{name} (n={n})")
            color_i += 1

    plots.log_x_axis(ax, densities, fmt=lambda t: tables.fmt_percent(t / 100, trim=True), invert=True)
    if title is None:
        title = experiments[0][0].label if not multi else "Test accuracy vs. density"
    plots.style_axes(ax, xlabel="Density (% of prunable weights remaining, log scale)",
                     ylabel="Test accuracy (%)", title=title)
    plots.place_legend(ax, title="error bars: ±1 std\nover replicates")
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
    both = comparison_table(summary)
    if both:
        md.write("\n" + both)
    md.write("\n![test accuracy vs density](results.png)\n")
    fileio.write_text(paths["markdown"], md.getvalue())
    plot(paths["plot"], summary, title=title)
    return paths

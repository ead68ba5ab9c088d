"""The IMP report: per-experiment accuracy tables, the accuracy-vs-density figure, ``write_report``.

Built on the generic :mod:`tflth.report.tables` and :mod:`tflth.report.plots`, from the
:class:`~tflth.report.rows.SummaryRow` s of :func:`tflth.report.rows.summarize`.

* One table per experiment, one row per (level, method): n, test accuracy ``mean ± std``
  and its 95 % t interval (percent), the Welch difference to dense ``+d [lo, hi]`` (points)
  with its p and the "matches dense" verdict, and for a control IMP's Welch difference to it
  with its p and the "IMP beats it" verdict; under the table, the rules in words (they are
  decided in :mod:`tflth.report.stats`).
* ``results_summary.csv``: the same numbers, one row per (experiment, level, method).
* The figure draws 95 % t intervals of the mean as error bars (none for one replicate);
  the dense accuracy is a horizontal band of its 95 % interval.

The same contract as the stability report (:mod:`tflth.report.stability`), so
``bin/report.py`` calls either alike: :func:`collect` ``(directory, controls)``,
:func:`summarize`, :func:`text_table` and :func:`write_report` ``(output_dir, rows,
title=None, *, match_margin=...) -> {name: path}``, one path per written file.

Standard library at module level; matplotlib only inside :func:`plot`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio
from tflth.conventions import ACCURACY, IMP, LAST_EVALS, MATCH_MARGIN, METHOD_ORDER, method_key
from tflth.report import plots, stats, tables
from tflth.report.experiments import collect
from tflth.report.rows import SummaryRow, base_method, by_experiment, display_name, summarize, write_csv

__all__ = ["collect", "summarize", "markdown_table", "comparison_table", "one_shot_table", "text_table", "figure",
           "plot",
           "write_report", "SUMMARY_COLUMNS", "summary_csv_text"]

_MARKERS = {IMP: "o", "random_reinit": "s", "random_prune": "^"}
_OTHER_MARKERS = ("D", "v", "P", "X", "*", "<", ">")


# ----------------------------------------------------------------------------- tables

def _fmt_acc(s: SummaryRow | None, n_max: int) -> str:
    if s is None:
        return tables.fmt_mean_std(None)
    return tables.fmt_mean_std(s.acc_mean, s.acc_std, scale=s.measure.scale, digits=s.measure.digits, n=s.n,
                               n_max=n_max)


def _methods(rows: Iterable[SummaryRow]) -> list[str]:
    """The methods in ``rows``, in report order (:func:`tflth.conventions.method_key`)."""
    return sorted({s.method for s in rows}, key=method_key)


def _level_density(at_level: Sequence[SummaryRow]) -> float:
    """A level's density: its IMP row's, else that of its first row."""
    return next((s for s in at_level if s.method == IMP), at_level[0]).density


_HEADER = ["level", "density (%)", "method", "n", "acc (%) mean ± std", "acc (%) 95 % CI",
           "− dense (pts) [95 % CI]", "p (− dense)", "matches dense", "IMP − it (pts) [95 % CI]", "p (IMP − it)",
           "IMP beats it"]
_ALIGN = "rrlrrrrrlrrl"


def _verdict(value: str | None) -> str:
    return "—" if value is None else value


def _row_cells(s: SummaryRow) -> list[str]:
    """One (level, method) row: statistics, the differences and the verdicts."""
    scale, digits = s.measure.scale, s.measure.digits
    acc = tables.fmt_mean_std(s.acc_mean, s.acc.std, scale=scale, digits=digits, n=s.n)
    cells = [str(s.level), tables.fmt_percent(s.density), display_name(s.method), str(s.n), acc,
             tables.fmt_interval(s.acc.low, s.acc.high, scale=scale, digits=digits)]
    for d, verdict in ((s.vs_dense, s.matches), (s.vs_imp, s.imp_beats)):
        if d is None:
            cells += ["—", "—", "—"]
        else:
            cells += [tables.fmt_difference(d.diff, d.low, d.high, scale=scale, digits=digits,
                                            undefined=f"n/a ({d.why_undefined})"),
                      tables.fmt_p(d.p), _verdict(verdict)]
    return cells


def _header(rows: Sequence[SummaryRow]) -> list[str]:
    """The columns; "IMP − it" reads "base − it" where a row's base is not IMP (a control
    on a one-shot method's mask: :func:`tflth.report.rows.base_method`)."""
    header = list(_HEADER)
    measure = rows[0].measure
    if measure != ACCURACY:  # a task's metric, in its own units
        better = "higher" if measure.higher_is_better else "lower"
        header[4:8] = [f"{measure.name} mean ± std ({better} is better)", f"{measure.name} 95 % CI",
                       "− dense [95 % CI]", "p (− dense)"]
        header[9] = "IMP − it [95 % CI]"
    if all(base_method(s.method) == IMP for s in rows):
        return header
    return [c.replace("IMP", "base") for c in header]


def _table_parts(rows: list[SummaryRow]):
    """Heading text, column names, alignment, cell strings and caption lines of one experiment's table."""
    n_max = max(s.n for s in rows)
    first = rows[0]
    dense_rows = [s for s in rows if s.level == 0 and s.method == IMP]
    if not dense_rows:
        dense = "no dense (level 0) result"
    else:
        measure = first.measure
        acc = tables.fmt_mean_std(first.dense_acc_mean, first.dense_acc_std, scale=measure.scale,
                                  digits=measure.digits, n=dense_rows[0].n)
        dense = f"dense test accuracy {acc} %" if measure.percent else f"dense test {measure.name} {acc}"
    reps = f"{n_max} replicate" + ("s" if n_max != 1 else "")
    heading = f"{first.label} ({first.experiment}): {dense}; {reps}{_last_evals_note(rows)}"
    body = [_row_cells(s) for s in rows]
    header = _header(rows)
    bases = any(base_method(s.method) != IMP for s in rows)
    return heading, header, _ALIGN, body, _caption(first.match_margin, bases, first.measure)


def _caption(margin: float, bases: bool = False, measure=ACCURACY) -> list[str]:
    """The rules the verdicts follow, in words (one line each)."""
    lines = [f"{stats.matches_rule(margin, measure)}.",
             f"{stats.beats_rule(margin, measure)} (\"it\": the row's control).",
             f"{stats.interval_note()}; p: two-sided Welch t test; rules: docs/statistics.md."]
    if bases:
        lines[1] = (f"{stats.beats_rule(margin, measure)} (\"it\": the row's method; read \"base\" for IMP: the "
                    "base is IMP, or for <method>/<control> the one-shot method whose mask the control takes).")
    return lines


def _last_evals_note(rows: list[SummaryRow]) -> str:
    """``; last 2 evaluations of a run differ by 0.31 points on average (max 0.80)``, or ``""``."""
    ranges = [r for s in rows for r in s.last_evals_ranges]
    if not ranges:
        return ""
    mean, worst = sum(ranges) / len(ranges) * 100, max(ranges) * 100
    return (f"; the last {LAST_EVALS} evaluations of a run differ by {mean:.2f} points on average "
            f"(max {worst:.2f})")


def markdown_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: per experiment, a heading line, a table with one row per (level, method)
    and the decision rules under it.

    Cells: n; test accuracy ``mean ± std`` (sample std, ddof=1; only the mean for one
    replicate) and its 95 % t interval, in percent; ``− dense``: the Welch difference
    (method − dense) in points with its 95 % interval, p and the "matches dense" verdict;
    ``IMP − it`` (controls): the Welch difference (IMP − control), p and "IMP beats it".
    Verdicts are ``yes``, ``no`` or ``undecided`` (:mod:`tflth.report.stats`); ``—`` where
    there is nothing to compare, ``n/a (n=1)`` where an interval is undefined.
    """
    if not summary:
        return "_No results._\n"
    parts = []
    for rows in by_experiment(summary):
        heading, header, align, body, caption = _table_parts(rows)
        parts.append(tables.render_markdown(header, body, align=align, title=heading)
                     + "\n" + "".join(f"- {line}\n" for line in caption))
    return "\n".join(parts)


def text_table(summary: Sequence[SummaryRow]) -> str:
    """The tables of :func:`markdown_table`, aligned in plain text for a terminal."""
    if not summary:
        return "(no results)\n"
    parts = []
    for rows in by_experiment(summary):
        heading, header, align, body, caption = _table_parts(rows)
        parts.append(tables.render_text(header, body, align=align, title=heading)
                     + "".join(f"{line}\n" for line in caption))
    return "\n".join(parts)


def comparison_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: every experiment side by side, one row per level, one column per
    (experiment, method), headed ``<label>: <method>``; ``""`` for fewer than two experiments.

    For experiments that prune alike (the same densities per level) and differ in another
    setting, e.g. IMP rewound to k = 0 and to k > 0 with its controls. The density column
    is the first experiment's that has the level; cells are ``mean ± std`` (``(n=k)`` when
    a cell has fewer replicates than its experiment's most); the intervals and verdicts are
    in each experiment's own table (:func:`markdown_table`).
    """
    experiments = by_experiment(summary)
    if len(experiments) < 2:
        return ""
    columns = [(rows[0].experiment, rows[0].label, m)
               for rows in experiments for m in _methods(rows)]
    n_max = {rows[0].experiment: max(s.n for s in rows) for rows in experiments}
    cells = {(s.experiment, s.method, s.level): s for s in summary}
    unit = "acc (%)" if summary[0].measure.percent else summary[0].measure.name
    header = ["level", "density (%)"] + [f"{label}: {display_name(m)} {unit}" for _, label, m in columns]
    body = []
    for level in sorted({s.level for s in summary}):
        density = _level_density([s for s in summary if s.level == level])
        body.append([str(level), tables.fmt_percent(density)]
                    + [_fmt_acc(cells.get((e, m, level)), n_max[e]) for e, _, m in columns])
    return tables.render_markdown(header, body, align="r" * len(header),
                                  title="All experiments by level (mean ± std over replicates)")


def one_shot_table(summary: Sequence[SummaryRow]) -> str:
    """Markdown: per experiment with one-shot methods beside IMP (``--one_shot``), one row
    per compared level and one column per method: its accuracy ``mean ± std``, ``IMP − it``
    and, where the method's shuffle (``<method>/random_prune``) ran, ``it − shuffle``, each
    with its 95 % Welch interval and verdict (:func:`tflth.report.stats.beats`: "yes" means
    the first does better); ``""`` when no experiment has one-shot methods."""
    parts = []
    for rows in by_experiment(summary):
        # a one-shot method: neither IMP nor one of IMP's controls, nor a control on a method's mask
        arms = [m for m in _methods(rows) if m not in METHOD_ORDER and "/" not in m]
        if not arms:
            continue
        cells = {(s.method, s.level): s for s in rows}
        scale = rows[0].measure.scale
        levels = sorted({s.level for s in rows if s.method in arms})
        header = ["level", "density (%)", "IMP"] + [c for m in arms for c in
                                                     (f"{m}", f"IMP − {m}", f"{m} − shuffle")]
        body = []
        for level in levels:
            imp = cells.get((IMP, level))
            line = [str(level), tables.fmt_percent(_level_density([s for s in rows if s.level == level])),
                    _fmt_acc(imp, max(s.n for s in rows)) if imp else "—"]
            for m in arms:
                arm, shuffle = cells.get((m, level)), cells.get((f"{m}/random_prune", level))
                line.append(_fmt_acc(arm, max(s.n for s in rows)) if arm else "—")
                for d, verdict in ((arm.vs_imp, arm.imp_beats) if arm else (None, None),
                                   (shuffle.vs_imp, shuffle.imp_beats) if shuffle else (None, None)):
                    line.append("—" if d is None else
                                tables.fmt_difference(d.diff, d.low, d.high, scale=scale,
                                                      digits=rows[0].measure.digits,
                                                      undefined=f"n/a ({d.why_undefined})") + f" {verdict}")
            body.append(line)
        unit = "accuracy (%)" if rows[0].measure.percent else rows[0].measure.name
        parts.append(tables.render_markdown(
            header, body, align="r" * len(header),
            title=f"{rows[0].label} ({rows[0].experiment}): one-shot methods at k against IMP, test {unit} "
                  "(mean ± std; differences with their 95 % Welch interval and whether the first does better)"))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- figure

def plot(path: str, summary: Sequence[SummaryRow], title: str | None = None) -> str:
    """Write a PNG of test accuracy (%) against density (%) to ``path`` (atomically).

    Log-scaled, inverted x axis (dense on the left) with ticks at the measured densities;
    one line per (experiment, method) with the 95 % t interval of the mean over replicates
    as error bars (none for a single replicate); the dense accuracy of each experiment as a
    band of its 95 % interval. Uses the Agg canvas directly (no pyplot, no global backend
    change, no display).
    """
    return plots.save_figure(path, figure(summary, title))


def _dense_key(row: SummaryRow):
    """What identifies an experiment's dense runs in a plot (``None``: it has none): two
    experiments with the same dense replicates (one dense network pruned four ways, say)
    have the same accuracies and get one band, not one each."""
    return None if row.dense is None else tuple(row.dense.values)


def figure(summary: Sequence[SummaryRow], title: str | None = None):
    """The :func:`plot` figure, not written: a ``matplotlib.figure.Figure`` on an Agg canvas."""
    summary = list(summary)
    if not summary:
        raise ValueError("plot: no results to plot")
    fig, ax = plots.new_figure()
    experiments = by_experiment(summary)
    multi = len(experiments) > 1
    other_methods = sorted({s.method for s in summary if s.method not in _MARKERS})
    color_i = 0
    densities = []
    bands = [_dense_key(rows[0]) for rows in experiments]
    drawn = set()
    for rows, band in zip(experiments, bands):
        first = rows[0]
        if band is not None and band not in drawn:  # experiments that share their dense runs share one band
            drawn.add(band)
            m, half = first.dense.mean * first.measure.scale, (first.dense.half_width or 0.0) * first.measure.scale
            shared = bands.count(band)
            prefix = "" if not multi else f"{first.label}: " if shared == 1 else f"{shared} experiments' "
            interval = (" " + tables.fmt_interval(first.dense.low, first.dense.high, scale=first.measure.scale)
                        if half > 0 else "")
            label = f"{prefix}dense {m:.2f}{interval}" + (" %" if first.measure.percent else "")
            plots.reference_band(ax, m, half, color=plots.series_color(color_i) if shared == 1 else "0.5",
                                 label=label)
        for method in _methods(rows):
            pts = sorted((s for s in rows if s.method == method), key=lambda s: -s.density)
            x = [s.density * 100 for s in pts]
            densities += x
            marker = _MARKERS.get(method) or _OTHER_MARKERS[other_methods.index(method) % len(_OTHER_MARKERS)]
            n = max(s.n for s in pts)
            name = f"{first.label}: {display_name(method)}" if multi else display_name(method)
            plots.errorbar_series(ax, x, [s.acc_mean for s in pts], [s.acc.half_width or 0.0 for s in pts],
                                  scale=first.measure.scale,
                                  color=plots.series_color(color_i), marker=marker,
                                  linestyle="-" if method == IMP else "--", label=f"{name} (n={n})")
            color_i += 1

    plots.log_x_axis(ax, densities, fmt=lambda t: tables.fmt_percent(t / 100, trim=True), invert=True)
    measure = summary[0].measure
    what = "Test accuracy" if measure.percent else f"Test {measure.name}"
    if title is None:
        title = experiments[0][0].label if not multi else f"{what} vs. density"
    plots.style_axes(ax, xlabel="Density (% of prunable weights remaining, log scale)",
                     ylabel="Test accuracy (%)" if measure.percent else
                     f"{what} ({'higher' if measure.higher_is_better else 'lower'} is better)", title=title)
    plots.place_legend(ax, title="error bars: 95 % t interval\nof the mean over replicates")
    return fig


# ----------------------------------------------------------------------------- all of it

SUMMARY_COLUMNS = ("experiment", "label", "method", "level", "density", "n", "acc_mean", "acc_std", "acc_low",
                   "acc_high", "minus_dense", "minus_dense_low", "minus_dense_high", "minus_dense_df", "minus_dense_p",
                   "matches_dense", "imp_minus", "imp_minus_low", "imp_minus_high", "imp_minus_df", "imp_minus_p",
                   "imp_beats", "match_margin")
"""Columns of ``results_summary.csv``: fractions (accuracies and their differences), 95 %
intervals, Welch df and two-sided p, the verdicts; empty where undefined or not applicable."""


def summary_csv_text(summary: Sequence[SummaryRow]) -> str:
    """``results_summary.csv`` as text: one row per (experiment, level, method), :data:`SUMMARY_COLUMNS`."""
    buf = io.StringIO()
    task = bool(summary) and summary[0].measure != ACCURACY  # acc_* hold the task's metric, named at the end
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS + (("metric", "higher_is_better") if task else ()),
                            lineterminator="\n")
    writer.writeheader()
    for s in summary:
        row = {"experiment": s.experiment, "label": s.label, "method": s.method, "level": s.level,
               "density": s.density, "n": s.n, "acc_mean": s.acc.mean, "acc_std": s.acc.std, "acc_low": s.acc.low,
               "acc_high": s.acc.high, "matches_dense": s.matches, "imp_beats": s.imp_beats,
               "match_margin": s.match_margin}
        if task:
            row.update(metric=s.measure.name, higher_is_better=s.measure.higher_is_better)
        for prefix, d in (("minus_dense", s.vs_dense), ("imp_minus", s.vs_imp)):
            if d is not None:
                row.update({prefix: d.diff, f"{prefix}_low": d.low, f"{prefix}_high": d.high, f"{prefix}_df": d.df,
                            f"{prefix}_p": d.p})
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def write_report(output_dir: str, rows: Iterable[Mapping], title: str | None = None, *,
                 match_margin: float = MATCH_MARGIN) -> dict[str, str]:
    """Write ``results.csv``, ``results_summary.csv``, ``results.md`` and ``results.png`` into ``output_dir``.

    ``match_margin`` is δ of the verdicts, a fraction (0.005: 0.5 points; see
    :mod:`tflth.report.stats`). Returns ``{name: path}``, one entry per file written
    (the contract of :func:`tflth.report.stability.write_report`): ``{"csv": path,
    "summary_csv": path, "markdown": path, "plot": path}``.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("write_report: no result rows")
    summary = summarize(rows, match_margin=match_margin)
    os.makedirs(output_dir, exist_ok=True)
    paths = {"csv": os.path.join(output_dir, "results.csv"),
             "summary_csv": os.path.join(output_dir, "results_summary.csv"),
             "markdown": os.path.join(output_dir, "results.md"),
             "plot": os.path.join(output_dir, "results.png")}
    write_csv(paths["csv"], rows)
    fileio.write_text(paths["summary_csv"], summary_csv_text(summary))
    md = io.StringIO()
    if title:
        md.write(f"# {title}\n\n")
    md.write(markdown_table(summary))
    both = comparison_table(summary)
    if both:
        md.write("\n" + both)
    arms = one_shot_table(summary)
    if arms:
        md.write("\n" + arms)
    md.write("\n![test accuracy vs density (error bars: 95 % intervals)](results.png)\n")
    fileio.write_text(paths["markdown"], md.getvalue())
    plot(paths["plot"], summary, title=title)
    return paths

"""Reports of tflth's experiments: result rows, summaries, CSV, tables and figures.

One concern per module, so a new report (the stability report) reuses the generic parts:

* :mod:`tflth.report.stats` — the statistics (t intervals, Welch differences, Student's t
  without SciPy) and the **decision rules** of every verdict ("matches dense", "IMP beats
  <control>", "stable", "first stable k"), documented in its docstring and
  ``docs/statistics.md``; ``MATCH_MARGIN``.
* :mod:`tflth.report.rows` — IMP result rows (:data:`COLUMNS`), their normalisation,
  :func:`summarize` into :class:`SummaryRow` s (statistics and verdicts), method order and
  display names, :func:`write_csv` / :func:`read_csv`.
* :mod:`tflth.report.experiments` — :func:`collect`: the rows of one experiment directory,
  listed through :class:`tflth.paths.Experiment` (only registered controls count).
* :mod:`tflth.report.tables` — **generic** tables: ``render_markdown`` / ``render_text``
  of a header and already-formatted cells, ``fmt_mean_std``, ``fmt_percent``.
* :mod:`tflth.report.plots` — **generic** figures: ``new_figure``, ``errorbar_series``,
  ``reference_band``, ``log_x_axis`` (``thin_ticks``), ``style_axes``, ``place_legend``,
  ``save_figure``.
* :mod:`tflth.report.imp` — the IMP report built on them: :func:`markdown_table`,
  :func:`comparison_table` (experiments side by side), :func:`text_table`, :func:`plot` (accuracy vs density) and :func:`write_report`
  (``results.csv``, ``results_summary.csv``, ``results.md``, ``results.png``).

Every file is written atomically through :mod:`tflth.fileio`. The package imports only
the standard library at module level (NumPy through :mod:`tflth.fileio`); matplotlib is
imported inside the plotting functions, and TensorFlow never.
"""

from __future__ import annotations

from tflth.report import plots, stats, tables
from tflth.report.experiments import collect
from tflth.report.imp import _figure, comparison_table, markdown_table, plot, text_table, write_report
from tflth.report.rows import COLUMNS, METHOD_ORDER, SummaryRow, read_csv, summarize, write_csv

__all__ = [
    "COLUMNS",
    "METHOD_ORDER",
    "SummaryRow",
    "collect",
    "comparison_table",
    "markdown_table",
    "plot",
    "read_csv",
    "summarize",
    "text_table",
    "write_csv",
    "write_report",
]

"""Reports of tflth's experiments: result rows, summaries, CSV, tables and figures.

Both reports live here, on the same generic parts:

* :mod:`tflth.report.stats` — the statistics (t intervals, Welch differences, Student's t
  without SciPy) and the **decision rules** of every verdict ("matches dense", "IMP beats
  <control>", "stable", "first stable k"), documented in its docstring and
  ``docs/statistics.md``. Their margin, threshold and units are :mod:`tflth.conventions`'s.
* :mod:`tflth.report.rows` — IMP result rows (:data:`COLUMNS`), their normalisation,
  :func:`summarize` into :class:`SummaryRow` s (statistics and verdicts), display names,
  :func:`write_csv` / :func:`read_csv`.
* :mod:`tflth.report.experiments` — :func:`collect`: the rows of one experiment directory,
  listed through :class:`tflth.runs.layout.Experiment` (only the controls the caller names count).
* :mod:`tflth.report.tables` — **generic** tables: ``render_markdown`` / ``render_text``
  of a header and already-formatted cells, ``fmt_mean_std``, ``fmt_percent``.
* :mod:`tflth.report.plots` — **generic** figures: ``new_figure``, ``errorbar_series``,
  ``reference_band``, ``log_x_axis`` (``thin_ticks``), ``style_axes``, ``place_legend``,
  ``save_figure``.
* :mod:`tflth.report.imp` — the IMP report built on them: :func:`markdown_table`,
  :func:`comparison_table` (experiments side by side), :func:`text_table`, :func:`figure` /
  :func:`plot` (accuracy vs density) and :func:`write_report` (``results.csv``,
  ``results_summary.csv``, ``results.md``, ``results.png``).
* :mod:`tflth.report.stability` — the stability report, from the ``pair.json`` files of
  stability sweeps (``stability.csv``, ``stability.md``, ``instability.png``, ``curves_*.png``).

The two reports have one contract, so a caller (``bin/report.py``) picks the module and
calls it the same way::

    kind = tflth.report.imp  # or tflth.report.stability
    rows = kind.collect(directory, tuple(tflth.lottery.starts.CONTROLS))
    written = kind.write_report(output_dir, rows, title=None, match_margin=...)  # {name: path}
    print(kind.text_table(kind.summarize(rows)))

``write_report`` returns ``{name: path}``, one entry per file written. The control names
come from the caller: the report and :mod:`tflth.lottery` do not import each other. Every
file is written atomically through :mod:`tflth.fileio`; matplotlib is imported inside the
plotting functions.
"""

from __future__ import annotations

from tflth.report import imp, plots, stability, stats, tables
from tflth.report.experiments import collect
from tflth.report.imp import comparison_table, figure, markdown_table, plot, text_table, write_report
from tflth.report.rows import COLUMNS, SummaryRow, read_csv, summarize, write_csv

__all__ = [
    "COLUMNS",
    "SummaryRow",
    "collect",
    "comparison_table",
    "figure",
    "markdown_table",
    "plot",
    "read_csv",
    "summarize",
    "text_table",
    "write_csv",
    "write_report",
]

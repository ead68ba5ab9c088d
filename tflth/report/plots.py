"""Generic figure helpers in the house style of tflth's reports (matplotlib, imported lazily).

Figures are drawn on an Agg canvas directly: no pyplot, no global backend change, no
display, safe in threads and on headless machines. A report builds one like this::

    fig, ax = new_figure()
    for i, (name, xs, means, halves) in enumerate(curves):
        errorbar_series(ax, xs, means, halves, label=name, marker=MARKERS[i], color=series_color(i), scale=100)
    log_x_axis(ax, all_xs, fmt=lambda k: f"{k:g}")
    style_axes(ax, xlabel="Rewind step k", ylabel="Instability (%)", title="...")
    place_legend(ax, title="error bars: 95 % t interval")
    save_figure("report/instability.png", fig)

API:

``new_figure(figsize=(8.0, 5.0), dpi=150) -> (Figure, Axes)``
    An empty figure with one axes on an Agg canvas.
``series_color(i) -> str`` and ``MARKERS``
    The i-th colour of the default cycle (``"C0"`` ... ``"C9"``, cycling) and a tuple of
    distinct markers, so several plots colour the same series alike.
``errorbar_series(ax, x, mean, std=None, *, label=None, marker="o", color=None, linestyle="-", scale=1.0, band=False)``
    One line with markers and error bars of ± ``std`` (``std`` None: no bars); ``std`` is
    any half-width: the reports pass the 95 % t interval's (:mod:`tflth.report.stats`) and
    say so in the legend. ``scale`` multiplies mean and std (100 for percent).
    ``band=True`` shades mean ± std instead of drawing bars: better for dense curves such
    as error vs interpolation α.
``reference_band(ax, mean, std=0.0, *, color=None, label=None)``
    A dotted horizontal line at ``mean`` and, when ``std > 0``, a shaded band of mean ± std
    (the dense network's accuracy, say); ``label`` goes to the band, or to the line.
``log_x_axis(ax, values, *, fmt=None, invert=False, pad=1.12, max_ticks=18, rotate_over=12)``
    Log-scaled x axis with ticks exactly at the measured ``values`` (thinned by
    :func:`thin_ticks` where they would crowd), labelled by ``fmt(value)`` (default
    ``f"{v:g}"``), no minor ticks, limits ``pad`` × beyond the extreme values, labels
    rotated past ``rotate_over`` ticks. ``invert`` puts large values on the left. With a
    0 among ``values`` (rewind step k = 0, say) the axis is symmetric-log: linear from 0
    to the smallest positive value, logarithmic above, with a tick at 0.
``thin_ticks(values, max_ticks=18) -> list``
    The distinct positive ``values``, largest first, dropping those that would crowd on a
    log axis (both extremes kept).
``style_axes(ax, *, xlabel=None, ylabel=None, title=None)``
    Axis labels, title and the light major grid.
``place_legend(ax, where="outside", title=None)``
    The legend right of the axes (``"outside"``), small and frameless, or inside at a
    matplotlib ``loc`` (``"best"``, ``"lower left"``, ...).
``save_figure(path, fig) -> str``
    The figure as PNG (or the format the extension names), tightly cropped, written
    atomically through :func:`tflth.fileio.write_figure`.

This module imports only the standard library at module level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tflth import fileio

__all__ = ["MARKERS", "new_figure", "series_color", "errorbar_series", "reference_band", "log_x_axis",
           "thin_ticks", "style_axes", "place_legend", "save_figure"]

#: Distinct markers for series, in order of use.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def new_figure(figsize: tuple[float, float] = (8.0, 5.0), dpi: int = 150):
    """``(fig, ax)``: a ``matplotlib.figure.Figure`` on an Agg canvas with one axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def series_color(i: int) -> str:
    """The ``i``-th colour of matplotlib's default cycle, cycling after 10."""
    return f"C{i % 10}"


def errorbar_series(ax, x: Sequence[float], mean: Sequence[float], std: Sequence[float] | None = None, *,
                    label: str | None = None, marker: str | None = "o", color: str | None = None,
                    linestyle: str = "-", scale: float = 1.0, band: bool = False):
    """One series with ± ``std`` error bars (or a shaded band); returns the line's artist."""
    x = list(x)
    y = [m * scale for m in mean]
    err = None if std is None else [s * scale for s in std]
    if len(y) != len(x) or (err is not None and len(err) != len(x)):
        raise ValueError(f"errorbar_series {label!r}: x, mean and std differ in length")
    if band:
        (line,) = ax.plot(x, y, color=color, marker=marker, ms=4, ls=linestyle, lw=1.6, label=label, zorder=3)
        if err is not None:
            ax.fill_between(x, [a - e for a, e in zip(y, err)], [a + e for a, e in zip(y, err)],
                            color=line.get_color(), alpha=0.2, lw=0, zorder=2)
        return line
    return ax.errorbar(x, y, yerr=err, color=color, marker=marker, ms=5, ls=linestyle, lw=1.6, capsize=3,
                       elinewidth=1, label=label, zorder=3)


def reference_band(ax, mean: float, std: float = 0.0, *, color: str | None = None, label: str | None = None):
    """A dotted line at ``mean`` and a shaded band of ± ``std`` (when ``std > 0``)."""
    line = ax.axhline(mean, color=color, lw=0.9, ls=":", zorder=1)
    if std > 0:
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15, lw=0, zorder=0, label=label)
    elif label is not None:
        line.set_label(label)
    return line


def thin_ticks(values: Sequence[float], max_ticks: int = 18) -> list[float]:
    """Largest-first positive values, dropped where they would crowd on a log axis; keeps both ends."""
    values = sorted(set(values), reverse=True)
    if len(values) <= 2:
        return values
    if values[-1] <= 0:
        raise ValueError(f"thin_ticks: values must be positive, got {values[-1]!r}")
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


def log_x_axis(ax, values: Sequence[float], *, fmt: Callable[[float], str] | None = None, invert: bool = False,
               pad: float = 1.12, max_ticks: int = 18, rotate_over: int = 12) -> list[float]:
    """Log (or, with a 0, symmetric-log) x axis with readable ticks at ``values``; returns the ticks."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    values = [float(v) for v in values]
    if not values:
        raise ValueError("log_x_axis: no values")
    if min(values) < 0:
        raise ValueError(f"log_x_axis: negative value {min(values)!r}")
    fmt = fmt or (lambda v: f"{v:g}")
    positive = [v for v in values if v > 0]
    hi = max(values)
    if len(positive) == len(values):
        ax.set_xscale("log")
        lo = min(values) / pad
        ticks = thin_ticks(values, max_ticks)
    else:  # a zero: linear up to the smallest positive value (one decade wide), log above
        linthresh = min(positive) if positive else 1.0
        ax.set_xscale("symlog", linthresh=linthresh, linscale=1.0)
        lo = -linthresh * math.log10(pad)
        ticks = thin_ticks(positive, max(max_ticks - 1, 2)) + [0.0]
    hi *= pad
    ax.set_xlim((hi, lo) if invert else (lo, hi))
    if not invert:
        ticks = ticks[::-1]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FixedFormatter([fmt(t) for t in ticks]))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(ticks) > rotate_over:
        for t in ax.get_xticklabels():
            t.set_rotation(45)
            t.set_horizontalalignment("right")
    return ticks


def style_axes(ax, *, xlabel: str | None = None, ylabel: str | None = None, title: str | None = None) -> None:
    """Axis labels, title and the house grid (major lines, light)."""
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    if title is not None:
        ax.set_title(title)
    ax.grid(True, which="major", alpha=0.35, lw=0.6)


def place_legend(ax, where: str = "outside", title: str | None = None):
    """The legend right of the axes (``"outside"``) or inside at matplotlib ``loc`` ``where``."""
    style = dict(fontsize="small", title=title, title_fontsize="small", frameon=False)
    if where == "outside":
        return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **style)
    return ax.legend(loc=where, **style)


def save_figure(path: str, fig) -> str:
    """Write ``fig`` atomically (format from the extension, tightly cropped); returns ``path``."""
    return fileio.write_figure(path, fig, bbox_inches="tight")

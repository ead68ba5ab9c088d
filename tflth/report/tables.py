"""Generic tables: cells formatted once, rendered as Markdown or as aligned plain text.

Reports build a header (column names) and rows of **already-formatted** string cells, then
render them with one of::

    render_markdown(header, rows, align=None, title=None) -> str
        A GitHub-flavoured Markdown table; ``title`` (if any) comes first as a bold line
        and a blank line. ``|`` inside a cell is escaped.
    render_text(header, rows, align=None, title=None, sep="  ") -> str
        The same table for a terminal: columns padded to their widest cell, a rule of
        dashes under the header, trailing blanks stripped; ``title`` (if any) is the first line.

``align`` is one letter per column, as a string or a sequence: ``"l"`` (left), ``"r"``
(right: numbers) or ``"c"`` (centre); ``None`` aligns every column left. Markdown gets the
matching ``:---`` / ``---:`` / ``:---:`` marks. Both return text ending in one newline, and
raise ``ValueError`` when a row's length or ``align`` does not match the header.

Cell formatters::

    fmt_mean_std(mean, std=None, *, digits=2, scale=1.0, n=None, n_max=None, missing="—") -> str
        ``"94.10 ± 1.41"``: mean (and std) times ``scale`` with ``digits`` decimals; only the
        mean when ``std`` is None or ``n == 1``; a suffix ``" (n=3)"`` when ``n < n_max``
        (a cell with fewer replicates than its neighbours); ``missing`` when mean is None.
    fmt_percent(fraction, *, trim=False) -> str
        A fraction as a percentage: ``"16.8"``, ``"3.5"``, two significant digits below
        1 % (``"0.38"``); ``trim`` drops a trailing ``".0"`` (for axis ticks).
    fmt_interval(low, high, *, digits=2, scale=1.0, undefined="n/a (n=1)") -> str
        ``"[93.85, 94.35]"``; ``undefined`` when ``low`` is None (an interval of one value).
    fmt_difference(diff, low=None, high=None, *, digits=2, scale=1.0, undefined="n/a (n=1)") -> str
        A signed difference and its interval, ``"+0.10 [-0.20, +0.40]"``; ``"-0.30 [n/a (n=1)]"``
        when ``low`` is None; ``"—"`` when ``diff`` is None.
    fmt_p(p) -> str
        A p-value: ``"0.041"``, ``"<0.001"``; ``"n/a"`` when None.

Example (a stability table)::

    header = ["k", "k (% of training)", "instability (%) mean ± std"]
    rows = [[str(k), fmt_percent(k / total), fmt_mean_std(m, s, scale=100, n=n)] for ...]
    md = render_markdown(header, rows, align="rrr", title="lenet: instability vs k")

Standard library only.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["render_markdown", "render_text", "fmt_mean_std", "fmt_percent", "fmt_interval", "fmt_difference", "fmt_p"]

_MD_ALIGN = {"l": ":---", "r": "---:", "c": ":---:"}


def _check(header: Sequence[str], rows: Sequence[Sequence[str]], align) -> tuple[list[str], list[list[str]], str]:
    header = [str(h) for h in header]
    rows = [[str(c) for c in r] for r in rows]
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise ValueError(f"table row {i} has {len(r)} cells for {len(header)} columns: {r!r}")
    align = "l" * len(header) if align is None else "".join(align)
    if len(align) != len(header) or set(align) - set(_MD_ALIGN):
        raise ValueError(f"align {align!r}: expected one of l, r, c per column ({len(header)})")
    return header, rows, align


def render_markdown(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | Sequence[str] | None = None,
                    title: str | None = None) -> str:
    """A Markdown table of ``header`` and ``rows`` (see the module docstring)."""
    header, rows, align = _check(header, rows, align)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    lines = [f"**{title}**", ""] if title else []
    lines += [line(header), "|" + "|".join(_MD_ALIGN[a] for a in align) + "|"]
    lines += [line(r) for r in rows]
    return "\n".join(lines) + "\n"


def render_text(header: Sequence[str], rows: Sequence[Sequence[str]], align: str | Sequence[str] | None = None,
                title: str | None = None, sep: str = "  ") -> str:
    """An aligned plain-text table of ``header`` and ``rows`` (see the module docstring)."""
    header, rows, align = _check(header, rows, align)
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    pad = {"l": str.ljust, "r": str.rjust, "c": str.center}

    def line(cells):
        return sep.join(pad[a](c, w) for c, w, a in zip(cells, widths, align)).rstrip()

    lines = [title] if title else []
    lines += [line(header), sep.join("-" * w for w in widths)] + [line(r) for r in rows]
    return "\n".join(lines) + "\n"


def fmt_mean_std(mean: float | None, std: float | None = None, *, digits: int = 2, scale: float = 1.0,
                 n: int | None = None, n_max: int | None = None, missing: str = "—") -> str:
    """``mean ± std`` as text (see the module docstring)."""
    if mean is None:
        return missing
    text = f"{mean * scale:.{digits}f}"
    if std is not None and n != 1:
        text += f" ± {std * scale:.{digits}f}"
    if n is not None and n_max is not None and n < n_max:
        text += f" (n={n})"
    return text


def fmt_percent(fraction: float, *, trim: bool = False) -> str:
    """A fraction as a percentage with 1 decimal, 2 significant digits below 1 %."""
    pct = fraction * 100.0
    s = f"{pct:.1f}" if pct >= 0.995 else f"{pct:.2g}"
    if trim and s.endswith(".0"):
        s = s[:-2]
    return s


def fmt_interval(low: float | None, high: float | None, *, digits: int = 2, scale: float = 1.0,
                 undefined: str = "n/a (n=1)") -> str:
    """``[low, high]`` times ``scale`` with ``digits`` decimals; ``undefined`` when ``low`` is None."""
    if low is None or high is None:
        return undefined
    return f"[{low * scale:.{digits}f}, {high * scale:.{digits}f}]"


def fmt_difference(diff: float | None, low: float | None = None, high: float | None = None, *, digits: int = 2,
                   scale: float = 1.0, undefined: str = "n/a (n=1)") -> str:
    """``+diff [low, high]`` with signs (see the module docstring)."""
    if diff is None:
        return "—"
    if low is None or high is None:
        return f"{diff * scale:+.{digits}f} [{undefined}]"
    return f"{diff * scale:+.{digits}f} [{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def fmt_p(p: float | None) -> str:
    """A two-sided p-value with 3 decimals, ``"<0.001"`` below that, ``"n/a"`` when None."""
    if p is None:
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"

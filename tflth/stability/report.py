"""The stability report: ``stability.csv``, ``stability.md`` and plots from ``pair.json`` files.

Input: the pairs of one or more sweeps (:func:`collect` reads a sweep directory through
:class:`tflth.paths.Sweep`; a shard's partial sweep is fine: whatever pairs exist are
reported). A *setting* is (sweep, level, method, k); its pairs (over replicates and
data-order pairs) are summarised by mean ± sample std.

* ``stability.csv`` — one ``pair`` row per pair and one ``summary`` row per setting
  (column ``row``), numbers as fractions (errors, instabilities) and raw distances.
* ``stability.md`` — a table per sweep: k, k as % of training, test and train
  instability (points, mean ± std), L2 and normalised L2 between the copies,
  disagreement, final test accuracy, and whether the setting is *stable* (mean test
  instability < 2 points, the LMC paper's threshold) and *matching* (final accuracy
  within 0.2 points of the dense network, for IMP experiments); then the **first stable
  k** of every (level, method).
* ``instability.png`` — test instability vs k (symmetric-log x axis, k = 0 included),
  one line per (level, method) with ±1 std error bars and the dashed 2-point line;
  ``curves_<sweep>_level<L>_<method>.png`` — mean test error vs α, one line per k.

It reuses the generic table and plot code of :mod:`tflth.report`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio, paths
from tflth.lottery import starts
from tflth.report import plots, tables

__all__ = ["CSV_COLUMNS", "STABLE_POINTS", "MATCH_TOLERANCE", "collect", "summarize", "first_stable_k",
           "markdown", "text_table", "write_report"]

STABLE_POINTS = 2.0  # stable: mean test instability below 2 points of error
MATCH_TOLERANCE = 0.002  # matching: within 0.2 points of the dense accuracy

CSV_COLUMNS = ("row", "sweep", "label", "level", "method", "density", "k", "k_percent", "replicate", "pair", "n",
               "bn", "noise", "test_instability", "test_instability_std", "train_instability",
               "train_instability_std", "test_loss_barrier", "l2", "l2_relative", "l2_displacement", "cosine",
               "pruning_l2_relative", "disagreement", "accuracy", "accuracy_std", "stable", "matching", "analysis")

_METRICS = {  # CSV column -> how to read it from a pair.json
    "test_instability": lambda p: p["curve"]["test"]["instability"],
    "train_instability": lambda p: (p["curve"].get("train") or {}).get("instability"),
    "test_loss_barrier": lambda p: p["curve"]["test"]["loss_barrier"],
    "l2": lambda p: p["distances"]["total"]["l2"],
    "l2_relative": lambda p: p["distances"]["total"]["relative"],
    "l2_displacement": lambda p: p["distances"]["total"]["relative_to_displacement"],
    "cosine": lambda p: p["distances"]["total"]["cosine"],
    "pruning_l2_relative": lambda p: (p.get("pruning_stability") or {}).get("relative"),
    "disagreement": lambda p: p["curve"]["disagreement"],
    "accuracy": lambda p: statistics.fmean([p["copies"]["a"]["test_accuracy"], p["copies"]["b"]["test_accuracy"]]),
}


def collect(sweep_dir: str) -> list[dict]:
    """Every finished pair of a sweep directory (``pair.json`` contents), in unit order."""
    sweep = paths.Sweep(sweep_dir)
    if not os.path.isfile(sweep.hparams):
        raise ValueError(f"{sweep_dir} is not a stability sweep directory (no hparams.json)")
    known = ["imp", *starts.CONTROLS]
    return [fileio.read_json(path, required=("curve", "distances", "copies"))
            for *_, path in sweep.pair_results(known)]


def analysis_text(analysis: Mapping) -> str:
    """A pair's analysis settings (``pair.json``'s ``analysis``) in a few words."""
    low, high = analysis["alpha_range"]
    bn = analysis["bn"] + (f" over {analysis['bn_batches']} batches" if analysis["bn"] == "recompute" else "")
    train = analysis["train_examples"]
    return (f"{analysis['interpolation_points']} points in [{low:g}, {high:g}], "
            + (f"train curve on {train} examples" if train else "no train curve") + f", BN {bn}")


def _setting(p: Mapping) -> tuple:
    return (p["sweep"], p["level"], _method_rank(p["method"]), p["method"], p["k"], analysis_text(p["analysis"]))


def _method_rank(method: str) -> int:
    order = ["imp", *starts.CONTROLS]
    return order.index(method) if method in order else len(order)


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(pairs: Iterable[Mapping]) -> list[dict]:
    """One dict per setting (sweep, level, method, k, analysis settings): means and stds
    of every metric, ``n`` pairs, ``stable`` and ``matching`` (``None`` without a dense
    reference), ``analysis`` (:func:`analysis_text`). Pairs analysed with other settings
    (``interpolation_points``, ``alpha_range``, ``train_examples``, ``bn``,
    ``bn_batches``) are never averaged together."""
    groups: dict[tuple, list[Mapping]] = {}
    for p in pairs:
        groups.setdefault(_setting(p), []).append(p)
    dense = {}  # sweep -> dense accuracies (the experiment's level 0, per replicate)
    for p in (p for members in groups.values() for p in members):
        if p.get("dense_accuracy") is not None:
            dense.setdefault(p["sweep"], {})[p["replicate"]] = p["dense_accuracy"]
    order = {sweep: i for i, sweep in enumerate(dict.fromkeys(key[0] for key in groups))}  # sweeps as given
    out = []
    for key in sorted(groups, key=lambda key: (order[key[0]],) + key[1:]):
        members = groups[key]
        first = members[0]
        row = {"sweep": first["sweep"], "label": first["label"], "level": first["level"],
               "method": first["method"], "density": first["density"], "k": first["k"],
               "k_percent": 100.0 * first["k_fraction"], "n": len(members), "bn": first["analysis"]["bn"],
               "noise": first["noise"], "analysis": key[-1]}
        for name, read in _METRICS.items():
            row[name], row[f"{name}_std"] = _mean_std([read(p) for p in members])
        inst = row["test_instability"]
        row["stable"] = None if inst is None else bool(inst * 100.0 < STABLE_POINTS)
        reference = dense.get(first["sweep"])
        row["dense_accuracy"] = statistics.fmean(reference.values()) if reference else None
        row["matching"] = (None if row["dense_accuracy"] is None or row["accuracy"] is None
                           else bool(row["accuracy"] >= row["dense_accuracy"] - MATCH_TOLERANCE - 1e-9))
        out.append(row)
    return out


def first_stable_k(summary: Sequence[Mapping]) -> dict[tuple, int | None]:
    """``{(sweep, level, method): the smallest k whose setting is stable, or None}``."""
    out: dict[tuple, int | None] = {}
    for s in sorted(summary, key=lambda s: s["k"]):
        key = (s["sweep"], s["level"], s["method"])
        out.setdefault(key, None)
        if out[key] is None and s["stable"]:
            out[key] = s["k"]
    return out


def _pair_row(p: Mapping) -> dict:
    row = {"row": "pair", "sweep": p["sweep"], "label": p["label"], "level": p["level"], "method": p["method"],
           "density": p["density"], "k": p["k"], "k_percent": 100.0 * p["k_fraction"], "replicate": p["replicate"],
           "pair": p["pair"], "n": 1, "bn": p["analysis"]["bn"], "noise": p["noise"],
           "analysis": analysis_text(p["analysis"])}
    row.update({name: read(p) for name, read in _METRICS.items()})
    inst = row["test_instability"]
    row["stable"] = None if inst is None else bool(inst * 100.0 < STABLE_POINTS)
    return row


def _csv_text(pairs: Sequence[Mapping], summary: Sequence[Mapping]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in sorted(pairs, key=lambda p: _setting(p) + (p["replicate"], p["pair"])):
        writer.writerow(_pair_row(p))
    for s in summary:
        writer.writerow(dict(s, row="summary"))
    return buf.getvalue()


def _flag(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")


def _table(summary: Sequence[Mapping]) -> tuple[list[str], list[list[str]], str]:
    """One sweep's table; with an ``analysis`` column when its rows were analysed differently."""
    mixed = len({s["analysis"] for s in summary}) > 1
    header = ["level", "density (%)", "method", "k", "k (% of T)", "test instability (pts)",
              "train instability (pts)", "L2", "L2 / mean norm", "disagreement (%)", "test acc (%)", "stable",
              "matching"] + (["analysis"] if mixed else [])
    rows = []
    for s in summary:
        rows.append([
            str(s["level"]), tables.fmt_percent(s["density"]), s["method"], f"{s['k']}it", f"{s['k_percent']:.2g}",
            tables.fmt_mean_std(s["test_instability"], s["test_instability_std"], scale=100, n=s["n"]),
            tables.fmt_mean_std(s["train_instability"], s["train_instability_std"], scale=100, n=s["n"]),
            tables.fmt_mean_std(s["l2"], s["l2_std"], digits=3, n=s["n"]),
            tables.fmt_mean_std(s["l2_relative"], s["l2_relative_std"], digits=3, n=s["n"]),
            tables.fmt_mean_std(s["disagreement"], s["disagreement_std"], scale=100, digits=1, n=s["n"]),
            tables.fmt_mean_std(s["accuracy"], s["accuracy_std"], scale=100, n=s["n"]),
            _flag(s["stable"]), _flag(s["matching"]),
        ] + ([s["analysis"]] if mixed else []))
    return header, rows, "rrlrrrrrrrrll" + ("l" if mixed else "")


def _first_stable_lines(summary: Sequence[Mapping]) -> list[str]:
    lines = [f"level {level} {method}: first stable k = " + ("none of the k measured" if k is None else f"{k}it")
             for (_, level, method), k in first_stable_k(summary).items()]
    settings = sorted({s["analysis"] for s in summary})
    if len(settings) > 1:
        lines.append(f"NOTE: these pairs were analysed with {len(settings)} different settings ("
                     + "; ".join(settings) + "): each row says which; rerun bin/stability.py with one setting "
                     "and every k to re-analyse them all alike")
    return lines


def _heading(rows: Sequence[Mapping]) -> str:
    settings = {s["analysis"] for s in rows}
    return f"{rows[0]['label']} ({rows[0]['sweep']}" + (f"; {settings.pop()})" if len(settings) == 1 else ")")


def _by_sweep(summary: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    out: dict[str, list[Mapping]] = {}
    for s in summary:
        out.setdefault(s["sweep"], []).append(s)
    return out


def markdown(summary: Sequence[Mapping]) -> str:
    parts = []
    for sweep, rows in _by_sweep(summary).items():
        header, body, align = _table(rows)
        parts.append(tables.render_markdown(header, body, align, title=_heading(rows)))
        parts.append("".join(f"- {line}\n" for line in _first_stable_lines(rows)))
    return "\n".join(parts)


def text_table(summary: Sequence[Mapping]) -> str:
    parts = []
    for sweep, rows in _by_sweep(summary).items():
        header, body, align = _table(rows)
        parts.append(tables.render_text(header, body, align, title=_heading(rows)))
        parts.append("".join(f"{line}\n" for line in _first_stable_lines(rows)))
    return "\n".join(parts)


def _instability_plot(path: str, summary: Sequence[Mapping], title: str | None) -> str:
    fig, ax = plots.new_figure()
    series: dict[tuple, list[Mapping]] = {}
    for s in summary:
        series.setdefault((s["sweep"], s["level"], _method_rank(s["method"]), s["method"]), []).append(s)
    groups = sorted({key[:2] for key in series})  # (sweep, level): one colour each
    labels = {s["sweep"]: s["label"] for s in summary}
    for i, ((sweep, level, rank, method), rows) in enumerate(sorted(series.items())):
        rows = sorted(rows, key=lambda s: s["k"])
        label = f"level {level} ({tables.fmt_percent(rows[0]['density'])}%) {method}" if level else \
            f"dense {method}" if method != "imp" else "dense"
        if len(labels) > 1:
            label = f"{labels[sweep]}: {label}"
        plots.errorbar_series(ax, [s["k"] for s in rows], [s["test_instability"] or 0.0 for s in rows],
                              [s["test_instability_std"] or 0.0 for s in rows], label=label, scale=100,
                              marker=plots.MARKERS[rank % len(plots.MARKERS)],
                              color=plots.series_color(groups.index((sweep, level))),
                              linestyle="-" if method == "imp" else "--")
    ax.axhline(STABLE_POINTS, color="0.3", lw=1.0, ls="--", label="2 points (stable below)", zorder=1)
    plots.log_x_axis(ax, sorted({s["k"] for s in summary}), fmt=lambda v: f"{v:g}")
    plots.style_axes(ax, xlabel="Rewind step k (iterations)", ylabel="Test instability (error barrier, points)",
                     title=title or "Instability vs rewind step")
    plots.place_legend(ax, title="mean ± std over pairs")
    return plots.save_figure(path, fig)


def _curve_plots(output_dir: str, pairs: Sequence[Mapping]) -> list[str]:
    groups: dict[tuple, dict[int, list[Mapping]]] = {}
    for p in pairs:
        groups.setdefault((p["sweep"], p["level"], p["method"]), {}).setdefault(p["k"], []).append(p)
    written = []
    for (sweep, level, method), by_k in sorted(groups.items()):
        fig, ax = plots.new_figure()
        for i, k in enumerate(sorted(by_k)):
            members = by_k[k]
            alphas = members[0]["curve"]["test"]["alphas"]
            curves = [m["curve"]["test"]["errors"] for m in members if m["curve"]["test"]["alphas"] == alphas]
            mean = [statistics.fmean(c[j] for c in curves) for j in range(len(alphas))]
            std = [statistics.stdev(c[j] for c in curves) if len(curves) > 1 else 0.0 for j in range(len(alphas))]
            plots.errorbar_series(ax, alphas, mean, std, label=f"k = {k}it", scale=100, marker=None,
                                  color=plots.series_color(i), band=True)
        what = "dense" if level == 0 and method == "imp" else f"level {level} {method}"
        plots.style_axes(ax, xlabel="Interpolation α (0: copy a, 1: copy b)", ylabel="Test error (%)",
                         title=f"Test error along the line between the copies: {what}")
        plots.place_legend(ax, title="mean ± std over pairs")
        name = sweep.strip("/").replace(os.sep, "_").replace(".", "_")  # a sweep named by its path
        written.append(plots.save_figure(os.path.join(output_dir, f"curves_{name}_level{level}_{method}.png"), fig))
    return written


def write_report(output_dir: str, pairs: Iterable[Mapping], title: str | None = None) -> dict:
    """Write ``stability.csv``, ``stability.md``, ``instability.png`` and the curve plots
    into ``output_dir``; returns ``{"csv", "markdown", "plot", "curves": [...]}``."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("write_report: no finished pairs")
    summary = summarize(pairs)
    out = {"csv": os.path.join(output_dir, "stability.csv"), "markdown": os.path.join(output_dir, "stability.md"),
           "plot": os.path.join(output_dir, "instability.png")}
    fileio.write_text(out["csv"], _csv_text(pairs, summary))
    md = (f"# {title}\n\n" if title else "") + markdown(summary) + "\n![instability vs k](instability.png)\n"
    fileio.write_text(out["markdown"], md)
    _instability_plot(out["plot"], summary, title)
    out["curves"] = _curve_plots(output_dir, pairs)
    return out

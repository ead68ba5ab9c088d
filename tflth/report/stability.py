"""The stability report: ``stability.csv``, ``stability.md`` and plots from ``pair.json`` files.

Input: the pairs of one or more sweeps (:func:`collect` reads a sweep directory through
:class:`tflth.runs.layout.Sweep`; a shard's partial sweep is fine: whatever pairs exist are
reported). A *setting* is (sweep, level, method, k); its pairs (over replicates and
data-order pairs) are summarised by mean ± sample std, the test instability also by its
95 % t interval, and the verdicts follow the rules of :mod:`tflth.report.stats` (threshold
τ = :data:`tflth.conventions.STABLE_THRESHOLD`, 0.02, unless ``stable_threshold`` says
otherwise; margin δ = :data:`tflth.conventions.MATCH_MARGIN`; both fractions, shown in
points).

The same contract as the IMP report (:mod:`tflth.report.imp`), so ``bin/report.py`` calls
either alike: :func:`collect` ``(directory, controls)``, :func:`summarize`,
:func:`text_table` and :func:`write_report` ``(output_dir, rows, title=None, *,
match_margin=..., stable_threshold=...) -> {name: path}``, one path per written file.

* ``stability.csv`` — one ``pair`` row per pair and one ``summary`` row per setting
  (column ``row``), numbers as fractions (errors, instabilities) and raw distances;
  ``mask_mode`` (``dense``, ``one_mask``: one experiment's masks at every k, ``per_k``:
  each k's own experiment, :mod:`tflth.stability.sweep`) and the ``experiment`` whose
  masks and W_k a row used. Each table's heading names its sweep's mask mode. Summary
  rows add ``test_instability_low`` / ``_high`` (95 % t interval), ``pairs_over`` (pairs at
  or over τ; on a pair row 1 or 0), ``stable`` and ``matching`` (verdicts: ``yes`` /
  ``no`` / ``undecided``, empty where not applicable) and ``accuracy_minus_dense`` with
  its Welch interval and p (per-pair test accuracy, the mean of the two copies, against
  the experiment's dense networks, one per replicate).
* ``stability.md`` — a table per sweep: k, k as % of training, test instability (points,
  mean ± std, its 95 % interval, pairs over τ, the *stable* verdict), train instability,
  L2 and normalised L2 between the copies, disagreement, final test accuracy, and for IMP
  experiments its Welch difference to dense and the *matches dense* verdict; then the
  **first stable k** of every (level, method) and the rules in words. A table's heading
  names the analysis settings (points, α range, train curve, and the BatchNorm treatment
  where the network has BatchNorm; "no BatchNorm" where the pairs record it has none).
* ``instability.png`` — test instability vs k (symmetric-log x axis, k = 0 included),
  one line per (level, method) with 95 % t intervals as error bars and the dashed τ line;
  ``curves_<sweep>_level<L>_<method>.png`` — mean test error vs α, one line per k, with a
  band of the 95 % t interval over pairs, and a dashed line per k for the aligned pairs
  (``--align``).

It reuses the generic table and plot code of :mod:`tflth.report`; the control names come
from the caller (the report does not import :mod:`tflth.lottery`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence

from tflth import fileio
from tflth.conventions import ACCURACY, IMP, MATCH_MARGIN, STABLE_THRESHOLD, Measure, method_key
from tflth.report import plots, stats, tables
from tflth.runs.layout import Sweep
from tflth.report.errors import ReportError

__all__ = ["CSV_COLUMNS", "collect", "analysis_text", "summarize", "first_stable_k", "mask_mode",
           "markdown", "text_table", "write_report"]

CSV_COLUMNS = ("row", "sweep", "label", "level", "method", "density", "k", "k_percent", "replicate", "pair", "n",
               "bn", "noise", "mask_mode", "experiment", "test_instability", "test_instability_std",
               "test_instability_low", "test_instability_high", "pairs_over", "train_instability",
               "train_instability_std", "test_loss_barrier", "l2", "l2_relative", "l2_displacement", "cosine",
               "pruning_l2_relative", "disagreement", "accuracy", "accuracy_std", "accuracy_minus_dense",
               "accuracy_minus_dense_low", "accuracy_minus_dense_high", "accuracy_minus_dense_p", "stable",
               "matching", "stable_threshold", "match_margin", "analysis", "aligned_test_instability",
               "aligned_test_instability_std", "aligned_test_instability_low", "aligned_test_instability_high",
               "alignment_gain", "alignment_gain_low", "alignment_gain_high", "aligned_train_instability",
               "aligned_l2", "aligned_l2_relative", "aligned_mask_overlap", "align", "mask_overlap",
               "mask_overlap_random")

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
    "accuracy": lambda p: statistics.fmean([p["copies"][c][measure_of(p).key] for c in "ab"]),
    "aligned_test_instability": lambda p: _aligned(p, "curve", "test", "instability"),
    "aligned_train_instability": lambda p: _aligned(p, "curve", "train", "instability"),
    "aligned_l2": lambda p: _aligned(p, "distances", "total", "l2"),
    "aligned_l2_relative": lambda p: _aligned(p, "distances", "total", "relative"),
    "aligned_mask_overlap": lambda p: _aligned(p, "mask_overlap"),
    "mask_overlap": lambda p: p.get("mask_overlap"),
    "mask_overlap_random": lambda p: p.get("mask_overlap_random"),
}


def _aligned(p: Mapping, *keys):
    """A value of the pair's ``aligned`` analysis (``--align``), ``None`` without one."""
    value = p.get("aligned")
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def measure_of(p: Mapping) -> Measure:
    """What a pair's barrier and accuracies are of: its ``measure`` (a task's), else test accuracy
    (the ``accuracy`` columns then hold the task's metric, the instabilities its barrier)."""
    found = p.get("measure")
    return ACCURACY if not found else Measure.from_dict(found)


def _dense_value(p: Mapping):
    return p.get("dense_accuracy") if measure_of(p) == ACCURACY else p.get("dense_measure")


def collect(sweep_dir: str, controls: Iterable[str]) -> list[dict]:
    """Every finished pair of a sweep directory (``pair.json`` contents), in unit order: IMP's
    (and the dense network's) pairs and those of the ``controls`` named (the registered
    ones: ``tuple(tflth.lottery.starts.CONTROLS)``); other directories are ignored."""
    sweep = Sweep(sweep_dir)
    if not os.path.isfile(sweep.hparams):
        raise ReportError(f"{sweep_dir} is not a stability sweep directory (no hparams.json)")
    known = [IMP, *controls]
    return [fileio.read_json(path, required=("curve", "distances", "copies"))
            for *_, path in sweep.pair_results(known)]


def analysis_text(analysis: Mapping, has_batchnorm: bool | None = None) -> str:
    """A pair's analysis settings (``pair.json``'s ``analysis``) in a few words. The
    BatchNorm treatment is named unless ``has_batchnorm`` is ``False`` (``pair.json``'s
    ``curve.has_batchnorm``: the network has no BatchNorm, so the setting changed nothing;
    ``None``, a pair written before it was recorded, names it)."""
    low, high = analysis["alpha_range"]
    train = analysis["train_examples"]
    if has_batchnorm is False:
        bn = "no BatchNorm"
    else:
        bn = "BN " + analysis["bn"] + (f" over {analysis['bn_batches']} batches" if analysis["bn"] == "recompute"
                                        else "")
    align = analysis.get("align")
    aligned = "" if not align else (", aligned by weights" if align == "weights" else
                                    f", aligned by activations on {analysis.get('align_examples')} examples")
    return (f"{analysis['interpolation_points']} points in [{low:g}, {high:g}], "
            + (f"train curve on {train} examples" if train else "no train curve") + f", {bn}{aligned}")


def _analysis(p: Mapping) -> str:
    return analysis_text(p["analysis"], p["curve"].get("has_batchnorm"))


def _setting(p: Mapping) -> tuple:
    return (p["sweep"], p["level"], method_key(p["method"]), p["method"], p["k"], _analysis(p))


def mask_mode(p: Mapping) -> str:
    """A pair's mask mode; pairs written before the mode was recorded were one-mask (an
    experiment's, with a dense accuracy) or dense."""
    return p.get("mask_mode") or ("one_mask" if p.get("dense_accuracy") is not None else "dense")


def _finite(values: Iterable) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _mean_std(values: list) -> tuple[float | None, float | None]:
    values = _finite(values)
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize(pairs: Iterable[Mapping], stable_threshold: float = STABLE_THRESHOLD,
              match_margin: float = MATCH_MARGIN) -> list[dict]:
    """One dict per setting (sweep, level, method, k, analysis settings): means and stds
    of every metric, ``n`` pairs, ``analysis`` (:func:`analysis_text`) and the statistics
    of :mod:`tflth.report.stats`: ``test_instability_low`` / ``_high`` (95 % t interval),
    ``pairs_over`` (pairs with test instability ≥ ``stable_threshold``), ``stable`` (the
    verdict, ``"yes"`` / ``"no"`` / ``"undecided"``; ``None`` without a finite instability),
    ``accuracy_minus_dense`` with ``_low``, ``_high``, ``_p`` (Welch: per-pair accuracy −
    the dense accuracies of the replicates) and ``matching`` (the "matches dense" verdict;
    ``None`` without a dense reference). ``stable_threshold`` and ``match_margin`` are
    fractions (0.02: 2 points; :mod:`tflth.conventions`). Pairs analysed with other settings (``interpolation_points``,
    ``alpha_range``, ``train_examples``, ``bn``, ``bn_batches``) are never averaged together."""
    stats.stable_rule(stable_threshold), stats.matches_rule(match_margin)  # check both before any work
    groups: dict[tuple, list[Mapping]] = {}
    pairs = list(pairs)
    measures = {measure_of(p) for p in pairs}
    if len(measures) > 1:
        raise ReportError(f"the pairs measure different things ({sorted(m.name for m in measures)}): one report "
                          "measures one (report each task's sweeps on their own)")
    measure = measures.pop() if measures else ACCURACY
    for p in pairs:
        groups.setdefault(_setting(p), []).append(p)
    dense = {}  # (sweep, experiment) -> dense accuracies (that experiment's level 0, per replicate; per-k: each k's)
    for p in (p for members in groups.values() for p in members):
        if _dense_value(p) is not None:
            dense.setdefault((p["sweep"], p.get("experiment")), {})[p["replicate"]] = _dense_value(p)
    order = {sweep: i for i, sweep in enumerate(dict.fromkeys(key[0] for key in groups))}  # sweeps as given
    out = []
    for key in sorted(groups, key=lambda key: (order[key[0]],) + key[1:]):
        members = groups[key]
        first = members[0]
        row = {"sweep": first["sweep"], "label": first["label"], "level": first["level"],
               "method": first["method"], "density": first["density"], "k": first["k"],
               "k_percent": 100.0 * first["k_fraction"], "n": len(members), "bn": first["analysis"]["bn"],
               "noise": first["noise"], "mask_mode": mask_mode(first), "experiment": first.get("experiment"),
               "analysis": key[-1]}
        for name, read in _METRICS.items():
            row[name], row[f"{name}_std"] = _mean_std([read(p) for p in members])
        row.update(stable_threshold=stable_threshold, match_margin=match_margin)
        row.update(_instability_stats([_METRICS["test_instability"](p) for p in members], stable_threshold))
        row.update(_alignment_stats(members))
        reference = dense.get((first["sweep"], first.get("experiment")))
        row["dense_accuracy"] = statistics.fmean(reference.values()) if reference else None
        accuracies = _finite(_METRICS["accuracy"](p) for p in members)
        diff = stats.welch(accuracies, reference.values()) if reference and accuracies else None
        row.update(accuracy_minus_dense=None if diff is None else diff.diff,
                   accuracy_minus_dense_low=None if diff is None else diff.low,
                   accuracy_minus_dense_high=None if diff is None else diff.high,
                   accuracy_minus_dense_p=None if diff is None else diff.p,
                   accuracy_minus_dense_n=None if diff is None else (diff.a.n, diff.b.n),
                   matching=None if diff is None else stats.matches(stats.oriented(diff, measure), match_margin),
                   measure=measure)
        out.append(row)
    return out


def _instability_stats(values: Iterable, threshold: float) -> dict:
    """The test instability's 95 % interval, pairs over ``threshold`` and the "stable" verdict."""
    values = _finite(values)
    if not values:
        return {"test_instability_low": None, "test_instability_high": None, "pairs_over": None,
                "pairs_measured": 0, "stable": None}
    sample = stats.describe(values)
    return {"test_instability_low": sample.low, "test_instability_high": sample.high,
            "pairs_over": stats.pairs_over(values, threshold), "pairs_measured": sample.n,
            "stable": stats.stable(sample, threshold)}


def _alignment_stats(members: Sequence[Mapping]) -> dict:
    """The aligned test instability's 95 % interval and the gain (before − after, per pair,
    with its 95 % interval: a paired comparison) of pairs analysed with ``--align``."""
    out = {"align": None, "aligned_test_instability_low": None, "aligned_test_instability_high": None,
           "alignment_gain": None, "alignment_gain_low": None, "alignment_gain_high": None}
    after = [_METRICS["aligned_test_instability"](p) for p in members]
    if any(a is None for a in after):
        return out
    out["align"] = members[0]["aligned"]["method"]
    sample = stats.describe(after)
    gains = stats.describe([_METRICS["test_instability"](p) - a for p, a in zip(members, after)])
    out.update(aligned_test_instability_low=sample.low, aligned_test_instability_high=sample.high,
               alignment_gain=gains.mean, alignment_gain_low=gains.low, alignment_gain_high=gains.high)
    return out


def first_stable_k(summary: Sequence[Mapping]) -> dict[tuple, stats.FirstStable]:
    """``{(sweep, level, method): its first stable k}`` (:func:`tflth.report.stats.first_stable`
    of the settings' ``stable`` verdicts; a setting without one counts as undecided)."""
    verdicts: dict[tuple, list[tuple[int, str]]] = {}
    for s in sorted(summary, key=lambda s: s["k"]):
        key = (s["sweep"], s["level"], s["method"])
        verdicts.setdefault(key, []).append((s["k"], s["stable"] or stats.UNDECIDED))
    return {key: stats.first_stable(v) for key, v in verdicts.items()}


def _pair_row(p: Mapping, threshold: float) -> dict:
    row = {"row": "pair", "sweep": p["sweep"], "label": p["label"], "level": p["level"], "method": p["method"],
           "density": p["density"], "k": p["k"], "k_percent": 100.0 * p["k_fraction"], "replicate": p["replicate"],
           "pair": p["pair"], "n": 1, "bn": p["analysis"]["bn"], "noise": p["noise"], "mask_mode": mask_mode(p),
           "experiment": p.get("experiment"), "analysis": _analysis(p)}
    row.update({name: read(p) for name, read in _METRICS.items()})
    inst = _finite([row["test_instability"]])
    row["pairs_over"] = stats.pairs_over(inst, threshold) if inst else None
    row["stable_threshold"] = threshold
    return row


def _csv_text(pairs: Sequence[Mapping], summary: Sequence[Mapping], threshold: float) -> str:
    buf = io.StringIO()
    measure = measure_of(pairs[0]) if pairs else ACCURACY
    task = {} if measure == ACCURACY else {"metric": measure.name, "higher_is_better": measure.higher_is_better}
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS + tuple(task), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in sorted(pairs, key=lambda p: _setting(p) + (p["replicate"], p["pair"])):
        writer.writerow(dict(_pair_row(p, threshold), **task))
    for s in summary:
        writer.writerow(dict(s, row="summary", **task))
    return buf.getvalue()


def _points(fraction: float, measure: Measure = ACCURACY) -> str:
    return f"{fraction * measure.scale:g}"


def _verdict(value: str | None) -> str:
    return "—" if value is None else value


def _table(summary: Sequence[Mapping]) -> tuple[list[str], list[list[str]], str]:
    """One sweep's table; with the difference to dense and "matches dense" when a row has a
    dense reference, and an ``analysis`` column when its rows were analysed differently."""
    mixed = len({s["analysis"] for s in summary}) > 1
    with_dense = any(s["matching"] is not None for s in summary)
    measure = summary[0].get("measure", ACCURACY)
    scale, digits = measure.scale, measure.digits
    tau = _points(summary[0]["stable_threshold"], measure)
    if measure.percent:
        header = (["level", "density (%)", "method", "k", "k (% of T)", "n", "test instability (pts)",
                   "instability 95 % CI", f"pairs ≥ {tau} pts", "stable", "train instability (pts)", "L2",
                   "L2 / mean norm", "disagreement (%)", "test acc (%)"]
                  + (["acc − dense (pts) [95 % CI]", "p (− dense)", "matches dense"] if with_dense else []))
    else:  # a task's barrier metric, in its own units
        name = measure.name
        header = (["level", "density (%)", "method", "k", "k (% of T)", "n", f"test barrier ({name})",
                   "barrier 95 % CI", f"pairs ≥ {tau}", "stable", f"train barrier ({name})", "L2",
                   "L2 / mean norm", "disagreement (%)", f"test {name}"]
                  + ([f"{name} − dense [95 % CI]", "p (− dense)", "matches dense"] if with_dense else []))
    aligned = any(s.get("align") for s in summary)
    if aligned:
        unit = "pts" if measure.percent else name
        header += [f"aligned test instability ({unit})", "aligned 95 % CI", f"before − after ({unit}) [95 % CI]",
                   f"aligned train instability ({unit})", "aligned L2", "aligned L2 / mean norm"]
    overlaps = any(s.get("mask_overlap") is not None for s in summary)
    if overlaps:
        header += ["mask Jaccard", "mask Jaccard aligned", "random masks' Jaccard"]
    header += ["analysis"] if mixed else []
    rows = []
    for s in summary:
        over = "—" if s["pairs_over"] is None else f"{s['pairs_over']}/{s['pairs_measured']}"
        row = [
            str(s["level"]), tables.fmt_percent(s["density"]), s["method"], f"{s['k']}it", f"{s['k_percent']:.2g}",
            str(s["n"]),
            tables.fmt_mean_std(s["test_instability"], s["test_instability_std"], scale=scale, digits=digits, n=s["n"]),
            "—" if s["test_instability"] is None else
            tables.fmt_interval(s["test_instability_low"], s["test_instability_high"], scale=scale, digits=digits),
            over, _verdict(s["stable"]),
            tables.fmt_mean_std(s["train_instability"], s["train_instability_std"], scale=scale, digits=digits, n=s["n"]),
            tables.fmt_mean_std(s["l2"], s["l2_std"], digits=3, n=s["n"]),
            tables.fmt_mean_std(s["l2_relative"], s["l2_relative_std"], digits=3, n=s["n"]),
            tables.fmt_mean_std(s["disagreement"], s["disagreement_std"], scale=100, digits=1, n=s["n"]),
            tables.fmt_mean_std(s["accuracy"], s["accuracy_std"], scale=scale, digits=digits, n=s["n"]),
        ]
        if with_dense:
            n = s["accuracy_minus_dense_n"]
            undefined = "n/a" if n is None else f"n/a (n={min(n)})"
            row += [tables.fmt_difference(s["accuracy_minus_dense"], s["accuracy_minus_dense_low"],
                                          s["accuracy_minus_dense_high"], scale=scale, digits=digits,
                                          undefined=undefined),
                    "—" if s["matching"] is None else tables.fmt_p(s["accuracy_minus_dense_p"]),
                    _verdict(s["matching"])]
        if aligned:
            row += [
                tables.fmt_mean_std(s["aligned_test_instability"], s["aligned_test_instability_std"], scale=scale,
                                    digits=digits, n=s["n"]),
                tables.fmt_interval(s["aligned_test_instability_low"], s["aligned_test_instability_high"],
                                    scale=scale, digits=digits),
                tables.fmt_difference(s["alignment_gain"], s["alignment_gain_low"], s["alignment_gain_high"],
                                      scale=scale, digits=digits),
                tables.fmt_mean_std(s["aligned_train_instability"], s["aligned_train_instability_std"], scale=scale,
                                    digits=digits, n=s["n"]),
                tables.fmt_mean_std(s["aligned_l2"], s["aligned_l2_std"], digits=3, n=s["n"]),
                tables.fmt_mean_std(s["aligned_l2_relative"], s["aligned_l2_relative_std"], digits=3, n=s["n"]),
            ]
        if overlaps:
            row += [tables.fmt_mean_std(s[name], s[f"{name}_std"], digits=3, n=s["n"])
                    for name in ("mask_overlap", "aligned_mask_overlap", "mask_overlap_random")]
        rows.append(row + ([s["analysis"]] if mixed else []))
    align = ("rrlrrrrrrl" + "rrrrr" + ("rrl" if with_dense else "") + ("rrrrrr" if aligned else "")
             + ("rrr" if overlaps else "") + ("l" if mixed else ""))
    return header, rows, align


def _first_stable_lines(summary: Sequence[Mapping]) -> list[str]:
    lines = [f"level {level} {method}: first stable k = {first.text()}"
             for (_, level, method), first in first_stable_k(summary).items()]
    measure = summary[0].get("measure", ACCURACY)
    if measure.percent:
        lines.append(f"{stats.stable_rule(summary[0]['stable_threshold'])}.")
    else:
        on = (f"1 − {measure.name} ({measure.name}: higher is better)" if measure.higher_is_better
              else f"{measure.name} (lower is better)")
        lines.append(f"barrier: the error barrier's definition on test {on}, in its units; stable: as for error, "
                     f"with the threshold {_points(summary[0]['stable_threshold'], measure)} in those units.")
    lines += [
              "first stable k: the smallest k that is stable with every larger k stable too; "
              "(.. undecided): earlier k that could still make it earlier."]
    if any(s["matching"] is not None for s in summary):
        lines.append(f"{stats.matches_rule(summary[0]['match_margin'], measure)} (per-pair {measure.name} vs the "
                     "dense replicates).")
    lines.append(f"{stats.interval_note()}; rules: docs/statistics.md.")
    settings = sorted({s["analysis"] for s in summary})
    if len(settings) > 1:
        lines.append(f"NOTE: these pairs were analysed with {len(settings)} different settings ("
                     + "; ".join(settings) + "): each row says which; rerun bin/stability.py with one setting "
                     "and every k to re-analyse them all alike")
    return lines


def _heading(rows: Sequence[Mapping]) -> str:
    settings = {s["analysis"] for s in rows}
    return (f"{rows[0]['label']} ({rows[0]['sweep']}" + (f"; {settings.pop()})" if len(settings) == 1 else ")")
            + f" — masks: {_masks_text(rows)}")


def _masks_text(rows: Sequence[Mapping]) -> str:
    """The sweep's mask mode and the experiment(s) its rows used (per k in per-k mode)."""
    modes = sorted({mask_mode(s) for s in rows})
    sources = {s["k"]: s.get("experiment") for s in sorted(rows, key=lambda s: s["k"])}
    named = sorted({e for e in sources.values() if e})
    if modes == ["per_k"]:
        return "per_k (" + ", ".join(f"k={k}it: {e}" for k, e in sources.items()) + ")"
    return "/".join(modes) + (f" ({', '.join(named)})" if named else "")


def _by_sweep(summary: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    out: dict[str, list[Mapping]] = {}
    for s in summary:
        out.setdefault(s["sweep"], []).append(s)
    return out


def markdown(summary: Sequence[Mapping]) -> str:
    """One Markdown table per sweep, each followed by its first-stable-k lines as a list."""
    return _render(summary, tables.render_markdown, "- ")


def text_table(summary: Sequence[Mapping]) -> str:
    """The tables of :func:`markdown`, aligned in plain text for a terminal."""
    return _render(summary, tables.render_text, "")


def _render(summary: Sequence[Mapping], render, bullet: str) -> str:
    parts = []
    for rows in _by_sweep(summary).values():
        header, body, align = _table(rows)
        parts.append(render(header, body, align, title=_heading(rows)))
        parts.append("".join(f"{bullet}{line}\n" for line in _first_stable_lines(rows)))
    return "\n".join(parts)


def _instability_plot(path: str, summary: Sequence[Mapping], title: str | None) -> str:
    fig, ax = plots.new_figure()
    measure = summary[0].get("measure", ACCURACY)
    series: dict[tuple, list[Mapping]] = {}
    for s in summary:
        series.setdefault((s["sweep"], s["level"], method_key(s["method"]), s["method"]), []).append(s)
    groups = sorted({key[:2] for key in series})  # (sweep, level): one colour each
    methods = sorted({s["method"] for s in summary}, key=method_key)  # one marker each
    labels = {s["sweep"]: s["label"] for s in summary}
    for (sweep, level, _, method), rows in sorted(series.items()):
        rows = sorted(rows, key=lambda s: s["k"])
        label = f"level {level} ({tables.fmt_percent(rows[0]['density'])}%) {method}" if level else \
            f"dense {method}" if method != IMP else "dense"
        if len(labels) > 1:
            label = f"{labels[sweep]}: {label}"
        half = [0.0 if s["test_instability_high"] is None else s["test_instability_high"] - s["test_instability"]
                for s in rows]
        plots.errorbar_series(ax, [s["k"] for s in rows], [s["test_instability"] or 0.0 for s in rows],
                              half, label=label, scale=measure.scale,
                              marker=plots.MARKERS[methods.index(method) % len(plots.MARKERS)],
                              color=plots.series_color(groups.index((sweep, level))),
                              linestyle="-" if method == IMP else "--")
    tau = summary[0]["stable_threshold"]
    ax.axhline(tau * measure.scale, color="0.3", lw=1.0, ls="--",
               label=f"{_points(tau, measure)} {measure.unit or measure.name} (threshold)", zorder=1)
    plots.log_x_axis(ax, sorted({s["k"] for s in summary}), fmt=lambda v: f"{v:g}")
    plots.style_axes(ax, xlabel="Rewind step k (iterations)",
                     ylabel="Test instability (error barrier, points)" if measure.percent else
                     f"Test barrier on {measure.name}", title=title or "Instability vs rewind step")
    plots.place_legend(ax, title="mean over pairs; error bars:\n95 % t interval (none for n=1)")
    return plots.save_figure(path, fig)


def _mean_curve(tests: Sequence[Mapping]) -> tuple[list, list, list]:
    """``(alphas, mean, 95 % half-width)`` over test curves (``{"alphas", "errors"}``);
    curves whose α grid differs from the first's are left out."""
    alphas = tests[0]["alphas"]
    errors = [t["errors"] for t in tests if t["alphas"] == alphas]
    at = [stats.describe(e[j] for e in errors) for j in range(len(alphas))]
    return list(alphas), [a.mean for a in at], [a.half_width or 0.0 for a in at]


def curve_series(k: int, members: Sequence[Mapping]) -> list[tuple[str, list, list, list, str]]:
    """The test-error curves of one k's pairs, as plotted: ``(label, alphas, mean,
    95 % half-width, line style)`` per α, the pairs' line solid and, where the pairs were
    aligned (``--align``), the aligned line dashed. Pairs whose α grid differs from the
    first pair's are left out."""
    out = [(f"k = {k}it", *_mean_curve([m["curve"]["test"] for m in members]), "-")]
    aligned = [m["aligned"] for m in members if m.get("aligned")]
    if aligned:
        out.append((f"k = {k}it, aligned ({aligned[0]['method']})",
                    *_mean_curve([a["curve"]["test"] for a in aligned]), "--"))
    return out


def _curve_plots(output_dir: str, pairs: Sequence[Mapping]) -> dict[str, str]:
    """``{"curves_<sweep>_level<L>_<method>": path}``: one figure per (sweep, level, method)."""
    groups: dict[tuple, dict[int, list[Mapping]]] = {}
    for p in pairs:
        groups.setdefault((p["sweep"], p["level"], p["method"]), {}).setdefault(p["k"], []).append(p)
    written = {}
    for (sweep, level, method), by_k in sorted(groups.items()):
        fig, ax = plots.new_figure()
        measure = measure_of(next(iter(by_k.values()))[0])
        what_y = ("Test error (%)" if measure.percent else f"Test {measure.name}" if not measure.higher_is_better
                  else f"Test 1 − {measure.name}")
        for i, k in enumerate(sorted(by_k)):
            for label, alphas, means, halves, style in curve_series(k, by_k[k]):
                plots.errorbar_series(ax, alphas, means, halves, label=label, scale=measure.scale, marker=None,
                                      color=plots.series_color(i), linestyle=style, band=True)
        what = "dense" if level == 0 and method == IMP else f"level {level} {method}"
        plots.style_axes(ax, xlabel="Interpolation α (0: copy a, 1: copy b)", ylabel=what_y,
                         title=f"{what_y.split(' (')[0]} along the line between the copies: {what}")
        plots.place_legend(ax, title="mean over pairs; band:\n95 % t interval (none for n=1)")
        name = sweep.strip("/").replace(os.sep, "_").replace(".", "_")  # a sweep named by its path
        stem = f"curves_{name}_level{level}_{method}"
        written[stem] = plots.save_figure(os.path.join(output_dir, f"{stem}.png"), fig)
    return written


def write_report(output_dir: str, pairs: Iterable[Mapping], title: str | None = None, *,
                 match_margin: float = MATCH_MARGIN, stable_threshold: float = STABLE_THRESHOLD) -> dict[str, str]:
    """Write ``stability.csv``, ``stability.md``, ``instability.png`` and the curve plots
    into ``output_dir``; returns ``{name: path}``, one entry per file written: ``"csv"``,
    ``"markdown"``, ``"plot"`` and ``"curves_<sweep>_level<L>_<method>"`` for each curve
    figure (the contract of :func:`tflth.report.imp.write_report`). ``stable_threshold`` and
    ``match_margin`` (fractions) as in :func:`summarize`."""
    pairs = list(pairs)
    if not pairs:
        raise ValueError("write_report: no finished pairs")
    summary = summarize(pairs, stable_threshold=stable_threshold, match_margin=match_margin)
    out = {"csv": os.path.join(output_dir, "stability.csv"), "markdown": os.path.join(output_dir, "stability.md"),
           "plot": os.path.join(output_dir, "instability.png")}
    fileio.write_text(out["csv"], _csv_text(pairs, summary, stable_threshold))
    md = ((f"# {title}\n\n" if title else "") + markdown(summary)
          + "\n![instability vs k (error bars: 95 % intervals)](instability.png)\n")
    fileio.write_text(out["markdown"], md)
    _instability_plot(out["plot"], summary, title)
    out.update(_curve_plots(output_dir, pairs))
    return out

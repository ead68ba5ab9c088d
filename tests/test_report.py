"""tflth.report: summaries, CSV, tables, the figure and collect() on a fake experiment tree."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from tflth import conventions, report
from tflth.lottery import starts

CONTROLS = tuple(starts.CONTROLS)  # what the binaries pass to collect
LABEL = "lenet_300_100 fashion_mnist rewind@0it"


def row(level, method, replicate, acc, density=None, experiment="exp", label=LABEL, loss=0.5):
    return {"experiment": experiment, "label": label, "method": method, "replicate": replicate,
            "level": level, "density": 0.8 ** level if density is None else density,
            "test_accuracy": acc, "test_loss": loss}


def rows_fixture():
    # Input deliberately out of order.
    return [
        row(1, "fine_tune", 0, 0.95),
        row(1, "random_prune", 0, 0.85, loss=0.7),
        row(1, "random_reinit", 0, 0.9389),
        row(1, "imp", 1, 0.939),  # both replicates alike: zero variance on this side
        row(1, "imp", 0, 0.939),
        row(0, "imp", 1, 0.951, loss=0.3),
        row(0, "imp", 0, 0.931, loss=0.1),
        row(2, "imp", 0, 0.80, density=0.64),
        row(2, "imp", 1, 0.85, density=0.6401),
        row(2, "imp", 2, 0.90, density=0.6402),
    ]


def by_key(summary):
    return {(s.experiment, s.method, s.level): s for s in summary}


T975 = {1: 12.706204736, 2: 4.302652730, 4: 2.776445105}  # tabulated t(0.975, df)


# ----------------------------------------------------------------------------- summarize

def test_summarize_numbers_match_hand_computation():
    s = by_key(report.summarize(rows_fixture()))
    dense = s["exp", "imp", 0]
    assert dense.n == 2 and dense.density == 1.0
    assert dense.acc_mean == pytest.approx(0.941)
    assert dense.acc_std == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 1))  # sample std, ddof=1
    assert dense.loss_mean == pytest.approx(0.2)
    assert dense.matches is None and dense.vs_dense is None  # the dense row is not compared with itself
    # 95 % t interval, n = 2: 0.941 ± t(0.975, 1) · 0.0141421 / √2 = 0.941 ± 0.127062
    assert (dense.acc.low, dense.acc.high) == (pytest.approx(0.941 - T975[1] * 0.01),
                                               pytest.approx(0.941 + T975[1] * 0.01))

    lvl2 = s["exp", "imp", 2]
    assert lvl2.n == 3
    assert lvl2.density == pytest.approx(0.6401)
    assert lvl2.acc_mean == pytest.approx(0.85)
    assert lvl2.acc_std == pytest.approx(0.05)  # sqrt((0.05² + 0 + 0.05²) / 2)
    assert (lvl2.acc_min, lvl2.acc_max) == (0.80, 0.90)
    assert lvl2.dense_acc_mean == pytest.approx(0.941)
    assert lvl2.dense_acc_std == pytest.approx(0.0141421356)
    half = T975[2] * 0.05 / math.sqrt(3)  # 0.124207
    assert (lvl2.acc.low, lvl2.acc.high) == (pytest.approx(0.85 - half), pytest.approx(0.85 + half))
    # Welch (level 2 − dense): va = 0.05²/3, vb = 0.0141421²/2 = 1e-4
    va, vb = 0.05 ** 2 / 3, 1e-4
    d = lvl2.vs_dense
    assert d.diff == pytest.approx(0.85 - 0.941)
    assert d.se == pytest.approx(math.sqrt(va + vb))
    assert d.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 1))  # 2.4396
    assert 2.4 < d.df < 2.5 and T975[2] > (d.high - d.diff) / d.se > 3.18  # t(0.975, 2.44) between df 2 and 3
    assert d.low < -0.005 < d.high  # −9.1 points, but the interval reaches above −0.5 points
    assert lvl2.matches == "undecided"

    single = s["exp", "random_reinit", 1]
    assert single.n == 1 and single.acc_std == 0.0 and single.acc.std is None
    assert single.acc.low is None and single.acc.high is None  # undefined for n = 1, not a crash
    assert not single.vs_dense.defined and single.vs_dense.diff == pytest.approx(0.9389 - 0.941)
    assert single.matches == "undecided" and single.imp_beats == "undecided"
    assert single.vs_imp.diff == pytest.approx(0.939 - 0.9389)  # IMP − control


def _replicates(level, method, accs, experiment="exp"):
    return [row(level, method, r, a, experiment=experiment) for r, a in enumerate(accs)]


def test_verdicts_in_the_summary_follow_the_welch_intervals():
    dense = _replicates(0, "imp", [0.900, 0.902, 0.904])  # mean 0.902, s = 0.002
    rows = dense + (
        _replicates(1, "imp", [0.901, 0.903, 0.905])  # +0.1 points, tight: matches
        + _replicates(1, "random_reinit", [0.880, 0.882, 0.884])  # −2.0 points, tight: no; IMP beats it
        + _replicates(1, "random_prune", [0.902, 0.903, 0.904])  # IMP − it = 0 ± narrow: "no difference"
        + _replicates(2, "imp", [0.86, 0.90, 0.94])  # −2 points ± 10: undecided
        + _replicates(2, "random_reinit", [0.85, 0.90, 0.95]))  # IMP − it = +0.33 ± wide: undecided
    s = by_key(report.summarize(rows))
    assert s["exp", "imp", 1].matches == "yes"
    assert s["exp", "random_reinit", 1].matches == "no"
    assert s["exp", "random_reinit", 1].imp_beats == "yes"
    assert s["exp", "random_prune", 1].imp_beats == "no"
    assert s["exp", "imp", 2].matches == "undecided"
    assert s["exp", "random_reinit", 2].imp_beats == "undecided"
    # By hand: imp 1 − dense = +0.001, both s = 0.002, n = 3: se = 0.002·√(2/3), df = 4
    d = s["exp", "imp", 1].vs_dense
    se = 0.002 * math.sqrt(2 / 3)
    assert d.df == pytest.approx(4.0)
    assert (d.low, d.high) == (pytest.approx(0.001 - T975[4] * se), pytest.approx(0.001 + T975[4] * se))
    # The margin decides: with δ = 0 the same tight interval [-0.35, +0.55] points is undecided.
    strict = by_key(report.summarize(rows, match_margin=0.0))
    assert strict["exp", "imp", 1].matches == "undecided" and strict["exp", "imp", 1].match_margin == 0.0
    assert strict["exp", "random_prune", 1].imp_beats == "undecided"  # "within ±0" is impossible
    loose = by_key(report.summarize(rows, match_margin=0.03))  # 3 points
    assert loose["exp", "random_reinit", 1].matches == "yes"
    with pytest.raises(ValueError, match=r"margin=-0\.001"):
        report.summarize(rows, match_margin=-0.001)


def test_summarize_order_and_experiment_without_dense():
    rows = rows_fixture() + [row(3, "imp", 0, 0.5, experiment="a_other"),
                             row(3, "random_reinit", 0, 0.4, experiment="a_other")]
    keys = [(s.experiment, s.level, s.method) for s in report.summarize(rows)]
    assert keys == [  # experiments in the order the rows name them, not by name
        ("exp", 0, "imp"),
        ("exp", 1, "imp"), ("exp", 1, "random_reinit"), ("exp", 1, "random_prune"), ("exp", 1, "fine_tune"),
        ("exp", 2, "imp"),
        ("a_other", 3, "imp"), ("a_other", 3, "random_reinit"),
    ]
    assert [s.experiment for s in report.summarize(rows[-2:] + rows[:-2])][0] == "a_other"
    other = by_key(report.summarize(rows))["a_other", "imp", 3]
    assert other.dense_acc_mean is None and other.matches is None


def test_summarize_rejects_duplicates_and_bad_rows():
    with pytest.raises(ValueError, match="duplicate"):
        report.summarize([row(0, "imp", 0, 0.9), row(0, "imp", 0, 0.8)])
    bad = row(0, "imp", 0, 0.9)
    del bad["test_loss"]
    with pytest.raises(ValueError, match="test_loss"):
        report.summarize([bad])
    with pytest.raises(ValueError, match="density"):
        report.summarize([row(0, "imp", 0, 0.9, density=0.0)])


# ----------------------------------------------------------------------------- CSV

def test_csv_round_trip_with_exact_columns(tmp_path):
    rows = rows_fixture()
    rows[0] = dict(rows[0], step=1234)  # extra keys are dropped
    path = tmp_path / "out" / "results.csv"
    assert report.write_csv(str(path), rows) == str(path)
    with open(path, newline="") as f:
        lines = f.read().splitlines()
    assert lines[0] == "experiment,label,method,replicate,level,density,test_accuracy,test_loss,last_evals_range"
    assert len(lines) == 1 + len(rows) and lines[1].endswith(",")  # unknown optional value: empty cell
    with open(path, newline="") as f:
        raw = list(csv.DictReader(f))
    assert raw[0]["method"] == "fine_tune" and "step" not in raw[0]
    back = report.read_csv(str(path))
    expected = [dict({c: r[c] for c in report.COLUMNS}, last_evals_range=None) for r in rows]
    assert back == expected  # floats round-trip exactly, ints stay ints
    assert os.listdir(path.parent) == ["results.csv"]  # no temp file left behind

    moved = [dict(r, last_evals_range=0.1 + i / 3) for i, r in enumerate(rows)]
    report.write_csv(str(path), moved)
    assert [r["last_evals_range"] for r in report.read_csv(str(path))] == [r["last_evals_range"] for r in moved]


def test_read_csv_written_before_the_optional_column(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("experiment,label,method,replicate,level,density,test_accuracy,test_loss\n"
                    "e,l,imp,0,0,1.0,0.9,0.3\n")
    assert report.read_csv(str(path)) == [
        {"experiment": "e", "label": "l", "method": "imp", "replicate": 0, "level": 0, "density": 1.0,
         "test_accuracy": 0.9, "test_loss": 0.3, "last_evals_range": None}]
    path.write_text("experiment,label,method\ne,l,imp\n")
    with pytest.raises(ValueError, match="columns"):
        report.read_csv(str(path))


def test_last_evaluations_note_is_the_run_weighted_mean_and_max():
    rows = [dict(row(0, "imp", r, 0.90 + r / 100), last_evals_range=m) for r, m in enumerate((0.002, 0.004, 0.009))]
    rows += [dict(row(1, "imp", 0, 0.91, density=0.5), last_evals_range=0.001),
             dict(row(1, "imp", 1, 0.91, density=0.5), last_evals_range=None)]
    summary = report.summarize(rows)
    level0 = by_key(summary)["exp", "imp", 0]
    assert level0.last_evals_ranges == (0.002, 0.004, 0.009)
    md = report.markdown_table(summary)
    # (0.002 + 0.004 + 0.009 + 0.001) / 4 runs = 0.4 points; max 0.9
    assert "the last 2 evaluations of a run differ by 0.40 points on average (max 0.90)" in md
    assert "evaluations of a run" not in report.markdown_table(report.summarize(rows_fixture()))


def test_write_csv_is_atomic_on_failure(tmp_path):
    path = tmp_path / "results.csv"
    report.write_csv(str(path), rows_fixture())
    before = path.read_text()

    class Boom(dict):
        def __getitem__(self, key):
            raise RuntimeError("boom")

    with pytest.raises((RuntimeError, ValueError)):
        report.write_csv(str(path), rows_fixture() + [Boom(row(0, "imp", 5, 0.9))])
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["results.csv"]


# ----------------------------------------------------------------------------- tables

def test_markdown_table_lines():
    md = report.markdown_table(report.summarize(rows_fixture()))
    lines = md.splitlines()
    assert lines[0] == f"**{LABEL} (exp): dense test accuracy 94.10 ± 1.41 %; 3 replicates**"
    assert ("| level | density (%) | method | n | acc (%) mean ± std | acc (%) 95 % CI | − dense (pts) [95 % CI] "
            "| p (− dense) | matches dense | IMP − it (pts) [95 % CI] | p (IMP − it) | IMP beats it |") in lines
    # 94.10 ± 12.7062 · 1.41421 / √2 = [81.39, 106.81]
    assert "| 0 | 100.0 | IMP | 2 | 94.10 ± 1.41 | [81.39, 106.81] | — | — | — | — | — | — |" in lines
    assert ("| 1 | 80.0 | random_reinit | 1 | 93.89 | n/a (n=1) | -0.21 [n/a (n=1)] | n/a | undecided "
            "| +0.01 [n/a (n=1)] | n/a | undecided |") in lines
    # 85.00 ± 4.30265 · 5 / √3 = [72.58, 97.42]; Welch vs dense: −9.10 [−20.22, +2.02], p = 0.076
    assert ("| 2 | 64.0 | IMP | 3 | 85.00 ± 5.00 | [72.58, 97.42] | -9.10 [-20.22, +2.02] | 0.076 | undecided "
            "| — | — | — |") in lines
    assert len([ln for ln in lines if ln.startswith("| ") and ln[2].isdigit()]) == 6  # one per (level, method)
    rules = [ln for ln in lines if ln.startswith("- ")]
    assert rules[0] == ("- matches dense: yes if the 95 % Welch interval of (method − dense) lies above −0.5 points, "
                        "no if below, else undecided.")
    assert rules[1].startswith("- IMP beats <control>: yes if the 95 % Welch interval of (IMP − control) lies above 0, "
                               "no if below 0 or within ±0.5 points, else undecided")
    assert "docs/statistics.md" in rules[2]
    assert "−2 points" in report.markdown_table(report.summarize(rows_fixture(), match_margin=0.02))


def test_markdown_one_table_per_experiment_and_density_format():
    rows = [row(0, "imp", 0, 0.98, experiment="b"), row(8, "imp", 0, 0.97, experiment="b"),
            row(0, "imp", 0, 0.70, experiment="a", label="conv"),
            row(15, "imp", 0, 0.69, experiment="a", label="conv"),
            row(25, "imp", 0, 0.60, experiment="a", label="conv")]
    md = report.markdown_table(report.summarize(rows))
    assert md.count("| level | density (%) |") == 2
    assert md.index(f"**{LABEL} (b)") < md.index("**conv (a)")  # in the order of the rows
    # one replicate each: the point difference, no interval, undecided
    assert "| 8 | 16.8 | IMP | 1 | 97.00 | n/a (n=1) | -1.00 [n/a (n=1)] | n/a | undecided | — | — | — |" in md
    assert "**conv (a): dense test accuracy 70.00 %; 1 replicate**" in md
    assert "| 15 | 3.5 | IMP | 1 | 69.00 | n/a (n=1) | -1.00 [n/a (n=1)] | n/a | undecided |" in md
    assert "| 25 | 0.38 | IMP | 1 | 60.00 |" in md  # below 1 %: two significant digits


def test_text_table_is_aligned():
    text = report.text_table(report.summarize(rows_fixture()))
    lines = text.splitlines()
    assert lines[0].startswith(f"{LABEL} (exp): dense test accuracy 94.10 ± 1.41 %")
    header, rule, *body = lines[1:]
    assert header.split("  ")[0] == "level"
    assert set(rule) == {"-", " "}
    table, rules = body[:6], body[6:]
    assert rules[0].startswith("matches dense: yes if") and rules[1].startswith("IMP beats <control>: yes if")
    # Every right-aligned column (numbers: level .. the CIs) ends where its rule segment ends.
    ends = [i + 1 for i, (a, b) in enumerate(zip(rule, rule[1:] + " ")) if a == "-" and b == " "]
    for line in [header] + table:
        for i in (0, 1, 3, 4, 5, 6, 7):
            assert line[ends[i] - 1] != " " and line[ends[i]: ends[i] + 2] == "  ", line
    assert "93.90 ± 0.00" in table[1] and "[93.90, 93.90]" in table[1]  # zero variance: a point interval
    assert table[4].split()[2] == "fine_tune" and table[4].endswith("undecided")
    assert report.text_table([]) == "(no results)\n"


def test_generic_tables_render_markdown_and_text():
    from tflth.report import tables

    header = ["k", "k (%)", "instability (%)", "note"]
    body = [["0", tables.fmt_percent(0.0), tables.fmt_mean_std(0.1234, 0.0101, scale=100), "a|b"],
            ["2000", tables.fmt_percent(0.0625), tables.fmt_mean_std(0.02, None, scale=100, n=1, n_max=3), "x"]]
    md = tables.render_markdown(header, body, align="rrcl", title="T")
    assert md.splitlines() == ["**T**", "", "| k | k (%) | instability (%) | note |", "|---:|---:|:---:|:---|",
                               "| 0 | 0 | 12.34 ± 1.01 | a\\|b |", "| 2000 | 6.2 | 2.00 (n=1) | x |"]
    text = tables.render_text(header, body, align="rrcl")
    assert text.splitlines() == ["   k  k (%)  instability (%)  note",
                                 "----  -----  ---------------  ----",
                                 "   0      0    12.34 ± 1.01   a|b",
                                 "2000    6.2     2.00 (n=1)    x"]
    assert tables.render_markdown(["a"], [["1"]]) == "| a |\n|:---|\n| 1 |\n"  # left by default
    with pytest.raises(ValueError, match="cells"):
        tables.render_text(["a", "b"], [["1"]])
    with pytest.raises(ValueError, match="align"):
        tables.render_markdown(["a", "b"], [["1", "2"]], align="rx")


def test_fmt_mean_std_and_percent():
    from tflth.report.tables import fmt_mean_std, fmt_percent

    assert fmt_mean_std(0.941, 0.01414, scale=100) == "94.10 ± 1.41"
    assert fmt_mean_std(0.941, 0.01414, scale=100, n=1) == "94.10"  # one replicate: no spread
    assert fmt_mean_std(1.5, 0.25, digits=3, n=2, n_max=4) == "1.500 ± 0.250 (n=2)"
    assert fmt_mean_std(None) == "—"
    assert [fmt_percent(d) for d in (1.0, 0.168, 0.0035, 0.0038)] == ["100.0", "16.8", "0.35", "0.38"]
    assert fmt_percent(0.8, trim=True) == "80" and fmt_percent(0.512, trim=True) == "51.2"


# ----------------------------------------------------------------------------- figure

def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "fig" / "results.png"
    assert report.plot(str(path), report.summarize(rows_fixture()), title="t") == str(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    import matplotlib.image

    img = matplotlib.image.imread(str(path))
    assert img.shape[0] > 300 and img.shape[1] > 600
    assert img[..., :3].std() > 0.05  # not a blank canvas
    assert os.listdir(path.parent) == ["results.png"]


def test_plot_axes_read_like_the_papers():
    rows = [row(level, m, r, 0.9 - 0.01 * level + 0.001 * r)
            for level in range(6) for r in range(2)
            for m in (["imp"] if level == 0 else ["imp", "random_prune"])]
    fig = report.figure(report.summarize(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 and right < 0.8 ** 5 * 100  # inverted: dense on the left
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["100", "80", "64", "51.2", "41", "32.8"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    half = T975[1] * 0.1 / math.sqrt(2) / math.sqrt(2)  # dense 90.0 and 90.1: s = 0.0707 points, n = 2
    assert legend == [f"dense 90.05 [{90.05 - half:.2f}, {90.05 + half:.2f}] %", "IMP (n=2)", "random_prune (n=2)"]
    assert legend[0] == "dense 90.05 [89.41, 90.69] %"
    assert "95 % t interval" in ax.get_legend().get_title().get_text()
    # error bars: the 95 % half-width of each point (IMP, level 5: 0.85 and 0.851 → 0.635 points)
    bars = [c for c in ax.containers if hasattr(c, "lines")][0]
    segments = bars.lines[2][0].get_segments()
    assert [round(seg[1][1] - seg[0][1], 3) for seg in segments] == [round(2 * half, 3)] * 6
    assert ax.get_title() == LABEL
    assert ax.get_ylabel() == "Test accuracy (%)"
    with pytest.raises(ValueError):
        report.figure([])


def test_generic_plot_helpers(tmp_path):
    from tflth.report import plots

    fig, ax = plots.new_figure()
    ks = [0, 100, 200, 500, 1000, 2000]
    plots.errorbar_series(ax, ks, [0.5, 0.3, 0.2, 0.05, 0.01, 0.0], [0.1, 0.05, 0.02, 0.01, 0.0, 0.0],
                          label="IMP", marker=plots.MARKERS[0], color=plots.series_color(0), scale=100)
    alphas = [i / 10 for i in range(11)]
    plots.errorbar_series(ax, ks[1:], [0.4] * 5, None, label="no spread", color=plots.series_color(11))
    ticks = plots.log_x_axis(ax, ks)  # with k = 0: symmetric log, a tick at 0
    assert ax.get_xscale() == "symlog"
    assert ticks == [0.0, 100, 200, 500, 1000, 2000]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "100", "200", "500", "1000", "2000"]
    left, right = ax.get_xlim()
    assert left < 0 < 2000 < right
    plots.reference_band(ax, 40.0, 2.0, color="C3", label="dense")
    plots.style_axes(ax, xlabel="k", ylabel="instability (%)", title="t")
    legend = plots.place_legend(ax, title="±1 std")
    assert [t.get_text() for t in legend.get_texts()] == ["dense", "IMP", "no spread"]
    path = tmp_path / "out" / "instability.png"
    assert plots.save_figure(str(path), fig) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(path.parent) == ["instability.png"]

    fig, ax = plots.new_figure(figsize=(4, 3))
    plots.errorbar_series(ax, alphas, [0.1] * 11, [0.01] * 11, label="error vs α", band=True)
    assert len(ax.collections) == 1  # the shaded ±std band
    plots.place_legend(ax, where="lower left")
    ticks = plots.log_x_axis(ax, [1, 10, 100], fmt=lambda v: f"{v:g}x")
    assert ax.get_xscale() == "log" and ticks == [1, 10, 100]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1x", "10x", "100x"]
    with pytest.raises(ValueError):
        plots.errorbar_series(ax, [1, 2], [0.1])
    with pytest.raises(ValueError):
        plots.log_x_axis(ax, [-1, 1])


def test_thin_ticks_keeps_the_ends_and_spacing():
    from tflth.report.plots import thin_ticks

    values = [100 * 0.8 ** level for level in range(40)]
    kept = thin_ticks(values, max_ticks=10)
    assert kept[0] == 100 and kept[-1] == min(values) and len(kept) <= 10
    assert kept == sorted(kept, reverse=True)
    assert thin_ticks([5, 1, 5]) == [5, 1]


def test_write_report(tmp_path):
    paths = report.write_report(str(tmp_path / "report"), rows_fixture(), title="My run")
    assert paths == {"csv": str(tmp_path / "report" / "results.csv"),
                     "summary_csv": str(tmp_path / "report" / "results_summary.csv"),
                     "markdown": str(tmp_path / "report" / "results.md"),
                     "plot": str(tmp_path / "report" / "results.png")}
    md = open(paths["markdown"], encoding="utf-8").read()
    assert md.startswith("# My run\n")
    assert "| 2 | 64.0 | IMP | 3 | 85.00 ± 5.00 | [72.58, 97.42] | -9.10 [-20.22, +2.02] | 0.076 | undecided |" in md
    assert len(report.read_csv(paths["csv"])) == len(rows_fixture())
    assert open(paths["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "report")) == ["results.csv", "results.md", "results.png",
                                                       "results_summary.csv"]
    with open(paths["summary_csv"], newline="") as f:
        summary = list(csv.DictReader(f))
    from tflth.report.imp import SUMMARY_COLUMNS

    assert tuple(summary[0]) == SUMMARY_COLUMNS
    assert [(r["level"], r["method"]) for r in summary] == [("0", "imp"), ("1", "imp"), ("1", "random_reinit"),
                                                            ("1", "random_prune"), ("1", "fine_tune"), ("2", "imp")]
    lvl2 = summary[-1]
    assert float(lvl2["acc_low"]) == pytest.approx(0.85 - T975[2] * 0.05 / math.sqrt(3))
    assert lvl2["matches_dense"] == "undecided" and lvl2["imp_minus"] == "" and float(lvl2["match_margin"]) == 0.005
    assert float(lvl2["minus_dense"]) == pytest.approx(-0.091) and 0.07 < float(lvl2["minus_dense_p"]) < 0.08
    single = summary[2]  # random_reinit, one replicate: the interval is empty, the verdict undecided
    assert single["acc_low"] == single["minus_dense_low"] == single["minus_dense_p"] == ""
    assert single["imp_beats"] == "undecided" and float(single["imp_minus"]) == pytest.approx(0.0001)


def test_comparison_table_puts_experiments_side_by_side(tmp_path):
    rows = [row(0, "imp", r, 0.90 + r / 100, experiment="a", label="k=0") for r in (0, 1)]
    rows += [row(1, "imp", r, 0.80 + r / 100, experiment="a", label="k=0") for r in (0, 1)]
    rows += [row(0, "imp", 0, 0.91, experiment="b", label="k=24"), row(1, "imp", 0, 0.88, experiment="b", label="k=24"),
             row(1, "random_prune", 0, 0.70, experiment="b", label="k=24")]
    table = report.comparison_table(report.summarize(rows))
    lines = table.splitlines()
    assert lines[0] == "**All experiments by level (mean ± std over replicates)**"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["level", "density (%)", "k=0: IMP acc (%)", "k=24: IMP acc (%)", "k=24: random_prune acc (%)"]
    # means and sample stds by hand: (0.90, 0.91) -> 90.50 ± 0.71; (0.80, 0.81) -> 80.50 ± 0.71
    assert lines[4] == "| 0 | 100.0 | 90.50 ± 0.71 | 91.00 | — |"
    assert lines[5] == "| 1 | 80.0 | 80.50 ± 0.71 | 88.00 | 70.00 |"
    assert report.comparison_table(report.summarize(rows[:4])) == ""  # one experiment: nothing to compare
    md = open(report.write_report(str(tmp_path), rows)["markdown"], encoding="utf-8").read()
    assert table in md


# ----------------------------------------------------------------------------- collect

def write_json(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f)


def fake_experiment(root, label=LABEL):
    exp = os.path.join(root, "lenet_fmnist")
    write_json(os.path.join(exp, "hparams.json"), {"label": label, "levels": 2})
    for r, accs in ((0, (0.90, 0.91, None)), (1, (0.92, None, None))):
        for level, acc in enumerate(accs):
            d = os.path.join(exp, f"replicate_{r}", f"level_{level}")
            write_json(os.path.join(d, "density.json"), {"density": 0.8 ** level})
            if acc is not None:
                write_json(os.path.join(d, "result.json"),
                           {"test_accuracy": acc, "test_loss": 1 - acc, "step": 100})
    with open(os.path.join(exp, "replicate_0", "level_0", "metrics.jsonl"), "w") as f:
        f.write("".join(json.dumps({"step": s, "test_accuracy": a}) + "\n"
                        for s, a in ((100, 0.80), (200, 0.875), (300, 0.90))) + '{"step": 400, "test_acc')  # torn
    with open(os.path.join(exp, "replicate_1", "level_0", "metrics.jsonl"), "w") as f:
        f.write(json.dumps({"step": 300, "test_accuracy": 0.92}) + "\n")  # one evaluation: no range
    lvl1 = os.path.join(exp, "replicate_0", "level_1")
    write_json(os.path.join(lvl1, "random_reinit", "result.json"),
               {"test_accuracy": 0.85, "test_loss": 0.4, "step": 100})
    os.makedirs(os.path.join(lvl1, "checkpoints"))  # no result.json: not a control
    write_json(os.path.join(exp, "replicate_0", "level_2", "random_reinit", "hparams.json"), {})
    os.makedirs(os.path.join(exp, "replicate_x"))  # ignored
    open(os.path.join(exp, "notes.txt"), "w").close()
    return exp


def test_collect_fake_experiment(tmp_path):
    exp = fake_experiment(str(tmp_path))
    rows = report.collect(exp, CONTROLS)
    common = {"experiment": "lenet_fmnist", "label": LABEL, "last_evals_range": None}
    assert rows == [
        {**common, "method": "imp", "replicate": 0, "level": 0, "density": 1.0,
         "test_accuracy": 0.90, "test_loss": pytest.approx(0.10), "last_evals_range": pytest.approx(0.025)},
        {**common, "method": "imp", "replicate": 0, "level": 1, "density": 0.8,
         "test_accuracy": 0.91, "test_loss": pytest.approx(0.09)},
        {**common, "method": "random_reinit", "replicate": 0, "level": 1, "density": 0.8,
         "test_accuracy": 0.85, "test_loss": 0.4},
        {**common, "method": "imp", "replicate": 1, "level": 0, "density": 1.0,
         "test_accuracy": 0.92, "test_loss": pytest.approx(0.08)},
    ]  # level 2 (unfinished) and replicate 1's level 1 are skipped
    summary = by_key(report.summarize(rows))
    assert summary["lenet_fmnist", "imp", 0].n == 2
    assert summary["lenet_fmnist", "random_reinit", 1].matches == "undecided"  # one replicate a side


def test_collect_label_falls_back_to_the_directory_name(tmp_path):
    exp = fake_experiment(str(tmp_path))
    write_json(os.path.join(exp, "hparams.json"), {"levels": 2})
    assert {r["label"] for r in report.collect(exp, CONTROLS)} == {"lenet_fmnist"}
    write_json(os.path.join(exp, "hparams.json"), {"label": 3})
    with pytest.raises(ValueError, match="label"):
        report.collect(exp, CONTROLS)


def test_collect_errors(tmp_path):
    not_exp = tmp_path / "just_a_dir"
    not_exp.mkdir()
    (not_exp / "replicate_0").mkdir()
    with pytest.raises(ValueError, match="just_a_dir"):
        report.collect(str(not_exp), CONTROLS)
    with pytest.raises(ValueError, match="missing_dir"):
        report.collect(str(tmp_path / "missing_dir"), CONTROLS)
    exp = fake_experiment(str(tmp_path))
    os.remove(os.path.join(exp, "replicate_0", "level_1", "density.json"))
    with pytest.raises(ValueError, match="density.json"):
        report.collect(exp, CONTROLS)


def test_collect_ignores_directories_that_are_not_registered_controls(tmp_path):
    exp = fake_experiment(str(tmp_path))
    expected = report.collect(exp, CONTROLS)
    lvl1 = os.path.join(exp, "replicate_0", "level_1")
    # A user's notes and a future sweep's directory, each with a result.json, under a level.
    write_json(os.path.join(lvl1, "notes", "result.json"), {"test_accuracy": 0.1, "test_loss": 9.0})
    write_json(os.path.join(lvl1, "stability", "result.json"), {"test_accuracy": 0.2, "test_loss": 8.0})
    # Even under a level that has no IMP result of its own: no row, and no density needed.
    write_json(os.path.join(exp, "replicate_1", "level_2", "notes", "result.json"),
               {"test_accuracy": 0.3, "test_loss": 7.0})
    os.remove(os.path.join(exp, "replicate_1", "level_2", "density.json"))
    rows = report.collect(exp, CONTROLS)
    assert rows == expected
    assert {r["method"] for r in rows} == {"imp", "random_reinit"}
    # controls= narrows (or widens) the set of control names.
    assert [r["method"] for r in report.collect(exp, controls=[])] == ["imp"] * 3
    with pytest.raises(ValueError, match="density.json"):  # replicate 1's level 2 now has a result
        report.collect(exp, controls=["random_reinit", "notes"])
    write_json(os.path.join(exp, "replicate_1", "level_2", "density.json"), {"density": 0.64})
    widened = report.collect(exp, controls=["random_reinit", "notes"])
    assert [(r["replicate"], r["level"], r["method"], r["density"]) for r in widened if r["method"] == "notes"] == [
        (0, 1, "notes", 0.8), (1, 2, "notes", 0.64)]


def test_collect_needs_the_control_names_and_the_report_order_names_registered_controls():
    with pytest.raises(TypeError, match="controls"):
        report.collect("anywhere")  # the caller names the controls: the report does not import tflth.lottery
    assert conventions.METHOD_ORDER[0] == conventions.IMP
    assert set(conventions.METHOD_ORDER[1:]) <= set(starts.CONTROLS)
    assert sorted(["zz_new", "random_prune", "imp", "a_new", "random_reinit"], key=conventions.method_key) == [
        "imp", "random_reinit", "random_prune", "a_new", "zz_new"]


def test_collect_damaged_files_name_the_file(tmp_path):
    from tflth import fileio

    exp = fake_experiment(str(tmp_path))
    result = os.path.join(exp, "replicate_0", "level_1", "random_reinit", "result.json")
    with open(result, "w") as f:
        f.write('{"test_accuracy": 0.')  # torn write
    with pytest.raises(fileio.DamagedFileError, match="random_reinit"):
        report.collect(exp, CONTROLS)
    write_json(result, {"test_accuracy": "high"})  # valid JSON, unusable content
    with pytest.raises(ValueError, match="test_accuracy"):
        report.collect(exp, CONTROLS)
    os.remove(result)
    with open(os.path.join(exp, "hparams.json"), "w") as f:
        f.write("{")
    with pytest.raises(fileio.DamagedFileError, match="hparams.json"):
        report.collect(exp, CONTROLS)


# ----------------------------------------------------------------------------- import

def test_package_imports_without_tensorflow_or_matplotlib():
    # tflth/__init__ imports TensorFlow, so import tflth.report under a bare stand-in package
    # in a fresh interpreter; NumPy may come (tflth.fileio), matplotlib and TensorFlow may not.
    tflth_dir = os.path.dirname(os.path.dirname(report.__file__))
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('tflth'); pkg.__path__ = [{tflth_dir!r}]; sys.modules['tflth'] = pkg\n"
        "import tflth.report, tflth.report.tables, tflth.report.plots, tflth.report.experiments\n"
        "import tflth.report.stats, tflth.report.stability, tflth.conventions\n"
        "assert tflth.report.__all__\n"
        "bad = [k for k in ('tensorflow', 'keras', 'matplotlib') if k in sys.modules]\n"
        "bad += [k for k in sys.modules if k.startswith('tflth.lottery')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names_are_reexported():
    assert report.__all__ == ["COLUMNS", "SummaryRow", "collect", "comparison_table", "figure", "markdown_table",
                              "plot", "read_csv", "summarize", "text_table", "write_csv", "write_report"]
    for name in report.__all__:
        assert getattr(report, name) is not None
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(report.__file__)), "report.py"))


def test_experiments_sharing_their_dense_runs_share_one_band():
    """One plot element per point: four structured experiments pruned from one dense
    network list its band once (they listed it four times); another dense run keeps its own."""
    rows = []
    for e, dense in (("a", 0.90), ("b", 0.90), ("c", 0.90), ("d", 0.80)):
        for r in range(2):
            rows.append(row(0, "imp", r, dense + 0.001 * r, experiment=e, label=f"exp {e}"))
            rows.append(row(1, "imp", r, dense - 0.01, experiment=e, label=f"exp {e}"))
    ax = report.figure(report.summarize(rows)).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    dense = [t for t in legend if "dense" in t]
    assert len(dense) == 2 and dense[0].startswith("3 experiments' dense 90.05") and dense[1].startswith("exp d: dense")
    assert sum("IMP" in t for t in legend) == 4

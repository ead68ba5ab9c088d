"""tflth.report: summaries, CSV, tables, the figure and collect() on a fake experiment tree."""

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from tflth import report

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
        row(1, "random_reinit", 0, 0.9389),  # just below the matching boundary 0.939
        row(1, "imp", 1, 0.939),  # mean exactly dense - 0.002: matches
        row(1, "imp", 0, 0.939),
        row(0, "imp", 1, 0.951, loss=0.3),
        row(0, "imp", 0, 0.931, loss=0.1),
        # (0.931 + 0.951) / 2 - 0.002 is 0.9390000000000001 in floating point: the boundary
        # case needs the comparison's slack.
        row(2, "imp", 0, 0.80, density=0.64),
        row(2, "imp", 1, 0.85, density=0.6401),
        row(2, "imp", 2, 0.90, density=0.6402),
    ]


def by_key(summary):
    return {(s.experiment, s.method, s.level): s for s in summary}


# ----------------------------------------------------------------------------- summarize

def test_summarize_numbers_match_hand_computation():
    s = by_key(report.summarize(rows_fixture()))
    dense = s["exp", "imp", 0]
    assert dense.n == 2 and dense.density == 1.0
    assert dense.acc_mean == pytest.approx(0.941)
    assert dense.acc_std == pytest.approx(math.sqrt(2 * 0.01 ** 2 / 1))  # sample std, ddof=1
    assert dense.loss_mean == pytest.approx(0.2)
    assert dense.matches is True

    lvl2 = s["exp", "imp", 2]
    assert lvl2.n == 3
    assert lvl2.density == pytest.approx(0.6401)
    assert lvl2.acc_mean == pytest.approx(0.85)
    assert lvl2.acc_std == pytest.approx(0.05)  # sqrt((0.05² + 0 + 0.05²) / 2)
    assert (lvl2.acc_min, lvl2.acc_max) == (0.80, 0.90)
    assert lvl2.dense_acc_mean == pytest.approx(0.941)
    assert lvl2.dense_acc_std == pytest.approx(0.0141421356)
    assert lvl2.matches is False

    single = s["exp", "random_reinit", 1]
    assert single.n == 1 and single.acc_std == 0.0


def test_matching_flag_at_the_tolerance_boundary():
    s = by_key(report.summarize(rows_fixture()))
    assert s["exp", "imp", 1].acc_mean == 0.939
    assert s["exp", "imp", 1].matches is True  # exactly 0.2 points below dense: matching
    assert s["exp", "random_reinit", 1].matches is False  # 0.21 points below
    assert s["exp", "fine_tune", 1].matches is True  # above dense
    strict = by_key(report.summarize(rows_fixture(), match_tolerance=0.0))
    assert strict["exp", "imp", 1].matches is False
    assert strict["exp", "imp", 0].matches is True
    loose = by_key(report.summarize(rows_fixture(), match_tolerance=0.0022))
    assert loose["exp", "random_reinit", 1].matches is True


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
    assert lines[0] == (f"**{LABEL} (exp): dense test accuracy 94.10 ± 1.41 %; 3 replicates; "
                        "'matches dense' = mean within 0.2 points of dense**")
    assert ("| level | density (%) | IMP acc (%) mean ± std | random_reinit acc (%) mean ± std | "
            "random_prune acc (%) mean ± std | fine_tune acc (%) mean ± std | matches dense |") in lines
    assert "| 0 | 100.0 | 94.10 ± 1.41 (n=2) | — | — | — | IMP |" in lines
    assert ("| 1 | 80.0 | 93.90 ± 0.00 (n=2) | 93.89 (n=1) | 85.00 (n=1) | 95.00 (n=1) "
            "| IMP, fine_tune |") in lines
    assert "| 2 | 64.0 | 85.00 ± 5.00 | — | — | — | no |" in lines
    assert len([ln for ln in lines if ln.startswith("| ") and ln[2].isdigit()]) == 3


def test_markdown_one_table_per_experiment_and_density_format():
    rows = [row(0, "imp", 0, 0.98, experiment="b"), row(8, "imp", 0, 0.97, experiment="b"),
            row(0, "imp", 0, 0.70, experiment="a", label="conv"),
            row(15, "imp", 0, 0.69, experiment="a", label="conv"),
            row(25, "imp", 0, 0.60, experiment="a", label="conv")]
    md = report.markdown_table(report.summarize(rows))
    assert md.count("| level | density (%) |") == 2
    assert md.index(f"**{LABEL} (b)") < md.index("**conv (a)")  # in the order of the rows
    assert "| 8 | 16.8 | 97.00 | no |" in md  # 1 point below dense
    assert "**conv (a): dense test accuracy 70.00 %; 1 replicate;" in md
    assert "| 15 | 3.5 | 69.00 | no |" in md
    assert "| 25 | 0.38 | 60.00 | no |" in md  # below 1 %: two significant digits


def test_text_table_is_aligned():
    text = report.text_table(report.summarize(rows_fixture()))
    lines = text.splitlines()
    assert lines[0].startswith(f"{LABEL} (exp): dense test accuracy 94.10 ± 1.41 %")
    header, rule, *body = lines[1:]
    assert header.split("  ")[0] == "level"
    assert set(rule) == {"-", " "}
    assert len(body) == 3
    # Every column ends where its rule segment ends (right-aligned numbers).
    ends = [i + 1 for i, (a, b) in enumerate(zip(rule, rule[1:] + " ")) if a == "-" and b == " "]
    for line in [header] + body:
        for end in ends[:-1]:
            assert line[end - 1] != " " and line[end: end + 2] == "  ", line
    assert "93.90 ± 0.00 (n=2)" in body[1] and body[1].endswith("IMP, fine_tune")
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
    fig = report._figure(report.summarize(rows))
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    left, right = ax.get_xlim()
    assert left > 100 and right < 0.8 ** 5 * 100  # inverted: dense on the left
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["100", "80", "64", "51.2", "41", "32.8"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["dense 90.05 ± 0.07 %", "IMP (n=2)", "random_prune (n=2)"]
    assert ax.get_title() == LABEL
    assert ax.get_ylabel() == "Test accuracy (%)"
    with pytest.raises(ValueError):
        report._figure([])


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
                     "markdown": str(tmp_path / "report" / "results.md"),
                     "plot": str(tmp_path / "report" / "results.png")}
    md = open(paths["markdown"], encoding="utf-8").read()
    assert md.startswith("# My run\n")
    assert "| 2 | 64.0 | 85.00 ± 5.00 | — | — | — | no |" in md
    assert len(report.read_csv(paths["csv"])) == len(rows_fixture())
    assert open(paths["plot"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path / "report")) == ["results.csv", "results.md", "results.png"]


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
    rows = report.collect(exp)
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
    assert summary["lenet_fmnist", "random_reinit", 1].matches is False


def test_collect_label_falls_back_to_the_directory_name(tmp_path):
    exp = fake_experiment(str(tmp_path))
    write_json(os.path.join(exp, "hparams.json"), {"levels": 2})
    assert {r["label"] for r in report.collect(exp)} == {"lenet_fmnist"}
    write_json(os.path.join(exp, "hparams.json"), {"label": 3})
    with pytest.raises(ValueError, match="label"):
        report.collect(exp)


def test_collect_errors(tmp_path):
    not_exp = tmp_path / "just_a_dir"
    not_exp.mkdir()
    (not_exp / "replicate_0").mkdir()
    with pytest.raises(ValueError, match="just_a_dir"):
        report.collect(str(not_exp))
    with pytest.raises(ValueError, match="missing_dir"):
        report.collect(str(tmp_path / "missing_dir"))
    exp = fake_experiment(str(tmp_path))
    os.remove(os.path.join(exp, "replicate_0", "level_1", "density.json"))
    with pytest.raises(ValueError, match="density.json"):
        report.collect(exp)


def test_collect_ignores_directories_that_are_not_registered_controls(tmp_path):
    exp = fake_experiment(str(tmp_path))
    expected = report.collect(exp)
    lvl1 = os.path.join(exp, "replicate_0", "level_1")
    # A user's notes and a future sweep's directory, each with a result.json, under a level.
    write_json(os.path.join(lvl1, "notes", "result.json"), {"test_accuracy": 0.1, "test_loss": 9.0})
    write_json(os.path.join(lvl1, "stability", "result.json"), {"test_accuracy": 0.2, "test_loss": 8.0})
    # Even under a level that has no IMP result of its own: no row, and no density needed.
    write_json(os.path.join(exp, "replicate_1", "level_2", "notes", "result.json"),
               {"test_accuracy": 0.3, "test_loss": 7.0})
    os.remove(os.path.join(exp, "replicate_1", "level_2", "density.json"))
    rows = report.collect(exp)
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


def test_collect_default_controls_are_the_registry():
    from tflth.lottery import starts

    assert {"random_reinit", "random_prune"} <= set(starts.CONTROLS)
    from tflth.report import experiments

    assert experiments._registered_controls() == list(starts.CONTROLS)


def test_collect_damaged_files_name_the_file(tmp_path):
    from tflth import fileio

    exp = fake_experiment(str(tmp_path))
    result = os.path.join(exp, "replicate_0", "level_1", "random_reinit", "result.json")
    with open(result, "w") as f:
        f.write('{"test_accuracy": 0.')  # torn write
    with pytest.raises(fileio.DamagedFileError, match="random_reinit"):
        report.collect(exp)
    write_json(result, {"test_accuracy": "high"})  # valid JSON, unusable content
    with pytest.raises(ValueError, match="test_accuracy"):
        report.collect(exp)
    os.remove(result)
    with open(os.path.join(exp, "hparams.json"), "w") as f:
        f.write("{")
    with pytest.raises(fileio.DamagedFileError, match="hparams.json"):
        report.collect(exp)


# ----------------------------------------------------------------------------- import

def test_package_imports_without_tensorflow_or_matplotlib():
    # tflth/__init__ imports TensorFlow, so import tflth.report under a bare stand-in package
    # in a fresh interpreter; NumPy may come (tflth.fileio), matplotlib and TensorFlow may not.
    tflth_dir = os.path.dirname(os.path.dirname(report.__file__))
    code = (
        "import sys, types\n"
        f"pkg = types.ModuleType('tflth'); pkg.__path__ = [{tflth_dir!r}]; sys.modules['tflth'] = pkg\n"
        "import tflth.report, tflth.report.tables, tflth.report.plots, tflth.report.experiments\n"
        "assert tflth.report.__all__\n"
        "bad = [k for k in ('tensorflow', 'keras', 'matplotlib') if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_public_names_are_reexported():
    assert report.__all__ == ["COLUMNS", "METHOD_ORDER", "SummaryRow", "collect", "comparison_table", "markdown_table", "plot",
                              "read_csv", "summarize", "text_table", "write_csv", "write_report"]
    for name in report.__all__:
        assert getattr(report, name) is not None
    assert not os.path.exists(os.path.join(os.path.dirname(os.path.dirname(report.__file__)), "report.py"))

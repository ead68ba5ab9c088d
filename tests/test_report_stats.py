"""tflth.report.stats: Student's t without SciPy, t intervals, Welch differences, the decision rules;
the rules in the stability report and in bin/report.py's printed tables (synthetic directories)."""

import csv
import json
import math
import os

import pytest
from absl.testing import flagsaver

from tflth.report import stats
from tflth.report import stability as stability_report

# Tabulated two-sided 95 % quantiles t(0.975, df) (any statistics table) and z(0.975).
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 10: 2.2281, 30: 2.0423}
Z975 = 1.959964


# ----------------------------------------------------------------------------- an independent t distribution

def _t_pdf(x, df):
    return math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi) * (
        1 + x * x / df) ** (-(df + 1) / 2)


def _t_cdf_simpson(t, df, steps=4000):
    """0.5 + ∫_0^t pdf by Simpson's rule: a different method from the module's incomplete beta."""
    h = t / steps
    total = _t_pdf(0, df) + _t_pdf(t, df) + sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, steps))
    return 0.5 + total * h / 3


def _t_quantile_simpson(p, df):
    low, high = 0.0, 20.0
    for _ in range(45):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_cdf_simpson(mid, df, 1000) < p else (low, mid)
    return (low + high) / 2


# ----------------------------------------------------------------------------- distributions

@pytest.mark.parametrize("df", sorted(T975))
def test_t_quantile_matches_the_tables(df):
    assert stats.t_quantile(0.975, df) == pytest.approx(T975[df], abs=5e-5)
    assert stats.t_quantile(0.025, df) == pytest.approx(-T975[df], abs=5e-5)  # symmetric
    assert stats.t_cdf(T975[df], df) == pytest.approx(0.975, abs=2e-6)


def test_t_quantile_other_tabulated_values_and_the_normal_limit():
    assert stats.t_quantile(0.995, 1) == pytest.approx(63.6567, abs=5e-4)
    assert stats.t_quantile(0.95, 1) == pytest.approx(6.3138, abs=5e-5)
    assert stats.t_quantile(0.95, 10) == pytest.approx(1.8125, abs=5e-5)
    assert stats.t_quantile(0.5, 3) == 0.0
    assert stats.t_quantile(0.975, math.inf) == pytest.approx(Z975, abs=1e-6)
    for df in (1e3, 1e5, 1e6, 1e9, 1e15):  # the t quantile decreases towards z: z + (z³ + z)/(4 df) + ...
        expected = Z975 + (Z975 ** 3 + Z975) / (4 * df)
        assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6 + 3 / df ** 2)
    assert stats.t_quantile(0.975, 1e3) > stats.t_quantile(0.975, 1e6) > stats.t_quantile(0.975, math.inf)


def test_t_cdf_closed_forms_for_one_and_two_degrees_of_freedom():
    for t in (-30.0, -2.5, -0.3, 0.0, 0.7, 1.96, 12.0):
        assert stats.t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-13)  # Cauchy
        assert stats.t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-13)
    assert stats.t_sf(2.0, 1) == pytest.approx(0.5 - math.atan(2.0) / math.pi, rel=1e-12)
    assert stats.t_cdf(math.inf, 3) == 1.0 and stats.t_cdf(-math.inf, 3) == 0.0


@pytest.mark.parametrize("df", [50 / 17, 2.4396, 7.3])
def test_t_distribution_at_non_integer_df_agrees_with_integrating_the_density(df):
    for t in (0.4, 1.5492, 3.0):
        assert stats.t_cdf(t, df) == pytest.approx(_t_cdf_simpson(t, df), abs=1e-10)
    assert stats.t_quantile(0.975, df) == pytest.approx(_t_quantile_simpson(0.975, df), abs=1e-7)


def test_regularized_beta_identities():
    for x in (0.01, 0.3, 0.77, 0.999):
        assert stats.regularized_beta(2.5, 1.0, x) == pytest.approx(x ** 2.5, rel=1e-12)
        assert stats.regularized_beta(1.0, 3.5, x) == pytest.approx(1 - (1 - x) ** 3.5, rel=1e-12)
    assert stats.regularized_beta(7.3, 7.3, 0.5) == pytest.approx(0.5, abs=1e-14)
    assert stats.regularized_beta(2, 3, 0.0) == 0.0 and stats.regularized_beta(2, 3, 1.0) == 1.0


def test_scipy_cross_check_where_available():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 2.5, 50 / 17, 4, 33.3, 1e4):
        assert stats.t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-10)
        assert stats.t_cdf(-1.3, df) == pytest.approx(scipy_stats.t.cdf(-1.3, df), rel=1e-10)


def test_distribution_errors_name_the_bad_value():
    with pytest.raises(ValueError, match=r"df=0\.0 must be positive"):
        stats.t_quantile(0.975, 0)
    with pytest.raises(ValueError, match=r"p=1\.0 must be in \(0, 1\)"):
        stats.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match=r"x=1\.5 must be in \[0, 1\]"):
        stats.regularized_beta(1, 1, 1.5)
    with pytest.raises(ValueError, match="NaN"):
        stats.t_cdf(math.nan, 3)


# ----------------------------------------------------------------------------- samples

def test_describe_by_hand():
    s = stats.describe([1, 2, 3])
    assert (s.n, s.mean, s.std, s.df) == (3, 2.0, 1.0, 2.0)  # s² = (1 + 0 + 1) / 2
    half = T975[2] * 1.0 / math.sqrt(3)  # 2.4841
    assert (s.low, s.high) == (pytest.approx(2 - half, abs=1e-4), pytest.approx(2 + half, abs=1e-4))
    assert s.half_width == pytest.approx(half, abs=1e-4) and s.defined


def test_describe_one_value_is_undefined_and_two_values_are_wide():
    one = stats.describe([0.93])
    assert (one.n, one.mean, one.std, one.low, one.high, one.df, one.half_width) == (
        1, 0.93, None, None, None, None, None)
    assert not one.defined
    two = stats.describe([0.90, 0.92])
    s = math.sqrt(2 * 0.01 ** 2)  # 0.014142
    assert two.std == pytest.approx(s)
    assert two.half_width == pytest.approx(T975[1] * s / math.sqrt(2), abs=1e-5)  # 0.127: 12.7 points
    with pytest.raises(ValueError, match="no values"):
        stats.describe([])
    with pytest.raises(ValueError, match="nan is not a finite number"):
        stats.describe([0.9, float("nan")])
    with pytest.raises(ValueError, match="confidence=1.5"):
        stats.describe([1, 2], confidence=1.5)


def test_welch_by_hand():
    """[1, 2, 3] vs [2, 4, 6]: s_a² = 1, s_b² = 4, n = 3 each."""
    d = stats.welch([1, 2, 3], [2, 4, 6])
    va, vb = 1 / 3, 4 / 3
    se = math.sqrt(va + vb)  # √(5/3) = 1.29099
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)  # (25/9) / (17/18) = 50/17 = 2.941
    assert df == pytest.approx(50 / 17)
    assert (d.diff, d.se, d.df) == (-2.0, pytest.approx(se), pytest.approx(df))
    q = _t_quantile_simpson(0.975, df)
    assert T975[3] < q < T975[2]  # df between 2 and 3
    assert (d.low, d.high) == (pytest.approx(-2 - q * se, abs=1e-6), pytest.approx(-2 + q * se, abs=1e-6))
    t = -2 / se  # −1.549
    p = 2 * (1 - _t_cdf_simpson(abs(t), df))
    assert d.p == pytest.approx(p, abs=1e-9) and 0.22 < d.p < 0.23
    flipped = stats.welch([2, 4, 6], [1, 2, 3])
    assert (flipped.diff, flipped.low, flipped.p) == (2.0, pytest.approx(-d.high), pytest.approx(d.p))


def test_welch_with_one_value_on_a_side_is_undefined_and_says_so():
    d = stats.welch([0.9], [0.91, 0.93])
    assert not d.defined and d.why_undefined == "n=1"
    assert d.diff == pytest.approx(-0.02)
    assert (d.se, d.df, d.low, d.high, d.p) == (None, None, None, None, None)
    assert stats.matches(d) == stats.beats(d) == "undecided"
    two = stats.welch([0.90, 0.92], [0.91, 0.93])  # n = 2 a side: computed (df = 2), wide
    assert two.defined and two.df == pytest.approx(2.0) and two.high - two.low > 0.1


def test_welch_with_zero_variances():
    same = stats.welch([0.9, 0.9, 0.9], [0.9, 0.9])
    assert (same.diff, same.se, same.low, same.high, same.p, same.df) == (0.0, 0.0, 0.0, 0.0, 1.0, 3.0)
    apart = stats.welch([0.9, 0.9], [0.8, 0.8])
    assert apart.low == apart.high == apart.diff == pytest.approx(0.1) and apart.p == 0.0
    assert stats.matches(same) == "yes" and stats.beats(apart) == "yes"
    one_side = stats.welch([0.9, 0.9, 0.9], [0.80, 0.82, 0.84])  # only b varies: df = n_b − 1
    assert one_side.df == pytest.approx(2.0) and one_side.se == pytest.approx(0.02 / math.sqrt(3))


# ----------------------------------------------------------------------------- verdicts

def _diff(low, high):
    """A Difference with a given interval (the rules read only the interval)."""
    a = stats.describe([0.0, 1.0])
    return stats.Difference(a, a, (low + high) / 2, 1.0, 5.0, low, high, 0.5)


@pytest.mark.parametrize("low,high,expected", [
    (-0.004, 0.003, "yes"),  # lo > −δ (δ = 0.005)
    (-0.02, -0.006, "no"),  # hi < −δ
    (-0.008, 0.001, "undecided"),  # straddles −δ
    (-0.005, 0.001, "undecided"),  # lo == −δ is not above it
])
def test_matches_rule(low, high, expected):
    assert stats.matches(_diff(low, high), margin=0.005) == expected


@pytest.mark.parametrize("low,high,expected", [
    (0.001, 0.02, "yes"),  # lo > 0
    (0.001, 0.004, "yes"),  # lo > 0 wins even inside ±δ: a small clear win
    (-0.03, -0.01, "no"),  # hi < 0: the control is better
    (-0.004, 0.0045, "no"),  # within ±δ: no difference
    (-0.004, 0.006, "undecided"),  # reaches past +δ
    (-0.01, 0.004, "undecided"),  # reaches past −δ
])
def test_beats_rule(low, high, expected):
    assert stats.beats(_diff(low, high), margin=0.005) == expected


def test_verdict_margins_are_checked():
    with pytest.raises(ValueError, match=r"margin=-0\.1 must be a finite number >= 0"):
        stats.matches(_diff(0, 1), margin=-0.1)
    with pytest.raises(ValueError, match=r"threshold=0\.0 must be a finite number > 0"):
        stats.stable([0.1, 0.2], 0.0)


def test_stable_rule_branches():
    tau = 0.02
    assert stats.stable([0.001, 0.002, 0.003], tau) == "yes"  # hi = 0.0045 < 0.02
    skewed = [0.097, 0.12, 0.263]  # barriers 9.7–26.3 points: the t interval reaches below 0
    s = stats.describe(skewed)
    assert s.low < 0 < tau < s.high  # the interval alone would leave it undecided
    assert stats.pairs_over(skewed, tau) == 3 and stats.stable(skewed, tau) == "no"
    mostly_high = [0.05] * 9 + [0.019]  # one pair under τ, but the interval lies above it
    assert stats.describe(mostly_high).low > tau and stats.stable(mostly_high, tau) == "no"
    assert stats.stable([0.01, 0.03, 0.025], tau) == "undecided"  # 2 of 3 over, interval straddles τ
    assert stats.stable([0.5], tau) == "undecided" and stats.stable([0.0], tau) == "undecided"  # n = 1
    assert stats.pairs_over([0.02, 0.0199, 0.03], tau) == 2  # "over" includes τ itself: not stable
    assert stats.stable([0.02, 0.02], tau) == "no"  # every pair at the threshold


@pytest.mark.parametrize("verdicts,text", [
    ({0: "no", 10: "undecided", 30: "undecided", 100: "yes", 300: "yes"}, "100it (10it, 30it undecided)"),
    ({0: "undecided", 10: "no", 30: "undecided", 100: "yes"}, "100it (30it undecided)"),  # 0 can't matter
    ({0: "yes", 10: "no", 30: "yes"}, "30it"),  # 0 is stable, but a larger k is not
    ({0: "yes", 10: "yes"}, "0it"),
    ({0: "yes", 10: "no"}, "none"),
    ({0: "no", 10: "yes", 30: "undecided"}, "undecided (30it undecided)"),
    ({0: "undecided"}, "undecided (0it undecided)"),
])
def test_first_stable(verdicts, text):
    assert stats.first_stable(verdicts).text() == text


def test_first_stable_fields_repeated_k_and_errors():
    first = stats.first_stable({0: "no", 10: "undecided", 100: "yes"})
    assert (first.k, first.status, first.undecided) == (100, "found", (10,))
    assert stats.first_stable([(0, "no"), (10, "yes"), (10, "undecided")]).text() == "undecided (10it undecided)"
    assert stats.first_stable([(0, "no"), (10, "yes"), (10, "no")]).text() == "none"
    assert stats.first_stable([(0, "yes"), (0, "yes")]).k == 0
    with pytest.raises(ValueError, match="verdict True for k=0"):
        stats.first_stable({0: True})
    with pytest.raises(ValueError, match="no k"):
        stats.first_stable({})


def test_rules_in_words_carry_the_margin_and_threshold():
    assert "−0.5 points" in stats.matches_rule() and "±0.5 points" in stats.beats_rule()
    assert "−1.5 points" in stats.matches_rule(0.015)
    assert "below 2 points" in stats.stable_rule(0.02) and "n = 1" in stats.stable_rule(0.02)


def test_module_example_runs():
    import doctest

    assert doctest.testmod(stats, report=False).failed == 0


# ----------------------------------------------------------------------------- the stability report

def _pair(k, replicate, instability, acc=0.9, pair=0, dense=None, sweep="stability_x", level=0, method="imp"):
    return {"sweep": sweep, "label": "lenet", "replicate": replicate, "level": level, "method": method, "k": k,
            "end": 1000, "k_fraction": k / 1000, "pair": pair, "noise": "data_order_and_augment", "density": 1.0,
            "analysis": {"bn": "none", "interpolation_points": 3, "alpha_range": [0, 1], "train_examples": 0,
                         "bn_batches": 2},
            "copies": {"a": {"test_accuracy": acc - 0.001}, "b": {"test_accuracy": acc + 0.001}},
            "distances": {"total": {"l2": 1.0, "relative": 0.5, "relative_to_displacement": 0.7, "cosine": 0.9}},
            "dense_accuracy": dense,
            "curve": {"test": {"alphas": [0, 0.5, 1], "errors": [0.1, 0.1 + instability, 0.1],
                               "instability": instability, "loss_barrier": 0.1}, "disagreement": 0.05}}


SWEEP = {0: [0.097, 0.12, 0.263], 10: [0.01, 0.03, 0.025], 30: [0.005, 0.03, 0.012], 100: [0.001, 0.002, 0.003]}


def _sweep_pairs(dense=True):
    return [_pair(k, r, v, acc=0.90 + r / 1000, dense=(0.905 + r / 1000) if dense else None)
            for k, values in SWEEP.items() for r, v in enumerate(values)]


def test_stability_summary_verdicts_and_first_stable_k():
    summary = {s["k"]: s for s in stability_report.summarize(_sweep_pairs())}
    assert [summary[k]["stable"] for k in SWEEP] == ["no", "undecided", "undecided", "yes"]
    assert [summary[k]["pairs_over"] for k in SWEEP] == [3, 2, 1, 0]
    s0 = stats.describe(SWEEP[0])
    assert (summary[0]["test_instability_low"], summary[0]["test_instability_high"]) == (s0.low, s0.high)
    assert summary[0]["test_instability_low"] < 0.02  # skewed: unstable by "every pair over", not by the interval
    (first,) = stability_report.first_stable_k(list(summary.values())).values()
    assert first.text() == "100it (10it, 30it undecided)"
    # accuracy vs dense: per-pair accuracy 0.900, 0.901, 0.902 against dense 0.905, 0.906, 0.907:
    # −0.5 points, both s = 0.001, df = 4: [−0.5 ∓ 2.776 · 0.0816] points → [−0.727, −0.273]: undecided at δ = 0.5
    d = summary[100]
    assert d["accuracy_minus_dense"] == pytest.approx(-0.005)
    half = T975[4] * 0.001 * math.sqrt(2 / 3)
    assert (d["accuracy_minus_dense_low"], d["accuracy_minus_dense_high"]) == (
        pytest.approx(-0.005 - half, abs=1e-6), pytest.approx(-0.005 + half, abs=1e-6))
    assert d["matching"] == "undecided"
    assert stability_report.summarize(_sweep_pairs(), match_margin=0.01)[0]["matching"] == "yes"
    assert stability_report.summarize(_sweep_pairs(), match_margin=0.002)[0]["matching"] == "no"
    # τ = 30 points: k = 0 (mean 16 points, interval [−6.3, 38.3], 0/3 over) becomes undecided, 10it stable
    loose = {s["k"]: s["stable"] for s in stability_report.summarize(_sweep_pairs(), stable_threshold=0.3)}
    assert loose == {0: "undecided", 10: "yes", 30: "yes", 100: "yes"}
    with pytest.raises(ValueError, match=r"threshold=-0\.02"):
        stability_report.summarize(_sweep_pairs(), stable_threshold=-0.02)


def test_stability_tables_show_intervals_pairs_over_and_verdicts():
    summary = stability_report.summarize(_sweep_pairs())
    md = stability_report.markdown(summary)
    lines = md.splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[5:10] == ["n", "test instability (pts)", "instability 95 % CI", "pairs ≥ 2 pts", "stable"]
    assert header[-3:] == ["acc − dense (pts) [95 % CI]", "p (− dense)", "matches dense"]
    k0 = [c.strip() for c in lines[4].strip("|").split("|")]
    # 16.00 ± 8.99 points; 16.00 ± 4.3027 · 8.99 / √3 = [−6.34, 38.34]
    assert k0[3] == "0it" and k0[5:10] == ["3", "16.00 ± 8.99", "[-6.34, 38.34]", "3/3", "no"]
    assert k0[-1] == "undecided" and k0[-3].startswith("-0.50 [-0.73, -0.27]")
    assert "- level 0 imp: first stable k = 100it (10it, 30it undecided)" in lines
    assert any(line.startswith("- stable: yes if the 95 % t interval") for line in lines)
    assert any(line.startswith("- matches dense: yes if") for line in lines)
    dense_sweep = stability_report.markdown(stability_report.summarize(_sweep_pairs(dense=False)))
    assert "matches dense" not in dense_sweep.splitlines()[2]  # no dense reference: no such column


def test_stability_heading_names_the_batchnorm_treatment_only_for_networks_with_batchnorm():
    def heading(has_batchnorm, bn="recompute"):
        pairs = [_pair(0, r, 0.01) for r in range(2)]
        for p in pairs:
            p["analysis"]["bn"] = bn
            if has_batchnorm is not None:  # pairs written before the evaluator recorded it have no such key
                p["curve"]["has_batchnorm"] = has_batchnorm
        summary = stability_report.summarize(pairs)
        (line,) = [ln for ln in stability_report.markdown(summary).splitlines() if "stability_x" in ln]
        assert line.strip("*") in stability_report.text_table(summary).splitlines()
        return line

    assert "no train curve, BN recompute over 2 batches)" in heading(True)
    assert "no train curve, BN interpolate)" in heading(True, bn="interpolate")
    for bn in ("recompute", "interpolate"):  # without BatchNorm the setting changed nothing: not named
        line = heading(False, bn)
        assert "no train curve, no BatchNorm)" in line and "BN " not in line and bn not in line
    assert "BN recompute over 2 batches" in heading(None)  # unknown: named, as before


def test_curve_series_draws_the_aligned_line_dashed_beside_the_pairs_line():
    plain = [_pair(0, r, v) for r, v in enumerate((0.2, 0.4))]
    assert [s[0] for s in stability_report.curve_series(0, plain)] == ["k = 0it"]  # no --align: one line
    aligned = [dict(p, aligned={"method": "weights", "curve": {"test": {"alphas": [0, 0.5, 1],
                                                                       "errors": [0.1, 0.1 + d, 0.1]}}})
               for p, d in zip(plain, (0.01, 0.03))]
    (pairs_line, aligned_line) = stability_report.curve_series(0, aligned)
    assert pairs_line[0] == "k = 0it" and pairs_line[4] == "-"
    assert aligned_line[0] == "k = 0it, aligned (weights)" and aligned_line[4] == "--"
    # by hand: at α = 0.5 the pairs' errors are 0.3 and 0.5 (mean 0.4), aligned 0.11 and 0.13 (mean 0.12);
    # half-width of two values a, b: t(0.975, 1) · |a − b| / 2 = 12.706 · 0.01
    assert pairs_line[2] == pytest.approx([0.1, 0.4, 0.1]) and aligned_line[2] == pytest.approx([0.1, 0.12, 0.1])
    assert aligned_line[3][1] == pytest.approx(12.7062 * 0.01, rel=1e-4) and aligned_line[3][0] == 0.0


def test_stability_report_with_one_pair_per_k_is_undecided_not_a_crash(tmp_path):
    pairs = [_pair(0, 0, 0.05), _pair(10, 0, 0.001)]
    summary = stability_report.summarize(pairs)
    assert [(s["stable"], s["pairs_over"], s["test_instability_low"]) for s in summary] == [
        ("undecided", 1, None), ("undecided", 0, None)]
    text = stability_report.text_table(summary)
    assert "n/a (n=1)" in text and "first stable k = undecided (0it, 10it undecided)" in text
    out = stability_report.write_report(str(tmp_path), pairs)
    # the IMP report's contract: {name: path}, one path per file written
    assert sorted(out) == ["csv", "curves_stability_x_level0_imp", "markdown", "plot"]
    assert all(isinstance(path, str) and os.path.isfile(path) for path in out.values())
    with open(out["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["pairs_over"] for r in rows if r["row"] == "pair"] == ["1", "0"]
    assert [(r["stable"], r["test_instability_low"]) for r in rows if r["row"] == "summary"] == [
        ("undecided", ""), ("undecided", "")]
    with open(out["markdown"], encoding="utf-8") as f:
        assert "95 % intervals" in f.read()


# ----------------------------------------------------------------------------- bin/report.py

def _write_sweep(root, pairs):
    sweep = os.path.join(root, "stability_test")
    os.makedirs(sweep)
    with open(os.path.join(sweep, "hparams.json"), "w") as f:
        json.dump({"label": "lenet"}, f)
    for p in pairs:
        d = os.path.join(sweep, f"replicate_{p['replicate']}", f"level_{p['level']}", p["method"], f"k_{p['k']}",
                         f"pair_{p['pair']}")
        os.makedirs(d)
        with open(os.path.join(d, "pair.json"), "w") as f:
            json.dump(p, f)
    return sweep


def _report(capsys, **values):
    from tflth.cli import report as report_cli

    values = dict(dict(experiments=[], sweeps=[], labels=[], title=None), **values)
    with flagsaver.flagsaver(**values):
        report_cli.main(["report"])
    return capsys.readouterr().out


def test_report_binary_prints_intervals_and_verdicts_for_a_sweep(tmp_path, capsys):
    sweep = _write_sweep(str(tmp_path), _sweep_pairs())
    out = _report(capsys, sweeps=[sweep], report_dir=str(tmp_path / "rep"))
    assert "instability 95 % CI" in out and "pairs ≥ 2 pts" in out and "[-6.34, 38.34]" in out
    assert "level 0 imp: first stable k = 100it (10it, 30it undecided)" in out
    assert "stable: yes if the 95 % t interval of the mean test instability lies below 2 points" in out
    out = _report(capsys, sweeps=[sweep], report_dir=str(tmp_path / "rep2"), stable_threshold=30.0)
    assert "first stable k = 10it" in out and "pairs ≥ 30 pts" in out and "lies below 30 points" in out
    with open(tmp_path / "rep2" / "stability.csv", newline="") as f:
        summary = [r for r in csv.DictReader(f) if r["row"] == "summary"]
    assert [r["stable"] for r in summary] == ["undecided", "yes", "yes", "yes"]
    assert {r["stable_threshold"] for r in summary} == {"0.3"}


def test_report_binary_prints_intervals_and_verdicts_for_an_experiment(tmp_path, capsys):
    from test_report import fake_experiment

    exp = fake_experiment(str(tmp_path))
    out = _report(capsys, experiments=[exp], report_dir=str(tmp_path / "rep"))
    header = next(line for line in out.splitlines() if line.startswith("level"))
    for column in ("acc (%) 95 % CI", "− dense (pts) [95 % CI]", "p (− dense)", "matches dense",
                   "IMP − it (pts) [95 % CI]", "IMP beats it"):
        assert column in header, header
    # dense: 0.90 and 0.92 → 91.00 ± 1.41, [91 ∓ 12.706] = [78.29, 103.71]; level 1 has one replicate
    assert "[78.29, 103.71]" in out and "n/a (n=1)" in out and "undecided" in out
    assert "lies above −0.5 points" in out
    out = _report(capsys, experiments=[exp], report_dir=str(tmp_path / "rep2"), match_margin=1.5)
    assert "lies above −1.5 points" in out and "within ±1.5 points" in out
    assert "results_summary.csv" in out
    with open(tmp_path / "rep2" / "results_summary.csv", newline="") as f:
        summary = list(csv.DictReader(f))
    assert {r["match_margin"] for r in summary} == {"0.015"}


@pytest.mark.parametrize("flag,value,message", [
    ("match_margin", -0.5, r"--match_margin=-0.5 is invalid: expected a number of accuracy points >= 0"),
    ("stable_threshold", 0.0, r"--stable_threshold=0 is invalid: expected a number of points > 0"),
])
def test_report_binary_refuses_bad_margins(tmp_path, capsys, flag, value, message):
    sweep = _write_sweep(str(tmp_path), _sweep_pairs())
    with pytest.raises(SystemExit) as info:
        _report(capsys, sweeps=[sweep], report_dir=str(tmp_path / "rep"), **{flag: value})
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "rep").exists()

"""bin/stability.py --noise=init --align: two networks from different initialisations,
measured before and after copy b's units are reordered to match copy a (weights or
activations), the report's before/after columns, and bad values as one line, exit 2,
nothing written.

Both binaries' flags live in one absl registry here, and a flag both define (``--levels``)
keeps the first definition: prune's is imported first, as in every test module that
imports both (imported after stability's, ``--levels`` would default to stability's "0"
and bin/prune.py would prune nothing)."""

import json
import os

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth.report import stability as report
from tflth.cli import prune as prune_cli  # noqa: F401  (first: --levels is prune's in every process, see below)
from tflth.cli import stability as stability_cli
from tflth.training import checkpoint

from helpers import assert_refused, write_synthetic_npz

pytest.importorskip("scipy")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


def _flags(data_path, output_dir, **extra):
    values = dict(model="lenet_8_4", dataset="mnist", data_dir=data_path, output_dir=str(output_dir), batch_size=32,
                  training_steps="16it", eval_every="8it", checkpoint_every="8it", rewind_steps=["0it"],
                  noise="init", align="weights", interpolation_points=3, train_examples=60)
    values.update(extra)
    return values


def _pair(root):
    (sweep,) = [d for d in os.listdir(root) if d.startswith("stability_")]
    base = os.path.join(root, sweep, "replicate_0", "level_0", "imp", "k_0", "pair_0")
    with open(os.path.join(base, "pair.json")) as f:
        return os.path.join(root, sweep), base, json.load(f)


@pytest.mark.parametrize("align", ["weights", "activations"])
def test_two_initialisations_measured_before_and_after_alignment(data_path, tmp_path, capsys, align):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, align=align, align_examples=64)):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert f"; aligned by {align} (" in out and "aligned test instability" in out
    sweep, base, pair = _pair(tmp_path)
    start_a = checkpoint.load(os.path.join(base, "copy_a", "checkpoints", "step_000000000.npz"))[1]
    start_b = checkpoint.load(os.path.join(base, "copy_b", "checkpoints", "step_000000000.npz"))[1]
    assert not np.array_equal(start_a["fc1/kernel"], start_b["fc1/kernel"])  # different initialisations
    seeds = {c: (pair["copies"][c]["data_order_seed"], pair["copies"][c]["augment_seed"]) for c in "ab"}
    assert seeds["a"][0] != seeds["b"][0]  # and different data orders
    aligned = pair["aligned"]
    assert aligned["method"] == align and pair["analysis"]["align"] == align
    assert aligned["groups_permuted"] == len(aligned["units_moved"]) >= 1
    assert {"test", "train"} <= set(aligned["curve"]) and aligned["distances"]["total"]["l2"] > 0
    # the endpoints are the same two networks, reordered: their errors do not change
    before, after = pair["curve"]["points"], aligned["curve"]["points"]
    for i in (0, -1):
        assert after[i]["test_error"] == pytest.approx(before[i]["test_error"], abs=1e-9)
    summary = report.summarize(report.collect(sweep, ()))
    (row,) = summary
    assert row["align"] == align and row["aligned_test_instability"] == aligned["curve"]["test"]["instability"]
    gain = pair["curve"]["test"]["instability"] - aligned["curve"]["test"]["instability"]
    assert row["alignment_gain"] == pytest.approx(gain)
    table = report.text_table(summary)
    assert "before − after" in table and "aligned L2" in table
    with open(os.path.join(sweep, "report", "stability.csv")) as f:
        header = f.readline().strip().split(",")
    assert {"aligned_test_instability", "alignment_gain", "aligned_l2"} <= set(header)


BAD = [
    (dict(align="wieghts"), r"--align=wieghts is invalid|--align: .*wieghts"),
    (dict(noise="inti"), r"--noise=inti is invalid|--noise: .*inti"),
    (dict(rewind_steps=["4it"]), r"--rewind_steps=4it is not step 0: noise='init' trains two networks from "
                                 r"different initialisations, so both start at step 0; expected 0it"),
    (dict(align_examples=0, align="activations"), r"--align_examples=0 is invalid: expected an integer >= 1"),
]


@pytest.mark.parametrize("override,pattern", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_align_and_noise_values_are_one_line_exit_2_untouched(data_path, tmp_path, capsys, override, pattern):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, **override)):
        assert_refused(stability_cli.main, ["stability"], capsys, pattern, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("bn", ["recompute", "interpolate"])
def test_a_batchnorm_resnet_aligned_with_and_without_recomputed_statistics(data_path, tmp_path, capsys, bn):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, model="resnet8", width=4, bn=bn, bn_batches=2)):
        stability_cli.main(["stability"])
    assert "aligned test instability" in capsys.readouterr().out
    _, _, pair = _pair(tmp_path)
    assert pair["analysis"]["bn"] == bn and pair["aligned"]["curve"]["bn"] == bn
    assert pair["aligned"]["groups_permuted"] >= 1 and pair["aligned"]["mask_overlap"] is None  # dense: no masks


def test_two_imp_tickets_from_different_initialisations_with_their_mask_overlap(data_path, tmp_path, capsys):
    from tflth import masking

    common = _flags(data_path, tmp_path)
    for name in ("noise", "align", "rewind_steps", "interpolation_points", "train_examples"):
        common.pop(name)
    with flagsaver.flagsaver(**common, rewind_step="0it", levels="2", replicates=3):
        prune_cli.main(["prune"])
    (experiment,) = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path) if d.startswith("lottery_")]
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, experiment=experiment, levels="2", replicates=3,
                                      pairs=1)):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert "mask Jaccard" in out and "random masks' Jaccard" in out
    (sweep,) = [os.path.join(tmp_path, d) for d in os.listdir(tmp_path) if d.startswith("stability_")]
    for r in range(3):
        base = os.path.join(sweep, f"replicate_{r}", "level_2", "imp", "k_0", "pair_0")
        with open(os.path.join(base, "pair.json")) as f:
            pair = json.load(f)
        partner = (r + 1) % 3
        assert pair["partner_replicate"] == partner
        ticket = os.path.join(experiment, f"replicate_{partner}", "level_2")
        start_b = checkpoint.load(os.path.join(base, "copy_b", "checkpoints", "step_000000000.npz"))[1]
        w0 = checkpoint.load(os.path.join(experiment, f"replicate_{partner}", "level_0", "checkpoints",
                                          "step_000000000.npz"))[1]
        mask_b = masking.Masks.load(os.path.join(base, "copy_b", "mask.npz"))
        assert mask_b == masking.Masks.load(os.path.join(ticket, "mask.npz"))  # the partner's ticket's mask ...
        for p in w0:  # ... on the partner's initialisation
            assert np.array_equal(start_b[p], w0[p] * mask_b[p] if p in mask_b else w0[p]), p
        mine = masking.Masks.load(os.path.join(experiment, f"replicate_{r}", "level_2", "mask.npz"))
        theirs = masking.Masks.load(os.path.join(ticket, "mask.npz"))
        both = sum(int((mine[p] & theirs[p]).sum()) for p in mine)
        either = sum(int((mine[p] | theirs[p]).sum()) for p in mine)
        assert pair["mask_overlap"] == pytest.approx(both / either)
        expected = sum(mine[p].sum() * theirs[p].sum() / mine[p].size for p in mine)
        union = sum(mine[p].sum() + theirs[p].sum() - mine[p].sum() * theirs[p].sum() / mine[p].size for p in mine)
        assert pair["mask_overlap_random"] == pytest.approx(expected / union)
        assert 0 < pair["aligned"]["mask_overlap"] <= 1 and pair["density_b"] == pytest.approx(pair["density"])
    with flagsaver.flagsaver(**_flags(data_path, tmp_path / "more", experiment=experiment, levels="2", replicates=3,
                                      pairs=3)):
        assert_refused(stability_cli.main, ["stability"], capsys, r"--pairs=3 is too many for 3 replicate\(s\)",
                       tmp_path / "more")

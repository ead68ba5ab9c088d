"""bin/stability.py: a dense sweep end to end; bad flags are one line / exit 2 / nothing written;
SIGKILL during a sweep resumes to the same CSV, reusing finished copies; per-k sweeps (several
experiments, each k with the masks and W_k of the one rewound to k) and their refusals."""

import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth import masking
from tflth.runs import layout as paths
from tflth.cli import prune as prune_cli
from tflth.cli import stability as stability_cli
from tflth.training import checkpoint

from helpers import assert_refused, assert_same_run_files, kill_when, snapshot, write_synthetic_npz
from test_cli_train import _snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STABILITY = os.path.join(ROOT, "bin", "stability.py")
TINY = dict(model="lenet_32_16", dataset="mnist", batch_size=32, training_steps="16it", eval_every="8it",
            checkpoint_every="8it")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


@pytest.fixture(scope="module")
def experiment(data_path, tmp_path_factory):
    """A 1-level IMP experiment of lenet_32_16 (rewind 4it) with a random_prune control."""
    out = tmp_path_factory.mktemp("imp")
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(out), levels="1", rewind_step="4it",
                             pruning_fraction=0.5, pruning_scope="global", controls=["random_prune"], **TINY):
        prune_cli.main(["prune"])
    (name,) = [d for d in os.listdir(out) if d.startswith("lottery_")]
    return str(out / name)


def _flags(data_path, output_dir, **extra):
    values = dict(TINY, data_dir=data_path, output_dir=str(output_dir), rewind_steps=["0it", "4it"], pairs=1,
                  interpolation_points=5, train_examples=64, levels=None, controls=[], experiment=None,
                  shard="1/1")
    values.update(extra)
    return values


def test_dense_sweep_prints_pairs_table_and_report(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path)):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert re.search(r"replicate 0 level 0 imp\s+k=4it pair 0: test instability \d+\.\d\d pts", out), out
    assert "first stable k" in out and "report:" in out
    (sweep,) = [d for d in os.listdir(tmp_path) if d.startswith("stability_")]
    report = set(os.listdir(tmp_path / sweep / "report"))
    assert {"stability.csv", "stability.md", "instability.png"} <= report
    assert any(f.startswith("curves_") and f.endswith("_level0_imp.png") for f in report)
    rows = (tmp_path / sweep / "report" / "stability.csv").read_text().splitlines()
    assert rows[0].startswith("row,sweep,label,level,method") and len(rows) == 1 + 2 + 2  # 2 pairs + 2 settings
    assert "— masks: dense" in out and all(",dense,," in row for row in rows[1:])  # mask_mode, no experiment


def test_imp_sweep_reuses_the_experiment(data_path, experiment, tmp_path, capsys):
    before = _snapshot(experiment)
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, experiment=experiment, levels="0,1",
                                      controls=["random_prune"], rewind_steps=["4it"])):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert re.search(r"level 1 random_prune\s+k=4it", out) and re.search(r"level 1 imp\s+k=4it", out), out
    assert _snapshot(experiment) == before  # nothing of the experiment retrained or rewritten
    (sweep,) = [d for d in os.listdir(tmp_path) if d.startswith("stability_")]
    assert not os.path.exists(tmp_path / sweep / "replicate_0" / "parent")  # W_4 came from the experiment
    assert f"— masks: one_mask ({os.path.basename(experiment)})" in out, out
    pair = json.load(open(tmp_path / sweep / "replicate_0" / "level_1" / "imp" / "k_4" / "pair_0" / "pair.json"))
    assert (pair["mask_mode"], pair["experiment"], pair["experiment_k"]) == ("one_mask", os.path.basename(experiment),
                                                                             4)


BAD = [
    ({"rewind_steps": ["foo"]}, r"error: --rewind_steps: Invalid step 'foo'"),
    ({"rewind_steps": ["0it", "16it"]}, r"error: --rewind_steps=16it is iteration 16, the end of training"),
    ({"rewind_steps": ["3ep"]}, r"error: --rewind_steps=3ep is iteration 24, beyond the end of training"),
    ({"interpolation_points": 1}, r"error: --interpolation_points=1 is invalid: expected an integer >= 2"),
    ({"shard": "3/2"}, r"error: --shard=3/2 is invalid: expected I/N with 1 <= I <= N"),
    ({"shard": "x"}, r"error: --shard=x is invalid"),
    ({"levels": "0,a"}, r"error: --levels=0,a is invalid: expected whole numbers"),
    ({"levels": "0,1"}, r"error: --experiment is needed: levels other than 0 and controls analyse an IMP experiment's masks"),
    ({"alpha_range": ["0.5", "1"]}, r"error: --alpha_range=0.5,1.0 is invalid"),
    ({"experiment": "NOTDIR"}, r"error: --experiment=\S+ is not an IMP experiment directory"),
    ({"experiment": "EXP", "model": "lenet_16"}, r"error: --experiment=\S+ was trained with other settings "
                                                 r"\(model.name: experiment 'lenet_32_16', flags 'lenet_16'"),
    ({"experiment": "EXP", "dataset": "fashion_mnist"}, r"was trained with other settings \(dataset.name"),
    ({"experiment": "EXP", "levels": "0,3"}, r"error: --levels=0,3 names level 3 of replicate 0, not trained"),
    ({"experiment": "EXP", "replicates": 2}, r"level 0 of replicate 1, not trained"),
]


@pytest.mark.parametrize("override,pattern", BAD, ids=[",".join(f"{k}={v}" for k, v in o.items()) for o, _ in BAD])
def test_bad_flags_one_line_exit_2_nothing_written(data_path, experiment, tmp_path, capsys, override, pattern):
    override = dict(override)
    if override.get("experiment") == "EXP":
        override["experiment"] = experiment
    elif override.get("experiment") == "NOTDIR":
        override["experiment"] = str(tmp_path)
    (tmp_path / "keep.txt").write_text("a user's file\n")
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, **override)):
        assert_refused(stability_cli.main, ["stability"], capsys, pattern, tmp_path, experiment)


def _cmd(data_path, output_dir):
    return [sys.executable, STABILITY, "--model=lenet_300_100", "--dataset=mnist", f"--data_dir={data_path}",
            f"--output_dir={output_dir}", "--batch_size=8", "--training_steps=600it", "--checkpoint_every=50it",
            "--eval_every=300it", "--rewind_steps=0it,20it", "--pairs=2", "--interpolation_points=7",
            "--train_examples=120", "--deterministic"]


def test_sigkill_during_a_sweep_resumes_to_the_same_csv(data_path, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full = subprocess.run(_cmd(data_path, tmp_path / "full"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    def between_pairs():
        done = [os.path.join(r, "pair.json") for r, _, files in os.walk(tmp_path / "killed") if "pair.json" in files]
        running = [r for r, _, files in os.walk(tmp_path / "killed")
                   if r.endswith(os.path.join("copy_a", "checkpoints")) and files]
        return done[0] if done and len(running) > len(done) else None  # one pair done, the next one's copy a training

    caught = kill_when(_cmd(data_path, tmp_path / "killed"), env, between_pairs)
    assert caught is not None, "never caught the sweep between two pairs"
    finished_copy = os.path.join(os.path.dirname(caught), "copy_a", "result.json")
    stamps = os.stat(caught).st_mtime_ns, os.stat(finished_copy).st_mtime_ns
    resumed = subprocess.run(_cmd(data_path, tmp_path / "killed"), env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (os.stat(caught).st_mtime_ns, os.stat(finished_copy).st_mtime_ns) == stamps  # reused, not redone

    def csv(root):
        (sweep,) = [d for d in os.listdir(root) if d.startswith("stability_")]
        return (root / sweep / "report" / "stability.csv").read_text()

    assert csv(tmp_path / "killed") == csv(tmp_path / "full")
    assert_same_run_files(tmp_path / "full", tmp_path / "killed")


def test_report_binary_merges_sweeps_with_labels(data_path, tmp_path, capsys):
    from tflth.cli import report as report_cli

    for lr in (0.05, 0.01):
        with flagsaver.flagsaver(**_flags(data_path, tmp_path / "runs", lr=lr, optimizer="sgd")):
            stability_cli.main(["stability"])
    sweeps = sorted(str(tmp_path / "runs" / d) for d in os.listdir(tmp_path / "runs") if d.startswith("stability_"))
    capsys.readouterr()
    with flagsaver.flagsaver(sweeps=sweeps, labels=["first", "second"], experiments=[],
                             report_dir=str(tmp_path / "rep")):
        report_cli.main(["report"])
    out = capsys.readouterr().out
    assert out.count("first stable k =") == 2 and "first (stability_" in out and "second (stability_" in out
    assert {"stability.csv", "stability.md", "instability.png"} <= set(os.listdir(tmp_path / "rep"))
    with flagsaver.flagsaver(sweeps=sweeps, labels=["only one"], experiments=[], report_dir=str(tmp_path / "x")):
        with pytest.raises(SystemExit) as info:
            report_cli.main(["report"])
    assert info.value.code == 2 and "--labels has 1 names for 2 directories" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x")


def test_report_keeps_same_named_sweeps_apart_and_says_when_analyses_differ(data_path, tmp_path, capsys):
    """A sweep copied elsewhere and rerun with other analysis settings for one k: one table
    per given directory, labelled as given; the copy's rows name their settings."""
    from tflth.cli import report as report_cli

    with flagsaver.flagsaver(**_flags(data_path, tmp_path / "A")):
        stability_cli.main(["stability"])
    (name,) = os.listdir(tmp_path / "A")
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    with flagsaver.flagsaver(**_flags(data_path, tmp_path / "B", rewind_steps=["4it"], interpolation_points=7)):
        stability_cli.main(["stability"])  # re-analyses k=4 only; k=0 keeps its 5 points
    capsys.readouterr()
    a, b = str(tmp_path / "A" / name), str(tmp_path / "B" / name)
    with flagsaver.flagsaver(sweeps=[a, b], labels=["recompute", "interpolate"], experiments=[],
                             report_dir=str(tmp_path / "rep")):
        report_cli.main(["report"])
    md = (tmp_path / "rep" / "stability.md").read_text()
    assert f"recompute ({a}; 5 points in [0, 1], train curve on 64 examples" in md, md
    assert f"interpolate ({b})" in md, md
    assert md.count("first stable k =") == 2  # one line per table (level 0, imp)
    # one pair per k: the interval is undefined and every verdict undecided (docs/statistics.md)
    assert md.count("- level 0 imp: first stable k = undecided (0it, 4it undecided)") == 2, md
    assert "| n/a (n=1) |" in md and "| undecided |" in md
    note = [line for line in md.splitlines() if line.startswith("- NOTE")]
    assert len(note) == 1 and "2 different settings" in note[0] and "7 points" in note[0], md
    rows = list(csv.DictReader(open(tmp_path / "rep" / "stability.csv")))
    summary = [r for r in rows if r["row"] == "summary"]
    assert [(r["sweep"], r["k"], r["n"]) for r in summary] == [(a, "0", "1"), (a, "4", "1"), (b, "0", "1"),
                                                               (b, "4", "1")]
    assert [r["analysis"].split(" points")[0] for r in summary] == ["5", "5", "5", "7"]
    assert sum(f.startswith("curves_") for f in os.listdir(tmp_path / "rep")) == 2


# ------------------------------------------------------------------ per-k mode: each k's own IMP experiment


@pytest.fixture(scope="module")
def per_k(data_path, tmp_path_factory):
    """Two 2-level IMP experiments of lenet_32_16 that differ only in their rewind step
    (0it, 4it), with the random_prune control: ``(rewound to 0it, rewound to 4it)``. Their
    level-1 masks coincide (both prune the same dense network); level 2's differ (each
    prunes its own level 1, trained from its own W_k)."""
    out = tmp_path_factory.mktemp("per_k")
    for k in ("0it", "4it"):
        with flagsaver.flagsaver(data_dir=data_path, output_dir=str(out), levels="2", rewind_step=k,
                                 pruning_fraction=0.5, pruning_scope="global", controls=["random_prune"], **TINY):
            prune_cli.main(["prune"])
    by_k = {json.load(open(out / d / "hparams.json"))["rewind_step"]: str(out / d) for d in os.listdir(out)}
    return by_k["0it"], by_k["4it"]


def _level_mask(experiment, level, *control):
    return masking.Masks.load(os.path.join(experiment, "replicate_0", f"level_{level}", *control, "mask.npz"))


def _per_k_flags(data_path, output_dir, experiments, **extra):
    values = _flags(data_path, output_dir, **dict(dict(experiment=",".join(experiments), levels="2",
                                                      controls=["random_prune"], interpolation_points=3,
                                                      train_examples=32), **extra))
    if "rewind_steps" not in extra:
        del values["rewind_steps"]  # not given: the ks are the experiments' rewind steps
    return values


def test_per_k_sweep_takes_each_k_s_masks_and_w_k_from_the_experiment_rewound_to_k(data_path, per_k, tmp_path,
                                                                                    capsys):
    a, b = per_k
    names = {0: os.path.basename(a), 4: os.path.basename(b)}
    for control in ((), ("random_prune",)):  # else this test could not tell them apart
        assert _level_mask(a, 2, *control) != _level_mask(b, 2, *control), control
    before = snapshot(a), snapshot(b)
    with flagsaver.flagsaver(**_per_k_flags(data_path, tmp_path, (a, b))):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert re.search(r"level 2 imp\s+k=0it", out) and re.search(r"level 2 random_prune\s+k=4it", out), out
    assert f"masks: per_k (k=0it: {names[0]}, k=4it: {names[4]})" in out, out
    assert (snapshot(a), snapshot(b)) == before  # nothing of the experiments retrained or rewritten
    (sweep,) = [d for d in os.listdir(tmp_path) if d.startswith("stability_")]
    root = tmp_path / sweep / "replicate_0" / "level_2"
    for k, experiment in ((0, a), (4, b)):
        for method, control in (("imp", ()), ("random_prune", ("random_prune",))):
            for which in "ab":
                copy = root / method / f"k_{k}" / "pair_0" / f"copy_{which}"
                assert masking.Masks.load(str(copy / "mask.npz")) == _level_mask(experiment, 2, *control), \
                    (k, method, which)
            pair = json.load(open(root / method / f"k_{k}" / "pair_0" / "pair.json"))
            assert (pair["mask_mode"], pair["experiment"], pair["experiment_k"]) == ("per_k", names[k], k)
        # copy a started from the k's experiment's own W_k, masked by its level-2 mask
        start = checkpoint.load(str(root / "imp" / f"k_{k}" / "pair_0" / "copy_a" / "checkpoints"
                                    / f"step_{k:09d}.npz"))[1]
        w_k = checkpoint.load(paths.Experiment(experiment).level(0, 0).checkpoint(k))[1]
        mask = _level_mask(experiment, 2)
        for path in mask:
            np.testing.assert_array_equal(start[path], w_k[path] * mask[path])
    assert not os.path.exists(tmp_path / sweep / "replicate_0" / "parent")  # every W_k came from an experiment
    md = (tmp_path / sweep / "report" / "stability.md").read_text()
    assert f"— masks: per_k (k=0it: {names[0]}, k=4it: {names[4]})" in md, md
    rows = list(csv.DictReader(open(tmp_path / sweep / "report" / "stability.csv")))
    assert len(rows) == 8 and {(r["k"], r["mask_mode"], r["experiment"]) for r in rows} == {
        ("0", "per_k", names[0]), ("4", "per_k", names[4])}

    # Not any one-mask sweep's directory; the order of --experiment does not matter.
    for one in (a, b):
        with flagsaver.flagsaver(**_flags(data_path, tmp_path, experiment=one, levels="2")):
            assert stability_cli.job_from_flags().sweep.name != sweep
    with flagsaver.flagsaver(**_per_k_flags(data_path, tmp_path, (b, a))):
        assert stability_cli.job_from_flags().sweep.name == sweep

    # Killed during k=4's second copy: rerunning (with only k=4, the experiments in the other
    # order) trains that copy again from B and reuses everything else.
    pair_dir = root / "imp" / "k_4" / "pair_0"
    os.unlink(pair_dir / "pair.json")
    shutil.rmtree(pair_dir / "copy_b")
    kept = {p: os.stat(p).st_mtime_ns for p in [pair_dir / "copy_a" / "result.json"] + [
        root / m / f"k_{k}" / "pair_0" / "pair.json" for m in ("imp", "random_prune") for k in (0, 4)
        if (m, k) != ("imp", 4)]}
    with flagsaver.flagsaver(**_per_k_flags(data_path, tmp_path, (b, a), rewind_steps=["4it"])):
        stability_cli.main(["stability"])
    assert [d for d in os.listdir(tmp_path) if d.startswith("stability_")] == [sweep]
    assert {p: os.stat(p).st_mtime_ns for p in kept} == kept
    assert masking.Masks.load(str(pair_dir / "copy_b" / "mask.npz")) == _level_mask(b, 2)
    assert json.load(open(pair_dir / "pair.json"))["experiment"] == names[4]


def _fake_experiment(root, source, change):
    """A directory holding only ``source``'s hparams.json, changed by ``change(hparams)``
    (all a refused command reads)."""
    hp = json.load(open(os.path.join(source, "hparams.json")))
    change(hp)
    path = os.path.join(root, "fake", os.path.basename(source))
    os.makedirs(path)
    with open(os.path.join(path, "hparams.json"), "w") as f:
        json.dump(hp, f)
    return path


PER_K_BAD = [
    ("fraction", lambda hp: hp["pruning"].update(fraction=0.3), {},
     r"error: --experiment=\S+ mixes experiments that differ in pruning\.fraction \(lottery_\w+: 0\.5, "
     r"lottery_\w+: 0\.3\); expected experiments that differ only in their rewind step"),
    ("lr", lambda hp: hp["run"]["training"].update(lr=0.5), {}, r"mixes experiments that differ in run\.training\.lr"),
    ("reset", lambda hp: hp.update(reset="finetune"), {}, r"mixes experiments that differ in reset "),
    ("rewind_optimizer", lambda hp: hp.update(rewind_optimizer="fresh", rewind_step="4it"), {},
     r"mixes experiments that differ in rewind_optimizer \(lottery_\w+: \S+, lottery_\w+: 'fresh'\)"),
    ("same_rewind_step_elsewhere", lambda hp: None, {},
     r"error: --experiment=\S+ has two experiments rewound to iteration 0, \S+ and \S+; expected one experiment per "
     r"rewind step"),
    ("k_without_experiment", None, {"rewind_steps": ["0it", "8it"]},
     r"error: --rewind_steps=8it is iteration 8, and no experiment given was rewound to it; expected rewind steps of "
     r"the experiments: 0it \(lottery_\w+\), 4it \(lottery_\w+\)"),
    ("same_directory_twice", "twice", {}, r"error: --experiment=\S+ names one experiment twice"),
    ("level_not_trained", None, {"levels": "3"}, r"error: --levels=3 names level 3 of replicate 0, not trained in "),
    ("other_flags", None, {"lr": 0.01}, r"error: --experiment=\S+ was trained with other settings \(training\.lr"),
]


@pytest.mark.parametrize("change,extra,pattern", [c[1:] for c in PER_K_BAD], ids=[c[0] for c in PER_K_BAD])
def test_per_k_refusals_are_one_line_exit_2_nothing_written(data_path, per_k, tmp_path, capsys, change, extra,
                                                            pattern):
    a, b = per_k
    experiments = (a, b)
    if change == "twice":
        experiments = (a, b, a)
    elif change is not None:
        experiments = (a, b, _fake_experiment(tmp_path, a, change))
    (tmp_path / "out").mkdir()
    with flagsaver.flagsaver(**_per_k_flags(data_path, tmp_path / "out", experiments, **extra)):
        assert_refused(stability_cli.main, ["stability"], capsys, pattern, tmp_path, a, b)
    assert os.listdir(tmp_path / "out") == []


def test_per_k_takes_a_k_0_experiment_of_either_optimizer_choice():
    # at k = 0 the optimizer has no state: "fresh" and "state" are one computation
    from tflth.stability import sweep

    def stored(k, opt=None):
        return {"run": {"training": {"lr": 0.1}}, "pruning": {}, "rewind_step": k,
                **({"rewind_optimizer": opt} if opt else {})}

    fine = {"a": stored("0it"), "b": stored("4it", "fresh"), "c": stored("8it", "fresh")}
    sweep._check_same_settings(("a", "b", "c"), fine)
    sweep._check_same_settings(("b", "a", "c"), fine)
    mixed = {"a": stored("0it", "fresh"), "b": stored("4it", "fresh"), "c": stored("8it")}
    with pytest.raises(Exception, match=r"differ in rewind_optimizer \(b: 'fresh', c: 'state'\)"):
        sweep._check_same_settings(("a", "b", "c"), mixed)


def test_no_rewind_steps_is_refused_without_several_experiments(data_path, experiment, tmp_path, capsys):
    for one in (None, experiment):
        with flagsaver.flagsaver(**_flags(data_path, tmp_path, experiment=one, rewind_steps=[])):
            assert_refused(stability_cli.main, ["stability"], capsys,
                           r"error: --rewind_steps= is invalid: expected one or more steps such as 0it,100it,500it",
                           tmp_path, experiment)

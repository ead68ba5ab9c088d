"""bin/prune.py: bad flags are one line / exit 2 / nothing touched; SIGKILL in level 2 resumes."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth.cli import prune as prune_cli

from helpers import assert_refused, assert_same_run_files, kill_when, write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRUNE = os.path.join(ROOT, "bin", "prune.py")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


def _flags(data_path, output_dir, **extra):
    values = dict(model="lenet_32_16", dataset="mnist", data_dir=data_path, output_dir=str(output_dir),
                  batch_size=32, training_steps="16it", eval_every="8it", checkpoint_every="8it", levels=1,
                  rewind_step="0it", pruning_fraction=0.2, pruning_scope="global", controls=["random_reinit"])
    values.update(extra)
    return values


def test_prune_prints_progress_and_table_and_writes_report(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path)):
        prune_cli.main(["prune"])
    out = capsys.readouterr().out
    assert re.search(r"replicate 0 level  1 imp\s+density  80\.00%", out), out
    assert "random_reinit" in out and "report:" in out
    exp = [d for d in os.listdir(tmp_path) if d.startswith("lottery_")][0]
    assert {"results.csv", "results.md", "results.png", "hparams.json"} <= set(os.listdir(tmp_path / exp))


BAD = [
    ({"pruning_fraction": 1.5}, r"error: --pruning_fraction=1\.5 is invalid: expected a number in \(0, 1\)"),
    ({"pruning_fraction": 0.0}, r"error: --pruning_fraction=0\.0 is invalid"),
    ({"rewind_step": "3ep"}, r"--rewind_step=3ep is iteration 24, beyond the end of training at iteration 16"),
    ({"layer_rates": ["fc7:0.1"]}, r"'fc7' matches no masked variable"),
    ({"layer_rates": ["fc1=0.1"]}, r"--layer_rates entry 'fc1=0.1' is invalid"),
    ({"levels": -1}, r"--levels=-1 is invalid"),
    ({"controls": ["random_magic"]}, r"unknown control 'random_magic'"),
    ({"replicates": 0}, r"--replicates=0"),
]


@pytest.mark.parametrize("override,pattern", BAD, ids=[f"{k}={v}" for o, _ in BAD for k, v in o.items()])
def test_bad_flags_one_line_exit_2_untouched(data_path, tmp_path, capsys, override, pattern):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path)):
        prune_cli.main(["prune"])
    capsys.readouterr()
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, **override)):
        assert_refused(prune_cli.main, ["prune"], capsys, pattern, tmp_path)


def test_error_found_after_loading_data_is_one_line_in_a_real_process(data_path, tmp_path):
    """The data source is logged while the flags are checked against the data; a bad
    value found then must still print one line (the log is held, then dropped)."""
    out = subprocess.run([sys.executable, PRUNE, "--model=lenet_32_16", "--dataset=mnist", f"--data_dir={data_path}",
                          f"--output_dir={tmp_path}", "--batch_size=32", "--training_steps=16it",
                          "--rewind_step=3ep"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "--rewind_step=3ep is iteration 24" in lines[0], out.stderr
    assert os.listdir(tmp_path) == []


def _cmd(data_path, output_dir):
    return [sys.executable, PRUNE, "--model=lenet_300_100", "--dataset=mnist", f"--data_dir={data_path}",
            f"--output_dir={output_dir}", "--batch_size=8", "--training_steps=600it", "--checkpoint_every=50it",
            "--eval_every=300it", "--levels=3", "--rewind_step=20it", "--pruning_scope=layerwise",
            "--layer_rates=output:0.1", "--deterministic"]


def _table(stdout):
    """The final summary table: the lines between the last progress line and 'report:'."""
    lines = stdout.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("report:"))
    start = max(i for i, line in enumerate(lines) if line.startswith("replicate ")) + 1
    assert end - start >= 4, stdout
    return lines[start:end]


def test_sigkill_during_level_2_resumes_to_the_same_table(data_path, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full = subprocess.run(_cmd(data_path, tmp_path / "full"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "Dataset mnist: 240 train" in full.stderr  # logged while validating, replayed once valid

    def in_level_2():
        found = [r for r, _, files in os.walk(tmp_path / "killed")
                 if r.endswith(os.path.join("level_2", "checkpoints")) and len(files) >= 2]
        return os.path.dirname(found[0]) if found else None

    level2 = kill_when(_cmd(data_path, tmp_path / "killed"), env, in_level_2)
    assert level2 is not None, "never caught the run inside level 2"
    assert not os.path.exists(os.path.join(level2, "result.json"))
    level1_result = os.path.join(os.path.dirname(level2), "level_1", "result.json")
    stamp = os.stat(level1_result).st_mtime_ns
    resumed = subprocess.run(_cmd(data_path, tmp_path / "killed"), env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "replicate 0 level 2: resuming from the checkpoint at step" in resumed.stderr
    assert os.stat(level1_result).st_mtime_ns == stamp  # level 1 not recomputed
    assert _table(resumed.stdout) == _table(full.stdout)
    assert_same_run_files(tmp_path / "full", tmp_path / "killed")  # every file, timings aside


def test_report_binary_combines_experiments(data_path, tmp_path, capsys):
    from tflth.cli import report as report_cli

    for seed in (1, 2):
        with flagsaver.flagsaver(**_flags(data_path, tmp_path / "runs", seed=seed, controls=[])):
            prune_cli.main(["prune"])
    capsys.readouterr()
    experiments = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    assert len(experiments) == 2
    with flagsaver.flagsaver(experiments=experiments, report_dir=str(tmp_path / "rep")):
        report_cli.main(["report"])
    out = capsys.readouterr().out
    assert out.count("lottery_") >= 2 or out.count("lenet_32_16") >= 2, out
    assert sorted(os.listdir(tmp_path / "rep")) == ["results.csv", "results.md", "results.png", "results_summary.csv"]
    with flagsaver.flagsaver(experiments=[str(tmp_path / "nothing")], report_dir=str(tmp_path / "rep2")):
        with pytest.raises(SystemExit) as info:
            report_cli.main(["report"])
    assert info.value.code == 2 and "not an experiment directory" in capsys.readouterr().err
    assert not (tmp_path / "rep2").exists()


def test_report_keeps_same_named_experiments_of_different_parents_apart(data_path, tmp_path, capsys):
    """The same experiment copied elsewhere and rerun with another setting: one table per
    given directory, labelled as given (not merged by the shared directory name)."""
    import shutil

    from tflth.cli import report as report_cli

    with flagsaver.flagsaver(**_flags(data_path, tmp_path / "A", controls=[])):
        prune_cli.main(["prune"])
    (name,) = os.listdir(tmp_path / "A")
    shutil.copytree(tmp_path / "A", tmp_path / "B")
    result = tmp_path / "B" / name / "replicate_0" / "level_1" / "result.json"
    data = json.loads(result.read_text())
    data["test_accuracy"] = 0.5  # the copy's level 1 came out otherwise
    result.write_text(json.dumps(data))
    capsys.readouterr()
    with flagsaver.flagsaver(experiments=[str(tmp_path / "A" / name), str(tmp_path / "B" / name)],
                             labels=["first", "second"], sweeps=[], report_dir=str(tmp_path / "rep")):
        report_cli.main(["report"])
    md = (tmp_path / "rep" / "results.md").read_text()
    assert f"first ({os.path.join(str(tmp_path), 'A', name)})" in md, md
    assert f"second ({os.path.join(str(tmp_path), 'B', name)})" in md, md
    assert "50.00" in md and "| IMP | 1 |" in md and "| IMP | 2 |" not in md  # one replicate each, not merged


def _network_dirs(experiment):
    """Every trained network of an experiment but the dense one: ``{relative path: directory}``."""
    return {os.path.relpath(root, experiment): root for root, dirs, _ in os.walk(experiment)
            if "checkpoints" in dirs and not root.endswith("level_0")}


def _read(run_dir, which=0):
    from tflth.training import checkpoint

    d = os.path.join(run_dir, "checkpoints")
    return checkpoint.read(checkpoint.path_for(d, checkpoint.list_steps(d)[which]))


def test_rewind_optimizer_fresh_starts_every_level_and_control_from_zero_slots_at_k(data_path, tmp_path, capsys):
    """--rewind_optimizer=fresh: each level's and control's first checkpoint is step 20 with
    every optimizer slot 0.0 (Adam's bias correction counting from 20, kept in every later
    checkpoint); the default (state) starts them from level 0's optimizer state at step 20."""
    experiments = {}
    for mode in ("fresh", "state"):
        extra = {"rewind_optimizer": "fresh"} if mode == "fresh" else {}  # state: the flag's default
        with flagsaver.flagsaver(**_flags(data_path, tmp_path / mode, optimizer="adam", lr=0.001,
                                          training_steps="24it", rewind_step="20it", levels=2,
                                          controls=["random_reinit", "random_prune"], **extra)):
            prune_cli.main(["prune"])
        (name,) = os.listdir(tmp_path / mode)
        experiments[mode] = str(tmp_path / mode / name)
    assert os.path.basename(experiments["fresh"]) != os.path.basename(experiments["state"])  # never one directory
    expected = {os.path.join("replicate_0", f"level_{lvl}", *c) for lvl in (1, 2)
                for c in [(), ("random_reinit",), ("random_prune",)]}

    fresh = _network_dirs(experiments["fresh"])
    assert set(fresh) == expected
    for rel, run in fresh.items():
        first, last = _read(run), _read(run, -1)
        assert first.step == 20 and int(first.optimizer[0]) == 20, rel  # the step counter: schedule at k
        assert all(not np.any(v) for v in first.optimizer[1:]), rel  # every slot 0.0
        assert int(first.extras["optimizer_start_step"]) == 20, rel
        assert last.step == 24 and int(last.extras["optimizer_start_step"]) == 20, rel  # a resume keeps it
    with open(os.path.join(experiments["fresh"], "hparams.json")) as f:
        stored = json.load(f)
    assert stored["rewind_optimizer"] == "fresh" and stored["label"].endswith("rewind@20it fresh optimizer")

    state = _network_dirs(experiments["state"])
    assert set(state) == expected
    w_k = _read(os.path.join(experiments["state"], "replicate_0", "level_0"), 1)  # kept: steps 0, 20, 24
    assert w_k.step == 20 and any(np.any(v) for v in w_k.optimizer[1:])
    for rel, run in state.items():
        first = _read(run)
        assert first.step == 20 and len(first.optimizer) == len(w_k.optimizer), rel
        assert all(np.array_equal(a, b) for a, b in zip(first.optimizer, w_k.optimizer)), rel
        assert "optimizer_start_step" not in first.extras and "optimizer_start_step" not in _read(run, -1).extras
    with open(os.path.join(experiments["state"], "hparams.json")) as f:
        stored = json.load(f)
    assert "rewind_optimizer" not in stored and stored["label"].endswith("rewind@20it")  # as before the flag


def test_bad_rewind_optimizer_is_one_line_exit_2_nothing_written(data_path, tmp_path):
    out = subprocess.run([sys.executable, PRUNE, "--model=lenet_32_16", "--dataset=mnist", f"--data_dir={data_path}",
                          f"--output_dir={tmp_path}", "--batch_size=32", "--training_steps=16it",
                          "--rewind_optimizer=foo"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert re.search(r"error: .*--rewind_optimizer=foo.*<state\|fresh>", lines[0]), lines[0]
    assert os.listdir(tmp_path) == []

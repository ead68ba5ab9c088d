"""bin/train.py: bad input is one line and exit 2 with nothing touched; kill and resume."""

import re
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth.cli import train as train_cli
from tflth.training import checkpoint

from helpers import assert_same_run_files, kill_when, snapshot, write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "bin", "train.py")


_snapshot = snapshot


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


def _base(data_path, output_dir, **extra):
    flags = dict(model="lenet_32_16", dataset="mnist", data_dir=data_path, output_dir=str(output_dir),
                 batch_size=32, training_steps="16it", eval_every="8it", checkpoint_every="8it")
    flags.update(extra)
    return flags


def test_finished_run_is_reported_not_retrained(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_base(data_path, tmp_path)):
        train_cli.main(["train"])
        first = capsys.readouterr().out
        before = _snapshot(tmp_path)
        train_cli.main(["train"])
        second = capsys.readouterr().out
    assert "step=16" in first and first.split("run_dir=")[1].split()[0] == second.split("run_dir=")[1].split()[0]
    assert _snapshot(tmp_path) == before
    run_dir = first.split("run_dir=")[1].split()[0]
    hp = json.load(open(os.path.join(run_dir, "hparams.json")))
    assert hp["model"]["name"] == "lenet_32_16" and hp["training"]["batch_size"] == 32


BAD = [
    ({"preset": "nope", "model": None}, r"Unknown preset 'nope'"),
    ({"model": "lenet_zz"}, r"lenet_zz"),
    ({"dataset": "svhn"}, r"--dataset='svhn' is unknown"),
    ({"lr": -1.0}, r"error: --lr=-1\.0 is invalid: expected a finite number > 0"),
    ({"training_steps": "abc"}, r"error: --training_steps: Invalid step 'abc'"),
    ({"save_steps": ["40it"]}, r"--save_steps=40it is iteration 40, beyond the end of training at iteration 16"),
    ({"eval_every": "0it"}, r"--eval_every=0it is invalid: expected a positive interval"),
    ({"checkpoint_every": "often"}, r"--checkpoint_every: Invalid step 'often'"),
    ({"data_dir": "/nonexistent/dir"}, r"/nonexistent/dir does not exist"),
    ({"optimizer": "rmsprop"}, r"error: --optimizer='rmsprop' is invalid"),
    ({"width": 8}, r"--width=8: model 'lenet_32_16' has no width option"),
]


@pytest.mark.parametrize("override,pattern", BAD, ids=[next(iter(o)) + "-" + str(next(iter(o.values()))) for o, _ in BAD])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(data_path, tmp_path, capsys, override, pattern):
    with flagsaver.flagsaver(**_base(data_path, tmp_path)):
        train_cli.main(["train"])  # an existing finished run that must stay untouched
    capsys.readouterr()
    before = _snapshot(tmp_path)
    with flagsaver.flagsaver(**_base(data_path, tmp_path, **override)):
        with pytest.raises(SystemExit) as exit_info:
            train_cli.main(["train"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("flag", ["--batch_size=abc", "--jit_compile=fast"])
def test_unparseable_flag_value_in_a_real_process(tmp_path, flag):
    out = subprocess.run([sys.executable, TRAIN, "--model=lenet_32_16", flag,
                          f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    name = flag.split("=")[0][2:]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert os.listdir(tmp_path) == []


def _train_cmd(data_path, output_dir, steps=3000, extra=()):
    return [sys.executable, TRAIN, "--model=lenet_300_100", "--dataset=mnist", f"--data_dir={data_path}",
            f"--output_dir={output_dir}", "--batch_size=8", f"--training_steps={steps}it", "--checkpoint_every=100it",
            "--eval_every=1000it", "--deterministic", *extra]


# chunk: compiled chunks of steps run so fast here that the run is longer, to be killed mid-way
@pytest.mark.parametrize("steps,extra", [(3000, ()), (12000, ("--jit_compile=chunk",))], ids=["off", "chunk"])
def test_sigkill_then_rerun_equals_uninterrupted_run(data_path, tmp_path, steps, extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full = subprocess.run(_train_cmd(data_path, tmp_path / "full", steps, extra), env=env, capture_output=True,
                          text=True, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]

    def past_step_300():
        found = [os.path.join(r, "") for r, d, _ in os.walk(tmp_path / "killed") if r.endswith("checkpoints")]
        return found[0] if found and any(s >= 300 for s in checkpoint.list_steps(found[0])) else None

    ckpt_dir = kill_when(_train_cmd(data_path, tmp_path / "killed", steps, extra), env, past_step_300, timeout=240)
    assert ckpt_dir is not None, "the run finished or never checkpointed before it could be killed"
    assert checkpoint.latest(ckpt_dir) < steps and not os.path.exists(os.path.join(ckpt_dir, "..", "result.json"))
    resumed = subprocess.run(_train_cmd(data_path, tmp_path / "killed", steps, extra), env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from the checkpoint at step" in resumed.stderr
    full_dir = [r for r, _, _ in os.walk(tmp_path / "full") if r.endswith("checkpoints")][0]
    _, a, opt_a = checkpoint.load(checkpoint.path_for(full_dir, steps))
    _, b, opt_b = checkpoint.load(checkpoint.path_for(ckpt_dir, steps))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for x, y in zip(opt_a, opt_b):
        np.testing.assert_array_equal(x, y)
    # every file (metrics with their training-metric averages, result, kept checkpoints, TensorBoard), timings aside
    assert_same_run_files(tmp_path / "full", tmp_path / "killed")


def test_nan_loss_exits_1_with_the_last_good_checkpoint(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_base(data_path, tmp_path, lr=1e30, optimizer="sgd", momentum=0.0,
                                     checkpoint_every="1it")):
        with pytest.raises(SystemExit) as info:
            train_cli.main(["train"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 1
    assert len(err) == 1 and re.search(r"loss became (nan|inf).*last good checkpoint is step \d+", err[0]), err

"""Errors the command-line tools report in one line: flags named as typed, --strategy checked
before anything is written (exit 2); damaged state files and a full disk while running (exit 1)."""

import errno
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth import fileio
from tflth.cli import flags as tflags  # noqa: F401  (names the fields' flags)
from tflth.cli import harness
from tflth.errors import InputError, RunError
from tflth.cli import prune as prune_cli
from tflth.cli import train as train_cli
from tflth.hparams import HparamError, TrainingHparams
from tflth.masking import MaskError
from tflth.training import checkpoint
from tflth.training.checkpoint import CheckpointError
from tflth.training.strategy import StrategyError, get_strategy
from tflth.training.trainer import TrainingDiverged

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "bin", "train.py")
PRUNE = os.path.join(ROOT, "bin", "prune.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

TINY = dict(model="lenet_32_16", dataset="mnist", batch_size=32, training_steps="16it", eval_every="8it",
            checkpoint_every="8it")
PRUNE_TINY = dict(TINY, levels=2, rewind_step="0it", pruning_fraction=0.2, pruning_scope="global", controls=[])


def _argv(values):
    out = []
    for k, v in values.items():
        out.append(f"--{k}={','.join(v) if isinstance(v, list) else v}")
    return out


def _files(directory):
    """{relative path: md5} of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, directory)] = hashlib.md5(fh.read()).hexdigest()
    return out


def _error_lines(stderr):
    return [line for line in stderr.splitlines() if ": error: " in line]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


# ----------------------------------------------------------- flags named as typed


HPARAM_CASES = [
    (train_cli, {"lr": -1.0}, r"^--lr=-1\.0 is invalid: expected a finite number > 0"),
    (train_cli, {"batch_size": 0}, r"^--batch_size=0 is invalid: expected an integer >= 1"),
    (train_cli, {"momentum": 1.5}, r"^--momentum=1\.5 is invalid: expected a number in \[0, 1\)"),
    (train_cli, {"width": -2}, r"^--width=-2 is invalid: expected an integer >= 0"),
    (train_cli, {"training_steps": "0it"}, r"^--training_steps='0it' is invalid"),
    (prune_cli, {"pruning_fraction": 1.5}, r"^--pruning_fraction=1\.5 is invalid: expected a number in \(0, 1\)"),
    (prune_cli, {"layer_rates": ["output:1.5"]}, r"^--layer_rates='output:1\.5' is invalid"),
]


@pytest.mark.parametrize("cli,override,pattern", HPARAM_CASES,
                         ids=[f"{k}={v}" for _, o, _ in HPARAM_CASES for k, v in o.items()])
def test_hparam_errors_name_the_flag(data_path, tmp_path, capsys, cli, override, pattern):
    values = dict(PRUNE_TINY if cli is prune_cli else TINY, data_dir=data_path, output_dir=str(tmp_path))
    values.update(override)
    with flagsaver.flagsaver(**values):
        with pytest.raises(SystemExit) as info:
            cli.main(["cli"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    message = err.split(": error: ", 1)[1]
    assert re.search(pattern, message), err
    assert "Hparams" not in err
    assert os.listdir(tmp_path) == []


def test_flag_message_maps_fields_and_leaves_other_text():
    from tflth.hparams import HparamError as E

    assert harness.flag_message(E("TrainingHparams.lr=0 is invalid: expected x.", "TrainingHparams", "lr")) == \
        "--lr=0 is invalid: expected x."
    assert harness.flag_message(E("PruningHparams.scope='x' is invalid", "PruningHparams", "scope")) == \
        "--pruning_scope='x' is invalid"
    assert harness.flag_message(E("ModelHparams.width=-1 is invalid", "ModelHparams", "width")) == "--width=-1 is invalid"
    # the field comes from the error, not from its text
    assert harness.flag_message(E("SomeHparams.field=1 is invalid", "SomeHparams", "field")) == \
        "SomeHparams.field=1 is invalid"
    assert harness.flag_message(E("TrainingHparams.lr=0 is invalid")) == "TrainingHparams.lr=0 is invalid"
    # every dataclass check names its field
    with pytest.raises(E) as caught:
        TrainingHparams(lr=-1.0)
    assert (caught.value.owner, caught.value.field, caught.value.value) == ("TrainingHparams", "lr", -1.0)
    with pytest.raises(HparamError, match=r"^--gamma=2 is invalid"):
        with harness.hparam_errors_as_flags():
            raise HparamError("TrainingHparams.gamma=2 is invalid", "TrainingHparams", "gamma", 2)


# -------------------------------------------------------------------- --strategy


def test_unavailable_strategy_is_a_value_error_naming_the_field(monkeypatch):
    # the library names the field (JobSettings.strategy); the binaries show it as --strategy
    with pytest.raises(StrategyError, match=r"^JobSettings\.strategy=tpu: no TPU could be reached") as info:
        get_strategy("tpu")
    assert isinstance(info.value, ValueError) and len(str(info.value).splitlines()) == 1
    assert (info.value.owner, info.value.field, info.value.value) == ("JobSettings", "strategy", "tpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match=r"^JobSettings\.strategy=multi_worker needs the TF_CONFIG"):
        get_strategy("multi_worker")
    with pytest.raises(StrategyError, match=r"^JobSettings\.strategy=gpu is unknown"):
        get_strategy("gpu")


@pytest.mark.parametrize("cli", [train_cli, prune_cli], ids=["train", "prune"])
def test_strategy_tpu_without_a_tpu_exits_2_and_writes_nothing(data_path, tmp_path, capsys, cli):
    values = dict(PRUNE_TINY if cli is prune_cli else TINY, data_dir=data_path, output_dir=str(tmp_path))
    with flagsaver.flagsaver(strategy="tpu", **values):
        with pytest.raises(SystemExit) as info:
            cli.main(["cli"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "--strategy=tpu" in err and "no TPU" in err, err
    assert captured.out == "" and os.listdir(tmp_path) == []


def test_strategy_is_checked_before_the_data_is_loaded(tmp_path, capsys):
    with flagsaver.flagsaver(strategy="tpu", **dict(TINY, data_dir="/nonexistent/data", output_dir=str(tmp_path))):
        with pytest.raises(SystemExit) as info:
            train_cli.main(["train"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "--strategy=tpu" in err and "nonexistent" not in err, err


def test_strategy_tpu_in_a_real_process(data_path, tmp_path):
    out = subprocess.run([sys.executable, TRAIN, *_argv(dict(TINY, data_dir=data_path, output_dir=tmp_path)),
                          "--strategy=tpu"], env=ENV, capture_output=True, text=True, timeout=180)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.match(r"train\.py: error: --strategy=tpu: no TPU", lines[0]), out.stderr
    assert out.stdout == "" and os.listdir(tmp_path) == []


# ------------------------------------------------------------ errors while running


@pytest.mark.parametrize("error", [
    TrainingDiverged("level 1: the training loss became nan"),
    fileio.DamagedFileError("/x/level_1/mask.npz", "not a readable .npz archive"),
    fileio.StorageFullError("/x/checkpoints/00000008.npz", "No space left on device"),
    CheckpointError("No checkpoint at '/x/checkpoints/00000008.npz'."),
    MaskError("Masks name unknown layers ['fc9']"),
    HparamError("TrainingHparams.lr=0 is invalid", "TrainingHparams", "lr", 0),
], ids=lambda e: type(e).__name__)
def test_exit_on_run_error_is_one_line_with_the_status_of_its_base(capsys, error):
    """tflth's errors are one line whenever raised; a user's input (InputError) exits 2,
    anything else of tflth's (RunError) 1."""
    def boom():
        raise error

    with pytest.raises(SystemExit) as info:
        harness.exit_on_run_error(boom)
    err = capsys.readouterr().err
    expected = 2 if isinstance(error, InputError) else 1
    assert isinstance(error, (InputError, RunError)) and not (isinstance(error, InputError) and isinstance(error, RunError))
    message = harness.flag_message(error) if isinstance(error, HparamError) else str(error)
    assert info.value.code == expected and err.count("\n") == 1 and err.endswith(f": error: {message}\n"), err


@pytest.mark.parametrize("error", [ValueError("numpy says no"), KeyError("x"), RuntimeError("a bug")],
                         ids=lambda e: type(e).__name__)
def test_other_exceptions_are_bugs_with_their_traceback(error):
    """Only tflth's own errors are one line: anything else propagates (traceback, exit 1)."""
    def boom():
        raise error

    with pytest.raises(type(error)):
        harness.exit_on_run_error(boom)
    assert harness.exit_on_run_error(lambda x: x + 1, 1) == 2


def test_damaged_state_is_never_a_usage_error(tmp_path):
    """prepare_or_fail reports ValueErrors as usage errors (exit 2): a damaged checkpoint
    or mask file must not be one (it exits 1, naming the file)."""
    from tflth.masking import Masks

    assert not issubclass(CheckpointError, ValueError) and issubclass(CheckpointError, fileio.RunFileError)
    np.savez(tmp_path / "mask.npz", fc1=np.full((2, 2), 0.5))
    with pytest.raises(fileio.DamagedFileError, match="mask.npz is damaged .*values other than 0/1"):
        Masks.load(tmp_path / "mask.npz")


@pytest.fixture(scope="module")
def finished_experiment(data_path, tmp_path_factory):
    """A finished 2-level IMP experiment (built once); tests damage copies of it."""
    runs = tmp_path_factory.mktemp("experiment") / "runs"
    with flagsaver.flagsaver(**dict(PRUNE_TINY, data_dir=data_path, output_dir=str(runs))):
        prune_cli.main(["prune"])
    experiments = glob.glob(str(runs / "lottery_*"))
    assert len(experiments) == 1
    return runs


def _level_dir(experiment, level):
    found = [r for r, dirs, _ in os.walk(experiment) if os.path.basename(r) == f"level_{level}"]
    assert len(found) == 1, found
    return found[0]


def _final_checkpoint(run_dir):
    ckpt_dir = os.path.join(run_dir, "checkpoints")
    return checkpoint.path_for(ckpt_dir, checkpoint.latest(ckpt_dir))


# What to damage, and what to delete so the rerun must read it.
DAMAGE = {
    "mask": lambda exp: (os.path.join(_level_dir(exp, 1), "mask.npz"), []),
    "checkpoint": lambda exp: (_final_checkpoint(_level_dir(exp, 1)), [_level_dir(exp, 2)]),
    "result": lambda exp: (os.path.join(_level_dir(exp, 1), "result.json"), []),
    "density": lambda exp: (os.path.join(_level_dir(exp, 1), "density.json"), []),
    "hparams": lambda exp: (os.path.join(exp, "hparams.json"), []),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damaged_state_file_is_one_line_exit_1_and_nothing_changes(finished_experiment, data_path, tmp_path, kind):
    runs = tmp_path / "runs"
    shutil.copytree(finished_experiment, runs)
    experiment = glob.glob(str(runs / "lottery_*"))[0]
    damaged, remove = DAMAGE[kind](experiment)
    for path in remove:
        shutil.rmtree(path)
    with open(damaged, "wb") as f:
        f.write(b"\x00garbage, not what tflth wrote\xff")
    before = _files(runs)
    out = subprocess.run([sys.executable, PRUNE, *_argv(dict(PRUNE_TINY, data_dir=data_path, output_dir=runs))],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = _error_lines(out.stderr)
    named = os.path.relpath(damaged, runs)  # lottery_<hash>/.../file
    assert len(errors) == 1 and errors[0].startswith("prune.py: error: ") and named in errors[0], out.stderr
    assert [line for line in out.stderr.splitlines() if named in line] == errors, out.stderr
    assert "damaged" in errors[0]
    assert _files(runs) == before


def _fill_disk_at_third_save(monkeypatch):
    """numpy.savez (checkpoints; masks are compressed) fails half-way on its third call."""
    real_savez, saves = np.savez, []

    def savez(file, *args, **arrays):
        saves.append(file)
        if len(saves) == 3:
            file.write(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_savez(file, *args, **arrays)

    monkeypatch.setattr(fileio.np, "savez", savez)


def _train_until_disk_full(data_path, output_dir, monkeypatch):
    """bin/train's main with checkpoints at steps 0, 4 and 8, the one at 8 finding the disk
    full; returns ``(exit status, stderr, checkpoint directory)``."""
    _fill_disk_at_third_save(monkeypatch)
    with flagsaver.flagsaver(**dict(TINY, data_dir=data_path, output_dir=str(output_dir), checkpoint_every="4it")):
        with pytest.raises(SystemExit) as info:
            train_cli.main(["train"])
    return info.value.code, glob.glob(str(output_dir / "*" / "checkpoints"))[0]


def test_disk_full_while_checkpointing_is_one_line_exit_1(data_path, tmp_path, capsys, monkeypatch):
    status, ckpt_dir = _train_until_disk_full(data_path, tmp_path, monkeypatch)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert status == 1 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert ": error: " in err and f"{ckpt_dir} is full (No space left on device)" in err, err
    assert "run_dir=" not in captured.out
    steps = checkpoint.list_steps(ckpt_dir)
    assert steps and steps[-1] < 8  # the one at 8 never completed
    step, weights, _ = checkpoint.load(checkpoint.path_for(ckpt_dir, steps[-1]))  # complete, loads
    assert step == steps[-1] and weights
    assert not [f for _, _, files in os.walk(tmp_path) for f in files if f.startswith(fileio.TMP_PREFIX)]
    assert not os.path.exists(os.path.join(os.path.dirname(ckpt_dir), "result.json"))


def test_disk_full_keeps_the_last_complete_checkpoint(data_path, tmp_path, capsys, monkeypatch):
    _, ckpt_dir = _train_until_disk_full(data_path, tmp_path, monkeypatch)
    assert checkpoint.list_steps(ckpt_dir) == [0, 4]

"""Inputs that used to pass validation and fail late, applied as rules to every binary:
non-finite float flags, unusable output directories, warmups longer than training, a
stability noise that cannot make the copies differ, a bounded interpolation grid;
``--deterministic`` is part of a run's name; one 100 % progress line per training."""

import logging
import os
import re

import pytest
from absl import flags
from absl.testing import flagsaver

from tflth.cli import flags as tflags  # noqa: F401  (defines the flags)
from tflth.cli import harness
from tflth.runs.dirs import output_dir_problem
from tflth.cli import prune as prune_cli
from tflth.cli import report as report_cli
from tflth.cli import stability as stability_cli
from tflth.cli import train as train_cli

from helpers import write_synthetic_npz
from test_cli_train import _snapshot

TINY = dict(model="lenet_32_16", dataset="mnist", batch_size=32, training_steps="16it", eval_every="8it",
            checkpoint_every="8it")
BINARIES = {
    "train": (train_cli, {}),
    "prune": (prune_cli, dict(levels="1", rewind_step="0it", pruning_fraction=0.5, pruning_scope="global")),
    "stability": (stability_cli, dict(rewind_steps=["0it"], pairs=1, interpolation_points=3, train_examples=32,
                                      levels=None, controls=[], experiment=None, shard="1/1")),
}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


def _fails_in_one_line(capsys, main, name):
    with pytest.raises(SystemExit) as info:
        main([name])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------ output directories

def _output_dir(tmp_path, case):
    (tmp_path / "a_file").write_text("a user's file\n")
    return {"file": str(tmp_path / "a_file"), "under_file": str(tmp_path / "a_file" / "runs"),
            "proc": "/proc/tflth_runs"}[case]


@pytest.mark.parametrize("case", ["file", "under_file", "proc"])
@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_unusable_output_dir_is_one_line_exit_2_nothing_written(data_path, tmp_path, capsys, binary, case):
    module, extra = BINARIES[binary]
    output_dir = _output_dir(tmp_path, case)
    before = _snapshot(tmp_path)
    with flagsaver.flagsaver(data_dir=data_path, output_dir=output_dir, **TINY, **extra):
        err = _fails_in_one_line(capsys, module.main, binary)
    expected = {"file": "is a file, not a directory", "under_file": "is a file, not a directory",
                "proc": "cannot be written: no directory can be made in /proc"}[case]
    assert err.startswith(f"{binary}: error: --output_dir={output_dir} ") or f"--output_dir={output_dir} " in err, err
    assert expected in err, err
    assert _snapshot(tmp_path) == before and not os.path.exists("/proc/tflth_runs")


@pytest.mark.parametrize("case", ["file", "proc"])
def test_unusable_report_dir_is_one_line_exit_2(tmp_path, capsys, case):
    report_dir = _output_dir(tmp_path, case)
    before = _snapshot(tmp_path)
    with flagsaver.flagsaver(experiments=[str(tmp_path)], sweeps=[], labels=[], report_dir=report_dir):
        err = _fails_in_one_line(capsys, report_cli.main, "report")
    assert f"--report_dir={report_dir} " in err and ("is a file" in err or "cannot be written" in err), err
    assert _snapshot(tmp_path) == before


def test_an_output_dir_that_can_be_made_is_fine(tmp_path):
    assert output_dir_problem(tmp_path / "new" / "deeper") is None
    assert output_dir_problem(tmp_path) is None
    assert os.listdir(tmp_path) == []  # the probe left nothing behind


# ------------------------------------------------------------------ non-finite floats

def _float_flags():
    return [f.name for f in harness.own_flags() if isinstance(f.parser, flags.FloatParser)]


def test_every_float_flag_is_checked():
    assert {"lr", "momentum", "weight_decay", "gamma", "pruning_fraction"} <= set(_float_flags())


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
@pytest.mark.parametrize("name", ["lr", "momentum", "weight_decay", "gamma", "pruning_fraction"])
def test_non_finite_float_flag_is_one_line_exit_2(capsys, name, value):
    with flagsaver.flagsaver():
        with pytest.raises(SystemExit) as info:
            harness.parse_flags_or_fail(["prog", f"--{name}={value}"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert re.search(rf"--{name}=(-?inf|nan) is invalid: expected a finite number", err), err


def test_parse_accepts_finite_floats():
    with flagsaver.flagsaver():
        assert harness.parse_flags_or_fail(["prog", "--lr=0.5", "--momentum=0.9"]) == ["prog"]
        assert flags.FLAGS.lr == 0.5


@pytest.mark.parametrize("alpha_range", [["-inf", "1"], ["0", "inf"], ["0", "1e400"], ["nan", "1"]])
def test_non_finite_alpha_range_fails_before_training(data_path, tmp_path, capsys, alpha_range):
    _, extra = BINARIES["stability"]
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), **TINY,
                             **dict(extra, alpha_range=alpha_range)):
        err = _fails_in_one_line(capsys, stability_cli.main, "stability")
    assert re.search(r"--alpha_range=\S+ is invalid: expected two finite numbers low,high", err), err
    assert os.listdir(tmp_path) == []


def test_interpolation_points_are_bounded_with_a_reason(data_path, tmp_path, capsys):
    _, extra = BINARIES["stability"]
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), **TINY,
                             **dict(extra, interpolation_points=1_000_000_000)):
        err = _fails_in_one_line(capsys, stability_cli.main, "stability")
    assert "--interpolation_points=1000000000 is invalid: expected at most 1000: each point is one evaluation" in err
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ schedules and noise

@pytest.mark.parametrize("binary", sorted(BINARIES))
def test_warmup_longer_than_training_is_one_line_exit_2(data_path, tmp_path, capsys, binary):
    module, extra = BINARIES[binary]
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), warmup="99999ep", **TINY, **extra):
        err = _fails_in_one_line(capsys, module.main, binary)
    assert re.search(r"--warmup=99999ep is iteration \d+, past the end of training \(iteration 16\)", err), err
    assert os.listdir(tmp_path) == []


def test_warmup_of_the_whole_training_is_fine(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), warmup="16it", **TINY):
        train_cli.main(["train"])
    assert "step=16" in capsys.readouterr().out


def test_augment_noise_without_augmentation_is_refused(data_path, tmp_path, capsys):
    _, extra = BINARIES["stability"]
    with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), noise="augment", **TINY, **extra):
        err = _fails_in_one_line(capsys, stability_cli.main, "stability")
    assert "--noise=augment cannot make the copies differ: mnist is trained without augmentation" in err, err
    assert os.listdir(tmp_path) == []


def test_augment_noise_with_augmentation_switched_on_is_accepted(data_path):
    from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
    from tflth.stability.sweep import StabilityHparams, StabilityJob

    run = RunHparams(DatasetHparams("mnist", augment=True), ModelHparams("lenet_32_16"),
                     TrainingHparams(batch_size=32, training_steps="16it"))
    job = StabilityJob(run=run, stability=StabilityHparams(noise="augment"), data_dir=data_path)
    assert job.prepare().name == "mnist"


# ------------------------------------------------------------------ --deterministic

def test_deterministic_is_part_of_the_run_name_and_recorded(data_path, tmp_path, capsys):
    runs = {}
    for deterministic in (None, True):
        with flagsaver.flagsaver(data_dir=data_path, output_dir=str(tmp_path), deterministic=deterministic, **TINY):
            job = train_cli.job_from_flags()
        runs[deterministic] = job.run_dir
        assert job.hparams.training.deterministic is bool(deterministic)
    assert runs[None] != runs[True]
    from tflth.hparams import RunHparams, TrainingHparams
    from tflth.runs.naming import run_hash

    assert run_hash(RunHparams()) == run_hash(RunHparams(training=TrainingHparams(deterministic=False)))


# ------------------------------------------------------------------ progress lines

def test_one_progress_line_at_the_end_of_a_training(data_path, tmp_path, caplog):
    from tflth import data as data_lib
    from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
    from tflth.training import Trainer

    hp = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                    TrainingHparams(batch_size=8, training_steps="30it"))
    trainer = Trainer(hp, dataset=data_lib.load("mnist", data_path))
    with caplog.at_level(logging.INFO):
        trainer.train(str(tmp_path / "run"), eval_every="10it", progress_interval=0.0)
    final = [r.getMessage() for r in caplog.records if "(100.0%)" in r.getMessage()]
    assert len(final) == 1, final
    assert "step 30/30" in final[0]

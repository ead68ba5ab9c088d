"""Issue 28, items 8 and 9 at the binaries' edge: only tflth's own input errors are one
line (exit 2); a bug — in tflth, a zoo model, a user's --model function — keeps its
traceback (exit 1); settings files are read whole before anything trains."""

import json
import os
import subprocess
import sys

import pytest
from absl.testing import flagsaver

from tflth import fileio
from tflth.cli import harness
from tflth.cli import train as train_cli
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.stability.sweep import StabilityJob

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "bin", "train.py")
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
TINY = ["--dataset=mnist", "--batch_size=32", "--training_steps=8it", "--eval_every=8it", "--checkpoint_every=8it"]

USER_MODEL = '''import keras


def build(seed, input_shape, num_classes):
    width = 0
    if width == 0:
        raise ValueError("a bug in the user's model function")
    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(), keras.layers.Dense(num_classes)])
'''


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "synthetic.npz")
    write_synthetic_npz(path)
    return path


def _train(args, tmp_path):
    return subprocess.run([sys.executable, TRAIN, *TINY, f"--output_dir={tmp_path / 'runs'}", *args], env=ENV,
                          capture_output=True, text=True, timeout=300)


def test_a_bug_in_the_users_model_function_shows_its_traceback_exit_1(npz, tmp_path):
    (tmp_path / "mymodel.py").write_text(USER_MODEL)
    out = _train([f"--model={tmp_path / 'mymodel.py'}:build", f"--data_dir={npz}"], tmp_path)
    assert out.returncode == 1, out.stderr[-3000:]
    assert "Traceback" in out.stderr and 'mymodel.py", line 7, in build' in out.stderr, out.stderr[-3000:]
    assert "ValueError: a bug in the user's model function" in out.stderr


def test_a_usage_error_stays_one_line_exit_2(npz, tmp_path):
    out = _train(["--model=lenet_32_16", f"--data_dir={npz}", "--lr=-1"], tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "--lr=-1.0 is invalid" in lines[0], out.stderr[-3000:]
    assert not os.path.exists(tmp_path / "runs")


def test_a_bug_in_a_zoo_factory_is_not_a_usage_error(npz, tmp_path, monkeypatch):
    """Before, prepare_or_fail turned any ValueError into a one-line usage error."""
    from tflth.models import registry

    def broken(*args, **kwargs):
        raise ValueError("a bug inside the zoo")

    monkeypatch.setattr(registry, "get", broken)
    with flagsaver.flagsaver(model="lenet_32_16", dataset="mnist", data_dir=npz, batch_size=32,
                             training_steps="8it", output_dir=str(tmp_path / "runs"), prune=["*/kernel"]):
        with pytest.raises(ValueError, match="a bug inside the zoo"):
            harness.prepare_or_fail(train_cli.job_from_flags)


def test_prepare_or_fail_lets_other_exceptions_through_and_reports_tflths_own():
    class Job:
        def __init__(self, error):
            self.error = error

        def prepare(self):
            raise self.error

    with pytest.raises(KeyError):
        harness.prepare_or_fail(lambda: Job(KeyError("numpy or keras said so")))
    with pytest.raises(SystemExit) as info:
        harness.prepare_or_fail(lambda: Job(HparamError("TrainingHparams.lr=0 is invalid", "TrainingHparams", "lr")))
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        harness.prepare_or_fail(lambda: Job(fileio.DamagedFileError("/x/hparams.json", "not JSON")))
    assert info.value.code == 1


def test_run_hparams_from_dict_refuses_missing_groups_and_unknown_fields():
    full = RunHparams().to_dict()
    assert RunHparams.from_dict(full) == RunHparams()
    for bad, pattern in [({"dataset": full["dataset"], "model": full["model"]}, r"^training: expected"),
                         (dict(full, training=dict(full["training"], lrate=0.1)), r"unknown TrainingHparams field"),
                         (dict(full, model="lenet"), r"^model: expected")]:
        with pytest.raises(HparamError, match=pattern):
            RunHparams.from_dict(bad)


def test_a_renamed_pruning_key_is_a_damaged_file_before_anything_trains(npz, tmp_path):
    run = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                     TrainingHparams(batch_size=32, training_steps="8it"))
    experiment = tmp_path / "lottery_x"
    experiment.mkdir()
    stored = {"run": run.to_dict(), "pruning": {"fractoin": 0.2, "scope": "global", "strategy": "magnitude"},
              "rewind_step": "0it", "reset": "rewind"}
    (experiment / "hparams.json").write_text(json.dumps(stored))
    job = StabilityJob(run, experiment=str(experiment), data_dir=npz, output_dir=str(tmp_path / "runs"))
    with pytest.raises(fileio.DamagedFileError, match=r"hparams.json is damaged \(pruning: unknown PruningHparams field\(s\) \['fractoin'\]"):
        job.prepare()
    assert not os.path.exists(tmp_path / "runs")

"""Run names survive new hyperparameters; tflth 0.1's names are found and reused."""

import dataclasses
import json
import os

import pytest

from tflth import hparams, presets
from tflth.runs import naming
from tflth.hparams import HparamError, PruningHparams, RunHparams, TrainingHparams
from tflth.lottery import LotteryHparams, LotteryJob
from tflth.runs.dirs import open_run_dir
from tflth.training.job import TrainJob

LENET = presets.get("lenet_300_100_mnist")
RESNET = presets.get("resnet20_cifar10")


def _resnet_run():
    run = RESNET.run
    return dataclasses.replace(run, model=dataclasses.replace(run.model, width=8),
                               training=dataclasses.replace(run.training, training_steps="2000it", seed=3))


def _names(run_cls=None):
    lenet = LENET.run
    resnet = _resnet_run()
    return {
        "train_lenet": os.path.basename(TrainJob(lenet, output_dir="o").run_dir),
        "train_resnet": os.path.basename(TrainJob(resnet, output_dir="o").run_dir),
        "lottery_lenet": os.path.basename(LotteryJob(lenet, LENET.pruning, LotteryHparams(rewind_step="0it"),
                                                     output_dir="o").experiment_dir),
        "lottery_resnet": os.path.basename(LotteryJob(resnet, RESNET.pruning, LotteryHparams(rewind_step="500it"),
                                                      output_dir="o").experiment_dir),
    }


# Changing one of these renames users' runs: a rerun would retrain from scratch. If that is
# deliberate (a changed default), say so in BUILD.md and update the pins.
PINNED = {
    "train_lenet": "train_70cd2887ce2d",
    "train_resnet": "train_809d5d9ed81d",
    "lottery_lenet": "lottery_14e44c7f351a",
    "lottery_resnet": "lottery_d2ab6a2a5ea6",
}
# The names tflth 0.1 gave the same runs (every field hashed), computed with that release.
PINNED_V1 = {
    "train_lenet": "train_775ffb40667c",
    "train_resnet": "train_de520fbc1c58",
    "lottery_lenet": "lottery_c29ddf7b34bf",
    "lottery_resnet": "lottery_3b38e154a6b9",
}


def test_pinned_run_names():
    assert _names() == PINNED


def test_legacy_names_are_tflth_0_1s():
    lenet, resnet = LENET.run, _resnet_run()
    assert "train_" + naming.legacy_hash(lenet.to_dict()) == PINNED_V1["train_lenet"]
    assert "train_" + naming.legacy_hash(resnet.to_dict()) == PINNED_V1["train_resnet"]
    job = LotteryJob(lenet, LENET.pruning, LotteryHparams(rewind_step="0it"))
    assert "lottery_" + naming.legacy_hash(job.hparams_dict()) == PINNED_V1["lottery_lenet"]


def test_a_new_field_with_a_default_keeps_every_name():
    @dataclasses.dataclass(frozen=True)
    class NewTraining(TrainingHparams):
        label_smoothing: float = 0.0

    @dataclasses.dataclass(frozen=True)
    class NewPruning(PruningHparams):
        block: str = "none"

    old_run, new_run = LENET.run, dataclasses.replace(
        LENET.run, training=NewTraining(**dataclasses.asdict(LENET.run.training)))
    assert naming.run_hash(new_run) == naming.run_hash(old_run)
    new_pruning = NewPruning(**{f.name: getattr(LENET.pruning, f.name) for f in dataclasses.fields(PruningHparams)})
    assert (LotteryJob(new_run, new_pruning).experiment_dir == LotteryJob(old_run, LENET.pruning).experiment_dir)
    # ... and a non-default value of the new field is a new run.
    other = dataclasses.replace(new_run, training=dataclasses.replace(new_run.training, label_smoothing=0.1))
    assert naming.run_hash(other) != naming.run_hash(old_run)


def test_only_non_default_values_name_a_run():
    assert naming.identity(RunHparams()) == {}
    run = RunHparams(training=TrainingHparams(lr=0.05))
    assert naming.identity(run) == {"training": {"lr": 0.05}}


def test_a_run_made_under_the_old_names_is_found_and_reused(tmp_path, caplog):
    job = TrainJob(LENET.run, output_dir=str(tmp_path))
    old = tmp_path / PINNED_V1["train_lenet"]
    old.mkdir()
    assert job.run_dir == str(old)
    (tmp_path / PINNED["train_lenet"]).mkdir()  # once today's name exists, it wins
    assert job.run_dir == str(tmp_path / PINNED["train_lenet"])


def test_hparams_json_compares_non_default_values(tmp_path):
    run = RunHparams(training=TrainingHparams(lr=0.05))
    full = run.to_dict()
    open_run_dir(str(tmp_path), full, hparams.defaults_dict(RunHparams))
    # A file written before a field existed (the field missing) is the same run.
    stored = json.loads((tmp_path / "hparams.json").read_text())
    del stored["training"]["augment_seed"]
    (tmp_path / "hparams.json").write_text(json.dumps(stored))
    open_run_dir(str(tmp_path), full, hparams.defaults_dict(RunHparams))
    with pytest.raises(HparamError, match="other hyperparameters"):
        open_run_dir(str(tmp_path), RunHparams(training=TrainingHparams(lr=0.01)).to_dict(),
                     hparams.defaults_dict(RunHparams))


def test_rewind_optimizer_state_keeps_every_name_and_fresh_is_another_experiment(tmp_path):
    """The default (state) names experiments, writes hparams.json and finds tflth 0.1's
    directories as before the field existed; fresh is a new name that never reuses one."""
    lenet = LENET.run

    def job(**lottery):
        return LotteryJob(lenet, LENET.pruning, LotteryHparams(rewind_step="0it", **lottery), output_dir=str(tmp_path))

    state, fresh = job(rewind_optimizer="state"), job(rewind_optimizer="fresh")
    assert os.path.basename(state.experiment_dir) == PINNED["lottery_lenet"]
    assert "rewind_optimizer" not in state.hparams_dict() and state.label == job().label
    assert "lottery_" + naming.legacy_hash(state.hparams_dict()) == PINNED_V1["lottery_lenet"]
    assert fresh.hparams_dict()["rewind_optimizer"] == "fresh"
    assert os.path.basename(fresh.experiment_dir) not in (PINNED["lottery_lenet"], PINNED_V1["lottery_lenet"])
    (tmp_path / PINNED_V1["lottery_lenet"]).mkdir()  # a tflth 0.1 experiment (state: the only kind it had)
    assert state.experiment_dir == str(tmp_path / PINNED_V1["lottery_lenet"])
    assert os.path.basename(fresh.experiment_dir) != PINNED_V1["lottery_lenet"]

"""Step notation, hyperparameter validation and hashing, LR schedule, presets."""

import dataclasses

import pytest

from tflth import presets, steps
from tflth.hparams import HparamError, PruningHparams, RunHparams, TrainingHparams
from tflth.runs.naming import run_hash
from tflth.training.schedule import StepSchedule


@pytest.mark.parametrize("text,expected", [("500it", 500), ("2ep", 2000), ("2ep100it", 2100), ("0it", 0), ("0ep", 0)])
def test_step_notation(text, expected):
    assert steps.to_iterations(text, 1000) == expected


@pytest.mark.parametrize("bad", ["abc", "", "10", "2it3ep", "-5it", "1.5ep", "ep", "it"])
def test_bad_step_names_the_string(bad):
    with pytest.raises(steps.StepError, match=f"Invalid step '{bad}'"):
        steps.parse(bad)


def test_format_step():
    assert steps.format_step(2000, 1000) == "2ep"
    assert steps.format_step(2100, 1000) == "2100it"


@pytest.mark.parametrize("field,value,pattern", [
    ("lr", -0.1, r"lr=-0.1 is invalid: expected a finite number > 0"),
    ("optimizer", "rmsprop", r"optimizer='rmsprop'.*\['sgd', 'adam', 'adamw'\]"),
    ("training_steps", "abc", r"training_steps: Invalid step 'abc'"),
    ("momentum", 1.0, r"momentum=1.0"),
    ("batch_size", 0, r"batch_size=0"),
    ("milestones", ("10x",), r"milestones: Invalid step '10x'"),
    ("training_steps", "0it", r"training_steps='0it'"),
])
def test_training_hparams_validation(field, value, pattern):
    with pytest.raises(HparamError, match=pattern):
        TrainingHparams(**{field: value})


def test_pruning_hparams_validation():
    assert PruningHparams(layer_rates={"output": 0.1}).layer_rates == (("output", 0.1),)
    for kwargs in ({"fraction": 0.0}, {"fraction": 1.0}, {"scope": "neuron"}, {"layer_rates": (("x", 1.0),)}):
        with pytest.raises(HparamError):
            PruningHparams(**kwargs)


def test_run_hash_is_stable_and_sensitive():
    a = RunHparams()
    assert run_hash(a) == run_hash(RunHparams.from_dict(a.to_dict()))
    b = dataclasses.replace(a, training=dataclasses.replace(a.training, data_order_seed=1))
    assert run_hash(a) != run_hash(b)
    assert len(run_hash(a)) == 12


def test_schedule_hand_computed():
    s = StepSchedule(0.1, milestones=(10, 20), gamma=0.1, warmup_steps=4)
    expected = {0: 0.025, 1: 0.05, 3: 0.1, 9: 0.1, 10: 0.01, 19: 0.01, 20: 0.001}
    for step, lr in expected.items():
        assert s.value_at(step) == pytest.approx(lr)
        assert float(s(step)) == pytest.approx(lr, rel=1e-6)


def test_presets_follow_the_paper_table():
    lenet = presets.get("lenet_300_100_mnist")
    t = lenet.run.training
    assert (t.optimizer, t.lr, t.batch_size, t.training_steps) == ("adam", 1.2e-3, 60, "24000it")
    r = presets.get("resnet20_cifar10").run.training
    assert (r.optimizer, r.lr, r.momentum, r.weight_decay, r.milestones, r.batch_size, r.training_steps) == (
        "sgd", 0.1, 0.9, 1e-4, ("32000it", "48000it"), 128, "63000it")
    assert presets.get("resnet20_warmup_cifar10").run.training.warmup == "30000it"
    assert presets.get("resnet50_imagenet").run.training.batch_size == 1024
    with pytest.raises(HparamError, match=r"Unknown preset 'nope'.*lenet_300_100_mnist"):
        presets.get("nope")

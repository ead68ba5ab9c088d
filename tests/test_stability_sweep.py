"""Stability sweeps and curves: hand-computed barriers, exact endpoints, identical copies, BN."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import tflth
from tflth import data as data_lib
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.stability import curve as curve_lib
from tflth.stability.evaluate import CurveEvaluator
from tflth.stability.sweep import StabilityHparams, StabilityJob
from tflth.training import Trainer

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz", num_test=400)


def _run(**training):
    t = dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="24it")
    t.update(training)
    return RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"), TrainingHparams(**t))


# --------------------------------------------------------------- a constructed pair

def _two_unit_net():
    """Flatten → fc1 (2 ReLU units, kernel 0: only its bias acts) → output (10 logits)."""
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Dense(2, activation="relu", name="fc1")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(10, name="output")(h))


def _pair(trainer):
    """Copy a: bias (1, 0) feeds class 0 through unit 0; copy b: (0, 1) through unit 1.
    Class 1's logit is 0.6 in both. Class 0's logit along the line is (1-α)² + α², below
    0.6 exactly for α in (0.2764, 0.7236): there every example is called class 1."""
    base = trainer.get_weights()
    a, b = dict(base), dict(base)
    out_bias = np.full(10, -10.0, np.float32)
    out_bias[:2] = 0.0, 0.6
    for w, unit in ((a, 0), (b, 1)):
        w["fc1/kernel"] = np.zeros_like(base["fc1/kernel"])
        w["fc1/bias"] = np.eye(2, dtype=np.float32)[unit]
        kernel = np.zeros_like(base["output/kernel"])
        kernel[unit, 0] = 1.0
        w["output/kernel"] = kernel
        w["output/bias"] = out_bias
    return a, b


def test_constructed_pair_gives_the_hand_computed_barrier():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8)
    y = np.array([0] * 30 + [1] * 10)  # 3/4 class 0, 1/4 class 1
    dataset = data_lib.from_arrays("mnist", x, y, x, y)
    trainer = Trainer(_run(), dataset=dataset, model=_two_unit_net())
    a, b = _pair(trainer)
    grid = curve_lib.alphas(30)
    result = CurveEvaluator(trainer, train_examples=40).curve(a, b, grid)
    inside = (grid > 0.2764) & (grid < 0.7236)
    expected = np.where(inside, 0.75, 0.25)  # the class-0 examples flip to wrong
    np.testing.assert_allclose(result["test"]["errors"], expected, atol=1e-7)
    assert result["test"]["instability"] == pytest.approx(0.5)
    assert result["train"]["instability"] == pytest.approx(0.5)
    assert result["disagreement"] == 0.0  # both endpoints call everything class 0
    # The loss barrier by hand: mean cross-entropy over the 10 logits at each α.
    def loss(alpha):
        logits = np.full(10, -10.0)
        logits[1] = 0.6
        logits[0] = (1 - alpha) ** 2 + alpha ** 2
        lse = np.log(np.exp(logits).sum())
        return 0.75 * (lse - logits[0]) + 0.25 * (lse - logits[1])
    losses = [loss(t) for t in grid]
    assert result["test"]["loss_barrier"] == pytest.approx(max(losses) - (losses[0] + losses[-1]) / 2, rel=1e-5)
    # Identical copies: a flat curve, instability exactly 0.
    flat = CurveEvaluator(trainer, train_examples=0).curve(a, a, grid)
    assert flat["test"]["instability"] == 0.0 and len(set(flat["test"]["errors"])) == 1


def test_interpolating_different_masks_is_refused():
    dataset = data_lib.from_arrays("mnist", np.zeros((4, 28, 28), np.uint8), np.zeros(4, int),
                                   np.zeros((4, 28, 28), np.uint8), np.zeros(4, int))
    trainer = Trainer(_run(), dataset=dataset, model=_two_unit_net())
    keep = np.ones(trainer.get_weights()["fc1/kernel"].shape, bool)
    keep[0] = False
    tflth.masking.apply_masks(trainer.model, {"fc1/kernel": keep, "output/kernel": np.ones((2, 10))})
    a = trainer.get_weights()
    b = dict(a, **{"fc1/kernel": np.ones_like(a["fc1/kernel"])})  # another ticket: nonzero where a's prunes
    with pytest.raises(ValueError, match="different masks"):
        CurveEvaluator(trainer, train_examples=0).curve(a, b, [0.0, 1.0])


# --------------------------------------------------------------- BatchNorm endpoints

def test_curve_endpoints_are_plain_evaluations_and_recomputed_bn_is_close(data_path):
    dataset = data_lib.load("mnist", data_dir=data_path)
    hp = RunHparams(DatasetHparams("mnist"), ModelHparams("resnet8", width=4),
                    TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="120it"))
    trainer = Trainer(hp, dataset=dataset)
    trainer.train(data_order_seed=1)
    a = trainer.get_weights()
    own_loss, own_acc = trainer.evaluate("test")
    trainer.train(end_step=240, data_order_seed=2)  # a second, different network
    b = trainer.get_weights()
    for bn in ("recompute", "interpolate"):
        evaluator = CurveEvaluator(trainer, train_examples=0, bn=bn, bn_batches=10)
        result = evaluator.curve(a, b, [0.0, 0.5, 1.0])
        for alpha, w in ((0.0, a), (1.0, b)):
            point = evaluator.point(w)  # a plain evaluation of the copy under the same BN treatment
            assert result["points"][[0.0, 0.5, 1.0].index(alpha)]["test_error"] == point["test_error"]
            assert result["points"][[0.0, 0.5, 1.0].index(alpha)]["test_loss"] == point["test_loss"]
        assert result["bn"] == bn and result["has_batchnorm"]
    # Recomputed statistics at the endpoint: within 0.5 points of the copy's own moving statistics.
    recomputed = CurveEvaluator(trainer, train_examples=0, bn="recompute", bn_batches=10).point(a)
    assert abs((1 - recomputed["test_error"]) - own_acc) <= 0.005


# --------------------------------------------------------------- copies

SAME_SEEDS = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
    from tflth.stability.sweep import StabilityHparams, StabilityJob
    out, data = sys.argv[1], sys.argv[2]
    run = RunHparams(DatasetHparams("mnist", augment=True), ModelHparams("lenet_32_16"),
                     TrainingHparams(optimizer="adam", lr=1e-3, batch_size=32, training_steps="24it"))
    for noise in ("none", "data_order_and_augment"):
        job = StabilityJob(run, StabilityHparams(rewind_steps=("6it",), noise=noise, interpolation_points=5,
                                                 train_examples=64), output_dir=out, data_dir=data,
                           checkpoint_every="8it")
        (pair,) = job.run_all()
        print(json.dumps([noise, pair["distances"]["total"]["l2"], pair["curve"]["test"]["instability"],
                          pair["curve"]["train"]["instability"], pair["copies"]["a"]["data_order_seed"],
                          pair["copies"]["b"]["data_order_seed"]]))
""")


def test_copies_with_the_same_seeds_are_bit_identical(data_path, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SAME_SEEDS, str(tmp_path), data_path], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json
    same, other = [json.loads(line) for line in proc.stdout.strip().splitlines()[-2:]]
    assert same[0] == "none" and same[1:4] == [0.0, 0.0, 0.0] and same[4] == same[5]
    assert other[1] > 0 and other[4] != other[5]


def test_sweep_validation_names_the_field(data_path, tmp_path):
    """The library names the dataclass field (``HparamError.field``); the binaries map it to
    their flag (tests/test_cli_stability.py)."""
    for kwargs, pattern in [({"rewind_steps": ("foo",)}, r"^StabilityHparams\.rewind_steps: Invalid step 'foo'"),
                            ({"interpolation_points": 1}, r"^StabilityHparams\.interpolation_points=1 is invalid"),
                            ({"shard": (3, 2)}, r"^StabilityHparams\.shard=3/2 is invalid"),
                            ({"alpha_range": (0.2, 1.0)}, r"^StabilityHparams\.alpha_range=0.2,1.0 is invalid"),
                            ({"bn": "none"}, r"^StabilityHparams\.bn=none is invalid")]:
        with pytest.raises(HparamError, match=pattern) as caught:
            StabilityHparams(**kwargs)
        assert caught.value.owner == "StabilityHparams" and caught.value.field == next(iter(kwargs))
    with pytest.raises(HparamError, match=r"StabilityHparams\.rewind_steps=24it is iteration 24, the end of training"):
        StabilityJob(_run(), StabilityHparams(rewind_steps=("0it", "24it")), output_dir=str(tmp_path),
                     data_dir=data_path).prepare()
    with pytest.raises(HparamError, match=r"not an IMP experiment directory"):
        StabilityJob(_run(), StabilityHparams(levels=(0, 1)), experiment=str(tmp_path), output_dir=str(tmp_path),
                     data_dir=data_path).prepare()
    assert os.listdir(tmp_path) == []


def test_shards_split_the_units(tmp_path):
    job = StabilityJob(_run(), StabilityHparams(rewind_steps=("0it", "5it"), pairs=3, replicates=2))
    units = job.units([0, 5])
    assert len(units) == 12
    shards = [StabilityJob(_run(), StabilityHparams(rewind_steps=("0it", "5it"), pairs=3, replicates=2,
                                                    shard=(i, 3))).shard_units([0, 5]) for i in (1, 2, 3)]
    key = lambda u: (u.replicate, u.level, u.method, u.k, u.pair)
    assert sorted((u for s in shards for u in s), key=key) == units and all(len(s) == 4 for s in shards)


# Changing one of these renames users' sweeps (a rerun would train every copy again): see
# BUILD.md, "Run names". They are what tflth named them before per-k sweeps existed.
PINNED_SWEEPS = {"dense": "stability_7c0679d174e1", "one_mask": "stability_51c69cc6b0e7",
                 "one_mask_data_order": "stability_c89c8114909c"}


def _fake_experiments(root, fraction=None, **rewinds):
    """``{name: directory}`` of experiments holding only the hparams.json bin/prune.py writes
    for lenet_300_100_mnist (pruning ``fraction`` if given) rewound to each given step (all a
    sweep's name reads)."""
    import dataclasses

    import json

    from tflth import presets
    from tflth.lottery import LotteryHparams, LotteryJob

    lenet = presets.get("lenet_300_100_mnist")
    pruning = dataclasses.replace(lenet.pruning, fraction=fraction) if fraction else lenet.pruning
    out = {}
    for name, k in rewinds.items():
        job = LotteryJob(lenet.run, pruning, LotteryHparams(rewind_step=k), output_dir=str(root / name))
        os.makedirs(job.experiment_dir)
        with open(os.path.join(job.experiment_dir, "hparams.json"), "w") as f:
            json.dump(dict(job.hparams_dict(), label=job.label), f)
        out[name] = job.experiment_dir
    return out


def test_sweep_names_by_mask_mode(tmp_path):
    from tflth import presets

    run = presets.get("lenet_300_100_mnist").run
    one = "runs/lottery_14e44c7f351a"
    dense, single = StabilityJob(run), StabilityJob(run, experiment=[one])
    assert (dense.mask_mode, single.mask_mode, single.experiment) == ("dense", "one_mask", one)
    assert {"dense": dense.sweep.name, "one_mask": single.sweep.name,
            "one_mask_data_order": StabilityJob(run, StabilityHparams(noise="data_order"),
                                                experiment=one).sweep.name} == PINNED_SWEEPS

    e = _fake_experiments(tmp_path, a="0it", b="500it", c="2ep")
    other = _fake_experiments(tmp_path / "other", fraction=0.5, a="0it", b="500it")
    per_k = StabilityJob(run, experiment=(e["a"], e["b"]))
    assert per_k.mask_mode == "per_k" and per_k.sweep.name not in set(PINNED_SWEEPS.values())
    assert per_k.sweep.name not in {StabilityJob(run, experiment=x).sweep.name for x in (e["a"], e["b"])}
    # Another experiment of the same settings (another k) or another order: the same sweep, extended.
    assert StabilityJob(run, experiment=(e["c"], e["b"], e["a"])).sweep.name == per_k.sweep.name
    assert StabilityJob(run, StabilityHparams(noise="data_order"),
                        experiment=(e["a"], e["b"])).sweep.name != per_k.sweep.name
    assert StabilityJob(run, experiment=(other["a"], other["b"])).sweep.name != per_k.sweep.name


def _report_pair(k, experiment, dense_accuracy, mode="per_k"):
    pair = {"sweep": "stability_x", "label": "lenet", "replicate": 0, "level": 1, "method": "imp", "k": k,
            "end": 100, "k_fraction": k / 100, "pair": 0, "noise": "data_order", "density": 0.5,
            "analysis": {"bn": "recompute", "interpolation_points": 3, "alpha_range": [0, 1], "train_examples": 0,
                         "bn_batches": 2},
            "copies": {"a": {"test_accuracy": 0.9}, "b": {"test_accuracy": 0.9}},
            "distances": {"total": {"l2": 1.0, "relative": 0.5, "relative_to_displacement": 0.7, "cosine": 0.9}},
            "dense_accuracy": dense_accuracy, "mask_mode": mode, "experiment": experiment, "experiment_k": k,
            "curve": {"test": {"alphas": [0, 0.5, 1], "errors": [0.1, 0.1, 0.1], "instability": 0.0,
                               "loss_barrier": 0.0}, "disagreement": 0.0}}
    if mode is None:  # a pair.json written before mask modes were recorded
        for key in ("mask_mode", "experiment", "experiment_k"):
            del pair[key]
    return pair


def test_report_shows_the_mask_mode_and_compares_each_k_with_its_own_experiment():
    from tflth.report import stability as report

    pairs = [_report_pair(0, "lottery_a", 0.95), _report_pair(5, "lottery_b", 0.85)]
    summary = {s["k"]: s for s in report.summarize(pairs)}
    assert {k: (s["mask_mode"], s["experiment"], s["dense_accuracy"]) for k, s in summary.items()} == {
        0: ("per_k", "lottery_a", 0.95), 5: ("per_k", "lottery_b", 0.85)}
    assert "— masks: per_k (k=0it: lottery_a, k=5it: lottery_b)" in report.markdown(list(summary.values()))
    old = report.summarize([_report_pair(0, None, 0.95, mode=None), _report_pair(5, None, None, mode=None)])
    assert [s["mask_mode"] for s in old] == ["one_mask", "dense"]  # what such pairs were

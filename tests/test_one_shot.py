"""One-shot pruners at the rewind step (issue 30): each level's mask is scored once on W_k
to IMP's density schedule, then trained from W_k like an IMP level; controls and resume
work as for IMP; their settings are flags with one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tflth import data as data_lib
from tflth import pruning
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, PruningHparams, RunHparams, TrainingHparams
from tflth.lottery import LotteryHparams, LotteryJob
from tflth.masking import Masks
from tflth.training import checkpoint

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


@pytest.fixture(scope="module")
def dataset(data_path):
    return data_lib.load("mnist", data_dir=data_path)


def _job(data_path, output_dir, strategy, levels=2, controls=(), **settings):
    run = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                     TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="12it",
                                     seed=1, data_order_seed=2))
    return LotteryJob(run, PruningHparams(fraction=0.5, scope="global", strategy=strategy, **settings),
                      LotteryHparams(levels=levels, rewind_step=f"{K}it", controls=controls),
                      output_dir=str(output_dir), data_dir=data_path, eval_every="12it", checkpoint_every="4it")


def _mask(job, level, control=None):
    return Masks.load(os.path.join(job.level_dir(0, level, control), "mask.npz"))


def _kept(mask):
    return sum(int(np.sum(m)) for m in mask.values())


def test_magnitude_at_k_keeps_the_largest_of_w_k_at_imps_densities(data_path, dataset, tmp_path):
    job = _job(data_path, tmp_path, "magnitude_at_k", controls=("random_prune",))
    rows = job.run_all(dataset)
    assert [(r["level"], r["method"]) for r in rows] == [(0, "imp"), (1, "imp"), (1, "random_prune"),
                                                         (2, "imp"), (2, "random_prune")]
    step, w_k, _ = checkpoint.load(checkpoint.path_for(os.path.join(job.level_dir(0, 0), "checkpoints"), K))
    assert step == K
    one = _mask(job, 1)
    kernels = {p: np.abs(w_k[p]) for p in one}
    total = sum(v.size for v in kernels.values())
    for level in (1, 2):
        mask = _mask(job, level)
        keep = round(0.5 ** level * total)
        assert _kept(mask) == keep  # exactly IMP's density schedule, one ranking across layers
        threshold = np.sort(np.concatenate([v.ravel() for v in kernels.values()]))[::-1][keep - 1]
        for p, m in mask.items():  # the largest |W_k| survive, scored afresh (not pruned from level 1)
            assert np.all(kernels[p][m] >= threshold) and np.all(kernels[p][~m] <= threshold), p
        shuffled = _mask(job, level, "random_prune")  # the "shuffle" control: per-layer counts kept
        assert {p: int(m.sum()) for p, m in shuffled.items()} == {p: int(m.sum()) for p, m in mask.items()}
        assert any(not np.array_equal(shuffled[p], mask[p]) for p in mask)
    # each level trains from W_k ⊙ m, like IMP's rewind
    start, w_1, _ = checkpoint.load(checkpoint.path_for(os.path.join(job.level_dir(0, 1), "checkpoints"), K))
    assert start == K and all(np.array_equal(w_1[p], w_k[p] * one[p]) for p in one)
    # a rerun reads the stored masks and results: nothing trains again
    before = {level: _mask(job, level) for level in (1, 2)}
    assert job.run_all(dataset) == rows
    assert all(np.array_equal(_mask(job, level)[p], before[level][p]) for level in (1, 2) for p in before[level])


@pytest.mark.parametrize("strategy,settings", [("snip", {"snip_batches": 2}), ("grasp", {}),
                                               ("synflow", {"synflow_rounds": 5})])
def test_scored_pruners_hit_the_density_and_differ_from_magnitude(data_path, dataset, tmp_path, strategy, settings):
    job = _job(data_path, tmp_path / strategy, strategy, levels=1, **settings)
    job.run_all(dataset)
    mask = _mask(job, 1)
    total = sum(m.size for m in mask.values())
    assert _kept(mask) == round(0.5 * total)
    magnitude = _job(data_path, tmp_path / "magnitude", "magnitude_at_k", levels=1)
    magnitude.run_all(dataset)
    assert any(not np.array_equal(mask[p], _mask(magnitude, 1)[p]) for p in mask)


def test_settings_are_checked_and_belong_to_their_strategy():
    assert PruningHparams(strategy="snip", snip_batches=3).snip_batches == 3
    with pytest.raises(HparamError, match=r"^PruningHparams\.snip_batches=0 is invalid"):
        PruningHparams(strategy="snip", snip_batches=0)
    with pytest.raises(HparamError, match=r"synflow_rounds=5 has no effect with strategy 'snip'"):
        PruningHparams(strategy="snip", synflow_rounds=5)
    with pytest.raises(HparamError, match="prunes once at the rewind step"):
        pruning.pruner_for(PruningHparams(strategy="snip"))({}, {})


@pytest.mark.parametrize("flags,pattern", [(["--pruning_strategy=snip", "--snip_batches=0"],
                                            r"--snip_batches=0 is invalid"),
                                           (["--synflow_rounds=3"], r"--synflow_rounds=3 has no effect with strategy")])
def test_bad_settings_are_one_line_exit_2_nothing_written(data_path, tmp_path, flags, pattern):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "prune.py"), "--model=lenet_32_16",
                          "--dataset=mnist", f"--data_dir={data_path}", f"--output_dir={tmp_path / 'runs'}",
                          "--training_steps=8it", *flags], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-3000:]
    assert pattern.split(" is")[0].split(" has")[0] in lines[0] and __import__("re").search(pattern, lines[0])
    assert not os.path.exists(tmp_path / "runs")

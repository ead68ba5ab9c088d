"""IMP with rewinding: the reset is exact, levels resume and extend, controls are what they claim."""

import dataclasses
import json
import os

import numpy as np
import pytest

from tflth import data as data_lib
from tflth.masking import Masks
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, PruningHparams, RunHparams, TrainingHparams
from tflth.lottery import LotteryHparams, LotteryJob
from tflth.training import checkpoint

from helpers import write_synthetic_npz

KERNELS = ("fc1", "fc2", "output")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


@pytest.fixture(scope="module")
def dataset(data_path):
    return data_lib.load("mnist", data_dir=data_path)


def _job(data_path, output_dir, levels=2, reset="rewind", rewind="5it", controls=(), replicates=1, **pruning):
    run = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                     TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="16it",
                                     milestones=("12it",), seed=1, data_order_seed=2))
    return LotteryJob(run=run, pruning=PruningHparams(**(pruning or {"fraction": 0.2, "scope": "global"})),
                      lottery=LotteryHparams(levels=levels, rewind_step=rewind, reset=reset, controls=controls,
                                             replicates=replicates),
                      output_dir=str(output_dir), data_dir=data_path, eval_every="8it", checkpoint_every="4it")


def _ckpt(level_dir, step=None):
    d = os.path.join(level_dir, "checkpoints")
    return checkpoint.load(checkpoint.path_for(d, checkpoint.list_steps(d)[0] if step is None else step))


def test_rewind_reset_is_exact(data_path, dataset, tmp_path):
    job = _job(data_path, tmp_path, levels=1)
    rows = job.run_all(dataset)
    assert [(r["level"], r["method"]) for r in rows] == [(0, "imp"), (1, "imp")]
    k_step, w_k, opt_k = _ckpt(job.level_dir(0, 0), 5)
    start, w_1, opt_1 = _ckpt(job.level_dir(0, 1))
    mask = Masks.load(os.path.join(job.level_dir(0, 1), "mask.npz"))
    assert start == k_step == 5
    assert sorted(mask) == sorted(f"{l}/kernel" for l in KERNELS)  # keyed by variable path
    assert sorted(w_1) == sorted(w_k) and not any("mask" in name for name in w_1)  # masks are not weights
    for name, value in w_k.items():
        if name.endswith("/kernel"):
            m = mask[name]
            assert np.array_equal(w_1[name][m], value[m]), name  # survivors: exactly W_k
            assert np.all(w_1[name][~m] == 0.0), name  # pruned: exactly 0
        else:
            assert np.array_equal(w_1[name], value), name
    assert len(opt_1) == len(opt_k) and all(np.array_equal(a, b) for a, b in zip(opt_1, opt_k))
    # The mask came from level 0's final weights: the 20% smallest |w| across all layers went.
    _, final0, _ = _ckpt(job.level_dir(0, 0), 16)
    magnitudes = np.concatenate([np.abs(final0[f"{l}/kernel"]).ravel() for l in KERNELS])
    kept = np.concatenate([mask[f"{l}/kernel"].ravel() for l in KERNELS])
    assert kept.sum() == len(kept) - round(0.2 * len(kept))
    assert magnitudes[~kept].max() <= magnitudes[kept].min()
    _, final1, _ = _ckpt(job.level_dir(0, 1), 16)
    assert all(np.all(final1[f"{l}/kernel"][~mask[f"{l}/kernel"]] == 0.0) for l in KERNELS)


def test_levels_resume_extend_and_are_not_recomputed(data_path, dataset, tmp_path):
    job = _job(data_path, tmp_path, levels=1)
    first = job.run_all(dataset)
    stamp = os.stat(os.path.join(job.level_dir(0, 1), "result.json")).st_mtime_ns
    longer = dataclasses.replace(job, lottery=dataclasses.replace(job.lottery, levels=3))
    assert longer.experiment_dir == job.experiment_dir
    rows = longer.run_all(dataset)
    assert rows[:2] == first
    assert os.stat(os.path.join(job.level_dir(0, 1), "result.json")).st_mtime_ns == stamp
    densities = [r["density"] for r in rows]
    n = sum(m.size for m in Masks.load(os.path.join(job.level_dir(0, 1), "mask.npz")).values())
    expected, remaining = [1.0], n
    for _ in range(3):
        remaining -= round(0.2 * remaining)
        expected.append(remaining / n)
    assert densities == pytest.approx(expected)
    # A level killed mid-way (only its start checkpoint left) resumes to the same result.
    level3 = job.level_dir(0, 3)
    final3 = _ckpt(level3, 16)[1]
    os.unlink(os.path.join(level3, "result.json"))
    os.unlink(checkpoint.path_for(os.path.join(level3, "checkpoints"), 16))
    again = longer.run_all(dataset)
    assert again[3]["test_accuracy"] == rows[3]["test_accuracy"]
    assert all(np.array_equal(final3[k], v) for k, v in _ckpt(level3, 16)[1].items())


def test_lr_rewind_and_finetune_resets(data_path, dataset, tmp_path):
    lr_job = _job(data_path, tmp_path / "lr", levels=1, reset="lr_rewind")
    lr_job.run_all(dataset)
    _, final0, _ = _ckpt(lr_job.level_dir(0, 0), 16)
    _, _, opt_k = _ckpt(lr_job.level_dir(0, 0), 5)
    start, w, opt = _ckpt(lr_job.level_dir(0, 1))
    mask = Masks.load(os.path.join(lr_job.level_dir(0, 1), "mask.npz"))
    assert start == 5 and all(np.array_equal(a, b) for a, b in zip(opt, opt_k))
    assert np.array_equal(w["fc1/kernel"], final0["fc1/kernel"] * mask["fc1/kernel"])

    ft_job = _job(data_path, tmp_path / "ft", levels=1, reset="finetune")
    rows = ft_job.run_all(dataset)
    start, w, opt = _ckpt(ft_job.level_dir(0, 1))
    assert start == 0 and rows[1]["step"] == 16 - 5  # T - k steps at the final rate
    assert all(not np.any(v) for v in opt)  # a fresh optimizer
    assert np.array_equal(w["fc1/kernel"], _ckpt(ft_job.level_dir(0, 0), 16)[1]["fc1/kernel"] * mask["fc1/kernel"])


def test_controls(data_path, dataset, tmp_path):
    job = _job(data_path, tmp_path, levels=1, controls=("random_reinit", "random_prune"), replicates=2)
    rows = job.run_all(dataset)
    assert [(r["replicate"], r["level"], r["method"]) for r in rows] == [
        (r, lvl, m) for r in (0, 1) for lvl, m in [(0, "imp"), (1, "imp"), (1, "random_reinit"), (1, "random_prune")]]
    mask = Masks.load(os.path.join(job.level_dir(0, 1), "mask.npz"))
    _, w_k, opt_k = _ckpt(job.level_dir(0, 0), 5)
    _, reinit, opt_r = _ckpt(job.level_dir(0, 1, "random_reinit"))
    m = mask["fc1/kernel"]
    assert np.array_equal(reinit["fc1/kernel"] != 0, m)
    assert not np.array_equal(reinit["fc1/kernel"][m], w_k["fc1/kernel"][m])
    assert all(np.array_equal(a, b) for a, b in zip(opt_r, opt_k))
    _, rprune, _ = _ckpt(job.level_dir(0, 1, "random_prune"))
    rmask = rprune["fc1/kernel"] != 0
    assert rmask.sum() == m.sum() and not np.array_equal(rmask, m)
    assert np.array_equal(rprune["fc1/kernel"][rmask], w_k["fc1/kernel"][rmask])
    # Replicates differ in seeds.
    assert not np.array_equal(_ckpt(job.level_dir(0, 0), 0)[1]["fc1/kernel"], _ckpt(job.level_dir(1, 0), 0)[1]["fc1/kernel"])


@pytest.mark.parametrize("kwargs,pattern", [
    # the library names the field; the binaries name the flag (tests/test_cli_prune.py)
    ({"rewind": "40it"}, r"^LotteryHparams\.rewind_step=40it is iteration 40, beyond the end of training at iteration 16"),
    ({"rewind": "16it"}, r"is the end of training"),
    ({"fraction": 0.2, "scope": "global", "layer_rates": (("fc9", 0.1),)}, r"'fc9' matches no masked variable"),
    # 25,760 weights at 20% a level: level 42 leaves 2, and round(0.2 * 2) = 0 prunes no more.
    ({"levels": 1_000_000}, r"^LotteryHparams\.levels=1000000 is past the last level that prunes anything: level 42 "
                            r"leaves 2 of 25760 weights and no later level prunes one; expected levels <= 42\."),
])
def test_prepare_rejects_bad_settings(data_path, tmp_path, kwargs, pattern):
    with pytest.raises(HparamError, match=pattern) as caught:
        _job(data_path, tmp_path, **kwargs).prepare()
    assert caught.value.field in ("rewind_step", "layer_rates", "levels")
    assert os.listdir(tmp_path) == []


def test_levels_up_to_the_last_useful_one_are_accepted(data_path, tmp_path):
    _job(data_path, tmp_path, levels=42).prepare()


def test_lottery_hparams_validation():
    for kwargs, pattern in [({"levels": -1}, r"^LotteryHparams\.levels=-1"), ({"replicates": 0}, "replicates"),
                            ({"rewind_step": "k"}, r"Invalid step 'k'"),
                            ({"rewind_optimizer": "foo"}, r"\.rewind_optimizer='foo' is invalid: expected one of")]:
        with pytest.raises(HparamError, match=pattern) as caught:
            LotteryHparams(**kwargs)
        assert (caught.value.owner, caught.value.field) == ("LotteryHparams", next(iter(kwargs)))


def test_reset_and_control_names_are_checked_by_the_job():
    """The schema sits below the registries: LotteryJob checks the names against them."""
    for kwargs, pattern in [({"reset": "x"}, r"\.reset='x'"), ({"controls": ("magic",)}, r"unknown control 'magic'")]:
        with pytest.raises(HparamError, match=pattern) as caught:
            LotteryJob(RunHparams(), lottery=LotteryHparams(**kwargs))
        assert (caught.value.owner, caught.value.field) == ("LotteryHparams", next(iter(kwargs)))


def test_run_all_rows_are_what_the_report_reads_back(data_path, dataset, tmp_path):
    from tflth import report
    from tflth.lottery import starts

    job = _job(data_path, tmp_path, levels=1, controls=("random_reinit",))
    rows = job.run_all(dataset)
    keys = ("method", "level", "replicate", "density", "test_accuracy", "test_loss", "last_evals_range")
    assert sorted(tuple(r[k] for k in keys) for r in rows) == \
        sorted(tuple(r[k] for k in keys) for r in report.collect(job.experiment_dir, tuple(starts.CONTROLS)))
    for r in rows:  # evaluations at 8it and 16it: the range is their difference, by hand
        run = job.level_dir(0, r["level"]) if r["method"] == "imp" else \
            os.path.join(job.level_dir(0, r["level"]), r["method"])
        with open(os.path.join(run, "metrics.jsonl")) as f:
            accs = [json.loads(line)["test_accuracy"] for line in f]
        assert len(accs) == 2 and r["last_evals_range"] == abs(accs[0] - accs[1])

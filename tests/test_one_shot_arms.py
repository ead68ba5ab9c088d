"""One-shot methods beside IMP in one experiment (issue 30, items 1-3): ``--one_shot`` arms
score the dense run's W_k once per level of ``--compare_levels`` in the experiment's
pruning structure (unstructured, N:M, channels), train from W_k, carry the controls on
their own masks, resume, and sit in the experiment's one report with their bases."""

import os
import subprocess
import sys

import numpy as np
import pytest

from tflth import data as data_lib
from tflth import pruning, report
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, PruningHparams, RunHparams, TrainingHparams
from tflth.lottery import LotteryHparams, LotteryJob
from tflth.masking import Masks
from tflth.pruning import nm as nm_lib
from tflth.report.job import ReportJob
from tflth.training import checkpoint

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 4
CONTROLS = ("random_prune", "random_reinit")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


@pytest.fixture(scope="module")
def dataset(data_path):
    return data_lib.load("mnist", data_dir=data_path)


def _job(data_path, output_dir, pruning_hparams=None, levels=3, one_shot=("magnitude_at_k", "snip"),
         compare_levels=(1, 3), controls=("random_prune",)):
    run = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                     TrainingHparams(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, training_steps="12it",
                                     seed=1, data_order_seed=2))
    return LotteryJob(run, pruning_hparams or PruningHparams(fraction=0.5, scope="global"),
                      LotteryHparams(levels=levels, rewind_step=f"{K}it", controls=controls, one_shot=one_shot,
                                     compare_levels=compare_levels),
                      output_dir=str(output_dir), data_dir=data_path, eval_every="12it", checkpoint_every="4it")


def _mask(job, level, method):
    return Masks.load(job.experiment.method(0, level, method).mask)


def _w_k(job):
    return checkpoint.load(checkpoint.path_for(os.path.join(job.level_dir(0, 0), "checkpoints"), K))[1]


def test_arms_train_beside_imp_at_the_compared_levels_and_report_with_their_bases(data_path, dataset, tmp_path):
    job = _job(data_path, tmp_path)
    rows = job.run_all(dataset)
    got = [(r["level"], r["method"]) for r in rows]
    assert got == [(0, "imp"), (1, "imp"), (1, "random_prune"), (1, "magnitude_at_k"),
                   (1, "magnitude_at_k/random_prune"), (1, "snip"), (1, "snip/random_prune"), (2, "imp"),
                   (3, "imp"), (3, "random_prune"), (3, "magnitude_at_k"), (3, "magnitude_at_k/random_prune"),
                   (3, "snip"), (3, "snip/random_prune")]
    w_k = _w_k(job)
    total = sum(np.size(w_k[p]) for p in _mask(job, 1, "snip"))
    for level in (1, 3):
        mag = _mask(job, level, "magnitude_at_k")
        keep = round(0.5 ** level * total)
        assert sum(int(m.sum()) for m in mag.values()) == keep  # exact, at IMP's density
        threshold = np.sort(np.concatenate([np.abs(w_k[p]).ravel() for p in mag]))[::-1][keep - 1]
        assert all(np.all(np.abs(w_k[p])[m] >= threshold) for p, m in mag.items())  # largest |W_k| kept
        for arm in ("magnitude_at_k", "snip"):
            own, shuffled = _mask(job, level, arm), _mask(job, level, f"{arm}/random_prune")
            assert {p: int(m.sum()) for p, m in shuffled.items()} == {p: int(m.sum()) for p, m in own.items()}
            assert any(not np.array_equal(shuffled[p], own[p]) for p in own)
        # an arm trains from W_k ⊙ m (the rewind step), whatever IMP's reset
        run = job.experiment.method(0, level, "snip")
        start, w, _ = checkpoint.load(run.checkpoint(run.checkpoint_steps()[0]))
        snip = _mask(job, level, "snip")
        assert start == K and all(np.array_equal(w[p], w_k[p] * snip[p]) for p in snip)
    assert not os.path.exists(job.experiment.method(0, 2, "snip").path)  # level 2 is not compared
    # the report reads the arms back, compares an arm with IMP and an arm's control with the arm
    collected = report.collect(job.experiment_dir, CONTROLS, one_shot=pruning.one_shot_names())
    key = lambda r: (r["level"], r["method"])  # noqa: E731
    assert sorted(map(key, collected)) == sorted(map(key, rows))
    assert {key(r): r["density"] for r in collected} == {key(r): r["density"] for r in rows}
    summary = {(s.method, s.level): s for s in report.summarize(collected)}
    assert summary["snip/random_prune", 1].vs_imp.diff == pytest.approx(
        summary["snip", 1].acc_mean - summary["snip/random_prune", 1].acc_mean)
    assert summary["snip", 1].vs_imp.diff == pytest.approx(summary["imp", 1].acc_mean - summary["snip", 1].acc_mean)
    text = report.markdown_table(report.summarize(collected))
    assert "base − it (pts) [95 % CI]" in text and "| snip/random_prune |" in text
    arms = report.imp.one_shot_table(report.summarize(collected))
    header = [line for line in arms.splitlines() if line.startswith("| level")][0]
    assert header.split(" | ")[2:] == ["IMP", "magnitude_at_k", "IMP − magnitude_at_k", "magnitude_at_k − shuffle",
                                       "snip", "IMP − snip", "snip − shuffle |"]
    assert len([line for line in arms.splitlines() if line.startswith(("| 1 ", "| 3 "))]) == 2
    written = ReportJob(experiments=(job.experiment_dir,), report_dir=str(tmp_path / "r"), controls=CONTROLS,
                        one_shot=tuple(pruning.one_shot_names())).run()
    assert os.path.isfile(written["plot"])
    # a rerun trains nothing and reads the stored masks
    before = _mask(job, 3, "snip")
    assert job.run_all(dataset) == rows
    assert all(np.array_equal(_mask(job, 3, "snip")[p], before[p]) for p in before)


def test_arms_keep_the_experiments_n_m_structure(data_path, dataset, tmp_path):
    hp = PruningHparams(strategy="nm", nm=((2, 4), (1, 4)))
    job = _job(data_path, tmp_path, hp, levels=2, one_shot=("snip", "grasp", "synflow"), compare_levels=(),
               controls=("random_prune",))
    job.run_all(dataset)
    layouts = pruning.layouts(job.experiment and _model(job))
    for level, (n, m) in ((1, (2, 4)), (2, (1, 4))):
        for arm in ("snip", "grasp", "synflow"):
            for method in (arm, f"{arm}/random_prune"):
                mask = _mask(job, level, method)
                for p, k in mask.items():
                    axis = layouts[p].group_axis
                    assert nm_lib.is_nm(k, axis, n, m), (method, p)
                    # exactly N of every M: a one-shot N:M mask is the pattern, not less
                    assert int(k.sum()) == k.size * n // m, (method, p)


def _model(job):
    from tflth.training.trainer import Trainer  # noqa: PLC0415

    return Trainer(job.run, dataset=data_lib.load("mnist", data_dir=job.data_dir)).model


def test_arms_keep_the_experiments_channel_structure(data_path, dataset, tmp_path):
    hp = PruningHparams(fraction=0.5, scope="layerwise", strategy="channels")
    job = _job(data_path, tmp_path, hp, levels=1, one_shot=("snip", "synflow"), compare_levels=(),
               controls=("random_prune",))
    job.run_all(dataset)
    model = _model(job)
    groups = pruning.for_model(hp, model).groups
    imp = Masks.load(job.experiment.level(0, 1).mask)
    assert sorted(groups) and all(g.blocks > 1 for g in groups.values())
    for method in ("snip", "synflow", "snip/random_prune"):
        mask = _mask(job, 1, method)
        for name, group in groups.items():
            units = group.alive(mask)
            assert units.sum() == group.alive(imp).sum() == group.blocks // 2, (method, name)  # layerwise, exact
            for m in group.members:  # whole units: a dead unit is gone from every member, producers and readers
                dead = np.take(mask[m.path], group.positions(m, ~units), axis=m.axis)
                assert not dead.any(), (method, name, m.path)
            producer = next(m for m in group.members if m.role == "out")
            alive = np.take(mask[producer.path], group.positions(producer, units), axis=producer.axis)
            assert alive.any(), (method, name)


def test_bad_one_shot_settings_are_refused(data_path, tmp_path):
    with pytest.raises(HparamError, match="unknown one-shot method 'snap'"):
        _job(data_path, tmp_path, one_shot=("snap",))
    with pytest.raises(HparamError, match="one-shot itself"):
        _job(data_path, tmp_path, PruningHparams(strategy="snip"), one_shot=("grasp",))
    with pytest.raises(HparamError, match="compare_levels=4"):
        _job(data_path, tmp_path, levels=3, compare_levels=(4,))
    with pytest.raises(HparamError, match="names a method twice"):
        _job(data_path, tmp_path, one_shot=("snip", "snip"))


@pytest.mark.parametrize("flags, message", [
    (["--one_shot=snap"], "--one_shot"),
    (["--one_shot=snip", "--compare_levels=9", "--levels=2"], "--compare_levels=9"),
    (["--one_shot=snip", "--compare_levels=x"], "--compare_levels=x"),
    (["--one_shot=grasp", "--pruning_strategy=snip"], "one-shot itself"),
])
def test_bad_one_shot_flags_are_one_line_exit_2_nothing_written(data_path, tmp_path, flags, message):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bin", "prune.py"), "--model=lenet_32_16",
                           "--dataset=mnist", f"--data_dir={data_path}", f"--output_dir={out}",
                           "--training_steps=8it"] + flags, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()

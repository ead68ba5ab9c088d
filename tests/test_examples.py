"""The example tasks (issue 31, item 5): a KerasHub GPT-2 language model on arithmetic
sequences and a regression of scikit-learn's bundled diabetes data run through the
binaries at toy size here, and at their documented size in the slow job."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = ["--batch_size=16", "--training_steps=6it", "--eval_every=3it", "--checkpoint_every=3it"]


def _bin(name, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", f"{name}.py"), *flags], capture_output=True,
                          text=True, timeout=900, cwd=ROOT)


def test_the_regression_task_is_the_bundled_diabetes_data_standardised():
    pytest.importorskip("sklearn")
    from tflth.examples import regression  # noqa: PLC0415

    task = regression.task()
    (x, y), (xt, yt) = task.data.train, task.data.evals["test"]
    assert x.shape == (342, 10) and y.shape == (342, 1) and xt.shape == (100, 10) and yt.shape == (100, 1)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-5)
    np.testing.assert_allclose(y.std(), 1, atol=1e-5)
    assert (task.barrier, task.higher_is_better) == ("mse", False)


def test_the_lm_sequences_follow_their_rule():
    from tflth.examples import lm  # noqa: PLC0415

    seq = lm.sequences(50, seed=3)
    stride = (seq[:, 1] - seq[:, 0]) % lm.VOCAB
    assert np.all((seq[:, 1:] - seq[:, :-1]) % lm.VOCAB == stride[:, None]) and np.all(stride > 0)
    task = lm.task_accuracy()
    x, y = task.data.train
    assert set(x) == {"token_ids", "padding_mask"} and np.array_equal(y[:, :-1], x["token_ids"][:, 1:])
    assert (task.barrier, task.higher_is_better) == ("next_token_accuracy", True)


@pytest.mark.parametrize("example, task", [("regression", "task"), ("lm", "task_accuracy")])
def test_an_example_prunes_and_measures_stability_through_the_binaries(example, task, tmp_path):
    pytest.importorskip("sklearn" if example == "regression" else "keras_hub")
    common = [f"--model=tflth.examples.{example}:model", f"--task=tflth.examples.{example}:{task}",
              f"--output_dir={tmp_path}", "--optimizer=adam", "--lr=1e-3", *TOY]
    prune = _bin("prune", *common, "--levels=1", "--rewind_step=3it", "--controls=random_prune")
    assert prune.returncode == 0, prune.stderr[-3000:]
    sweep = _bin("stability", *common, "--rewind_steps=0it,3it", "--interpolation_points=3", "--train_examples=32")
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    (pair,) = [json.loads(p.read_text()) for p in tmp_path.rglob("pair.json") if "k_3" in str(p)]
    measure = {"regression": "mse", "lm": "next_token_accuracy"}[example]
    assert pair["measure"]["name"] == measure
    points = pair["curve"]["points"]
    for point in points:
        value = point[f"test_{measure}"]
        assert point["test_error"] == pytest.approx(1 - value if measure == "next_token_accuracy" else value)
    losses = [p["test_loss"] for p in points]  # the loss barrier beside it, by hand
    assert pair["curve"]["test"]["loss_barrier"] == pytest.approx(max(losses) - (losses[0] + losses[-1]) / 2)
    (experiment,) = [p for p in tmp_path.iterdir() if p.name.startswith("lottery_")]
    assert f"test {measure}" in (experiment / "results.md").read_text()


@pytest.mark.slow
def test_the_documented_example_runs_at_their_size(tmp_path):
    """docs/results-tasks.md's commands as written (their output under a temporary directory)."""
    pytest.importorskip("sklearn")
    pytest.importorskip("keras_hub")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from test_full_scale_commands import TASKS_SECTION, readme_commands  # noqa: PLC0415

    commands = readme_commands(TASKS_SECTION)
    assert [c.binary for c in commands] == ["prune", "stability", "prune", "stability"]
    for cmd in commands:
        argv = cmd.argv({"output_dir": lambda v: str(tmp_path / v)})
        proc = _bin(cmd.binary, *argv)
        assert proc.returncode == 0, f"{cmd.where}: {proc.stderr[-3000:]}"
    for example in ("lm", "regression"):
        found = list((tmp_path / "runs" / "tasks" / example).glob("*/"))
        assert any(p.name.startswith("lottery_") and (p / "results.md").is_file() for p in found), found
        assert any(p.name.startswith("stability_") and (p / "report" / "stability.md").is_file() for p in found), found

"""Any task through the engine (issue 31, items 1-2): a :class:`tflth.tasks.Task` with dict
inputs, a custom loss and metrics trains, evaluates by hand-checkable numbers, checkpoints
and resumes to the uninterrupted run's state; its data order is the engine's (seeded,
step-exact); bad tasks are refused in one line naming the field."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflth import data as data_lib
from tflth import tasks
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.training import Trainer, checkpoint

N, N_TEST = 40, 12


def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=(n, 4)).astype("float32"), "b": rng.normal(size=(n, 3)).astype("float32")}
    y = (x["a"][:, :1] - 2 * x["b"][:, 1:2] + 0.1 * rng.normal(size=(n, 1))).astype("float32")
    return x, y


def _squared_error(y, outputs):  # [batch, 1]: one value per example once averaged over the last axis
    return tf.square(y - outputs)


def _task(**overrides):
    fields = dict(name="toy_regression", train=_arrays(N, 0), evals={"test": _arrays(N_TEST, 1),
                                                                      "shifted": _arrays(8, 2)},
                  loss=_squared_error, metrics={"mae": keras.metrics.mean_absolute_error},
                  barrier="mae", higher_is_better=False)
    fields.update(overrides)
    return tasks.Task(**fields)


def _model(seed=0, input_shape=None, num_classes=None):
    keras.utils.set_random_seed(seed)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(8, activation="relu", name="hidden")(keras.layers.Concatenate()([a, b]))
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(1, name="output")(h), name="two_inputs")


def _hparams(**training):
    settings = dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=8, training_steps="12it", seed=0,
                    data_order_seed=3)
    settings.update(training)
    return RunHparams(DatasetHparams("mnist"), ModelHparams("toy_regression"), TrainingHparams(**settings))


def _trainer(**training):
    return Trainer(_hparams(**training), task=_task(), model_fn=_model)


def test_evaluation_equals_the_hand_computation_on_every_named_set():
    trainer = _trainer()
    for name in ("test", "shifted", "train"):
        x, y = trainer.task.data.split(name)
        predicted = np.asarray(trainer.model(x, training=False))
        got = trainer.evaluate_all(name)
        assert got["loss"] == pytest.approx(np.mean((y - predicted) ** 2), rel=1e-5)
        assert got["mae"] == pytest.approx(np.mean(np.abs(y - predicted)), rel=1e-5)
    assert trainer.reported_split == "test"


def test_a_dict_input_task_trains_checkpoints_and_resumes_to_the_same_state(tmp_path):
    whole = _trainer().train(run_dir=str(tmp_path / "whole"), checkpoint_every="4it", eval_every="4it")
    first = _trainer()
    first.train(run_dir=str(tmp_path / "killed"), end_step=6, checkpoint_every="4it", eval_every="4it")
    os.unlink(os.path.join(tmp_path, "killed", "result.json"))  # killed after step 6's checkpoint
    resumed = _trainer().train(run_dir=str(tmp_path / "killed"), checkpoint_every="4it", eval_every="4it")
    assert resumed.step == whole.step == 12
    _, a, _ = checkpoint.load(checkpoint.path_for(str(tmp_path / "whole" / "checkpoints"), 12))
    _, b, _ = checkpoint.load(checkpoint.path_for(str(tmp_path / "killed" / "checkpoints"), 12))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    result = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert result["test_accuracy"] is None and result["test_mae"] == pytest.approx(whole.others["test_mae"])
    assert set(result) >= {"test_loss", "train_loss", "test_mae", "train_mae"}
    lines = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [4, 8, 12] and all("test_mae" in r and "train_mae" in r for r in lines)
    assert resumed.test_loss == whole.test_loss  # the same evaluation of the same weights


def test_the_engine_owns_the_data_order():
    """Copies from the same start differ only through their data-order seed."""
    def weights_after(seed):
        t = _trainer()
        t.train(end_step=10, data_order_seed=seed)
        return t.get_weights()

    same_a, same_b, other = weights_after(5), weights_after(5), weights_after(6)
    assert all(np.array_equal(same_a[k], same_b[k]) for k in same_a)
    assert any(not np.array_equal(same_a[k], other[k]) for k in same_a)
    # the stream is step-exact: batch s of a stream started at s equals batch s of one started at 0
    ds = _task().data
    full = list(data_lib.train_batches(ds, 8, 5, 0).take(9))
    later = list(data_lib.train_batches(ds, 8, 5, 0, start_step=7).take(2))
    for got, want in zip(later, full[7:]):
        assert all(np.array_equal(g, w) for g, w in zip(tf.nest.flatten(got), tf.nest.flatten(want)))
    epoch = np.concatenate([np.asarray(b[0]["a"]) for b in full[:5]])  # one epoch visits every example once
    assert sorted(map(tuple, epoch)) == sorted(map(tuple, ds.train[0]["a"]))


def test_a_finite_tf_data_dataset_is_read_into_arrays():
    x, y = _arrays(10, 4)
    streamed = tf.data.Dataset.from_tensor_slices((x, y))
    task = _task(train=streamed)
    assert task.data.num_train == 10 and np.array_equal(task.data.train[0]["b"], x["b"])


def test_the_step_mode_compiles_a_task_and_chunk_is_refused():
    trainer = _trainer(jit_compile="step")
    assert trainer.train(end_step=4).step == 4
    with pytest.raises(HparamError, match="task's own examples: use step"):
        _trainer(jit_compile="chunk")


@pytest.mark.parametrize("overrides, message", [
    (dict(train=({"a": np.zeros((0, 4)), "b": np.zeros((0, 3))}, np.zeros((0, 1)))), "Task.train is empty"),
    (dict(evals={}), "Task.evals"),
    (dict(train=({"a": np.zeros((5, 4)), "b": np.zeros((4, 3))}, np.zeros((5, 1)))), "same first axis"),
    (dict(barrier="accuracy"), "Task.barrier='accuracy' is invalid"),
    (dict(barrier="loss", higher_is_better=True), "Task.higher_is_better=True is invalid"),
    (dict(higher_is_better="down"), "Task.higher_is_better='down' is invalid"),
    (dict(metrics={"mae": keras.metrics.MeanAbsoluteError()}), "stateful Keras metric"),
    (dict(metrics={"bad name": keras.metrics.mean_absolute_error}), "'bad name' is invalid"),
    (dict(train=tf.data.Dataset.from_tensors((np.zeros(4), np.zeros(1))).repeat()), "infinite"),
])
def test_bad_tasks_are_refused_naming_the_field(overrides, message):
    with pytest.raises(tasks.TaskError, match=message) as error:
        _task(**overrides)
    assert "\n" not in str(error.value)


def test_a_loss_that_averages_the_batch_is_refused():
    task = _task(loss=lambda y, outputs: tf.reduce_mean(tf.square(y - outputs)))
    with pytest.raises(tasks.TaskError, match="one number for the whole batch"):
        Trainer(_hparams(), task=task, model_fn=_model)


def test_the_built_in_classification_task_is_the_engines_own():
    x = np.random.default_rng(0).integers(0, 255, (32, 28, 28), dtype=np.uint8)
    ds = data_lib.from_arrays("mnist", x, np.arange(32) % 10, x[:16], np.arange(16) % 10)
    hp = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_16"),
                    TrainingHparams(optimizer="adam", lr=1e-3, batch_size=8, training_steps="6it"))
    default, explicit = Trainer(hp, dataset=ds), Trainer(hp, task=tasks.classification(ds))
    a, b = default.train(), explicit.train()
    assert a.to_dict().keys() == {"step", "test_loss", "test_accuracy", "train_loss", "train_accuracy", "seconds"}
    assert (a.test_loss, a.test_accuracy, a.train_loss) == (b.test_loss, b.test_accuracy, b.train_loss)
    wa, wb = default.get_weights(), explicit.get_weights()
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    task = tasks.classification(ds)
    assert (task.metric_names, task.barrier, task.higher_is_better, task.sums) == (["accuracy"], "accuracy", True, 3)


# --- the jobs and binaries take a task by reference (issue 31, item 3)

import subprocess  # noqa: E402
import sys  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TASK_FILE = '''
import keras, numpy as np, tensorflow as tf
import tflth.tasks

def _arrays(n, seed):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=(n, 4)).astype("float32"), "b": rng.normal(size=(n, 3)).astype("float32")}
    return x, (x["a"][:, :1] - 2 * x["b"][:, 1:2]).astype("float32")

def task():
    return tflth.tasks.Task(name="toy_regression", train=_arrays(48, 0), evals={"test": _arrays(16, 1)},
                            loss=keras.losses.MeanSquaredError(), metrics={"mae": keras.metrics.mean_absolute_error},
                            barrier="mae", higher_is_better=False)

def not_a_task():
    return 3

def empty_task():
    x, y = _arrays(0, 0)
    return tflth.tasks.Task(name="empty", train=(x, y), evals={"test": _arrays(4, 1)},
                            loss=keras.losses.MeanSquaredError())

def wrong_direction():
    return tflth.tasks.Task(name="wrong", train=_arrays(8, 0), evals={"test": _arrays(4, 1)},
                            loss=keras.losses.MeanSquaredError(), barrier="loss", higher_is_better=True)

def model(seed=0, input_shape=None, num_classes=None):
    keras.utils.set_random_seed(seed)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.Dense(16, activation="relu", name="hidden")(keras.layers.Concatenate()([a, b]))
    return keras.Model({"a": a, "b": b}, keras.layers.Dense(1, name="output")(h))
'''

TOY = ["--optimizer=adam", "--lr=0.01", "--batch_size=8", "--training_steps=12it", "--eval_every=6it",
       "--checkpoint_every=6it"]


def _bin(name, *flags, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "bin", f"{name}.py"), *flags], capture_output=True,
                          text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def task_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("task") / "toy_task.py"
    path.write_text(TASK_FILE)
    return str(path)


def test_train_and_prune_take_a_task_by_reference(task_file, tmp_path):
    out = tmp_path / "runs"
    common = [f"--model={task_file}:model", f"--task={task_file}:task", f"--output_dir={out}", *TOY]
    train = _bin("train", *common)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "test_mae=" in train.stdout and "test_loss=" in train.stdout
    (run_dir,) = [p for p in out.iterdir() if p.name.startswith("train_")]
    hparams = json.loads((run_dir / "hparams.json").read_text())
    assert hparams["dataset"]["task"] == f"{task_file}:task"  # the reference names the run
    prune = _bin("prune", *common, "--levels=2", "--pruning_fraction=0.5", "--controls=random_prune",
                 "--replicates=2", "--rewind_step=2it")
    assert prune.returncode == 0, prune.stderr[-3000:]
    (experiment,) = [p for p in out.iterdir() if p.name.startswith("lottery_")]
    assert json.loads((experiment / "hparams.json").read_text())["measure"] == {"name": "mae",
                                                                               "higher_is_better": False}
    report = (experiment / "results.md").read_text()
    assert "mae mean ± std (lower is better)" in report and "test mae (lower is better) lies below" in report
    header = (experiment / "results.csv").read_text().splitlines()[0]
    assert "test_mae" in header and "test_accuracy" not in header and header.endswith("metric,higher_is_better")
    # a second task report leaves the first unchanged (the measure comes back from the directory)
    again = _bin("report", f"--experiments={experiment}", f"--report_dir={tmp_path / 'again'}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert report.endswith((tmp_path / "again" / "results.md").read_text())  # the same tables (prune adds a title)


@pytest.mark.parametrize("flags, message", [
    (["--task=nowhere_module:task"], "--task='nowhere_module:task' is invalid: cannot import"),
    (["--task={file}:not_a_task"], "returned int; expected a tflth.tasks.Task"),
    (["--task={file}:task", "--dataset=mnist"], "--dataset=mnist and --task="),
    (["--task=no_colon"], "--task='no_colon' is invalid"),
    (["--task={file}:empty_task"], "Task.train is empty"),
    (["--task={file}:wrong_direction"], "Task.higher_is_better=True is invalid"),
])
def test_bad_task_references_are_one_line_exit_2_nothing_written(task_file, tmp_path, flags, message):
    out = tmp_path / "runs"
    flags = [f.format(file=task_file) for f in flags]
    proc = _bin("train", f"--model={task_file}:model", f"--output_dir={out}", *TOY, *flags)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists()


def test_a_stability_sweep_takes_the_barrier_on_the_tasks_metric(task_file, tmp_path):
    out = tmp_path / "runs"
    proc = _bin("stability", f"--model={task_file}:model", f"--task={task_file}:task", f"--output_dir={out}", *TOY,
                "--rewind_steps=0it,6it", "--pairs=2", "--interpolation_points=5", "--train_examples=16")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = [p for p in out.iterdir() if p.name.startswith("stability_")]
    assert json.loads((sweep / "hparams.json").read_text())["measure"] == {"name": "mae", "higher_is_better": False}
    pairs = [json.loads(p.read_text()) for p in sweep.rglob("pair.json")]
    assert len(pairs) == 4
    for pair in pairs:
        points = pair["curve"]["points"]
        assert [p["alpha"] for p in points] == [0.0, 0.25, 0.5, 0.75, 1.0]
        for split in ("test", "train"):
            mae = [p[f"{split}_mae"] for p in points]  # the barrier on MAE (lower is better), by hand
            assert [p[f"{split}_error"] for p in points] == mae
            assert pair["curve"][split]["instability"] == pytest.approx(max(mae) - (mae[0] + mae[-1]) / 2, abs=1e-12)
        assert pair["disagreement"] is None if "disagreement" in pair else pair["curve"]["disagreement"] is None
        assert pair["measure"] == {"name": "mae", "higher_is_better": False}
    report = (sweep / "report" / "stability.md").read_text()
    assert "test barrier (mae)" in report and "test mae" in report


def test_the_barrier_on_a_higher_is_better_metric_is_that_of_one_minus_it():
    task = _task(metrics={"r": lambda y, o: -tf.abs(y - o)}, barrier="r", higher_is_better=True)
    assert task.badness({"loss": 1.0, "r": -0.25}) == 1.25 and task.measure.higher_is_better
    two = [0.1, 0.3]  # a two-point path: the barrier is half the endpoints' difference
    from tflth.stability import curve  # noqa: PLC0415

    bad = [task.badness({"r": v}) for v in two]
    assert curve.barrier([0.0, 1.0], bad) == pytest.approx(abs(two[0] - two[1]) / 2)


def test_a_report_refuses_to_mix_measures():
    from tflth import report  # noqa: PLC0415

    rows = [{"experiment": "a", "label": "a", "method": "imp", "replicate": 0, "level": 0, "density": 1.0,
             "test_accuracy": 0.9, "test_loss": 0.3},
            {"experiment": "b", "label": "b", "method": "imp", "replicate": 0, "level": 0, "density": 1.0,
             "test_mae": 0.2, "test_loss": 0.1, "metric": "mae", "higher_is_better": False}]
    from tflth.report.errors import ReportError  # noqa: PLC0415

    with pytest.raises(ReportError, match="different measures"):
        report.summarize(rows)


def test_verdicts_follow_a_lower_is_better_measure():
    from tflth import report  # noqa: PLC0415

    def rows(method, level, values):
        return [{"experiment": "e", "label": "e", "method": method, "replicate": r, "level": level, "density": 0.5,
                 "test_mse": v, "test_loss": v, "metric": "mse", "higher_is_better": False} for r, v in enumerate(values)]

    summary = {(s.method, s.level): s for s in report.summarize(
        rows("imp", 0, [1.0, 1.01, 0.99]) + rows("imp", 1, [0.50, 0.51, 0.49]) + rows("random_prune", 1, [2.0, 2.1, 1.9]),
        match_margin=0.01)}
    imp, control = summary["imp", 1], summary["random_prune", 1]
    assert imp.vs_dense.diff == pytest.approx(-0.5) and imp.matches == "yes"  # lower than dense: matches
    assert control.matches == "no"  # far higher (worse) than dense
    assert control.vs_imp.diff == pytest.approx(0.5 - 2.0) and control.imp_beats == "yes"  # IMP's is lower: better


def test_a_task_run_killed_mid_way_resumes_to_the_uninterrupted_runs_files(task_file, tmp_path):
    from helpers import assert_same_run_files, kill_when  # noqa: PLC0415

    def cmd(out):
        return [sys.executable, os.path.join(ROOT, "bin", "train.py"), f"--model={task_file}:model",
                f"--task={task_file}:task", f"--output_dir={out}", "--optimizer=adam", "--lr=1e-3", "--batch_size=8",
                "--training_steps=6000it", "--checkpoint_every=100it", "--eval_every=1000it", "--deterministic"]

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    full = subprocess.run(cmd(tmp_path / "full"), env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]

    def past_step_300():
        found = [r for r, _, _ in os.walk(tmp_path / "killed") if r.endswith("checkpoints")]
        return found[0] if found and any(s >= 300 for s in checkpoint.list_steps(found[0])) else None

    ckpt_dir = kill_when(cmd(tmp_path / "killed"), env, past_step_300, timeout=300)
    assert ckpt_dir is not None and checkpoint.latest(ckpt_dir) < 6000, "the run was not caught mid-way"
    resumed = subprocess.run(cmd(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0 and "resuming from the checkpoint at step" in resumed.stderr, resumed.stderr[-2000:]
    assert_same_run_files(tmp_path / "full", tmp_path / "killed")  # weights, optimizer, metrics with test_mae, result


def test_evaluate_of_a_task_without_metrics_has_no_accuracy():
    trainer = Trainer(_hparams(), task=_task(metrics={}, barrier="loss"), model_fn=_model)
    loss, accuracy = trainer.evaluate("test")
    assert accuracy is None and loss == pytest.approx(trainer.evaluate_all("test")["loss"])

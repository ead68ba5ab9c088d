"""The training engine: replica invariance, step-exact resume and rewind, outputs."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tflth import data as data_lib
from tflth import masking
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
from tflth.training import Trainer, TrainingDiverged, checkpoint

from helpers import write_synthetic_npz


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")
    return data_lib.load("mnist", data_dir=path)


def _hparams(**training):
    base = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, batch_size=32,
                training_steps="60it", seed=1, data_order_seed=2)
    base.update(training)
    return RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"), TrainingHparams(**base))


def _close(a, b, rtol):
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=rtol * max(1.0, float(np.abs(a[k]).max())), err_msg=k)


@pytest.mark.parametrize("batch_size", [32, 239], ids=["short-last-batch", "one-replica-empty"])
def test_two_replicas_match_one_device(dataset, mirrored_strategy, batch_size):
    # 240 examples: batch 32 ends each epoch with 16; batch 239 with 1 (one replica gets none).
    hp = _hparams(training_steps="20it", batch_size=batch_size)
    single = Trainer(hp, dataset=dataset, strategy=tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored = Trainer(hp, dataset=dataset, strategy=mirrored_strategy)
    assert mirrored.strategy.num_replicas_in_sync == 2
    np.testing.assert_array_equal(single.get_weights()["fc1/kernel"], mirrored.get_weights()["fc1/kernel"])
    a = single.train()
    b = mirrored.train()
    assert single.step == mirrored.step == 20
    _close(single.get_weights(), mirrored.get_weights(), 1e-5)
    assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1e-6)


def test_two_replicas_match_one_device_sparse_adam(dataset, mirrored_strategy):
    """Adam's per-entry epsilon tensors (inf at pruned entries) under MirroredStrategy."""
    hp = _hparams(training_steps="20it", optimizer="adam", lr=1e-3)
    rng = np.random.default_rng(3)
    trainers = [Trainer(hp, dataset=dataset, strategy=tf.distribute.OneDeviceStrategy("/cpu:0")),
                Trainer(hp, dataset=dataset, strategy=mirrored_strategy)]
    masks = {p: rng.random(shape) < 0.3 for p, shape in masking.shapes(trainers[0].model).items()}
    for t in trainers:
        masking.apply_masks(t.model, masks)
        t.train()
    single, mirrored = (t.get_weights() for t in trainers)
    _close(single, mirrored, 1e-5)
    for t in trainers:
        for p, kernel in masking.masked_weights(t.model).items():
            assert np.all(kernel[~masks[p]] == 0.0), p


def test_weight_changes_and_learning(dataset):
    trainer = Trainer(_hparams(training_steps="4ep", lr=0.1), dataset=dataset, strategy=tf.distribute.get_strategy())
    before, _ = trainer.evaluate()
    result = trainer.train()
    assert result.step == 4 * trainer.iterations_per_epoch == 32
    assert result.test_loss < before
    assert result.test_accuracy > 0.5


def test_resume_after_interruption_is_exact(dataset, tmp_path):
    hp = _hparams(training_steps="40it")
    full = Trainer(hp, dataset=dataset)
    full.train(str(tmp_path / "full"))
    # Interrupted run: stop at 25, then a fresh process-equivalent Trainer resumes from disk.
    part = Trainer(hp, dataset=dataset)
    part.train(str(tmp_path / "part"), end_step=25, checkpoint_every="10it")
    assert checkpoint.list_steps(str(tmp_path / "part" / "checkpoints")) == [0, 20, 25]
    os.unlink(checkpoint.path_for(str(tmp_path / "part" / "checkpoints"), 25))  # killed before 25 was written
    resumed = Trainer(hp, dataset=dataset)
    resumed.train(str(tmp_path / "part"))
    assert resumed.step == 40
    for k, v in full.get_weights().items():
        np.testing.assert_array_equal(resumed.get_weights()[k], v, err_msg=k)
    for a, b in zip(full.get_optimizer_state(), resumed.get_optimizer_state()):
        np.testing.assert_array_equal(a, b)


def test_a_kill_between_saving_and_removing_periodic_checkpoints_leaves_the_same_files(dataset, tmp_path):
    """Killed after saving periodic checkpoint 30 but before removing 20: the resumed run
    drops 20 as the uninterrupted run did, and ends with the same checkpoints."""
    hp = _hparams(training_steps="50it")
    Trainer(hp, dataset=dataset).train(str(tmp_path / "full"), checkpoint_every="10it")
    part = Trainer(hp, dataset=dataset)
    part.train(str(tmp_path / "part"), end_step=30, checkpoint_every="10it")  # 30 saved, 20 not yet removed
    ckpts = str(tmp_path / "part" / "checkpoints")
    assert checkpoint.list_steps(ckpts) == [0, 20, 30]
    Trainer(hp, dataset=dataset).train(str(tmp_path / "part"), checkpoint_every="10it")
    assert checkpoint.list_steps(ckpts) == checkpoint.list_steps(str(tmp_path / "full" / "checkpoints")) == [0, 40, 50]


def test_start_from_step_k_of_another_run_reproduces_it(dataset, tmp_path):
    k = 13
    hp = _hparams(training_steps=f"{k + 50}it", milestones=("30it",), optimizer="adam", lr=1e-3)
    a = Trainer(hp, dataset=dataset)
    a.train(str(tmp_path / "a"), save_steps=[f"{k}it"])
    b = Trainer(hp, dataset=dataset)
    assert b.load_checkpoint(checkpoint.path_for(str(tmp_path / "a" / "checkpoints"), k)) == k
    assert b.step == k and b.optimizer.learning_rate.numpy() == pytest.approx(1e-3)
    b.train(end_step=k + 50)
    for key, v in a.get_weights().items():
        np.testing.assert_array_equal(b.get_weights()[key], v, err_msg=key)
    # A different data order from the same W_k diverges: the copy really is a new SGD noise draw.
    c = Trainer(dataclasses.replace(hp, training=dataclasses.replace(hp.training, data_order_seed=99)), dataset=dataset)
    c.load_checkpoint(checkpoint.path_for(str(tmp_path / "a" / "checkpoints"), k))
    c.train(end_step=k + 50)
    assert not np.array_equal(c.get_weights()["fc1/kernel"], a.get_weights()["fc1/kernel"])


def _random_masks(model, density=0.2, seed=0):
    rng = np.random.default_rng(seed)
    return masking.Masks({p: rng.random(shape) < density for p, shape in masking.shapes(model).items()})


def test_masks_survive_training_and_checkpoints(dataset, tmp_path):
    trainer = Trainer(_hparams(training_steps="30it"), dataset=dataset)
    assert trainer.masked_paths == ["fc1/kernel", "fc2/kernel", "output/kernel"]
    masks = _random_masks(trainer.model)
    masking.apply_masks(trainer.model, masks)
    trainer.train(str(tmp_path / "run"))
    for p, kernel in masking.masked_weights(trainer.model).items():
        assert np.all(kernel[~masks[p]] == 0.0)
    _, weights, _ = checkpoint.load(checkpoint.path_for(str(tmp_path / "run" / "checkpoints"), 30))
    assert not any("mask" in k for k in weights)  # masks are stored once per level, not per checkpoint
    other = Trainer(_hparams(training_steps="30it"), dataset=dataset)
    other.load_checkpoint(checkpoint.path_for(str(tmp_path / "run" / "checkpoints"), 30))
    assert all(np.all(other.get_weights()[p][~m] == 0.0) for p, m in masks.items())


def test_legacy_checkpoint_mask_entries_are_ignored(dataset):
    t = Trainer(_hparams(training_steps="4it"), dataset=dataset)
    weights = t.get_weights()
    t.set_weights(dict(weights, **{"fc1/mask": np.ones_like(weights["fc1/kernel"])}))  # a tflth 0.1 checkpoint
    with pytest.raises(checkpoint.CheckpointError, match="unknown"):
        t.set_weights(dict(weights, **{"nosuch/mask": np.ones(2)}))


def test_outputs_metrics_and_result(dataset, tmp_path):
    trainer = Trainer(_hparams(training_steps="3ep"), dataset=dataset)
    result = trainer.train(str(tmp_path / "run"), eval_every="1ep", save_steps=["5it"])
    records = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [8, 16, 24]
    assert {"train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "epoch"} <= set(records[0])
    stored = json.load(open(tmp_path / "run" / "result.json"))
    assert stored["step"] == 24 and stored["test_accuracy"] == pytest.approx(result.test_accuracy)
    assert checkpoint.list_steps(str(tmp_path / "run" / "checkpoints")) == [0, 5, 24]
    assert os.listdir(tmp_path / "run" / "tensorboard")


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(dataset, tmp_path):
    trainer = Trainer(_hparams(training_steps="40it", lr=1e30, momentum=0.0, weight_decay=0.0), dataset=dataset)
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*last good checkpoint is step \d+"):
        trainer.train(str(tmp_path / "run"), checkpoint_every="1it")
    for step in checkpoint.list_steps(str(tmp_path / "run" / "checkpoints")):
        _, weights, _ = checkpoint.load(checkpoint.path_for(str(tmp_path / "run" / "checkpoints"), step))
        assert all(np.all(np.isfinite(v)) for v in weights.values())


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_epsilon_path_equals_the_per_step_constraint(dataset, optimizer):
    """Under Adam the loop drops the per-step mask constraint and relies on epsilon = inf
    at pruned entries; with optimizer history on pruned weights (a rewind), the result
    must be bit-identical to the per-step constraint's."""

    def run(epsilon_path):
        hp = _hparams(optimizer=optimizer, lr=0.01, training_steps="30it", weight_decay=1e-3)
        t = Trainer(hp, dataset=dataset)
        t._optimizer_masks = epsilon_path and t._optimizer_masks
        t.train(end_step=10)  # dense steps: optimizer slots now hold history for every weight
        masking.apply_masks(t.model, _random_masks(t.model, 0.3))
        t.train()
        return t.get_weights()

    fast, per_step = run(True), run(False)
    for k in per_step:
        np.testing.assert_array_equal(fast[k], per_step[k], err_msg=k)
    assert np.count_nonzero(fast["fc1/kernel"] == 0) > 0.6 * fast["fc1/kernel"].size


def test_two_replicas_match_one_device_sparse_sgd(dataset, mirrored_strategy):
    """SGD's per-step mask constraint under MirroredStrategy (assigned in replica context)."""
    hp = _hparams(training_steps="20it")
    trainers = [Trainer(hp, dataset=dataset, strategy=tf.distribute.OneDeviceStrategy("/cpu:0")),
                Trainer(hp, dataset=dataset, strategy=mirrored_strategy)]
    masks = _random_masks(trainers[0].model, 0.3, seed=4)
    for t in trainers:
        masking.apply_masks(t.model, masks)
        t.train()
    _close(*(t.get_weights() for t in trainers), 1e-5)
    for p, kernel in masking.masked_weights(trainers[1].model).items():
        assert np.all(kernel[~masks[p]] == 0.0), p


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_adam_itself_keeps_pruned_weights_at_zero(dataset, optimizer, monkeypatch):
    """With every mask constraint and the loop's zeroing switched off, Adam's per-entry
    epsilons alone keep pruned entries exactly zero despite optimizer history from dense
    steps. SGD has no such guarantee: there the per-step constraint is what zeroes them."""
    t = Trainer(_hparams(optimizer=optimizer, lr=0.01, training_steps="40it", weight_decay=1e-3), dataset=dataset)
    t.train(end_step=10)
    masks = _random_masks(t.model, 0.3)
    masking.apply_masks(t.model, masks)
    opt_variables = len(t.optimizer.variables)
    before = masking.masked_weights(t.model)
    monkeypatch.setattr(masking, "zero_pruned", lambda model: None)  # the loop's zeroing (Trainer._sync_masks)
    with masking.constraints_paused(t.model):  # the step is traced (again) without constraints
        t._train_chunk = t._make_train_chunk()
        t.train()
    after = masking.masked_weights(t.model)
    pruned_nonzero = sum(int(np.count_nonzero(after[p][~m])) for p, m in masks.items())
    assert pruned_nonzero == 0 if optimizer != "sgd" else pruned_nonzero > 0
    assert all(np.mean(after[p][m] != before[p][m]) > 0.95 for p, m in masks.items() if p != "output/kernel")
    assert len(t.optimizer.variables) == opt_variables  # checkpoints hold Keras's optimizer state only


def test_adam_epsilons_follow_the_masks_and_reject_a_wrong_count(dataset):
    t = Trainer(_hparams(optimizer="adam", lr=0.01, training_steps="4it"), dataset=dataset)
    kernels = [v for v, _ in t._masked]
    mask = np.zeros(kernels[0].shape, "float32")
    mask[0] = 1.0
    t.optimizer.set_masks([mask] + [np.ones(k.shape, "float32") for k in kernels[1:]])
    eps = t.optimizer.epsilon_values[0].numpy()
    assert np.all(eps[0] == np.float32(t.optimizer.epsilon)) and np.all(np.isposinf(eps[1:]))
    with pytest.raises(ValueError, match=rf"Expected {len(kernels)} masks .* got 1"):
        t.optimizer.set_masks([mask])


def test_background_checkpoint_holds_the_state_of_its_step(dataset, tmp_path, monkeypatch):
    """Checkpoints are written on a background thread while training goes on: a slow
    disk must not let later steps leak into the file of step k."""
    import time

    real_save = checkpoint.save
    monkeypatch.setattr(checkpoint, "save", lambda *a: (time.sleep(0.3), real_save(*a)))
    k = 7
    hp = _hparams(training_steps="30it", optimizer="adam", lr=1e-3)
    a = Trainer(hp, dataset=dataset)
    a.train(str(tmp_path / "a"), save_steps=[f"{k}it"], checkpoint_every="10it")
    assert checkpoint.list_steps(str(tmp_path / "a" / "checkpoints")) == [0, k, 20, 30]  # 10 removed after 20
    reference = Trainer(hp, dataset=dataset)
    reference.train(end_step=k)
    step, weights, opt = checkpoint.load(checkpoint.path_for(str(tmp_path / "a" / "checkpoints"), k))
    assert step == k
    for name, v in reference.get_weights().items():
        np.testing.assert_array_equal(weights[name], v, err_msg=name)
    for saved, v in zip(opt, reference.get_optimizer_state()):
        np.testing.assert_array_equal(saved, v)


def test_writer_keeps_order_and_reports_errors(tmp_path, monkeypatch):
    writer = checkpoint.Writer(max_pending=2)
    first, second = checkpoint.path_for(str(tmp_path), 1), checkpoint.path_for(str(tmp_path), 2)
    writer.save(first, 1, {"w": np.ones(3)}, [])
    writer.save(second, 2, {"w": np.zeros(3)}, [])
    writer.remove(first)  # queued behind both saves
    writer.flush()
    assert checkpoint.list_steps(str(tmp_path)) == [2]
    monkeypatch.setattr(checkpoint, "save", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    writer.save(checkpoint.path_for(str(tmp_path), 3), 3, {}, [])
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    open(tmp_path / ".tmp_abc.npz", "wb").close()  # what a kill mid-write leaves
    checkpoint.remove_partial(str(tmp_path))
    assert os.listdir(tmp_path) == [os.path.basename(second)]


def test_consecutive_train_calls_continue_the_stream_exactly(dataset, tmp_path):
    """A train() call that starts where the last one stopped reuses its input iterator;
    any other start (a rewind) gets a fresh stream positioned at that step."""
    hp = _hparams(training_steps="30it", optimizer="adam", lr=1e-3)
    whole = Trainer(hp, dataset=dataset)
    whole.train(str(tmp_path / "whole"), save_steps=["10it"])
    pieces = Trainer(hp, dataset=dataset)
    for end in (7, 14, 21, 30):
        pieces.train(end_step=end)
    # Back to step 10 in the same trainer, then on to 30 again.
    rewound = Trainer(hp, dataset=dataset)
    rewound.train(end_step=25)
    rewound.load_checkpoint(checkpoint.path_for(str(tmp_path / "whole" / "checkpoints"), 10))
    rewound.train()
    for name, v in whole.get_weights().items():
        np.testing.assert_array_equal(pieces.get_weights()[name], v, err_msg=name)
        np.testing.assert_array_equal(rewound.get_weights()[name], v, err_msg=name)


def test_every_job_rejects_a_width_its_model_lacks_before_writing(tmp_path):
    from tflth.hparams import HparamError
    from tflth.lottery import LotteryHparams, LotteryJob
    from tflth.stability.sweep import StabilityHparams, StabilityJob
    from tflth.training.job import TrainJob

    run = RunHparams(DatasetHparams("mnist"), ModelHparams("vgg11", width=8), TrainingHparams(training_steps="4it"))
    out = str(tmp_path / "runs")
    jobs = [TrainJob(run, output_dir=out),
            LotteryJob(run, lottery=LotteryHparams(levels=1), output_dir=out),
            StabilityJob(run, StabilityHparams(), output_dir=out)]
    for job in jobs:
        with pytest.raises(HparamError, match=r"^ModelHparams\.width=8: model 'vgg11' has no width option"):
            job.prepare()  # before the data is loaded: no data_dir needed
    assert not os.path.exists(out)
    with pytest.raises(HparamError, match="ModelHparams.width=-1"):
        ModelHparams("resnet20", width=-1)  # the dataclass's own check, unchanged

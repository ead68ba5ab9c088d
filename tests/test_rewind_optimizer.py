"""LotteryHparams.rewind_optimizer: ``fresh`` starts from step k with a newly built optimizer at
step k's schedule position (open_lth); ``state`` restores step k's saved optimizer state.

The references are computed independently: the gradient of the trainer's loss at W_k on
step k's batch, applied to copies of W_k by a brand-new Keras optimizer whose learning
rate is the schedule's value at k.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflth import data as data_lib
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.lottery import LotteryHparams, starts
from tflth.training import Trainer, checkpoint
from tflth.training.optimizers import set_start_step

from helpers import write_synthetic_npz

K = 6  # the rewind step; the learning rate halves at 4it, so the schedule at k is not the initial rate
BATCH = 32  # 240 examples: 8 iterations per epoch, step K's batch is a full one


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return data_lib.load("mnist", data_dir=write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz"))


def _hparams(optimizer, **kw):
    return RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_16"),
                      TrainingHparams(optimizer=optimizer, batch_size=BATCH, training_steps="16it", milestones=("4it",),
                                      gamma=0.5, seed=1, data_order_seed=2, **kw))


OPTIMIZERS = {
    "adam": (dict(lr=0.01), lambda lr: keras.optimizers.Adam(lr, epsilon=1e-8)),
    "adamw": (dict(lr=0.01, weight_decay=0.1), lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.1, epsilon=1e-8)),
    "sgd_momentum": (dict(lr=0.1, momentum=0.9), lambda lr: keras.optimizers.SGD(lr, momentum=0.9)),
    "sgd_nesterov": (dict(lr=0.1, momentum=0.9, nesterov=True),
                     lambda lr: keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)),
}


def _dense(dataset, tmp_path, name):
    """A trainer trained to K (its checkpoint W_k kept) and on to step 9 (slots far from W_k's)."""
    kwargs, _ = OPTIMIZERS[name]
    trainer = Trainer(_hparams(name.split("_")[0], **kwargs), dataset=dataset)
    trainer.train(str(tmp_path / "dense"), end_step=K)
    trainer.train(end_step=9)
    return trainer, checkpoint.path_for(str(tmp_path / "dense" / "checkpoints"), K)


def _step_k_gradients(trainer):
    """The gradient of the training loss at the model's current weights on step K's batch
    (the trainer's loss: summed cross-entropy over the global batch's examples)."""
    th = trainer.hparams.training
    x, y = next(iter(data_lib.train_batches(trainer.dataset, BATCH, th.data_order_seed, th.augment_seed,
                                            start_step=K, augment=False)))
    variables = trainer.model.trainable_variables
    with tf.GradientTape() as tape:
        logits = trainer.model(x, training=True)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)) / BATCH
    return variables, tape.gradient(loss, variables)


def _one_step_of(make_optimizer, variables, grads, iterations=None):
    """Copies of ``variables`` after one update by a newly built optimizer (its step counter
    set to ``iterations`` if given, every slot zero)."""
    copies = [keras.Variable(v.numpy()) for v in variables]
    opt = make_optimizer()
    opt.build(copies)
    if iterations is not None:
        opt.iterations.assign(iterations)
    opt.apply([tf.identity(g) for g in grads], copies)
    return [c.numpy() for c in copies]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_first_update_after_a_fresh_rewind_is_a_new_optimizer_s_first_update(dataset, tmp_path, name):
    trainer, w_k = _dense(dataset, tmp_path, name)
    _, make = OPTIMIZERS[name]
    rate = trainer.schedule.value_at(K)
    assert rate == OPTIMIZERS[name][0]["lr"] * 0.5

    stored = checkpoint.read(w_k)
    assert any(np.any(v) for v in stored.optimizer[1:])  # step k's slots are not zero: fresh must drop them
    assert starts.Start(w_k, level=1, seed=1, rewind_optimizer="fresh").load_rewind(trainer) == K
    assert trainer.step == K and int(trainer.optimizer.iterations.numpy()) == K
    assert all(not np.any(v) for v in trainer.get_optimizer_state()[1:])  # every slot 0.0
    assert trainer.optimizer_start_step == (K if name.startswith("adam") else 0)  # SGD: no bias correction
    assert all(np.array_equal(trainer.get_weights()[p], stored.model[p]) for p in stored.model)  # W_k

    variables, grads = _step_k_gradients(trainer)
    expected = _one_step_of(lambda: make(rate), variables, grads)
    trainer.train(end_step=K + 1)
    got = [v.numpy() for v in variables]
    for g, e, w in zip(got, expected, [stored.model[v.path] for v in variables]):
        assert np.abs(e - w).max() > 1e-4  # the update is visible
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)

    # The references tell the cases apart: step k's saved state, and (Adam) zeroed slots
    # with Keras's bias correction at step k, give other updates.
    starts.Start(w_k, level=1, seed=1).load_rewind(trainer)
    trainer.train(end_step=K + 1)
    assert any(np.abs(v.numpy() - e).max() > 1e-5 for v, e in zip(variables, expected))
    if name.startswith("adam"):
        trainer.load_checkpoint(w_k)
        uncorrected = _one_step_of(lambda: make(rate), *_step_k_gradients(trainer), iterations=K)
        assert all(np.abs(u - e).max() > 1e-4 for u, e in zip(uncorrected, expected))


def test_state_restores_step_k_s_optimizer_exactly(dataset, tmp_path):
    trainer, w_k = _dense(dataset, tmp_path, "adam")
    stored = checkpoint.read(w_k)
    assert "optimizer_start_step" not in stored.extras  # a dense run's checkpoints are as before
    trainer.reset_optimizer(3)  # whatever the trainer held before
    assert starts.Start(w_k, level=1, seed=1).load_rewind(trainer) == K  # default: state
    assert trainer.optimizer_start_step == 0
    assert all(np.array_equal(a, b) for a, b in zip(trainer.get_optimizer_state(), stored.optimizer))


def test_a_resumed_fresh_run_keeps_its_bias_correction_offset(dataset, tmp_path):
    """Killed after some fresh steps: a new Trainer resuming the checkpoint takes the
    uninterrupted run's next step; without the offset it would not."""
    trainer, w_k = _dense(dataset, tmp_path, "adam")
    starts.Start(w_k, level=1, seed=1, rewind_optimizer="fresh").load_rewind(trainer)
    run = str(tmp_path / "fresh")
    trainer.train(run, end_step=K + 3)  # saves its checkpoints at K and K + 3
    saved = checkpoint.read(checkpoint.path_for(str(tmp_path / "fresh" / "checkpoints"), K + 3))
    assert int(saved.extras["optimizer_start_step"]) == K and saved.step == K + 3
    trainer.train(end_step=K + 4)  # the uninterrupted run (no run directory: no resume)
    uninterrupted = trainer.get_weights()

    resumed = Trainer(trainer.hparams, dataset=dataset)
    assert resumed.optimizer_start_step == 0
    resumed.train(run, end_step=K + 4)  # resumes from the checkpoint at K + 3
    assert resumed.optimizer_start_step == K
    assert all(np.array_equal(uninterrupted[p], v) for p, v in resumed.get_weights().items())

    lost = Trainer(trainer.hparams, dataset=dataset)  # the same checkpoint with the offset dropped
    lost._restore(saved._replace(extras={}))
    lost.train(end_step=K + 4)
    assert lost.optimizer_start_step == 0
    assert any(not np.allclose(uninterrupted[p], v, rtol=1e-5, atol=1e-6) for p, v in lost.get_weights().items())


def test_a_fresh_rewind_under_two_replicas_matches_one_device(dataset, tmp_path, mirrored_strategy):
    """The start step lives in the strategy's scope like the slots: each replica's update
    reads it (a lost offset would make the uncorrected steps below)."""
    kwargs, _ = OPTIMIZERS["adam"]
    weights, trainers = [], []
    for i, strategy in enumerate([tf.distribute.OneDeviceStrategy("/cpu:0"), mirrored_strategy]):
        trainer = Trainer(_hparams("adam", **kwargs), dataset=dataset, strategy=strategy)
        trainer.train(str(tmp_path / f"dense{i}"), end_step=K)
        trainer.train(end_step=9)
        start = starts.Start(checkpoint.path_for(str(tmp_path / f"dense{i}" / "checkpoints"), K), level=1, seed=1,
                             rewind_optimizer="fresh")
        start.load_rewind(trainer)
        assert trainer.optimizer_start_step == K
        trainer.train(end_step=K + 3)
        weights.append(trainer.get_weights())
        trainers.append((trainer, start))
    assert trainers[1][0].strategy.num_replicas_in_sync == 2
    single, start = trainers[0]
    start.load_rewind(single)
    set_start_step(single.optimizer, 0)  # zeroed slots, Keras's bias correction at step K
    single.train(end_step=K + 3)
    uncorrected = single.get_weights()
    for p in weights[0]:  # Adam's near-sign steps pass float noise in near-zero gradients through: atol 1e-4
        np.testing.assert_allclose(weights[1][p], weights[0][p], rtol=1e-4, atol=1e-4, err_msg=p)
    assert np.abs(weights[1]["fc1/kernel"] - uncorrected["fc1/kernel"]).max() > 1e-3


def test_lr_rewind_fresh_starts_from_the_final_weights_with_a_fresh_optimizer_at_k(dataset, tmp_path):
    from tflth.hparams import PruningHparams
    from tflth.lottery import LotteryJob
    from tflth.masking import Masks

    kwargs, _ = OPTIMIZERS["sgd_momentum"]
    job = LotteryJob(_hparams("sgd", **kwargs), PruningHparams(0.2, "global"),
                     LotteryHparams(levels=1, rewind_step=f"{K}it", reset="lr_rewind", rewind_optimizer="fresh"),
                     output_dir=str(tmp_path), eval_every="8it", checkpoint_every="8it")
    job.run_all(dataset)
    level0, level1 = (str(tmp_path / job.experiment.name / "replicate_0" / f"level_{i}" / "checkpoints")
                      for i in (0, 1))
    final0 = checkpoint.read(checkpoint.path_for(level0, 16))
    first = checkpoint.read(checkpoint.path_for(level1, checkpoint.list_steps(level1)[0]))
    mask = Masks.load(str(tmp_path / job.experiment.name / "replicate_0" / "level_1" / "mask.npz"))
    assert first.step == K and int(first.optimizer[0]) == K and all(not np.any(v) for v in first.optimizer[1:])
    assert np.array_equal(first.model["fc1/kernel"], final0.model["fc1/kernel"] * mask["fc1/kernel"])


def test_rewind_optimizer_is_validated():
    from tflth.cli import flags as tflags  # noqa: F401  (names the fields' flags)
    from tflth.cli import harness

    with pytest.raises(HparamError) as caught:
        LotteryHparams(rewind_optimizer="foo")
    assert harness.flag_message(caught.value) == ("--rewind_optimizer='foo' is invalid: expected one of "
                                                 "['state', 'fresh'].")
    with pytest.raises(ValueError, match=r"Start\.rewind_optimizer='foo' is invalid"):
        starts.Start("w_k.npz", level=1, seed=0, rewind_optimizer="foo")

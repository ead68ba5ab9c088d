"""Compiled training (TrainingHparams.jit_compile): the same batches, exact zeros, bit-identical
reruns, rounding-level agreement with the uncompiled loop, ``off`` unchanged, refusals."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tflth import data, masking
from tflth.data.datasets import StreamDataset
from tflth.data.resident import ResidentTrainData
from tflth.hparams import DatasetHparams, HparamError, ModelHparams, RunHparams, TrainingHparams
from tflth.runs.naming import identity, run_hash
from tflth.training import Trainer, compiled

REFERENCE = os.path.join(os.path.dirname(__file__), "data", "off_reference.npz")


def _dataset(n=50, shape=(28, 28, 1), seed=0, name="mnist"):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 255, (n,) + shape, dtype=np.uint8)
    y = np.arange(n) % 10
    return data.from_arrays(name, x, y, x[:20], y[:20])


def _hparams(mode, optimizer="adam", steps="10it", **training):
    return RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_16"),
                      TrainingHparams(optimizer=optimizer, lr=1e-2, batch_size=16, training_steps=steps, seed=3,
                                      data_order_seed=4, jit_compile=mode, **training))


def _half_masks(trainer):
    return {p: (np.random.default_rng(1).random(m.shape) > 0.5).astype(np.float32)
            for p, m in masking.masks_of(trainer.model).items()}


def test_resident_batches_equal_the_tf_data_batches_across_epoch_boundaries_with_augmentation():
    ds = _dataset(n=50, shape=(12, 12, 3), name="cifar10")  # 4 steps per epoch at batch 16, the last of 2 examples
    feed = ResidentTrainData(ds, 16, augment=True)
    assert (feed.iterations_per_epoch, feed.last_batch_size) == (4, 2)
    programs = {size: tf.function(lambda plan, row, size=size: feed.batch(plan, row, size=size), jit_compile=True)
                for size in (16, 2)}
    stream = iter(data.train_batches(ds, 16, data_order_seed=3, augment_seed=5, start_step=2, augment=True))
    plan = feed.plan(3, 5, start_step=2, num_steps=9, pad_to=12)  # steps 2..10: two epoch ends, two short batches
    assert plan.indices.shape == (12, 16) and plan.offsets.shape == (12, 16, 2)
    for i in range(9):
        step = 2 + i
        size = 2 if step % 4 == 3 else 16
        x, y = programs[size](plan, tf.constant(i))
        x_ref, y_ref = next(stream)
        assert x.shape == x_ref.shape, step
        np.testing.assert_array_equal(x.numpy(), x_ref.numpy(), err_msg=f"step {step}")
        np.testing.assert_array_equal(y.numpy(), y_ref.numpy(), err_msg=f"step {step}")
    assert bool(feed.is_short(tf.constant(7))) and not bool(feed.is_short(tf.constant(8)))


@pytest.mark.parametrize("mode", ["step", "chunk"])
@pytest.mark.parametrize("optimizer,extra", [("adam", {}), ("adamw", {"weight_decay": 0.05}),
                                             ("sgd", {"momentum": 0.9})], ids=["adam", "adamw", "sgd-momentum"])
def test_pruned_weights_stay_exactly_zero_when_compiled(mode, optimizer, extra):
    trainer = Trainer(_hparams(mode, optimizer, **extra), dataset=_dataset())
    masks = _half_masks(trainer)
    masking.apply_masks(trainer.model, masks)
    before = masking.masked_weights(trainer.model)
    trainer.train(end_step=10)  # two short batches (steps 3 and 7)
    after = masking.masked_weights(trainer.model)
    for path, mask in masks.items():
        assert np.all(after[path][mask == 0] == 0.0), path
        assert not np.array_equal(after[path][mask == 1], before[path][mask == 1]), path  # it trained


@pytest.mark.parametrize("mode", ["step", "chunk"])
def test_compiled_runs_are_bit_identical_and_agree_with_off_up_to_rounding(mode):
    weights = {}
    for name in ("off", mode, mode):
        trainer = Trainer(_hparams(name, "adam"), dataset=_dataset())
        masking.apply_masks(trainer.model, _half_masks(trainer))
        trainer.train(end_step=10)
        weights.setdefault(name, []).append(trainer.get_weights())
    first, second = weights[mode]
    for k in first:
        np.testing.assert_array_equal(first[k], second[k], err_msg=k)
    off = weights["off"][0]
    for k in off:  # same batches, same updates: only the rounding differs
        np.testing.assert_allclose(first[k], off[k], rtol=1e-4, atol=1e-5, err_msg=k)
    assert any(not np.array_equal(first[k], off[k]) for k in off) or mode == "step"


def test_off_is_unchanged_against_the_reference_from_before_compiled_training():
    # tests/data/off_reference.npz: the same two runs by the code before jit_compile existed
    reference = np.load(REFERENCE)
    for optimizer, extra in (("adam", {}), ("sgd", {"momentum": 0.9})):
        trainer = Trainer(_hparams("off", optimizer, **extra), dataset=_dataset())
        masking.apply_masks(trainer.model, _half_masks(trainer))
        trainer.train(end_step=10)
        for k, v in trainer.get_weights().items():
            # bit for bit on the machine that wrote it; 1e-6 leaves room for another CPU's kernels
            np.testing.assert_allclose(v, reference[f"{optimizer}|{k}"], rtol=1e-6, atol=1e-7, err_msg=k)


def test_off_keeps_run_names_and_compiled_modes_get_their_own():
    # a field at its default is left out of the name, so every run made before jit_compile keeps its name
    assert "jit_compile" not in identity(_hparams("off"))["training"]
    assert identity(_hparams("chunk"))["training"]["jit_compile"] == "chunk"
    assert len({run_hash(_hparams(m)) for m in ("off", "step", "chunk")}) == 3


def test_bad_mode_and_chunk_on_a_stream_are_refused_naming_the_field():
    with pytest.raises(HparamError, match=r"TrainingHparams.jit_compile='fast' is invalid: expected one of"):
        TrainingHparams(jit_compile="fast")
    stream = StreamDataset("imagenet", builder=None, num_train=10, num_test=10, num_classes=1000,
                           input_shape=(224, 224, 3), source="tfds")
    with pytest.raises(HparamError, match=r"TrainingHparams.jit_compile=chunk needs a dataset held in memory.*use step"):
        compiled.check_mode("chunk", stream)
    compiled.check_mode("step", stream)  # step works for any dataset


def test_fit_with_jit_compile_keeps_tflth_masks_exactly_zero():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    masks = {v.path: (np.random.default_rng(2).random(v.shape) > 0.5).astype(np.float32)
             for v in model.trainable_variables if v.path.endswith("kernel")}
    masking.apply_masks(model, masks)
    x = np.random.default_rng(3).normal(size=(64, 8)).astype(np.float32)
    for optimizer in (keras.optimizers.Adam(1e-2), keras.optimizers.SGD(1e-2, momentum=0.9)):
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      jit_compile=True)
        model.fit(x, np.arange(64) % 3, batch_size=16, epochs=2, verbose=0)
        weights = {v.path: v.numpy() for v in model.trainable_variables}
        for path, mask in masks.items():
            assert np.all(weights[path][mask == 0] == 0.0), path


def test_compiled_convolutions_on_the_cpu_are_warned_about():
    conv = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, name="c1"), keras.layers.Flatten(),
                             keras.layers.Dense(3)])
    mlp = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("the warning is for CPUs")
    assert compiled.warn_if_slow("chunk", conv) and compiled.warn_if_slow("step", conv)
    assert not compiled.warn_if_slow("off", conv) and not compiled.warn_if_slow("chunk", mlp)

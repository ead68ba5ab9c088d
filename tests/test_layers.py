"""Masked layers: exact zeros under every optimizer, saving, conversion, replicas."""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import tflth
from tflth import masks as masks_lib

OPTIMIZERS = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
}


def _dense_model():
    return keras.Sequential(
        [keras.Input((12,)), tflth.MaskedDense(16, activation="tanh", name="fc1"), tflth.MaskedDense(3, name="output")]
    )


def _conv_model():
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            tflth.MaskedConv2D(8, 3, activation="tanh", name="conv1"),
            keras.layers.Flatten(),
            tflth.MaskedDense(3, name="output"),
        ]
    )


def _random_masks(model, density, seed):
    rng = np.random.default_rng(seed)
    return {p: rng.random(m.shape) < density for p, m in masks_lib.ones_like(model).items()}


@pytest.mark.parametrize("build", [_dense_model, _conv_model], ids=["dense", "conv"])
@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
def test_masked_entries_stay_exactly_zero(build, opt):
    keras.utils.set_random_seed(1)
    model = build()
    model.compile(optimizer=OPTIMIZERS[opt](), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(200,) + model.input_shape[1:]).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=200)
    # A few dense steps first, so optimizer slots hold history for weights pruned next
    # (the situation after rewinding): the mask must still win.
    model.fit(x, y, batch_size=40, epochs=1, verbose=0)
    masks = _random_masks(model, 0.2, seed=2)
    masks_lib.set_masks(model, masks)
    before = masks_lib.get_kernels(model)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 50 steps
    assert int(model.optimizer.iterations.numpy()) == 5 + 50
    after = masks_lib.get_kernels(model)
    for path, mask in masks.items():
        assert np.all(after[path][~mask] == 0.0), path
    # Every surviving weight with a surviving path to the logits must have moved. (A
    # hidden unit whose outgoing weights are all pruned gets no gradient: with plain SGD
    # its incoming weights rightly stay put.)
    first = "fc1" if "fc1" in masks else "conv1"
    units = masks[first].shape[-1]
    alive = masks["output"].reshape(-1, units, 3).any(axis=(0, 2))
    movable = masks[first] & alive
    assert movable.sum() > 0
    assert np.all(after[first][movable] != before[first][movable])
    assert np.all(after["output"][masks["output"]] != before["output"][masks["output"]])
    assert all(np.array_equal(m, masks[p]) for p, m in masks_lib.get_masks(model).items())


def test_forward_uses_masked_kernel():
    model = _dense_model()
    layer = model.get_layer("fc1")
    mask = np.zeros((12, 16), bool)
    mask[0, 0] = True
    layer.kernel_mask.assign(mask.astype("float32"))  # kernel itself left dense
    x = np.ones((1, 12), "float32")
    hidden = layer(x).numpy()
    bias = layer.bias.numpy()
    assert hidden[0, 0] == pytest.approx(np.tanh(layer.kernel_variable.numpy()[0, 0] + bias[0]))
    np.testing.assert_allclose(hidden[0, 1:], np.tanh(bias[1:]))


def test_same_constructor_and_config_as_keras():
    dense = tflth.MaskedDense(7, activation="tanh", use_bias=False, name="d")
    assert dense.get_config() == keras.layers.Dense(7, activation="tanh", use_bias=False, name="d").get_config()
    conv = tflth.MaskedConv2D(4, (3, 3), strides=2, padding="same", name="c")
    assert conv.get_config() == keras.layers.Conv2D(4, (3, 3), strides=2, padding="same", name="c").get_config()


def test_save_and_load_in_new_process(tmp_path):
    keras.utils.set_random_seed(3)
    model = _conv_model()
    masks = _random_masks(model, 0.3, seed=4)
    masks_lib.set_masks(model, masks)
    path = str(tmp_path / "model.keras")
    model.save(path)
    x = np.random.default_rng(5).normal(size=(4, 6, 6, 2)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        f"""
        import numpy as np, keras
        from tflth import masks
        m = keras.saving.load_model({path!r})
        np.savez({str(tmp_path / 'out.npz')!r}, pred=m.predict(np.load({str(tmp_path / 'x.npy')!r}), verbose=0),
                 **{{'mask_' + k: v for k, v in masks.get_masks(m).items()}})
        print(type(m.get_layer('conv1')).__name__)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "MaskedConv2D"
    loaded = np.load(tmp_path / "out.npz")
    assert np.array_equal(loaded["pred"], model.predict(x, verbose=0))
    for p, m in masks.items():
        assert np.array_equal(loaded["mask_" + p], m)


def test_store_without_mask_loads_with_full_mask_and_bad_store_is_named():
    layer = tflth.MaskedDense(2, name="d")
    layer.build((None, 5))
    layer.kernel_mask.assign(np.zeros((5, 2), "float32"))
    kernel = np.arange(10, dtype="float32").reshape(5, 2)
    layer.load_own_variables({"0": kernel, "1": np.ones(2, "float32")})  # a plain Dense's store
    assert np.array_equal(layer.kernel_variable.numpy(), kernel)
    assert np.all(layer.kernel_mask.numpy() == 1)
    with pytest.raises(ValueError, match=r"Layer 'd' expected weights \['0', '1', 'mask'\].*\['0'\]"):
        layer.load_own_variables({"0": kernel})


def test_masked_converts_keras_application_with_same_outputs():
    keras.utils.set_random_seed(0)
    original = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)
    converted = tflth.masked(original)
    report = masks_lib.density_report(converted)
    n_conv = sum(isinstance(l, keras.layers.Conv2D) for l in original.layers)
    assert len(report.layers) == n_conv + 1 == 54
    kernels = sum(int(np.prod(l.kernel.shape)) for l in original.layers if hasattr(l, "kernel"))
    assert report.total == kernels and report.density == 1.0
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(converted(x, training=False), original(x, training=False), rtol=1e-5, atol=1e-6)
    assert all(isinstance(l, (tflth.MaskedConv2D, tflth.MaskedDense)) for l in converted.layers
               if isinstance(l, (keras.layers.Conv2D, keras.layers.Dense)))


def test_masked_converts_depthwise_and_warns_about_unmaskable():
    inputs = keras.Input((16, 3))
    x = keras.layers.Conv1D(4, 3, name="c1d")(inputs)
    x = keras.layers.Reshape((14, 1, 4))(x)
    x = keras.layers.DepthwiseConv2D((3, 1), name="dw")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2, name="head")(x)
    model = keras.Model(inputs, outputs)
    with pytest.warns(UserWarning, match=r"c1d \(Conv1D\)"):
        converted = tflth.masked(model)
    assert isinstance(converted.get_layer("dw"), tflth.MaskedDepthwiseConv2D)
    assert type(converted.get_layer("c1d")) is keras.layers.Conv1D
    x = np.random.default_rng(1).normal(size=(3, 16, 3)).astype("float32")
    np.testing.assert_allclose(converted(x), model(x), rtol=1e-6, atol=1e-6)


def test_masked_rejects_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = keras.layers.Dense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="subclassed"):
        tflth.masked(net)


def test_masks_identical_across_mirrored_replicas(mirrored_strategy):
    strategy = mirrored_strategy
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        keras.utils.set_random_seed(7)
        model = _dense_model()
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    masks = _random_masks(model, 0.2, seed=8)
    masks_lib.set_masks(model, masks)  # cross-replica context
    x = np.random.default_rng(0).normal(size=(64, 12)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, size=64)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for path, layer in masks_lib.prunable_layers(model).items():
        mask_copies = [v.numpy() for v in strategy.experimental_local_results(layer.kernel_mask.value)]
        kernel_copies = [v.numpy() for v in strategy.experimental_local_results(layer.kernel_variable.value)]
        assert len(mask_copies) == 2
        assert np.array_equal(mask_copies[0], mask_copies[1]), path
        assert np.array_equal(mask_copies[0] != 0, masks[path]), path
        assert np.array_equal(kernel_copies[0], kernel_copies[1]), path
        assert np.all(kernel_copies[0][~masks[path]] == 0.0), path


def test_unmasked_round_trip_gives_plain_layers_and_same_function():
    keras.utils.set_random_seed(4)
    model = _conv_model()
    masks = _random_masks(model, 0.3, seed=5)
    masks_lib.set_masks(model, masks)
    plain = tflth.unmasked(model)
    assert type(plain.get_layer("conv1")) is keras.layers.Conv2D and type(plain.get_layer("output")) is keras.layers.Dense
    assert np.all(plain.get_layer("conv1").kernel.numpy()[~masks["conv1"]] == 0.0)
    x = np.random.default_rng(6).normal(size=(3, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(plain(x), model(x), rtol=1e-6, atol=1e-6)

"""Tests for the model zoo ``tflth.models`` (CPU, fast: forward passes use batch 1-2)."""

import functools
import hashlib
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tflth
import tflth.models as models
from tflth import masking

MaskedConv2D, MaskedDense = keras.layers.Conv2D, keras.layers.Dense  # the zoo's kernel layers (plain Keras)

CANONICAL = ["lenet_300_100", "conv2", "conv4", "conv6", "resnet20", "resnet56", "resnet110",
             "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet50"]

# Reference parameter counts (trainable weights): open_lth's tests for LeNet / CIFAR
# ResNet / CIFAR VGG, torchvision for the ImageNet ResNets, and hand arithmetic for
# Conv-N (see _conv_n_params).
REFERENCE_PARAMS = {
    "lenet_300_100": 266_610,
    "resnet20": 272_474,
    "resnet110": 1_730_714,
    "vgg11": 9_231_114,
    "vgg13": 9_416_010,
    "vgg16": 14_728_266,
    "vgg19": 20_040_522,
    "resnet18": 11_689_512,
    "resnet50": 25_557_032,
}


@functools.lru_cache(maxsize=None)
def built(name):
    """Each canonical model built once (default dataset, seed 0) and shared by tests."""
    return models.get(name)


def _kernel_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False, recursive=True)
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D,
                                  keras.layers.DepthwiseConv2D))]


def _np(value):
    """A variable or tensor as a NumPy array."""
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _weights_digest(model):
    h = hashlib.sha256()
    for v in model.weights:
        h.update(v.path.encode())
        h.update(np.ascontiguousarray(_np(v)).tobytes())
    return h.hexdigest()


def _conv_n_params(convs, flat, dense=(256, 256), classes=10, channels=3):
    total, c_in = 0, channels
    for c in convs:
        total += 9 * c_in * c + c
        c_in = c
    d_in = flat
    for d in (*dense, classes):
        total += d_in * d + d
        d_in = d
    return total


# --- registry ---------------------------------------------------------------------------

def test_names_lists_the_canonical_models():
    assert set(CANONICAL) <= set(models.names())
    assert len(set(models.names())) == len(models.names())


def test_default_datasets_and_shapes():
    assert models.default_dataset("lenet_300_100") == "mnist"
    assert models.default_dataset("lenet_500_200_100") == "mnist"
    for name in ("conv2", "conv4", "conv6", "resnet20", "resnet56", "resnet110", "resnet32",
                 "vgg11", "vgg13", "vgg16", "vgg19"):
        assert models.default_dataset(name) == "cifar10", name
    assert models.default_dataset("resnet18") == "imagenet2012"
    assert models.default_dataset("resnet50") == "imagenet2012"
    assert models.dataset_info("mnist") == ((28, 28, 1), 10)
    assert models.dataset_info("fashion_mnist") == ((28, 28, 1), 10)
    assert models.dataset_info("cifar10") == ((32, 32, 3), 10)
    assert models.dataset_info("cifar100") == ((32, 32, 3), 100)
    assert models.dataset_info("imagenet2012") == ((224, 224, 3), 1000)
    with pytest.raises(ValueError, match="svhn"):
        models.dataset_info("svhn")
    with pytest.raises(ValueError, match="alexnet"):
        models.default_dataset("alexnet")


# --- every registered model -------------------------------------------------------------

@pytest.mark.parametrize("name", CANONICAL)
def test_builds_on_default_dataset_and_runs_forward(name):
    model = built(name)
    shape, classes = models.dataset_info(models.default_dataset(name))
    assert model.built
    assert model.name == name
    assert tuple(model.input_shape) == (None, *shape)
    assert tuple(model.output_shape) == (None, classes)
    batch = 1 if shape[0] > 32 else 2
    x = np.random.default_rng(0).normal(size=(batch, *shape)).astype("float32")
    y = _np(model(x, training=False))
    assert y.shape == (batch, classes)
    assert np.all(np.isfinite(y))


@pytest.mark.parametrize("name", CANONICAL)
def test_every_kernel_is_maskable_by_default_and_output_is_logits(name):
    model = built(name)
    kernel_layers = _kernel_layers(model)
    assert kernel_layers
    assert list(masking.select(model)) == [l.kernel.path for l in model.layers if l in kernel_layers]
    for layer in kernel_layers:
        assert type(layer) in (MaskedDense, MaskedConv2D), f"{name}: {layer.name} is a {type(layer).__name__}"
    last = model.layers[-1]
    assert last.name == "output"
    assert model.get_layer("output") is last
    assert isinstance(last, MaskedDense)
    assert last.activation is keras.activations.linear
    assert model.outputs[0] is last.output


@pytest.mark.parametrize("name", CANONICAL)
def test_initialisers(name):
    model = built(name)
    for layer in _kernel_layers(model):
        init = layer.kernel_initializer
        assert isinstance(init, keras.initializers.HeNormal), layer.name
        assert isinstance(init.seed, int)
        if layer.bias is not None:
            assert not np.any(_np(layer.bias))
    seeds = [layer.kernel_initializer.seed for layer in _kernel_layers(model)]
    assert len(set(seeds)) == len(seeds), "two layers share an initialiser seed"
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            assert np.all(_np(layer.gamma) == 1.0)
            assert not np.any(_np(layer.beta))


def test_he_normal_scale():
    fc1 = built("lenet_300_100").get_layer("fc1")
    kernel = _np(fc1.kernel)
    assert kernel.std() == pytest.approx(np.sqrt(2.0 / 784), rel=0.02)
    assert abs(kernel.mean()) < 0.002


@pytest.mark.parametrize("name", CANONICAL)
def test_layer_names_are_explicit_and_stable(name):
    model = built(name)
    layer_names = [layer.name for layer in model.layers]
    assert len(set(layer_names)) == len(layer_names)
    assert layer_names[0] == "input"
    # No auto-generated Keras names (e.g. "dense_3", "batch_normalization_12").
    for auto in ("dense", "conv2d", "batch_normalization", "re_lu", "add", "input_layer",
                 "max_pooling2d", "global_average_pooling2d", "zero_padding2d"):
        assert not any(n == auto or n.startswith(auto + "_") for n in layer_names), auto


def test_names_do_not_depend_on_build_history():
    first = [layer.name for layer in models.get("resnet20").layers]
    models.get("lenet_300_100")
    keras.layers.Dense(3)  # bump Keras' global name counters
    second = [layer.name for layer in models.get("resnet20").layers]
    assert first == second


def test_documented_layer_names():
    assert [l.name for l in built("lenet_300_100").layers] == [
        "input", "flatten", "fc1", "fc2", "output"]
    conv2 = [l.name for l in built("conv2").layers]
    assert conv2 == ["input", "conv1", "conv2", "pool1", "flatten", "fc1", "fc2", "output"]
    r20 = {l.name for l in built("resnet20").layers}
    assert {"conv1", "bn1", "relu1", "block1_1_conv1", "block1_1_bn1", "block1_1_conv2",
            "block1_1_add", "block1_1_out", "block2_1_shortcut_conv", "block2_1_shortcut_bn",
            "block3_3_out", "avg_pool", "output"} <= r20
    r50 = {l.name for l in built("resnet50").layers}
    assert {"conv1", "bn1", "pool1", "block1_1_conv3", "block1_1_shortcut_conv",
            "block4_3_out", "output"} <= r50
    v16 = {l.name for l in built("vgg16").layers}
    assert {f"conv{i}" for i in range(1, 14)} <= v16 and "conv14" not in v16
    assert {f"pool{i}" for i in range(1, 5)} <= v16 and "pool5" not in v16


# --- parameter counts -------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_counts_match_references(name):
    assert models.count_params(built(name)) == REFERENCE_PARAMS[name]


def test_parameter_counts_headline_figures_within_one_percent():
    for name, approx in [("lenet_300_100", 266_610), ("resnet20", 0.27e6), ("vgg16", 14.7e6),
                         ("resnet50", 25.5e6), ("resnet18", 11.7e6)]:
        assert models.count_params(built(name)) == pytest.approx(approx, rel=0.01), name
    # The Frankle & Carbin table rounds to 0.1M.
    assert models.count_params(built("conv2")) == pytest.approx(4.3e6, abs=0.05e6)
    assert models.count_params(built("conv4")) == pytest.approx(2.4e6, abs=0.05e6)


def test_conv_n_parameter_counts():
    assert models.count_params(built("conv2")) == _conv_n_params([64, 64], 16 * 16 * 64)
    assert models.count_params(built("conv4")) == _conv_n_params([64, 64, 128, 128], 8 * 8 * 128)
    assert models.count_params(built("conv6")) == _conv_n_params(
        [64, 64, 128, 128, 256, 256], 4 * 4 * 256)


def test_count_params_excludes_masks_and_bn_statistics():
    model = models.get("resnet20")
    tflth.masked(model)
    assert len(masking.masks_of(model)) == len(_kernel_layers(model))
    masks = 0  # masks are not weights of the model
    bn_stats = sum(2 * int(l.moving_mean.shape[0]) for l in model.layers
                   if isinstance(l, keras.layers.BatchNormalization))
    every = sum(int(np.prod(v.shape)) for v in model.weights)
    assert models.count_params(model) == every - masks - bn_stats
    assert models.count_params(model) == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert models.count_params(model, include_bn_statistics=True) == every - masks


# --- architecture details ---------------------------------------------------------------

def test_resnet20_structure():
    model = built("resnet20")
    convs = [l for l in model.layers if isinstance(l, MaskedConv2D)]
    assert sum(l.kernel_size == (3, 3) for l in convs) == 19  # 1 stem + 9 blocks x 2
    assert sum(l.kernel_size == (1, 1) for l in convs) == 2  # projections into stages 2, 3
    assert all(l.bias is None for l in convs)
    assert model.get_layer("block1_3_out").output.shape[1:] == (32, 32, 16)
    assert model.get_layer("block2_1_out").output.shape[1:] == (16, 16, 32)
    assert model.get_layer("block3_3_out").output.shape[1:] == (8, 8, 64)
    assert model.get_layer("block2_1_conv1").strides == (2, 2)
    assert model.get_layer("block2_1_shortcut_conv").strides == (2, 2)


def test_resnet_depth_pattern_and_width():
    r32 = models.get("resnet32")
    n_3x3 = sum(isinstance(l, MaskedConv2D) and l.kernel_size == (3, 3) for l in r32.layers)
    assert n_3x3 == 31
    # open_lth's cifar_resnet_14_128.
    assert models.count_params(models.get("resnet14", width=128)) == 11_093_130
    wide = models.get("resnet20", width=32)
    assert wide.get_layer("conv1").filters == 32
    assert wide.get_layer("output").kernel.shape == (128, 10)
    assert models.get("cifar_resnet50").get_layer("output").kernel.shape == (64, 10)


def test_imagenet_resnet_structure():
    r50 = built("resnet50")
    assert r50.get_layer("conv1").kernel_size == (7, 7)
    assert r50.get_layer("pool1").output.shape[1:] == (56, 56, 64)
    assert r50.get_layer("block4_3_out").output.shape[1:] == (7, 7, 2048)
    assert r50.get_layer("block2_1_conv2").strides == (2, 2)  # v1.5: stride on the 3x3
    assert r50.get_layer("output").kernel.shape == (2048, 1000)
    r18 = built("resnet18")
    assert r18.get_layer("block4_2_out").output.shape[1:] == (7, 7, 512)
    assert r18.get_layer("output").kernel.shape == (512, 1000)


def test_vgg_structure():
    for name, n_conv in [("vgg11", 8), ("vgg13", 10), ("vgg16", 13), ("vgg19", 16)]:
        model = built(name)
        assert sum(isinstance(l, MaskedConv2D) for l in model.layers) == n_conv
        assert sum(isinstance(l, keras.layers.BatchNormalization) for l in model.layers) == n_conv
        assert model.get_layer("output").kernel.shape == (512, 10)


def test_lenet_pattern():
    model = models.get("lenet_500_200_100")
    assert [l.name for l in model.layers] == ["input", "flatten", "fc1", "fc2", "fc3", "output"]
    assert [model.get_layer(n).units for n in ("fc1", "fc2", "fc3", "output")] == [500, 200, 100, 10]
    assert model.get_layer("fc1").activation is keras.activations.relu
    assert models.count_params(model) == 784 * 500 + 500 + 500 * 200 + 200 + 200 * 100 + 100 + 1010
    one = models.get("lenet_50")
    assert [l.name for l in one.layers] == ["input", "flatten", "fc1", "output"]


def test_explicit_shapes_and_classes():
    model = models.get("resnet20", (32, 32, 3), 100)
    assert model.output_shape == (None, 100)
    lenet = models.get("lenet_300_100", input_shape=[32, 32, 3], num_classes=10)
    assert lenet.get_layer("fc1").kernel.shape == (3072, 300)
    small = models.get("resnet18", (64, 64, 3), 200)
    y = small(np.zeros((1, 64, 64, 3), "float32"))
    assert y.shape == (1, 200)


def test_batchnorm_models_train_mode_and_gradients():
    model = built("resnet20")
    x = np.random.default_rng(1).normal(size=(2, 32, 32, 3)).astype("float32")
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None for g in grads)


# --- determinism ------------------------------------------------------------------------

def test_same_seed_same_weights_different_seed_different_weights():
    a = models.get("resnet20", seed=7)
    b = models.get("resnet20", seed=7)
    c = models.get("resnet20", seed=8)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(_np(va), _np(vb))
    ka = _np(a.get_layer("block1_1_conv1").kernel)
    kc = _np(c.get_layer("block1_1_conv1").kernel)
    assert not np.array_equal(ka, kc)
    # Same-shaped layers within one model are initialised differently.
    k2 = _np(a.get_layer("block1_1_conv2").kernel)
    assert not np.array_equal(ka, k2)
    assert _weights_digest(a) == _weights_digest(b) != _weights_digest(c)


def test_seed_is_deterministic_across_processes():
    here = _weights_digest(models.get("lenet_300_100", seed=5))
    code = (
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import sys; sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
        "import keras, tflth\n"
        "get = tflth.models.get\n"  # a bare `import tflth` exposes the registry
        "import test_models\n"
        "keras.utils.set_random_seed(123)\n"  # global state must not matter
        "keras.layers.Dense(4).build((None, 3))\n"
        "print(test_models._weights_digest(get('lenet_300_100', seed=5)))\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code, __file__], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == here


# --- errors -----------------------------------------------------------------------------

def test_unknown_name_lists_accepted_names():
    with pytest.raises(ValueError) as info:
        models.get("alexnet")
    message = str(info.value)
    assert "alexnet" in message
    for name in ("lenet_300_100", "resnet20", "vgg16", "resnet50", "conv6", "6n+2"):
        assert name in message
    for bad in ("vgg15", "conv3", "lenet", "lenet_", "resnet", "ResNet20", ""):
        with pytest.raises(ValueError, match="vgg|conv|lenet|resnet|6n\\+2|Unknown"):
            models.get(bad)
    with pytest.raises(ValueError, match="None"):
        models.get(None)


def test_vgg_and_conv_depth_errors_name_value():
    with pytest.raises(ValueError, match="15") as info:
        models.get("vgg15")
    assert "16" in str(info.value)
    with pytest.raises(ValueError, match="3"):
        models.get("conv3")


def test_resnet_depth_must_be_6n_plus_2():
    for depth in (22, 21, 2, 34):
        with pytest.raises(ValueError, match="6n\\+2") as info:
            models.get(f"resnet{depth}")
        assert str(depth) in str(info.value)


def test_options_are_what_get_accepts():
    assert models.options("resnet20") == ("width",) == models.options("resnet50")
    assert models.options("vgg16") == () == models.options("lenet_10_10")
    with pytest.raises(ValueError, match="Unknown model name 'nope'"):
        models.options("nope")


def test_bad_overrides():
    with pytest.raises(ValueError, match="'depth_multiplier'") as info:
        models.get("resnet20", depth_multiplier=2)
    assert "width" in str(info.value)
    with pytest.raises(ValueError, match="'width'") as info:
        models.get("lenet_300_100", width=2)
    assert "none" in str(info.value)
    for width in (0, -16, 2.5, "16", True, None):
        with pytest.raises(ValueError, match="width") as info:
            models.get("resnet20", width=width)
        assert repr(width) in str(info.value)
    with pytest.raises(ValueError, match="width"):
        models.get("resnet18", width=0)
    with pytest.raises(ValueError, match="hidden"):
        models.get("lenet_300_0")


def test_bad_shape_classes_seed():
    with pytest.raises(ValueError, match=r"\(32, 32\)"):
        models.get("vgg16", input_shape=(32, 32))
    with pytest.raises(ValueError, match="input_shape"):
        models.get("lenet_300_100", input_shape=(28, -1, 1))
    with pytest.raises(ValueError, match="num_classes.*0"):
        models.get("lenet_300_100", num_classes=0)
    with pytest.raises(ValueError, match="seed.*-1"):
        models.get("lenet_300_100", seed=-1)
    with pytest.raises(ValueError, match="seed"):
        models.get("lenet_300_100", seed=1.5)


def test_keras_save_load_round_trip(tmp_path):
    model = tflth.masked(models.get("resnet20", seed=3))
    path = str(tmp_path / "resnet20.keras")
    model.save(path)
    loaded = tflth.load_model(path)
    assert loaded.name == "resnet20"
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    assert masking.masks_of(loaded) == masking.masks_of(model)
    assert _weights_digest(loaded) == _weights_digest(model)
    x = np.random.default_rng(2).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(_np(loaded(x)), _np(model(x)), rtol=1e-5, atol=1e-5)

"""Tests for the vision transformer of the zoo, ``vit_tiny`` (``tflth.models.vit``; CPU, small batches)."""

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
from tflth import masking, presets
from tflth.models import vit


@functools.lru_cache(maxsize=None)
def built(input_shape=(28, 28, 1), num_classes=10, seed=0):
    return models.get("vit_tiny", input_shape, num_classes, seed=seed)


def _np(value):
    return value.numpy() if hasattr(value, "numpy") else np.asarray(value)


def _digest(model):
    h = hashlib.sha256()
    for v in model.weights:
        h.update(v.path.encode())
        h.update(np.ascontiguousarray(_np(v)).tobytes())
    return h.hexdigest()


def vit_params(height, width, channels, classes, patch, dim=64, depth=4, heads=4, mlp_dim=None):
    """Hand count: weights + biases of every layer, by the formula of each layer."""
    mlp_dim = 2 * dim if mlp_dim is None else mlp_dim
    key_dim = dim // heads
    tokens = (height // patch) * (width // patch) + 1
    patch_embed = patch * patch * channels * dim + dim
    cls, pos = dim, tokens * dim
    layer_norm = 2 * dim  # gamma, beta
    qkv = 3 * (dim * heads * key_dim + heads * key_dim)
    attn_out = heads * key_dim * dim + dim
    mlp = (dim * mlp_dim + mlp_dim) + (mlp_dim * dim + dim)
    block = layer_norm + qkv + attn_out + layer_norm + mlp
    head = dim * classes + classes
    return patch_embed + cls + pos + depth * block + layer_norm + head


# --- shapes and parameter counts -------------------------------------------------------

@pytest.mark.parametrize("shape,patch,tokens", [((28, 28, 1), 7, 17), ((32, 32, 3), 4, 65)])
def test_builds_with_default_patch_and_counts_params(shape, patch, tokens):
    model = built(shape)
    assert model.name == "vit_tiny"
    assert tuple(model.input_shape) == (None, *shape)
    assert tuple(model.output_shape) == (None, 10)
    assert model.get_layer("patch_embed").kernel_size == (patch, patch)
    assert model.get_layer("patch_embed").strides == (patch, patch)
    assert model.get_layer("pos_embed").embeddings.shape == (tokens, 64)
    assert model.get_layer("cls_token").cls.shape == (1, 1, 64)
    y = _np(model(np.random.default_rng(0).normal(size=(2, *shape)).astype("float32"), training=False))
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    expected = vit_params(*shape, 10, patch)
    assert models.count_params(model) == expected
    assert models.count_params(model) == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert expected == {(28, 28, 1): 139_018, (32, 32, 3): 142_026}[shape]  # the documented figures


def test_options_change_the_architecture():
    model = models.get("vit_tiny", (32, 32, 3), 100, patch_size=8, dim=48, depth=2, heads=3, mlp_dim=96)
    assert models.count_params(model) == vit_params(32, 32, 3, 100, 8, dim=48, depth=2, heads=3, mlp_dim=96)
    assert model.get_layer("block2_attn").num_heads == 3
    assert model.get_layer("block2_attn").key_dim == 16
    assert model.get_layer("block2_mlp1").units == 96
    assert "block3_attn" not in {l.name for l in model.layers}
    assert model.output_shape == (None, 100)


def test_layer_names_and_structure():
    model = built()
    names = [l.name for l in model.layers]
    block = lambda i: [f"block{i}_{n}" for n in ("norm1", "attn", "add1", "norm2", "mlp1", "mlp2", "add2")]
    assert names == ["input", "patch_embed", "tokens", "cls_token", "pos_embed",
                     *block(1), *block(2), *block(3), *block(4), "norm", "take_cls", "output"]
    assert isinstance(model.get_layer("cls_token"), vit.ClassToken)
    assert isinstance(model.get_layer("pos_embed"), vit.PositionEmbedding)
    assert not isinstance(model.get_layer("pos_embed"), keras.layers.Embedding)
    assert isinstance(model.get_layer("block1_attn"), keras.layers.MultiHeadAttention)
    assert model.get_layer("block1_mlp1").activation is keras.activations.gelu
    assert model.get_layer("output").activation is keras.activations.linear
    assert model.get_layer("norm").epsilon == 1e-6
    assert model.outputs[0] is model.get_layer("output").output


def test_initialisation():
    model = built()
    kernels = [m.variable for m in masking.maskable_variables(model).values()]
    for v in [*kernels, model.get_layer("cls_token").cls, model.get_layer("pos_embed").embeddings]:
        w = _np(v)
        assert np.max(np.abs(w)) <= 0.04 + 1e-7, v.path  # truncated at 2 stddev
        if w.size >= 1000:
            assert 0.015 < w.std() < 0.02, v.path  # 0.02 * 0.88 after truncation
    for v in model.weights:
        if v.name == "bias" or v.name == "beta":
            assert not np.any(_np(v)), v.path
        if v.name == "gamma":
            assert np.all(_np(v) == 1.0), v.path


# --- determinism -----------------------------------------------------------------------

def _attention_kernels(model, i=1):
    attn = model.get_layer(f"block{i}_attn")
    return [_np(d.kernel) for d in (attn.query_dense, attn.key_dense, attn.value_dense, attn.output_dense)]


def test_same_seed_same_weights_different_seed_different_weights():
    a, b, c = built(seed=3), models.get("vit_tiny", seed=3), models.get("vit_tiny", seed=4)
    assert [v.path for v in a.weights] == [v.path for v in b.weights]
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(_np(va), _np(vb))
    assert _digest(a) == _digest(b) != _digest(c)
    for name in ("patch_embed", "output"):
        assert not np.array_equal(_np(a.get_layer(name).kernel), _np(c.get_layer(name).kernel))
    assert not np.array_equal(_np(a.get_layer("pos_embed").embeddings), _np(c.get_layer("pos_embed").embeddings))


def test_attention_kernels_of_a_block_are_distinct():
    model = built()
    for i in (1, 4):
        q, k, v, o = _attention_kernels(model, i)
        flat = [q.ravel(), k.ravel(), v.ravel(), o.ravel()]
        for x in range(4):
            for y in range(x + 1, 4):
                assert not np.array_equal(flat[x], flat[y]), (i, x, y)
    assert not np.array_equal(_attention_kernels(model, 1)[0], _attention_kernels(model, 2)[0])
    # Same-shaped kernels in different layers differ too.
    assert not np.array_equal(_np(model.get_layer("block1_mlp1").kernel), _np(model.get_layer("block2_mlp1").kernel))


def test_seed_is_deterministic_across_processes():
    here = _digest(built(seed=5))
    code = (
        "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
        "import sys; sys.path.insert(0, os.path.dirname(sys.argv[1]))\n"
        "import keras, tflth\n"
        "import test_vit\n"
        "keras.utils.set_random_seed(123)\n"  # global state must not matter
        "keras.layers.MultiHeadAttention(2, 4)(keras.Input((3, 8)), keras.Input((3, 8)))\n"
        "print(test_vit._digest(tflth.models.get('vit_tiny', seed=5)))\n"
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", code, __file__], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == here


# --- errors ----------------------------------------------------------------------------

def test_bad_patch_size_names_the_value():
    with pytest.raises(ValueError, match="patch_size 5 does not divide the 28x28"):
        models.get("vit_tiny", patch_size=5)
    with pytest.raises(ValueError, match="patch_size 7 does not divide the 32x32"):
        models.get("vit_tiny", (32, 32, 3), 10, patch_size=7)
    with pytest.raises(ValueError, match="64x64.*patch_size"):
        models.get("vit_tiny", (64, 64, 3), 10)
    for bad in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="patch_size"):
            models.get("vit_tiny", patch_size=bad)


def test_other_bad_options():
    with pytest.raises(ValueError, match="heads 3 does not divide dim 64"):
        models.get("vit_tiny", heads=3)
    for option in ("dim", "depth", "heads", "mlp_dim"):
        with pytest.raises(ValueError, match=option):
            models.get("vit_tiny", **{option: 0})
    with pytest.raises(ValueError, match="Unknown option.*'width'.*patch_size, dim, depth, heads, mlp_dim"):
        models.get("vit_tiny", width=32)
    with pytest.raises(ValueError, match="height, width, channels"):
        models.get("vit_tiny", (784,), 10)


# --- registry and preset ---------------------------------------------------------------

def test_registry_and_preset():
    assert "vit_tiny" in models.names()
    assert models.default_dataset("vit_tiny") == "mnist"
    assert models.options("vit_tiny") == ("patch_size", "dim", "depth", "heads", "mlp_dim")
    for bad in ("vit", "vit_small", "VIT_TINY"):
        with pytest.raises(ValueError, match="Unknown model name"):
            models.get(bad)
    p = presets.get("vit_tiny_mnist")
    assert presets.for_model("vit_tiny") is p
    assert (p.run.dataset.name, p.run.model.name, p.rewind_step) == ("mnist", "vit_tiny", "0it")
    t = p.run.training
    assert (t.optimizer, t.lr, t.batch_size, t.training_steps) == ("adamw", 1e-3, 128, "10ep")
    assert (p.pruning.scope, p.pruning.strategy, p.pruning.fraction) == ("global", "magnitude", 0.2)
    assert dict(p.pruning.layer_rates) == {"output": 0.0}


# --- masking and saving ----------------------------------------------------------------

def test_maskable_variables_are_the_kernels():
    model = built()
    expected = ["patch_embed/kernel"]
    for i in range(1, 5):
        expected += [f"block{i}_attn/{p}/kernel" for p in ("query", "key", "value", "attention_output")]
        expected += [f"block{i}_mlp1/kernel", f"block{i}_mlp2/kernel"]
    expected.append("output/kernel")
    assert list(masking.maskable_variables(model)) == expected
    assert masking.output_layer_path(model) == "output"
    assert list(masking.select(model, exclude_output=True)) == expected[:-1]
    assert list(masking.select(model, ["+pos_embed/*", "+cls_token/*"])) == ["cls_token/cls", "pos_embed/embeddings"]


def test_trains_every_variable():
    import tensorflow as tf

    model = built()
    x = np.random.default_rng(1).normal(size=(2, 28, 28, 1)).astype("float32")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    grads = tape.gradient(loss, model.trainable_weights)
    assert all(g is not None and np.any(_np(g)) for g in grads)


def test_keras_round_trip(tmp_path):
    model = built((32, 32, 3), seed=2)
    path = str(tmp_path / "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("cls_token")) is vit.ClassToken
    assert type(loaded.get_layer("pos_embed")) is vit.PositionEmbedding
    assert type(loaded.get_layer("take_cls")) is vit.TakeClassToken
    assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(_np(a), _np(b))
    x = np.random.default_rng(2).normal(size=(3, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(_np(model(x, training=False)), _np(loaded(x, training=False)))
    assert tflth.models.count_params(loaded) == vit_params(32, 32, 3, 10, 4)

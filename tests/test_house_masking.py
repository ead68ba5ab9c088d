"""tflth.masking: the head found from the graph (tied embeddings included), .keras files of
tflth 0.1, rewind points that do not fit the optimizer, and gradient clipping by norm."""

import io
import json
import os
import zipfile

import h5py
import keras
import numpy as np
import pytest

import tflth
from tflth import export, masking
from tflth.masking import MaskError, RewindError


# --------------------------------------------------------------------- the head from the graph


class TiedOutput(keras.layers.Layer):
    """Logits from the input embedding matrix: ``x @ embeddings.T`` (weights tied)."""

    def __init__(self, embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.embedding.embeddings))


def tied_lm(vocab=20, dim=8):
    """A tiny causal-LM-like functional model: embedding, a block, a head tied to the embedding.
    The embedding is created first, so the last maskable variable is the block's kernel."""
    ids = keras.Input((5,), dtype="int32", name="token_ids")
    embedding = keras.layers.Embedding(vocab, dim, name="token_embedding")
    h = embedding(ids)
    h = h + keras.layers.Dense(dim, name="ffn_out")(keras.layers.Dense(2 * dim, activation="relu", name="ffn_in")(h))
    h = keras.layers.LayerNormalization(name="final_norm")(h)
    logits = TiedOutput(embedding, name="lm_head")(h)
    return keras.Model(ids, keras.layers.Activation("linear", name="logits")(logits), name="tied_lm")


def test_tied_head_is_the_embedding_not_the_last_feed_forward_kernel():
    model = tied_lm()
    maskable = list(masking.maskable_variables(model))
    assert maskable[-1] == "ffn_out/kernel"  # what "the last maskable variable" would have taken
    assert masking.output_variables(model) == ["token_embedding/embeddings"]
    assert masking.output_layer_path(model) == "token_embedding"
    assert list(masking.select(model, exclude_output=True)) == ["ffn_in/kernel", "ffn_out/kernel"]
    tflth.masked(model, exclude_output=True)
    assert "ffn_out/kernel" in masking.masks_of(model) and "token_embedding/embeddings" not in masking.masks_of(model)


def test_dense_head_behind_activations_and_a_nested_model():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    h = keras.layers.Dense(3, name="head")(h)
    model = keras.Model(inputs, keras.layers.Softmax(name="probs")(keras.layers.Dropout(0.1)(h)), name="net")
    assert masking.output_variables(model) == ["head/kernel"]
    assert list(masking.select(model, exclude_output=True)) == ["hidden/kernel"]
    outer_in = keras.Input((6,))
    outer = keras.Model(outer_in, keras.layers.Activation("relu")(model(outer_in)), name="outer")
    assert masking.output_variables(outer) == ["head/kernel"]
    sequential = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b"),
                                   keras.layers.Activation("softmax")], name="seq")
    assert masking.output_variables(sequential) == ["seq/b/kernel"]


def test_two_outputs_give_two_heads():
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="trunk")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(2, name="a")(h), keras.layers.Dense(3, name="b")(h)])
    assert sorted(masking.output_variables(model)) == ["a/kernel", "b/kernel"]
    assert list(masking.select(model, exclude_output=True)) == ["trunk/kernel"]


class SubclassedLM(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = keras.layers.Embedding(20, 8, name="embed")
        self.ffn = keras.layers.Dense(8, name="ffn")

    def call(self, ids):
        h = self.ffn(self.embedding(ids))
        return keras.ops.matmul(h, keras.ops.transpose(self.embedding.embeddings))


def test_subclassed_model_with_embeddings_is_refused_in_one_line():
    model = SubclassedLM(name="sub_lm")
    model(np.zeros((1, 5), "int32"))
    with pytest.raises(MaskError) as info:
        masking.select(model, exclude_output=True)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "sub_lm" in message and "no layer graph" in message, message
    assert "patterns=['!sub_lm/ffn']" in message  # says how to name the output layer instead
    assert list(masking.select(model, ["!embed"])) == ["sub_lm/ffn/kernel"]  # patterns still work


# --------------------------------------------------------------------- .keras files of tflth 0.1


def _plain_net():
    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc"), keras.layers.Dense(2, name="out")],
                            name="net")


def write_tflth_01_file(path, model, masks, registered="tflth>MaskedDense"):
    """A .keras file as tflth 0.1 wrote it: the model saved by Keras, then every Dense's config
    renamed to ``registered`` (0.1's MaskedDense, same config), its weight group renamed after
    the class (Keras names groups by class) and ``masks[layer name]`` added as ``mask``."""
    plain = str(path) + ".plain.keras"
    model.save(plain)
    class_name = registered.split(">")[1]
    snake = {"MaskedDense": "masked_dense", "MaskedFoo": "masked_foo"}[class_name]
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(path, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                names = []
                for layer in config["config"]["layers"]:
                    if layer["class_name"] == "Dense":
                        names.append(layer["config"]["name"])
                        layer.update(class_name=class_name, module="tflth.layers", registered_name=registered)
                data = json.dumps(config).encode()
            elif item.filename == "model.weights.h5":
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as h5:
                    for i, name in enumerate(names):
                        group = f"layers/{snake}" + (f"_{i}" if i else "")
                        h5.move(f"layers/dense" + (f"_{i}" if i else ""), group)
                        if name in masks:
                            h5[f"{group}/vars"].create_dataset("mask", data=masks[name].astype("float32"))
                data = buffer.getvalue()
            target.writestr(item, data)
    os.remove(plain)
    return str(path)


def test_a_tflth_01_file_loads_as_todays_masked_model(tmp_path):
    model = _plain_net()
    keep = np.ones((4, 3), bool)
    keep[:, 0] = False
    keep[1, 2] = False
    path = write_tflth_01_file(tmp_path / "old.keras", model, {"fc": keep})
    with pytest.raises(Exception):  # plain Keras cannot: the class is gone
        keras.saving.load_model(path)
    loaded = tflth.load_model(path)
    assert type(loaded.get_layer("fc")) is keras.layers.Dense and type(loaded.get_layer("out")) is keras.layers.Dense
    masks = masking.masks_of(loaded)
    assert np.array_equal(masks["fc/kernel"], keep) and masks["out/kernel"].all()  # no mask stored: all kept
    expected = np.where(keep, model.get_layer("fc").kernel.numpy(), 0)
    assert np.array_equal(loaded.get_layer("fc").kernel.numpy(), expected)
    assert np.array_equal(loaded.get_layer("out").kernel.numpy(), model.get_layer("out").kernel.numpy())
    # saved again, it is today's format: plain Keras reads it, tflth reads its masks
    loaded.save(tmp_path / "new.keras")
    with zipfile.ZipFile(tmp_path / "new.keras") as archive:
        assert "tflth>" not in archive.read("config.json").decode()
    assert masking.masks_of(tflth.load_model(tmp_path / "new.keras")) == masks
    # the exporter reads it too
    assert masking.masks_of(export.load(path)) == masks


def test_a_file_naming_an_unknown_tflth_01_class_is_one_line(tmp_path):
    path = write_tflth_01_file(tmp_path / "odd.keras", _plain_net(), {}, registered="tflth>MaskedFoo")
    with pytest.raises(masking.LegacyFileError) as info:
        tflth.load_model(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and "tflth 0.1" in message and "tflth>MaskedFoo" in message
    assert "tflth.unmasked(model)" in message  # how to convert
    with pytest.raises(export.ExportError, match="tflth 0.1"):
        export.load(path)


# --------------------------------------------------------------------- rewind with the optimizer


def _fit_with(optimizer, steps=2):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    tflth.masked(model)
    point = masking.RewindPoint(step=1)
    model.compile(optimizer, "mse")
    x, y = np.ones((8, 4), "float32"), np.ones((8, 3), "float32")
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[point])
    return model, point, (x, y)


def test_rewind_optimizer_state_that_does_not_fit_is_refused_and_changes_nothing():
    model, point, (x, y) = _fit_with(keras.optimizers.SGD(0.1, momentum=0.9))
    model.compile(keras.optimizers.Adam(0.1), "mse")  # more slots than the point kept
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(RewindError) as info:
        masking.rewind(model, point, optimizer=True)
    message = str(info.value)
    assert isinstance(info.value, MaskError) and isinstance(info.value, ValueError)
    assert len(message.splitlines()) == 1 and "RewindPoint(step=1) kept" in message and "Adam" in message, message
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.weights))  # nothing changed


def test_rewind_optimizer_state_of_the_same_optimizer_is_restored():
    model, point, _ = _fit_with(keras.optimizers.SGD(0.1, momentum=0.9))
    masking.rewind(model, point, optimizer=True)
    assert all(np.array_equal(v.numpy(), kept) for v, kept in zip(model.optimizer.variables, point.optimizer_state))


def test_rewind_point_with_other_shapes_is_refused():
    model, point, _ = _fit_with(keras.optimizers.SGD(0.1))
    with pytest.raises(RewindError, match="has shape"):
        masking.rewind(model, {p: np.zeros((1,)) for p in point.weights})


# --------------------------------------------------------------------- clipping by norm sees pruned gradients


def _one_clipped_step(**clip):
    """One model.fit step of a masked Dense whose pruned column has large gradients; returns
    (survivors' update, gradient with every entry, mask, learning rate)."""
    import tensorflow as tf

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, use_bias=False, name="fc")], name="net")
    keep = np.ones((4, 3), bool)
    keep[:, 0] = False
    masking.apply_masks(model, {"net/fc/kernel": keep})
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32")
    y = np.zeros((8, 3), "float32")
    y[:, 0] = 100.0  # the pruned unit's target: its kernel column gets large gradients
    loss = keras.losses.MeanSquaredError()
    kernel = model.get_layer("fc").kernel
    with tf.GradientTape() as tape:
        value = loss(y, model(x, training=True))
    gradient = tape.gradient(value, kernel).numpy()
    before = kernel.numpy().copy()
    model.compile(keras.optimizers.SGD(1.0, **clip), loss)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return kernel.numpy() - before, gradient, keep, 1.0


def _clip_by_norm(g, limit):
    norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    return g * (limit / max(norm, limit))


@pytest.mark.parametrize("clip", ["clipnorm", "global_clipnorm"])
def test_clipping_by_norm_counts_the_pruned_entries_gradients(clip):
    update, gradient, keep, lr = _one_clipped_step(**{clip: 0.5})
    assert np.all(update[~keep] == 0)  # pruned entries stay zero
    seen = -lr * _clip_by_norm(gradient, 0.5)  # the norm includes the pruned entries
    masked = -lr * _clip_by_norm(np.where(keep, gradient, 0), 0.5)  # a per-step-masked model's step
    assert np.allclose(update[keep], seen[keep], rtol=1e-4, atol=1e-6)
    assert not np.allclose(update[keep], masked[keep], rtol=1e-2)
    assert np.abs(update[keep]).sum() < np.abs(masked[keep]).sum()  # survivors take a smaller step


def test_clipping_by_value_is_elementwise_and_matches_a_masked_model():
    update, gradient, keep, lr = _one_clipped_step(clipvalue=0.05)
    masked = -lr * np.clip(np.where(keep, gradient, 0), -0.05, 0.05)
    assert np.allclose(update[keep], masked[keep], rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- detaching masks (public)


def test_masks_detached_hides_the_masks_within_the_block_only():
    from tflth.masking import state

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    tflth.masked(model)
    with state.masks_detached(model):
        assert not masking.has_masks(model)
    assert masking.has_masks(model) and list(masking.masks_of(model)) == ["net/fc/kernel"]


def test_a_minus_pattern_never_brings_the_head_back():
    """One rule: exclude_output leaves the head out of the default selection, with or
    without '!' patterns (before, any '!' pattern silently masked the head again); a plain
    pattern that names the head masks it."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, name="a")(inputs)
    h = keras.layers.Dense(8, name="b")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h), name="net")
    assert list(masking.select(model, ["!a"], exclude_output=True)) == ["b/kernel"]
    assert list(masking.select(model, ["!a"])) == ["b/kernel", "head/kernel"]
    assert list(masking.select(model, ["head"], exclude_output=True)) == ["head/kernel"]

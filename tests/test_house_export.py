"""tflth.export: LiteRT of models that do not take one float tensor, the Keras-version
fallback taken only for an unknown format, and broad excepts that catch what they mean."""

import sys

import keras
import numpy as np
import pytest

from tflth import export
from tflth.export import litert


def two_input_model():
    """Token ids and a padding mask, as a KerasHub causal LM takes them."""
    ids = keras.Input((6,), dtype="int32", name="token_ids")
    mask = keras.Input((6,), dtype="int32", name="padding_mask")
    h = keras.layers.Embedding(20, 4, name="embed")(ids)
    h = h * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    logits = keras.layers.Dense(3, name="head")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model({"token_ids": ids, "padding_mask": mask}, logits, name="lm")


@pytest.mark.parametrize("sparsity", [False, True])
def test_litert_of_a_two_input_model_is_one_export_error(sparsity):
    model = two_input_model()
    for call in (lambda: litert.litert_bytes(model, sparsity), lambda: litert.checked_litert_bytes(model, sparsity)):
        with pytest.raises(export.ExportError) as info:
            call()
        message = str(info.value)
        assert len(message.splitlines()) == 1, message
        assert "Model 'lm' takes 2 inputs" in message and "token_ids int32" in message, message
        assert "padding_mask int32" in message and "one float input" in message, message


def test_litert_render_of_an_integer_input_model_is_refused_before_converting(monkeypatch):
    ids = keras.Input((6,), dtype="int32")
    model = keras.Model(ids, keras.layers.Dense(2)(keras.layers.Flatten()(keras.layers.Embedding(9, 2)(ids))),
                        name="ids_only")
    monkeypatch.setattr(type(model), "export", lambda *a, **k: pytest.fail("converted anyway"))
    with pytest.raises(export.ExportError, match=r"Model 'ids_only' takes 1 input \(.*int32"):
        litert.litert_bytes(model)


def test_a_subclassed_image_model_is_converted_and_checked(tmp_path):
    pytest.importorskip("ai_edge_litert.interpreter")
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    import layer_zoo

    model = layer_zoo.subclassed()
    path = export.to_litert(model, tmp_path / "sub.tflite")
    lite = export.LiteRTModel(path)
    assert lite.input_shape == (None, 28, 28, 1) and lite.input_count == 1
    x = np.random.default_rng(1).normal(size=(3, 28, 28, 1)).astype("float32")
    assert np.allclose(lite(x), model(x, training=False), atol=1e-4)


class _Refusing:
    """Stands in for a Keras model whose ``export(format="litert")`` raises ``error``; records the calls."""

    name = "stand_in"
    inputs = None

    def __init__(self, error):
        self.error, self.calls = error, []

    def export(self, path, format, **kwargs):
        self.calls.append(format)
        if format == "litert":
            raise self.error
        raise RuntimeError("fallback conversion ran")


def test_a_data_format_refusal_is_not_mistaken_for_an_unknown_format():
    model = _Refusing(ValueError("The LiteRT converter does not support data_format='channels_first' for Conv2D."))
    with pytest.raises(export.ExportError) as info:
        litert.litert_bytes(model)
    assert model.calls == ["litert"], model.calls  # no fallback through tf_saved_model
    assert "data_format='channels_first'" in str(info.value) and "ValueError" in str(info.value)


def test_a_keras_without_litert_falls_back_to_the_saved_model_converter():
    model = _Refusing(ValueError("Unrecognized format=litert. Supported formats are: ['tf_saved_model', 'onnx']."))
    with pytest.raises(export.ExportError, match="fallback conversion ran"):
        litert.litert_bytes(model)
    assert model.calls == ["litert", "tf_saved_model"]

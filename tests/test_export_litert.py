"""tflth.export.to_litert: the .tflite (float32, with and without the converter's sparsity)
predicts what the masked model does; without ai-edge-litert, one ExportError saying what to install."""

import sys

import numpy as np
import pytest

import tflth
from tflth import export, masking, models


def _ticket(name, density, **kw):
    model = tflth.masked(models.get(name, seed=0, **kw))
    rng = np.random.default_rng(0)
    masking.apply_masks(model, {p: rng.random(s) < density for p, s in masking.shapes(model).items()})
    return model


@pytest.mark.parametrize("sparsity", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("name,kw", [("lenet_300_100", {}), ("conv2", {"input_shape": (12, 12, 1), "num_classes": 10})],
                         ids=["lenet_300_100", "conv2"])
def test_tflite_predicts_what_the_masked_model_does(tmp_path, name, kw, sparsity):
    pytest.importorskip("ai_edge_litert.interpreter")
    model = _ticket(name, 0.1, **kw)
    path = export.to_litert(model, tmp_path / "m.tflite", sparsity=sparsity)
    x = np.random.default_rng(1).normal(size=(64, *model.input_shape[1:])).astype("float32")
    want = np.asarray(model(x, training=False))
    got = export.LiteRTModel(path, num_threads=1)(x)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_without_the_interpreter_litert_is_one_export_error_saying_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # import ai_edge_litert... raises ImportError
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(export.ExportError) as info:
        export.to_litert(_ticket("lenet_300_100", 0.5), tmp_path / "m.tflite")
    message = str(info.value)
    assert "pip install 'tflth[litert]'" in message and len(message.splitlines()) == 1
    assert not (tmp_path / "m.tflite").exists()

"""tflth.models.factory: a bug in a model function (the user's or the zoo's) keeps its type
and traceback; only a reference that cannot be imported or looked up, or a model built for
another dataset, is a one-line HparamError."""

import textwrap

import pytest

from tflth import models
from tflth.hparams import HparamError, ModelHparams

SHAPE, CLASSES = (28, 28, 1), 10


def _module(tmp_path, body, name="user_models.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


USER = """
import keras, numpy as np

class Boom(RuntimeError):
    pass

def raises(seed=0, input_shape=(28, 28, 1), num_classes=10):
    raise Boom("a bug inside the user's function")

def other_shape(seed=0, input_shape=(28, 28, 1), num_classes=10):
    inputs = keras.Input((32, 32, 3))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))

class Faulty(keras.layers.Layer):
    def call(self, x):
        raise ValueError("a bug in the model's own call")

def faulty_call(seed=0, input_shape=(28, 28, 1), num_classes=10):
    inputs = keras.Input(input_shape)
    h = keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, h)
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.inner, self.bad = model, Faulty()
        def call(self, x):
            return self.bad(self.inner(x)) if getattr(self, "armed", False) else self.inner(x)
    sub = Sub()
    sub(np.zeros((1, *input_shape), "float32"))
    sub.armed = True
    return sub

class Flat(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.dense = keras.layers.Dense(num_classes)

    def call(self, x):
        return self.dense(x)

def flat_dense(seed=0, input_shape=(28, 28, 1), num_classes=10):
    model = Flat(num_classes)  # subclassed: no declared input
    model(np.zeros((1, 784), "float32"))  # built for flat inputs: Keras's input check refuses images
    return model
"""


def test_an_exception_inside_the_users_function_propagates_with_its_type(tmp_path):
    path = _module(tmp_path, USER)
    factory = models.factory(ModelHparams(f"{path}:raises"), SHAPE, CLASSES)
    with pytest.raises(RuntimeError, match="a bug inside the user's function") as info:
        factory.check()
    assert type(info.value).__name__ == "Boom" and not isinstance(info.value, HparamError)


def test_an_exception_inside_the_models_call_propagates(tmp_path):
    path = _module(tmp_path, USER)
    factory = models.factory(ModelHparams(f"{path}:faulty_call"), SHAPE, CLASSES)
    with pytest.raises(ValueError, match="a bug in the model's own call") as info:
        factory.check()
    assert not isinstance(info.value, HparamError)


def test_a_zoo_factorys_bug_propagates(monkeypatch):
    from tflth.models import registry

    def broken(*args, **kwargs):
        raise ZeroDivisionError("zoo bug")

    monkeypatch.setattr(registry, "get", broken)
    with pytest.raises(ZeroDivisionError, match="zoo bug"):
        models.factory(ModelHparams("lenet_300_100"), SHAPE, CLASSES).check()


def test_a_model_for_another_input_shape_is_one_line(tmp_path):
    path = _module(tmp_path, USER)
    for function, found in (("other_shape", r"takes inputs of shape \(None, 32, 32, 3\)"),
                            ("flat_dense", r"cannot take a batch of shape \(2, 28, 28, 1\)")):
        with pytest.raises(HparamError, match=found) as info:
            models.factory(ModelHparams(f"{path}:{function}"), SHAPE, CLASSES).check()
        assert len(str(info.value).splitlines()) == 1 and info.value.reference == "ModelHparams.name"


def test_a_module_whose_code_raises_on_import_propagates(tmp_path):
    path = _module(tmp_path, "x = undefined_name\n", name="broken_at_import.py")
    with pytest.raises(NameError, match="undefined_name"):
        models.factory(ModelHparams(f"{path}:build"), SHAPE, CLASSES)


def test_references_that_cannot_be_imported_or_found_are_one_line(tmp_path):
    not_python = _module(tmp_path, "def build(:\n", name="not_python.py")
    cases = [(f"{not_python}:build", "it is not valid Python"),
             ("no_such_module_xyz:build", "cannot import 'no_such_module_xyz'"),
             (f"{tmp_path / 'missing.py'}:build", "there is no file"),
             (f"{_module(tmp_path, USER)}:nothing", "has no attribute 'nothing'")]
    for reference, found in cases:
        with pytest.raises(HparamError, match=found) as info:
            models.factory(ModelHparams(reference), SHAPE, CLASSES)
        assert len(str(info.value).splitlines()) == 1 and str(info.value).startswith("ModelHparams.name=")

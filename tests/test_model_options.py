"""A zoo model's own options (``ModelHparams.options``, ``--model_options``): validated,
part of the run name, forwarded to the builder, refused for models that lack them."""

import json
import os

import pytest
from absl.testing import flagsaver

from tflth import models
from tflth.cli import flags as tflags
from tflth.cli import train as train_cli
from tflth.hparams import HparamError, ModelHparams

from helpers import write_synthetic_npz

TINY = dict(dataset="mnist", batch_size=32, training_steps="4it", eval_every="4it", checkpoint_every="4it")


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


def test_options_are_sorted_and_a_dict_is_accepted():
    a = ModelHparams("vit_tiny", options=(("dim", 32), ("depth", 2)))
    b = ModelHparams("vit_tiny", options={"depth": 2, "dim": 32})
    assert a.options == b.options == (("depth", 2), ("dim", 32))


@pytest.mark.parametrize("options", [(("depth", 0),), (("depth", -1),), (("depth", True),), (("depth", 2.5),),
                                     (("", 2),), (("depth", 2), ("depth", 3))])
def test_bad_options_name_the_field(options):
    with pytest.raises(HparamError, match=r"ModelHparams\.options"):
        ModelHparams("vit_tiny", options=options)


def test_flag_parses_name_equals_integer():
    assert tflags.parse(ModelHparams, "options", ["dim=32", " depth=2"]) == (("dim", 32), ("depth", 2))
    assert tflags.parse(ModelHparams, "options", []) == ()


@pytest.mark.parametrize("item", ["dim", "dim=", "dim=x", "=3", "dim=1.5"])
def test_bad_flag_entry_is_named(item):
    with pytest.raises(HparamError, match=rf"--model_options entry '{item}' is invalid: expected name=integer"):
        tflags.parse(ModelHparams, "options", [item])


def test_options_reach_the_builder():
    factory = models.factory(ModelHparams("vit_tiny", options={"depth": 1, "dim": 16, "heads": 2, "mlp_dim": 8}),
                             (28, 28, 1), 10)
    model = factory(0)
    attention = [layer.name for layer in model.layers if layer.name.endswith("_attn")]
    assert attention == ["block1_attn"], [layer.name for layer in model.layers]
    assert model.get_layer("block1_mlp1").kernel.shape == (16, 8)
    assert model.get_layer("output").kernel.shape == (16, 10)


def _fails(capsys, **values):
    with flagsaver.flagsaver(**values), pytest.raises(SystemExit) as info:
        train_cli.main(["train"])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_unknown_option_is_one_line_exit_2(data_path, tmp_path, capsys):
    err = _fails(capsys, model="vit_tiny", model_options=["depht=2"], data_dir=data_path, output_dir=str(tmp_path),
                 **TINY)
    assert "--model_options=depht=2: model 'vit_tiny' has no option depht; expected some of" in err, err
    assert "'depth'" in err and os.listdir(tmp_path) == []


def test_option_of_a_model_without_options_is_refused(data_path, tmp_path, capsys):
    err = _fails(capsys, model="lenet_32_16", model_options=["depth=2"], data_dir=data_path,
                 output_dir=str(tmp_path), **TINY)
    assert "model 'lenet_32_16' has no option depth" in err, err
    assert os.listdir(tmp_path) == []


def test_bad_entry_is_one_line_exit_2(data_path, tmp_path, capsys):
    err = _fails(capsys, model="vit_tiny", model_options=["depth=two"], data_dir=data_path,
                 output_dir=str(tmp_path), **TINY)
    assert "--model_options entry 'depth=two' is invalid" in err, err


def test_options_name_the_run_and_are_recorded(data_path, tmp_path, capsys):
    runs = {}
    for options in (["depth=1", "dim=16"], ["dim=16", "depth=1"], ["depth=1", "dim=24"]):
        out = tmp_path / "_".join(options)
        with flagsaver.flagsaver(model="vit_tiny", model_options=options, data_dir=data_path, output_dir=str(out),
                                 **TINY):
            train_cli.main(["train"])
        (run,) = os.listdir(out)
        with open(out / run / "hparams.json") as f:
            runs[tuple(options)] = (run, json.load(f)["model"]["options"])
    first, same, other = runs.values()
    assert first == same  # order of the flag's entries does not matter
    assert first[1] == [["depth", 1], ["dim", 16]]
    assert other[0] != first[0]

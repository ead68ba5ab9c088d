"""Your own model in the binaries: ``--model=package.module:function`` (or ``file.py:function``).

bin/prune.py and bin/stability.py run a 2-level IMP and a 2-k sweep on real Fashion-MNIST
with a model of the tests (``layer_zoo:build``), the zoo's ViT by name, and a KerasHub
ViTBackbone with a head, and a file-path reference with ``--prune`` globs (the slow job,
``make test-slow``: minutes on 2 cores); bad references are one line, exit 2, nothing
written (default suite).
"""

import json
import os
import subprocess
import sys

import pytest
from absl.testing import flagsaver

from tflth.cli import prune as prune_cli

from helpers import write_synthetic_npz
from test_cli_train import _snapshot

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FMNIST = "/usr/share/datasets/fashion-mnist"
ENV = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""), TF_CPP_MIN_LOG_LEVEL="3")
needs_fmnist = pytest.mark.skipif(not os.path.isdir(FMNIST), reason="Debian's dataset-fashion-mnist is not installed")

COMMON = ["--dataset=fashion_mnist", f"--data_dir={FMNIST}", "--batch_size=64", "--training_steps=12it",
          "--eval_every=6it", "--checkpoint_every=6it", "--optimizer=adam", "--lr=1e-3"]


def _bin(name, *args, output_dir):
    out = subprocess.run([sys.executable, os.path.join(ROOT, "bin", f"{name}.py"), *args, f"--output_dir={output_dir}"],
                         env=ENV, capture_output=True, text=True, timeout=600, cwd=HERE)
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


def _prune_then_stability(model, tmp_path, stability=True):
    out = _bin("prune", f"--model={model}", *COMMON, "--levels=2", "--rewind_step=2it", output_dir=tmp_path)
    assert "level  2 imp" in out, out
    (exp,) = [d for d in os.listdir(tmp_path) if d.startswith("lottery_")]
    stored = json.load(open(tmp_path / exp / "hparams.json"))
    assert stored["run"]["model"]["name"] == model  # the reference names and resumes the run
    again = _bin("prune", f"--model={model}", *COMMON, "--levels=2", "--rewind_step=2it", output_dir=tmp_path)
    assert again.splitlines()[-1] == out.splitlines()[-1]  # finished: read back, not retrained
    if stability:
        out = _bin("stability", f"--model={model}", *COMMON, "--rewind_steps=0it,4it", "--interpolation_points=3",
                   "--train_examples=0", f"--experiment={tmp_path / exp}", "--levels=0,2", output_dir=tmp_path)
        assert [d for d in os.listdir(tmp_path) if d.startswith("stability_")], out
    return tmp_path / exp


@pytest.mark.slow  # minutes on 2 cores: the CI's slow job (make test-slow)
@needs_fmnist
def test_own_functional_model_runs_imp_and_a_sweep(tmp_path):
    exp = _prune_then_stability("layer_zoo:build", tmp_path)
    density = json.load(open(exp / "replicate_0" / "level_1" / "density.json"))
    # the default for your own model: every maskable kernel but the output layer's
    assert not any(p.startswith("dense") and "kernel" in p for p in density["layers"]), density["layers"]
    assert any("/query/kernel" in p for p in density["layers"]) and any(p.startswith("conv1d") for p in density["layers"])


@pytest.mark.slow
@needs_fmnist
def test_file_path_reference_and_prune_globs(tmp_path):
    _bin("prune", f"--model={os.path.join(HERE, 'layer_zoo.py')}:build", *COMMON, "--levels=1",
         "--prune=*/query/kernel,*/key/kernel", output_dir=tmp_path)
    (exp,) = [d for d in os.listdir(tmp_path) if d.startswith("lottery_")]
    density = json.load(open(tmp_path / exp / "replicate_0" / "level_1" / "density.json"))
    assert sorted(density["layers"]) == ["multi_head_attention/key/kernel", "multi_head_attention/query/kernel"]


@pytest.mark.slow  # minutes on 2 cores: the CI's slow job (make test-slow)
@needs_fmnist
def test_zoo_vit_by_name_runs_imp_and_a_sweep(tmp_path):
    _prune_then_stability("vit_tiny", tmp_path)


@pytest.mark.slow  # minutes on 2 cores: the CI's slow job (make test-slow)
@needs_fmnist
def test_keras_hub_vit_backbone_runs_two_imp_levels(tmp_path):
    pytest.importorskip("keras_hub")
    _prune_then_stability("layer_zoo:hub_vit", tmp_path, stability=False)


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


BAD = [
    ("no_such_module_xyz:build", r"--model='no_such_module_xyz:build' is invalid: cannot import 'no_such_module_xyz'"),
    ("layer_zoo:nothing_here", r"module 'layer_zoo' has no attribute 'nothing_here'"),
    ("layer_zoo:NOT_CALLABLE", r"'NOT_CALLABLE' in 'layer_zoo' is a int, not a function"),
    ("layer_zoo:not_a_model", r"it returned str, expected a keras.Model"),
    ("layer_zoo:wrong_classes", r"output for a batch of 2 has shape \(2, 11\); expected class logits \(2, 10\)"),
    ("/nonexistent/file.py:build", r"there is no file /nonexistent/file.py"),
    ("layer_zoo:", r"expected package.module:function or path/to/file.py:function"),
]


@pytest.mark.parametrize("model,pattern", BAD, ids=[m for m, _ in BAD])
def test_bad_reference_one_line_exit_2_nothing_written(data_path, tmp_path, capsys, model, pattern):
    import re

    sys.path.insert(0, HERE)
    before = _snapshot(tmp_path)
    values = dict(model=model, dataset="mnist", data_dir=data_path, output_dir=str(tmp_path), batch_size=32,
                  training_steps="8it", levels=1)
    with flagsaver.flagsaver(**values), pytest.raises(SystemExit) as info:
        prune_cli.main(["prune"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and re.search(pattern, err), err
    assert err.startswith("pytest: error: --model=") or ": error: --model=" in err, err
    assert _snapshot(tmp_path) == before


def test_own_model_needs_a_dataset(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(model="layer_zoo:build", output_dir=str(tmp_path)), pytest.raises(SystemExit) as info:
        prune_cli.main(["prune"])
    assert info.value.code == 2 and "give --dataset" in capsys.readouterr().err

"""bin/export.py on a tiny IMP run made by bin/prune.py: a level and a control exported in a real
process (what was written loads back and computes what the ticket does); every bad input is
one line on stderr, exit 2, no traceback, no file written."""

import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from absl.testing import flagsaver

import tflth
from tflth import export, masking
from tflth.cli import export as export_cli

from helpers import write_synthetic_npz
from test_cli_train import _snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPORT, PRUNE = (os.path.join(ROOT, "bin", f"{b}.py") for b in ("export", "prune"))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """``(experiment dir, level 1, its random_prune control)`` of one tiny IMP run of channel
    pruning (whole units go, so the shrunk model is smaller)."""
    root = tmp_path_factory.mktemp("export_runs")
    data = write_synthetic_npz(root / "synthetic.npz")
    out = subprocess.run([sys.executable, PRUNE, "--model=lenet_32_16", "--dataset=mnist", f"--data_dir={data}",
                          f"--output_dir={root / 'runs'}", "--batch_size=32", "--training_steps=16it",
                          "--eval_every=8it", "--checkpoint_every=8it", "--levels=1", "--controls=random_prune",
                          "--pruning_strategy=channels", "--pruning_scope=layerwise"],
                         env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (exp,) = (root / "runs").iterdir()
    level = exp / "replicate_0" / "level_1"
    return str(exp), str(level), str(level / "random_prune")


def _export(*args, env=ENV):
    return subprocess.run([sys.executable, EXPORT, *args], env=env, capture_output=True, text=True, timeout=600)


def _rows(stdout):
    """``{format: (file, bytes)}`` from the printed table."""
    found = re.findall(r"^(\w+)\s+(\S+)\s+([\d,]+)\s+[\d.]+%", stdout, re.M)
    return {f: (name, int(size.replace(",", ""))) for f, name, size in found}


def _batch(model, n=32):
    return np.random.default_rng(0).normal(size=(n, *model.input_shape[1:])).astype("float32")


def test_a_level_directory_exports_to_files_that_compute_the_ticket(experiment):
    _, level, _ = experiment
    out = _export(f"--source={level}")
    assert out.returncode == 0, out.stderr[-3000:]
    directory = os.path.join(level, "export")
    rows = _rows(out.stdout)
    assert sorted(rows) == ["baked", "compressed", "shrunk"] and "(step 16)" in out.stdout
    assert sorted(os.listdir(directory)) == ["baked.keras", "compressed.npz", "shrunk.keras"]
    for name, size in rows.values():
        assert os.path.getsize(os.path.join(directory, name)) == size
    ticket = export.load(level)
    x = _batch(ticket)
    want = np.asarray(ticket(x))
    baked = keras.saving.load_model(os.path.join(directory, "baked.keras"))  # plain Keras, no tflth masks
    assert not masking.has_masks(baked)
    np.testing.assert_array_equal(np.asarray(baked(x)), want)
    shrunk = keras.saving.load_model(os.path.join(directory, "shrunk.keras"))
    np.testing.assert_allclose(np.asarray(shrunk(x)), want, atol=1e-5, rtol=0)
    mask = masking.Masks.load(os.path.join(level, "mask.npz"))
    alive = {n: int(mask[f"{n}/kernel"].any(axis=0).sum()) for n in ("fc1", "fc2")}  # units with a surviving weight
    assert alive["fc1"] < 32 and alive["fc2"] < 16
    assert {n: shrunk.get_layer(n).units for n in alive} == alive
    assert f"fc1 32->{alive['fc1']}, fc2 16->{alive['fc2']}" in out.stdout
    fresh = tflth.models.get("lenet_32_16", seed=3)
    export.load_compressed(os.path.join(directory, "compressed.npz"), fresh)
    assert masking.masks_of(fresh) == masking.masks_of(ticket)
    for a, b in zip(fresh.variables, ticket.variables):
        assert np.array_equal(np.asarray(a.numpy()).view(np.uint32), np.asarray(b.numpy()).view(np.uint32)), a.path
    assert rows["compressed"][1] < rows["baked"][1]  # 80 % of the kernels survive: values plus one bit each


def test_a_control_directory_exports_its_own_mask(experiment, tmp_path):
    _, level, control = experiment
    formats = ["compressed", "baked"]
    try:
        import ai_edge_litert.interpreter  # noqa: F401
        formats += ["litert", "litert_sparse"]
    except ImportError:
        pass
    out = _export(f"--source={control}", f"--formats={','.join(formats)}", f"--export_dir={tmp_path / 'out'}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(_rows(out.stdout)) == sorted(formats)
    ticket = export.load(control)
    assert masking.masks_of(ticket) == masking.Masks.load(os.path.join(control, "mask.npz"))
    assert masking.masks_of(ticket) != masking.masks_of(export.load(level))  # random_prune: another mask
    fresh = tflth.models.get("lenet_32_16", seed=3)
    export.load_compressed(tmp_path / "out" / "compressed.npz", fresh)
    assert masking.masks_of(fresh) == masking.masks_of(ticket)
    x = _batch(ticket)
    for name in formats[2:]:
        got = export.LiteRTModel(tmp_path / "out" / f"{name}.tflite")(x)
        np.testing.assert_allclose(got, np.asarray(ticket(x)), atol=1e-4, rtol=0)


# ------------------------------------------------------------------------ bad inputs


def _one_line_exit_2(code, err, pattern):
    err = err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err


@pytest.fixture
def residual_keras(tmp_path):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(6, activation="relu", name="first")(inputs)
    y = keras.layers.Flatten(name="flat")(keras.layers.Permute((2, 1), name="swap")(keras.layers.Reshape((3, 2))(h)))
    model = tflth.masked(keras.Model(inputs, keras.layers.Dense(2, name="out")(y), name="res"))
    path = tmp_path / "keras_files" / "res.keras"
    os.makedirs(path.parent)
    model.save(path)
    return str(path)


def _bad_cases(experiment, residual_keras, tmp_path):
    exp, level, _ = experiment
    no_mask = tmp_path / "copy_of_level"
    shutil.copytree(level, no_mask, ignore=shutil.ignore_patterns("export"))
    os.remove(no_mask / "mask.npz")
    (tmp_path / "a_file").write_text("x")
    os.makedirs(tmp_path / "empty")
    return {
        "nonexistent": (dict(source=str(tmp_path / "nowhere")), r"nowhere does not exist; expected a level, control"),
        "experiment_dir": (dict(source=exp), r"is not a tflth run directory \(it has hparams.json"),
        "not_a_run": (dict(source=str(tmp_path / "empty")), r"empty is not a tflth run directory \(no result.json/"),
        "unknown_format": (dict(source=level, formats=["baked", "zip"]), r"--formats=baked,zip: 'zip' is unknown; "
                                                                        r"expected some of baked, shrunk"),
        "export_dir_a_file": (dict(source=level, export_dir=str(tmp_path / "a_file")),
                              r"--export_dir=.*a_file is a file, not a directory"),
        "shrunk_non_chain": (dict(source=residual_keras, formats=["baked", "shrunk"]),
                             r"Cannot shrink: Cannot read the unit groups of model 'res': cannot place 2 layers: "
                             r"'res/reshape.*' \(Reshape\).*'res/swap' \(Permute\)"),
        "no_mask": (dict(source=str(no_mask)), r"copy_of_level has no mask.npz"),
        "step_missing": (dict(source=level, step="7"),
                         r"--step=7: .* has no checkpoint of that step; expected one of \[0, 16\]"),
        "step_not_a_number": (dict(source=level, step="2ep"), r"--step=2ep is invalid"),
    }


CASES = ["nonexistent", "experiment_dir", "not_a_run", "unknown_format", "export_dir_a_file", "shrunk_non_chain",
         "no_mask", "step_missing", "step_not_a_number"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(experiment, residual_keras, tmp_path, capsys, case):
    flags, pattern = _bad_cases(experiment, residual_keras, tmp_path)[case]
    watched = [os.path.dirname(experiment[0]), str(tmp_path)]
    before = [_snapshot(d) for d in watched]
    with flagsaver.flagsaver(**{"formats": ["baked", "shrunk", "compressed"], "export_dir": None, "step": None,
                                **flags}):
        with pytest.raises(SystemExit) as info:
            export_cli.main(["export"])
    _one_line_exit_2(info.value.code, capsys.readouterr().err, pattern)
    assert [_snapshot(d) for d in watched] == before


def test_in_a_real_process_missing_source_and_litert_without_its_package(experiment, residual_keras, tmp_path):
    out = _export()
    _one_line_exit_2(out.returncode, out.stderr, r"^export.py: error: --source is required: expected a run directory")
    hide = tmp_path / "hide"
    os.makedirs(hide / "ai_edge_litert")
    (hide / "ai_edge_litert" / "__init__.py").write_text("raise ModuleNotFoundError('hidden by the test')\n")
    before = _snapshot(os.path.dirname(residual_keras))
    out = _export(f"--source={residual_keras}", "--formats=baked,litert",
                  env=dict(ENV, PYTHONPATH=os.pathsep.join([str(hide), ENV.get("PYTHONPATH", "")])))
    _one_line_exit_2(out.returncode, out.stderr, r"LiteRT export needs the LiteRT interpreter .*pip install "
                                                 r"'tflth\[litert\]'")
    assert _snapshot(os.path.dirname(residual_keras)) == before


def test_without_formats_every_default_that_applies_is_written_and_the_rest_named(residual_keras):
    out = _export(f"--source={residual_keras}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(_rows(out.stdout)) == ["baked", "compressed"]
    assert re.search(r"^skipped shrunk: Cannot shrink: .*cannot place 2 layers: .*\(Reshape\).*\(Permute\)", out.stdout,
                     re.M), out.stdout
    directory = os.path.dirname(residual_keras)
    assert sorted(f for f in os.listdir(directory) if f != "res.keras") == ["res.baked.keras", "res.compressed.npz"]

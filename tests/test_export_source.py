"""tflth.export.load: run directories of every kind (laid out here by hand with tflth.runs.layout,
no training) and .keras files; every bad source is one ExportError naming it."""

import os

import numpy as np
import pytest

import tflth
from tflth import export, fileio, masking, models
from tflth.runs import layout as paths
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
from tflth.training import checkpoint

RUN = RunHparams(DatasetHparams("mnist"), ModelHparams("lenet_32_16"),
                 TrainingHparams(batch_size=32, training_steps="10it"))


def _weights(seed):
    model = models.factory(RUN.model, (28, 28, 1), 10)(0)
    rng = np.random.default_rng(seed)
    return {v.path: rng.normal(size=tuple(v.shape)).astype("float32") for v in model.variables}


def _mask():
    rng = np.random.default_rng(9)
    return masking.Masks({p: rng.random(w.shape) < 0.3 for p, w in _weights(0).items() if p.endswith("kernel")})


def _make_run(run_dir, steps=(5, 10), finished=True, mask=True):
    run = paths.RunDir(run_dir)
    for s in steps:
        checkpoint.save(run.checkpoint(s), s, _weights(s), [])
    if finished:
        fileio.write_json(run.result, {"step": steps[-1], "test_accuracy": 0.5, "test_loss": 1.0})
    if mask:
        _mask().save(run.mask)
    return run.path


@pytest.fixture
def layout(tmp_path):
    """An IMP experiment's level and control, a stability copy and a train run, as tflth names them."""
    exp = paths.experiment(str(tmp_path), "abc")
    fileio.write_json(exp.hparams, {"run": RUN.to_dict(), "pruning": {"fraction": 0.2}, "label": "x"})
    sweep = paths.sweep(str(tmp_path), "def")
    fileio.write_json(sweep.hparams, {"run": RUN.to_dict(), "experiment": "", "noise": "none", "label": "y"})
    train = paths.train_run(str(tmp_path), "ghi")
    fileio.write_json(train.hparams, RUN.to_dict())
    return {"level": _make_run(exp.level(0, 1).path), "control": _make_run(exp.control(0, 1, "random_prune").path),
            "copy": _make_run(sweep.copy(0, 1, "imp", 100, 0, "a").path), "train": _make_run(train.path),
            "experiment": exp.path, "root": str(tmp_path)}


def _expected(step):
    return _mask().apply_to(_weights(step))


@pytest.mark.parametrize("kind", ["level", "control", "copy", "train"])
def test_a_run_directory_loads_its_final_checkpoint_and_its_mask(layout, kind):
    model = export.load(layout[kind])
    assert masking.masks_of(model) == _mask()
    want = _expected(10)
    for v in model.variables:
        assert np.array_equal(v.numpy(), want[v.path]), v.path


def test_step_chooses_another_checkpoint(layout):
    model = export.load(layout["level"], step=5)
    assert np.array_equal(model.get_layer("fc1").kernel.numpy(), _expected(5)["fc1/kernel"])


def test_a_keras_file_loads_with_its_masks(tmp_path):
    ticket = tflth.masked(models.get("lenet_32_16", seed=0))
    masking.apply_masks(ticket, _mask())
    ticket.save(tmp_path / "t.keras")
    model = export.load(tmp_path / "t.keras")
    assert masking.masks_of(model) == _mask()
    assert np.array_equal(model.get_layer("fc2").kernel.numpy(), ticket.get_layer("fc2").kernel.numpy())


def _refused(source, pattern, **kw):
    with pytest.raises(export.ExportError, match=pattern) as info:
        export.load(source, **kw)
    assert len(str(info.value).splitlines()) == 1
    return info.value


def test_bad_sources_are_one_line_naming_them(layout, tmp_path):
    _refused(tmp_path / "nowhere", r"nowhere does not exist; expected a level, control or copy directory or a "
                                   r"\.keras file")
    os.makedirs(tmp_path / "notes")
    _refused(tmp_path / "notes", r"notes is not a tflth run directory \(no result.json/hparams.json\); "
                                 r"expected a level")
    _refused(layout["experiment"], r"lottery_abc is not a tflth run directory \(it has hparams.json"
                                   r".*replicate_0/level_1")
    (tmp_path / "w.txt").write_text("x")
    _refused(tmp_path / "w.txt", r"w.txt is a file but not a .keras file")
    (tmp_path / "bad.keras").write_text("not a zip")
    _refused(tmp_path / "bad.keras", r"bad.keras")
    assert _refused(layout["level"], r"step=7: .* has no checkpoint of that step; expected one of \[5, 10\]",
                    step=7).field == "step"
    assert _refused(tmp_path / "bad.keras", r"step=5: .*a .keras file", step=5).field == "step"


def test_runs_without_what_export_needs_are_refused(layout, tmp_path):
    unfinished = _make_run(os.path.join(layout["experiment"], "replicate_0", "level_2"), finished=False)
    _refused(unfinished, r"level_2 has not finished training \(no result.json\); give step= one of its "
                         r"checkpoints \[5, 10\]")
    assert export.load(unfinished, step=10) is not None
    no_mask = _make_run(os.path.join(layout["experiment"], "replicate_0", "level_3"), mask=False)
    _refused(no_mask, r"level_3 has no mask.npz; expected a run directory that keeps the mask")
    orphan = _make_run(tmp_path / "orphan")
    _refused(orphan, r"orphan has no hparams.json with run settings in it or in a directory above it")
    other = paths.experiment(layout["root"], "other")
    fileio.write_json(other.hparams, {"run": RunHparams(model=ModelHparams("lenet_300_100")).to_dict()})
    _refused(_make_run(other.level(0, 1).path), r"step_000000010.npz does not fit model 'lenet_300_100' rebuilt from")


def test_a_damaged_mask_is_a_damaged_file_not_a_usage_error(layout):
    with open(paths.RunDir(layout["level"]).mask, "wb") as f:
        f.write(b"garbage")
    with pytest.raises(fileio.DamagedFileError, match=r"mask.npz is damaged"):
        export.load(layout["level"])

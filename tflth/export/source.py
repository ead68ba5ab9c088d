"""What is exported: a trained network with its masks, from a run directory or a ``.keras`` file.

A *run directory* is any directory tflth trained one network in (:class:`tflth.runs.layout.RunDir`):
an IMP level (``lottery_<hash>/replicate_<r>/level_<L>/``), a control on it
(``level_<L>/<control>/``), a stability copy (``stability_<hash>/.../copy_<a|b>/``) or a
``train_<hash>/`` run. Its network is rebuilt from the nearest ``hparams.json`` at or
above it that holds the run's :class:`~tflth.hparams.RunHparams` (an experiment's or a
sweep's ``{"run": ...}``, a train run's own), with the dataset's input shape and class
count from :mod:`tflth.data.registry` (no data is loaded); its weights are a checkpoint
(the final one, the step in ``result.json``, unless a step is given) and its masks the
run's ``mask.npz``.
"""

from __future__ import annotations

import os

import keras

from tflth import data as data_lib
from tflth import fileio, masking, models
from tflth.runs import layout
from tflth.export.errors import ExportError
from tflth.hparams import HparamError, RunHparams
from tflth.training import checkpoint

__all__ = ["load", "is_run_dir", "run_hparams", "run_step", "default_export_dir"]

_EXPECTED = "expected a level, control or copy directory or a .keras file"


def is_run_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory a network was trained in (``result.json`` or checkpoints)."""
    run = layout.RunDir(path)
    return os.path.isdir(run.path) and (run.finished() or bool(run.checkpoint_steps()))


def default_export_dir(source: str | os.PathLike) -> str:
    """Where exports of ``source`` go by default: ``<run dir>/export`` for a run directory,
    the file's own directory for a ``.keras`` file."""
    source = os.fspath(source)
    if os.path.isdir(source):
        return os.path.join(source, "export")
    return os.path.dirname(os.path.abspath(source))


def _as_run_hparams(data) -> RunHparams | None:
    """The RunHparams an ``hparams.json`` holds: ``{"run": {...}, ...}`` (experiments,
    sweeps) or the RunHparams dict itself (train runs); ``None`` for anything else."""
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("run"), dict):
        data = data["run"]
    elif not ({"dataset", "model", "training"} >= set(data) and "model" in data):
        return None
    return RunHparams.from_dict(data)


def run_hparams(run_dir: str | os.PathLike) -> tuple[RunHparams, str]:
    """``(RunHparams, path of the hparams.json)`` of a run: the nearest ``hparams.json``
    at or above ``run_dir`` that holds RunHparams.

    Raises:
        ExportError: there is none.
        tflth.fileio.DamagedFileError: the nearest one that should hold them cannot be read.
    """
    start = directory = os.path.abspath(os.fspath(run_dir))
    while True:
        path = os.path.join(directory, layout.HPARAMS)
        if os.path.isfile(path):
            data = fileio.read_json(path)
            try:
                hp = _as_run_hparams(data)
            except (TypeError, ValueError) as e:
                raise fileio.DamagedFileError(path, f"its run settings do not parse: {e}") from None
            if hp is not None:
                return hp, path
        parent = os.path.dirname(directory)
        if parent == directory:
            raise ExportError(f"{start} has no hparams.json with run settings in it or in a directory above it, so "
                              "its network cannot be rebuilt; expected a run directory inside the train_, lottery_ or "
                              "stability_ directory that made it.")
        directory = parent


def run_step(run_dir: str | os.PathLike, step: int | None = None) -> int:
    """The checkpoint step to export: ``step`` (which must have a checkpoint) or the final
    step of a finished run (``result.json``).

    Raises:
        ExportError: no checkpoint of ``step``, or no ``step`` and the run has not finished.
    """
    run = layout.RunDir(run_dir)
    found = run.checkpoint_steps()
    if step is None:
        if not run.finished():
            raise ExportError(f"{run.path} has not finished training (no result.json); give step= one of its "
                              f"checkpoints {found}.")
        step = int(fileio.read_json(run.result, required=("step",))["step"])
        if step not in found:
            raise ExportError(f"{run.path}: its final step {step} (result.json) has no checkpoint; give step= one "
                              f"of {found}.")
        return step
    if step not in found:
        raise ExportError(f"step={step}: {run.path} has no checkpoint of that step; expected one of {found}.",
                          field="step")
    return int(step)


def _build(hp: RunHparams, hparams_path: str) -> keras.Model:
    try:
        shape, classes = data_lib.input_shape(hp.dataset.name), data_lib.num_classes(hp.dataset.name)
        return models.factory(hp.model, shape, classes)(hp.training.seed)
    except (HparamError, data_lib.DataError) as e:
        raise ExportError(f"{hparams_path}: the run's model cannot be rebuilt here: {e}") from None


def _assign(model: keras.Model, weights: dict, where: str, hparams_path: str) -> None:
    variables = {v.path: v for v in model.variables}
    missing = sorted(set(variables) - set(weights))
    unknown = sorted(set(weights) - set(variables))
    wrong = [p for p in variables if p in weights and tuple(weights[p].shape) != tuple(variables[p].shape)]
    if missing or unknown or wrong:
        detail = (f"{len(missing)} variables missing (e.g. {missing[:3]})" if missing else
                  f"{len(unknown)} unknown variables (e.g. {unknown[:3]})" if unknown else
                  f"'{wrong[0]}' has shape {tuple(weights[wrong[0]].shape)}, the model's "
                  f"{tuple(variables[wrong[0]].shape)}")
        raise ExportError(f"{where} does not fit model '{model.name}' rebuilt from {hparams_path} with the dataset's "
                          f"standard input shape: {detail}; expected a checkpoint of that model.")
    for p, v in variables.items():
        v.assign(weights[p])


def _load_run(run_dir: str, step: int | None) -> keras.Model:
    run = layout.RunDir(run_dir)
    step = run_step(run_dir, step)
    if not os.path.isfile(run.mask):
        raise ExportError(f"{run.path} has no mask.npz; expected a run directory that keeps the mask it trained "
                          "with (IMP levels, controls and stability copies do).")
    hp, hparams_path = run_hparams(run_dir)
    model = _build(hp, hparams_path)
    path = run.checkpoint(step)
    _, weights, _ = checkpoint.load(path)
    _assign(model, weights, path, hparams_path)
    masks = masking.Masks.load(run.mask, aliases=masking.legacy_aliases([v.path for v in model.trainable_variables]))
    try:
        masking.apply_masks(model, masks)
    except masking.MaskError as e:
        raise fileio.DamagedFileError(run.mask, str(e)) from None
    return model


def _load_keras(path: str, step: int | None) -> keras.Model:
    if step is not None:
        raise ExportError(f"step={step}: {path} is a .keras file, which holds one set of weights; a step is "
                          "chosen only for a run directory.", field="step")
    try:
        return masking.load_model(path)
    except masking.MaskError as e:
        raise ExportError(str(e)) from None
    except Exception as e:  # broad on purpose: keras.saving.load_model raises many types (ValueError, TypeError,
        # OSError, KeyError, zipfile.BadZipFile, ...) for a file it refuses: one line naming the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ExportError(f"{path} cannot be loaded by Keras ({type(e).__name__}: {first}); expected a .keras file "
                          "saved by model.save.") from None


def load(source: str | os.PathLike, step: int | None = None) -> keras.Model:
    """The network ``source`` holds, built, with its weights and its masks in place.

    Args:
        source: a run directory (an IMP level ``lottery_<hash>/replicate_<r>/level_<L>``,
            a control ``level_<L>/<control>``, a stability copy ``.../copy_a``; it must
            hold its ``mask.npz``) or a ``.keras`` file saved by ``model.save`` (with
            tflth's masks, or none).
        step: for a run directory, the checkpoint step to load (default: the final step,
            the one in ``result.json``).

    Returns:
        A Keras model with masks (:func:`tflth.masking.masks_of`) whose pruned weights
        are exactly zero.

    Raises:
        ExportError: ``source`` does not exist, is neither a run directory nor a
            ``.keras`` file, has no ``mask.npz``, no checkpoint of ``step``, or no
            ``hparams.json`` above it; the model rebuilt does not fit the checkpoint.
        tflth.fileio.DamagedFileError: a run file (checkpoint, mask, JSON) is damaged.

    Example:

    >>> import os, tempfile, keras, numpy as np, tflth
    >>> from tflth import export
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> tflth.masking.apply_masks(net, {"net/fc/kernel": np.eye(4, 3)})
    >>> path = os.path.join(tempfile.mkdtemp(), "ticket.keras"); net.save(path)
    >>> int(tflth.masking.masks_of(export.load(path)).density().survivors)
    3
    >>> export.load(os.path.dirname(path))
    Traceback (most recent call last):
    ...
    tflth.export.errors.ExportError: ... is not a tflth run directory (no result.json/hparams.json); expected a ...
    """
    source = os.fspath(source)
    if not os.path.exists(source):
        raise ExportError(f"{source} does not exist; {_EXPECTED}.")
    if os.path.isfile(source):
        if not source.endswith(".keras"):
            raise ExportError(f"{source} is a file but not a .keras file; {_EXPECTED}.")
        return _load_keras(source, step)
    if not is_run_dir(source):
        if os.path.isfile(os.path.join(source, layout.HPARAMS)):
            raise ExportError(f"{source} is not a tflth run directory (it has hparams.json but no result.json or "
                              f"checkpoints: an experiment or sweep directory); {_EXPECTED} inside it, e.g. "
                              f"{os.path.join(source, 'replicate_0', 'level_1')}.")
        raise ExportError(f"{source} is not a tflth run directory (no result.json/hparams.json); {_EXPECTED}.")
    return _load_run(source, step)

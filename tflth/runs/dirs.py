"""Run directories on disk: where they may go, opening one for a run, finding an old
one, reading what a finished run left.

Every job opens its run directories here (:func:`open_run_dir`), so a directory holds
one run's hyperparameters for ever: the same command resumes it, another one is refused.
"""

from __future__ import annotations

import os
import tempfile

from absl import logging

from tflth import fileio
from tflth.conventions import LAST_EVALS
from tflth.hparams import HparamError, field_error
from tflth.runs import layout
from tflth.runs.naming import identity, legacy_hash, non_default, run_hash

__all__ = ["output_dir_problem", "check_output_dir", "open_run_dir", "named_run_dir", "read_result",
           "last_evals_range"]



def output_dir_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot hold a run's output directories (``None``: it can). It must be
    a directory or not exist yet, and its nearest existing ancestor must be a directory
    in which directories can be made (tested by making and removing one, so nothing is
    left behind)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        return "is a file, not a directory"
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot be made: {existing} is a file, not a directory"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=fileio.TMP_PREFIX, dir=existing))
    except OSError as e:
        return f"cannot be written: no directory can be made in {existing} ({e.strerror or e})"
    return None


def check_output_dir(owner: str, path: str, field: str = "output_dir") -> None:
    """``path`` (job ``owner``'s ``field``) can hold run directories, else an
    :class:`HparamError` naming it and what is wrong (:func:`output_dir_problem`)."""
    problem = output_dir_problem(path)
    if problem:
        raise field_error(owner, field, path, f"{problem}; expected a directory that exists or can be made.")


def open_run_dir(path: str, hparams: dict, defaults: dict, ignore: tuple[str, ...] = ("label",)) -> None:
    """Create ``path`` with ``hparams.json`` (``hparams`` in full); an existing directory
    must hold the same run: the same non-default values (see :func:`tflth.runs.naming.non_default`;
    keys in ``ignore`` are descriptive and not compared). A damaged ``hparams.json``
    raises :class:`tflth.fileio.DamagedFileError`."""
    hp_path = os.path.join(path, layout.HPARAMS)
    if os.path.exists(hp_path):
        stored = fileio.read_json(hp_path)

        def same(d):
            return non_default({k: v for k, v in d.items() if k not in ignore}, defaults)

        if not isinstance(stored, dict) or same(stored) != same(hparams):
            raise HparamError(f"{path} holds a run with other hyperparameters; choose another output_dir.")
        return
    os.makedirs(path, exist_ok=True)
    fileio.write_json(hp_path, hparams)


def named_run_dir(new: str, legacy: str) -> str:
    """``new``, unless only ``legacy`` (the name tflth 0.1 gave the same run) exists:
    then that one, reused in place, with one log line on how to rename it."""
    if not os.path.exists(new) and os.path.isdir(legacy):
        logging.warning("Reusing %s, named by tflth 0.1; `mv %s %s` gives it today's name.", legacy, legacy, new)
        return legacy
    return new


def read_result(run_dir: str) -> dict:
    """A finished run's ``result.json`` (a damaged one raises DamagedFileError)."""
    return fileio.read_json(layout.RunDir(run_dir).result, required=("step", "test_accuracy", "test_loss"))


def last_evals_range(run: layout.RunDir, last: int = LAST_EVALS) -> float | None:
    """Max − min of test accuracy over the run's last ``last`` evaluations (``None`` if fewer)."""
    accs = [r["test_accuracy"] for r in fileio.read_jsonl(run.metrics)
            if isinstance(r, dict) and isinstance(r.get("test_accuracy"), (int, float))][-last:]
    return float(max(accs) - min(accs)) if last >= 2 and len(accs) == last else None


def train_run_dir(output_dir: str, hparams) -> layout.RunDir:
    """The directory of a training run of ``hparams`` (:class:`tflth.hparams.RunHparams`):
    ``train_<hash>`` of its non-default values, or the one tflth 0.1 named."""
    return layout.RunDir(named_run_dir(layout.train_run(output_dir, run_hash(hparams)).path,
                                       layout.train_run(output_dir, legacy_hash(hparams.to_dict())).path))


def experiment_dir(output_dir: str, key, stored: dict) -> layout.Experiment:
    """The directory of an IMP experiment: ``lottery_<hash>`` of ``key``'s
    (:class:`tflth.runs.naming.ExperimentKey`) non-default values, or the one tflth 0.1
    named by ``stored`` (the experiment's ``hparams.json`` content)."""
    new = layout.experiment(output_dir, run_hash(identity(key)))
    legacy = layout.experiment(output_dir, legacy_hash(stored))
    return layout.Experiment(named_run_dir(new.path, legacy.path))


def sweep_dir(output_dir: str, key) -> layout.Sweep:
    """The directory of a stability sweep: ``stability_<hash>`` of ``key``'s
    (:class:`tflth.runs.naming.SweepKey`) non-default values."""
    return layout.sweep(output_dir, run_hash(identity(key)))

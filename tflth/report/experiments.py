"""Result rows (:mod:`tflth.report.rows`) read from an IMP experiment directory.

The directory is listed through :class:`tflth.runs.layout.Experiment`, so only the run layout's
own directories count: ``replicate_<r>/level_<L>`` for IMP's networks and, under a level,
the directories named after a **control** the caller names (``controls``: the binaries pass
the registered ones, ``tuple(tflth.lottery.starts.CONTROLS)``; the report does not import
the lottery package). Anything else under a level (a user's ``notes/`` with a
``result.json``, a checkpoint folder, a future sweep's directory) is ignored.

Files are read through :func:`tflth.fileio.read_json`: one that is not valid JSON raises
:class:`tflth.fileio.DamagedFileError` naming it. Content that is valid JSON but unusable
(no numeric ``test_accuracy``, a level with results but no ``density.json``, ...) raises
``ValueError``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from tflth import fileio
from tflth.conventions import ACCURACY, LAST_EVALS, Measure, method_key
from tflth.runs.dirs import last_evals_range
from tflth.runs.layout import Experiment, RunDir
from tflth.report.errors import ReportError

__all__ = ["collect"]


def _result_fields(path: str, measure: Measure = ACCURACY) -> dict:
    data = fileio.read_json(path)
    try:
        out = {measure.key: float(data[measure.key]), "test_loss": float(data["test_loss"])}
    except (KeyError, TypeError, ValueError):
        raise ReportError(f"{path}: needs numeric {measure.key} and test_loss") from None
    if measure != ACCURACY:
        out.update(metric=measure.name, higher_is_better=measure.higher_is_better)
    return out


def _measure(hparams, path: str) -> Measure:
    """An experiment's measure: ``hparams.json``'s ``"measure"`` (a task's), else accuracy."""
    found = hparams.get("measure") if isinstance(hparams, dict) else None
    if found is None:
        return ACCURACY
    try:
        return Measure.from_dict(found)
    except (KeyError, TypeError):
        raise ReportError(f"{path}: 'measure' must be {{'name': ..., 'higher_is_better': ...}}, got {found!r}") from None


def _density(level_dir: RunDir, level: int) -> float:
    if os.path.isfile(level_dir.density):
        data = fileio.read_json(level_dir.density)
        try:
            return float(data["density"])
        except (KeyError, TypeError, ValueError):
            raise ReportError(f"{level_dir.density}: needs a numeric 'density'") from None
    if level == 0:
        return 1.0
    raise ReportError(f"{level_dir.path} has results but no density.json")


def collect(experiment_dir: str, controls: Iterable[str], last_evals: int = LAST_EVALS,
            one_shot: Iterable[str] = ()) -> list[dict]:
    """Read the result rows of one experiment directory.

    Layout: ``hparams.json`` (its ``"label"`` names the experiment; the directory's name is
    used when it has none), ``replicate_<r>/level_<L>/result.json`` and ``density.json`` for
    the IMP network of each level, and ``replicate_<r>/level_<L>/<control>/result.json`` for
    each control (method ``<control>``, at the level's density). Controls are the names in
    ``controls`` (the registered ones: ``tuple(tflth.lottery.starts.CONTROLS)``; ``()`` for
    IMP's networks alone); other directories under a level are ignored. A level without
    ``result.json`` is unfinished and yields no IMP row; a control whose ``result.json``
    exists is collected regardless. One-shot methods (``one_shot``: the registered names,
    ``tflth.pruning.one_shot_names()``) trained beside IMP are read from
    ``replicate_<r>/level_<L>/<method>/`` (method ``<method>``, at its own density) and
    the controls on their masks from ``.../<method>/<control>/`` (method
    ``<method>/<control>``). Level 0 without ``density.json`` has density 1.0; any
    other level with results but no ``density.json`` raises ``ValueError``. Rows are sorted
    by replicate, level, method.
    Each row's ``last_evals_range`` is the range of test accuracy over the run's last
    ``last_evals`` evaluations in ``metrics.jsonl`` (``None`` when it has fewer;
    :func:`tflth.runs.dirs.last_evals_range`).
    """
    experiment_dir = os.fspath(experiment_dir)
    exp = Experiment(experiment_dir)
    if not os.path.isdir(experiment_dir) or not os.path.isfile(exp.hparams):
        raise ReportError(f"{experiment_dir} is not an experiment directory (no hparams.json)")
    known, methods = list(controls), list(one_shot)
    hparams = fileio.read_json(exp.hparams)
    name = exp.name
    label = hparams.get("label", name) if isinstance(hparams, dict) else None
    if not isinstance(label, str):
        raise ReportError(f"{exp.hparams}: 'label' must be a string, got {label!r}")
    measure = _measure(hparams, exp.hparams)

    rows = []
    for replicate in exp.replicates():
        for level in exp.levels(replicate):
            level_dir = exp.level(replicate, level)
            found = [("imp", level_dir)] if level_dir.finished() else []
            for control in exp.controls(replicate, level, known):
                run = exp.control(replicate, level, control)
                if run.finished():
                    found.append((control, run))
            arms = []
            for method in exp.controls(replicate, level, methods):
                run = exp.method(replicate, level, method)
                found_here = [(method, run)] if run.finished() else []
                for control in exp.controls(replicate, level, known, method=method):
                    sub = exp.method(replicate, level, f"{method}/{control}")
                    if sub.finished():
                        found_here.append((f"{method}/{control}", sub))
                if found_here:
                    arms.append((_density(run, level), found_here))
            if found:
                arms.insert(0, (_density(level_dir, level), found))
            for density, runs in arms:
                for method, run in runs:
                    rows.append({"experiment": name, "label": label, "method": method,
                                 "replicate": replicate, "level": level, "density": density,
                                 **_result_fields(run.result, measure),
                                 "last_evals_range": last_evals_range(run, last_evals)})
    rows.sort(key=lambda r: (r["replicate"], r["level"], method_key(r["method"])))
    return rows

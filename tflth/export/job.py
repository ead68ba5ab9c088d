"""An export: a source (run directory or ``.keras`` file) to files of several formats.

:meth:`ExportJob.prepare` checks every setting, loads the source and makes every file's
bytes in memory, writing nothing (a bad request raises :class:`~tflth.export.ExportError`
and touches no file); :meth:`ExportJob.run` then writes them atomically and returns one
row per file. ``tflth-export`` (``bin/export.py``) is this job behind flags.
"""

from __future__ import annotations

import dataclasses
import os

import keras

from tflth.export import formats as formats_lib
from tflth.export.errors import ExportError
from tflth.export.source import default_export_dir, is_run_dir, load, run_step
from tflth.hparams import field
from tflth.runs.dirs import output_dir_problem

__all__ = ["ExportJob", "ExportPlan"]


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What :meth:`ExportJob.prepare` made: the loaded ``model``, the ``step`` exported
    (``None`` for a ``.keras`` source), the :class:`~tflth.export.formats.Artifact` list,
    ``dense_bytes``, the size of the dense network's plain ``.keras`` file, and ``skipped``:
    ``(format, why)`` of the default formats that do not apply to this model."""

    model: keras.Model
    step: int | None
    artifacts: tuple
    dense_bytes: int
    skipped: tuple = ()


@dataclasses.dataclass(frozen=True)
class ExportJob:
    """Export one trained network to ``formats`` in ``export_dir``.

    Args:
        source: a run directory (IMP level, control, stability copy) or a ``.keras`` file
            (:func:`tflth.export.load`).
        formats: names from :data:`tflth.export.FORMATS` (``baked``, ``shrunk``,
            ``compressed``, ``litert``, ``litert_sparse``); empty (the default): each of
            :data:`~tflth.export.DEFAULT_FORMATS` that applies, the others listed in
            :attr:`ExportPlan.skipped` with the reason.
        export_dir: where the files go; default ``<source>/export`` for a run directory,
            the file's own directory for a ``.keras`` file.
        step: the checkpoint of a run directory (default: its final step).

    Files are named ``<format file>`` (``baked.keras``, ``compressed.npz``, ...) for a
    run directory and ``<stem>.<format file>`` beside a ``.keras`` file ``<stem>.keras``.

    Example::

        job = ExportJob("runs/lottery_<hash>/replicate_0/level_3", formats=("shrunk", "compressed"))
        rows = job.run(job.prepare())   # [{"format": "shrunk", "path": ..., "bytes": ..., "vs_dense": ...}, ...]
    """

    source: str = field(help="What to export: a run directory (an IMP level lottery_<hash>/replicate_<r>/level_<L>, "
                             "a control level_<L>/<control>, a stability copy .../copy_a) or a .keras file saved with "
                             "masks. Required.")
    formats: tuple[str, ...] = field((), "Export formats, some of "
                                     f"{', '.join(formats_lib.FORMATS)}. Default: each of "
                                     f"{', '.join(formats_lib.DEFAULT_FORMATS)} that applies to the model (the "
                                     "others are named with the reason); a named format that cannot be made is an "
                                     "error.")
    export_dir: str | None = field(None, "Where the files go. Default: <source>/export for a run directory, beside "
                                         "the file for a .keras file.")
    step: int | None = field(None, "The checkpoint step of a run directory to export (iterations, e.g. 500 or 500it). "
                                   "Default: its final step (result.json).", text=(lambda t: parse_step(t), str))

    @property
    def directory(self) -> str:
        return self.export_dir or default_export_dir(self.source)

    @property
    def prefix(self) -> str:
        """What file names start with: ``""`` for a run directory, ``"<stem>."`` beside a ``.keras`` file."""
        if os.path.isdir(self.source):
            return ""
        return os.path.basename(self.source)[:-len(".keras")] + "." if self.source.endswith(".keras") else ""

    def prepare(self) -> ExportPlan:
        """Validate, load the source and render every format in memory; writes nothing.

        Raises:
            ExportError: an unknown format, an ``export_dir`` that is a file (or cannot be
                made), a bad source or step (:func:`tflth.export.load`), a format that
                cannot be made of this model (``shrunk`` of a non-chain model, LiteRT
                without ``ai-edge-litert``).
        """
        automatic = not self.formats
        names = formats_lib.check_formats(self.formats or formats_lib.DEFAULT_FORMATS)
        problem = output_dir_problem(self.directory)
        if problem:
            raise ExportError(f"export_dir={self.directory} {problem}; expected a directory that exists or can be "
                              "made.", field="export_dir")
        model = load(self.source, self.step)
        step = run_step(self.source, self.step) if is_run_dir(self.source) else None
        artifacts, skipped = formats_lib.render(model, names, skip=automatic)
        baked = next((a for a in artifacts if a.format == "baked"), None)
        dense = len(baked.data) if baked else len(formats_lib.dense_keras_bytes(model))
        return ExportPlan(model, step, tuple(artifacts), dense, tuple(skipped))

    def run(self, plan: ExportPlan | None = None) -> list[dict]:
        """Write the plan's files (preparing it first if not given); one row per file:
        ``format``, ``path``, ``bytes``, ``vs_dense`` (bytes / the dense ``.keras``'s), ``note``."""
        plan = plan if plan is not None else self.prepare()
        written = formats_lib.write(plan.artifacts, self.directory, self.prefix)
        return [{"format": a.format, "path": p, "bytes": len(a.data), "vs_dense": len(a.data) / plan.dense_bytes,
                 "note": a.note} for a, p in zip(plan.artifacts, written)]


def parse_step(text: str | None) -> int | None:
    """A checkpoint's iteration as written, ``"500"`` or ``"500it"`` (``None``: the final step)."""
    if text is None:
        return None
    digits = text[:-2] if text.endswith("it") else text
    if not digits.isdigit():
        raise ExportError(f"step={text} is invalid: expected a checkpoint's iteration, e.g. 500 or 500it.",
                          field="step")
    return int(digits)

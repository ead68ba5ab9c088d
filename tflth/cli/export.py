"""``tflth-export`` / ``bin/export.py``: a trained ticket as plain, shrunk, compressed or LiteRT files.

--source is a run directory (an IMP level, a control on it, a stability copy: its final
checkpoint, or --step) or a .keras file saved with masks. --formats: baked (plain
.keras, zeros stored), shrunk (a smaller dense .keras computing the same function),
compressed (survivors and packed masks, restored bit for bit by
tflth.export.load_compressed), litert and litert_sparse (float32 .tflite; need
pip install 'tflth[litert]'); without --formats, each of baked, shrunk and
compressed that applies to the model, naming the others and why. Files go to
--export_dir (default <source>/export, or beside a .keras file); a table of what
was written is printed.

Example: bin/export.py --source=runs/lottery_<hash>/replicate_0/level_3 --formats=baked,shrunk,compressed,litert
"""

from __future__ import annotations

import contextlib
import os

from tflth.cli import flags as tflags
from tflth.cli import harness
from tflth.export import ExportError, ExportJob

FLAGS = tflags.FLAGS
tflags.define(ExportJob)


@contextlib.contextmanager
def _flag_names():
    """An :class:`ExportError` naming an ExportJob field (``export_dir=...``) is raised again
    naming its flag (``--export_dir=...``)."""
    try:
        yield
    except ExportError as e:
        if e.field and str(e).startswith(f"{e.field}="):
            raise ExportError(f"--{e}", field=e.field) from None
        raise


class _Command:
    """The job behind the flags, for :func:`tflth.cli.flags.prepare_or_fail` (errors name flags)."""

    def __init__(self):
        with _flag_names():
            if not FLAGS.source:
                raise ExportError("--source is required: expected a run directory (an IMP level, control or "
                                  "stability copy) or a .keras file.")
            self.job = ExportJob(**tflags.values(ExportJob))

    def prepare(self):
        with _flag_names():
            return self.job.prepare()


def _table(rows: list[dict]) -> str:
    width = max(len(os.path.basename(r["path"])) for r in rows)
    lines = [f"{'format':<14} {'file':<{width}} {'bytes':>12} {'vs dense .keras':>16}  note"]
    for r in rows:
        lines.append(f"{r['format']:<14} {os.path.basename(r['path']):<{width}} {r['bytes']:>12,} "
                     f"{100 * r['vs_dense']:>15.1f}%  {r['note']}")
    return "\n".join(lines)


def main(argv):
    del argv  # parse_flags_or_fail rejects positional arguments
    command, plan = harness.prepare_or_fail(_Command)
    job = command.job
    rows = harness.exit_on_run_error(job.run, plan)
    step = "" if plan.step is None else f" (step {plan.step})"
    print(f"exported {job.source}{step} to {job.directory} (dense .keras: {plan.dense_bytes:,} bytes)")
    print(_table(rows))
    for name, why in plan.skipped:
        print(f"skipped {name}: {why}")
    for artifact in plan.artifacts:
        if artifact.report is not None:
            print("shrunk:\n" + artifact.report.table())


def run():
    harness.run(main)


if __name__ == "__main__":
    run()

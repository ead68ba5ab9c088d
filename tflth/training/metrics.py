"""Run outputs: ``metrics.jsonl``, TensorBoard summaries and progress lines."""

from __future__ import annotations

import json
import math
import time

from absl import logging

from tflth.runs import layout
from tflth.fileio import DamagedFileError, read_jsonl, write_text

__all__ = ["MetricsLog", "Progress"]


class MetricsLog:
    """Append-only ``metrics.jsonl`` (one record per evaluation) plus TensorBoard.

    On resume from step ``s`` records after ``s`` (written before a kill, after the
    last checkpoint) are dropped, so the log matches an uninterrupted run. A line that is
    valid JSON but not an evaluation record (not an object with an integer ``step``) is
    not what a kill leaves (a torn last line is not valid JSON): the log is damaged, and
    the run stops with a :class:`~tflth.fileio.DamagedFileError` naming the file and the
    line rather than drop or misplace it.
    """

    def __init__(self, run_dir: str, resume_step: int = 0, enabled: bool = True, tensorboard: bool = True):
        self.path = layout.RunDir(run_dir).metrics
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        kept = [r for r in self.read(run_dir) if r["step"] <= resume_step]
        write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        if tensorboard:
            import tensorflow as tf

            self._writer = tf.summary.create_file_writer(layout.RunDir(run_dir).tensorboard)

    @staticmethod
    def read(run_dir: str) -> list[dict]:
        """The run's evaluation records (a line torn by a kill ends them).

        Raises:
            tflth.fileio.DamagedFileError: a line is valid JSON but not an object with an
                integer ``step``; the message names the file and the line.
        """
        path = layout.RunDir(run_dir).metrics
        records = read_jsonl(path)
        for line, record in enumerate(records, start=1):
            step = record.get("step") if isinstance(record, dict) else None
            if not isinstance(step, int) or isinstance(step, bool):
                found = (f"an object without an integer 'step' (step={step!r})" if isinstance(record, dict)
                         else f"a JSON {type(record).__name__}")
                raise DamagedFileError(path, f"line {line} is {found}, not an evaluation record")
        return records

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self._writer is not None:
            import tensorflow as tf

            with self._writer.as_default(step=record["step"]):
                for k, v in record.items():
                    if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                        tf.summary.scalar(k, v)
            self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()


class Progress:
    """Progress lines on stderr (absl logging) at most every ``interval`` seconds."""

    def __init__(self, start: int, end: int, label: str = "train", interval: float = 10.0):
        self.start, self.end, self.label, self.interval = start, end, label, interval
        self.t0 = self.last = time.perf_counter()

    def update(self, step: int, loss: float | None = None, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        done = step - self.start
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.end - step) / rate if rate > 0 else float("inf")
        loss_text = f" loss {loss:.4f}" if loss is not None else ""
        logging.info("%s step %d/%d (%.1f%%) %.1f steps/s ETA %s%s", self.label, step, self.end,
                     100.0 * step / max(self.end, 1), rate, _duration(eta), loss_text)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"

"""Step-exact training state on disk: one ``.npz`` per saved step, written atomically.

A checkpoint holds every model variable (kernels, biases, BatchNorm statistics) keyed by
variable path, every optimizer variable (its step counter and slots) in order, the
step, and the loop's own state as named ``extras`` (the running sums of the training
metrics since the last evaluation, so a resumed run reports what an uninterrupted one
does). The input pipeline is a pure function of (seeds, step), so this is the
whole state of a run. Files are written by :mod:`tflth.fileio` (temporary name, fsync,
rename), so a run killed at any moment leaves the previous checkpoint or the new one,
never a torn one; file names come from :mod:`tflth.runs.layout`.

:class:`Writer` does the writing on a background thread, so a training loop waits only
for a host copy of the state (about a millisecond for LeNet-300-100) while serialising
and ``fsync`` overlap the next steps (on a machine whose cores are all busy training,
the writing still competes with them for the CPU).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

import numpy as np

from tflth import fileio
from tflth.runs import layout

__all__ = ["CheckpointError", "State", "Writer", "save", "read", "load", "path_for", "list_steps", "latest",
           "remove_partial"]


class CheckpointError(fileio.RunFileError):
    """A checkpoint is missing or does not fit the model/optimizer: a run's state, not a
    usage error (the binaries exit 1 with its message, never 2)."""


path_for = layout.checkpoint_file
list_steps = layout.checkpoint_steps
remove_partial = fileio.remove_partial  # temporary files a killed writer left


def latest(directory: str) -> int | None:
    found = list_steps(directory)
    return found[-1] if found else None


def save(path: str, step: int, model_vars: dict[str, np.ndarray], optimizer_vars: list[np.ndarray],
         extras: dict[str, np.ndarray] | None = None) -> None:
    arrays = {"step": np.asarray(step, np.int64)}
    arrays.update({f"model/{k}": v for k, v in model_vars.items()})
    arrays.update({f"optimizer/{i:05d}": v for i, v in enumerate(optimizer_vars)})
    arrays.update({f"extras/{k}": np.asarray(v) for k, v in (extras or {}).items()})
    fileio.write_npz(path, arrays)


class State(collections.namedtuple("State", "step model optimizer extras")):
    """A checkpoint's contents: the step, ``{model variable path: value}``, the optimizer
    values in order and the loop's named ``extras`` (``{}`` in one written before tflth
    saved any)."""


def read(path: str) -> State:
    """The whole :class:`State` of a checkpoint, read once; a damaged file raises
    :class:`tflth.fileio.DamagedFileError`."""
    if not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at '{path}'.")
    data = fileio.read_npz(path)
    if "step" not in data or data["step"].shape != ():
        raise fileio.DamagedFileError(path, "no step in it")
    model_vars = {k[len("model/"):]: v for k, v in data.items() if k.startswith("model/")}
    opt = sorted(k for k in data if k.startswith("optimizer/"))
    extras = {k[len("extras/"):]: v for k, v in data.items() if k.startswith("extras/")}
    return State(int(data["step"]), model_vars, [data[k] for k in opt], extras)


def load(path: str) -> tuple[int, dict[str, np.ndarray], list[np.ndarray]]:
    """``(step, {model variable path: value}, [optimizer values])`` (:func:`read` without
    the extras)."""
    return tuple(read(path)[:3])


class Writer:
    """Saves and deletes checkpoint files on one background thread, in call order.

    Once an operation fails, the ones queued after it are skipped. ``save`` takes arrays
    the caller will not modify (host copies of the state), so the
    caller can go on training at once. At most ``max_pending`` operations are queued;
    one more waits for the oldest, which bounds the memory held by snapshots. An error
    in the background is raised by the next call (or by :meth:`flush`). Callers
    :meth:`flush` before anything reads the directory or the run ends.
    """

    def __init__(self, max_pending: int = 2):
        self.max_pending = max_pending
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tflth-checkpoint")
        self._pending: collections.deque[concurrent.futures.Future] = collections.deque()
        self._failed = False

    def _submit(self, fn, *args) -> None:
        while self._pending and (self._pending[0].done() or len(self._pending) >= self.max_pending):
            self._pending.popleft().result()  # raises a background error here
        self._pending.append(self._pool.submit(self._run, fn, *args))

    def _run(self, fn, *args) -> None:
        """One queued operation; after a failure the rest are skipped (a failed save must not
        be followed by the deletion of the checkpoint it was to replace)."""
        if self._failed:
            return
        try:
            fn(*args)
        except BaseException:  # whatever stopped it (re-raised): the queued operations after it must not run
            self._failed = True
            raise

    def save(self, path: str, step: int, model_vars: dict[str, np.ndarray], optimizer_vars: list[np.ndarray],
             extras: dict[str, np.ndarray] | None = None) -> None:
        """Queue :func:`save`."""
        self._submit(save, path, step, model_vars, optimizer_vars, extras)

    def remove(self, path: str) -> None:
        """Queue the deletion of ``path`` (after every save queued before it)."""
        self._submit(fileio.remove, path)

    def flush(self) -> None:
        """Wait for every queued operation; raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """:meth:`flush`, then end the background thread."""
        try:
            self.flush()
        finally:
            self._pool.shutdown(wait=True)

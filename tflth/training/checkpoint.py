"""Step-exact training state on disk: one ``.npz`` per saved step, written atomically.

A checkpoint holds every model variable (kernels, biases, masks, BatchNorm statistics)
keyed by variable path, every optimizer variable (its step counter and slots) in order,
and the step. The input pipeline is a pure function of (seeds, step), so this is the
whole state of a run. Files are written to a temporary name and renamed, so a run
killed at any moment leaves the previous checkpoint or the new one, never a torn one.
"""

from __future__ import annotations

import os
import re
import tempfile

import numpy as np

__all__ = ["CheckpointError", "save", "load", "path_for", "list_steps", "latest"]

_NAME = re.compile(r"^step_(\d{9})\.npz$")


class CheckpointError(ValueError):
    """A checkpoint is missing or does not fit the model/optimizer."""


def path_for(directory: str, step: int) -> str:
    return os.path.join(directory, f"step_{int(step):09d}.npz")


def list_steps(directory: str) -> list[int]:
    """Steps with a complete checkpoint in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(m.group(1)) for f in os.listdir(directory) if (m := _NAME.match(f)))


def latest(directory: str) -> int | None:
    found = list_steps(directory)
    return found[-1] if found else None


def save(path: str, step: int, model_vars: dict[str, np.ndarray], optimizer_vars: list[np.ndarray]) -> None:
    arrays = {"step": np.asarray(step, np.int64)}
    arrays.update({f"model/{k}": v for k, v in model_vars.items()})
    arrays.update({f"optimizer/{i:05d}": v for i, v in enumerate(optimizer_vars)})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp_", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str) -> tuple[int, dict[str, np.ndarray], list[np.ndarray]]:
    """``(step, {model variable path: value}, [optimizer values])``."""
    if not os.path.exists(path):
        raise CheckpointError(f"No checkpoint at '{path}'.")
    with np.load(path) as data:
        step = int(data["step"])
        model_vars = {k[len("model/"):]: data[k] for k in data.files if k.startswith("model/")}
        opt = sorted(k for k in data.files if k.startswith("optimizer/"))
        return step, model_vars, [data[k] for k in opt]

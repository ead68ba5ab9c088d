"""Every file tflth writes, and every state file it reads back, goes through here.

Writes are atomic: the content goes to a temporary file beside the target (named
``.tmp_*``), is flushed and ``fsync``-ed, gets the permissions any file created under the
process umask gets (``0666 & ~umask``, so colleagues on a shared filesystem can read
checkpoints as they can read results), and is renamed over the target. A process killed
at any moment leaves the old file or the new one, never a torn one; :func:`remove_partial`
deletes temporary files a killed writer left behind.

Errors a user can act on come out as one line naming the file:

* :class:`DamagedFileError` — a state file (mask, checkpoint, ``result.json``,
  ``density.json``, ``hparams.json``, ...) exists but cannot be read back. Nothing is
  trained over it; the message says to delete it (tflth recomputes what it held) or
  restore it.
* :class:`StorageFullError` — the filesystem is full (or over quota) while writing; the
  previous complete file is intact and no partial file is left.

Both derive from :class:`RunFileError`; the command-line tools turn it into one line on
stderr and exit status 1.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from tflth.errors import RunError

__all__ = [
    "RunFileError",
    "DamagedFileError",
    "StorageFullError",
    "TMP_PREFIX",
    "atomic_write",
    "write_json",
    "write_text",
    "write_npz",
    "write_figure",
    "read_json",
    "read_jsonl",
    "read_npz",
    "remove_partial",
    "remove",
]

TMP_PREFIX = ".tmp_"
_FULL = {errno.ENOSPC, errno.EDQUOT}


class RunFileError(RunError):
    """A run's file cannot be written or read back; the message names it and what to do."""


class DamagedFileError(RunFileError):
    """A state file exists but its content cannot be used."""

    def __init__(self, path: str, reason: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path} is damaged ({reason}); delete it and rerun to recompute what it held, "
                         "or restore it from a copy. Nothing was trained over it.")


class StorageFullError(RunFileError):
    """No space (or quota) left while writing a file."""

    def __init__(self, path: str, reason: str):
        self.path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(self.path))
        super().__init__(f"{directory} is full ({reason}) while writing {os.path.basename(self.path)}: free space "
                         "or choose another output directory; rerunning resumes from the last complete checkpoint.")


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_directory(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], text: bool = False) -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it into place.

    ``f`` is a binary file, or a UTF-8 text file (newlines as written) with ``text=True``.
    Returns ``path``. Raises :class:`StorageFullError` when the disk is full.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    suffix = os.path.splitext(path)[1]
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=suffix)
    except OSError as e:
        if e.errno in _FULL:
            raise StorageFullError(path, e.strerror) from None
        raise
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8", "newline": ""} if text else {})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:  # any failure (a kill included) removes the partial file, then re-raises
        remove(tmp)
        if isinstance(e, OSError) and e.errno in _FULL:
            raise StorageFullError(path, e.strerror) from None
        raise
    _fsync_directory(directory)
    return path


def write_json(path: str | os.PathLike, data) -> str:
    """``data`` as indented, key-sorted JSON (one trailing newline)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda f: f.write(text), text=True)


def write_text(path: str | os.PathLike, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text), text=True)


def write_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray], compressed: bool = False) -> str:
    """A NumPy ``.npz`` archive of ``arrays`` (no pickled objects)."""
    save = np.savez_compressed if compressed else np.savez
    return atomic_write(path, lambda f: save(f, **arrays))


def write_figure(path: str | os.PathLike, figure, **savefig_kwargs) -> str:
    """A matplotlib figure, in the format the file extension names (``.png``, ``.pdf``, ...)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".") or "png"
    return atomic_write(path, lambda f: figure.savefig(f, format=fmt, **savefig_kwargs))


def read_json(path: str | os.PathLike, required: Iterable[str] = ()):
    """JSON from a state file; a damaged one (or one lacking a ``required`` key) raises
    :class:`DamagedFileError`. A missing file raises ``FileNotFoundError``."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DamagedFileError(path, f"not valid JSON: {e}") from None
    required = list(required)
    if required:
        if not isinstance(data, dict):
            raise DamagedFileError(path, f"expected a JSON object with {required}")
        missing = [k for k in required if k not in data]
        if missing:
            raise DamagedFileError(path, f"it lacks {missing}")
    return data


def read_jsonl(path: str | os.PathLike) -> list:
    """The records of an append-only JSON-lines log (``metrics.jsonl``), in order; ``[]``
    when the file does not exist. Reading stops at the first line that is not valid JSON:
    the one a kill tore while it was being appended (the records before it are intact)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file; a damaged one raises :class:`DamagedFileError`.
    A missing file raises ``FileNotFoundError``."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DamagedFileError(path, f"not a readable .npz archive: {reason}") from None


def remove_partial(directory: str | os.PathLike) -> None:
    """Delete the temporary files a killed writer left in ``directory`` (never a real file)."""
    directory = os.fspath(directory)
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.startswith(TMP_PREFIX):
                remove(os.path.join(directory, name))


def remove(path: str | os.PathLike) -> None:
    """Delete ``path``; a file that is already gone is fine."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass

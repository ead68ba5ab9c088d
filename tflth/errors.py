"""The bases of tflth's errors, on the lowest floor.

Every error tflth raises on purpose derives from :class:`TflthError` through one of two
bases, and a binary's exit status follows the base, whenever it is raised:

* :class:`InputError` (a ``ValueError``): a user's input that tflth refuses — a setting, a
  step, a dataset or model reference, a mask, a file to export. The binaries print one
  line and exit 2, before anything is written (the jobs check everything in ``prepare()``).
* :class:`RunError` (a ``RuntimeError``): something that stops a valid run — a diverged
  loss, a damaged or foreign state file, a full disk. One line, exit 1; rerunning resumes.

Anything else is a bug (tflth's own, a zoo model's, a user's ``--model`` function's) and
keeps its traceback.
"""

from __future__ import annotations

__all__ = ["TflthError", "InputError", "RunError"]


class TflthError(Exception):
    """The base of every error tflth raises on purpose."""


class InputError(TflthError, ValueError):
    """A user's input that tflth refuses (exit status 2 in the binaries)."""


class RunError(TflthError, RuntimeError):
    """What stops a valid run: divergence, a damaged state file, a full disk (exit status 1)."""

"""The one error of :mod:`tflth.report`."""

from __future__ import annotations

from tflth.errors import InputError

__all__ = ["ReportError"]


class ReportError(InputError):
    """A directory or result file cannot be reported: not an experiment or sweep, or rows
    missing what a report needs. The message names the path and what was expected."""

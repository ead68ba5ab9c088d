"""The one error of :mod:`tflth.export`."""

from __future__ import annotations

from tflth.errors import InputError

__all__ = ["ExportError"]


class ExportError(InputError):
    """A source, format or model cannot be exported as asked.

    The message is one line naming the bad value (a path, a format, a layer) and what
    was expected instead; the ``tflth-export`` command prints it and exits with status 2.
    A usage error, so a ``ValueError``. (A *damaged* run file is a
    :class:`tflth.fileio.DamagedFileError` instead, exit status 1, as in every tflth command.)

    ``field`` names the :class:`~tflth.export.ExportJob` field (``source``, ``formats``,
    ``export_dir``, ``step``) whose value is at fault when there is one; the message then
    begins with ``<field>=``, which the command line shows as the flag ``--<field>=``.
    """

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

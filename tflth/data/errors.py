"""The one exception type of :mod:`tflth.data`."""

from tflth.errors import InputError

__all__ = ["DataError"]


class DataError(InputError):
    """A dataset cannot be found, read or used as asked."""

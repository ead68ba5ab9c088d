"""The one exception type of :mod:`tflth.data`."""

__all__ = ["DataError"]


class DataError(ValueError):
    """A dataset cannot be found, read or used as asked."""

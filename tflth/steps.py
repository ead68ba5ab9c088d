"""Step notation (as in open_lth): ``500it``, ``2ep``, ``2ep100it``.

An epoch is ``ceil(train examples / global batch)`` iterations, so converting a step
string to an iteration count needs ``iterations_per_epoch``.
"""

from __future__ import annotations

import re

from tflth.errors import InputError

__all__ = ["StepError", "parse", "to_iterations", "format_step"]

_PATTERN = re.compile(r"^(?:(\d+)ep)?(?:(\d+)it)?$")


class StepError(InputError):
    """A step string is not of the form ``<N>it``, ``<N>ep`` or ``<N>ep<M>it``."""


def parse(text: str) -> tuple[int, int]:
    """``"2ep100it"`` → ``(2, 100)`` (epochs, iterations)."""
    s = str(text).strip()
    m = _PATTERN.match(s)
    if not s or m is None or (m.group(1) is None and m.group(2) is None):
        raise StepError(f"Invalid step '{text}': expected '<N>it', '<N>ep' or '<N>ep<M>it' (e.g. 500it, 2ep, 2ep100it).")
    return int(m.group(1) or 0), int(m.group(2) or 0)


def to_iterations(text: str, iterations_per_epoch: int) -> int:
    """The absolute iteration a step string names."""
    epochs, its = parse(text)
    return epochs * int(iterations_per_epoch) + its


def format_step(iteration: int, iterations_per_epoch: int | None = None) -> str:
    """Inverse of :func:`to_iterations` (``ep`` form when it divides evenly)."""
    if iterations_per_epoch and iteration and iteration % iterations_per_epoch == 0:
        return f"{iteration // iterations_per_epoch}ep"
    return f"{iteration}it"

"""The export formats by name: what each file is, and how its bytes are made.

==================  =========================  ==============================================
format              file                       what
==================  =========================  ==============================================
``baked``           ``baked.keras``            plain ``.keras``, zeros baked in (dense size)
``shrunk``          ``shrunk.keras``           plain ``.keras`` of :func:`~tflth.export.shrink`'s model
``compressed``      ``compressed.npz``         survivors + packed masks (:mod:`~tflth.export.compressed`)
``litert``          ``litert.tflite``          float32 LiteRT of the masked model (zeros stored)
``litert_sparse``   ``litert_sparse.tflite``   the same with ``EXPERIMENTAL_SPARSITY``
==================  =========================  ==============================================

:func:`render` makes every requested file's bytes in memory (so a format that cannot be
made fails before anything is written) and :func:`write` writes them atomically.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from collections.abc import Callable, Sequence

from tflth import masking
from tflth.export import _files, litert
from tflth.export.baked import keras_bytes
from tflth.export.compressed import compressed_bytes, read_header
from tflth.export.errors import ExportError
from tflth.export.shrinking import ShrinkReport, shrink

__all__ = ["Format", "Artifact", "FORMATS", "DEFAULT_FORMATS", "check_formats", "render", "write", "dense_keras_bytes"]


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One rendered export: its format, file name (without the prefix), bytes, a short
    note for the table and, for ``shrunk``, the :class:`ShrinkReport`."""

    format: str
    filename: str
    data: bytes
    note: str = ""
    report: ShrinkReport | None = None


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format: ``render(model) -> (bytes, note, report or None)``; ``requires()``
    raises an :class:`ExportError` when something it needs is missing (checked before
    any rendering)."""

    name: str
    filename: str
    render: Callable[..., tuple]
    requires: Callable[[], object] | None = None


def dense_keras_bytes(model) -> bytes:
    """The plain ``.keras`` bytes of ``model`` with its zeros (the dense network's size)."""
    return keras_bytes(masking.unmasked(model))


def _baked(model):
    return dense_keras_bytes(model), "plain Keras, pruned weights stored as zeros", None


def _shrunk(model):
    small, report = shrink(model)
    return keras_bytes(small), f"{report.summary()}; params {report.params_before:,}->{report.params_after:,}", report


def _compressed(model):
    data = compressed_bytes(model)
    kinds = collections.Counter(v["encoding"] if v["encoding"] != "nm" else f"{v['n']}:{v['m']}"
                                for v in read_header(data)["variables"])
    return data, ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())), None


def _litert(sparsity: bool):
    def render(model):
        how = "float32, EXPERIMENTAL_SPARSITY" if sparsity else "float32"
        return litert.checked_litert_bytes(model, sparsity), f"{how}; outputs checked", None

    return render


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("baked", "baked.keras", _baked),
    Format("shrunk", "shrunk.keras", _shrunk),
    Format("compressed", "compressed.npz", _compressed),
    Format("litert", "litert.tflite", _litert(False), litert.require_interpreter),
    Format("litert_sparse", "litert_sparse.tflite", _litert(True), litert.require_interpreter),
)}
#: What an export without named formats makes, each where it applies (LiteRT only on request:
#: an optional dependency and a conversion that takes far longer than the others).
DEFAULT_FORMATS = ("baked", "shrunk", "compressed")


def check_formats(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` without repeats, in order; an :class:`ExportError` (field ``formats``)
    for an unknown one or none at all."""
    names = tuple(dict.fromkeys(n.strip() for n in names if n.strip()))
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        given = ",".join(names)
        what = f"{', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} unknown" if unknown else \
            "names no format"
        raise ExportError(f"formats={given}: {what}; expected some of {', '.join(FORMATS)}.", field="formats")
    return names


def render(model, names: Sequence[str], skip: bool = False) -> tuple[list[Artifact], list[tuple[str, str]]]:
    """``(artifacts, skipped)``: the :class:`Artifact` of each format in ``names`` for
    masked ``model``, in order; every format's ``requires`` is checked first. A format that
    cannot be made raises its :class:`ExportError`, or with ``skip=True`` is left out and
    listed in ``skipped`` as ``(format, why)``; when nothing at all can be made the first
    reason is raised. Writes nothing."""
    names = check_formats(names)
    made, skipped = {}, []
    order = sorted(names, key=lambda n: n != "shrunk")  # the one that refuses models goes first
    for n in order:
        try:
            if FORMATS[n].requires is not None:
                FORMATS[n].requires()
            made[n] = Artifact(n, FORMATS[n].filename, *FORMATS[n].render(model))
        except ExportError as e:
            if not skip:
                raise
            skipped.append((n, str(e)))
    if not made:
        raise ExportError("; ".join(f"{n}: {why}" for n, why in skipped))
    return [made[n] for n in names if n in made], sorted(skipped, key=lambda item: names.index(item[0]))


def write(artifacts: Sequence[Artifact], directory: str | os.PathLike, prefix: str = "") -> list[str]:
    """Write each artifact to ``directory/<prefix><filename>`` atomically; the paths."""
    return [_files.write_bytes(os.path.join(os.fspath(directory), prefix + a.filename), a.data) for a in artifacts]


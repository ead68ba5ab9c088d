"""Masks as data: :class:`Masks`, an immutable ``{variable path: bool ndarray}``.

A mask is keyed by the Keras *variable path* (``variable.path``, e.g. ``"fc1/kernel"``
or ``"encoder/layer_0/attention/query/kernel"``): the same key checkpoints and
``Trainer.get_weights`` use, so a mask, a checkpoint and a model meet on one name. One
value type checks itself (0/1 values, shapes, and against a model that every key names
one of its variables) and is the only thing tflth saves per pruning level
(``mask.npz``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import os
from collections.abc import Iterable, Iterator, Mapping

import numpy as np

from tflth import fileio
from tflth.errors import InputError

__all__ = ["MaskError", "Masks", "LayerDensity", "DensityReport", "path_matches", "layer_path_of", "legacy_aliases"]


class MaskError(InputError):
    """A mask does not fit the model, or is not a valid mask (a usage error: a ``ValueError``)."""


def layer_path_of(variable_path: str) -> str:
    """The path of the layer that owns ``variable_path``: the path without its last
    component (``"block/fc/kernel"`` -> ``"block/fc"``)."""
    return variable_path.rsplit("/", 1)[0] if "/" in variable_path else variable_path


def legacy_aliases(paths: Iterable[str]) -> dict[str, str]:
    """``{layer path: variable path}`` for masks files of tflth 0.1, which keyed a
    layer's kernel mask by the layer's path (``"fc1"`` for ``"fc1/kernel"``); only layers
    with one masked variable, where that key is unambiguous."""
    by_layer: dict[str, list[str]] = {}
    for p in paths:
        by_layer.setdefault(layer_path_of(p), []).append(p)
    return {layer: found[0] for layer, found in by_layer.items() if len(found) == 1 and layer != found[0]}


def path_matches(pattern: str, variable_path: str) -> bool:
    """Whether a glob ``pattern`` selects ``variable_path``.

    The one matcher of every pattern tflth takes (``ModelHparams.prune``,
    ``--layer_rates``): the pattern matches the whole variable path
    (``"*/attention/*/kernel"``), or the path of the layer owning it (``"output"``,
    ``"conv*"``: the layer-path spelling of tflth 0.1, which still works), or either of
    those with leading components dropped (``"fc1"`` matches ``"lenet/fc1/kernel"``).
    ``*`` crosses ``/``.

    >>> from tflth.masking import path_matches
    >>> path_matches("output", "output/kernel"), path_matches("conv*", "conv3/kernel")
    (True, True)
    >>> path_matches("*/query/kernel", "mha/query/kernel"), path_matches("fc1", "net/fc1/kernel")
    (True, True)
    >>> path_matches("output", "output_norm/gamma")
    False
    """
    for candidate in (variable_path, layer_path_of(variable_path)):
        parts = candidate.split("/")
        for i in range(len(parts)):
            if fnmatch.fnmatchcase("/".join(parts[i:]), pattern):
                return True
    return False


def _as_mask(path: str, value) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != bool:
        if array.dtype.kind not in "biuf" or not np.isin(array, (0, 1)).all():
            raise MaskError(f"Mask '{path}' holds values other than 0/1 (dtype {array.dtype}); "
                            "expected booleans or 0/1 numbers.")
        array = array != 0
    array = np.array(array, dtype=bool)  # a private copy
    array.setflags(write=False)
    return array


class Masks(Mapping):
    """An immutable mapping ``{variable path: bool ndarray}`` (``True`` = weight kept).

    Masks are keyed by Keras variable path (``variable.path``), the key checkpoints use.
    Construction checks the values (booleans or 0/1 numbers; stored as read-only bool
    copies); :meth:`check` checks them against a model or a ``{path: shape}`` mapping.
    Pure data: apply them with :func:`tflth.masking.apply_masks`.

    Args:
        arrays: ``{variable path: array-like}``.

    Main methods: :meth:`ones` (everything kept), :meth:`check`, :meth:`save` /
    :meth:`load` (``.npz``, atomic), :meth:`density` (a :class:`DensityReport`),
    :meth:`apply_to` (``weights ⊙ mask`` in NumPy), :meth:`updated`.

    Example:

    >>> import numpy as np
    >>> from tflth.masking import Masks
    >>> m = Masks({"fc/kernel": np.array([[1, 0], [0, 1]])})
    >>> m["fc/kernel"]
    array([[ True, False],
           [False,  True]])
    >>> m.density().density
    0.5
    >>> Masks({"fc/kernel": [[0.5]]})
    Traceback (most recent call last):
    ...
    tflth.masking.masks.MaskError: Mask 'fc/kernel' holds values other than 0/1 (dtype float64); expected booleans or 0/1 numbers.
    """

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Mapping[str, object] = ()):
        arrays = dict(arrays)
        for path in arrays:
            if not isinstance(path, str) or not path:
                raise MaskError(f"Mask keys are variable paths (non-empty strings), got {path!r}.")
        self._arrays = {p: _as_mask(p, v) for p, v in arrays.items()}

    # --- Mapping
    def __getitem__(self, path: str) -> np.ndarray:
        return self._arrays[path]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        inner = ", ".join(f"{p!r}: {m.shape} {int(m.sum())}/{m.size}" for p, m in self._arrays.items())
        return f"Masks({{{inner}}})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Mapping) or set(self) != set(other):
            return False
        return all(np.array_equal(self[p], np.asarray(other[p], bool)) for p in self)

    __hash__ = None

    # --- construction
    @classmethod
    def ones(cls, shapes: Mapping[str, Iterable[int]]) -> "Masks":
        """Every weight kept: one all-``True`` array per ``{path: shape}`` entry."""
        return cls({p: np.ones(tuple(s), bool) for p, s in shapes.items()})

    def updated(self, other: Mapping[str, object]) -> "Masks":
        """A copy with the entries of ``other`` replacing (or adding to) these."""
        return Masks({**self._arrays, **dict(other)})

    # --- checks
    def check(self, shapes: Mapping[str, Iterable[int]], strict: bool = True, what: str = "the model") -> None:
        """Raise :class:`MaskError` unless every key is in ``shapes`` (``{path: shape}``,
        e.g. a model's maskable variables) with that shape; with ``strict`` every key of
        ``shapes`` must have a mask too."""
        shapes = {p: tuple(int(d) for d in s) for p, s in shapes.items()}
        unknown = sorted(set(self) - set(shapes))
        if unknown:
            raise MaskError(f"Masks name {unknown[:5]}{' ...' if len(unknown) > 5 else ''}, not masked variables "
                            f"of {what}; expected paths among {sorted(shapes)[:8]}{' ...' if len(shapes) > 8 else ''}.")
        missing = sorted(set(shapes) - set(self))
        if strict and missing:
            raise MaskError(f"Masks are missing {missing[:5]}{' ...' if len(missing) > 5 else ''} (every masked "
                            f"variable of {what} needs one).")
        for p, m in self._arrays.items():
            if m.shape != shapes[p]:
                raise MaskError(f"Mask '{p}' has shape {m.shape}; the variable has shape {shapes[p]}.")

    # --- numpy
    def apply_to(self, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``weights ⊙ mask`` for every path in these masks (other entries unchanged).

        >>> import numpy as np
        >>> from tflth.masking import Masks
        >>> out = Masks({"fc/kernel": [[True, False]]}).apply_to({"fc/kernel": np.array([[2.0, 3.0]]), "fc/bias": np.ones(2)})
        >>> out["fc/kernel"], out["fc/bias"]
        (array([[2., 0.]]), array([1., 1.]))
        """
        out = dict(weights)
        for p, m in self._arrays.items():
            if p not in weights:
                raise MaskError(f"No weights for masked variable '{p}'.")
            w = np.asarray(weights[p])
            if w.shape != m.shape:
                raise MaskError(f"Mask '{p}' has shape {m.shape}; the weights have {w.shape}.")
            out[p] = w * m.astype(w.dtype)
        return out

    def density(self) -> "DensityReport":
        """Per-variable and total survivor counts (a :class:`DensityReport`)."""
        return DensityReport(tuple(LayerDensity(p, int(m.size), int(m.sum())) for p, m in self._arrays.items()))

    # --- files
    def save(self, path: str | os.PathLike) -> None:
        """Write a compressed ``.npz`` (one bool array per path), atomically."""
        fileio.write_npz(path, self._arrays, compressed=True)

    @classmethod
    def load(cls, path: str | os.PathLike, aliases: Mapping[str, str] | None = None) -> "Masks":
        """Read a file written by :meth:`save`.

        ``aliases`` (``{old key: variable path}``) renames keys of files written by tflth
        0.1, which keyed masks by layer path (``"fc1"``); see
        :func:`tflth.masking.legacy_aliases`.

        Raises:
            MaskError: there is no file at ``path``.
            tflth.fileio.DamagedFileError: the file is not a readable ``.npz`` archive, or
                holds something that is not a mask (a damaged state file, not a usage error).
        """
        if not os.path.exists(path):
            raise MaskError(f"No mask file at '{path}'.")
        arrays = fileio.read_npz(path)
        if aliases:
            arrays = {aliases.get(k, k): v for k, v in arrays.items()}
        try:
            return cls(arrays)
        except MaskError as e:
            raise fileio.DamagedFileError(path, str(e)) from None


@dataclasses.dataclass(frozen=True)
class LayerDensity:
    """Survivors of one masked variable."""

    path: str
    total: int
    survivors: int

    @property
    def density(self) -> float:
        return self.survivors / self.total if self.total else 1.0


@dataclasses.dataclass(frozen=True)
class DensityReport:
    """Per-variable and total counts of masked weights and survivors.

    ``layers`` (one :class:`LayerDensity` per path), ``total``, ``survivors``,
    ``density`` (survivors / total; ``1.0`` when empty), ``table()`` for printing and
    ``to_dict()`` for JSON.

    >>> import numpy as np
    >>> from tflth.masking import Masks
    >>> report = Masks({"fc1/kernel": np.ones((4, 3)), "fc2/kernel": np.eye(3, 2)}).density()
    >>> report.total, report.survivors, round(report.density, 3)
    (18, 14, 0.778)
    >>> print(report.table())  # doctest: +NORMALIZE_WHITESPACE
    variable                                    survivors        total  density
    fc1/kernel                                         12           12  100.00%
    fc2/kernel                                          2            6   33.33%
    TOTAL                                              14           18   77.78%
    """

    layers: tuple[LayerDensity, ...]

    @property
    def total(self) -> int:
        return sum(layer.total for layer in self.layers)

    @property
    def survivors(self) -> int:
        return sum(layer.survivors for layer in self.layers)

    @property
    def density(self) -> float:
        return self.survivors / self.total if self.total else 1.0

    def to_dict(self) -> dict:
        return {
            "total": self.total,
            "survivors": self.survivors,
            "density": self.density,
            "layers": {l.path: {"total": l.total, "survivors": l.survivors, "density": l.density}
                       for l in self.layers},
        }

    def table(self) -> str:
        rows = [f"{'variable':<40} {'survivors':>12} {'total':>12} {'density':>8}"]
        for l in self.layers + (LayerDensity("TOTAL", self.total, self.survivors),):
            rows.append(f"{l.path:<40} {l.survivors:>12,} {l.total:>12,} {100 * l.density:>7.2f}%")
        return "\n".join(rows)

"""Compressed weights: a ticket's survivors and its masks in one small file, restored bit for bit.

:func:`save_compressed` writes, and :func:`load_compressed` reads back into a model with
the same variable paths, every variable of a model (``model.variables``: kernels,
biases, BatchNorm statistics, ...) and its tflth masks. After loading, every variable
equals the original's bit for bit (the original's pruned entries taken as ``+0.0``, as
:func:`tflth.masking.zero_pruned` writes them) and the masks are identical.

File format (version 1)
-----------------------
An uncompressed NumPy ``.npz`` archive (a ZIP file; ``numpy.load`` reads it, nothing is
pickled). Entry ``header`` is the UTF-8 bytes of a JSON object::

    {"format": "tflth-compressed", "version": 1,
     "variables": [{"path": "lenet/fc1/kernel", "shape": [784, 300], "dtype": "float32",
                    "encoding": "bitmask"}, ...]}

Variable ``k`` (its position in that list) is stored in entries ``<k>/...`` by its
``encoding``. Values are raw bits: an unsigned integer array of the dtype's item size
(``float32`` values as ``uint32``), viewed back as ``dtype`` on reading.

* ``dense`` (a variable without a mask): ``<k>/values``, every entry, C order.
* ``bitmask`` (a masked variable): ``<k>/mask``, the mask flattened in C order and
  packed 8 entries a byte (``numpy.packbits``, big-endian bit order, the last byte
  zero-padded); ``<k>/values``, the surviving entries in C order.
* ``nm`` (a masked variable whose mask is N:M along its group axis; header fields
  ``"m"``, ``"n"``, ``"axis"``): move ``axis`` (the layer's input axis,
  :attr:`tflth.pruning.layout.VariableLayout.group_axis`) last and cut it into groups
  of ``m`` consecutive entries, G groups in C order, each with at most ``n`` survivors.
  A group with exactly ``n`` survivors at in-group positions ``i_0 < ... < i_{n-1}`` is
  stored as the *rank* of that combination, ``sum_j C(i_j, j + 1)`` (the combinatorial
  number system: 0 ... C(m, n) - 1), in ``ceil(log2 C(m, n))`` bits: ``<k>/rank``, one
  rank per group (0 for the groups below), packed most significant bit first
  (``numpy.packbits``); its ``n`` values go to ``<k>/values`` (groups in order, values in
  position order). The in-group positions are thus packed jointly: a 2:4 group takes 3
  bits where its bitmask takes 4 (and ``log2(m)`` bits per position would take 4 too),
  1:4 takes 2, 2:8 takes 5. The groups with fewer than ``n`` survivors (the validity
  scheme) are listed in ``<k>/short`` (group numbers, uint32), with their ``m`` mask
  bits each in ``<k>/short_mask`` (packed) and their survivors in
  ``<k>/short_values``. Chosen for the smallest ``m`` of 2, 4, 8, 16 that divides the
  axis, holds (``n < m``) and stores the variable in fewer bytes than ``bitmask``
  (the archive's three more entries counted); otherwise ``bitmask``.

Reading checks the header, every entry's size and the slots' order; anything else is
an :class:`~tflth.export.ExportError` naming the file.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import zipfile

import numpy as np

from tflth import fileio, masking
from tflth.export import _files
from tflth.export.errors import ExportError

__all__ = ["FORMAT", "VERSION", "NM_GROUPS", "compressed_bytes", "save_compressed", "load_compressed",
           "read_header"]

FORMAT = "tflth-compressed"
VERSION = 1
NM_GROUPS = (2, 4, 8, 16)  # the group sizes M tried, smallest first
_ENTRY_BYTES = 240  # what one more archive entry costs (ZIP headers and the .npy header): nm has 3 more than bitmask


def _bits(array: np.ndarray) -> np.ndarray:
    """The raw bits of ``array`` as unsigned integers of its item size."""
    array = np.ascontiguousarray(array)
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def _pack(numbers: np.ndarray, bits: int) -> np.ndarray:
    """Non-negative integers in ``bits`` bits each, most significant first, packed."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    return np.packbits(((numbers.reshape(-1, 1).astype(np.int64) >> shifts) & 1).astype(np.uint8).ravel())


def _unpack(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    flat = np.unpackbits(packed, count=count * bits).reshape(count, bits).astype(np.int64)
    return flat @ (np.ones(bits, np.int64) << np.arange(bits - 1, -1, -1))


def _rank_bits(m: int, n: int) -> int:
    return max(math.comb(m, n) - 1, 0).bit_length()


def _ranks(positions: np.ndarray, m: int) -> np.ndarray:
    """The combinatorial-number-system rank of each row of ascending in-group positions."""
    binom = np.array([[math.comb(i, k) for k in range(positions.shape[1] + 1)] for i in range(m)], np.int64)
    return sum(binom[positions[:, j], j + 1] for j in range(positions.shape[1])) if positions.shape[1] else \
        np.zeros(positions.shape[0], np.int64)


def _combinations(m: int, n: int) -> np.ndarray:
    """Every n-of-m combination of ascending positions, row r the one of rank r."""
    combos = np.array(list(itertools.combinations(range(m), n)), np.int64).reshape(-1, n)
    table = np.empty_like(combos)
    table[_ranks(combos, m)] = combos
    return table


def _grouped(array: np.ndarray, axis: int, m: int) -> np.ndarray:
    return np.moveaxis(array, axis, -1).reshape(-1, m)


def _ungrouped(groups: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    moved = list(shape)
    moved.append(moved.pop(axis))
    return np.moveaxis(groups.reshape(moved), -1, axis)


def _nm_bytes(m: int, n: int, counts: np.ndarray, itemsize: int) -> int:
    short = counts < n
    groups = counts.size
    return (3 * _ENTRY_BYTES + math.ceil(groups * _rank_bits(m, n) / 8) + int((~short).sum()) * n * itemsize
            + int(short.sum()) * 4 + math.ceil(int(short.sum()) * m / 8) + int(counts[short].sum()) * itemsize)


def _nm_plan(mask: np.ndarray, axis: int | None, itemsize: int):
    """``(m, n, counts)`` of the smallest acceptable N:M grouping, or ``None`` (bitmask)."""
    bitmask_bytes = int(mask.sum()) * itemsize + math.ceil(mask.size / 8)
    if axis is None or mask.ndim == 0:
        return None
    for m in NM_GROUPS:
        if mask.shape[axis] % m:
            continue
        counts = _grouped(mask, axis, m).sum(axis=1)
        n = int(counts.max()) if counts.size else 0
        if n < m and _nm_bytes(m, n, counts, itemsize) < bitmask_bytes:
            return m, n, counts
    return None


def _encode_nm(value, mask, axis, m, n, counts, arrays, key) -> None:
    groups, values = _grouped(mask, axis, m), _grouped(value, axis, m)
    full = counts == n
    positions = np.argsort(~groups[full], axis=1, kind="stable")[:, :n]  # the survivors, ascending
    ranks = np.zeros(counts.size, np.int64)
    ranks[full] = _ranks(positions, m)
    short = np.nonzero(~full)[0]
    arrays[f"{key}/rank"] = _pack(ranks, _rank_bits(m, n))
    arrays[f"{key}/values"] = _bits(np.take_along_axis(values[full], positions, axis=1))
    arrays[f"{key}/short"] = short.astype(np.uint32)
    arrays[f"{key}/short_mask"] = np.packbits(groups[short].ravel())
    arrays[f"{key}/short_values"] = _bits(values[short][groups[short]])


def _group_axis(layout) -> int | None:
    try:
        return layout.group_axis if layout is not None else None
    except ValueError:  # no input axis (embeddings, depthwise kernels, '+' variables)
        return None


def _encode(model) -> dict[str, np.ndarray]:
    from tflth.pruning import layout as layout_lib  # noqa: PLC0415

    masks = masking.masks_of(model)
    layouts = layout_lib.layouts(model) if len(masks) else {}
    variables = model.variables
    paths = [v.path for v in variables]
    if len(set(paths)) != len(paths):
        duplicate = next(p for p in paths if paths.count(p) > 1)
        raise ExportError(f"Model '{model.name}' has two variables with path '{duplicate}'; expected unique variable "
                          "paths (give the layers distinct names).")
    entries, arrays = [], {}
    for k, variable in enumerate(variables):
        value = np.asarray(variable.numpy())
        entry = {"path": variable.path, "shape": list(value.shape), "dtype": str(value.dtype)}
        key = str(k)
        mask = masks.get(variable.path)
        if mask is None:
            entry["encoding"] = "dense"
            arrays[f"{key}/values"] = _bits(value)
        else:
            axis = _group_axis(layouts.get(variable.path))
            plan = _nm_plan(mask, axis, value.dtype.itemsize)
            value = np.where(mask, value, np.zeros((), value.dtype))
            if plan is None:
                entry["encoding"] = "bitmask"
                arrays[f"{key}/mask"] = np.packbits(mask.ravel())
                arrays[f"{key}/values"] = _bits(value[mask])
            else:
                m, n, counts = plan
                entry.update(encoding="nm", m=m, n=n, axis=axis)
                _encode_nm(value, mask, axis, m, n, counts, arrays, key)
        entries.append(entry)
    header = {"format": FORMAT, "version": VERSION, "variables": entries}
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    return arrays


def compressed_bytes(model) -> bytes:
    """The bytes :func:`save_compressed` writes for ``model``."""
    buffer = io.BytesIO()
    np.savez(buffer, **_encode(model))
    return buffer.getvalue()


def save_compressed(model, path: str | os.PathLike) -> str:
    """Write ``model``'s variables and masks to ``path``, compactly (format: module docstring).

    Every variable without a mask is stored whole; every masked one as its surviving
    values plus its mask, bit-packed, or, where the mask is N:M along the layer's input
    axis (2:4, 1:4, 4:8, ...) and that is smaller, as the survivors plus each group's
    in-group positions, packed jointly in ``ceil(log2 C(M, N))`` bits (3 bits per 2:4
    group, where a bitmask takes 4). Written atomically (:mod:`tflth.fileio`).

    Args:
        model: a Keras model, with tflth masks or without (then every variable is dense).
        path: the file to write (``.npz`` by convention).

    Returns:
        ``path``.

    Example:

    >>> import os, tempfile, keras, numpy as np, tflth
    >>> from tflth import export
    >>> def build():
    ...     return keras.Sequential([keras.Input((1024,)), keras.layers.Dense(64, name="fc")], name="net")
    >>> net = build()
    >>> two_of_four = np.repeat(np.arange(1024)[:, None] % 4 < 2, 64, axis=1)   # 2:4 along the input axis
    >>> tflth.masking.apply_masks(net, {"net/fc/kernel": two_of_four})
    >>> path = export.save_compressed(net, os.path.join(tempfile.mkdtemp(), "net.npz"))
    >>> [(v["path"], v["encoding"]) for v in export.read_header(path)["variables"]]
    [('net/fc/kernel', 'nm'), ('net/fc/bias', 'dense')]
    >>> again = export.load_compressed(path, build())
    >>> tflth.masking.masks_of(again) == tflth.masking.masks_of(net)
    True
    """
    return _files.write_bytes(path, compressed_bytes(model))


def _damaged(path: str, reason: str) -> ExportError:
    return ExportError(f"{path} is damaged or not a tflth compressed-weights file ({reason}); expected a file "
                       "written by tflth.export.save_compressed.")


def _parse(arrays: dict[str, np.ndarray], path: str) -> dict:
    """The checked header of a compressed file's arrays."""
    try:
        header = json.loads(bytes(arrays["header"]).decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError, TypeError) as e:
        raise _damaged(path, f"no readable header: {type(e).__name__}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("variables"), list):
        raise _damaged(path, "its header is not a tflth-compressed header")
    if header.get("version") != VERSION:
        raise ExportError(f"{path} is a tflth compressed file of version {header.get('version')}; this tflth reads "
                          f"version {VERSION}.")
    for k, entry in enumerate(header["variables"]):
        problem = _entry_problem(entry)
        if problem is not None:
            raise _damaged(path, f"header entry {k}: {problem}")
    return header


_ENCODINGS = ("dense", "bitmask", "nm")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry_problem(entry) -> str | None:
    """What is wrong with one variable entry of a header (``None``: nothing): every field
    the reader uses must be there, of its type."""
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__} where an object is expected"
    if not isinstance(entry.get("path"), str):
        return "no variable path"
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        return f"shape {shape!r} is not a list of sizes"
    try:
        dtype = np.dtype(entry.get("dtype"))
    except TypeError:
        return f"dtype {entry.get('dtype')!r} is not a NumPy dtype"
    if dtype.kind not in "fiub" or not isinstance(entry.get("dtype"), str):
        return f"dtype {entry.get('dtype')!r} is not a numeric dtype name"
    if entry.get("encoding") not in _ENCODINGS:
        return f"encoding {entry.get('encoding')!r} is none of {', '.join(_ENCODINGS)}"
    if entry["encoding"] == "nm" and not all(_is_int(entry.get(f)) for f in ("m", "n", "axis")):
        return "an N:M entry without integer m, n and axis"
    return None


def _read(source) -> tuple[dict, dict[str, np.ndarray], str]:
    """``(header, arrays, name)`` of a file path or of a file's bytes."""
    if isinstance(source, (bytes, bytearray)):
        name = "<bytes>"
        try:
            with np.load(io.BytesIO(bytes(source)), allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
            raise _damaged(name, "not a readable .npz archive") from None
        return _parse(arrays, name), arrays, name
    name = os.fspath(source)
    if not os.path.isfile(name):
        raise ExportError(f"{name} does not exist; expected a file written by tflth.export.save_compressed.")
    try:
        arrays = fileio.read_npz(name)
    except (fileio.DamagedFileError, zipfile.BadZipFile):
        raise _damaged(name, "not a readable .npz archive") from None
    return _parse(arrays, name), arrays, name


def read_header(source: str | os.PathLike | bytes) -> dict:
    """The JSON header of a compressed file (a path, or the file's bytes): its format,
    version and one entry per variable (path, shape, dtype, encoding and, for ``nm``,
    ``m``, ``n``, ``axis``)."""
    return _read(source)[0]


def _values(arrays, name: str, dtype, count: int, path: str) -> np.ndarray:
    """Entry ``name``'s raw bits as ``count`` values of ``dtype``."""
    raw = arrays.get(name)
    if raw is None or raw.dtype.itemsize != dtype.itemsize or raw.size != count:
        raise _damaged(path, f"entry {name}: {0 if raw is None else raw.size} values where {count} are expected")
    return np.ascontiguousarray(raw).view(dtype)


def _decode(entry: dict, key: str, arrays: dict, dtype: np.dtype, path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(value, mask or None)`` of one variable."""
    shape = tuple(entry["shape"])
    size = int(np.prod(shape)) if shape else 1
    encoding = entry.get("encoding")
    if encoding == "dense":
        return _values(arrays, f"{key}/values", dtype, size, path).reshape(shape), None
    if encoding == "bitmask":
        packed = arrays.get(f"{key}/mask")
        if packed is None or packed.size != math.ceil(size / 8):
            raise _damaged(path, f"variable {key}: its packed mask has the wrong size")
        mask = np.unpackbits(packed, count=size).astype(bool).reshape(shape)
        value = np.zeros(shape, dtype)
        value[mask] = _values(arrays, f"{key}/values", dtype, int(mask.sum()), path)
        return value, mask
    if encoding == "nm":
        m, n, axis = int(entry["m"]), int(entry["n"]), int(entry["axis"])
        if m not in NM_GROUPS or not 0 <= n < m or not 0 <= axis < len(shape) or shape[axis] % m:
            raise _damaged(path, f"variable {key}: N:M fields n={n}, m={m}, axis={axis} do not fit shape {shape}")
        groups = size // m
        short, packed, short_packed = (arrays.get(f"{key}/{name}") for name in ("short", "rank", "short_mask"))
        bits = _rank_bits(m, n)
        if short is None or packed is None or short_packed is None or packed.size != math.ceil(groups * bits / 8) \
                or short_packed.size != math.ceil(short.size * m / 8) or (short.size and short.max() >= groups):
            raise _damaged(path, f"variable {key}: its N:M groups are incomplete")
        full = np.ones(groups, bool)
        full[short.astype(np.int64)] = False
        ranks = _unpack(packed, groups, bits)[full]
        table = _combinations(m, n)
        short_mask = np.unpackbits(short_packed, count=short.size * m).astype(bool).reshape(-1, m)
        if (ranks >= len(table)).any() or (short_mask.sum(axis=1) >= n).any():
            raise _damaged(path, f"variable {key}: an N:M group is out of range")
        mask_groups = np.zeros((groups, m), bool)
        value_groups = np.zeros((groups, m), dtype)
        positions = table[ranks]
        rows = np.broadcast_to(np.nonzero(full)[0][:, None], positions.shape)
        mask_groups[rows, positions] = True
        values = _values(arrays, f"{key}/values", dtype, positions.size, path)
        value_groups[rows, positions] = values.reshape(positions.shape)
        mask_groups[short.astype(np.int64)] = short_mask
        short_values = np.zeros(short_mask.shape, dtype)
        short_values[short_mask] = _values(arrays, f"{key}/short_values", dtype, int(short_mask.sum()),
                                             path)
        value_groups[short.astype(np.int64)] = short_values
        return _ungrouped(value_groups, shape, axis), _ungrouped(mask_groups, shape, axis)
    raise _damaged(path, f"variable {key}: unknown encoding {encoding!r}")


def load_compressed(path: str | os.PathLike | bytes, model):
    """Put the variables and masks of a :func:`save_compressed` file (a path, or the
    file's bytes: :func:`compressed_bytes`) into ``model``.

    ``model`` must have the same variables (paths, shapes, dtypes) as the model that was
    saved, e.g. one built by the same code; it gets the file's masks
    (:func:`tflth.masking.apply_masks`: a model with masks already must mask the same
    variables). Afterwards every variable equals the saved one bit for bit (pruned
    entries ``+0.0``). Example: :func:`save_compressed`.

    Returns:
        ``model``.

    Raises:
        ExportError: no such file, a damaged or foreign file, or a model whose variables
            differ from the file's (the message names the first that differs).
    """
    header, arrays, path = _read(path)
    variables = {v.path: v for v in model.variables}
    entries = header["variables"]
    stored = {e["path"]: (str(i), e) for i, e in enumerate(entries)}  # entries checked by _parse
    if len(stored) != len(entries):
        twice = next(e["path"] for i, e in enumerate(entries) if stored[e["path"]][0] != str(i))
        raise _damaged(path, f"variable '{twice}' is listed twice")
    missing = [p for p in variables if p not in stored]
    unknown = [p for p in stored if p not in variables]
    if missing or unknown:
        which = (f"model variable '{missing[0]}' is not in the file" if missing
                 else f"the file's variable '{unknown[0]}' is not in the model")
        raise ExportError(f"{path} does not fit model '{model.name}': {which}; expected a model with the variables "
                          "of the saved one.")
    values, masks = {}, {}
    for p, variable in variables.items():
        key, entry = stored[p]
        current = np.asarray(variable.numpy())
        if tuple(entry.get("shape", ())) != current.shape or entry.get("dtype") != str(current.dtype):
            raise ExportError(f"{path} does not fit model '{model.name}': '{p}' is {entry.get('dtype')} "
                              f"{tuple(entry.get('shape', ()))} in the file, {current.dtype} {current.shape} in the "
                              "model.")
        values[p], mask = _decode(entry, key, arrays, current.dtype, path)
        if mask is not None:
            masks[p] = mask
    if masking.has_masks(model) and set(masking.masked_variables(model)) != set(masks):
        raise ExportError(f"{path} does not fit model '{model.name}': the file masks {sorted(masks)[:4]}, the model "
                          f"{sorted(masking.masked_variables(model))[:4]}; expected the same masked variables.")
    for p, variable in variables.items():
        variable.assign(values[p])
    if masks:
        masking.apply_masks(model, masks)
    return model

"""tflth.export.save_compressed / load_compressed: every variable back bit for bit, the masks
identical; N:M masks stored smaller than bitmasks; a damaged file is one ExportError."""

import os
import zipfile

import numpy as np
import pytest

import tflth
from tflth import export, masking, models


def _lenet(seed=0):
    return tflth.masked(models.get("lenet_300_100", seed=seed))


def _conv2(seed=0):
    return tflth.masked(models.get("conv2", input_shape=(12, 12, 1), num_classes=10, seed=seed))


def _trained_like(model, masks, seed=0):
    """Random values everywhere (biases too), then the masks; a surviving +0.0 and -0.0
    show that masks are stored, not inferred from values."""
    rng = np.random.default_rng(seed)
    for v in model.variables:
        v.assign(rng.normal(size=tuple(v.shape)).astype("float32"))
    masking.apply_masks(model, masks)
    path, mask = next(iter(masks.items()))
    value = masking.masked_weights(model)[path]
    alive = np.argwhere(mask)
    value[tuple(alive[0])], value[tuple(alive[1])] = 0.0, -0.0
    next(v for v in model.variables if v.path == path).assign(value)
    masking.zero_pruned(model)
    return model


def _bits(model):
    return {v.path: np.asarray(v.numpy()).view(np.uint32).copy() for v in model.variables}


def _round_trip(model, tmp_path, fresh):
    path = export.save_compressed(model, tmp_path / "weights.npz")
    again = export.load_compressed(path, fresh)
    before, after = _bits(model), _bits(again)
    assert sorted(before) == sorted(after)
    for p in before:
        assert np.array_equal(before[p], after[p]), p  # bit for bit, +0.0 / -0.0 included
    assert masking.masks_of(again) == masking.masks_of(model)
    return path, export.read_header(path)


def _encodings(header):
    return {v["path"]: (v["encoding"], v.get("n"), v.get("m"), v.get("axis")) for v in header["variables"]}


def _two_of_four(shape, axis, seed=0):
    """A random 2:4 mask along ``axis`` (groups of 4 consecutive entries keep 2)."""
    rng = np.random.default_rng(seed)
    moved = list(shape)
    moved.append(moved.pop(axis))
    groups = np.zeros((int(np.prod(moved)) // 4, 4), bool)
    keep = np.argsort(rng.random(groups.shape), axis=1)[:, :2]
    np.put_along_axis(groups, keep, True, axis=1)
    return np.moveaxis(groups.reshape(moved), -1, axis)


def test_unstructured_mask_round_trips_bit_for_bit_as_bitmask(tmp_path):
    model = _lenet()
    rng = np.random.default_rng(1)
    masks = {p: rng.random(s) < 0.2 for p, s in masking.shapes(model).items()}
    model = _trained_like(model, masks)
    path, header = _round_trip(model, tmp_path, _lenet(seed=5))
    kinds = _encodings(header)
    assert {p: kinds[p][0] for p in masks} == {p: "bitmask" for p in masks}
    assert kinds["fc1/bias"][0] == "dense"
    from_bytes = export.load_compressed(export.compressed_bytes(model), _lenet(seed=6))  # the same, from bytes
    assert masking.masks_of(from_bytes) == masking.masks_of(model)
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(from_bytes.variables, model.variables))
    survivors = sum(int(m.sum()) for m in masks.values())
    dense_rest = sum(int(np.prod(v.shape)) for v in model.variables if v.path not in masks)
    packed = sum(-(-m.size // 8) for m in masks.values())
    assert os.path.getsize(path) - (4 * (survivors + dense_rest) + packed) < 4096  # only the archive's own overhead


def test_two_of_four_along_the_input_axis_dense_and_conv2d_round_trip_and_are_smaller(tmp_path):
    lenet = _lenet()
    masks = {p: _two_of_four(s, axis=0, seed=i) for i, (p, s) in enumerate(masking.shapes(lenet).items())
             if s[0] % 4 == 0}  # fc1 (784 rows), fc2 (300), output (100): all multiples of 4
    masks = {p: masks.get(p, np.ones(s, bool)) for p, s in masking.shapes(lenet).items()}
    lenet = _trained_like(lenet, masks)
    nm_path, header = _round_trip(lenet, tmp_path, _lenet(seed=3))
    assert {k: v for k, v in _encodings(header).items() if k.endswith("kernel")} == {
        "fc1/kernel": ("nm", 2, 4, 0), "fc2/kernel": ("nm", 2, 4, 0),
        "output/kernel": ("bitmask", None, None, None)}  # 250 groups: 94 bytes of ranks save less than 3 entries cost
    # the same survivor counts without the structure: a random mask of each layer's size
    rng = np.random.default_rng(7)
    random = {p: np.isin(np.arange(m.size), rng.permutation(m.size)[:m.sum()]).reshape(m.shape)
              for p, m in masks.items()}
    other = _trained_like(_lenet(), random)
    bitmask_path = export.save_compressed(other, tmp_path / "bitmask.npz")
    assert {e[0] for p, e in _encodings(export.read_header(bitmask_path)).items() if p in masks} == {"bitmask"}
    assert os.path.getsize(nm_path) < os.path.getsize(bitmask_path)
    with np.load(nm_path) as nm, np.load(bitmask_path) as bm:
        k = str([v.path for v in lenet.variables].index("fc1/kernel"))
        groups = 784 * 300 // 4
        assert nm[f"{k}/rank"].size == -(-groups * 3 // 8)  # a 2:4 group's positions in 3 bits ...
        assert bm[f"{k}/mask"].size == 784 * 300 // 8       # ... where its bitmask takes 4
        assert nm[f"{k}/values"].size == bm[f"{k}/values"].size == 784 * 300 // 2

    conv = _conv2()
    shapes = masking.shapes(conv)
    kernel = conv.get_layer("conv2").kernel.path  # (3, 3, 64, 64): groups along the input axis, 2
    masks = {p: (_two_of_four(s, axis=2) if p == kernel else np.random.default_rng(2).random(s) < 0.3)
             for p, s in shapes.items()}
    conv = _trained_like(conv, masks)
    _, header = _round_trip(conv, tmp_path / "conv", _conv2(seed=4))
    assert _encodings(header)[kernel] == ("nm", 2, 4, 2)


def test_nm_groups_with_fewer_survivors_and_masks_that_are_not_nm(tmp_path):
    model = _lenet()
    shapes = masking.shapes(model)
    fc1, fc2, out = shapes
    short = _two_of_four(shapes[fc1], axis=0)
    short[:8, :5] = False  # groups with 0 or 1 survivors: listed as short groups
    one_of_four = np.arange(300)[:, None] % 4 == np.arange(100)[None, :] % 4  # exactly one per group of 4 rows
    masks = {fc1: short, fc2: one_of_four, out: np.ones(shapes[out], bool)}
    masks[out][:, 0] = False  # whole output unit pruned: 4 survivors in most groups of 4 rows, not N:M
    model = _trained_like(model, masks)
    _, header = _round_trip(model, tmp_path, _lenet(seed=1))
    kinds = _encodings(header)
    assert kinds[fc1] == ("nm", 2, 4, 0)
    assert kinds[fc2] == ("nm", 1, 4, 0)
    assert kinds[out] == ("bitmask", None, None, None)


def test_loading_into_a_model_with_other_variables_names_the_first_difference(tmp_path):
    path = export.save_compressed(_lenet(), tmp_path / "w.npz")
    with pytest.raises(export.ExportError, match=r"does not fit model 'conv2'.*'conv1/kernel' is not in the file"):
        export.load_compressed(path, _conv2())
    with pytest.raises(export.ExportError, match=r"does not exist"):
        export.load_compressed(tmp_path / "missing.npz", _lenet())


@pytest.mark.parametrize("damage", ["truncated", "flipped", "not_a_zip", "foreign_npz", "no_values"])
def test_a_damaged_file_is_one_export_error(tmp_path, damage):
    model = _trained_like(_lenet(), {p: np.random.default_rng(0).random(s) < 0.3
                                     for p, s in masking.shapes(_lenet()).items()})
    path = tmp_path / "w.npz"
    export.save_compressed(model, path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "not_a_zip":
        path.write_text("hello")
    elif damage == "foreign_npz":
        np.savez(path, x=np.zeros(3))
    else:
        with zipfile.ZipFile(tmp_path / "w.npz") as src, zipfile.ZipFile(tmp_path / "cut.npz", "w") as dst:
            for item in src.infolist():
                if not item.filename.startswith("0/values"):
                    dst.writestr(item, src.read(item.filename))
        path = tmp_path / "cut.npz"
    with pytest.raises(export.ExportError) as info:
        export.load_compressed(path, _lenet(seed=1))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message
    assert "damaged or not a tflth compressed-weights file" in message


def _with_header(path, edit):
    """Rewrite the archive at ``path`` with its JSON header changed by ``edit(header)``."""
    import json

    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(bytes(arrays["header"]).decode())
    edit(header)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(path, **arrays)


@pytest.mark.parametrize("damage", [
    lambda h: h["variables"][0].pop("shape"),
    lambda h: h["variables"][1].pop("encoding"),
    lambda h: h["variables"][0].update(shape="784x300"),
    lambda h: h["variables"][0].update(dtype="no-such-dtype"),
    lambda h: h["variables"][0].update(encoding="nm", m=4),
    lambda h: h["variables"].__setitem__(0, ["not", "an", "object"]),
    lambda h: h["variables"].append(dict(h["variables"][0])),
], ids=["no_shape", "no_encoding", "shape_text", "bad_dtype", "nm_without_n", "entry_not_object", "listed_twice"])
def test_a_damaged_header_entry_is_one_export_error_not_a_key_error(tmp_path, damage):
    path = export.save_compressed(_lenet(), tmp_path / "w.npz")
    _with_header(path, damage)
    with pytest.raises(export.ExportError) as info:
        export.load_compressed(path, _lenet(seed=1))
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message
    assert "damaged or not a tflth compressed-weights file" in message and "header entry" in message or \
        "listed twice" in message, message

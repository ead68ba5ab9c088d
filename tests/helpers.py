"""Small shared helpers for the tests: a synthetic MNIST-shaped dataset on disk; killing a run mid-way;
a directory's files before and after; a refused command."""

import hashlib
import os
import re

import numpy as np
import pytest


def write_synthetic_npz(path, num_train=240, num_test=60, seed=0, shape=(28, 28, 1), classes=10):
    """Learnable synthetic data: class c brightens pixel block c. Returns the path."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, classes, size=n)
        x = rng.integers(0, 60, size=(n,) + shape).astype(np.uint8)
        flat = x.reshape(n, -1)
        for i, c in enumerate(y):
            flat[i, c * 8:(c + 1) * 8] = 255
        return flat.reshape((n,) + shape), y

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return str(path)


def kill_when(cmd, env, probe, timeout=400, poll=0.005):
    """Start ``cmd``, call ``probe()`` until it returns something truthy (or the process
    ends, or ``timeout`` seconds pass), SIGKILL the process and return the probe's last
    value (``None`` when it never caught the moment)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caught, deadline = None, time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            caught = probe()
            if caught:
                break
            time.sleep(poll)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return caught or None


TIMING_KEYS = ("seconds",)  # what a run writes that depends on the machine's speed, not the computation


def _without_timings(data):
    if isinstance(data, dict):
        return {k: _without_timings(v) for k, v in data.items() if k not in TIMING_KEYS}
    if isinstance(data, list):
        return [_without_timings(v) for v in data]
    return data


def _tensorboard_scalars(paths):
    """``{(tag, step): value}`` of event files read in name (= creation) order; a later
    value for the same step replaces an earlier one, as TensorBoard shows it."""
    import tensorflow as tf

    out = {}
    for path in sorted(paths):
        for event in tf.compat.v1.train.summary_iterator(path):
            for v in event.summary.value:
                value = v.simple_value if v.HasField("simple_value") else tf.make_ndarray(v.tensor).item()
                out[(v.tag, event.step)] = value
    return out


def run_files(root):
    """Every file under ``root``, by relative path, as comparable content: JSON parsed with
    timings dropped (:data:`TIMING_KEYS`), ``.npz`` arrays as (dtype, shape, bytes),
    TensorBoard event files of a directory merged into their scalars (their names and
    wall times are the clock's), everything else as bytes. Two runs computing the same
    thing give equal results."""
    import json
    import os

    out, events = {}, {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            rel = os.path.relpath(path, root)
            if name.startswith("events.out.tfevents."):
                events.setdefault(os.path.join(os.path.dirname(rel), "events.out.tfevents.*"), []).append(path)
            elif name.endswith(".json"):
                with open(path) as f:
                    out[rel] = _without_timings(json.load(f))
            elif name.endswith(".jsonl"):
                with open(path) as f:
                    out[rel] = [_without_timings(json.loads(line)) for line in f if line.strip()]
            elif name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as data:
                    out[rel] = {k: (data[k].dtype.str, data[k].shape, data[k].tobytes()) for k in data.files}
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    for rel, paths in events.items():
        out[rel] = _tensorboard_scalars(paths)
    return out


def assert_same_run_files(a, b):
    """:func:`run_files` of ``a`` and ``b`` are equal; the message names the first file that differs."""
    fa, fb = run_files(a), run_files(b)
    assert sorted(fa) == sorted(fb), (sorted(set(fa) ^ set(fb)))
    differ = [k for k in sorted(fa) if fa[k] != fb[k]]
    assert not differ, f"files differ: {differ[:8]}"


def snapshot(directory):
    """``{relative path: (mtime, md5)}`` of every file under ``directory``."""
    out = {}
    for root, _, files in os.walk(directory):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, directory)] = (os.stat(p).st_mtime_ns, hashlib.md5(open(p, "rb").read()).hexdigest())
    return out


def assert_refused(main, argv, capsys, pattern, *untouched):
    """``main(argv)`` (a binary's main under the flags in force) exits 2 with one line on
    stderr matching ``pattern``, no traceback, and every directory in ``untouched`` as it was."""
    before = [snapshot(d) for d in untouched]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert [snapshot(d) for d in untouched] == before


def randomize_weights(model, seed=0):
    """Random values for every weight of ``model`` (BN statistics, biases, norms included),
    so that no symmetry of the initial values hides a unit moved or grouped wrongly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for v in model.weights:
        shape = tuple(v.shape)
        if "moving_variance" in v.path:
            value = rng.uniform(0.5, 2.0, shape)
        elif len(shape) <= 1:
            value = rng.normal(0.0, 0.5, shape)
        else:
            value = rng.normal(0.0, 1.0 / np.sqrt(max(1, int(np.prod(shape)) // shape[-1])), shape)
        v.assign(value.astype(v.dtype))
    return model

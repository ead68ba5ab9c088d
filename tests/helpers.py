"""Small shared helpers for the tests: a synthetic MNIST-shaped dataset on disk; killing a run mid-way."""

import numpy as np


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

"""MultiWorkerMirroredStrategy with two worker processes on localhost vs one worker."""

import os
import socket
import subprocess
import sys

import numpy as np

from helpers import write_synthetic_npz

JOB = os.path.join(os.path.dirname(__file__), "multiworker_job.py")


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def test_two_workers_match_one_worker(tmp_path):
    data = write_synthetic_npz(tmp_path / "data.npz")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    single = subprocess.run([sys.executable, JOB, data, str(tmp_path / "single.npz")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ports = ",".join(map(str, _free_ports(2)))
    workers = [subprocess.Popen([sys.executable, JOB, data, str(tmp_path / "multi.npz"), str(i), ports], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for w, (out, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-2000:]
        assert "done 20" in out
    a, b = np.load(tmp_path / "single.npz"), np.load(tmp_path / "multi.npz")
    assert int(b["replicas"]) == 2 and int(a["replicas"]) == 1
    for k in a.files:
        if k == "replicas":
            continue
        scale = max(1.0, float(np.abs(a[k]).max()))
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5 * scale, err_msg=k)

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


BIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bin")
TINY = ["--model=lenet_32_16", "--dataset=mnist", "--batch_size=32", "--training_steps=16it", "--eval_every=8it",
        "--checkpoint_every=8it", "--strategy=multi_worker"]


def _two_workers(argv, tmp_path):
    """Run ``argv`` as worker 0 (the chief) and worker 1 of a localhost cluster; both must exit 0."""
    ports = _free_ports(2)
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=__import__("json").dumps(config))
        procs.append(subprocess.Popen([sys.executable] + argv, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, cwd=str(tmp_path)))
    outputs = [p.communicate(timeout=400) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def test_the_binaries_run_on_two_workers_the_chief_writes(tmp_path):
    """bin/prune.py then bin/stability.py on its experiment, each as two worker processes
    sharing one output directory: every worker finishes, only the chief writes reports."""
    data = write_synthetic_npz(tmp_path / "data.npz")
    out = tmp_path / "runs"
    common = TINY + [f"--data_dir={data}", f"--output_dir={out}"]
    chief, other = _two_workers([os.path.join(BIN, "prune.py"), *common, "--levels=1", "--rewind_step=4it",
                                 "--pruning_fraction=0.5", "--pruning_scope=global", "--controls=random_prune"],
                                tmp_path)
    assert "report:" in chief and "report:" not in other
    (exp,) = [d for d in os.listdir(out) if d.startswith("lottery_")]
    for level in ("level_0", "level_1", os.path.join("level_1", "random_prune")):
        assert os.path.exists(out / exp / "replicate_0" / level / "result.json"), level
    chief, other = _two_workers([os.path.join(BIN, "stability.py"), *common, f"--experiment={out / exp}",
                                 "--levels=0,1", "--controls=random_prune", "--rewind_steps=0it,4it",
                                 "--interpolation_points=3", "--train_examples=32"], tmp_path)
    assert "report:" in chief and "report:" not in other and "first stable k" in other
    (sweep,) = [d for d in os.listdir(out) if d.startswith("stability_")]
    rows = (out / sweep / "report" / "stability.csv").read_text().splitlines()
    assert sum(r.startswith("pair,") for r in rows) == 2 * 2 + 2  # levels 0 and 1 (imp + control) x 2 k

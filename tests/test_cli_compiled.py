"""bin/prune.py and bin/stability.py with --jit_compile=chunk: the usual experiment, sweep and
reports, in directories of their own (a compiled run is another run)."""

import os

from absl.testing import flagsaver

from tflth.cli import prune as prune_cli
from tflth.cli import stability as stability_cli

from helpers import write_synthetic_npz

TINY = dict(model="lenet_32_16", dataset="mnist", batch_size=32, training_steps="16it", eval_every="8it",
            checkpoint_every="8it")


def _lottery_dirs(path):
    return sorted(d for d in os.listdir(path) if d.startswith("lottery_"))


def test_prune_and_stability_run_compiled_in_their_own_directories(tmp_path, capsys):
    data_path = write_synthetic_npz(tmp_path / "synthetic.npz")
    out = tmp_path / "runs"
    imp = dict(TINY, data_dir=data_path, output_dir=str(out), levels="1", rewind_step="4it", pruning_fraction=0.5,
               pruning_scope="global", controls=["random_prune"])
    with flagsaver.flagsaver(**imp, jit_compile="chunk"):
        prune_cli.main(["prune"])
    (chunk,) = _lottery_dirs(out)
    files = os.listdir(out / chunk)
    assert {"results.md", "results.csv", "results.png"} <= set(files), files
    assert "random_prune" in (out / chunk / "results.md").read_text()
    with flagsaver.flagsaver(**imp):  # the same experiment uncompiled: another directory
        prune_cli.main(["prune"])
    assert len(_lottery_dirs(out)) == 2 and chunk in _lottery_dirs(out)
    capsys.readouterr()
    with flagsaver.flagsaver(**TINY, data_dir=data_path, output_dir=str(tmp_path / "sweeps"),
                             rewind_steps=["0it", "4it"], pairs=1, interpolation_points=5, train_examples=64,
                             levels="1", controls=["random_prune"], experiment=str(out / chunk), shard="1/1",
                             jit_compile="chunk"):
        stability_cli.main(["stability"])
    printed = capsys.readouterr().out
    assert "first stable k" in printed and "report:" in printed, printed
    reports = [f for _, _, fs in os.walk(tmp_path / "sweeps") for f in fs if f == "stability.md"]
    assert reports

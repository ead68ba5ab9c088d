"""--help of each binary, in a real process: its own flags with help and defaults, exit 0,
nothing of TensorFlow's or absl's own flags."""

import dataclasses
import os
import re
import subprocess
import sys

import pytest

from tflth.hparams import TrainingHparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")

EXPERIMENT = {"levels", "controls", "replicates"}
PRUNING = EXPERIMENT | {"pruning_fraction", "pruning_scope", "pruning_strategy", "layer_rates", "rewind_step", "reset",
                        "rewind_optimizer", "nm", "nm_pad", "channel_norm", "snip_batches", "grasp_batches",
                        "synflow_rounds", "one_shot", "compare_levels"}
STABILITY = EXPERIMENT | {"rewind_steps", "pairs", "experiment", "noise", "bn", "interpolation_points", "alpha_range",
                          "train_examples", "bn_batches", "shard", "align", "align_examples"}
REPORT = {"experiments", "sweeps", "labels", "report_dir", "title", "match_margin", "stable_threshold"}
EXPORT = {"source", "formats", "export_dir", "step"}
# Flags absl and TensorFlow define for themselves (all listed by --helpfull).
FOREIGN = ["logtostderr", "alsologtostderr", "verbosity", "log_dir", "flagfile", "undefok", "only_check_args",
           "test_random_seed", "hbm_oom_exit", "op_conversion_fallback_to_while_loop", "delta_threshold"]


def _training_flags():
    """bin/train.py's flags: one per TrainingHparams field, and these."""
    return {f.name for f in dataclasses.fields(TrainingHparams)} | {"preset", "model", "dataset", "task", "data_dir", "output_dir", "augment", "width", "prune",
                                           "save_steps", "eval_every", "checkpoint_every", "strategy", "deterministic",
                                           "model_options"}


def _help(command):
    out = subprocess.run(command + ["--help"], env=ENV, capture_output=True, text=True, timeout=180)
    listed = re.findall(r"^  (?:-\S+,)?--(?:\[no\])?(\w+):", out.stdout, re.M)
    return out, listed


@pytest.mark.parametrize("binary", ["train", "prune", "report", "stability", "export"])
def test_help_lists_the_binary_s_own_flags(binary):
    out, listed = _help([sys.executable, os.path.join(ROOT, "bin", f"{binary}.py")])
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stderr == "", out.stderr[-3000:]  # TensorFlow's start-up output is dropped too
    run_flags = _training_flags() - {"save_steps"}  # keeping steps is bin/train.py's alone
    expected = {"train": _training_flags(), "prune": run_flags | PRUNING, "report": REPORT,
                "stability": run_flags | STABILITY, "export": EXPORT}[binary]
    assert len(listed) == len(set(listed)) and set(listed) == expected, out.stdout
    assert out.stdout.startswith(f"USAGE: {binary}.py ") and f"tflth-{binary}" in out.stdout
    for name in FOREIGN:
        assert f"--{name}" not in out.stdout and f"--[no]{name}" not in out.stdout, name
    if binary == "prune":
        assert re.search(r"--levels: Pruning levels after the dense level 0(.*\n)*?.*Default: 8, or the number of\s+--nm patterns", out.stdout), out.stdout
        assert re.search(r"--rewind_step: Rewind point k.*\n.*Default: from --preset or --model", out.stdout)
        assert re.search(r"--reset: <rewind\|\w+\|\w+>: How survivors restart", out.stdout)
        assert re.search(r"--rewind_optimizer: <state\|fresh>: What every start from step k(.*\n)*?.*fresh = every "
                         r"slot zero(.*\n)*?\s+\(default: 'state'\)", out.stdout), out.stdout
    if binary == "stability":
        assert re.search(r"--rewind_steps: .*\n.*\n\s+\(default: '0it'\)", out.stdout), out.stdout
        assert re.search(r"--bn: <recompute\|interpolate>:", out.stdout)
        assert re.search(r"--align: <none\|weights\|activations>: Before comparing the two copies", out.stdout)
    if binary == "report":
        assert re.search(r"--match_margin: δ in accuracy points(.*\n)*?\s+\(default: '0\.5'\)", out.stdout), out.stdout
        assert re.search(r"--stable_threshold: (.*\n)*?\s+\(default: '2\.0'\)", out.stdout), out.stdout
    if binary == "export":
        assert re.search(r"--formats: Export formats, some of baked, shrunk, compressed, litert,\s+litert_sparse. "
                         r"Default: each of baked, shrunk, compressed that applies(.*\n)*?\s+\(default: ''\)",
                         out.stdout), out.stdout
    if binary == "train":
        assert re.search(r"--strategy: <auto\|default\|mirrored\|multi_worker\|tpu>:", out.stdout)
        assert re.search(r"--output_dir: (.*\n)*?\s+\(default: 'runs'\)", out.stdout)


def test_console_script_help():
    script = os.path.join(os.path.dirname(sys.executable), "tflth-prune")
    if not os.path.exists(script):
        pytest.skip("tflth is not installed with its console scripts in this environment")
    out, listed = _help([script])
    assert out.returncode == 0 and out.stdout.startswith("USAGE: tflth-prune "), out.stderr[-3000:]
    assert {"preset", "levels", "rewind_step", "lr"} <= set(listed) and "logtostderr" not in listed

"""bin/prune.py and bin/stability.py with N:M and channel tickets: IMP with rewinding and the
structured random_prune control, stability of their subnetworks, and bad settings as one
line, exit 2, nothing written."""

import os
import re

import numpy as np
import pytest
from absl.testing import flagsaver

from tflth import masking
from tflth.cli import prune as prune_cli
from tflth.cli import stability as stability_cli
from tflth.pruning import nm as nm_lib

from helpers import assert_refused, write_synthetic_npz


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_synthetic_npz(tmp_path_factory.mktemp("data") / "synthetic.npz")


COMMON = dict(dataset="mnist", batch_size=32, training_steps="16it", eval_every="8it", checkpoint_every="8it",
              rewind_step="4it", controls=["random_prune"])


def _flags(data_path, output_dir, **extra):
    values = dict(COMMON, model="lenet_8_4", data_dir=data_path, output_dir=str(output_dir))
    values.update(extra)
    return values


def _experiment(root):
    (name,) = [d for d in os.listdir(root) if d.startswith("lottery_")]
    return os.path.join(root, name)


def _mask(experiment, level, control=None):
    path = os.path.join(experiment, "replicate_0", f"level_{level}", *([control] if control else []), "mask.npz")
    return masking.Masks.load(path)


def test_nm_imp_with_rewinding_and_its_random_control_then_stability(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, pruning_strategy="nm", nm=["2:4", "1:4"])):
        prune_cli.main(["prune"])  # --levels defaults to the two patterns
    out = capsys.readouterr().out
    assert re.search(r"level  2 imp\s+density  25\.00%", out) and re.search(r"level  2 random_prune\s+density  25\.00%", out)
    experiment = _experiment(tmp_path)
    for level, n in ((1, 2), (2, 1)):
        imp, control = _mask(experiment, level), _mask(experiment, level, "random_prune")
        for path in imp:  # Dense kernels: groups along the input axis 0
            assert nm_lib.is_nm(imp[path], 0, n, 4) and nm_lib.is_nm(control[path], 0, n, 4), path
            assert int(imp[path].sum()) == int(control[path].sum()) == imp[path].size * n // 4
            assert not np.array_equal(imp[path], control[path])
    assert (_mask(experiment, 2)["fc1/kernel"] <= _mask(experiment, 1)["fc1/kernel"]).all()  # nested

    with flagsaver.flagsaver(**dict(_flags(data_path, tmp_path), experiment=experiment, levels="2",
                                    rewind_steps=["0it", "4it"], interpolation_points=3, train_examples=60)):
        stability_cli.main(["stability"])
    out = capsys.readouterr().out
    assert "level 2 imp: first stable k" in out and "level 2 random_prune: first stable k" in out
    (sweep,) = [d for d in os.listdir(tmp_path) if d.startswith("stability_")]
    copy = os.path.join(tmp_path, sweep, "replicate_0", "level_2", "random_prune", "k_4", "pair_0", "copy_a")
    assert masking.Masks.load(os.path.join(copy, "mask.npz")) == _mask(experiment, 2, "random_prune")


def test_channel_imp_prunes_whole_filters_with_the_next_layers_inputs(data_path, tmp_path, capsys):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, model="conv2", model_options=["filters=4", "dense=8"],
                                      pruning_strategy="channels", pruning_scope="layerwise", pruning_fraction=0.5,
                                      levels="2", layer_rates=[])):  # not the model default conv*:0.1
        prune_cli.main(["prune"])
    capsys.readouterr()
    experiment = _experiment(tmp_path)
    survivors = {"conv1/kernel": 1, "conv2/kernel": 1, "fc1/kernel": 2, "fc2/kernel": 2}  # 4→2→1, 8→4→2
    for control in (None, "random_prune"):
        mask = _mask(experiment, 2, control)
        conv = np.moveaxis(mask["conv1/kernel"], 3, 0).reshape(4, -1)  # (units, fan-in)
        assert conv.any(axis=1).sum() == survivors["conv1/kernel"] and (conv.all(axis=1) | ~conv.any(axis=1)).all()
        assert mask["conv2/kernel"].any(axis=(0, 1, 3)).sum() == 1  # inputs: conv1's one channel
        assert mask["conv2/kernel"].any(axis=(0, 1, 2)).sum() == survivors["conv2/kernel"]
        assert mask["fc1/kernel"].any(axis=1).sum() == 14 * 14  # conv2's one channel at every position
        assert mask["fc1/kernel"].any(axis=0).sum() == survivors["fc1/kernel"]
        assert mask["output/kernel"].any(axis=0).all()  # the logits stay
        assert mask["output/kernel"].any(axis=1).sum() == survivors["fc2/kernel"]



BAD = [
    (dict(pruning_strategy="nm", nm=["3:2"]), r"--nm='3:2' is invalid: expected N:M patterns with 1 <= N < M"),
    (dict(pruning_strategy="nm", nm=["2:3"], layer_rates=["fc1:0", "output:0"]),
     r"--nm=2:3: 'fc2/kernel' \(Dense.kernel, shape \(8, 4\)\) has 8 inputs along axis 0, not a multiple of M = 3"),
    (dict(pruning_strategy="channels", pruning_fraction=1.0), r"--pruning_fraction=1\.0 is invalid: expected a number"),
    (dict(nm=["2:4"]), r"--nm=2:4 has no effect with strategy 'magnitude'"),
    (dict(pruning_strategy="nm"), r"--nm=\(\) is invalid for strategy 'nm'"),
    (dict(pruning_strategy="nm", nm=["2:4"], levels="2"), r"--levels=2 is past the last level .*one level per N:M"),
    (dict(pruning_strategy="channels", pruning_fraction=0.5, model="vit_tiny", model_options=["depth=1"],
          layer_rates=["patch_embed:0.5"]),
     r"layer_rates=patch_embed:0.5 asks to prune the units of 'vit_tiny/patch_embed', which cannot be pruned: "
     r"normalised together by LayerNormalization"),
]


@pytest.mark.parametrize("override,pattern", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_structured_settings_are_one_line_exit_2_untouched(data_path, tmp_path, capsys, override, pattern):
    with flagsaver.flagsaver(**_flags(data_path, tmp_path, **override)):
        assert_refused(prune_cli.main, ["prune"], capsys, pattern, tmp_path)

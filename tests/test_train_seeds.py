"""``Trainer.train(data_order_seed=, augment_seed=)``: a copy with other SGD noise needs no second Trainer."""

import os
import subprocess
import sys
import textwrap

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import dataclasses, sys
    import numpy as np
    import tensorflow as tf
    tf.config.experimental.enable_op_determinism()
    from tflth import data as data_lib
    from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
    from tflth.training import Trainer, checkpoint

    out, data_path = sys.argv[1], sys.argv[2]
    dataset = data_lib.load("mnist", data_dir=data_path)
    hp = RunHparams(DatasetHparams("mnist", augment=True), ModelHparams("lenet_32_16"),
                    TrainingHparams(optimizer="adam", lr=1e-3, batch_size=32, training_steps="40it"))
    parent = Trainer(hp, dataset=dataset)
    parent.train(out + "/parent", end_step=10, save_steps=["10it"])
    w_k = checkpoint.path_for(out + "/parent/checkpoints", 10)

    # One Trainer, two copies with other seeds, one after the other (as a stability sweep does).
    one = Trainer(hp, dataset=dataset)
    copies = []
    for seed in (1, 2):
        one.load_checkpoint(w_k)
        one.train(data_order_seed=seed, augment_seed=seed + 10)
        copies.append(one.get_weights())

    # The same copies from Trainers built with those seeds in their hparams.
    for seed, copy in zip((1, 2), copies):
        t = hp.training
        other = Trainer(dataclasses.replace(hp, training=dataclasses.replace(
            t, data_order_seed=seed, augment_seed=seed + 10)), dataset=dataset)
        other.load_checkpoint(w_k)
        other.train()
        for key, value in other.get_weights().items():
            assert np.array_equal(copy[key], value), (seed, key)
    assert not np.array_equal(copies[0]["fc1/kernel"], copies[1]["fc1/kernel"])
    print("OK")
""")


def test_per_call_seeds_equal_a_second_trainer_bit_for_bit(tmp_path):
    data_path = write_synthetic_npz(tmp_path / "data.npz")
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), data_path], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("OK")

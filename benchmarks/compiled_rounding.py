#!/usr/bin/env python3
"""How far compiled training (``--jit_compile=step|chunk``) ends from ``off``: rounding only.

The same network (same initial weights, same 80 %-pruned masks, same data order) trained
under ``off``, ``step`` and ``chunk``; printed per compiled mode: the largest difference of any
weight from ``off``'s relative to the largest weight (max |a − b| / max |b| over every model
weight: a per-tensor ratio would divide by the attention key biases, whose gradient is zero
in exact arithmetic and which hold rounding noise only), the relative L2 difference, and
the final test-accuracy difference; and, as the yardstick, the same for an ``off`` run whose
first masked kernel starts one ulp away (``np.nextafter``): training amplifies any
last-bit difference (Adam most, as it normalises tiny gradients to full-size steps), so a
compiled run is "only rounding away" when it ends as far from ``off`` as that run does. For LeNet-300-100 (Adam, batch 60, 2 epochs) and the
zoo's ``vit_tiny`` at depth 2 (AdamW, batch 128; ``--vit_steps``). XLA reorders
floating-point operations, so the differences start in the last bits and grow as any two
nearby trajectories drift apart; they are not a second computation. Usage::

    python benchmarks/compiled_rounding.py [--quick] [--data_dir=DIR] [--vit_steps=N]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from _common import define_flags, random_masks, start  # noqa: E402
from tflth import masking  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

define_flags("Smoke check: 100 LeNet steps, 10 ViT steps.")
flags.DEFINE_string("lenet_steps", "2ep", "LeNet-300-100 training length.")
flags.DEFINE_string("vit_steps", "300it", "vit_tiny (depth 2) training length.")
FLAGS = flags.FLAGS


def _train(dataset, hp: RunHparams, masks=None):
    trainer = Trainer(hp, dataset=dataset)
    if masks is None:
        random_masks(trainer.model, 0.2)
    else:
        masking.apply_masks(trainer.model, masks)
    result = trainer.train()
    return trainer, result


def compare(dataset, label: str, model: ModelHparams, **training) -> list[str]:
    lines = []
    base = RunHparams(DatasetHparams("fashion_mnist"), model, TrainingHparams(**training))
    off, off_result = _train(dataset, base)
    masks = masking.masks_of(off.model)
    reference = off.get_weights()
    for mode in ("step", "chunk", "off, 1 ulp"):
        hp = RunHparams(base.dataset, base.model, TrainingHparams(**training, jit_compile=mode.split(",")[0]))
        if mode == "off, 1 ulp":  # the yardstick: off itself from initial weights one ulp apart
            trainer = Trainer(hp, dataset=dataset)
            masking.apply_masks(trainer.model, masks)
            kernel = next(v for v in trainer.model.trainable_variables if v.path in masks)
            kernel.assign(np.nextafter(kernel.numpy(), np.float32(np.inf)) * masks[kernel.path])
            result = trainer.train()
        else:
            trainer, result = _train(dataset, hp, masks)
        weights = trainer.get_weights()
        a = np.concatenate([weights[k].ravel() for k in reference])
        b = np.concatenate([v.ravel() for v in reference.values()])
        rel_max = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
        rel_l2 = float(np.linalg.norm(a - b) / np.linalg.norm(b))
        lines.append(f"| {label} | {mode} | {off.end_step} | {rel_max:.1e} | {rel_l2:.1e} | "
                     f"{off_result.test_accuracy:.4f} | "
                     f"{result.test_accuracy:.4f} | {100 * (result.test_accuracy - off_result.test_accuracy):+.2f} |")
    return lines


def main(argv):
    del argv
    dataset = start(FLAGS, lenet_steps="100it", vit_steps="10it")
    rows = compare(dataset, "LeNet-300-100 (Adam, batch 60)", ModelHparams("lenet_300_100"), optimizer="adam",
                   lr=1.2e-3, batch_size=60, training_steps=FLAGS.lenet_steps)
    rows += compare(dataset, "vit_tiny depth 2 (AdamW, batch 128)", ModelHparams("vit_tiny", options=(("depth", 2),)),
                    optimizer="adamw", lr=1e-3, weight_decay=0.05, batch_size=128, training_steps=FLAGS.vit_steps)
    print("\n| network | mode | steps | max \\|w − w_off\\| / max \\|w_off\\| | ‖w − w_off‖ / ‖w_off‖ | off test acc | "
          "mode test acc | difference (points) |\n|---|---|---|---|---|---|---|---|")
    print("\n".join(rows), flush=True)


if __name__ == "__main__":
    app.run(main)

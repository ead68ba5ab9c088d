#!/usr/bin/env python3
"""Training-engine speed, as ratios measured side by side in one process.

1. masked vs unmasked: train step time of tflth's loop on the same model with tflth's
   masks (80 % pruned) vs without any (``ModelHparams(prune=("!*",))``), same weights
   (bound: ratio <= 1.05), for LeNet-300-100 and Conv-2 (Adam: per-entry epsilons),
   ResNet-8 width 8 (SGD with momentum: the per-step mask constraint), the zoo's ViT
   (AdamW) and, with the ``hub`` extra, a KerasHub BertBackbone of 2 layers, hidden 128,
   on token ids made from the images (bound: <= 1.10);
2. tflth's loop vs Keras ``model.fit``: one epoch of LeNet-300-100 at batch 60 on
   in-memory Fashion-MNIST (bound: ratio <= 0.7);
3. compiled training (``TrainingHparams.jit_compile``): ``step`` / ``off`` and ``chunk`` /
   ``off`` for LeNet-300-100 (Adam, batch 60; bound: chunk <= 0.55), Conv-2, ResNet-8
   width 8, the zoo's ViT (bound: the better compiled mode <= 0.75) and, with the ``hub``
   extra, the KerasHub BERT (``chunk`` and ``step`` only where they apply); the three
   trainers share their initial weights and masks and are timed in rotating turns of
   windows sized by time (``--window_seconds`` of the ``off`` loop), not steps; and the
   LeNet-300-100 ``chunk`` step against this machine's bound: its matmul FLOPs (forward
   and backward, from the Dense shapes) at the fp32 matmul rate of LeNet's first-layer
   shape measured in the same process;
4. rewind-point checkpoints: what 10 of them add to the paper's 24,000-iteration
   LeNet-300-100 run (bound: <= 2 %); the same for a 2-epoch run (12x stricter) is shown
   without a bound.

Every comparison times its two sides as adjacent pairs, alternating which goes first;
the figure is the median over pairs of the per-pair ratio, with its quartiles, because
this shared 2-core VM runs the same work 5-15 % slower or faster from one second to the
next and two identical networks built at different times differ by a few percent (the
masked comparison therefore spreads its pairs over several fresh builds). The cost of a
rewind checkpoint is measured the same way, as 200-step windows with and without one
checkpoint in the middle, and scaled to 10 checkpoints per run: differencing whole
25-second runs cannot resolve 2 % here. The script exits 1 if a bound is missed. Data:
``--data_dir``, else Debian's Fashion-MNIST, else synthetic arrays of its shape.
``--quick`` is a smoke check (few builds, pairs and steps; the fit comparison on 6,000
images): its figures are too noisy to judge the bounds by. Usage::

    python benchmarks/train_speed.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic]
"""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import tflth  # noqa: E402
from _common import (  # noqa: E402
    define_flags, first, no_evaluation, paired, print_table, random_masks, rotating, row, start, timed, timed_steps)
from tflth import presets  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.training import Trainer, checkpoint  # noqa: E402

define_flags("Smoke check: 2 builds x 2 pairs of short masked/unmasked runs, 2 fit pairs on 6,000 images, "
             "3 checkpoint pairs.")
flags.DEFINE_integer("rounds", 10, "Masked/unmasked: fresh builds of both networks.")
flags.DEFINE_integer("round_pairs", 6, "Masked/unmasked: timed pairs per build.")
flags.DEFINE_integer("lenet_steps", 0, "Steps per LeNet-300-100 masked/unmasked measurement (0: --window_seconds "
                     "of the masked loop).")
flags.DEFINE_integer("conv_steps", 20, "Steps per Conv-2 masked/unmasked measurement.")
flags.DEFINE_integer("resnet_steps", 20, "Steps per ResNet-8 width 8 masked/unmasked measurement.")
flags.DEFINE_integer("vit_steps", 20, "Steps per ViT masked/unmasked measurement.")
flags.DEFINE_integer("bert_steps", 20, "Steps per KerasHub BERT masked/unmasked measurement.")
flags.DEFINE_integer("fit_pairs", 16, "Timed epoch pairs for tflth loop vs Keras fit.")
flags.DEFINE_integer("fit_examples", 60000, "Training images per epoch of tflth loop vs Keras fit (at most all).")
flags.DEFINE_integer("checkpoint_pairs", 100, "Timed window pairs for the cost of a rewind checkpoint.")
flags.DEFINE_integer("checkpoint_warmup", 1000, "Steps before the checkpoint measurement (tracing, warm-up).")
flags.DEFINE_float("window_seconds", 1.0, "Compiled training and masked/unmasked LeNet: seconds of one timed window "
                   "of the uncompiled loop (the windows are sized by time, not steps).")
flags.DEFINE_integer("compiled_turns", 8, "Compiled training: rotating turns (off, step, chunk) per network.")
flags.DEFINE_integer("conv_steps_compiled", 3, "Compiled training: steps per window of Conv-2 and ResNet-8.")
flags.DEFINE_integer("conv_turns_compiled", 3, "Compiled training: rotating turns of Conv-2 and ResNet-8.")
flags.DEFINE_boolean("compiled_only", False, "Run only the compiled-training rows and the LeNet bound.")
FLAGS = flags.FLAGS

WINDOW = 200  # steps per window of the checkpoint measurement
QUICK = dict(rounds=2, round_pairs=2, window_seconds=0.2, compiled_turns=2, conv_steps_compiled=1,
             conv_turns_compiled=1, conv_steps=3, resnet_steps=3, vit_steps=3, bert_steps=3,
             fit_pairs=2, fit_examples=6000,
             checkpoint_pairs=3, checkpoint_warmup=100)


def _hparams(model: str, steps: str, optimizer: str = "adam", lr: float = 1.2e-3, width: int = 0,
             **training) -> RunHparams:
    return RunHparams(DatasetHparams("fashion_mnist"), ModelHparams(model, width),
                      TrainingHparams(optimizer=optimizer, lr=lr, batch_size=60, training_steps=steps, **training))


def bert_classifier(seed=0, input_shape=(28, 28, 1), num_classes=10):
    """A KerasHub BertBackbone (2 layers, hidden 128) on 64 token ids made from each image's
    first pixels (timing only), pooled output -> Dense."""
    import keras_hub

    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=1000, num_layers=2, num_heads=2, hidden_dim=128,
                                             intermediate_dim=512, max_sequence_length=64)
    x = keras.Input(input_shape)
    ids = keras.layers.Lambda(lambda t: keras.ops.cast(keras.ops.clip(
        (keras.ops.reshape(t, (-1, 784))[:, :64] + 1.0) * 300.0, 0, 999), "int32"), output_shape=(64,),
        name="token_ids")(x)
    pooled = backbone({"token_ids": ids, "segment_ids": keras.ops.zeros_like(ids),
                       "padding_mask": keras.ops.ones_like(ids)})["pooled_output"]
    return keras.Model(x, keras.layers.Dense(num_classes, name="head")(pooled))


def masked_vs_unmasked(dataset, model_name, steps, bound=1.05, model_fn=None, label=None, width=0,
                       **training) -> dict:
    """Masked (80 % pruned, as IMP trains it) vs no masks at all, same loop and weights."""
    hp = _hparams(model_name, "1000000it", width=width, **training)
    dense = dataclasses.replace(hp, model=dataclasses.replace(hp.model, prune=("!*",)))  # mask nothing

    a, b = [], []
    for _ in range(FLAGS.rounds):  # fresh builds: two identical networks built apart differ by a few percent
        gc.collect()  # the previous round's networks
        masked = no_evaluation(Trainer(hp, dataset=dataset, model_fn=model_fn))
        twin = masked.build_model(hp.training.seed)  # the same factory: same variables and weights
        twin.set_weights(masked.model.get_weights())
        plain = no_evaluation(Trainer(dense, dataset=dataset, model=twin))
        assert masked.masked_paths and not plain.masked_paths
        random_masks(masked.model, 0.2)
        for t in (masked, plain):  # trace and warm up
            timed_steps(t, steps or 20)
        steps = steps or steps_for_seconds(masked, FLAGS.window_seconds)
        paired(lambda: timed_steps(masked, steps), lambda: timed_steps(plain, steps), FLAGS.round_pairs, a, b)
    opt = training.get("optimizer", "adam")
    return row(f"{label or model_name} ({opt}): masked / unmasked, {steps} steps", bound, a, b)


def steps_for_seconds(trainer, seconds: float, probe: int = 20) -> int:
    """Steps of ``trainer`` that take about ``seconds`` (from a timed probe window after
    one untimed call that traces)."""
    timed_steps(trainer, probe)
    per_step = timed_steps(trainer, probe) / probe
    return max(probe, int(round(seconds / per_step)))


def compiled_vs_off(dataset, model_name, modes=("step", "chunk"), bound=None, model_fn=None, label=None,
                    width=0, steps=None, turns=None, **training) -> list[dict]:
    """``mode`` / ``off`` for each compiled mode: same initial weights and 80 %-pruned masks,
    rotating turns of windows of the same number of steps (``steps``, default: sized by
    ``--window_seconds``; the convolutional nets take a fixed few: XLA's CPU convolutions
    are so slow that a window sized for ``off`` would take minutes under ``chunk``)."""
    hp = _hparams(model_name, "1000000it", width=width, **training)
    trainers = {"off": no_evaluation(Trainer(hp, dataset=dataset, model_fn=model_fn))}
    random_masks(trainers["off"].model, 0.2)
    for mode in modes:
        twin = trainers["off"].build_model(hp.training.seed)
        twin.set_weights(trainers["off"].model.get_weights())
        compiled_hp = dataclasses.replace(hp, training=dataclasses.replace(hp.training, jit_compile=mode))
        trainers[mode] = no_evaluation(Trainer(compiled_hp, dataset=dataset, model=twin))
        tflth.masking.apply_masks(trainers[mode].model, tflth.masking.masks_of(trainers["off"].model))
    steps = steps or steps_for_seconds(trainers["off"], FLAGS.window_seconds)
    for mode in modes:
        timed_steps(trainers[mode], steps)  # trace, compile and warm up
    times = rotating({m: (lambda t=t: timed_steps(t, steps)) for m, t in trainers.items()},
                     turns or FLAGS.compiled_turns)
    opt = training.get("optimizer", "adam")
    rows = []
    best = min(modes, key=lambda m: statistics.median(a / b for a, b in zip(times[m], times["off"])))
    for mode in modes:
        rows.append(row(f"{label or model_name} ({opt}): {mode} / off, {steps} steps",
                        bound if mode == best else None, times[mode], times["off"]))
    return rows


def lenet_bound(dataset) -> dict:
    """The LeNet-300-100 ``chunk`` step (Adam, batch 60) against the time its matmuls take
    at the fp32 rate of a ``[60, 784] x [784, 300]`` matmul measured here and now."""
    hp = _hparams("lenet_300_100", "1000000it", jit_compile="chunk")
    trainer = no_evaluation(Trainer(hp, dataset=dataset))
    random_masks(trainer.model, 0.2)
    batch = hp.training.batch_size
    dense = [layer for layer in trainer.model.layers if isinstance(layer, keras.layers.Dense)]
    flop = 0
    for i, layer in enumerate(dense):
        fan_in, fan_out = layer.kernel.shape
        flop += 2 * batch * fan_in * fan_out * (2 if i == 0 else 3)  # forward, weight grad, input grad (not layer 1)
    a = tf.random.normal([batch, 784])
    w = tf.random.normal([784, 300])

    @tf.function
    def matmuls(n):
        total = tf.zeros([batch, 300])
        for _ in tf.range(n):
            total += tf.matmul(a, w)
        return total

    reps = 2000
    matmuls(tf.constant(10))
    rates = []
    steps = steps_for_seconds(trainer, FLAGS.window_seconds)
    step_times = []
    for _ in range(FLAGS.compiled_turns):
        seconds = timed(lambda: matmuls(tf.constant(reps)).numpy())
        rates.append(2 * batch * 784 * 300 * reps / seconds)
        step_times.append(timed_steps(trainer, steps) / steps)
    rate, step_time = statistics.median(rates), statistics.median(step_times)
    bound = flop / rate
    print(f"\nLeNet-300-100 chunk step vs this machine's bound: {flop / 1e6:.1f} MFLOP per step at "
          f"{rate / 1e9:.0f} GFLOP/s (fp32 matmul [60,784]x[784,300], median of {len(rates)}) = "
          f"{bound * 1e3:.3f} ms; the chunk step takes {step_time * 1e3:.3f} ms: {bound / step_time:.2f} of the bound",
          flush=True)
    return row("LeNet-300-100 chunk step: bound / measured (fraction of the bound)", None,
               [bound] * len(step_times), step_times, [bound / t for t in step_times])


def loop_vs_fit(dataset, examples: int) -> dict:
    images = f" ({examples} images)" if examples < dataset.num_train else ""
    dataset = first(dataset, examples)
    trainer = no_evaluation(Trainer(_hparams("lenet_300_100", "1000000it"), dataset=dataset))
    epoch = trainer.iterations_per_epoch
    x = ((dataset.x_train.astype("float32") / 255.0 - 0.2860) / 0.3530)
    y = dataset.y_train
    model = tflth.models.get("lenet_300_100", dataset.input_shape, dataset.num_classes, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1.2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def fit_epoch():
        return timed(lambda: model.fit(x, y, batch_size=60, epochs=1, shuffle=True, verbose=0))

    timed_steps(trainer, epoch)  # trace
    fit_epoch()
    a, b = paired(lambda: timed_steps(trainer, epoch), fit_epoch, FLAGS.fit_pairs)
    return row(f"LeNet-300-100 epoch{images}: tflth loop / keras fit", 0.7, a, b)


def checkpoint_overhead(dataset, warmup: int) -> list[dict]:
    """What 10 rewind checkpoints add to a LeNet-300-100 run, from the cost of one.

    A: train half a window, save a checkpoint as the loop does at a rewind point (a host
    copy of the state, written on the background thread, waited for at the end of the
    window), train the other half; B: the same two halves without the checkpoint. A - B is
    the cost of one checkpoint; a run with 10 of them is 10 x that longer. (On this
    2-core machine the background write competes with training for the CPU, so it costs
    about what a synchronous write does; on a GPU machine it overlaps the steps.)
    """
    trainer = no_evaluation(Trainer(dataclasses.replace(presets.get("lenet_300_100_mnist").run,
                                                        dataset=DatasetHparams("fashion_mnist")), dataset=dataset))
    root = tempfile.mkdtemp(prefix="tflth_bench_")
    writer = checkpoint.Writer()

    def window(save: bool):
        def run():
            timed_steps(trainer, WINDOW // 2)
            if save:
                trainer.save_checkpoint(checkpoint.path_for(root, trainer.step), writer)
            timed_steps(trainer, WINDOW - WINDOW // 2)
            writer.flush()
        return timed(run)

    timed_steps(trainer, warmup)  # trace and warm up
    window(True)
    a, b = paired(lambda: window(True), lambda: window(False), FLAGS.checkpoint_pairs)
    writer.close()
    shutil.rmtree(root, ignore_errors=True)
    window_seconds, extra = statistics.median(b), [x - y for x, y in zip(a, b)]
    rows = []
    # The bound is for the paper's run; the 2-epoch run (12x stricter) is shown for reference.
    for label, run_steps, bound in (("24,000-it", trainer.end_step, 1.02),
                                    ("2-epoch", 2 * trainer.iterations_per_epoch, None)):
        run_seconds = window_seconds * run_steps / WINDOW
        ratios = [1 + 10 * e / run_seconds for e in extra]
        rows.append(row(f"LeNet-300-100 {label} run: with 10 rewind checkpoints / without", bound,
                        [run_seconds + 10 * e for e in extra], [run_seconds, run_seconds], ratios))
    return rows


def _has_keras_hub() -> bool:
    import importlib.util

    if importlib.util.find_spec("keras_hub") is None:
        print("keras-hub is not installed (pip install 'tflth[hub]'): the BERT row is left out", flush=True)
        return False
    return True


def main(argv):
    del argv
    dataset = start(FLAGS, **QUICK)
    print(f"data: {dataset.source}; TF {tf.__version__}, Keras {keras.__version__}, "
          f"{os.cpu_count()} CPU cores, GPUs: {len(tf.config.list_physical_devices('GPU'))}", flush=True)
    hub = _has_keras_hub()
    compiled = [
        *compiled_vs_off(dataset, "lenet_300_100", bound=0.55),
        *compiled_vs_off(dataset, "conv2", steps=FLAGS.conv_steps_compiled, turns=FLAGS.conv_turns_compiled),
        *compiled_vs_off(dataset, "resnet8", optimizer="sgd", lr=0.1, momentum=0.9, width=8, label="resnet8 width 8",
                         steps=FLAGS.conv_steps_compiled, turns=FLAGS.conv_turns_compiled),
        *compiled_vs_off(dataset, "vit_tiny", bound=0.75, optimizer="adamw", lr=1e-3),
        *(compiled_vs_off(dataset, "kerashub_bert", model_fn=bert_classifier, label="KerasHub BertBackbone 2x128")
          if hub else []),
        lenet_bound(dataset),
    ]
    if FLAGS.compiled_only:
        sys.exit(0 if print_table(compiled, what="turns") else 1)
    results = [
        *compiled,
        masked_vs_unmasked(dataset, "lenet_300_100", FLAGS.lenet_steps),
        masked_vs_unmasked(dataset, "conv2", FLAGS.conv_steps),
        masked_vs_unmasked(dataset, "resnet8", FLAGS.resnet_steps, optimizer="sgd", lr=0.1, momentum=0.9, width=8,
                           label="resnet8 width 8"),
        masked_vs_unmasked(dataset, "vit_tiny", FLAGS.vit_steps, optimizer="adamw", lr=1e-3),
        *([masked_vs_unmasked(dataset, "kerashub_bert", FLAGS.bert_steps, bound=1.10, model_fn=bert_classifier,
                              label="KerasHub BertBackbone 2x128")] if hub else []),
        loop_vs_fit(dataset, FLAGS.fit_examples),
        *checkpoint_overhead(dataset, FLAGS.checkpoint_warmup),
    ]
    sys.exit(0 if print_table(results, what="pairs") else 1)


if __name__ == "__main__":
    app.run(main)

#!/usr/bin/env python3
"""What exporting a ticket buys: file sizes, CPU inference latency and test accuracy of each format.

Tickets: one-shot layerwise magnitude pruning of a briefly trained network (``--train_steps``
on Fashion-MNIST with its preset's optimizer), then ``--finetune_steps`` with the mask:

* LeNet-300-100 at 16.9 % and 3.6 % density of the pruned layers: the
  ``lenet_300_100_mnist`` preset's rates applied 8 and 15 times at once (hidden layers
  1 - 0.8^L, the output layer at half rate, 1 - 0.9^L); and, for contrast, half of
  each hidden layer's units pruned at once by channel pruning (``channels``, L1 norm),
  which is what shrinking is for;
* Conv-2 (``conv2``, 28x28x1) at 10.5 %: dense layers 90 % pruned, convolutions and output
  at half rate (45 %), as the ``conv2_cifar10`` preset's per-layer rates stand;
* the zoo's ViT (``vit_tiny``, depth 2) at 16.8 %: global magnitude pruning without the
  output layer (the ``vit_tiny_mnist`` preset), 1 - 0.8^8 at once. Not a chain of
  Dense/Conv layers, so there is no shrunk model (the table says why).

Per ticket, one table row per format: file size against the dense network's plain
``.keras`` file (the baked file has that size: zeros are stored); CPU latency, median of
warm calls taking turns (rotating which side goes first), at batch 1 and batch 128:
Keras models as a ``tf.function`` of ``model(x, training=False)`` (traced once per batch
size, result copied to NumPy), shrunk against the dense (baked) model; ``.tflite`` files
in the ``ai-edge-litert`` interpreter with ``--num_threads`` threads, with and without
the converter's sparsity, and of the shrunk model, against the dense network's
``.tflite`` (the trained network before pruning); ratios are medians of per-turn ratios with quartiles. Test accuracy of
every export on the whole test set, asserted equal to the masked model's (the script
exits 1 otherwise), with the largest logit difference. ``--quick``: a smoke check (20
training steps, no fine-tuning, 3 turns, the first 500 test images) in under a minute. Usage::

    python benchmarks/export_speed.py [--quick] [--data_dir=DIR|FILE.npz] [--synthetic] [--num_threads=2]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from _common import define_flags, rotating, row, start  # noqa: E402
from tflth import data as data_lib  # noqa: E402
from tflth import export, masking, presets, pruning  # noqa: E402
from tflth.export import formats, litert  # noqa: E402
from tflth.export.baked import keras_bytes  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams  # noqa: E402
from tflth.training import Trainer  # noqa: E402

define_flags("Smoke check: 20 training steps, no fine-tuning, 3 timing turns, 500 test images.")
flags.DEFINE_integer("train_steps", 300, "Dense training steps before pruning.")
flags.DEFINE_integer("finetune_steps", 100, "Training steps of each ticket with its mask.")
flags.DEFINE_integer("turns", 15, "Timing turns per comparison.")
flags.DEFINE_float("sample_seconds", 0.02, "About how long one timed sample (a run of calls) takes.")
flags.DEFINE_integer("test_examples", 10_000, "Test images for the accuracies (at most all).")
flags.DEFINE_integer("num_threads", os.cpu_count() or 1, "LiteRT interpreter threads.")
FLAGS = flags.FLAGS
QUICK = dict(train_steps=20, finetune_steps=0, turns=3, sample_seconds=0.005, test_examples=500)


@dataclasses.dataclass(frozen=True)
class Ticket:
    density: str  # what it is meant to be; the table shows the density measured over the pruned layers
    fraction: float
    scope: str
    layer_rates: tuple
    strategy: str = "magnitude"


NETWORKS = (
    ("LeNet-300-100", "lenet_300_100_mnist", ModelHparams("lenet_300_100"),
     [Ticket("16.9 %", 1 - 0.8 ** 8, "layerwise", (("output", 1 - 0.9 ** 8),)),
      Ticket("3.6 %", 1 - 0.8 ** 15, "layerwise", (("output", 1 - 0.9 ** 15),)),
      Ticket("channels 50 %", 0.5, "layerwise", (), "channels")]),
    ("Conv-2", "conv2_cifar10", ModelHparams("conv2"),
     [Ticket("10.5 %", 0.9, "layerwise", (("conv*", 0.45), ("output", 0.45)))]),
    ("ViT (vit_tiny, depth 2)", "vit_tiny_mnist", ModelHparams("vit_tiny", options=(("depth", 2),)),
     [Ticket("16.8 %", 1 - 0.8 ** 8, "global", (("output", 0.0),))]),
)
BATCHES = (1, 128)
T0 = time.perf_counter()


def _test_set(dataset, examples: int):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data_lib.eval_batches(dataset, "test")])
    return np.concatenate(xs)[:examples], np.concatenate(ys)[:examples]


def _keras_fn(model):
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])  # one trace for every batch size
    return lambda x: fn(x).numpy()


def _lite_fn(data: bytes):
    runners = {}

    def call(x):
        if x.shape[0] not in runners:  # one interpreter per batch size: no resize between timed calls
            runners[x.shape[0]] = litert.LiteRTModel(data, num_threads=FLAGS.num_threads)
        return runners[x.shape[0]](x)
    return call


def _logits(fn, x, batch=1000):
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def _timing(sides: dict, x) -> dict[str, list[float]]:
    """Seconds per call of each side at input ``x``, one sample per turn, sides rotating."""
    calls = {}
    for name, fn in sides.items():
        fn(x)  # trace / allocate, then warm
        t0 = time.perf_counter()
        fn(x)
        single = max(time.perf_counter() - t0, 1e-6)
        calls[name] = int(min(max(round(FLAGS.sample_seconds / single), 1), 500))

    def sample(name):
        fn, n = sides[name], calls[name]
        t0 = time.perf_counter()
        for _ in range(n):
            fn(x)
        return (time.perf_counter() - t0) / n

    return rotating({name: (lambda name=name: sample(name)) for name in sides}, FLAGS.turns)


def _latencies(family: dict, reference: str, x_test) -> dict:
    """``{side: {batch: (ms, ratio vs reference, q1, q3)}}``."""
    out = {name: {} for name in family}
    for batch in BATCHES:
        times = _timing(family, x_test[:batch])
        for name in family:
            r = row(name, None, times[name], times[reference])
            out[name][batch] = (1000 * r["a"], r["ratio"], r["q1"], r["q3"])
    return out


def _ticket_rows(label, trainer, ticket, dense_lite, x_test, y_test, problems) -> list[dict]:
    model = trainer.model
    masked_logits = _logits(_keras_fn(model), x_test)
    masked_accuracy = float((masked_logits.argmax(1) == y_test).mean())
    baked = masking.unmasked(model)
    lite = ("litert", "litert_sparse") if dense_lite is not None else ()
    made = {a.format: a for a in formats.render(model, ("baked", "compressed", *lite))}
    dense_bytes = len(made["baked"].data)
    keras_family = {"dense Keras (baked)": _keras_fn(baked)}
    try:
        shrunk, report = export.shrink(model)
        keras_family["shrunk Keras"] = _keras_fn(shrunk)
        shrunk_bytes = len(keras_bytes(shrunk))
        shrunk_note = f"{report.summary()}; {report.params_after / report.params_before:.1%} of the parameters"
    except export.ExportError as e:
        shrunk_bytes, shrunk_note = None, "n/a: " + str(e).split(":", 1)[1].split("; expected")[0].strip()
    fresh = trainer.build_model(trainer.hparams.training.seed)
    with_masks = export.load_compressed(made["compressed"].data, fresh)
    keras_times = _latencies(keras_family, "dense Keras (baked)", x_test)
    entries = [
        ("masked Keras (tflth masks)", None, None, masked_logits, "the reference"),
        ("dense Keras (baked)", dense_bytes, keras_times["dense Keras (baked)"],
         _logits(keras_family["dense Keras (baked)"], x_test), "baked.keras"),
        ("shrunk Keras", shrunk_bytes, keras_times.get("shrunk Keras"),
         _logits(keras_family["shrunk Keras"], x_test) if "shrunk Keras" in keras_family else None, shrunk_note),
        ("compressed (load_compressed)", len(made["compressed"].data), None, _logits(_keras_fn(with_masks), x_test),
         made["compressed"].note),
    ]
    if lite:
        files = {"dense network .tflite": (dense_lite, "the network before pruning (not compared)"),
                 "ticket .tflite": (made["litert"].data, "float32"),
                 "ticket .tflite, sparsity": (made["litert_sparse"].data, "EXPERIMENTAL_SPARSITY")}
        if "shrunk Keras" in keras_family:
            files["shrunk .tflite"] = (litert.checked_litert_bytes(shrunk), "the shrunk model, float32")
        lite_family = {name: _lite_fn(data) for name, (data, _) in files.items()}
        lite_times = _latencies(lite_family, "dense network .tflite", x_test)
        entries += [(name, len(data), lite_times[name], _logits(lite_family[name], x_test), note)
                    for name, (data, note) in files.items()]
    out = []
    for name, size, times, logits, note in entries:
        accuracy = None if logits is None else float((logits.argmax(1) == y_test).mean())
        compared = logits is not None and name != "dense network .tflite"
        diff = float(np.max(np.abs(logits - masked_logits))) if compared else None
        if compared and accuracy != masked_accuracy:
            problems.append(f"{label} {ticket.density} {name}: test accuracy {accuracy:.4f} != masked "
                            f"{masked_accuracy:.4f}")
        out.append({"network": label, "density": ticket.density, "format": name, "bytes": size,
                    "vs_dense": None if size is None else size / dense_bytes, "times": times,
                    "accuracy": accuracy, "diff": diff, "note": note})
    return out


def _network_rows(dataset, label, preset, model_hp, tickets, x_test, y_test, problems) -> list[dict]:
    run = presets.get(preset).run
    hp = dataclasses.replace(run, dataset=DatasetHparams("fashion_mnist"), model=model_hp,
                             training=dataclasses.replace(run.training, training_steps="1000000it"))
    trainer = Trainer(hp, dataset=dataset)
    trainer.evaluate = lambda split="test", examples=None: (0.0, 0.0)  # accuracies are measured below
    trainer.train(end_step=FLAGS.train_steps)
    dense = trainer.get_weights()
    dense_lite = litert.checked_litert_bytes(trainer.model) if _has_litert() else None
    shapes = masking.shapes(trainer.model)
    rows = []
    for ticket in tickets:
        trainer.set_weights(dense)
        masking.apply_masks(trainer.model, masking.Masks.ones(shapes))
        masks = pruning.prune(trainer.model, fraction=ticket.fraction, scope=ticket.scope,
                              layer_rates=ticket.layer_rates, strategy=ticket.strategy)
        masking.apply_masks(trainer.model, masks)
        if FLAGS.finetune_steps:
            trainer.train(end_step=trainer.step + FLAGS.finetune_steps)
        pruned = masking.Masks({p: m for p, m in masks.items() if not m.all()})  # the pruned layers
        measured = f"{100 * pruned.density().density:.1f} %"
        ticket = dataclasses.replace(ticket, density=measured if ticket.strategy == "magnitude" else
                                     f"{measured}, {ticket.strategy} {100 * ticket.fraction:.0f} %")
        rows += _ticket_rows(label, trainer, ticket, dense_lite, x_test, y_test, problems)
        print(f"{label} {ticket.density}: done at {time.perf_counter() - T0:.0f} s", flush=True)
    return rows


def _cell_time(times, batch):
    if not times:
        return "—", "—"
    ms, ratio, q1, q3 = times[batch]
    return f"{ms:.3f}", f"{ratio:.2f} ({q1:.2f}-{q3:.2f})"


def print_rows(rows):
    print(f"\nSizes vs the dense network's plain .keras; latency: median ms per call, warm, and the median per-turn "
          f"ratio (quartiles) vs the dense Keras model (Keras rows) or the dense network's .tflite (LiteRT rows, "
          f"{FLAGS.num_threads} interpreter threads); accuracy on {FLAGS.test_examples:,} test images, "
          f"max |logit - masked logit|.\n"
          "| network | density | format | bytes | vs dense .keras | b=1 ms | b=1 vs dense | b=128 ms | b=128 vs dense "
          "| test acc | max logit diff | note |\n|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b1, b1r = _cell_time(r["times"], 1)
        b128, b128r = _cell_time(r["times"], 128)
        size = "—" if r["bytes"] is None else f"{r['bytes']:,}"
        vs = "—" if r["vs_dense"] is None else f"{100 * r['vs_dense']:.1f} %"
        acc = "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f} %"
        diff = "—" if r["diff"] is None else f"{r['diff']:.1e}"
        print(f"| {r['network']} | {r['density']} | {r['format']} | {size} | {vs} | {b1} | {b1r} | {b128} | {b128r} "
              f"| {acc} | {diff} | {r['note']} |", flush=True)


def _has_litert() -> bool:
    try:
        litert.require_interpreter()
    except export.ExportError:
        return False
    return True


def main(argv):
    del argv
    dataset = start(FLAGS, **QUICK)
    if _has_litert():
        import importlib.metadata  # noqa: PLC0415

        lite = f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}, {FLAGS.num_threads} interpreter threads"
    else:
        lite = f"ai-edge-litert is not installed ({litert.INSTALL}): the LiteRT rows are left out"
    print(f"data: {dataset.source}; TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPU cores; "
          f"{lite}", flush=True)
    x_test, y_test = _test_set(dataset, FLAGS.test_examples)
    t0 = time.perf_counter()
    rows, problems = [], []
    for label, preset, model_hp, tickets in NETWORKS:
        rows += _network_rows(dataset, label, preset, model_hp, tickets, x_test, y_test, problems)
    print_rows(rows)
    print(f"\n{time.perf_counter() - t0:.0f} s")
    for p in problems:
        print("NOT EQUAL: " + p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    app.run(main)

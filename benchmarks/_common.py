"""What every benchmark here shares: paired timings, their summary row, the table, data.

This 2-core VM runs the same work 5-15 % faster or slower from one second to the next,
so every comparison times its two sides as adjacent pairs, alternating which goes first
(or, for three sides or more, rotating which goes first), and reports the median over
pairs of the per-pair ratio with its quartiles.

Also shared: the flags ``--quick`` (a smoke check: few rounds, pairs and steps; flags
given explicitly on the command line still win), ``--data_dir`` and ``--synthetic``;
training a :class:`~tflth.training.Trainer` for timed steps without its end-of-call
evaluation; random masks; and the JSON-lines loop of a benchmark's worker process.

Nothing here imports tflth, TensorFlow or absl at import time (``_tfmot_worker.py``
imports this module in a venv without tflth): they are imported inside the functions
that need them.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import traceback
from typing import Callable, Iterable, TextIO

import numpy as np

__all__ = ["timed", "paired", "rotating", "row", "print_table", "synthetic_npz", "fashion_mnist_dir",
           "fashion_mnist", "first", "define_flags", "quick_overrides", "start", "no_evaluation", "timed_steps",
           "random_masks", "take_stdout", "serve"]


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` takes."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def paired(side_a: Callable[[], float], side_b: Callable[[], float], pairs: int,
           a_times: list | None = None, b_times: list | None = None) -> tuple[list[float], list[float]]:
    """Time ``side_a`` and ``side_b`` (each returns seconds) as ``pairs`` adjacent pairs,
    alternating which goes first; appends to ``a_times`` / ``b_times`` if given."""
    a_times = [] if a_times is None else a_times
    b_times = [] if b_times is None else b_times
    for _ in range(pairs):
        if len(a_times) % 2:
            b, a = side_b(), side_a()
        else:
            a, b = side_a(), side_b()
        a_times.append(a)
        b_times.append(b)
    return a_times, b_times


def rotating(sides: dict[str, Callable[[], float]], turns: int) -> dict[str, list[float]]:
    """Time every side (each returns seconds) once per turn, for ``turns`` turns, rotating
    which side goes first; the times of each side, by name, in turn order."""
    names = list(sides)
    times = {name: [] for name in names}
    for i in range(turns):
        k = i % len(names)
        for name in names[k:] + names[:k]:
            times[name].append(sides[name]())
    return times


def row(name: str, bound: float | None, a_times: list[float], b_times: list[float],
        ratios: list[float] | None = None) -> dict:
    """Median times, the median per-pair ratio A/B and its quartiles; ``ok`` against ``bound``."""
    ratios = ratios or [a / b for a, b in zip(a_times, b_times)]
    ratio = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratio, ratio, ratio)
    return {"name": name, "a": statistics.median(a_times), "b": statistics.median(b_times), "ratio": ratio,
            "q1": q1, "q3": q3, "n": len(ratios), "bound": bound, "ok": bound is None or ratio <= bound}


def print_table(rows: Iterable[dict], what: str = "pairs", unit: str = "s", title: str = "") -> bool:
    """The Markdown table of :func:`row` dicts, after ``title`` if given; returns whether
    every bound holds."""
    rows = list(rows)
    title = f"{title} " if title else ""
    print(f"\n{title}A/B is the median over {what} of the per-{what.rstrip('s')} ratio; times are medians ({unit}).\n"
          f"| comparison | A ({unit}) | B ({unit}) | A/B | quartiles of A/B | {what} | bound | ok |\n"
          "|---|---|---|---|---|---|---|---|")
    for r in rows:
        bound = "—" if r["bound"] is None else f"<= {r['bound']}"
        ok = "—" if r["bound"] is None else "yes" if r["ok"] else "NO"
        print(f"| {r['name']} | {r['a']:.3f} | {r['b']:.3f} | {r['ratio']:.3f} | {r['q1']:.3f}-{r['q3']:.3f} | "
              f"{r['n']} | {bound} | {ok} |", flush=True)
    return all(r["ok"] for r in rows)


def synthetic_npz(path: str, num_train: int = 60000, num_test: int = 10000, seed: int = 0) -> str:
    """Learnable arrays of Fashion-MNIST's shape (class c brightens pixel block c), as an .npz."""
    rng = np.random.default_rng(seed)

    def make(n):
        y = rng.integers(0, 10, size=n)
        x = rng.integers(0, 60, size=(n, 28 * 28), dtype=np.uint8)
        for c in range(10):
            x[y == c, c * 8:(c + 1) * 8] = 255
        return x.reshape(n, 28, 28, 1), y

    x_train, y_train = make(num_train)
    x_test, y_test = make(num_test)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


def fashion_mnist_dir(data_dir: str | None, tmp: str, synthetic: bool = False) -> str:
    """The benchmark's data: ``data_dir``, else Debian's Fashion-MNIST, else synthetic arrays
    of its shape in ``tmp`` (never tfds: no network)."""
    from tflth import data as data_lib

    if synthetic:
        return synthetic_npz(os.path.join(tmp, "synthetic_fashion_mnist.npz"))
    if data_dir:
        return data_dir
    if os.path.isdir(data_lib.DEBIAN_FASHION_MNIST_DIR):
        return data_lib.DEBIAN_FASHION_MNIST_DIR
    return synthetic_npz(os.path.join(tmp, "synthetic_fashion_mnist.npz"))


def fashion_mnist(data_dir: str | None, tmp: str, synthetic: bool = False):
    """:func:`fashion_mnist_dir`'s data, loaded by tflth (an in-memory ``ArrayDataset``: ``tmp``
    may go once this returns)."""
    import dataclasses

    from tflth import data as data_lib

    where = fashion_mnist_dir(data_dir, tmp, synthetic)
    dataset = data_lib.load("fashion_mnist", where)
    if where == os.path.join(tmp, "synthetic_fashion_mnist.npz"):  # written by synthetic_npz
        dataset = dataclasses.replace(dataset, source="synthetic arrays of Fashion-MNIST's shape")
    return dataset


def first(dataset, examples: int):
    """``dataset`` with only its first ``examples`` training images (the test set whole);
    ``dataset`` itself if it has no more."""
    from tflth import data as data_lib

    if examples >= dataset.num_train:
        return dataset
    return data_lib.from_arrays(dataset.name, dataset.x_train[:examples], dataset.y_train[:examples],
                                dataset.x_test, dataset.y_test, source=f"{dataset.source}, first {examples}")


# ------------------------------------------------------------------------------ flags


def define_flags(quick_help: str, synthetic: bool = True) -> None:
    """``--quick`` (help: ``quick_help``), ``--data_dir`` and, if ``synthetic``, ``--synthetic``."""
    from absl import flags

    flags.DEFINE_boolean("quick", False, quick_help)
    flags.DEFINE_string("data_dir", None, "Fashion-MNIST IDX directory or .npz "
                        "(default: Debian's, else synthetic arrays of its shape).")
    if synthetic:
        flags.DEFINE_boolean("synthetic", False, "Synthetic arrays of Fashion-MNIST's shape instead of real data.")


def quick_overrides(flag_values, **smoke) -> None:
    """With ``--quick``, set each named flag to its smoke-check value, unless it was given
    on the command line."""
    if not flag_values.quick:
        return
    for name, value in smoke.items():
        if not flag_values[name].present:
            flag_values[name].value = value


def start(flag_values, **smoke):
    """A benchmark's start in ``main``: absl logging at WARNING, :func:`quick_overrides`, and
    the data of ``--data_dir`` / ``--synthetic`` loaded (:func:`fashion_mnist`)."""
    import tempfile

    from absl import logging

    logging.set_verbosity(logging.WARNING)
    quick_overrides(flag_values, **smoke)
    with tempfile.TemporaryDirectory(prefix="tflth_bench_") as tmp:
        return fashion_mnist(flag_values.data_dir, tmp, "synthetic" in flag_values and flag_values.synthetic)


# ---------------------------------------------------------------------------- training


def no_evaluation(trainer):
    """``trainer`` with its end-of-call test evaluation switched off (time training only)."""
    trainer.evaluate = lambda split="test": (0.0, 0.0)
    return trainer


def timed_steps(trainer, steps: int) -> float:
    """Seconds for ``steps`` more training steps of a :class:`~tflth.training.Trainer`."""
    return timed(lambda: trainer.train(end_step=trainer.step + steps))


def random_masks(model, density: float, seed: int = 0) -> None:
    """A random mask keeping ``density`` of every masked variable of a model (the masked
    forward pass costs the same at any density: pruned weights are zeros, not skipped)."""
    from tflth import masking

    rng = np.random.default_rng(seed)
    masking.apply_masks(model, {p: rng.random(s) < density for p, s in masking.shapes(model).items()})


# ----------------------------------------------------------------------------- workers


def take_stdout() -> TextIO:
    """The real stdout, for a worker's protocol; whatever else gets printed goes to stderr."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol


def serve(handlers: dict[str, Callable[..., dict]], protocol: TextIO | None = None) -> int:
    """Answer JSON-line requests ``{"cmd": name, **kwargs}`` on stdin with ``handlers[name](**kwargs)``
    as JSON lines on ``protocol`` (default: :func:`take_stdout`) until ``{"cmd": "quit"}``
    or the end of stdin. A failing request is answered ``{"error": traceback}``."""
    protocol = protocol or take_stdout()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            cmd = request.pop("cmd")
            if cmd == "quit":
                protocol.write(json.dumps({"ok": True}) + "\n")
                return 0
            if cmd not in handlers:
                raise ValueError(f"unknown command {cmd!r}")
            answer = handlers[cmd](**request)
        except Exception:  # answered, so the driver can report it
            answer = {"error": traceback.format_exc()}
        protocol.write(json.dumps(answer) + "\n")
    return 0

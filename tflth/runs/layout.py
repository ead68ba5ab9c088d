"""The run layout: the one place that names, and lists, the files of tflth's runs.

Every run directory lives under an output directory and is named by a hash of what
determines its results (:func:`tflth.hparams.run_hash`)::

    train_<hash>/                       one training run (bin/train.py)          RunDir
        hparams.json  result.json  metrics.jsonl  tensorboard/
        checkpoints/step_<000000000>.npz
    lottery_<hash>/                     an IMP experiment (bin/prune.py)          Experiment
        hparams.json
        replicate_<r>/level_<L>/        IMP's network of level L (a RunDir, plus mask.npz, density.json)
        replicate_<r>/level_<L>/<control>/   a control on level L's mask (a RunDir)
        replicate_<r>/level_<L>/<method>/    a one-shot method at level L's density (a RunDir, plus mask.npz)
        replicate_<r>/level_<L>/<method>/<control>/   a control on that method's mask (a RunDir)
    stability_<hash>/                   a stability sweep (bin/stability.py)      Sweep
        hparams.json
        replicate_<r>/parent/           the dense network trained to the largest k (a RunDir)
        replicate_<r>/level_<L>/<method>/k_<k>/pair_<p>/copy_<a|b>/   the two copies (RunDirs)
        replicate_<r>/level_<L>/<method>/k_<k>/pair_<p>/pair.json     distances and curves of the pair
        report/                         stability.csv, stability.md, *.png

Listing goes through the same objects, so a directory that is not part of the layout
(a user's notes folder under a level, say) is never mistaken for a run. Which
subdirectories of a level are controls is decided by the caller (the control
registry), not by whatever happens to hold a ``result.json``.
"""

from __future__ import annotations

import os
import re
from typing import Iterable

__all__ = [
    "TRAIN_PREFIX",
    "LOTTERY_PREFIX",
    "STABILITY_PREFIX",
    "RunDir",
    "Experiment",
    "Sweep",
    "checkpoint_file",
    "checkpoint_steps",
    "numbered",
    "train_run",
    "experiment",
    "sweep",
]

TRAIN_PREFIX = "train_"
LOTTERY_PREFIX = "lottery_"
STABILITY_PREFIX = "stability_"

HPARAMS = "hparams.json"
_CHECKPOINT = re.compile(r"^step_(\d{9})\.npz$")


def checkpoint_file(directory: str, step: int) -> str:
    """The checkpoint of ``step`` in a checkpoint directory."""
    return os.path.join(directory, f"step_{int(step):09d}.npz")


def checkpoint_steps(directory: str) -> list[int]:
    """Steps with a complete checkpoint in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    return sorted(int(m.group(1)) for f in os.listdir(directory) if (m := _CHECKPOINT.match(f)))


def numbered(directory: str, prefix: str) -> list[tuple[int, str]]:
    """``[(n, path)]`` of the subdirectories ``<prefix><n>`` of ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)$")
    out = []
    for name in os.listdir(directory):
        m = pattern.match(name)
        path = os.path.join(directory, name)
        if m and os.path.isdir(path):
            out.append((int(m.group(1)), path))
    return sorted(out)


class RunDir:
    """The files of one training run (what :meth:`tflth.training.Trainer.train` writes)."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"RunDir({self.path!r})"

    def __fspath__(self) -> str:
        return self.path

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def hparams(self) -> str:
        return self.file(HPARAMS)

    @property
    def result(self) -> str:
        return self.file("result.json")

    @property
    def metrics(self) -> str:
        return self.file("metrics.jsonl")

    @property
    def tensorboard(self) -> str:
        return self.file("tensorboard")

    @property
    def checkpoints(self) -> str:
        return self.file("checkpoints")

    @property
    def mask(self) -> str:
        return self.file("mask.npz")

    @property
    def density(self) -> str:
        return self.file("density.json")

    def checkpoint(self, step: int) -> str:
        return checkpoint_file(self.checkpoints, step)

    def checkpoint_steps(self) -> list[int]:
        return checkpoint_steps(self.checkpoints)

    def finished(self) -> bool:
        return os.path.isfile(self.result)


class _Group:
    """A directory of runs with its own ``hparams.json`` and ``replicate_<r>/`` subdirectories."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r})"

    @property
    def hparams(self) -> str:
        return os.path.join(self.path, HPARAMS)

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(os.path.abspath(self.path)))

    def replicate_dir(self, replicate: int) -> str:
        return os.path.join(self.path, f"replicate_{replicate}")


class Experiment(_Group):
    """An IMP experiment directory (``lottery_<hash>``)."""

    def level(self, replicate: int, level: int) -> RunDir:
        return RunDir(os.path.join(self.replicate_dir(replicate), f"level_{level}"))

    def control(self, replicate: int, level: int, control: str) -> RunDir:
        return RunDir(os.path.join(self.level(replicate, level).path, control))

    def method(self, replicate: int, level: int, method: str) -> RunDir:
        """A one-shot method's network at level L (``method``), or a control on its mask
        (``"<method>/<control>"``): the method name is the path under the level."""
        return RunDir(os.path.join(self.level(replicate, level).path, *method.split("/")))

    def replicates(self) -> list[int]:
        return [r for r, _ in numbered(self.path, "replicate_")]

    def levels(self, replicate: int) -> list[int]:
        return [level for level, _ in numbered(self.replicate_dir(replicate), "level_")]

    def controls(self, replicate: int, level: int, known: Iterable[str], method: str | None = None) -> list[str]:
        """The controls (or one-shot methods) among ``known`` that have a directory at this
        level, or under the one-shot ``method``'s directory, sorted."""
        base = (self.method(replicate, level, method) if method else self.level(replicate, level)).path
        return sorted(c for c in set(known) if os.path.isdir(os.path.join(base, c)))


class Sweep(_Group):
    """A stability sweep directory (``stability_<hash>``)."""

    @property
    def report_dir(self) -> str:
        return os.path.join(self.path, "report")

    def parent(self, replicate: int) -> RunDir:
        return RunDir(os.path.join(self.replicate_dir(replicate), "parent"))

    def setting_dir(self, replicate: int, level: int, method: str, k: int) -> str:
        return os.path.join(self.replicate_dir(replicate), f"level_{level}", method, f"k_{int(k)}")

    def pair_dir(self, replicate: int, level: int, method: str, k: int, pair: int) -> str:
        return os.path.join(self.setting_dir(replicate, level, method, k), f"pair_{pair}")

    def copy(self, replicate: int, level: int, method: str, k: int, pair: int, which: str) -> RunDir:
        if which not in ("a", "b"):
            raise ValueError(f"copy {which!r}: expected 'a' or 'b'.")
        return RunDir(os.path.join(self.pair_dir(replicate, level, method, k, pair), f"copy_{which}"))

    def pair_result(self, replicate: int, level: int, method: str, k: int, pair: int) -> str:
        return os.path.join(self.pair_dir(replicate, level, method, k, pair), "pair.json")

    def pair_results(self, known_methods: Iterable[str]) -> list[tuple[int, int, str, int, int, str]]:
        """``[(replicate, level, method, k, pair, pair.json path)]`` of every finished pair
        (methods limited to ``known_methods``), in that order."""
        known = set(known_methods)
        out = []
        for r, rdir in numbered(self.path, "replicate_"):
            for level, ldir in numbered(rdir, "level_"):
                for method in sorted(m for m in known if os.path.isdir(os.path.join(ldir, m))):
                    for k, kdir in numbered(os.path.join(ldir, method), "k_"):
                        for p, pdir in numbered(kdir, "pair_"):
                            path = os.path.join(pdir, "pair.json")
                            if os.path.isfile(path):
                                out.append((r, level, method, k, p, path))
        return out


def train_run(output_dir: str, run_hash: str) -> RunDir:
    return RunDir(os.path.join(output_dir, f"{TRAIN_PREFIX}{run_hash}"))


def experiment(output_dir: str, run_hash: str) -> Experiment:
    return Experiment(os.path.join(output_dir, f"{LOTTERY_PREFIX}{run_hash}"))


def sweep(output_dir: str, run_hash: str) -> Sweep:
    return Sweep(os.path.join(output_dir, f"{STABILITY_PREFIX}{run_hash}"))

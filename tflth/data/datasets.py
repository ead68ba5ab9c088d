"""The dataset containers: :class:`ArrayDataset` (images in memory), :class:`StreamDataset`
(a tfds stream) and :class:`ExampleDataset` (a task's own examples, any structure)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["ArrayDataset", "StreamDataset", "ExampleDataset", "example_count"]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ArrayDataset:
    """A dataset held in memory: uint8 HWC images and integer labels (read-only arrays)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    source: str

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    def __repr__(self) -> str:
        return (f"ArrayDataset({self.name!r}, train={self.num_train}, test={self.num_test}, "
                f"input_shape={self.input_shape}, num_classes={self.num_classes}, source={self.source!r})")


@dataclasses.dataclass(frozen=True, eq=False)
class StreamDataset:
    """A tfds dataset too large for memory, read as a stream (ImageNet).

    Same attributes as :class:`ArrayDataset` minus the arrays; :func:`~tflth.data.train_batches`
    and :func:`~tflth.data.eval_batches` accept either.
    """

    name: str
    builder: Any = dataclasses.field(repr=False)
    num_train: int
    num_test: int
    num_classes: int
    input_shape: tuple[int, ...]
    source: str
    train_split: str = "train"
    test_split: str = "validation"
    shuffle_buffer: int = 10_000


def example_count(nest) -> int:
    """The number of examples of an array or a nest of arrays (their common first axis)."""
    leaves = [np.shape(a) for a in _leaves(nest)]
    return int(leaves[0][0]) if leaves and leaves[0] else 0


def _leaves(nest) -> list:
    if isinstance(nest, dict):
        return [leaf for key in sorted(nest) for leaf in _leaves(nest[key])]
    if isinstance(nest, (tuple, list)):
        return [leaf for item in nest for leaf in _leaves(item)]
    return [nest]


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class ExampleDataset:
    """A task's own examples in memory (:class:`tflth.tasks.Task`): ``train`` and each
    evaluation set is ``(x, y)``, each an array or a dict (nest) of arrays whose first axis
    counts the examples (KerasHub's ``{"token_ids": ..., "padding_mask": ...}``, say).

    The engine owns their order: the training stream (:func:`tflth.data.train_batches`)
    visits ``train`` in the seeded per-epoch permutation an :class:`ArrayDataset` gets,
    with no normalisation and no augmentation; evaluation sets are read in order. The
    evaluation set ``"test"`` (else the first) is what a run reports.
    """

    name: str
    train: tuple
    evals: dict
    source: str = "a task's arrays"
    num_classes: int | None = None
    input_shape: tuple | None = None

    @property
    def num_train(self) -> int:
        return example_count(self.train[0])

    @property
    def reported(self) -> str:
        """The evaluation set a run reports: ``"test"``, else the first."""
        return "test" if "test" in self.evals else next(iter(self.evals))

    @property
    def num_test(self) -> int:
        return example_count(self.evals[self.reported][0])

    def split(self, name: str) -> tuple:
        """``(x, y)`` of ``"train"`` or an evaluation set."""
        return self.train if name == "train" else self.evals[name]

    def __repr__(self) -> str:
        sets = ", ".join(f"{k}={example_count(v[0])}" for k, v in self.evals.items())
        return f"ExampleDataset({self.name!r}, train={self.num_train}, {sets}, source={self.source!r})"

"""The two dataset containers: :class:`ArrayDataset` (in memory) and :class:`StreamDataset` (tfds stream)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["ArrayDataset", "StreamDataset"]


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

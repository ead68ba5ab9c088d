"""The dataset registry: the single home of the facts about each named dataset.

Per name (:func:`names`): the input shape a model sees, the number of classes, the
per-channel normalisation mean / std of pixels scaled to [0, 1], whether training
augments by default, and whether the dataset is streamed rather than held in memory.
:mod:`tflth.models.registry` builds its ``DATASETS`` table from here.

The input shape is that of the standard dataset (for ImageNet, the 224x224 crop the
stream produces); an :class:`~tflth.data.ArrayDataset` built from other arrays
(:func:`~tflth.data.from_arrays`) reports the shape of its own images.
"""

from __future__ import annotations

import dataclasses

from tflth.data.errors import DataError

__all__ = ["NORMALIZATION", "DatasetSpec", "names", "spec", "input_shape", "num_classes", "normalization", "augments",
           "streams"]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """The facts about one named dataset (see the module docstring)."""

    input_shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool
    streaming: bool = False


_SPECS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec((28, 28, 1), 10, (0.1307,), (0.3081,), augment=False),
    "fashion_mnist": DatasetSpec((28, 28, 1), 10, (0.2860,), (0.3530,), augment=False),
    "cifar10": DatasetSpec((32, 32, 3), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), augment=True),
    "cifar100": DatasetSpec((32, 32, 3), 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), augment=True),
    "imagenet2012": DatasetSpec((224, 224, 3), 1000, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), augment=True,
                          streaming=True),
}

#: ``{name: (per-channel mean, per-channel std)}`` of pixels scaled to [0, 1].
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    name: (spec.mean, spec.std) for name, spec in _SPECS.items()
}


def names() -> tuple[str, ...]:
    """The accepted dataset names."""
    return tuple(_SPECS)


def spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``name``; a :class:`~tflth.data.DataError` listing the
    accepted names for any other."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise DataError(f"Unknown dataset {name!r}; expected one of: {', '.join(names())}.") from None


def input_shape(name: str) -> tuple[int, int, int]:
    """``(height, width, channels)`` of the images of ``name`` as a model sees them."""
    return spec(name).input_shape


def num_classes(name: str) -> int:
    """The number of classes of ``name``."""
    return spec(name).num_classes


def normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` per channel, for pixels scaled to [0, 1]."""
    facts = spec(name)
    return facts.mean, facts.std


def augments(name: str) -> bool:
    """Whether ``name`` is trained with data augmentation by default."""
    return spec(name).augment


def augmented(dataset) -> bool:
    """Whether a run of ``dataset`` (a :class:`tflth.hparams.DatasetHparams`) augments: its
    ``augment`` when set, else the dataset's default (:func:`augments`)."""
    return augments(dataset.name) if dataset.augment is None else bool(dataset.augment)


def streams(name: str) -> bool:
    """Whether ``name`` is read as a stream (:func:`~tflth.data.load_stream`) rather than held in memory."""
    return spec(name).streaming

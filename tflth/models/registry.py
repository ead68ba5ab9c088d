"""The model registry: name -> builder, default datasets, parameter counting.

Registered names (``names()``) and the patterns they come from:

================================  =============================  ===============
name / pattern                    family                         default dataset
================================  =============================  ===============
``lenet_300_100``,                fully-connected LeNet,         ``mnist``
``lenet_<h1>_<h2>...``            hidden widths h1, h2, ...
``conv2``, ``conv4``, ``conv6``   Frankle & Carbin Conv-N        ``cifar10``
                                  (options ``filters``, ``dense``)
``resnet20``, ``resnet56``,       CIFAR ResNet, depth D = 6n+2   ``cifar10``
``resnet110``, ``resnet<D>``,     (option ``width``, default 16)
``cifar_resnet<D>``
``vgg11``, ``vgg13``, ``vgg16``,  CIFAR VGG with BatchNorm       ``cifar10``
``vgg19``
``resnet18``, ``resnet50``        ImageNet ResNet (torchvision)  ``imagenet2012``
                                  (option ``width``, default 64)
``vit_tiny``                      small vision transformer       ``mnist``
                                  (options ``patch_size``,
                                  ``dim``, ``depth``, ``heads``,
                                  ``mlp_dim``; see ``vit``)
================================  =============================  ===============

``resnet18`` and ``resnet50`` always mean the ImageNet networks (50 = 6*8 + 2 would
also be a CIFAR depth: ask for ``cifar_resnet50`` to get that one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import keras

from tflth.data import registry as data_registry
from tflth import _keras
from tflth.models import cifar_resnet, cifar_vgg, convnet, imagenet_resnet, lenet, vit
from tflth.models._common import check_positive_int, is_int

__all__ = ["DATASETS", "count_params", "dataset_info", "default_dataset", "get", "names", "options"]

# dataset -> (input_shape, num_classes), read from the dataset registry (tflth.data.registry)
DATASETS: Mapping[str, tuple[tuple[int, int, int], int]] = MappingProxyType({
    name: (data_registry.input_shape(name), data_registry.num_classes(name)) for name in data_registry.names()
})


@dataclass(frozen=True)
class _Family:
    """Names matching ``pattern`` (full match) and how to build them."""

    pattern: str
    describe: str  # the pattern as shown to users
    canonical: tuple[str, ...]
    dataset: str
    builder: Callable[..., keras.Model]
    config: Callable[[re.Match], dict]  # name match -> fixed builder arguments
    options: Mapping[str, object] = field(default_factory=dict)  # override -> default


# Order matters: the first family whose pattern matches a name builds it.
_FAMILIES = (
    _Family(
        pattern=r"lenet((?:_\d+)+)",
        describe="lenet_<h1>_<h2>... (hidden widths)",
        canonical=("lenet_300_100",),
        dataset="mnist",
        builder=lenet.build,
        config=lambda m: {"hidden": tuple(int(h) for h in m.group(1)[1:].split("_"))},
    ),
    _Family(
        pattern=r"conv(\d+)",
        describe="conv2 | conv4 | conv6",
        canonical=("conv2", "conv4", "conv6"),
        dataset="cifar10",
        builder=convnet.build,
        config=lambda m: {"depth": int(m.group(1))},
        options=dict(convnet.DEFAULTS),
    ),
    _Family(
        pattern=r"resnet(18|50)",
        describe="resnet18 | resnet50 (ImageNet)",
        canonical=("resnet18", "resnet50"),
        dataset="imagenet2012",
        builder=imagenet_resnet.build,
        config=lambda m: {"depth": int(m.group(1))},
        options={"width": imagenet_resnet.DEFAULT_WIDTH},
    ),
    _Family(
        pattern=r"(?:cifar_)?resnet(\d+)",
        describe="resnet<D> / cifar_resnet<D> with D = 6n+2 (CIFAR)",
        canonical=("resnet20", "resnet56", "resnet110"),
        dataset="cifar10",
        builder=cifar_resnet.build,
        config=lambda m: {"depth": int(m.group(1))},
        options={"width": cifar_resnet.DEFAULT_WIDTH},
    ),
    _Family(
        pattern=r"vgg(\d+)",
        describe="vgg11 | vgg13 | vgg16 | vgg19 (CIFAR, BatchNorm)",
        canonical=("vgg11", "vgg13", "vgg16", "vgg19"),
        dataset="cifar10",
        builder=cifar_vgg.build,
        config=lambda m: {"depth": int(m.group(1))},
    ),
    _Family(
        pattern=r"vit_tiny",
        describe="vit_tiny (vision transformer; options patch_size, dim, depth, heads, mlp_dim)",
        canonical=("vit_tiny",),
        dataset="mnist",
        builder=vit.build,
        config=lambda m: {},
        options=dict(vit.DEFAULTS),
    ),
)

_ORDER = ("lenet_300_100", "conv2", "conv4", "conv6", "resnet20", "resnet56", "resnet110",
          "vgg11", "vgg13", "vgg16", "vgg19", "resnet18", "resnet50", "vit_tiny")


def names() -> list[str]:
    """The canonical registered model names.

    Families accept more names than listed: ``lenet_<h1>_<h2>...`` (any positive
    hidden widths), ``resnet<D>`` / ``cifar_resnet<D>`` for any CIFAR depth D = 6n+2
    (``resnet18`` / ``resnet50`` are the ImageNet networks).
    """
    return list(_ORDER)


def _accepted() -> str:
    return (f"registered names: {', '.join(_ORDER)}; patterns: "
            + "; ".join(f.describe for f in _FAMILIES))


def _resolve(name) -> tuple[_Family, re.Match]:
    if isinstance(name, str):
        for family in _FAMILIES:
            match = re.fullmatch(family.pattern, name)
            if match:
                return family, match
    raise ValueError(f"Unknown model name {name!r}; {_accepted()}.")


def default_dataset(name: str) -> str:
    """The dataset the paper trains model ``name`` on (a key of :data:`DATASETS`)."""
    return _resolve(name)[0].dataset


def options(name: str) -> tuple[str, ...]:
    """The options :func:`get` accepts for model ``name`` (e.g. ``("width",)`` for a
    ResNet, ``()`` for VGG)."""
    return tuple(_resolve(name)[0].options)


def dataset_info(dataset: str) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of a dataset in :data:`DATASETS`."""
    try:
        return DATASETS[dataset]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown dataset {dataset!r}; known datasets: {', '.join(DATASETS)}."
        ) from None


def _check_input_shape(input_shape, name: str) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise ValueError(
            f"Model '{name}': input_shape must be a sequence of positive integers "
            f"(without the batch dimension), got {input_shape!r}."
        ) from None
    if not shape or not all(is_int(d) and d > 0 for d in shape):
        raise ValueError(
            f"Model '{name}': input_shape must be a sequence of positive integers "
            f"(without the batch dimension), got {input_shape!r}."
        )
    return tuple(int(d) for d in shape)


def get(name: str, input_shape: Sequence[int] | None = None, num_classes: int | None = None,
        seed: int = 0, **overrides) -> keras.Model:
    """Build registered model ``name`` (plain Keras layers; mask it with :mod:`tflth.masking`).

    Args:
      name: a registered name or a family pattern (see :func:`names`).
      input_shape: the input shape without the batch dimension, channels last.
        Defaults to that of ``default_dataset(name)``.
      num_classes: the number of output logits; defaults likewise.
      seed: a non-negative integer. Each kernel initialiser gets its own seed derived
        from ``(seed, layer index)``, so equal seeds give identical weights in any
        process and different seeds different weights. The global Keras random state
        is neither used nor changed.
      **overrides: family options: ``width`` for ``resnet<D>`` (default 16) and
        ``resnet18`` / ``resnet50`` (default 64); ``patch_size``, ``dim``, ``depth``,
        ``heads``, ``mlp_dim`` for ``vit_tiny`` (see :mod:`tflth.models.vit`).

    Returns:
      A built functional ``keras.Model`` named ``name``; its last layer, ``output``,
      produces logits (no activation). Every layer has a fixed, descriptive name.

    Raises:
      ValueError: unknown name, unknown option, or an invalid value.
    """
    family, match = _resolve(name)
    unknown = sorted(set(overrides) - set(family.options))
    if unknown:
        accepted = ", ".join(family.options) if family.options else "none"
        raise ValueError(
            f"Unknown option(s) {', '.join(map(repr, unknown))} for model '{name}'; "
            f"accepted options: {accepted}."
        )
    default_shape, default_classes = DATASETS[family.dataset]
    input_shape = _check_input_shape(default_shape if input_shape is None else input_shape, name)
    num_classes = check_positive_int(
        default_classes if num_classes is None else num_classes, "num_classes", name)
    if not is_int(seed) or seed < 0:
        raise ValueError(f"Model '{name}': seed must be a non-negative integer, got {seed!r}.")
    kwargs = {**family.options, **overrides, **family.config(match)}
    return family.builder(name, input_shape, num_classes, int(seed), **kwargs)


def count_params(model: keras.Model, include_bn_statistics: bool = False) -> int:
    """The number of parameters of ``model``.

    Counts every weight except, by default, BatchNorm moving mean / variance (masks are
    not weights: :mod:`tflth.masking` keeps them beside the model). For an unfrozen
    model that is exactly the number of trainable weights, which is how the reference
    figures (torchvision, open_lth's ``named_parameters``) count: LeNet-300-100
    266,610; ResNet-20 272,474; VGG-16 14,728,266; ResNet-50 25,557,032. Pass
    ``include_bn_statistics=True`` to add the BN moving statistics.
    """
    excluded = set()
    for layer in _keras.sublayers(model):
        if isinstance(layer, keras.layers.BatchNormalization) and not include_bn_statistics:
            excluded.update(id(v) for v in (layer.moving_mean, layer.moving_variance) if v is not None)
    seen, total = set(), 0
    for v in model.weights:
        if id(v) in seen or id(v) in excluded:
            continue
        seen.add(id(v))
        size = 1
        for d in v.shape:
            size *= int(d)
        total += size
    return total

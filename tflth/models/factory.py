"""Model factories: ``seed -> built Keras model``, from a zoo name or the user's own function.

Everything that trains in tflth (``Trainer``, ``LotteryJob``, ``StabilityJob``, the
binaries) builds its networks through a :class:`ModelFactory`, so a user's own model
runs IMP and stability sweeps exactly as the zoo's do. ``ModelHparams.name`` (``--model``)
is either a zoo name (:func:`tflth.models.names`) or a reference to a function:

* ``package.module:function`` (importable from ``sys.path``; the current directory is
  searched first, as ``python -m`` does), or
* ``path/to/file.py:function``.

The function is called as ``function(seed=..., input_shape=..., num_classes=...)`` with
the dataset's shape (no batch dimension) and class count, and returns a built Keras 3
model whose output is ``(batch, num_classes)`` class logits. The reference is recorded
in the run's ``hparams.json`` and run name, so resuming and reporting work as for the
zoo. Every build runs with Keras's automatic names reset (:func:`tflth._keras.fresh_names`),
so two builds name their variables alike and masks and checkpoints fit both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

from tflth import _keras
from tflth.hparams import HparamError, ModelHparams
from tflth.references import is_reference, resolve

__all__ = ["ModelFactory", "factory", "is_reference", "resolve"]


def _error(name: str, why: str) -> HparamError:
    return HparamError(f"ModelHparams.name={name!r} is invalid: {why}.", owner="ModelHparams", field="name", value=name)


#: What Keras's input check (``keras/src/layers/input_spec.py``) says when a layer refuses the
#: shape of its input, before computing anything.
_INPUT_CHECK = "is incompatible with the layer"


def _declared_input_shape(model) -> tuple | None:
    """The shape a model with a declared input (functional, Sequential) takes, batch
    included; ``None`` for a subclassed model or several inputs."""
    inputs = getattr(model, "inputs", None)
    if not isinstance(inputs, (list, tuple)) or len(inputs) != 1:
        return None
    return tuple(inputs[0].shape)


def _fits(declared: tuple, batch: tuple) -> bool:
    """Whether a batch of shape ``batch`` fits ``declared`` (its batch size aside)."""
    return len(declared) == len(batch) and all(d is None or d == b for d, b in zip(declared[1:], batch[1:]))


def _is_zoo_name(name: str) -> bool:
    from tflth.models import registry  # noqa: PLC0415

    try:
        registry.default_dataset(name)
    except ValueError:
        return False
    return True


class ModelFactory:
    """``factory(seed) -> built keras.Model`` for one :class:`ModelHparams` and dataset shape.

    Args:
        model: the :class:`ModelHparams` (zoo name or reference, width, options, prune globs).
        input_shape: the dataset's example shape (no batch dimension); ``None`` for a task's
            own examples (:class:`tflth.tasks.Task`), whose model is not checked against it.
        num_classes: the dataset's class count (``None`` for a task).
        fn: a function to build with instead of resolving ``model.name`` (library use:
            ``fn(seed=, input_shape=, num_classes=)``; ``model.name`` then only labels runs).

    Attributes:
        exclude_output: whether the default mask selection leaves the output layer out
            (a user's model, given by reference, by ``fn`` or as ``Trainer(model=...)``
            under a name that is not the zoo's: yes, as open_lth does; the zoo: no, its
            presets say per layer).
    """

    def __init__(self, model: ModelHparams, input_shape: Sequence[int], num_classes: int, fn: Callable | None = None):
        self.hparams = model
        # None for a task's model (tflth.tasks.Task): its examples need not be images of classes
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.user = fn is not None or is_reference(model.name) or not _is_zoo_name(model.name)
        self._fn = fn if fn is not None else (resolve(model.name) if is_reference(model.name) else None)
        self.exclude_output = self.user

    def __call__(self, seed: int = 0) -> keras.Model:
        with _keras.fresh_names():
            if self._fn is None:
                from tflth.models import registry  # noqa: PLC0415

                overrides = dict(self.hparams.options)
                if self.hparams.width:
                    overrides["width"] = self.hparams.width
                return registry.get(self.hparams.name, input_shape=self.input_shape, num_classes=self.num_classes,
                                    seed=seed, **overrides)
            model = self._fn(seed=int(seed), input_shape=self.input_shape, num_classes=self.num_classes)
        return model

    def check(self, model=None) -> keras.Model:
        """Build (or take) a model and check it is a built classifier of this dataset.

        The function (a zoo factory's or the user's) is called as it is: an exception it
        raises is a bug in it and propagates unchanged, with its traceback; so does one
        the model raises on a batch of the dataset's shape, unless Keras refuses that
        shape before the model computes anything (its declared input, or a layer's input
        check): that is a model built for another dataset.

        Raises:
            HparamError: the function returned no Keras model, an unbuilt one, one built
                for inputs of another shape, or one whose output for a batch of 2 examples
                is not ``(2, num_classes)``.
        """
        name = self.hparams.name
        if model is None:
            model = self(0)
        if not isinstance(model, keras.Model):
            raise _error(name, f"it returned {type(model).__name__}, expected a keras.Model")
        if self.user and self.input_shape is not None:
            batch = (2, *self.input_shape)
            declared = _declared_input_shape(model)
            if declared is not None and not _fits(declared, batch):
                raise _error(name, f"the model takes inputs of shape {(None, *declared[1:])}, not the dataset's "
                                   f"batches of shape {batch}; expected a model built with "
                                   f"input_shape={self.input_shape}")
            try:
                out = model(np.zeros(batch, "float32"), training=False)
            except ValueError as e:
                if _INPUT_CHECK not in str(e):  # anything but Keras's input check is the model's own error
                    raise
                raise _error(name, f"the model cannot take a batch of shape {batch} "
                                   f"({str(e).strip().splitlines()[0]})") from None
            shape = tuple(getattr(out, "shape", ()))
            if shape != (2, self.num_classes):
                raise _error(name, f"its output for a batch of 2 has shape {shape}; expected class logits "
                                   f"(2, {self.num_classes}) for this dataset")
        if not model.built or not model.trainable_variables:
            raise _error(name, "it returned a model with no trainable variables (build it on an input first)")
        return model

    def prunable(self, model) -> dict:
        """The variables a run masks in ``model`` (:func:`tflth.masking.select` of ``prune``)."""
        from tflth import masking  # noqa: PLC0415

        try:
            return masking.select(model, self.hparams.prune, exclude_output=self.exclude_output)
        except masking.MaskError as e:
            raise HparamError(f"ModelHparams.prune={','.join(self.hparams.prune)!r} is invalid: {e}",
                              owner="ModelHparams", field="prune", value=self.hparams.prune) from None


def factory(model: ModelHparams, input_shape: Sequence[int], num_classes: int, fn: Callable | None = None) -> ModelFactory:
    """The :class:`ModelFactory` of ``model`` for a dataset of this shape and class count."""
    return ModelFactory(model, input_shape, num_classes, fn)

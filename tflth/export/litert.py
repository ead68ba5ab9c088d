"""LiteRT (``.tflite``) files of a model, and running them with the LiteRT interpreter.

Conversion: Keras's own ``model.export(path, format="litert")`` where this Keras has it
(a SavedModel of ``model(x, training=False)`` with a dynamic batch dimension, through
``tf.lite.TFLiteConverter.from_saved_model``), else, when ``Model.export`` answers
``Unrecognized format=litert`` (Keras 3.12), that converter on a SavedModel written by
``model.export(format="tf_saved_model")``; any other refusal of the model is reported. ``sparsity=True``
adds ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY``: the converter stores weight tensors
that are sparse enough in a sparse format (and the runtime may use sparse kernels);
values stay float32.

Inputs: one float tensor (an image classifier, say); a model declaring several inputs or
integer ones (a language model's token ids and padding mask) is refused in one line
(:func:`check_single_float_input`).

Running: :class:`LiteRTModel` wraps the ``ai-edge-litert`` interpreter
(``from ai_edge_litert.interpreter import Interpreter``), an optional dependency:
``pip install 'tflth[litert]'``. Without it, :func:`require_interpreter` (called by
:func:`to_litert`, which checks every file it writes by running it) raises one
:class:`~tflth.export.ExportError` saying so.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging as absl_logging

from tflth.export import _files
from tflth.export.errors import ExportError

__all__ = ["INSTALL", "VERIFY_TOLERANCE", "require_interpreter", "check_single_float_input", "litert_bytes",
           "checked_litert_bytes", "check_litert", "to_litert", "LiteRTModel"]

INSTALL = "pip install 'tflth[litert]'"
VERIFY_TOLERANCE = 1e-4  # max |logit difference| between a written .tflite and its Keras model


def require_interpreter():
    """The LiteRT ``Interpreter`` class; an :class:`ExportError` telling how to install it
    when ``ai-edge-litert`` is missing."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError as e:
        raise ExportError(f"LiteRT export needs the LiteRT interpreter (ai-edge-litert: {e}); install it with "
                          f"{INSTALL}.") from None
    return Interpreter


#: How ``Model.export`` refuses a format this Keras does not know (every Keras 3 release:
#: ``Unrecognized format=litert. Supported formats are: [...]``, Keras 3.12).
_UNKNOWN_FORMAT = "Unrecognized format="


def _keras_export(model, path: str, optimizations: list) -> None:
    try:
        model.export(path, format="litert", verbose=False, optimizations=optimizations)
        return
    except ValueError as e:
        if not str(e).startswith(_UNKNOWN_FORMAT):  # a Keras that knows litert refused the model itself
            raise
    import tensorflow as tf  # noqa: PLC0415  (a Keras without format="litert")

    saved = path + "_saved_model"
    model.export(saved, format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    converter.optimizations = optimizations
    with open(path, "wb") as f:
        f.write(converter.convert())


def _describe_input(tensor) -> str:
    name = getattr(tensor, "name", "input")
    return f"{name} {getattr(tensor, 'dtype', '?')} {tuple(getattr(tensor, 'shape', ()))}"


def check_single_float_input(model) -> None:
    """A LiteRT export takes a model of one float input tensor (an image classifier, say):
    the interpreter wrapper (:class:`LiteRTModel`) and the check of every written file
    (:func:`check_litert`) feed one float batch. A model declaring other inputs (several,
    a dict of token ids and a padding mask, integers) is refused in one line; a model
    that declares none (subclassed) is checked on the converted file instead.

    Raises:
        ExportError: naming the model's inputs and what is expected.
    """
    inputs = getattr(model, "inputs", None)
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return
    if len(inputs) == 1 and "float" in str(getattr(inputs[0], "dtype", "")):
        return
    found = ", ".join(_describe_input(t) for t in inputs)
    raise ExportError(f"Model '{model.name}' takes {len(inputs)} input{'s' if len(inputs) > 1 else ''} ({found}); the "
                      "LiteRT export (litert, litert_sparse) takes a model of one float input tensor, e.g. an image "
                      "classifier; expected such a model, or another format (baked, compressed).")


def litert_bytes(model, sparsity: bool = False) -> bytes:
    """The ``.tflite`` flatbuffer of ``model`` (float32; see the module docstring).

    Raises:
        ExportError: the model does not take one float input
            (:func:`check_single_float_input`), or the converter refuses it.
    """
    import tensorflow as tf  # noqa: PLC0415

    check_single_float_input(model)

    optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparsity else []
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.WARNING)  # the SavedModel writer's INFO lines say nothing to a user
    try:
        return _files.bytes_of("model.tflite", lambda path: _keras_export(model, path, optimizations))
    except Exception as e:  # broad on purpose: the SavedModel writer and converter raise many types for a model
        # they refuse (ConverterError, ValueError, TypeError, NotImplementedError, ...): one line naming the model
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"Model '{model.name}' cannot be converted to LiteRT ({type(e).__name__}: "
                          f"{first}).") from None
    finally:
        absl_logging.set_verbosity(verbosity)


class LiteRTModel:
    """A ``.tflite`` model run by the LiteRT interpreter, called like a Keras model.

    Args:
        model: a ``.tflite`` file path or its bytes.
        num_threads: the interpreter's CPU threads (default: the interpreter's own choice).

    ``model_obj(x)`` returns the first output for a batch ``x`` (float32, any batch
    size: the input is resized when the batch size changes).

    Attributes:
        input_shape: the shape of the model's input, ``None`` for its batch dimension.
        input_count: how many inputs the model has (``model_obj(x)`` feeds the first).

    Raises:
        ExportError: ``ai-edge-litert`` is not installed.

    Example:

    >>> import keras, numpy as np
    >>> from tflth import export
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> lite = export.LiteRTModel(export.litert_bytes(net), num_threads=1)
    >>> x = np.ones((2, 4), "float32")
    >>> bool(np.allclose(lite(x), net(x), atol=1e-6))
    True
    """

    def __init__(self, model: str | os.PathLike | bytes, num_threads: int | None = None):
        interpreter = require_interpreter()
        source = {"model_content": bytes(model)} if isinstance(model, (bytes, bytearray)) else \
            {"model_path": os.fspath(model)}
        self.interpreter = interpreter(**source, num_threads=num_threads)
        details = self.interpreter.get_input_details()
        self._input = details[0]
        self._output = self.interpreter.get_output_details()[0]
        self._batch = None
        self.input_count = len(details)
        signature = self._input.get("shape_signature", self._input["shape"])
        self.input_shape = tuple(None if i == 0 or int(d) < 0 else int(d) for i, d in enumerate(signature))
        self.input_dtype = np.dtype(self._input["dtype"])

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, self._input["dtype"])
        if self._batch != x.shape[0]:
            self.interpreter.resize_tensor_input(self._input["index"], list(x.shape))
            self.interpreter.allocate_tensors()
            self._output = self.interpreter.get_output_details()[0]
            self._batch = x.shape[0]
        self.interpreter.set_tensor(self._input["index"], x)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output["index"])


def check_litert(data: bytes, model, what: str) -> None:
    """Run ``data`` on a fixed random batch of its input's shape; its outputs must match
    ``model``'s within :data:`VERIFY_TOLERANCE`, else an :class:`ExportError` naming
    ``what`` (also for a file of several or non-float inputs)."""
    lite = LiteRTModel(data)
    if lite.input_count != 1 or lite.input_dtype.kind != "f" or None in lite.input_shape[1:]:
        raise ExportError(f"The LiteRT conversion of model '{model.name}' ({what}) takes {lite.input_count} input(s), "
                          f"the first {lite.input_dtype} {lite.input_shape}; expected one float input of fixed shape "
                          "(but its batch size), as a LiteRT export of tflth checks and runs.")
    x = np.random.default_rng(0).normal(size=(4, *lite.input_shape[1:])).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    got = lite(x)
    if got.shape != expected.shape or not np.allclose(got, expected, atol=VERIFY_TOLERANCE, rtol=0):
        worst = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("nan")
        raise ExportError(f"The LiteRT conversion of model '{model.name}' ({what}) does not compute what the model "
                          f"does (max |difference| {worst:.3g} > {VERIFY_TOLERANCE}).")


def to_litert(model, path: str | os.PathLike, sparsity: bool = False) -> str:
    """Write ``model`` as a float32 LiteRT (``.tflite``) file, checked by running it.

    Args:
        model: a Keras model (a masked one is converted with its pruned weights zero).
        path: the ``.tflite`` file to write (atomically).
        sparsity: add ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` (sparse weight storage).

    Returns:
        ``path``.

    Raises:
        ExportError: ``ai-edge-litert`` is not installed (``pip install 'tflth[litert]'``),
            the converter refuses the model, or the file's outputs differ from the
            model's by more than 1e-4 on a random batch.

    Example:

    >>> import os, tempfile, keras, numpy as np
    >>> from tflth import export
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> path = export.to_litert(net, os.path.join(tempfile.mkdtemp(), "net.tflite"), sparsity=True)
    >>> export.LiteRTModel(path)(np.ones((5, 4))).shape
    (5, 3)
    """
    return _files.write_bytes(path, checked_litert_bytes(model, sparsity))


def checked_litert_bytes(model, sparsity: bool = False) -> bytes:
    """:func:`litert_bytes`, run once by the interpreter and compared with ``model``
    (:func:`check_litert`); what :func:`to_litert` writes."""
    require_interpreter()
    data = litert_bytes(model, sparsity)
    check_litert(data, model, "sparse" if sparsity else "dense")
    return data

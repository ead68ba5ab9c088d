"""BatchNorm statistics recomputed exactly over a fixed set of batches (TF / Keras).

Interpolating two networks' weights does not give usable BatchNorm moving statistics:
the statistics of ``W(α)``'s activations are not the interpolation of the endpoints'
(dnn-mode-connectivity, REPAIR, git-re-basin all recompute them). This module sets each
BN layer's ``moving_mean`` / ``moving_variance`` to the exact statistics of that layer's
inputs over *all* examples of a given list of input batches.

Convention (as PyTorch / dnn-mode-connectivity's ``update_bn``): the forward passes run
with every BN layer normalising by the **current batch's** statistics, as in training,
so BN layer i's inputs depend on the earlier BN layers' batch statistics, not on their
(old or recomputed) moving statistics. Unlike ``update_bn`` (``model.train()``), every
other layer runs in inference mode (``training=False``): dropout and other
training-only behaviour stay off, so the result is deterministic. tflth's models have no
such layers, where the two conventions coincide.

For each BN layer and channel the statistics are those of the population — every
example of every batch (and every spatial position for conv features), the biased
(divide-by-N) variance: ``moving_mean = E[x]`` and ``moving_variance = E[x²] − E[x]²``
over the set. Keras normalises and updates its moving variance with the biased batch
variance too; PyTorch's running_var uses the unbiased one (a factor N/(N−1), negligible
for N in the thousands).

How they are computed: each batch's per-channel mean and (two-pass) variance are the
ones the forward pass computes anyway to normalise that batch (``tf.nn.moments``,
float32); the batches are combined on the host in float64 with the exact parallel
formula (Chan et al.): ``N = Σ n_b``, ``mean = Σ n_b·m_b / N``,
``var = (Σ n_b·v_b + Σ n_b·(m_b − mean)²) / N``, which equals ``E[x²] − E[x]²`` over
the set without its cancellation. No float64 copy of any activation is made (for
ResNet-50 / ImageNet, one float64 copy of the first BN input of a 1024-batch is 6.6 GB).

The values are assigned directly with ``Variable.assign`` — no exponential average, so
no momentum convention (Keras's ``moving = momentum·moving + (1−momentum)·batch`` is the
inverse of PyTorch's) can leave old statistics behind. The forward passes never run
Keras's own update: while statistics are collected each BN layer's ``call`` is replaced
(on the instance, restored afterwards) by a side-effect-free batch-statistics
normalisation, so no variable of the model changes except the moving statistics
assigned at the end. Don't use the model from another thread during the call.

The forward pass is one ``tf.function`` per model (traced once and cached; batches of
different sizes share one trace).
"""

from __future__ import annotations

import contextlib
import dataclasses
import weakref
from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tflth import _keras

__all__ = [
    "BNStatistics",
    "batchnorm_layers",
    "BatchNormRecomputer",
    "recompute_bn_statistics",
]


@dataclasses.dataclass(frozen=True)
class BNStatistics:
    """Exact statistics of one BN layer's inputs (float64, per channel).

    Attributes:
        mean: ``E[x]``.
        variance: ``E[x²] − E[x]²`` (population, biased).
        count: number of values per channel (examples × spatial positions).
    """

    mean: np.ndarray
    variance: np.ndarray
    count: int


def batchnorm_layers(model) -> dict[str, keras.layers.BatchNormalization]:
    """``{layer_path: layer}`` for every ``keras.layers.BatchNormalization`` of ``model``.

    Nested models and layers are searched too; a layer path is the ``/``-joined chain of
    layer names. A layer shared by several parents is listed
    once.

    Args:
        model: a built Keras model or layer.

    Returns:
        The BN layers in model order.
    """
    return {
        path: layer
        for path, layer in _keras.layer_paths(model)
        if isinstance(layer, keras.layers.BatchNormalization)
    }


def _reduction_axes(bn, ndim: int) -> list[int]:
    axis = bn.axis % ndim
    return [i for i in range(ndim) if i != axis]


def _batch_stat_call(bn, record):
    """A replacement for ``bn.call``: normalise with the batch's statistics (as Keras does
    with ``training=True``) without touching the moving statistics, and record the
    per-channel batch mean and variance (the ones it normalises with)."""

    def call(inputs, training=None, mask=None):
        if mask is not None:
            raise ValueError(f"recompute_bn_statistics: BN layer '{bn.name}' received a mask; not supported.")
        compute_dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, compute_dtype)
        axes = _reduction_axes(bn, len(x.shape))
        count = tf.cast(tf.size(x, out_type=tf.int64) // tf.cast(tf.shape(x)[bn.axis], tf.int64), tf.float64)
        mean, variance = ops.moments(x, axes=axes, synchronized=False)  # what Keras's training=True uses
        record(bn, mean, variance, count)
        gamma = ops.cast(bn.gamma, x.dtype) if bn.scale else None
        beta = ops.cast(bn.beta, x.dtype) if bn.center else None
        outputs = ops.batch_normalization(x=x, mean=mean, variance=variance, axis=bn.axis,
                                          offset=beta, scale=gamma, epsilon=bn.epsilon)
        return ops.cast(outputs, bn.compute_dtype)

    return call


def _combine(acc, mean, variance, count):
    """Fold one batch's (mean, variance, count) into ``acc = [N, mean, M2]`` (float64);
    an empty batch (count 0, nan moments) changes nothing."""
    if count == 0:
        return
    mean = np.asarray(mean, np.float64)
    variance = np.asarray(variance, np.float64)
    n0, mean0, m2 = acc
    total = n0 + count
    delta = mean - mean0
    acc[0] = total
    acc[1] = mean0 + delta * (count / total)
    acc[2] = m2 + variance * count + delta * delta * (n0 * count / total)


class BatchNormRecomputer:
    """Recomputes the BN statistics of one model, reusing one traced forward pass.

    Build once per model and call it at every interpolation point (after assigning the
    interpolated weights); :func:`recompute_bn_statistics` keeps one per model for you.

    Args:
        model: a built Keras model (functional, sequential or subclassed, BN layers
            possibly nested) containing at least one BatchNormalization layer.

    Raises:
        ValueError: no BN layer, an unbuilt one, or one with ``renorm=True`` (which
            keeps other statistics).
    """

    def __init__(self, model):
        self._model = weakref.ref(model)  # the per-model cache must not keep the model alive
        self.layers = batchnorm_layers(model)
        if not self.layers:
            raise ValueError(f"Model '{model.name}' has no BatchNormalization layer.")
        for path, bn in self.layers.items():
            if not bn.built or bn.moving_mean is None:
                raise ValueError(f"BatchNormalization layer '{path}' is not built; build the model first.")
            if bn.renorm:
                raise ValueError(f"BatchNormalization layer '{path}' uses batch renormalization; not supported.")
        self._index = {id(bn): i for i, bn in enumerate(self.layers.values())}
        self._recorded = None
        self._forward = tf.function(self._collect, reduce_retracing=True)
        self._traced = False

    @property
    def model(self):
        model = self._model()
        if model is None:
            raise RuntimeError("The model of this BatchNormRecomputer no longer exists.")
        return model

    def _record(self, bn, mean, variance, count):
        i = self._index[id(bn)]
        if self._recorded[i] is not None:
            raise ValueError(
                f"BatchNormalization layer '{bn.name}' is called more than once in a forward pass; "
                "shared BN layers are not supported."
            )
        self._recorded[i] = (mean, variance, count)

    def _collect(self, x):
        self._recorded = [None] * len(self.layers)
        self.model(x, training=False)
        recorded, self._recorded = self._recorded, None
        unused = [p for p, r in zip(self.layers, recorded) if r is None]
        if unused:
            raise ValueError(f"BatchNormalization layers {unused} are not used by the model's forward pass.")
        return recorded

    @contextlib.contextmanager
    def _patched(self):
        layers = list(self.layers.values())
        patched = []
        try:
            for bn in layers:
                if "call" in bn.__dict__:
                    raise RuntimeError(f"BN layer '{bn.name}' already has a patched call (concurrent use?).")
                object.__setattr__(bn, "call", _batch_stat_call(bn, self._record))
                patched.append(bn)
            yield
        finally:
            for bn in patched:
                object.__delattr__(bn, "call")

    def statistics(self, batches: Iterable) -> dict[str, BNStatistics]:
        """The exact input statistics of every BN layer over ``batches``; assigns nothing.

        Args:
            batches: an iterable of model inputs (numpy arrays or tensors, or the
                nested structure the model takes); labels must not be included.

        Returns:
            ``{layer_path: BNStatistics}`` in model order.

        Raises:
            ValueError: no batches.
        """
        acc = None  # per BN layer: [count, mean, M2] in float64 (Chan et al.'s parallel update)
        with self._patched():
            for x in batches:
                x = tf.nest.map_structure(tf.convert_to_tensor, x)
                if not self._traced:  # one trace for every batch size
                    spec = tf.nest.map_structure(
                        lambda t: tf.TensorSpec([None] + list(t.shape[1:]), t.dtype), x)
                    self._forward.get_concrete_function(spec)
                    self._traced = True
                out = self._forward(x)
                if acc is None:
                    acc = [[0.0, 0.0, 0.0] for _ in out]
                for a, (m, v, n) in zip(acc, out):
                    _combine(a, m.numpy(), v.numpy(), float(n.numpy()))
        if acc is None:
            raise ValueError("recompute_bn_statistics: no batches were given.")
        return {
            path: BNStatistics(np.asarray(mean, np.float64), np.maximum(m2 / count, 0.0), int(round(count)))
            for path, (count, mean, m2) in zip(self.layers, acc)
        }

    def __call__(self, batches: Iterable) -> dict[str, BNStatistics]:
        """Compute the statistics over ``batches`` and assign them to every BN layer.

        Args:
            batches: as for :meth:`statistics`.

        Returns:
            ``{layer_path: BNStatistics}``, the values assigned (before the cast to the
            variables' dtype).
        """
        stats = self.statistics(batches)
        for path, bn in self.layers.items():
            st = stats[path]
            bn.moving_mean.assign(st.mean.astype(bn.moving_mean.dtype))
            bn.moving_variance.assign(st.variance.astype(bn.moving_variance.dtype))
        return stats


_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def recompute_bn_statistics(model, batches: Iterable) -> dict[str, BNStatistics]:
    """Set every BN layer's moving mean / variance to the exact statistics over ``batches``.

    See the module docstring for the convention (earlier BN layers normalise with batch
    statistics, every other layer in inference mode; population variance; direct
    assignment). Nothing but the moving statistics changes. The traced forward pass is
    cached per model, so repeated calls (e.g. at every interpolation point) trace once.

    Args:
        model: a built Keras model with BatchNormalization layers.
        batches: a fixed list (or any iterable) of input batches ``x``, without labels,
            e.g. a few thousand training examples with augmentation off (the caller's
            job). Batches may have different sizes: statistics are over all examples.

    Returns:
        ``{layer_path: BNStatistics}`` (float64), the assigned values.

    Raises:
        ValueError: no BN layer, no batches, or an unsupported BN layer.
    """
    try:
        recomputer = _CACHE.get(model)
    except TypeError:
        recomputer = None
    if recomputer is None:
        recomputer = BatchNormRecomputer(model)
        try:
            _CACHE[model] = recomputer
        except TypeError:
            pass
    return recomputer(batches)

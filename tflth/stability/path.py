"""Linear mode connectivity for ``model.fit`` users: the straight line between two weight
sets of one Keras model, evaluated with ``evaluate``, and its barrier.

:func:`linear_path` assigns ``W(α) = (1 − α)·W_a + α·W_b`` (:func:`tflth.stability.curve.interpolate`)
into the model at every point of an α grid (:func:`tflth.stability.curve.alphas`; nothing is
rebuilt), evaluates it on ``data`` and returns a :class:`LinearPath`: the per-α values of the
loss and the metrics, and the barrier of one of them. The model's own weights are put back
afterwards, whatever happens.

**The barrier** is tflth's instability (:func:`tflth.stability.curve.summarize_curve`, the LMC
paper's definition), taken on the "worse" orientation of the chosen metric ``m``:

* lower is better (a loss, MSE, ...): ``E(α) = m(α)``;
* higher is better (accuracy, ...): ``E(α) = 1 − m(α)`` (the error, for accuracy);

and ``barrier = max over α in [0, 1] of E(α) − (E(0) + E(1)) / 2``, over the grid points
(points of an extended ``alpha_range`` outside [0, 1] are evaluated and reported, but not in
the barrier). Only this mapping to ``E`` is this module's: ``curve.py`` names its input an error,
and any lower-is-better value fits its definition (``1 − m`` and ``−m`` give the same barrier).

**BatchNorm** (``bn``, as :class:`tflth.stability.evaluate.CurveEvaluator`): ``"recompute"``
(default) sets every BatchNormalization layer's moving mean and variance, at every α
(endpoints included), to the exact statistics of its inputs over the first ``bn_batches``
batches of ``data`` (:func:`tflth.stability.batchnorm.recompute_bn_statistics`); the moving
statistics in ``weights_a`` / ``weights_b`` are then not used. ``"interpolate"``
interpolates them like the weights. Models without BatchNorm give the same curve in both modes.

Example (plain Keras; :func:`linear_path`'s docstring shows a KerasHub backbone):

>>> import keras, numpy as np
>>> from tflth.stability import linear_path
>>> x, y = np.random.default_rng(0).normal(size=(64, 4)), np.arange(64) % 2
>>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
...                           keras.layers.Dense(2)])
>>> model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
...               metrics=["accuracy"])
>>> w_a = model.get_weights()
>>> _ = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
>>> path = linear_path(model, w_a, model.get_weights(), (x, y), points=5, metric="accuracy")
>>> len(path.alphas), sorted(path.values), path.higher_is_better
(5, ['accuracy', 'loss'], True)
>>> path.barrier >= 0
True
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tflth import masking
from tflth.errors import InputError
from tflth.hparams import BN_MODES
from tflth.stability import curve as curve_lib
from tflth.stability.batchnorm import batchnorm_layers, recompute_bn_statistics

__all__ = ["PathError", "LinearPath", "linear_path", "higher_is_better_for"]

_HIGHER = ("accuracy", "auc", "precision", "recall")
"""A metric whose name contains one of these is taken as higher-is-better."""
_LOWER_NAMES = ("loss", "mse", "mae", "mape", "msle", "rmse", "perplexity")
_LOWER = ("loss", "error", "crossentropy", "perplexity")
"""A metric named one of ``_LOWER_NAMES``, or whose name contains one of ``_LOWER``, is
taken as lower-is-better (after ``_HIGHER``: ``"accuracy"`` wins)."""


class PathError(InputError):
    """:func:`linear_path` refuses its input: weight sets that do not fit the model or each
    other, an endpoint nonzero where the model's masks prune, data of another form, a
    metric that is not evaluated or whose direction is unknown (a ``ValueError``)."""


@dataclasses.dataclass(frozen=True)
class LinearPath:
    """The straight line between two weight sets, evaluated.

    Attributes:
        alphas: the α values, sorted (0.0 and 1.0 included).
        values: ``{name: (value at each α)}`` for every quantity ``evaluate`` reports:
            ``"loss"`` and each metric, under the names ``evaluate`` gives them.
        metric: the name the barrier is taken on.
        higher_is_better: that metric's direction.
        barrier: ``max over α in [0, 1] of E(α) − (E(0) + E(1)) / 2`` with ``E = m`` (lower is
            better) or ``E = 1 − m`` (higher is better); see the module docstring.
        worst_alpha: the α in [0, 1] where ``E`` is largest (the first one on ties).
        bn: ``"recompute"`` or ``"interpolate"``.
    """

    alphas: tuple[float, ...]
    values: Mapping[str, tuple[float, ...]]
    metric: str
    higher_is_better: bool
    barrier: float
    worst_alpha: float
    bn: str

    def to_dict(self) -> dict:
        """JSON-ready dict (lists; non-finite floats become ``None``)."""

        def f(x):
            x = float(x)
            return x if math.isfinite(x) else None

        return {"alphas": [f(a) for a in self.alphas],
                "values": {k: [f(v) for v in vs] for k, vs in self.values.items()},
                "metric": self.metric, "higher_is_better": bool(self.higher_is_better),
                "barrier": f(self.barrier), "worst_alpha": f(self.worst_alpha), "bn": self.bn}


def higher_is_better_for(name: str) -> bool | None:
    """The direction of a metric known by its name, or ``None`` when unknown.

    ``True`` for names containing ``accuracy``, ``auc``, ``precision`` or ``recall``;
    ``False`` for ``loss``, ``mse``, ``mae``, ``mape``, ``msle``, ``rmse``, ``perplexity`` and
    names containing ``loss``, ``error``, ``crossentropy`` or ``perplexity``
    (``mean_squared_error``, ``sparse_categorical_crossentropy``).
    """
    low = name.lower()
    if any(h in low for h in _HIGHER):
        return True
    if low in _LOWER_NAMES or any(s in low for s in _LOWER):
        return False
    return None


# ------------------------------------------------------------------ inputs

def _as_weights(model, weights, which: str, variables, current) -> dict[str, np.ndarray]:
    """``weights`` (a ``get_weights()`` list or ``{path: array}``) as ``{path: array}`` in
    the order of ``model.weights``, each in its variable's dtype (that of ``current``, the
    variables' values); one-line errors."""
    paths = list(variables)
    if isinstance(weights, Mapping):
        missing = [p for p in paths if p not in weights]
        extra = [k for k in weights if k not in variables]
        if missing or extra:
            raise PathError(f"linear_path: {which} does not fit the model '{model.name}': {len(missing)} missing "
                            f"{missing[:3]}, {len(extra)} unknown {extra[:3]} (expected {{variable.path: array}} "
                            "of model.weights).")
        values = [weights[p] for p in paths]
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        if len(weights) != len(paths):
            raise PathError(f"linear_path: {which} has {len(weights)} arrays, the model '{model.name}' "
                            f"{len(paths)} weights (expected a model.get_weights() list).")
        values = list(weights)
    else:
        raise PathError(f"linear_path: {which} must be a model.get_weights() list or a {{variable.path: array}} "
                        f"dict, got {type(weights).__name__}.")
    out = {}
    for path, value in zip(paths, values):
        variable = variables[path]
        shape = tuple(int(d) for d in variable.shape)
        if np.shape(value) != shape:
            raise PathError(f"linear_path: {which}'s '{path}' has shape {np.shape(value)}, the model's {shape}.")
        out[path] = np.asarray(value).astype(current[path].dtype, copy=False)
    return out


def _check_masks(model, weights: Mapping[str, np.ndarray], which: str) -> None:
    for path, mask in masking.masks_of(model).items():
        if np.any(weights[path][~mask] != 0):
            raise PathError(f"linear_path: {which}'s '{path}' is nonzero where the model's mask prunes it "
                            "(only weight sets of one ticket are interpolated; apply its masks first).")


def _dataset(data, batch_size: int) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        return tf.data.Dataset.from_tensor_slices(data).batch(batch_size)
    raise PathError(f"linear_path: data must be a tf.data.Dataset of (inputs, targets) batches or an (x, y) tuple, "
                    f"got {type(data).__name__}.")


def _bn_inputs(dataset: tf.data.Dataset, batches: int) -> list:
    out = []
    for element in dataset.take(batches):
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise PathError("linear_path: data's elements must be (inputs, targets) batches "
                            f"(or (inputs, targets, sample_weight)), got {type(element).__name__}.")
        out.append(element[0])
    if not out:
        raise PathError("linear_path: data is empty (the BatchNorm statistics need at least one batch).")
    return out


class _Evaluation(keras.Model):
    """Calls the model in inference mode: compiled with the path's loss and metrics, it
    evaluates the model without touching the model's own compile state (optimizer, metrics)."""

    def __init__(self, inner, **kwargs):
        super().__init__(**kwargs)
        self.inner = inner

    def call(self, inputs, training=False):
        return self.inner(inputs, training=training)


def _evaluator(model, metrics, loss):
    """What evaluates a point: the compiled model itself when neither ``loss`` nor
    ``metrics`` is given, else a wrapper compiled with them (``loss`` defaulting to the
    model's compiled one)."""
    compiled = bool(getattr(model, "compiled", False))
    if metrics is None and loss is None and compiled:
        return model
    if loss is None:
        loss = getattr(model, "loss", None) if compiled else None
        if loss is None:
            raise PathError(f"linear_path: the model '{model.name}' has no compiled loss: pass loss= "
                            "(a Keras loss or its name) or compile the model.")
    if metrics is None:
        metrics = []
    elif isinstance(metrics, (str, keras.metrics.Metric)):
        metrics = [metrics]
    wrapper = _Evaluation(model, name=f"{model.name}_linear_path")
    names = getattr(model, "output_names", None)
    if names:
        wrapper.output_names = list(names)
    wrapper.compile(optimizer="sgd", loss=loss, metrics=list(metrics))
    return wrapper


def _direction(metric: str, higher_is_better) -> bool:
    if higher_is_better is not None:
        return bool(higher_is_better)
    known = higher_is_better_for(metric)
    if known is None:
        raise PathError(f"linear_path: the direction of metric '{metric}' is unknown: pass higher_is_better=True "
                        "or False.")
    return known


# ------------------------------------------------------------------ the path

def linear_path(model, weights_a, weights_b, data, metrics=None, points: int = curve_lib.PAPER_POINTS, *,
                metric: str | None = None, higher_is_better: bool | None = None, loss=None,
                bn: str = "recompute", bn_batches: int = 20, alpha_range: tuple[float, float] = (0.0, 1.0),
                batch_size: int = 32) -> LinearPath:
    """Evaluate ``W(α) = (1 − α)·W_a + α·W_b`` on ``data`` along an α grid; the curve and its barrier.

    At each α the interpolated weights are assigned to ``model`` (BatchNorm per ``bn``) and
    evaluated with Keras's ``evaluate``: the model's own ``model.evaluate`` when neither
    ``loss`` nor ``metrics`` is given (its compiled loss and metrics), else an evaluation
    wrapper around the model compiled with ``loss`` (default: the model's compiled
    ``model.loss``) and ``metrics`` (the model's compile state is not touched). Both
    report what ``model.evaluate`` would (the loss includes the model's regularisation
    losses). The model's weights are restored at the end, on errors too. Masks: with
    tflth masks on the model (:func:`tflth.masked`), both weight sets must be zero where
    they prune, so pruned weights are zero at every α.

    Args:
        model: a built Keras model (Sequential, functional, subclassed, a KerasHub
            backbone or task), compiled or not.
        weights_a, weights_b: the endpoints α = 0 and α = 1: ``model.get_weights()`` lists
            or ``{variable.path: array}`` dicts of every ``model.weights`` variable (as
            :class:`tflth.masking.RewindPoint` keeps them).
        data: a ``tf.data.Dataset`` of ``(inputs, targets)`` batches (inputs may be a dict,
            e.g. KerasHub's ``token_ids`` / ``padding_mask``; a third element is a sample
            weight), or an ``(x, y)`` tuple of arrays, batched by ``batch_size``. Evaluated
            whole at every α: pass a finite dataset, without shuffling or augmentation.
        metrics: Keras metrics (objects or names) evaluated besides the loss; ``None``:
            the model's compiled metrics if neither ``loss`` is given, else none.
        points: evenly spaced α values in ``alpha_range`` (:func:`tflth.stability.curve.alphas`).
        metric: the name (in :attr:`LinearPath.values`) the barrier is taken on, or a
            metric object of ``metrics``; default ``"loss"``.
        higher_is_better: ``metric``'s direction; default inferred from its name
            (:func:`higher_is_better_for`), an unknown name without it is an error.
        loss: a Keras loss (object, name or function) to evaluate instead of the model's
            compiled loss (needed for an uncompiled model).
        bn: ``"recompute"`` (BatchNorm statistics recomputed over the first ``bn_batches``
            batches of ``data`` at every α) or ``"interpolate"``.
        bn_batches: how many batches of ``data`` the statistics are recomputed over.
        alpha_range: ``(low, high)`` with ``low <= 0`` and ``high >= 1``; points outside
            [0, 1] are reported but not in the barrier.
        batch_size: the batch size for an ``(x, y)`` tuple.

    Returns:
        A :class:`LinearPath` (``len(alphas) == points`` for the default range).

    Raises:
        PathError: weight sets that do not fit the model (count, paths or shapes, or a
            non-float variable that differs between them), an
            endpoint nonzero where the model's masks prune, data of another form, no loss
            for an uncompiled model, a metric that is not evaluated or of unknown
            direction, an invalid ``points`` / ``alpha_range`` / ``bn`` / ``bn_batches``,
            or a BatchNorm layer that cannot be recomputed.

    Example (illustrative, needs ``pip install 'tflth[hub]'``; a 1-layer BERT from config
    with a classification head, between its initial weights and a perturbation)::

        import keras, keras_hub, numpy as np
        from tflth.stability import linear_path
        backbone = keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=1, num_heads=2,
                                                 hidden_dim=16, intermediate_dim=32, max_sequence_length=8)
        logits = keras.layers.Dense(2)(backbone.output["pooled_output"])
        model = keras.Model(backbone.input, logits)
        rng = np.random.default_rng(0)
        x = {"token_ids": rng.integers(0, 100, (32, 8)), "segment_ids": np.zeros((32, 8), "int32"),
             "padding_mask": np.ones((32, 8), bool)}
        y = np.arange(32) % 2
        w_a = model.get_weights()
        w_b = [w + 0.05 * rng.normal(size=w.shape).astype(w.dtype) for w in w_a]
        path = linear_path(model, w_a, w_b, (x, y), metrics=["accuracy"], points=5,
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        path.values["loss"], path.barrier           # the loss barrier (metric defaults to the loss)
    """
    if bn not in BN_MODES:
        raise PathError(f"linear_path: bn={bn!r} is invalid: expected one of {list(BN_MODES)}.")
    if isinstance(bn_batches, bool) or not isinstance(bn_batches, int) or bn_batches < 1:
        raise PathError(f"linear_path: bn_batches={bn_batches!r} is invalid: expected an integer >= 1.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PathError(f"linear_path: batch_size={batch_size!r} is invalid: expected an integer >= 1.")
    try:
        grid = curve_lib.alphas(points, *alpha_range)
    except (TypeError, ValueError) as e:  # points / alpha_range of the wrong form: the user's input
        raise PathError(f"linear_path: points={points!r}, alpha_range={alpha_range!r}: {e}") from e
    if isinstance(metric, keras.metrics.Metric):
        metric = metric.name
    metric = "loss" if metric is None else str(metric)
    higher = _direction(metric, higher_is_better)

    variables = {}
    for v in model.weights:
        if v.path in variables:
            raise PathError(f"linear_path: the model '{model.name}' has two weights named '{v.path}'.")
        variables[v.path] = v
    original = {p: v.numpy() for p, v in variables.items()}
    w_a = _as_weights(model, weights_a, "weights_a", variables, original)
    w_b = _as_weights(model, weights_b, "weights_b", variables, original)
    _check_masks(model, w_a, "weights_a")
    _check_masks(model, w_b, "weights_b")
    dataset = _dataset(data, batch_size)
    recompute = bn == "recompute" and bool(batchnorm_layers(model))
    bn_inputs = _bn_inputs(dataset, bn_batches) if recompute else None
    evaluator = _evaluator(model, metrics, loss)

    results = []
    try:
        for i, alpha in enumerate(grid):
            try:
                point = curve_lib.interpolate(w_a, w_b, float(alpha))
            except ValueError as e:  # e.g. an integer variable that differs between the weight sets
                raise PathError(f"linear_path: {e}") from e
            for path, value in point.items():
                variables[path].assign(value)
            if recompute:
                try:
                    recompute_bn_statistics(model, bn_inputs)
                except ValueError as e:  # an unsupported BN layer (renorm, shared, unused): the user's model
                    if i:
                        raise
                    raise PathError(f"linear_path: bn='recompute': {e}") from e
            result = evaluator.evaluate(dataset, verbose=0, return_dict=True)
            if i == 0 and metric not in result:
                raise PathError(f"linear_path: metric '{metric}' is not evaluated: expected one of {sorted(result)} "
                                "(add it to metrics=).")
            results.append({k: float(v) for k, v in result.items()})
    finally:
        for path, value in original.items():
            variables[path].assign(value)

    names = list(results[0])
    values = {k: tuple(r[k] for r in results) for k in names}
    chosen = np.asarray(values[metric], np.float64)
    summary = curve_lib.summarize_curve(grid, 1.0 - chosen if higher else chosen)
    return LinearPath(alphas=summary.alphas, values=values, metric=metric, higher_is_better=higher,
                      barrier=summary.instability, worst_alpha=summary.max_error_alpha, bn=bn)

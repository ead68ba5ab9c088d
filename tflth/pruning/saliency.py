"""One-shot saliency scores (SNIP, GraSP, SynFlow) and the exact one-shot mask.

Pruning early by a score computed once, at the weights a model has now (its iteration
*k*), instead of by IMP's trained magnitudes. Every score here is ``{variable path:
float64 array}`` over the **scored variables** and follows one convention, the one of
:func:`tflth.pruning.allocate`: **the lower the score, the earlier a weight is pruned**.

* :func:`snip_scores` — ``|g ⊙ w|`` (Lee et al., ICLR 2019, SNIP);
* :func:`grasp_scores` — ``w ⊙ (H g)``, the negative of GraSP's ``−w ⊙ H g``, whose
  *highest* are pruned first (Wang et al., ICLR 2020, GraSP): the same weights go;
* :func:`synflow_scores` — ``|w ⊙ ∂R/∂w|``, data-free (Tanaka et al., NeurIPS 2020,
  SynFlow); :func:`synflow_mask` applies it iteratively, as its paper.

``g`` is the gradient of the loss over the given batches, ``H`` its Hessian over the scored
variables, ``R = 1ᵀ f(1)`` the output of the absolute-valued network on an all-ones input.
:func:`one_shot_mask` turns any of them into a mask keeping exactly ``round(density ×
count)`` weights (one ranking across variables, or within each).

**Which variables** (``paths``): by default the model's masked variables
(:func:`tflth.masking.masks_of`), or, when the model has no masks, its maskable-by-default
variables (:func:`tflth.masking.maskable_variables`: kernels and embeddings; never a
bias, a BatchNorm scale or shift). A score is computed for these only; every other
variable takes part in the forward pass as it is and is never scored.

**Masks**: a masked model's pruned weights are zero (:mod:`tflth.masking.state`), so the
scores are those of the pruned network; their scores are ``0`` (``w = 0``). GraSP's ``g``
is multiplied by the mask before the Hessian product (the pruned network's gradient, a
function of its surviving weights only). A fresh mask from :func:`one_shot_mask` may
re-grow a pruned weight unless ``alive=masks_of(model)`` is passed; :func:`synflow_mask`
starts from the model's masks and never re-grows.

**Modes**: SNIP and GraSP run the model in inference mode by default (``training=False``:
BatchNorm normalises with its moving statistics, dropout is off, the result is
deterministic and no variable changes), as Tanaka et al.'s unified prune loop evaluates
every score; at iteration *k* the moving statistics are the network's own. The SNIP
paper scores at initialisation with a training-mode forward pass: ``training=True``
gives that (batch statistics; the moving statistics Keras updates meanwhile are restored
afterwards). SynFlow always runs in inference mode, as its paper (BatchNorm is then an
affine map of its input).

**The loss**: ``loss(y, outputs)`` returns a batch's mean loss (a ``keras.losses.Loss``
with its default reduction; a per-example vector is averaged); the default is sparse
categorical cross-entropy from logits, as tflth's engine trains. The gradient is that of
the mean loss over *all* examples of ``batches`` (each batch weighted by its size).
Regularisation losses (``model.losses``) are not included: the score is the data loss's.

**Dtypes**: gradients are computed in the model's dtype (float32 for tflth's models) and
the scores are formed and returned in float64. SynFlow's paper computes in float64
because ``R``, a product over the layers, overflows float32 in deep networks; tflth
keeps the model's float32 variables, accumulates ``R`` in float64 from the float32
outputs, and refuses in one line (:class:`SaliencyError`) when ``R`` is not a finite
positive number (an overflow, or no path left from input to output).

Every function restores the model's variables (and never changes its masks): on return,
normal or by an error, the model is as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tflth import _keras
from tflth.masking.maskable import maskable_variables
from tflth.masking.masks import Masks
from tflth.masking.state import masks_of
from tflth.pruning.pruners import SaliencyError, exact_allocation

__all__ = ["SaliencyError", "snip_scores", "grasp_scores", "synflow_scores", "synflow_mask", "one_shot_mask",
           "synflow_refusal"]


Scores = dict[str, np.ndarray]


# --- the scored variables, and the model restored ---------------------------------------------------------------

def _scored_variables(model, paths: Sequence[str] | None) -> dict[str, object]:
    """``{path: variable}``: ``paths``, or the masked variables, or the maskable ones."""
    if paths is None:
        masked = masks_of(model)
        paths = list(masked) if len(masked) else list(maskable_variables(model))
        if not paths:
            raise SaliencyError(f"Model '{model.name}' has no masked or maskable variable to score; name them in "
                                "paths.")
    by_path = {}
    for v in model.trainable_variables:
        by_path.setdefault(v.path, v)
    unknown = [p for p in paths if p not in by_path]
    if unknown:
        raise SaliencyError(f"paths: {unknown} are not trainable variables of model '{model.name}'; its trainable "
                            f"variables are {list(by_path)}.")
    return {p: by_path[p] for p in paths}


@contextlib.contextmanager
def _restored(model):
    """Every variable of ``model`` (trainable or not: BatchNorm's moving statistics) is
    set back to its value on entry when the block ends, however it ends."""
    saved = [(v, v.numpy()) for v in model.weights]
    try:
        yield
    finally:
        for v, value in saved:
            v.assign(value)


def _mask_for(model, paths: Iterable[str]) -> dict[str, np.ndarray | None]:
    masks = masks_of(model)
    return {p: (np.asarray(masks[p], bool) if p in masks else None) for p in paths}


# --- SNIP and GraSP: gradients over batches ---------------------------------------------------------------------

def _default_loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _batch_size(x) -> int:
    return int(tf.shape(tf.nest.flatten(x)[0])[0])


def _mean_loss(loss, y, outputs):
    value = tf.cast(loss(y, outputs), tf.float32)
    return tf.reduce_mean(value) if value.shape.rank else value


def _forward_loss(model, loss, x, y, training, temperature=1.0):
    outputs = model(x, training=training)
    if temperature != 1.0:
        outputs = tf.nest.map_structure(lambda o: o / temperature, outputs)
    return _mean_loss(loss, y, outputs)


def _checked_batches(batches) -> list:
    out = [(x, y) for x, y in batches]
    if not out:
        raise SaliencyError("batches: no batch given; the score needs at least one (x, y) batch.")
    return out


def _dense(gradient):
    """A gradient as a dense tensor: an embedding's comes as ``tf.IndexedSlices`` (the rows looked up)."""
    return tf.convert_to_tensor(gradient) if isinstance(gradient, tf.IndexedSlices) else gradient


def _mean_gradient(model, variables, batches, loss, training, temperature=1.0) -> list[tf.Tensor]:
    """The gradient of the mean loss over every example of ``batches`` (float32 tensors)."""
    total, count = None, 0
    for x, y in batches:
        n = _batch_size(x)
        with tf.GradientTape() as tape:
            value = _forward_loss(model, loss, x, y, training, temperature)
        grads = tape.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grads = [tf.cast(_dense(g), tf.float32) * n for g in grads]
        total = grads if total is None else [t + g for t, g in zip(total, grads)]
        count += n
    return [t / count for t in total]


def snip_scores(model, batches, loss: Callable | None = None, paths: Sequence[str] | None = None,
                training: bool = False) -> Scores:
    """SNIP's connection sensitivity ``|∂L/∂w ⊙ w|`` of each scored variable (Lee et al., 2019).

    Args:
        model: a built Keras 3 model (any kind), masked or not; its pruned weights are zero.
        batches: an iterable of ``(x, y)`` batches (a list, a ``tf.data.Dataset``); the
            gradient is that of the mean loss over all their examples.
        loss: ``loss(y, outputs) -> mean loss`` (default: sparse categorical
            cross-entropy from logits).
        paths: the variables scored (default: the masked ones, else the maskable ones).
        training: run the model in training mode (the SNIP paper's forward pass at
            initialisation); default inference mode. See the module's docstring.

    Returns:
        ``{path: float64 array}``, ``≥ 0``; lower = pruned first; ``0`` where pruned.

    Example:

    >>> import keras, numpy as np, tflth
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="fc")], name="net")
    >>> x, y = np.ones((2, 4), "float32"), np.array([0, 1])
    >>> scores = tflth.pruning.snip_scores(model, [(x, y)])
    >>> mask = tflth.pruning.one_shot_mask(scores, density=0.25)
    >>> int(mask["net/fc/kernel"].sum())
    3
    """
    loss = loss or _default_loss()
    batches = _checked_batches(batches)
    scored = _scored_variables(model, paths)
    variables = list(scored.values())
    with _restored(model):
        grads = _mean_gradient(model, variables, batches, loss, training)
        weights = [v.numpy().astype(np.float64) for v in variables]
    return {p: np.abs(np.asarray(g, np.float64) * w) for p, g, w in zip(scored, grads, weights)}


def grasp_scores(model, batches, loss: Callable | None = None, paths: Sequence[str] | None = None,
                 training: bool = False, temperature: float = 1.0) -> Scores:
    """GraSP's gradient-flow score, with this module's sign: ``w ⊙ (H g)`` (Wang et al., 2020).

    GraSP scores ``S = −w ⊙ H g`` and prunes the *highest* ``S``; this function returns
    ``−S = w ⊙ H g``, so that, as every score here, the lowest is pruned first (the
    same weights go). ``g`` is the gradient of the mean loss over ``batches`` (multiplied
    by the model's mask, if any), taken as a constant vector, and ``H g = ∇_w (gᵀ ∇_w L)``
    the Hessian-gradient product over the scored variables (double back-propagation with
    ``tf.GradientTape``), over the same examples.

    Args:
        model, batches, loss, paths, training: as :func:`snip_scores`.
        temperature: the logits are divided by it before the loss (``1``: the paper's
            formula; GraSP's released code uses ``200``).

    Returns:
        ``{path: float64 array}`` (signed); lower = pruned first; ``0`` where pruned.
    """
    loss = loss or _default_loss()
    batches = _checked_batches(batches)
    if not temperature > 0:
        raise SaliencyError(f"temperature={temperature!r} is invalid: expected a positive number.")
    scored = _scored_variables(model, paths)
    variables = list(scored.values())
    masks = _mask_for(model, scored)
    with _restored(model):
        grads = _mean_gradient(model, variables, batches, loss, training, temperature)
        grads = [g if masks[p] is None else g * tf.constant(masks[p], g.dtype) for p, g in zip(scored, grads)]
        grads = [tf.stop_gradient(g) for g in grads]
        total, count = None, 0
        for x, y in batches:
            n = _batch_size(x)
            with tf.GradientTape() as outer:
                with tf.GradientTape() as inner:
                    value = _forward_loss(model, loss, x, y, training, temperature)
                inner_grads = inner.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                product = tf.add_n([tf.reduce_sum(tf.cast(_dense(ig), tf.float32) * g)
                                    for ig, g in zip(inner_grads, grads)])
            hg = outer.gradient(product, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            hg = [np.asarray(_dense(h), np.float64) * n for h in hg]
            total = hg if total is None else [t + h for t, h in zip(total, hg)]
            count += n
        weights = [v.numpy().astype(np.float64) for v in variables]
    return {p: w * (h / count) for p, w, h in zip(scored, weights, total)}


# --- SynFlow ----------------------------------------------------------------------------------------------------

#: Activations that are the identity (up to a positive factor) on non-negative inputs.
LINEAR_ON_POSITIVES = frozenset({"linear", "relu", "leaky_relu", "elu", "selu"})


def _refused_types() -> tuple[tuple[tuple[type, ...], str], ...]:
    L = keras.layers
    attention = tuple(getattr(L, n) for n in ("MultiHeadAttention", "GroupQueryAttention", "Attention",
                                               "AdditiveAttention") if hasattr(L, n))
    norms = tuple(getattr(L, n) for n in ("LayerNormalization", "GroupNormalization", "UnitNormalization",
                                           "RMSNormalization") if hasattr(L, n))
    return (
        (attention, "attention normalises its scores with a softmax, so R is not the sum over paths the paper "
                    "conserves"),
        ((L.Softmax,), "a softmax normalises its input, so R does not grow with the weights before it"),
        (norms, "it normalises by its input's own statistics, which cancels the flow of the layers before it"),
        ((L.Embedding,), "it takes integer ids, which an all-ones input does not stand for"),
        ((L.RNN, L.Bidirectional), "its saturating recurrent activations make R no sum over paths"),
    )


def _activation_name(activation) -> str:
    return getattr(activation, "__name__", type(activation).__name__)


def _refusal_reason(layer) -> str | None:
    for types, reason in _refused_types():
        if types and isinstance(layer, types):
            return reason
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is not None or float(layer.threshold) != 0.0:
            return "a capped or shifted ReLU is not linear on non-negative inputs"
        return None
    activation = getattr(layer, "activation", None)
    if callable(activation) and _activation_name(activation) not in LINEAR_ON_POSITIVES:
        return (f"its activation '{_activation_name(activation)}' is not linear on non-negative inputs (SynFlow "
                f"accepts {sorted(LINEAR_ON_POSITIVES)})")
    return None


def synflow_refusal(model) -> str | None:
    """Why SynFlow's ``R`` is undefined for ``model`` (the first such layer, by path), or ``None``.

    The rule: on the absolute-valued network and an all-ones input, every layer must be
    linear in its non-negative input and in each of its weights (up to a non-negative
    shift: biases, BatchNorm in inference mode), which is what the paper's conservation
    theorem needs. Refused by type: attention (MultiHeadAttention, ...: a softmax),
    ``Softmax``, normalisations by the input's own statistics (LayerNormalization,
    GroupNormalization, ...; BatchNormalization in inference mode is affine and
    accepted), ``Embedding`` (integer inputs), recurrent layers; and any layer whose
    ``activation`` is not one of :data:`LINEAR_ON_POSITIVES` (``gelu``, ``sigmoid``,
    ``tanh``, ``softmax``, ...), or a capped ReLU. A custom layer's own computation (or
    a subclassed model's ``call``) cannot be read and is trusted.
    """
    for path, layer in _keras.layer_paths(model):
        reason = _refusal_reason(layer)
        if reason:
            return f"layer '{path}' ({type(layer).__name__}): {reason}"
    return None


def _ones_input(model, input_shape):
    if input_shape is not None:
        shapes = [tuple(input_shape)] if all(isinstance(d, (int, np.integer)) for d in input_shape) else \
            [tuple(s) for s in input_shape]
        dtypes = ["float32"] * len(shapes)
    else:
        inputs = getattr(model, "inputs", None)
        if not inputs:
            raise SaliencyError(f"Model '{model.name}' has no symbolic inputs (a subclassed model): give "
                                "synflow the shape of one example as input_shape.")
        shapes = [tuple(t.shape)[1:] for t in inputs]
        if any(d is None for s in shapes for d in s):
            raise SaliencyError(f"Model '{model.name}' has inputs of unknown size {shapes}: give synflow the shape "
                                "of one example as input_shape.")
        dtypes = [t.dtype for t in inputs]
    ones = [tf.ones((_FLOW_BATCH, *s), dtype=d) for s, d in zip(shapes, dtypes)]
    return ones[0] if len(ones) == 1 else ones


#: SynFlow's all-ones input is fed as a batch of 2 identical examples and ``R`` halved: the
#: same value (halving is exact in binary floating point), but TensorFlow 2.21's oneDNN CPU
#: kernels crash the process (double free) on the filter gradient of a 1×1 stride-2
#: convolution at batch 1, e.g. ResNet-8's first shortcut on 28×28 inputs.
_FLOW_BATCH = 2


class _Flow:
    """The absolute-valued model, scored round after round (restored on exit)."""

    def __init__(self, model, paths, input_shape):
        refusal = synflow_refusal(model)
        if refusal:
            raise SaliencyError(f"SynFlow is undefined for model '{model.name}': {refusal}; score it with "
                                "snip_scores or grasp_scores instead.")
        self.model = model
        self.scored = _scored_variables(model, paths)
        self.ones = _ones_input(model, input_shape)
        self._stack = contextlib.ExitStack()

    def __enter__(self):
        self._stack.enter_context(_restored(self.model))
        try:
            # θ ← |θ| for every parameter, as SynFlow's code linearises its whole state dict
            # (BatchNorm's moving statistics included); the pruned entries stay zero.
            for v in self.model.weights:
                if "float" in str(v.dtype):
                    v.assign(tf.abs(v.value))
            self.base = {p: v.numpy() for p, v in self.scored.items()}
            variables = list(self.scored.values())
            model, ones = self.model, self.ones

            @tf.function
            def flow():
                with tf.GradientTape() as tape:
                    outputs = model(ones, training=False)
                    r = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float64)) for o in tf.nest.flatten(outputs)]) / _FLOW_BATCH
                grads = tape.gradient(r, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                return r, grads

            self.flow = flow
        except BaseException:  # restore the model before the error goes on
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc):
        return self._stack.__exit__(*exc)

    def scores(self, mask: Mapping[str, np.ndarray] | None = None, round_: int | None = None) -> Scores:
        for p, v in self.scored.items():
            value = self.base[p] if mask is None or p not in mask else self.base[p] * np.asarray(mask[p], v.dtype)
            v.assign(value)
        r, grads = self.flow()
        r = float(r)
        if not (np.isfinite(r) and r > 0):
            at = f" at round {round_}" if round_ else ""
            why = ("overflowed float32 (the paper computes in float64): the model is too deep or its weights too "
                   "large for a float32 SynFlow") if not np.isfinite(r) else \
                "is 0: no path from the input to the outputs survives"
            raise SaliencyError(f"SynFlow's R for model '{self.model.name}'{at} {why}.")
        return {p: np.abs(np.asarray(g, np.float64) * np.asarray(v.numpy(), np.float64))
                for (p, v), g in zip(self.scored.items(), grads)}


def synflow_scores(model, paths: Sequence[str] | None = None, input_shape=None,
                   mask: Mapping[str, np.ndarray] | None = None) -> Scores:
    """SynFlow's synaptic saliency ``|w ⊙ ∂R/∂w|`` of each scored variable, one round, no data.

    Every float variable of the model is replaced by its absolute value (restored after),
    the model runs in inference mode on an all-ones input, and ``R`` is the sum of its
    outputs for one example (computed on a batch of two identical ones, halved:
    :data:`_FLOW_BATCH`). For a network without biases each layer's scores sum to ``R``
    (the paper's conservation theorem). Refused in one line where ``R`` is undefined
    (:func:`synflow_refusal`).

    Args:
        model: a built Keras 3 model.
        paths: the variables scored (default: the masked ones, else the maskable ones).
        input_shape: the shape of one example (without the batch axis), or a list of them
            for several inputs; needed where the model has no symbolic inputs (subclassed).
        mask: ``{path: bool array}`` to score with instead of the model's current weights'
            zeros (pruned entries are then zero too); for iterative pruning.

    Returns:
        ``{path: float64 array}``, ``≥ 0``; lower = pruned first.

    Raises:
        SaliencyError: a layer makes ``R`` undefined, or ``R`` is not finite and positive.
    """
    with _Flow(model, paths, input_shape) as flow:
        return flow.scores(mask)


def synflow_mask(model, density: float, rounds: int = 100, paths: Sequence[str] | None = None,
                 scope: str = "global", layer_rates=(), input_shape=None,
                 structure: Callable | None = None) -> Masks:
    """SynFlow's iterative mask: ``rounds`` rounds of scoring and pruning to ``density``.

    Round ``r = 1..rounds`` keeps the ``round(density^(r/rounds) × count)`` highest
    :func:`synflow_scores` (the paper's exponential schedule), re-scored with the previous
    round's mask, so the last round keeps exactly :func:`one_shot_mask`'s count. Starts from
    the model's masks (never re-grows a pruned weight). The model itself is unchanged: apply
    the result with :func:`tflth.masking.apply_masks`.

    Args:
        model, paths, input_shape: as :func:`synflow_scores`.
        density: the fraction of the scored weights kept, in ``(0, 1]``.
        rounds: how many rounds (the paper: 100).
        scope, layer_rates: as :func:`one_shot_mask`.
        structure: ``structure(scores, alive, exponent) -> {path: bool array}``, a
            pruning structure's mask at the fraction ``exponent`` of its schedule (a
            :meth:`tflth.pruning.Pruner.from_scores`: N:M groups, whole channels);
            default: the unstructured exact allocation to ``density`` (``density``,
            ``scope`` and ``layer_rates`` are then the structure's business).

    Returns:
        A :class:`tflth.masking.Masks` over the scored variables.
    """
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise SaliencyError(f"rounds={rounds!r} is invalid: expected a positive integer.")
    with _Flow(model, paths, input_shape) as flow:
        current = _mask_for(model, flow.scored)
        alive = {p: (np.ones(np.shape(flow.base[p]), bool) if m is None else m) for p, m in current.items()}
        if structure is None:
            def structure(scores, alive, exponent):
                return exact_allocation(scores, density, scope, layer_rates, alive, exponent=exponent)

            structure({p: np.zeros(np.shape(a)) for p, a in alive.items()}, alive, None)  # checks the arguments
        for r in range(1, rounds + 1):
            scores = flow.scores(alive, round_=r)
            alive = {p: np.asarray(a, bool) for p, a in structure(scores, alive, r / rounds).items()}
    return Masks(alive)


def one_shot_mask(scores: Mapping[str, np.ndarray], density: float, scope: str = "global", layer_rates=(),
                  alive: Mapping[str, np.ndarray] | None = None) -> Masks:
    """The mask keeping exactly ``round(density × count)`` of the highest-scoring entries.

    ``scope="global"``: one ranking across every variable (``count``: all their
    entries); ``"layerwise"``: each variable keeps ``round(density × its size)``. A
    variable matching a ``layer_rates`` glob (``((glob, rate), ...)``, first match wins,
    as :class:`tflth.hparams.PruningHparams`' rates: the fraction *pruned*, ``0`` keeps
    it dense) keeps ``round((1 − rate) × its size)`` on its own, in either scope. Lowest
    scores go first; ties go in order of position (variables in ``scores`` order, then
    the flattened entries), as :mod:`tflth.pruning.pruners` breaks them.

    Why not one :func:`tflth.pruning.allocate` call with ``fraction = 1 − density``: it prunes
    ``round(fraction × alive)``, which keeps ``count − round((1 − density) × count)``,
    not ``round(density × count)`` at a half (banker's rounding: 5 weights at density
    0.5 keep 3, not 2) nor where ``1 − density`` is inexact; and layerwise it would give
    every variable one fraction of its *alive* entries. So each ranked pool is
    allocated on its own, with the fraction that prunes exactly the right number.

    Args:
        scores: ``{path: array}``, lower = pruned first (every score of this module).
        density: the fraction kept, in ``(0, 1]``.
        scope: ``"global"`` or ``"layerwise"``.
        layer_rates: per-variable pruned fractions, as above.
        alive: ``{path: bool array}``: only these entries may survive (e.g.
            ``masks_of(model)``, so that no pruned weight re-grows); the density is still
            of all entries. Default: every entry.

    Returns:
        A :class:`tflth.masking.Masks` with the keys of ``scores``.

    Raises:
        SaliencyError: a density outside ``(0, 1]``, non-finite scores, or more to keep
            than ``alive`` holds. HparamError: a bad ``scope`` or ``layer_rates``.
    """
    return Masks(exact_allocation(dict(scores), density, scope, layer_rates, alive))

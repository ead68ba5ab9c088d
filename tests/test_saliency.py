"""One-shot saliency scores (SNIP, GraSP, SynFlow) against hand computations, and the exact
one-shot allocation (tflth.pruning.saliency)."""

import inspect

import keras
import numpy as np
import pytest

import layer_zoo
import tflth
from tflth import masking, pruning
from tflth.errors import InputError
from tflth.hparams import HparamError
from tflth.pruning import saliency

RNG = np.random.default_rng(7)
X = RNG.normal(size=(4, 5)).astype("float32")
Y = np.array([0, 1, 1, 0])
W1 = RNG.normal(size=(5, 3)).astype("float32")
W2 = RNG.normal(size=(3, 2)).astype("float32")
FC1, FC2 = "two/fc1/kernel", "two/fc2/kernel"


def _two_layer(masks=None):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, use_bias=False, activation="relu", name="fc1"),
                              keras.layers.Dense(2, use_bias=False, name="fc2")], name="two")
    model.get_layer("fc1").kernel.assign(W1)
    model.get_layer("fc2").kernel.assign(W2)
    if masks is not None:
        masking.apply_masks(model, masks)
    return model


def _snapshot(model):
    return [np.array(v.numpy()) for v in model.weights]


def _assert_unchanged(model, before):
    after = _snapshot(model)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)


# --- the hand side: forward, softmax cross-entropy, backward, Hessian-vector product (float64) ---

def _forward(x, w1, w2):
    a = x @ w1
    h = np.maximum(a, 0)
    z = h @ w2
    p = np.exp(z - z.max(1, keepdims=True))
    return a, h, p / p.sum(1, keepdims=True)


def _grad(x, y, w1, w2):
    """∇ of the mean cross-entropy over the examples."""
    a, h, p = _forward(x, w1, w2)
    d = (p - np.eye(2)[y]) / len(x)
    return x.T @ ((d @ w2.T) * (a > 0)), h.T @ d


def _hvp(x, y, w1, w2, v1, v2):
    """The directional derivative of :func:`_grad` along (v1, v2): H v, analytically."""
    a, h, p = _forward(x, w1, w2)
    on = a > 0
    d = (p - np.eye(2)[y]) / len(x)
    dh = (x @ v1) * on
    dz = dh @ w2 + h @ v2
    dd = (p * dz - p * (p * dz).sum(1, keepdims=True)) / len(x)
    return x.T @ ((dd @ w2.T + d @ v2.T) * on), dh.T @ d + h.T @ dd


def _f64(*arrays):
    return [np.asarray(a, np.float64) for a in arrays]


def test_the_hand_hessian_product_agrees_with_finite_differences():
    """The hand side itself: central differences of the numpy gradient (ε = 1e-5, float64;
    no ReLU kink within ε here) agree with the analytic product to 1e-6."""
    x, w1, w2 = _f64(X, W1, W2)
    v1, v2 = _grad(x, Y, w1, w2)
    eps = 1e-5
    plus, minus = _grad(x, Y, w1 + eps * v1, w2 + eps * v2), _grad(x, Y, w1 - eps * v1, w2 - eps * v2)
    for analytic, p, m in zip(_hvp(x, Y, w1, w2, v1, v2), plus, minus):
        np.testing.assert_allclose((p - m) / (2 * eps), analytic, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("split", [False, True], ids=["one_batch", "batches_1_3"])
def test_snip_equals_the_hand_computation(split):
    model = _two_layer()
    before = _snapshot(model)
    batches = [(X[:1], Y[:1]), (X[1:], Y[1:])] if split else [(X, Y)]  # uneven: weighted by batch size
    scores = pruning.snip_scores(model, batches)
    g1, g2 = _grad(*_f64(X), Y, *_f64(W1, W2))
    assert list(scores) == [FC1, FC2]
    assert all(s.dtype == np.float64 for s in scores.values())
    np.testing.assert_allclose(scores[FC1], np.abs(g1 * W1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores[FC2], np.abs(g2 * W2), rtol=1e-5, atol=1e-7)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("masked", [False, True])
def test_grasp_equals_the_hand_computation_with_the_modules_sign(masked):
    """``grasp_scores`` = w ⊙ (H g) = −(GraSP's −w ⊙ H g): lower = pruned first. With a mask,
    the pruned weights are zero and g is the pruned network's (masked) gradient."""
    keep1 = np.ones(W1.shape, bool)
    keep2 = np.ones(W2.shape, bool)
    if masked:
        keep1[0, 1] = keep1[3, 2] = keep2[1, 0] = False
    model = _two_layer({FC1: keep1, FC2: keep2} if masked else None)
    before, masks_before = _snapshot(model), masking.masks_of(model)
    scores = pruning.grasp_scores(model, [(X, Y)])
    x, w1, w2 = _f64(X, W1 * keep1, W2 * keep2)
    g1, g2 = _grad(x, Y, w1, w2)
    h1, h2 = _hvp(x, Y, w1, w2, g1 * keep1, g2 * keep2)
    grasp1, grasp2 = -w1 * h1, -w2 * h2  # the paper's score: the highest is pruned first
    np.testing.assert_allclose(scores[FC1], -grasp1, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(scores[FC2], -grasp2, rtol=1e-4, atol=1e-7)
    assert np.abs(scores[FC1]).max() > 1e-4  # not trivially zero
    if masked:
        assert scores[FC1][0, 1] == 0 and scores[FC2][1, 0] == 0
        assert masking.masks_of(model) == masks_before
    _assert_unchanged(model, before)


# --- SynFlow ---

def _mlp(seed=0, masks=None):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(5, use_bias=False, activation="relu", name="l1"),
                              keras.layers.Dense(4, use_bias=False, activation="relu", name="l2"),
                              keras.layers.Dense(3, use_bias=False, name="l3")], name="mlp")
    for layer in model.layers:  # weights of both signs, none zero
        layer.kernel.assign(np.random.default_rng(seed).normal(size=layer.kernel.shape).astype("float32"))
    if masks is not None:
        masking.apply_masks(model, masks)
    return model


MLP_PATHS = ["mlp/l1/kernel", "mlp/l2/kernel", "mlp/l3/kernel"]


def test_synflow_is_data_free_positive_and_conserved_per_layer():
    model = _mlp()
    before = _snapshot(model)
    assert not {"batches", "x", "data", "dataset"} & set(inspect.signature(pruning.synflow_scores).parameters)
    scores = pruning.synflow_scores(model)
    assert list(scores) == MLP_PATHS
    kernels = [np.abs(np.asarray(v, np.float64)) for v in before]
    r = float(np.ones(6) @ kernels[0] @ kernels[1] @ kernels[2] @ np.ones(3))
    for path in MLP_PATHS:
        assert np.all(scores[path] > 0)
        np.testing.assert_allclose(scores[path].sum(), r, rtol=1e-4)  # Tanaka et al.'s conservation theorem
    # each score is |w| × (flow in) × (flow out), by hand
    flow_in = np.ones(6) @ kernels[0]
    flow_out = kernels[2] @ np.ones(3)
    np.testing.assert_allclose(scores["mlp/l2/kernel"], kernels[1] * np.outer(flow_in, flow_out), rtol=1e-5)
    _assert_unchanged(model, before)
    again = pruning.synflow_scores(model)
    for path in MLP_PATHS:
        np.testing.assert_array_equal(again[path], scores[path])


def test_synflow_scores_the_absolute_valued_network():
    """The signs of the weights do not matter (θ ← |θ|); a masked weight scores 0."""
    model, flipped = _mlp(), _mlp()
    for layer in flipped.layers:
        layer.kernel.assign(-layer.kernel.numpy())
    a, b = pruning.synflow_scores(model), pruning.synflow_scores(flipped)
    for path in MLP_PATHS:
        np.testing.assert_allclose(a[path], b[path], rtol=1e-6)
    keep = {p: np.ones(v.shape, bool) for p, v in zip(MLP_PATHS, _snapshot(model))}
    keep["mlp/l2/kernel"][1, 2] = False
    masked = _mlp(masks=keep)
    scores = pruning.synflow_scores(masked)
    assert scores["mlp/l2/kernel"][1, 2] == 0
    assert (scores["mlp/l2/kernel"] > 0).sum() == keep["mlp/l2/kernel"].sum()


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("density,rounds", [(0.3, 10), (0.05, 100)])
def test_synflow_mask_hits_the_density_exactly(scope, density, rounds):
    model = _mlp()
    before = _snapshot(model)
    mask = pruning.synflow_mask(model, density, rounds=rounds, scope=scope)
    sizes = {p: int(np.size(v)) for p, v in zip(MLP_PATHS, before)}
    if scope == "global":
        assert sum(int(mask[p].sum()) for p in MLP_PATHS) == round(density * sum(sizes.values()))
    else:
        assert {p: int(mask[p].sum()) for p in MLP_PATHS} == {p: round(density * n) for p, n in sizes.items()}
    _assert_unchanged(model, before)
    assert not masking.has_masks(model)


def test_synflow_mask_starts_from_the_models_mask_and_keeps_it():
    keep = {p: np.ones(s, bool) for p, s in zip(MLP_PATHS, [(6, 5), (5, 4), (4, 3)])}
    keep["mlp/l1/kernel"][:2, :] = False
    model = _mlp(masks=keep)
    masks_before = masking.masks_of(model)
    mask = pruning.synflow_mask(model, 0.4, rounds=5)
    assert not mask["mlp/l1/kernel"][:2, :].any()  # never re-grown
    assert sum(int(m.sum()) for m in mask.values()) == round(0.4 * (30 + 20 + 12))
    assert masking.masks_of(model) == masks_before
    with pytest.raises(saliency.SaliencyError, match="re-grows"):
        pruning.synflow_mask(model, 0.95, rounds=5)


def test_synflow_with_batchnorm_runs_in_inference_mode_and_restores_everything():
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="out")], name="cnn")
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(4, 0.5, "float32"))
    bn.moving_variance.assign(np.full(4, 2.0, "float32"))
    before = _snapshot(model)
    mask = pruning.synflow_mask(model, 0.25, rounds=4)
    assert sum(int(m.sum()) for m in mask.values()) == round(0.25 * (3 * 3 * 2 * 4 + 4 * 3))
    _assert_unchanged(model, before)
    # SNIP in training mode (batch statistics) updates BN's moving statistics; they are restored
    x = np.random.default_rng(0).normal(size=(8, 6, 6, 2)).astype("float32")
    scores = pruning.snip_scores(model, [(x, np.arange(8) % 3)], training=True)
    assert set(scores) == {"cnn/conv/kernel", "cnn/out/kernel"}  # never BN, never a bias
    _assert_unchanged(model, before)


def _attention_model():
    inputs = keras.Input((4, 6))
    x = keras.layers.MultiHeadAttention(2, 3, name="mha")(inputs, inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x), name="att")


def test_synflow_refuses_attention_in_one_line_naming_the_layer():
    model = _attention_model()
    before = _snapshot(model)
    with pytest.raises(saliency.SaliencyError) as error:
        pruning.synflow_scores(model)
    message = str(error.value)
    assert "\n" not in message and "'mha'" in message and "MultiHeadAttention" in message
    assert isinstance(error.value, InputError)
    with pytest.raises(saliency.SaliencyError, match="'mha'"):
        pruning.synflow_mask(model, 0.5, rounds=2)
    _assert_unchanged(model, before)


@pytest.mark.parametrize("layer,name", [(keras.layers.Dense(4, activation="gelu", name="g"), "'g'"),
                                        (keras.layers.Softmax(name="sm"), "'sm'"),
                                        (keras.layers.LayerNormalization(name="ln"), "'ln'")])
def test_synflow_refuses_layers_that_make_r_undefined(layer, name):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, name="fc"), layer], name="m")
    assert name in pruning.synflow_refusal(model)
    with pytest.raises(saliency.SaliencyError, match=name):
        pruning.synflow_scores(model)


def test_synflow_accepts_relu_networks():
    assert pruning.synflow_refusal(_mlp()) is None


# --- a subclassed model with attention: SNIP and GraSP; SynFlow refused ---

def test_snip_and_grasp_on_a_masked_subclassed_model_with_attention():
    model = layer_zoo.subclassed(seed=0, num_classes=3)
    tflth.masked(model)
    shapes = masking.shapes(model)
    keep = {p: np.random.default_rng(1).random(s) > 0.3 for p, s in shapes.items()}
    masking.apply_masks(model, keep)
    before, masks_before = _snapshot(model), masking.masks_of(model)
    x = np.random.default_rng(2).normal(size=(4, 28, 28, 1)).astype("float32")
    batches = [(x[:2], np.array([0, 1])), (x[2:], np.array([2, 1]))]
    for scores in (pruning.snip_scores(model, batches), pruning.grasp_scores(model, batches)):
        assert list(scores) == list(shapes)
        assert any("multi_head_attention" in p for p in scores)
        for p, s in scores.items():
            assert s.shape == shapes[p] and np.all(np.isfinite(s))
            assert np.all(s[~keep[p]] == 0)
        assert any(np.abs(s).max() > 0 for s in scores.values())
    _assert_unchanged(model, before)
    assert masking.masks_of(model) == masks_before
    with pytest.raises(saliency.SaliencyError, match="MultiHeadAttention"):
        pruning.synflow_scores(model, input_shape=(28, 28, 1))
    # ... and pruned by them: exactly the count, never re-growing, the pruned entries zero
    alive = masking.masks_of(model)
    total = sum(int(np.size(m)) for m in alive.values())
    mask = pruning.one_shot_mask(scores, 0.4, alive=alive)
    assert mask.density().survivors == round(0.4 * total)
    assert all(not np.any(mask[p] & ~alive[p]) for p in mask)
    masking.apply_masks(model, mask)
    assert all(np.all(v.numpy()[~mask[v.path]] == 0) for v in model.weights if v.path in mask)


# --- the exact one-shot allocation ---

SHAPES = {"a": (7, 5), "b": (3, 3), "c": (11,)}


def _scores(seed=0):
    rng = np.random.default_rng(seed)
    return {p: rng.normal(size=s) for p, s in SHAPES.items()}


@pytest.mark.parametrize("density", [0.01, 0.1, 0.25, 0.37, 0.5, 0.7, 0.9, 1.0])
def test_one_shot_mask_keeps_exactly_the_requested_count(density):
    scores = _scores()
    total = sum(int(np.prod(s)) for s in SHAPES.values())  # 35 + 9 + 11 = 55
    mask = pruning.one_shot_mask(scores, density)
    assert sum(int(m.sum()) for m in mask.values()) == round(density * total)
    kept = np.concatenate([scores[p][mask[p]] for p in SHAPES])
    gone = np.concatenate([scores[p][~mask[p]] for p in SHAPES])
    assert not gone.size or not kept.size or kept.min() > gone.max()  # one ranking: the highest stay
    layerwise = pruning.one_shot_mask(scores, density, scope="layerwise")
    for p, s in SHAPES.items():
        assert int(layerwise[p].sum()) == round(density * np.prod(s))
        if 0 < layerwise[p].sum() < np.prod(s):
            assert scores[p][layerwise[p]].min() > scores[p][~layerwise[p]].max()


def test_one_shot_mask_rounds_the_kept_count_not_the_pruned_one():
    """5 entries at density 0.5 keep round(2.5) = 2 (allocate's round(0.5 × 5) pruned would keep 3)."""
    mask = pruning.one_shot_mask({"a": np.arange(5.0)}, 0.5)
    np.testing.assert_array_equal(mask["a"], [False, False, False, True, True])


def test_one_shot_mask_breaks_ties_by_position_and_honours_layer_rates():
    mask = pruning.one_shot_mask({"a": np.zeros(4), "b": np.zeros(4)}, 0.5)
    np.testing.assert_array_equal(np.concatenate([mask["a"], mask["b"]]), [0, 0, 0, 0, 1, 1, 1, 1])
    scores = _scores(1)
    for scope in ("global", "layerwise"):
        mask = pruning.one_shot_mask(scores, 0.2, scope=scope, layer_rates=(("c", 0.0), ("b", 0.5)))
        assert mask["c"].all() and int(mask["b"].sum()) == round(0.5 * 9)
        assert int(mask["a"].sum()) == round(0.2 * 35)


def test_one_shot_mask_within_alive_never_regrows_and_refuses_bad_input():
    scores = _scores(2)
    alive = {p: np.random.default_rng(3).random(s) > 0.4 for p, s in SHAPES.items()}
    mask = pruning.one_shot_mask(scores, 0.3, alive=alive)
    assert sum(int(m.sum()) for m in mask.values()) == round(0.3 * 55)
    for p in SHAPES:
        assert not (mask[p] & ~alive[p]).any()
    with pytest.raises(saliency.SaliencyError, match="re-grows"):
        pruning.one_shot_mask(scores, 0.9, alive=alive)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(saliency.SaliencyError, match="density"):
            pruning.one_shot_mask(scores, bad)
    with pytest.raises(HparamError):
        pruning.one_shot_mask(scores, 0.5, scope="per_layer")
    with pytest.raises(HparamError):
        pruning.one_shot_mask(scores, 0.5, layer_rates=(("nothing*", 0.5),))
    with pytest.raises(saliency.SaliencyError, match="finite"):
        pruning.one_shot_mask({"a": np.array([1.0, np.nan])}, 0.5)


def test_synflow_on_resnet8_does_not_crash_the_process():
    """TF 2.21's oneDNN kernels crash (double free) on the filter gradient of ResNet-8's
    1×1 stride-2 shortcut at batch 1; SynFlow feeds its all-ones input at batch 2. In a
    child process, so a crash fails this test instead of killing the test worker."""
    import subprocess
    import sys

    code = ("import numpy as np, tflth\n"
            "from tflth import models, pruning\n"
            "from tflth.hparams import ModelHparams\n"
            "model = models.factory(ModelHparams('resnet8', width=8), (28, 28, 1), 10)(0)\n"
            "scores = pruning.synflow_scores(model)\n"
            "assert all(np.all(s >= 0) for s in scores.values()) and sum(float(s.sum()) for s in scores.values()) > 0\n"
            "print('ok', len(scores))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]

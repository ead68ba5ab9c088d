"""tflth.masking on KerasHub backbones (the ``hub`` extra): tiny BERT and ViT built from
config (no weights are downloaded), masked in place, trained with ``model.fit`` and with
tflth's own loop, saved and loaded in a fresh process with and without tflth.

Skipped when ``keras_hub`` is not installed (``pip install tflth[hub]``).
"""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402

import tflth  # noqa: E402
from tflth import data as data_lib  # noqa: E402
from tflth import masking  # noqa: E402
from tflth.hparams import DatasetHparams, ModelHparams, PruningHparams, RunHparams, TrainingHparams  # noqa: E402
from tflth.masking import Masks  # noqa: E402
from tflth.training import Trainer  # noqa: E402

# Keras's TF backend converts variables with np.array(x) when saving (NumPy 2 deprecation; not tflth's).
pytestmark = [pytest.mark.slow,  # about 20 s of KerasHub builds and fits: the CI's slow job (it installs the extra)
              pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_LAYERS = 2
SEQ_LEN = 12
BERT_INPUTS = ("token_ids", "segment_ids", "padding_mask")


# ----------------------------------------------------------------- models and data

def _bert_backbone():
    return keras_hub.models.BertBackbone(vocabulary_size=100, num_layers=NUM_LAYERS, num_heads=2, hidden_dim=32,
                                         intermediate_dim=64, max_sequence_length=16)


def _vit_backbone():
    return keras_hub.models.ViTBackbone(image_shape=(28, 28, 1), patch_size=7, num_layers=NUM_LAYERS, num_heads=2,
                                        hidden_dim=32, mlp_dim=64)


def _bert_classifier(seed=0):
    """BERT's dict inputs -> backbone -> ``pooled_output`` -> Dense(2)."""
    keras.utils.set_random_seed(seed)
    backbone = _bert_backbone()
    inputs = {k: keras.Input((None,), dtype="int32", name=k) for k in BERT_INPUTS}
    logits = keras.layers.Dense(2, name="head")(backbone(inputs)["pooled_output"])
    return keras.Model(inputs, logits, name="bert_classifier")


def _vit_classifier(seed=0):
    """Image -> ViT backbone -> class token (position 0) -> Dense(10)."""
    keras.utils.set_random_seed(seed)
    backbone = _vit_backbone()
    images = keras.Input((28, 28, 1), name="images")
    class_token = backbone(images)[:, 0, :]
    logits = keras.layers.Dense(10, name="head")(class_token)
    return keras.Model(images, logits, name="vit_classifier")


CLASSIFIERS = {"bert": _bert_classifier, "vit": _vit_classifier}


def _bert_batch(n, seed):
    rng = np.random.default_rng(seed)
    padding = np.ones((n, SEQ_LEN), "int32")
    padding[: n // 2, SEQ_LEN - 3:] = 0  # some padded sequences
    x = {"token_ids": rng.integers(0, 100, (n, SEQ_LEN)).astype("int32"),
         "segment_ids": (np.arange(SEQ_LEN)[None, :] >= SEQ_LEN // 2).repeat(n, 0).astype("int32"),
         "padding_mask": padding}
    return x, rng.integers(0, 2, n).astype("int32")


def _vit_batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n).astype("int32")


BATCHES = {"bert": _bert_batch, "vit": _vit_batch}


def _half_masks(model, seed=0, paths=None) -> Masks:
    """Exactly half of the entries of every maskable variable (or of ``paths``) kept, at
    random (seeded)."""
    rng = np.random.default_rng(seed)
    shapes = {p: m.shape for p, m in tflth.masking.maskable_variables(model).items()}
    if paths is not None:
        shapes = {p: tuple(v.shape) for p, v in _variables(model).items() if p in set(paths)}
    out = {}
    for path, shape in shapes.items():
        size = int(np.prod(shape))
        keep = np.zeros(size, bool)
        keep[rng.permutation(size)[: size // 2]] = True
        out[path] = keep.reshape(shape)
    return Masks(out)


def _variables(model):
    return {v.path: v for v in model.trainable_variables}


def _assert_pruned_zero(model, masks):
    weights = tflth.masking.masked_weights(model)
    assert set(weights) == set(masks)
    for p, m in masks.items():
        w = weights[p]
        assert np.count_nonzero(w[~m]) == 0, f"{p}: {np.count_nonzero(w[~m])} pruned entries are not 0.0"
        assert np.all(w[~m] == 0.0), p


def _kinds(model):
    return collections.Counter(m.kind for m in tflth.masking.maskable_variables(model).values())


def _shapes_of_kind(model, kind):
    return collections.Counter(m.shape for m in tflth.masking.maskable_variables(model).values() if m.kind == kind)


# ------------------------------------------------------------------ maskable variables

def test_bert_backbone_maskable_variables():
    backbone = _bert_backbone()
    found = tflth.masking.maskable_variables(backbone)
    print("\n".join(f"{p}  {m.kind}  {m.shape}" for p, m in found.items()))
    # per transformer layer: query, key, value, attention output (EinsumDense) and the two
    # FFN kernels (Dense); plus the pooler Dense, the token embedding (tied: one variable)
    # and the segment embedding. BERT's position embedding is KerasHub's own
    # PositionEmbedding layer (not an Embedding): maskable only on request.
    assert _kinds(backbone) == {"EinsumDense.kernel": 4 * NUM_LAYERS, "Dense.kernel": 2 * NUM_LAYERS + 1,
                                "ReversibleEmbedding.embeddings": 1, "Embedding.embeddings": 1}
    for name in ("query", "key", "value", "attention_output"):
        assert sum(p.endswith(f"/{name}/kernel") for p in found) == NUM_LAYERS, name
    assert _shapes_of_kind(backbone, "EinsumDense.kernel") == {(32, 2, 16): 3 * NUM_LAYERS, (2, 16, 32): NUM_LAYERS}
    assert _shapes_of_kind(backbone, "Dense.kernel") == {(32, 64): NUM_LAYERS, (64, 32): NUM_LAYERS, (32, 32): 1}
    token = [m for m in found.values() if m.kind == "ReversibleEmbedding.embeddings"]
    assert token[0].shape == (100, 32) and token[0].variable is backbone.token_embedding.embeddings
    assert not any("reverse_embeddings" in p for p in found)  # tied: one variable, one mask
    assert not any(p.endswith(("/bias", "/gamma", "/beta")) for p in found)
    assert len(set(found)) == len(found) and all(v.path in found or "kernel" not in v.path
                                                 for v in backbone.trainable_variables)
    # the position embedding by explicit request
    chosen = tflth.masking.select(backbone, ["+position_embedding/*"])
    assert [m.shape for m in chosen.values()] == [(16, 32)]


def test_vit_backbone_maskable_variables():
    backbone = _vit_backbone()
    found = tflth.masking.maskable_variables(backbone)
    print("\n".join(f"{p}  {m.kind}  {m.shape}" for p, m in found.items()))
    # per transformer block: query, key, value, attention output, two MLP kernels; the
    # patch-embedding conv. The learned position embedding (a keras.layers.Embedding named
    # position_embedding in KerasHub's ViT) is left out, as tflth leaves position embeddings
    # out unless asked. No pooler: the class token is a variable.
    assert _kinds(backbone) == {"EinsumDense.kernel": 4 * NUM_LAYERS, "Dense.kernel": 2 * NUM_LAYERS,
                                "Conv2D.kernel": 1}
    for name in ("query", "key", "value", "attention_output"):
        assert sum(p.endswith(f"/{name}/kernel") for p in found) == NUM_LAYERS, name
    assert _shapes_of_kind(backbone, "EinsumDense.kernel") == {(32, 2, 16): 3 * NUM_LAYERS, (2, 16, 32): NUM_LAYERS}
    assert _shapes_of_kind(backbone, "Dense.kernel") == {(32, 64): NUM_LAYERS, (64, 32): NUM_LAYERS}
    assert _shapes_of_kind(backbone, "Conv2D.kernel") == {(7, 7, 1, 32): 1}
    chosen = tflth.masking.select(backbone, ["+*position_embedding*"])
    assert [m.shape for m in chosen.values()] == [(17, 32)]  # 16 patches + class token, on request
    assert not any(p.endswith(("/bias", "/gamma", "/beta", "class_token")) for p in found)


def test_classifier_head_is_the_output_layer():
    for name, build in CLASSIFIERS.items():
        model = build()
        assert tflth.masking.output_layer_path(model) == "head", name
        without = tflth.masking.select(model, exclude_output=True)
        assert set(tflth.masking.maskable_variables(model)) - set(without) == {"head/kernel"}, name


# --------------------------------------------------------------------- model.fit

def _optimizer(name):
    return {"sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
            "adam": lambda: keras.optimizers.Adam(1e-3),
            "adamw": lambda: keras.optimizers.AdamW(1e-3, weight_decay=0.05)}[name]()


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam", "adamw"])
@pytest.mark.parametrize("name", ["bert", "vit"])
def test_fit_keeps_pruned_entries_zero(name, optimizer):
    model = tflth.masked(CLASSIFIERS[name]())
    masks = _half_masks(model, seed=1)
    assert set(masks) == set(tflth.masking.maskable_variables(model))
    tflth.masking.apply_masks(model, masks)
    assert tflth.masking.masks_of(model) == masks
    assert tflth.masking.masks_of(model).density().density == pytest.approx(0.5)
    _assert_pruned_zero(model, masks)
    before = tflth.masking.masked_weights(model)

    x, y = BATCHES[name](32, seed=2)
    model.compile(_optimizer(optimizer), keras.losses.SparseCategoricalCrossentropy(from_logits=True), run_eagerly=True)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 4 steps
    assert int(model.optimizer.iterations.numpy()) == 4
    assert np.isfinite(history.history["loss"][-1])

    _assert_pruned_zero(model, masks)
    after = tflth.masking.masked_weights(model)
    for p, m in masks.items():
        assert np.any(after[p][m] != before[p][m]), f"{p}: no surviving entry was trained"


# ------------------------------------------------------------------ tflth's own loop

def test_trainer_trains_masked_vit_classifier():
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    dataset = data_lib.from_arrays("mnist", x_train, np.arange(64) % 10, x_test, np.arange(16) % 10)
    hp = RunHparams(DatasetHparams("mnist"), ModelHparams("hub_vit"),
                    TrainingHparams(optimizer="adam", lr=1e-3, batch_size=16, training_steps="5it"))
    classifier = _vit_classifier()
    trainer = Trainer(hp, dataset=dataset, model=classifier)
    assert trainer.model is classifier
    # every maskable kernel of the backbone is masked (the head's too or not, as the
    # Trainer's default selection for a model given as ``model=`` decides)
    backbone_paths = set(tflth.masking.maskable_variables(classifier)) - {"head/kernel"}
    assert backbone_paths <= set(trainer.masked_paths), sorted(backbone_paths - set(trainer.masked_paths))

    masks = _half_masks(trainer.model, seed=3, paths=trainer.masked_paths)
    tflth.masking.apply_masks(trainer.model, masks)
    _assert_pruned_zero(trainer.model, masks)
    before = tflth.masking.masked_weights(trainer.model)

    result = trainer.train()
    assert result.step == trainer.step == 5
    assert np.isfinite(result.train_loss) and np.isfinite(result.test_loss)

    assert tflth.masking.masks_of(trainer.model) == masks
    _assert_pruned_zero(trainer.model, masks)
    after = tflth.masking.masked_weights(trainer.model)
    for p, m in masks.items():
        assert np.any(after[p][m] != before[p][m]), f"{p}: no surviving entry was trained"


# --------------------------------------------------------- .keras files, fresh process

_CHILD = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import keras, keras_hub
mode, cases = sys.argv[1], json.loads(sys.argv[2])
if mode == "tflth":
    import tflth
results = {"tflth_imported": "tflth" in sys.modules}
for case in cases:
    out = results[case["name"]] = {}
    try:
        inputs = dict(np.load(case["inputs"]))
        inputs = inputs["images"] if list(inputs) == ["images"] else inputs
        expected = np.load(case["outputs"])["logits"]
        masks = dict(np.load(case["masks"]))
        if mode == "tflth":
            model = tflth.masking.load_model(case["model"])
            out["has_masks"] = tflth.masking.has_masks(model)
            got = tflth.masking.masks_of(model)
            out["mask_paths_equal"] = sorted(got) == sorted(masks)
            out["masks_equal"] = got == masks
        else:
            model = keras.saving.load_model(case["model"])
            out["has_mask_state"] = "_tflth_mask_state" in model.__dict__
        out["class"] = type(model).__name__
        weights = {v.path: v.numpy() for v in model.weights}
        out["missing_paths"] = sorted(set(masks) - set(weights))
        out["pruned_nonzero"] = {p: int(np.count_nonzero(weights[p][~m])) for p, m in masks.items() if p in weights}
        logits = model(inputs, training=False)
        logits = np.asarray(logits["pooled_output"] if isinstance(logits, dict) else logits)
        out["max_abs_diff"] = float(np.max(np.abs(logits - expected)))
        if mode == "tflth" and case.get("train"):
            x = dict(np.load(case["train"]))
            y = x.pop("y")
            x = x.pop("x") if "x" in x else x
            model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x, y, batch_size=len(y), epochs=2, verbose=0)
            trained = tflth.masking.masked_weights(model)
            out["pruned_nonzero_after_fit"] = {p: int(np.count_nonzero(trained[p][~m])) for p, m in masks.items()}
    except Exception as e:
        import traceback
        out["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-3000:]}"
print("RESULTS " + json.dumps(results))
'''


def _child(mode, cases):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, "-c", _CHILD, mode, json.dumps(cases)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"child ({mode}) failed, rc={proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(lines[-1][len("RESULTS "):])


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """Masked (half) KerasHub models saved as ``.keras`` files: the two classifiers (a
    backbone nested in a functional model) and the bare BERT backbone (its outputs: the
    ``pooled_output``). The ViT case also carries a batch for the child to train on."""
    tmp = tmp_path_factory.mktemp("hub_models")
    cases = []

    def save(name, model, inputs, train=None):
        masks = _half_masks(model, seed=4)
        tflth.masking.apply_masks(tflth.masked(model), masks)
        _assert_pruned_zero(model, masks)
        files = {k: str(tmp / f"{name}_{k}.npz") for k in ("inputs", "outputs", "masks")}
        case = {"name": name, "model": str(tmp / f"{name}.keras"), **files}
        model.save(case["model"])
        output = model(inputs, training=False)
        logits = np.asarray(output["pooled_output"] if isinstance(output, dict) else output)
        np.savez(files["inputs"], **(inputs if isinstance(inputs, dict) else {"images": inputs}))
        np.savez(files["outputs"], logits=logits)
        masks.save(files["masks"])
        if train is not None:
            case["train"] = str(tmp / f"{name}_train.npz")
            np.savez(case["train"], x=train[0], y=train[1])
        cases.append(case)

    save("bert", _bert_classifier(), _bert_batch(4, seed=5)[0])
    save("vit", _vit_classifier(), _vit_batch(4, seed=5)[0], train=_vit_batch(8, seed=6))
    keras.utils.set_random_seed(7)
    save("bert_backbone", _bert_backbone(), _bert_batch(4, seed=5)[0])
    return cases


def _check_common(name, out):
    assert "error" not in out, f"{name}: {out.get('error')}"
    assert out["missing_paths"] == [], f"{name}: the loaded model lacks variables {out['missing_paths']}"
    assert all(n == 0 for n in out["pruned_nonzero"].values()), f"{name}: {out['pruned_nonzero']}"
    assert out["max_abs_diff"] <= 1e-6, f"{name}: outputs differ by {out['max_abs_diff']}"


def test_tflth_load_model_in_fresh_process(saved_models):
    results = _child("tflth", saved_models)
    assert results["tflth_imported"]
    for case in saved_models:
        out = results[case["name"]]
        _check_common(case["name"], out)
        assert out["has_masks"], case["name"]
        assert out["mask_paths_equal"], case["name"]
        assert out["masks_equal"], case["name"]
        if "train" in case:  # the loaded model keeps its zeros when trained on
            assert all(n == 0 for n in out["pruned_nonzero_after_fit"].values()), out["pruned_nonzero_after_fit"]


def test_plain_keras_load_model_in_fresh_process(saved_models):
    results = _child("plain", saved_models)
    assert not results["tflth_imported"]
    for case in saved_models:
        out = results[case["name"]]
        _check_common(case["name"], out)
        assert not out["has_mask_state"], case["name"]


def test_unmasked_copy_of_hub_classifier():
    model = tflth.masked(_vit_classifier())
    masks = _half_masks(model, seed=8)
    tflth.masking.apply_masks(model, masks)
    x, _ = _vit_batch(4, seed=9)
    plain = tflth.masking.unmasked(model)
    assert not tflth.masking.has_masks(plain) and tflth.masking.has_masks(model)
    np.testing.assert_allclose(np.asarray(plain(x, training=False)), np.asarray(model(x, training=False)), atol=1e-6)
    weights = {v.path: v.numpy() for v in plain.weights}
    for p, m in masks.items():
        assert np.all(weights[p][~m] == 0.0), p


# ----------------------------------------------------------------- one-shot scores (issue 30)

@pytest.mark.parametrize("score", ["snip", "grasp"])
def test_a_bert_classifier_from_config_is_scored_and_pruned_one_shot(score):
    """SNIP and GraSP on dict inputs through a KerasHub backbone: exact global density, and
    N:M 2:4 from the same scores (the checker passes); the pruned entries are zero."""
    from tflth import pruning  # noqa: PLC0415

    model = tflth.masked(_bert_classifier())
    batches = [_bert_batch(4, 1), _bert_batch(4, 2)]
    scores = (pruning.snip_scores if score == "snip" else pruning.grasp_scores)(model, batches)
    assert any("attention" in p for p in scores) and any("head" in p for p in scores)
    total = sum(np.size(s) for s in scores.values())
    unstructured = pruning.one_shot_mask(scores, 0.3)
    assert unstructured.density().survivors == round(0.3 * total)
    layouts = pruning.layouts(model)
    grouped = [p for p in scores if layouts[p].input_axes and layouts[p].shape[layouts[p].group_axis] % 4 == 0]
    nm = pruning.pruner_for(PruningHparams(strategy="nm", nm=((2, 4),)), layouts={p: layouts[p] for p in grouped})
    two_four = nm.from_scores({p: scores[p] for p in grouped}, level=1)
    for p in grouped:
        assert pruning.is_nm(two_four[p], layouts[p].group_axis, 2, 4), p
        assert int(two_four[p].sum()) * 2 == two_four[p].size, p
    masking.apply_masks(model, unstructured)
    for v in model.weights:
        if v.path in unstructured:
            assert np.all(v.numpy()[~unstructured[v.path]] == 0), v.path
    x, _ = _bert_batch(2, 3)
    assert np.all(np.isfinite(model(x)))

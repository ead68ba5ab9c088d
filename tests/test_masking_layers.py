"""The masking invariant for every maskable layer type, under ``fit`` and tflth's loop.

One model holds every layer type of the table in ``tflth.masking.maskable`` side by side
(``tests/layer_zoo.py``), so each training run checks all of them at once; the tests are
parametrized by layer type over the runs' results. Half the entries of every maskable
variable (and of a custom layer's ``add_weight``, opted in by path) are pruned.

* exact zeros: after every training step (a callback checks each batch) and at the end,
  under ``fit`` with momentum, Adam and AdamW (and SGD, Nesterov, RMSprop and Lion in the
  slow job), and under
  tflth's loop with each optimizer it offers, after a rewind whose optimizer slots hold
  history for entries pruned later;
* survivors: equal to a reference trained with a per-step mask (the plain model, its
  pruned entries zeroed after every batch by hand);
* saving: a ``.keras`` round trip in a fresh process keeps masks and outputs, and keeps
  zeros when trained on; plain Keras (no tflth) loads the same file with the zeros baked
  in and the same outputs.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import layer_zoo
import tflth
from tflth import data as data_lib, masking
from tflth.hparams import DatasetHparams, ModelHparams, RunHparams, TrainingHparams
from tflth.training import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
CUSTOM = "+scale/w"  # the custom layer's add_weight, masked on request
STEPS, BATCH = 5, 8

FIT_OPTIMIZERS = {  # the default suite: three; the other four in the slow job (FIT_MORE)
    "momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.1),
}
FIT_MORE = {
    "sgd": lambda: keras.optimizers.SGD(0.05),
    "nesterov": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    "lion": lambda: keras.optimizers.Lion(1e-3, weight_decay=0.1),
}
LOOP_OPTIMIZERS = {
    "sgd_momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3),
    "adam": dict(optimizer="adam", lr=1e-2),
    "adamw": dict(optimizer="adamw", lr=1e-2, weight_decay=0.1),
}


def _half_masks(model, seed=0):
    """Exactly half (rounded down) of every selected variable's entries kept, at random."""
    rng = np.random.default_rng(seed)
    out = {}
    for path, m in masking.select(model, ["*", CUSTOM]).items():
        flat = np.zeros(int(np.prod(m.shape)), bool)
        flat[rng.permutation(flat.size)[: flat.size // 2]] = True
        out[path] = flat.reshape(m.shape)
    return masking.Masks(out)


def _data(n=STEPS * BATCH, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 28, 28, 1)).astype("float32"), rng.integers(0, 10, n)


def _paths_of(layer_type, masks):
    names = layer_zoo.LAYER_TYPES[layer_type]
    found = [p for p in masks if p.split("/")[0] in names]
    assert found, layer_type
    return found


class _AssertZeros(keras.callbacks.Callback):
    """After every batch: every pruned entry is exactly zero (what the next step's forward pass reads)."""

    def __init__(self, model, masks):
        super().__init__()
        self.variables = {p: v for p, (v, _) in masking.masked_variables(model).items()}
        self.masks, self.checked = masks, 0

    def on_train_batch_end(self, batch, logs=None):
        for p, v in self.variables.items():
            assert np.all(v.numpy()[~self.masks[p]] == 0.0), p
        self.checked += 1


class _MaskByHand(keras.callbacks.Callback):
    """The per-step-masked reference: zero the pruned entries after every batch."""

    def __init__(self, model, masks):
        super().__init__()
        self.variables = {v.path: v for v in model.trainable_variables}
        self.masks = masks

    def on_train_batch_end(self, batch, logs=None):
        for p, m in self.masks.items():
            self.variables[p].assign(self.variables[p].numpy() * m)


def _fit(model, optimizer, x, y, callback):
    # eagerly: 5 steps run faster than tracing this 20-branch model, and the optimizer's
    # constraints run the same way (the loop's traced path is the loop_runs fixture's)
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False, run_eagerly=True)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[callback])


def _fit_runs(optimizers):
    """Per optimizer: (masks, masked model's final masked weights, the reference's, the model)."""
    x, y = _data()
    runs = {}
    for name, make in optimizers.items():
        model = layer_zoo.every_layer_model(seed=0)
        reference = layer_zoo.every_layer_model(seed=0)
        reference.set_weights(model.get_weights())
        masks = _half_masks(model)
        masking.apply_masks(model, masks)
        check = _AssertZeros(model, masks)
        _fit(model, make(), x, y, check)
        assert check.checked == STEPS
        for p, m in masks.items():  # the reference starts from W ⊙ m as well
            v = next(v for v in reference.trainable_variables if v.path == p)
            v.assign(v.numpy() * m)
        _fit(reference, make(), x, y, _MaskByHand(reference, masks))
        ref = {v.path: v.numpy() for v in reference.trainable_variables}
        runs[name] = (masks, masking.masked_weights(model), ref, model)
    return runs


@pytest.fixture(scope="module")
def fit_runs():
    return _fit_runs(FIT_OPTIMIZERS)


@pytest.fixture(scope="module")
def fit_runs_more():
    return _fit_runs(FIT_MORE)


def _check_fit(runs, layer_type, optimizer):
    masks, weights, reference, _ = runs[optimizer]
    for p in _paths_of(layer_type, masks):
        m, w = masks[p], weights[p]
        assert np.all(w[~m] == 0.0), p
        assert np.array_equal(w[m], reference[p][m]), f"{p}: survivors differ from the per-step-masked reference"
        assert m.sum() == m.size // 2


@pytest.mark.parametrize("layer_type", sorted(layer_zoo.LAYER_TYPES))
@pytest.mark.parametrize("optimizer", sorted(FIT_OPTIMIZERS))
def test_fit_keeps_pruned_entries_zero_and_survivors_on_the_per_step_masked_path(fit_runs, layer_type, optimizer):
    _check_fit(fit_runs, layer_type, optimizer)


@pytest.mark.slow  # 8 more eager fits of the 20-branch model: the CI's slow job
@pytest.mark.parametrize("layer_type", sorted(layer_zoo.LAYER_TYPES))
@pytest.mark.parametrize("optimizer", sorted(FIT_MORE))
def test_fit_with_sgd_nesterov_rmsprop_lion_too(fit_runs_more, layer_type, optimizer):
    _check_fit(fit_runs_more, layer_type, optimizer)


def test_every_layer_type_of_the_table_is_in_the_model(fit_runs):
    masks = fit_runs["adam"][0]
    kinds = {m.kind for p, m in masking.select(fit_runs["adam"][3], ["*", CUSTOM]).items()}
    assert {"Dense.kernel", "EinsumDense.kernel", "Conv1D.kernel", "Conv2D.kernel", "Conv3D.kernel",
            "Conv1DTranspose.kernel", "Conv2DTranspose.kernel", "Conv3DTranspose.kernel",
            "SeparableConv1D.depthwise_kernel", "SeparableConv1D.pointwise_kernel",
            "SeparableConv2D.depthwise_kernel", "SeparableConv2D.pointwise_kernel", "DepthwiseConv1D.kernel",
            "DepthwiseConv2D.kernel", "Embedding.embeddings", "ReversibleEmbedding.embeddings",
            "ReversibleEmbedding.reverse_embeddings", "SimpleRNNCell.kernel", "SimpleRNNCell.recurrent_kernel",
            "LSTMCell.kernel", "LSTMCell.recurrent_kernel", "GRUCell.kernel", "GRUCell.recurrent_kernel",
            "Scale.w"} <= kinds
    # MultiHeadAttention: its four EinsumDense sublayers, built inside its own build()
    assert [p for p in masks if p.startswith("mha/")] == [f"mha/{n}/kernel" for n in
                                                          ("query", "key", "value", "attention_output")]
    # a tied embedding is one variable with one mask, used at input and output
    assert [p for p in masks if p.startswith("tied/")] == ["tied/embeddings"]


# ------------------------------------------------------------------ tflth's loop


def _dataset():
    x, y = _data(64, seed=2)
    xt, yt = _data(16, seed=3)
    to_uint8 = lambda a: np.clip(a[..., 0] * 40 + 128, 0, 255).astype(np.uint8)  # noqa: E731
    return data_lib.from_arrays("mnist", to_uint8(x), y, to_uint8(xt), yt)


def _loop_hparams(opt):
    return RunHparams(DatasetHparams("mnist"), ModelHparams("layer_zoo:every_layer_model", prune=("*", CUSTOM)),
                      TrainingHparams(batch_size=BATCH, training_steps=f"{2 * STEPS}it", **opt))


def _reference_loop(trainer, masks, start_weights, optimizer_state, steps_range):
    """The per-step-masked reference of tflth's loop: the same batches, loss and optimizer
    class, on the plain model, with the pruned entries zeroed by hand after every step."""
    from tflth.training.optimizers import make_optimizer

    th = trainer.hparams.training
    model = trainer.build_model(th.seed)
    variables = {v.path: v for v in model.variables}
    for p, v in variables.items():
        v.assign(start_weights[p])
    optimizer = make_optimizer(th, trainer.schedule)
    optimizer.build(model.trainable_variables)
    for v, value in zip(optimizer.variables, optimizer_state):  # the optimizer state of step k, iterations included
        v.assign(value)
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)
    decay = th.weight_decay if th.optimizer in ("sgd", "adam") else 0.0
    trainable = model.trainable_variables

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(xent(y, model(x, training=True))) / tf.cast(tf.shape(y)[0], tf.float32)
        grads = tape.gradient(loss, trainable)
        if decay:
            grads = [g + decay * v.value for g, v in zip(grads, trainable)]
        optimizer.apply(grads, trainable)

    batches = iter(data_lib.train_batches(trainer.dataset, th.batch_size, th.data_order_seed, th.augment_seed,
                                          start_step=0, augment=False))
    for s in range(steps_range[1]):
        x, y = next(batches)
        if s < steps_range[0]:
            continue
        step(x, y)
        for p, m in masks.items():
            variables[p].assign(variables[p].numpy() * m)
    return {p: variables[p].numpy() for p in masks}


@pytest.fixture(scope="module")
def loop_runs():
    """Per optimizer: dense training to step 5 (so the optimizer slots hold history for
    every entry), then a rewind to step 5 with half of every variable pruned, 5 more steps."""
    sys.path.insert(0, HERE)
    dataset = _dataset()
    runs = {}
    for name, opt in LOOP_OPTIMIZERS.items():
        trainer = Trainer(_loop_hparams(opt), dataset=dataset)
        trainer.train(end_step=STEPS)
        w_k, opt_k = trainer.get_weights(), trainer.get_optimizer_state()
        trainer.train(end_step=2 * STEPS)  # on to the end dense: slots now hold history for every entry
        masks = _half_masks(trainer.model)
        trainer.set_weights(w_k)  # the rewind: W_k and the optimizer state of step k
        trainer.set_optimizer_state(opt_k)
        masking.apply_masks(trainer.model, masks)
        trainer.train(end_step=2 * STEPS)
        reference = _reference_loop(trainer, masks, masks.apply_to(w_k), opt_k, (STEPS, 2 * STEPS))
        runs[name] = (masks, masking.masked_weights(trainer.model), reference)
    return runs


@pytest.mark.parametrize("layer_type", sorted(layer_zoo.LAYER_TYPES))
@pytest.mark.parametrize("optimizer", sorted(LOOP_OPTIMIZERS))
def test_tflth_loop_keeps_pruned_entries_zero_after_a_rewind(loop_runs, layer_type, optimizer):
    masks, weights, reference = loop_runs[optimizer]
    for p in _paths_of(layer_type, masks):
        m, w = masks[p], weights[p]
        assert np.all(w[~m] == 0.0), p
        np.testing.assert_allclose(w[m], reference[p][m], rtol=1e-5, atol=1e-6,
                                   err_msg=f"{p}: survivors off the per-step-masked reference")


# ------------------------------------------------------------------ saving


@pytest.mark.slow  # a fresh process importing TensorFlow and loading the 20-branch model twice
def test_keras_file_round_trip_in_a_fresh_process_and_plain_copy(fit_runs, tmp_path):
    masks, _, _, model = fit_runs["adam"]
    path = str(tmp_path / "ticket.keras")
    model.save(path)
    x = _data(8, seed=9)[0]
    np.save(tmp_path / "x.npy", x)
    expected = model.predict(x, verbose=0)
    env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # one fresh process: plain Keras first (tflth not imported yet), then tflth
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        import layer_zoo  # the custom layer's class, as Keras needs for any custom layer
        x = np.load({str(tmp_path / 'x.npy')!r})
        m = keras.saving.load_model({path!r})
        assert "tflth" not in sys.modules, "plain load imported tflth"
        np.savez({str(tmp_path / 'plain.npz')!r}, pred=m.predict(x, verbose=0),
                 **{{v.path: v.numpy() for v in m.trainable_variables}})
        if True:
            import tflth
            m = tflth.load_model({path!r})
            pred = m.predict(x, verbose=0)
            masks = tflth.masking.masks_of(m)
            m.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            m.fit(x, np.arange(8) % 10, batch_size=4, epochs=1, verbose=0)   # trained on: zeros kept
            after = tflth.masking.masked_weights(m)
            np.savez({str(tmp_path / 'masked.npz')!r}, pred=pred, **{{"mask:" + p: v for p, v in masks.items()}},
                     **{{"after:" + p: v for p, v in after.items()}})
        """)
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
    masked = np.load(tmp_path / "masked.npz")
    plain = np.load(tmp_path / "plain.npz")
    assert np.array_equal(masked["pred"], expected)
    assert np.max(np.abs(plain["pred"] - expected)) <= 1e-6
    for p, m in masks.items():
        assert np.array_equal(masked["mask:" + p], m), p
        assert np.all(masked["after:" + p][~m] == 0.0), p
        assert np.all(plain[p][~m] == 0.0), p


def test_unmasked_copy_computes_the_same_and_has_no_masks(fit_runs):
    model = fit_runs["momentum"][3]
    plain = tflth.unmasked(model)
    x = _data(4, seed=5)[0]
    assert not masking.has_masks(plain) and masking.has_masks(model)
    assert np.max(np.abs(plain.predict(x, verbose=0) - model.predict(x, verbose=0))) <= 1e-6

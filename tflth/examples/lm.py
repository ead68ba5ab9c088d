"""A tiny causal language model on synthetic arithmetic sequences: a task of your own, offline.

Each sequence counts modulo ``VOCAB`` with its own start and stride: token ``t`` is
``(start + t · stride) mod VOCAB``, both drawn per sequence with a fixed seed. A model
sees tokens 0..t and predicts token t + 1: the first prediction cannot know the stride,
every later one is determined, so a model that learns the rule reaches a next-token
accuracy of about ``(LENGTH − 1) / LENGTH`` (0.92). The model is a KerasHub GPT-2 backbone built
from config (no download) with a Dense head over the vocabulary; its inputs are
KerasHub's ``{"token_ids", "padding_mask"}``. The loss is the per-token cross-entropy
(averaged over each sequence's tokens), the metric next-token accuracy; ``task()``
takes the barrier on the loss, ``task_accuracy()`` on next-token accuracy.

    bin/prune.py --task=tflth.examples.lm:task --model=tflth.examples.lm:model \\
      --optimizer=adamw --lr=3e-3 --batch_size=32 --training_steps=600it --levels=4 --rewind_step=20it
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tflth.tasks import Task, TaskError

__all__ = ["task", "task_accuracy", "model", "VOCAB", "LENGTH", "sequences"]

VOCAB = 17
LENGTH = 12
TRAIN, TEST = 2048, 256


def sequences(n: int, seed: int) -> np.ndarray:
    """``n`` arithmetic sequences of ``LENGTH + 1`` tokens modulo ``VOCAB`` (int32)."""
    rng = np.random.default_rng(seed)
    start = rng.integers(0, VOCAB, (n, 1))
    stride = rng.integers(1, VOCAB, (n, 1))
    return ((start + stride * np.arange(LENGTH + 1)[None, :]) % VOCAB).astype("int32")


def _examples(n: int, seed: int):
    seq = sequences(n, seed)
    x = {"token_ids": seq[:, :-1], "padding_mask": np.ones((n, LENGTH), "int32")}
    return x, seq[:, 1:]


def _token_losses(y, logits):  # [batch, LENGTH]: the task averages them per sequence
    return keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)


def _next_token_accuracy(y, logits):
    return tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), tf.cast(y, tf.int32)), tf.float32)


def task(barrier: str = "loss") -> Task:
    """Next-token prediction: the barrier on the loss (default) or on ``"next_token_accuracy"``."""
    return Task(name="arithmetic_lm", train=_examples(TRAIN, 0), evals={"test": _examples(TEST, 1)},
                loss=_token_losses, metrics={"next_token_accuracy": _next_token_accuracy},
                barrier=barrier, higher_is_better=barrier != "loss")


def task_accuracy() -> Task:
    """:func:`task` with the barrier on next-token accuracy (the error barrier of tokens)."""
    return task("next_token_accuracy")


def model(seed: int = 0, input_shape=None, num_classes=None, layers: int = 2, dim: int = 32) -> keras.Model:
    """A GPT-2 backbone from config (``layers`` blocks, width ``dim``, 2 heads, no dropout)
    with a Dense head over the vocabulary: ``{"token_ids", "padding_mask"}`` → logits."""
    try:
        import keras_hub  # noqa: PLC0415
    except ImportError:
        raise TaskError("tflth.examples.lm needs keras-hub (pip install 'tflth[hub]').") from None
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=VOCAB, num_layers=layers, num_heads=2, hidden_dim=dim,
                                            intermediate_dim=2 * dim, dropout=0.0, max_sequence_length=LENGTH)
    inputs = {k: keras.Input((LENGTH,), dtype="int32", name=k) for k in ("token_ids", "padding_mask")}
    logits = keras.layers.Dense(VOCAB, name="output")(backbone(inputs))
    return keras.Model(inputs, logits, name="arithmetic_gpt2")

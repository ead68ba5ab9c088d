"""Choosing a ``tf.distribute`` strategy by name."""

from __future__ import annotations

import json
import os

import tensorflow as tf

__all__ = ["STRATEGIES", "get_strategy", "is_chief"]

STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over all GPUs when there are ≥ 2, else the default.

    ``mirrored`` mirrors over all GPUs (or all logical CPUs when there is no GPU),
    ``multi_worker`` reads the cluster from ``TF_CONFIG``, ``tpu`` connects to a TPU.
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy '{name}': expected one of {list(STRATEGIES)}.")
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy() if len(gpus) >= 2 else tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("strategy 'multi_worker' needs the TF_CONFIG environment variable.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process a non-chief worker."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    task = config.get("task", {})
    kind, index = task.get("type"), int(task.get("index", 0))
    if kind in (None, "chief"):
        return True
    if kind == "worker":
        return "chief" not in config.get("cluster", {}) and index == 0
    return False

"""Choosing a ``tf.distribute`` strategy by name."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tflth.hparams import HparamError

__all__ = ["DISTRIBUTION_STRATEGIES", "StrategyError", "get_strategy", "is_chief", "barrier"]

DISTRIBUTION_STRATEGIES = ("auto", "default", "mirrored", "multi_worker", "tpu")

# Strategies built here, by name: one per process (two MirroredStrategy objects over the same
# devices hand out colliding collective keys; a TPU system is initialised once), so a command
# can build its strategy while it checks its flags and the run reuses it.
_built: dict[str, tf.distribute.Strategy] = {}


class StrategyError(HparamError):
    """The strategy asked for cannot be built here; the message names ``--strategy``."""


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over all GPUs when there are ≥ 2, else the default.

    ``mirrored`` mirrors over all GPUs (or all logical CPUs when there is no GPU),
    ``multi_worker`` reads the cluster from ``TF_CONFIG``, ``tpu`` connects to a TPU.
    A strategy this function built is built once per process and returned again.
    Raises :class:`StrategyError` (a ``ValueError``) for an unknown name or a strategy
    this machine cannot run (no TPU, no ``TF_CONFIG``).
    """
    if name not in DISTRIBUTION_STRATEGIES:
        raise StrategyError(f"--strategy={name} is unknown: expected one of {list(DISTRIBUTION_STRATEGIES)}.")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "auto":
        if len(tf.config.list_logical_devices("GPU")) < 2:
            return tf.distribute.get_strategy()
    if name not in _built:
        _built[name] = _build(name)
    return _built[name]


def _build(name: str) -> tf.distribute.Strategy:
    if name == "auto":
        return tf.distribute.MirroredStrategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise StrategyError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                                "(the cluster and this worker's task); it is not set.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StrategyError(f"--strategy=tpu: no TPU could be reached on this machine ({reason}); "
                            "use --strategy=auto.") from None


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


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Wait until every worker of a MultiWorkerMirroredStrategy reaches this point (a tiny
    all-reduce); nothing to wait for under any other strategy. After a barrier that follows
    the chief's writes, every worker can read what the chief wrote (shared filesystem)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(tf.function(lambda: tf.constant(1.0))), axis=None)

"""Choosing a ``tf.distribute`` strategy by name."""

from __future__ import annotations

import json
import os

import tensorflow as tf

from tflth.hparams import DISTRIBUTION_STRATEGIES, HparamError

__all__ = ["DISTRIBUTION_STRATEGIES", "StrategyError", "TFConfigError", "get_strategy", "is_chief", "barrier",
           "tf_config"]

# Strategies built here, by name: one per process (two MirroredStrategy objects over the same
# devices hand out colliding collective keys; a TPU system is initialised once), so a command
# can build its strategy while it checks its flags and the run reuses it.
_built: dict[str, tf.distribute.Strategy] = {}


class StrategyError(HparamError):
    """The strategy asked for cannot be built here; the message begins with
    ``JobSettings.strategy=<name>`` (the field that names it, which a command line shows
    as its flag)."""


class TFConfigError(StrategyError):
    """The ``TF_CONFIG`` environment variable is set but cannot be read as a cluster."""


def _strategy_error(name: str, detail: str) -> StrategyError:
    """``JobSettings.strategy=<name><detail>`` naming the field (``detail`` begins with its
    own separator)."""
    return StrategyError(f"JobSettings.strategy={name}{detail}", owner="JobSettings", field="strategy", value=name)


def get_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """``auto``: MirroredStrategy over all GPUs when there are ≥ 2, else the default.

    ``mirrored`` mirrors over all GPUs (or all logical CPUs when there is no GPU),
    ``multi_worker`` reads the cluster from ``TF_CONFIG``, ``tpu`` connects to a TPU.
    A strategy this function built is built once per process and returned again.
    Raises :class:`StrategyError` (a ``ValueError``) for an unknown name or a strategy
    this machine cannot run (no TPU, no ``TF_CONFIG``), a :class:`TFConfigError` for a
    ``TF_CONFIG`` that cannot be read.
    """
    if name not in DISTRIBUTION_STRATEGIES:
        raise _strategy_error(name, f" is unknown: expected one of {list(DISTRIBUTION_STRATEGIES)}.")
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
            raise _strategy_error(name, " needs the TF_CONFIG environment variable (the cluster and this worker's "
                                        "task); it is not set.")
        tf_config()  # a malformed one is one line, not a traceback from inside TensorFlow
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise _strategy_error(name, f": no TPU could be reached on this machine ({reason}); "
                                    "use 'auto'.") from None


def tf_config() -> dict:
    """The ``TF_CONFIG`` environment variable as a dict (``{}`` when unset or empty).

    Raises:
        TFConfigError: it is not a JSON object whose ``cluster`` and ``task`` (when
            present) are objects and whose task ``index`` is an integer; the message names
            ``TF_CONFIG`` and what was found.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    shown = text if len(text) <= 80 else text[:77] + "..."
    expected = ('expected a JSON object such as {"cluster": {"worker": ["host:port", ...]}, '
                '"task": {"type": "worker", "index": 0}}')
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise TFConfigError(f"The environment variable TF_CONFIG={shown!r} is not valid JSON ({e}); {expected}.") \
            from None
    task = config.get("task", {}) if isinstance(config, dict) else None
    if not isinstance(config, dict) or not isinstance(task, dict) or not isinstance(config.get("cluster", {}), dict):
        raise TFConfigError(f"The environment variable TF_CONFIG={shown!r} is not a cluster description; {expected}.")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, (int, str)) or not str(index).strip().isdigit():
        raise TFConfigError(f"The environment variable TF_CONFIG={shown!r} has task index {index!r}; {expected}.")
    return config


def is_chief() -> bool:
    """True unless ``TF_CONFIG`` names this process a non-chief worker (a
    :class:`TFConfigError` when it cannot be read: :func:`tf_config`)."""
    config = tf_config()
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

"""Importing TensorFlow in a tflth command without its C++ start-up chatter going first.

TensorFlow 2.19+ writes start-up lines ("Could not find cuda drivers", oneDNN notes,
cuInit errors) straight to file descriptor 2, ignoring ``TF_CPP_MIN_LOG_LEVEL``
(tensorflow/tensorflow#100442). In a tflth command-line process (a ``tflth-*`` console
script, or ``bin/*.py``, which set ``TFLTH_CLI=1``) that output is captured while
TensorFlow imports and initialises its devices, then either replayed unchanged once the
flags are valid (:func:`release`) or dropped when the command stops on a bad flag
(:func:`discard`), whose one-line error is all the user needs. Library imports are not
affected: TensorFlow is simply imported.
"""

from __future__ import annotations

import os
import sys
import tempfile

_deferred: bytes = b""


def _is_cli() -> bool:
    return os.environ.get("TFLTH_CLI") == "1" or os.path.basename(sys.argv[0] if sys.argv else "").startswith("tflth-")


def import_tensorflow() -> None:
    global _deferred
    if "tensorflow" in sys.modules or not _is_cli():
        import tensorflow  # noqa: F401

        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            _deferred = capture.read()


def release() -> None:
    """Write the captured start-up output to stderr (the command goes on)."""
    global _deferred
    if _deferred:
        sys.stderr.flush()
        os.write(2, _deferred)
        _deferred = b""


def discard() -> None:
    """Drop the captured start-up output (the command stops on a usage error)."""
    global _deferred
    _deferred = b""

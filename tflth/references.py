"""References to a user's own functions: ``package.module:function`` or ``path/to/file.py:function``.

The one resolver of the references tflth accepts in place of a built-in name: a model
factory (``ModelHparams.name``, ``--model``) and a task (``DatasetHparams.task``,
``--task``). A reference is recorded in the run's ``hparams.json`` and run name, so
resuming and reporting work as for the built-in ones.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

from tflth.hparams import HparamError

__all__ = ["is_reference", "resolve"]


def _error(owner: str, field: str, reference: str, why: str) -> HparamError:
    return HparamError(f"{owner}.{field}={reference!r} is invalid: {why}.", owner=owner, field=field,
                       value=reference)


def is_reference(name: str) -> bool:
    """Whether ``name`` refers to a user's function (``module:function``), not a zoo name."""
    return isinstance(name, str) and ":" in name


def resolve(reference: str, owner: str = "ModelHparams", field: str = "name") -> Callable:
    """The function a ``module:function`` or ``file.py:function`` reference names (errors
    name ``<owner>.<field>``, the setting that holds the reference).

    Raises:
        HparamError: the module or file cannot be imported (no such module or file,
            ``ImportError``, ``SyntaxError``), or has no such callable. Any other exception
            the module's own code raises while it is imported is a bug in it and
            propagates unchanged, with its traceback.
    """
    module_name, _, attr = reference.rpartition(":")
    if not module_name or not attr:
        raise _error(owner, field, reference, "expected package.module:function or path/to/file.py:function")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = os.path.abspath(module_name)
            if not os.path.isfile(path):
                raise _error(owner, field, reference, f"there is no file {path}")
            key = "tflth_user_" + str(abs(hash(path)))
            module = sys.modules.get(key)
            if module is None:
                spec = importlib.util.spec_from_file_location(key, path)
                if spec is None or spec.loader is None:
                    raise _error(owner, field, reference, f"{path} cannot be imported as a Python module")
                module = importlib.util.module_from_spec(spec)
                sys.modules[key] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:  # any failure (even an interrupt): no half-imported module stays behind
                    del sys.modules[key]
                    raise
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise _error(owner, field, reference, f"cannot import {module_name!r} ({e})") from None
    except SyntaxError as e:
        raise _error(owner, field, reference, f"cannot import {module_name!r}: it is not valid Python ({e})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        raise _error(owner, field, reference, f"module {module_name!r} has no attribute {attr!r}")
    if not callable(fn):
        raise _error(owner, field, reference, f"{attr!r} in {module_name!r} is a {type(fn).__name__}, not a function")
    return fn

"""Run names: which hyperparameters name a run, and the stable hash that names its directory.

A run directory's name hashes only the values that differ from their defaults
(:func:`identity`), so adding a field **with a default** keeps every existing name;
``hparams.json`` is compared the same way (:func:`non_default`). tflth 0.1 hashed every
field: :func:`legacy_hash` finds its directories (fields frozen in :data:`V1_FIELDS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from tflth.hparams import PruningHparams, RunHparams, to_dict

__all__ = ["identity", "non_default", "run_hash", "legacy_hash", "V1_FIELDS", "ExperimentKey", "SweepKey",
           "per_k_name"]


def non_default(data: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that differ from ``defaults``, recursively.

    A key absent from ``data`` counts as its default, and a nested dict that differs in
    nothing is left out, so adding a field with a default changes nothing here.
    """
    out = {}
    for key, value in data.items():
        if key in defaults:
            default = defaults[key]
            if isinstance(value, dict) and isinstance(default, dict):
                value = non_default(value, default)
                if not value:
                    continue
            elif value == default:
                continue
        out[key] = value
    return out


def identity(hp) -> dict[str, Any]:
    """What names a run of ``hp`` (an hparams dataclass): the fields whose value differs
    from that field's default, recursively (a nested group at its defaults is left out)."""
    out = {}
    for f in dataclasses.fields(hp):
        value = getattr(hp, f.name)
        if dataclasses.is_dataclass(value):
            sub = identity(value)
            if sub:
                out[f.name] = sub
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if value != default:
            out[f.name] = to_dict(hp)[f.name]
    return out


def run_hash(*parts) -> str:
    """A stable 12-hex-digit hash of identities (see :func:`identity`) or plain dicts.

    Dataclasses are reduced to their non-default values first, so a run's name survives
    the addition of a hyperparameter with a default (and a changed default renames runs:
    see BUILD.md). Dicts are hashed as given; build them with :func:`non_default`.
    """
    data = [identity(p) if dataclasses.is_dataclass(p) else p for p in parts]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def legacy_hash(*dicts: dict[str, Any]) -> str:
    """The name tflth 0.1 gave a run: a hash of every field of its hparams as dicts
    restricted to tflth 0.1's fields (:data:`V1_FIELDS`). Used to find, and reuse, run
    directories made before run names left out default values."""
    data = [_restrict_v1(d) for d in dicts]
    text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: The fields of each hparams group as tflth 0.1 hashed them (keys of the JSON dicts).
V1_FIELDS = {
    "dataset": ("name", "augment"),
    "model": ("name", "width"),
    "training": ("optimizer", "lr", "momentum", "nesterov", "weight_decay", "milestones", "gamma", "warmup",
                 "batch_size", "training_steps", "seed", "data_order_seed", "augment_seed"),
    "pruning": ("fraction", "scope", "layer_rates"),
}


def _restrict_v1(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in d.items():
        if key in V1_FIELDS and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in V1_FIELDS[key]}
        elif isinstance(value, dict):
            value = _restrict_v1(value)
        out[key] = value
    return out


@dataclasses.dataclass(frozen=True)
class ExperimentKey:
    """The hyperparameters that name an IMP experiment (``lottery_<hash>``)."""

    run: RunHparams = RunHparams()
    pruning: PruningHparams = PruningHparams()
    rewind_step: str = "0it"
    reset: str = "rewind"
    rewind_optimizer: str = "state"


@dataclasses.dataclass(frozen=True)
class SweepKey:
    """What names a sweep directory (``stability_<hash>``): what the copies are trained
    from and with. Rewind steps, pairs, replicates, levels and controls only add units
    (in per-k mode, so does another experiment of the same settings: another k)."""

    run: RunHparams = RunHparams()
    experiment: str = ""  # one-mask mode: the IMP experiment's directory name (lottery_<hash>)
    noise: str = "data_order_and_augment"
    per_k: str = ""  # per-k mode: a hash of what its experiments share (all but the rewind step)


def per_k_name(shared: dict[str, Any], defaults: dict[str, Any]) -> str:
    """:attr:`SweepKey.per_k`: a hash of the settings a per-k sweep's experiments share
    (``{"group.field": value}``), those at their defaults left out."""
    return run_hash({k: v for k, v in shared.items() if k not in defaults or defaults[k] != v})

"""A model as a chain of layers, read through Keras's public API.

:func:`chain` returns the layers of a Sequential or functional model whose graph is a
chain, from input to output: every layer has one input tensor and its output feeds one
layer (the last one's is the model's output). The functional graph is read from
``model.get_config()`` (each layer's ``inbound_nodes`` name the layers it reads), so no
private Keras attribute is used. Only the layer types :mod:`tflth.export.shrinking` knows
how to slice may appear (:data:`WEIGHTED`, :data:`PASSTHROUGH`); anything else, or a
graph that branches, is an :class:`~tflth.export.ExportError` naming the first layer
(in model order) that breaks the chain.
"""

from __future__ import annotations

import keras

from tflth.export.errors import ExportError

__all__ = ["WEIGHTED", "PASSTHROUGH", "chain", "is_weighted"]

#: Layers whose output units shrink can remove (kernel ``(..., in, out)``).
WEIGHTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D)
#: Layers that act on each channel (feature) alone, allowed between weighted layers.
PASSTHROUGH = (keras.layers.Activation, keras.layers.ReLU, keras.layers.Dropout, keras.layers.MaxPooling1D,
               keras.layers.MaxPooling2D, keras.layers.AveragePooling1D, keras.layers.AveragePooling2D,
               keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D,
               keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten,
               keras.layers.BatchNormalization)
_ALLOWED = ", ".join(t.__name__ for t in WEIGHTED) + " with " + "/".join(t.__name__ for t in PASSTHROUGH) + " between"


def is_weighted(layer) -> bool:
    return type(layer) in WEIGHTED


def _unsupported(layer) -> str | None:
    """Why shrink cannot take ``layer`` (``None``: it can). Exact types only: a subclass
    may compute something else in its ``call``."""
    kind = type(layer)
    if isinstance(layer, keras.Model):
        return f"is a nested model ({kind.__name__}); expected its layers in the outer model itself"
    if kind not in WEIGHTED + PASSTHROUGH:
        return f"({kind.__name__}) is not a layer shrink can pass; expected {_ALLOWED}"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"({kind.__name__}) has data_format={layer.data_format!r}; expected 'channels_last'"
    if kind in (keras.layers.Conv1D, keras.layers.Conv2D) and layer.groups != 1:
        return f"(Conv) has groups={layer.groups}; expected 1"
    if kind is keras.layers.BatchNormalization and layer.axis not in (-1, len(layer.input.shape) - 1):
        return f"(BatchNormalization) normalises axis {layer.axis}; expected the last (channel) axis"
    if kind is keras.layers.Dense and getattr(layer, "lora_enabled", False):
        return "(Dense) has LoRA enabled; expected it merged first"
    return None


def _refuse(model, layer_name: str, why: str) -> ExportError:
    return ExportError(f"Cannot shrink model '{model.name}': layer '{layer_name}' {why}. Shrink takes a chain "
                       f"(one input and one consumer per layer) of {_ALLOWED}.")


def _tensor_refs(value) -> list[tuple[str, int, int]]:
    """Every ``keras_history`` ``(layer, node, tensor)`` in a serialised call's arguments."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            return [tuple(value["config"]["keras_history"])]
        return [r for v in value.values() for r in _tensor_refs(v)]
    if isinstance(value, (list, tuple)):
        return [r for v in value for r in _tensor_refs(v)]
    return []


def _endpoints(spec) -> list[str]:
    """Layer names of a config's ``input_layers`` / ``output_layers`` (one or several)."""
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [s[0] for s in spec]


def _functional_chain(model, config: dict) -> list:
    entries = config["layers"]
    inputs, outputs = _endpoints(config["input_layers"]), _endpoints(config["output_layers"])
    consumers: dict[str, list[str]] = {e["name"]: [] for e in entries}
    producer: dict[str, str] = {}
    problems: dict[str, str] = {}
    for e in entries:
        name, nodes = e["name"], e.get("inbound_nodes", [])
        if e["class_name"] == "InputLayer":
            continue
        refs = _tensor_refs(nodes[0]) if nodes else []
        for ref in refs:
            consumers.setdefault(ref[0], []).append(name)
        if len(nodes) > 1:
            problems[name] = f"is called {len(nodes)} times (a shared layer)"
        elif len(refs) != 1:
            problems[name] = f"takes {len(refs)} inputs ({', '.join(r[0] for r in refs) or 'none'})"
        elif refs[0][1:] != (0, 0):
            problems[name] = f"reads output {refs[0][2]} of call {refs[0][1]} of layer '{refs[0][0]}'"
        else:
            producer[name] = refs[0][0]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ExportError(f"Cannot shrink model '{model.name}': it has {len(inputs)} inputs and {len(outputs)} "
                          "outputs; expected one of each.")
    for e in entries:
        name = e["name"]
        layer = model.get_layer(name)
        why = problems.get(name) if e["class_name"] != "InputLayer" else None
        if why is None and e["class_name"] != "InputLayer":
            why = _unsupported(layer)
        used = consumers.get(name, []) + ([name] if name in outputs else [])
        if why is None and len(used) > 1:
            readers = [f"'{c}'" for c in consumers.get(name, [])] + (["the model's output"] if name in outputs else [])
            why = f"feeds {len(used)} places ({', '.join(readers)})"
        if why is None and not used:
            why = "feeds nothing (its output is not used)"
        if why is not None:
            raise _refuse(model, name, why)
    layers, name = [], outputs[0]
    while name != inputs[0]:
        layers.append(model.get_layer(name))
        name = producer[name]
    return layers[::-1]


def chain(model) -> list:
    """The layers of ``model`` from input to output (its InputLayer left out), when they
    form a chain of the types shrink handles.

    Raises:
        ExportError: a subclassed model (no layer graph), a layer of another type, a
            layer with several inputs, a shared layer, or an output that feeds several
            layers; the message names the first such layer in model order.
    """
    if isinstance(model, keras.Sequential):
        layers = list(model.layers)
        for layer in layers:
            why = _unsupported(layer)
            if why:
                raise _refuse(model, layer.name, why)
        return layers
    try:
        config = model.get_config()
    except (NotImplementedError, TypeError, ValueError) as e:  # Keras cannot make the config of a subclassed model
        config, error = None, e
    else:
        error = None
    if not isinstance(config, dict) or "input_layers" not in config or "layers" not in config:
        how = f" (get_config raised {type(error).__name__})" if error is not None else ""
        raise ExportError(f"Cannot shrink model '{model.name}' ({type(model).__name__}): it is a subclassed "
                          f"model{how}, whose call() is Python code with no layer graph to read; expected a "
                          "Sequential or functional model.")
    return _functional_chain(model, config)

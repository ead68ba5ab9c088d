"""Every use tflth makes of Keras internals, in one place.

tflth masks the variables of any Keras model in place and subclasses Keras's Adam,
and so depends on a few private attributes and methods that Keras does not promise to keep. All of them are reached
through the functions and constants of this module, and each has a test named after
it in ``tests/test_keras_internals.py`` that checks the behaviour tflth relies on. When
a new Keras release breaks one of them, that test fails by name and the fix goes here.
The supported Keras versions are bounded in ``setup.cfg`` (see "Keras versions" in
``BUILD.md``).

Internals used (the version is the first Keras 3 release that has it in the form used):

=================================  ==========================================  =======
function / constant                Keras internal                              since
=================================  ==========================================  =======
:func:`sublayers`                  ``Layer._flatten_layers``                   3.0
:func:`own_variables`              ``Layer._trainable_variables`` /             3.0
                                   ``_non_trainable_variables``
:func:`attach_untracked`           ``Layer.__setattr__`` tracking (bypassed)    3.0
:func:`fresh_names`                global attribute ``object_name_uids`` of     3.0
                                   ``keras.config`` global state (auto names)
:func:`optimizer_variable_index`   ``BaseOptimizer._get_variable_index``        3.0
:func:`adam_epsilon`               ``Adam.update_step`` / ``AdamW`` read        3.0
                                   ``self.epsilon`` each time they build a step
:func:`adam_bias_correction_from`  ``Adam.update_step``'s bias correction        3.0
                                   from ``self.iterations`` (which returns
                                   ``BaseOptimizer._iterations``)
:func:`graph_producer`             ``KerasTensor._keras_history``,              3.0
                                   ``Operation._inbound_nodes`` (``Node``)
=================================  ==========================================  =======

Only :func:`fresh_names` imports from ``keras.src`` (the global state has no public accessor).
"""

from __future__ import annotations

import contextlib

__all__ = [
    "sublayers",
    "call_site",
    "own_variables",
    "attach_untracked",
    "fresh_names",
    "optimizer_variable_index",
    "adam_epsilon",
    "adam_bias_correction_from",
    "graph_producer",
]

def sublayers(layer, recursive: bool = True) -> list:
    """The sublayers of ``layer`` (not ``layer`` itself), each once.

    Relies on the private ``Layer._flatten_layers(include_self=False, recursive=...)``
    (every Keras 3 release; Keras 2 had it too). With ``recursive=False``: the direct
    sublayers in the order they were assigned as attributes (which tflth uses as "model
    order" for custom layers). With ``recursive=True``: every descendant once (a shared
    layer is listed once); tflth does not rely on the order of that list. Used for
    layers and models alike: for a model this includes nested models and their layers,
    unlike the public ``Model.layers`` (direct children only).
    """
    return list(layer._flatten_layers(include_self=False, recursive=recursive))


def layer_paths(layer):
    """``(path, sublayer)`` for every sublayer of ``layer``, parents before their children,
    each once (a shared layer under its first path); paths join layer names with ``/``.
    Children are a model's ``layers`` where it has them, else :func:`sublayers` (direct)."""
    seen = set()

    def walk(parent, prefix):
        for child in getattr(parent, "layers", None) or sublayers(parent, recursive=False):
            if id(child) in seen:
                continue
            seen.add(id(child))
            path = f"{prefix}/{child.name}" if prefix else child.name
            yield path, child
            yield from walk(child, path)

    yield from walk(layer, "")


def own_variables(layer) -> list:
    """The variables ``layer`` created itself (``add_weight``), not those of its sublayers.

    Relies on the private ``Layer._trainable_variables`` and ``_non_trainable_variables``
    lists (Keras 3.0 onwards), where ``add_weight`` records each variable of the layer
    that creates it; the public ``layer.variables`` adds every sublayer's.
    """
    return list(getattr(layer, "_trainable_variables", [])) + list(getattr(layer, "_non_trainable_variables", []))


def attach_untracked(obj, name: str, value) -> None:
    """Set ``obj.<name> = value`` without Keras tracking it (``value`` may be ``None`` to clear).

    A Keras ``Layer.__setattr__`` tracks a layer or variable assigned to it: it would
    become a sublayer, its variables part of ``model.variables`` and ``model.weights``,
    and a built model may refuse new state. tflth's mask state must be none of that
    (masks are not weights; checkpoints and ``get_weights`` stay Keras's own), yet
    reachable by the ``.keras`` saver, which walks ``dir(model)`` for saveable
    attributes (``keras/src/saving/saving_lib.py``, ``_walk_saveable``, Keras 3.0
    onwards). ``object.__setattr__`` does exactly that.
    """
    if value is None:
        obj.__dict__.pop(name, None)
    else:
        object.__setattr__(obj, name, value)


@contextlib.contextmanager
def fresh_names():
    """Within the block, Keras names objects as in a fresh process (``dense``, ``dense_1``, ...).

    Keras auto-names a layer or model ``<snake_case class>`` plus a per-process counter
    (``keras/src/utils/naming.py``: ``uniquify`` counts in the global attribute
    ``object_name_uids``, Keras 3.0 onwards), and a variable's path is its layers' names.
    A model factory called twice in one process would name its variables differently
    the second time; tflth builds every model inside this block, so equal factories
    give equal variable paths (masks and checkpoints keyed by path fit every build).
    The process's own counters are restored on exit.
    """
    import collections

    from keras.src.backend.common import global_state  # noqa: PLC0415  (the one keras.src import)

    saved = global_state.get_global_attribute("object_name_uids")
    global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
    try:
        yield
    finally:
        global_state.set_global_attribute("object_name_uids", saved)


def optimizer_variable_index(optimizer, variable) -> int:
    """The position of trainable ``variable`` among the variables ``optimizer`` was
    built with: the index of its slots (Adam's ``m`` and ``v``).

    Relies on the private ``BaseOptimizer._get_variable_index(variable)`` (Keras 3.0
    onwards), which Keras's own ``update_step`` implementations use to find a
    variable's slots. With the TensorFlow backend it maps a ``tf.distribute`` per-replica
    component to the same index as the variable, so an index computed eagerly matches
    the one seen inside a distributed, traced ``update_step``.
    """
    return optimizer._get_variable_index(variable)


@contextlib.contextmanager
def adam_epsilon(optimizer, epsilon):
    """Within the block, ``optimizer.update_step`` (Keras ``Adam`` or ``AdamW``) uses
    ``epsilon`` (a scalar or a tensor shaped like the variable) instead of its own.

    Relies on Keras's Adam step (``keras/src/optimizers/adam.py``, also behind AdamW)
    computing ``m * alpha / (sqrt(v) + self.epsilon)`` and reading the attribute
    ``self.epsilon`` each time ``update_step`` runs (every Keras 3 release). In a
    ``tf.function`` that is when the step is traced, so a tensor argument of the traced
    function can be swapped in. ``optimizer.epsilon`` is restored on exit.
    """
    scalar = optimizer.epsilon
    optimizer.epsilon = epsilon
    try:
        yield
    finally:
        optimizer.epsilon = scalar


@contextlib.contextmanager
def adam_bias_correction_from(optimizer, start_step):
    """Within the block, ``optimizer.update_step`` (Keras ``Adam`` or ``AdamW``) corrects
    the bias of its moments as an optimizer that has taken ``iterations - start_step``
    steps (``start_step``: an integer scalar, a tensor or variable), while the step
    counter itself, hence the learning-rate schedule, stays where it is.

    Relies on Keras's Adam step (``keras/src/optimizers/adam.py``, also behind AdamW)
    computing ``local_step = self.iterations + 1`` for ``beta_1 ** local_step`` and
    ``beta_2 ** local_step``, reading nothing else of the counter, and on
    ``BaseOptimizer.iterations`` returning the private attribute ``_iterations`` (no
    gradient accumulation) each time it is read (every Keras 3 release). The learning
    rate (the schedule at ``_iterations``) and AdamW's decoupled decay are computed
    before ``update_step`` runs, and the counter is incremented after it, so neither sees
    the swap; the block must therefore enclose ``update_step`` only, never ``apply``
    (which increments the counter). Within the block ``_iterations`` is the tensor
    ``iterations - start_step``, set with ``object.__setattr__`` (no variable tracking:
    ``optimizer.variables`` stay Keras's); the variable is put back on exit. In a
    ``tf.function`` the block is entered when the step is traced, so ``start_step`` must
    be a variable or an argument.
    """
    import keras  # noqa: PLC0415

    counter = optimizer._iterations
    object.__setattr__(optimizer, "_iterations",
                       keras.ops.subtract(counter, keras.ops.cast(start_step, counter.dtype)))
    try:
        yield
    finally:
        object.__setattr__(optimizer, "_iterations", counter)


def call_site(tensor):
    """``(args, kwargs, tensor_index)`` of the call that produced the symbolic ``tensor``:
    the arguments as the layer was called (``MultiHeadAttention``'s named ``query``,
    ``value``, ``key``) and which of its outputs ``tensor`` is. Relies on the private
    ``KerasTensor._keras_history`` and ``Operation._inbound_nodes[node_index].arguments``,
    Keras 3.0 onwards, as :func:`graph_producer` does."""
    history = tensor._keras_history
    node = history.operation._inbound_nodes[history.node_index]
    return node.arguments.args, node.arguments.kwargs, history.tensor_index


def graph_producer(tensor):
    """``(operation, input tensors, variables)`` of the call that produced the symbolic
    ``tensor`` in a functional graph (a ``Functional`` model's output, or any tensor on
    the way to it): the layer, nested model or op called, the symbolic tensors it read,
    and the variables passed to it as arguments. ``None`` for a tensor no call produced
    (an eager tensor; a graph input gives its ``InputLayer`` and no inputs).

    Relies on the private ``KerasTensor._keras_history`` (``operation``, ``node_index``,
    ``tensor_index``) and ``Operation._inbound_nodes`` (the ``Node`` of each call, whose
    ``input_tensors`` and ``arguments.args`` / ``arguments.kwargs`` are the call's
    arguments), Keras 3.0 onwards: the graph a functional model runs, which Keras offers
    no public way to walk back from an output to the layer that produced it.
    """
    import keras  # noqa: PLC0415

    history = getattr(tensor, "_keras_history", None)
    if history is None or history.operation is None:
        return None
    operation = history.operation
    node = operation._inbound_nodes[history.node_index]
    arguments = keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
    variables = [a for a in arguments if isinstance(a, keras.Variable)]
    return operation, list(node.input_tensors), variables

"""Tasks of your own, as examples that run offline (:class:`tflth.tasks.Task`).

* :mod:`tflth.examples.lm` — a tiny KerasHub GPT-2 causal language model, built from
  config, on synthetic arithmetic sequences (next-token prediction; the barrier on the loss
  or on next-token accuracy). Needs the ``hub`` extra (``keras-hub``).
* :mod:`tflth.examples.regression` — a small MLP regressing scikit-learn's bundled
  diabetes data set (442 patients, 10 features; no download), the barrier on the mean
  squared error. Needs the ``examples`` extra (``scikit-learn``).

Each module has ``task()`` and ``model(seed=, input_shape=, num_classes=)``, the two
references the binaries take::

    bin/prune.py --task=tflth.examples.regression:task --model=tflth.examples.regression:model ...

Nothing here is imported by tflth itself; the optional packages are imported when a task
or model is built.
"""

"""Stability analysis: how far apart, and how linearly connected, two trained copies are.

The seed papers' measurements (Frankle et al., *Stabilizing the Lottery Ticket
Hypothesis* and *Linear Mode Connectivity and the Lottery Ticket Hypothesis*): two
copies of a network (or of an IMP subnetwork) trained from the same weights ``W_k`` with
different SGD noise, compared by

* :mod:`tflth.stability.distances` — L2 distance (raw, normalised by the weights' norm
  or by how far training moved), cosine similarity; stability to pruning (on NumPy arrays);
* :mod:`tflth.stability.curve` — the α grid, weight interpolation, the error / loss
  barrier ("instability") along the straight line, disagreement (on NumPy arrays);
* :mod:`tflth.stability.batchnorm` — exact BatchNorm statistics recomputed at an
  interpolated point (on a Keras model);
* :mod:`tflth.stability.evaluate` — :class:`~tflth.stability.evaluate.CurveEvaluator`:
  error and loss at every α of the curve, in one model (BatchNorm recomputed or
  interpolated);
* :mod:`tflth.stability.sweep` — :class:`~tflth.stability.sweep.StabilityJob`: the
  resumable, shardable sweep that trains the pairs of copies per rewind step k and writes
  each pair's measurements (``pair.json``);
* :mod:`tflth.stability.path` — :func:`~tflth.stability.path.linear_path`: the straight
  line between two weight sets of any Keras model, evaluated with ``evaluate``, and its
  barrier, for ``model.fit`` users (:class:`~tflth.stability.path.LinearPath`);
* :mod:`tflth.stability.alignment` — :func:`align` (``tflth.stability.align``): one
  network's hidden units reordered to match another's, by their weights
  (:func:`~tflth.stability.alignment.weight_matching`, Git Re-Basin) or their activations
  (:func:`~tflth.stability.alignment.activation_matching`), to compare two networks from
  different initialisations.

The report of a sweep (tables, verdicts, figures) is :mod:`tflth.report.stability`.
"""

from tflth.stability.alignment import AlignError, activation_matching, align, weight_matching  # noqa: F401
from tflth.stability.path import LinearPath, PathError, linear_path  # noqa: F401

"""Stability analysis: how far apart, and how linearly connected, two trained copies are.

The seed papers' measurements (Frankle et al., *Stabilizing the Lottery Ticket
Hypothesis* and *Linear Mode Connectivity and the Lottery Ticket Hypothesis*): two
copies of a network (or of an IMP subnetwork) trained from the same weights ``W_k`` with
different SGD noise, compared by

* :mod:`tflth.stability.distances` — L2 distance (raw, normalised by the weights' norm
  or by how far training moved), cosine similarity; stability to pruning (numpy only);
* :mod:`tflth.stability.curve` — the α grid, weight interpolation, the error / loss
  barrier ("instability") along the straight line, disagreement (numpy only);
* :mod:`tflth.stability.batchnorm` — exact BatchNorm statistics recomputed at an
  interpolated point (TensorFlow / Keras).
"""

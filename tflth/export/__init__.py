"""Exporting trained tickets: for deployment, for sharing, for size.

A ticket (a network with tflth masks) from a run directory or a ``.keras`` file
(:func:`load`) becomes any of:

* **baked** (:func:`save_baked`): a plain ``.keras`` file with the pruned weights
  stored as zeros, loadable by ``keras.saving.load_model`` without tflth;
* **shrunk** (:func:`shrink`): a smaller dense Keras model computing the same
  function, without the units no surviving weight connects (chains of Dense/Conv
  layers), with a :class:`ShrinkReport` of what went;
* **compressed** (:func:`save_compressed` / :func:`load_compressed`): the survivors
  and bit-packed (or N:M) masks in one file, restored bit for bit with the masks;
* **LiteRT** (:func:`to_litert`, :class:`LiteRTModel`): a float32 ``.tflite`` file,
  optionally with the converter's sparse weight storage (``pip install 'tflth[litert]'``
  for the interpreter that checks and runs it).

:class:`ExportJob` does all of it for one source (``tflth-export`` / ``bin/export.py``);
every error is an :class:`ExportError` (a ``ValueError``) naming the bad value.

Modules: :mod:`~tflth.export.source` (loading), :mod:`~tflth.export.baked`,
:mod:`~tflth.export.shrinking` (it reads the unit groups of :mod:`tflth.unit_graph`),
:mod:`~tflth.export.compressed`, :mod:`~tflth.export.litert`,
:mod:`~tflth.export.formats` (the formats by name), :mod:`~tflth.export.job`.
"""

from tflth.export.errors import ExportError
from tflth.export.source import default_export_dir, load
from tflth.export.baked import save_baked
from tflth.export.shrinking import LayerShrink, ShrinkReport, shrink
from tflth.export.compressed import compressed_bytes, load_compressed, read_header, save_compressed
from tflth.export.litert import LiteRTModel, litert_bytes, to_litert
from tflth.export.formats import DEFAULT_FORMATS, FORMATS
from tflth.export.job import ExportJob, ExportPlan

__all__ = ["ExportError", "load", "default_export_dir", "save_baked", "shrink", "ShrinkReport", "LayerShrink",
           "save_compressed", "load_compressed", "compressed_bytes", "read_header", "to_litert", "litert_bytes",
           "LiteRTModel", "FORMATS", "DEFAULT_FORMATS", "ExportJob", "ExportPlan"]

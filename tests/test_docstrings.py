"""The manuals in the docstrings of the public classes and functions: present, and their
examples still run (doctest)."""

import doctest
import pydoc

import pytest

import tflth
from tflth import export, masking, pruning
from tflth.export import baked, compressed, litert, shrinking, source
from tflth.masking import fit, maskable, masks, saving, state
from tflth.training import Trainer

DOCUMENTED = {
    "tflth.masked": tflth.masked,
    "tflth.unmasked": tflth.unmasked,
    "tflth.load_model": tflth.load_model,
    "tflth.Masks": tflth.Masks,
    "tflth.masking.apply_masks": masking.apply_masks,
    "tflth.masking.maskable_variables": masking.maskable_variables,
    "tflth.masking.select": masking.select,
    "tflth.masking.RewindPoint": masking.RewindPoint,
    "tflth.pruning.prune": pruning.prune,
    "tflth.training.Trainer": Trainer,
    "tflth.export.load": export.load,
    "tflth.export.shrink": export.shrink,
    "tflth.export.save_baked": export.save_baked,
    "tflth.export.save_compressed": export.save_compressed,
    "tflth.export.load_compressed": export.load_compressed,
    "tflth.export.to_litert": export.to_litert,
    "tflth.export.LiteRTModel": export.LiteRTModel,
    "tflth.export.ExportJob": export.ExportJob,
}
NO_EXAMPLE = {"tflth.unmasked", "tflth.masking.RewindPoint",  # examples in their modules' docstrings
              "tflth.export.load_compressed",  # its example is save_compressed's
              "tflth.export.ExportJob"}  # its example needs a run directory (tests/test_cli_export.py runs one)
NEEDS_LITERT = {"tflth.export.to_litert", "tflth.export.LiteRTModel"}  # the optional ai-edge-litert interpreter
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(name, obj):
    # recurse=False: the object's own docstring, not those of its (Keras-inherited) methods.
    return [t for t in doctest.DocTestFinder(recurse=False).find(obj, name, globs={}) if t.examples]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_docstring_is_a_manual(name):
    doc = DOCUMENTED[name].__doc__
    assert "Args:" in doc or "Raises:" in doc or "Example" in doc, name
    if name not in NO_EXAMPLE:
        assert ">>>" in doc, name


@pytest.mark.parametrize("name", sorted(set(DOCUMENTED) - NO_EXAMPLE))
def test_docstring_examples_run(name):
    if name in NEEDS_LITERT:
        pytest.importorskip("ai_edge_litert.interpreter")
    tests = _doctests(name, DOCUMENTED[name])
    assert tests, f"{name} has no doctest example"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0


@pytest.mark.parametrize("module", [masks, maskable, state, saving, fit, masking, pruning, source, baked, shrinking,
                                    compressed, litert], ids=lambda m: m.__name__)
def test_module_doctests_pass(module):
    """Every example anywhere in the modules (module docstrings, helpers) runs too."""
    if module is litert:
        pytest.importorskip("ai_edge_litert.interpreter")
    result = doctest.testmod(module, optionflags=FLAGS, report=False, globs={})
    assert result.failed == 0


def test_help_shows_the_manual():
    text = pydoc.render_doc(masking.apply_masks, renderer=pydoc.plaintext)
    for part in ("Args:", "strategy.scope()", "Raises:", ">>>"):
        assert part in text, part


def test_manuals_say_how_to_load_and_share_a_masked_model():
    doc = " ".join(saving.__doc__.split())
    assert "tflth.masking.load_model" in doc and "keras.saving.load_model" in doc and "without tflth" in doc
    assert "keras.saving.load_model" in " ".join(tflth.unmasked.__doc__.split())

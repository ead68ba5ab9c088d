"""The manuals in the docstrings of the public layers and functions: present, and their
examples still run (doctest)."""

import doctest
import pydoc

import pytest

import tflth
from tflth import convert, layers, masks
from tflth.training import Trainer

DOCUMENTED = {
    "tflth.MaskedDense": tflth.MaskedDense,
    "tflth.MaskedConv2D": tflth.MaskedConv2D,
    "tflth.MaskedDepthwiseConv2D": tflth.MaskedDepthwiseConv2D,
    "tflth.masked": tflth.masked,
    "tflth.unmasked": tflth.unmasked,
    "tflth.training.Trainer": Trainer,
    **{f"tflth.masks.{name}": getattr(masks, name) for name in (
        "prunable_layers", "get_masks", "set_masks", "get_kernels", "ones_like", "apply_mask",
        "save_masks", "load_masks", "density_report")},
}
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _doctests(name, obj):
    # recurse=False: the class's own docstring, not those of its (Keras-inherited) methods.
    return [t for t in doctest.DocTestFinder(recurse=False).find(obj, name, globs={}) if t.examples]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_docstring_is_a_manual(name):
    doc = DOCUMENTED[name].__doc__
    assert "Args:" in doc, name
    if name != "tflth.masks.load_masks":  # points to save_masks' example (a round trip)
        assert ">>>" in doc, name


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_docstring_examples_run(name):
    tests = _doctests(name, DOCUMENTED[name])
    if name == "tflth.masks.load_masks":
        assert not tests
        return
    assert tests, f"{name} has no doctest example"
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report = []
    for test in tests:
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
    assert result.attempted > 0


@pytest.mark.parametrize("module", [layers, convert, masks], ids=lambda m: m.__name__)
def test_module_doctests_pass(module):
    """Every example anywhere in the modules (module docstrings, helpers) runs too."""
    result = doctest.testmod(module, optionflags=FLAGS, report=False, globs={})
    assert result.failed == 0


def test_help_shows_the_manual():
    text = pydoc.render_doc(tflth.MaskedDense, renderer=pydoc.plaintext)
    for part in ("Args:", "units:", "Input shape:", "Output shape:", "import tflth", "tflth.unmasked(model)", ">>>"):
        assert part in text, part
    for obj in (tflth.MaskedConv2D, tflth.MaskedDepthwiseConv2D, tflth.masked, tflth.unmasked, masks.set_masks):
        assert "Args:" in pydoc.render_doc(obj, renderer=pydoc.plaintext), obj


def test_manuals_say_how_to_load_and_share_a_masked_model():
    for obj in (tflth.MaskedDense, tflth.MaskedConv2D, tflth.MaskedDepthwiseConv2D, tflth.masked, tflth.unmasked):
        doc = " ".join(obj.__doc__.split())
        assert "import tflth" in doc, obj
        assert "unmasked" in doc, obj

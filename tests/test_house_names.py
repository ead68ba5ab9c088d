"""Module boundaries of every library module (all of tflth but the command line, which
speaks in flags): no private name crosses a module, library errors name parameters (not
command-line flags), and no broad ``except Exception`` without a reason."""

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tflth"
FILES = sorted(p for p in ROOT.rglob("*.py") if "cli" not in p.relative_to(ROOT).parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_name_is_imported_from_another_tflth_module(path):
    """``from tflth.x import _name`` only for a package-private *module* (``tflth._keras``,
    ``tflth.export._files``, ``tflth.models._common``), never a private function or class."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tflth"):
            package = ROOT.parent.joinpath(*node.module.split("."))
            private = [a.name for a in node.names if a.name.startswith("_")
                       and not (package / f"{a.name}.py").exists()]
            assert not private, f"{path.name} imports {private} from {node.module}"


def test_data_package_exports_no_private_name():
    from tflth import data

    assert not [n for n in dir(data) if n.startswith("_") and not n.startswith("__")]
    assert "TensorFlow" not in (ROOT / "data" / "registry.py").read_text().split('"""')[1]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_error_messages_name_parameters_not_flags(path):
    text = path.read_text()
    for match in re.finditer(r"raise \w+(?:\.\w+)*\((?:[^()]|\([^()]*\))*\)", text, re.S):
        assert not re.search(r"""(?:^|[\s"'(])--[a-z]""", match.group(0)), f"{path.name}: {match.group(0)[:120]}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_broad_except_says_why(path):
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if re.search(r"except (Exception|BaseException)\b", line):
            assert "#" in line, f"{path.name}:{number}: {line.strip()}"

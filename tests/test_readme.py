"""Every Python block of the README runs as written, at toy size.

The blocks name their data and lengths in variables (``DATA``, ``STEPS``, ``K``); the test
points them at a small synthetic dataset and a few iterations, and changes nothing else.
"""

import os
import re

import pytest

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = {"DATA": None, "STEPS": '"20it"', "K": '"5it"'}


def _blocks():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def _toy(code: str, data: str) -> str:
    values = dict(TOY, DATA=repr(data))
    if "STEPS, K =" in code:
        code, n = re.subn(r"^STEPS, K = .*$", f"STEPS, K = {values['STEPS']}, {values['K']}", code, flags=re.M)
        assert n == 1
    code, n = re.subn(r"^DATA = .*$", f"DATA = {values['DATA']}", code, flags=re.M)
    return code


def test_the_readme_has_python_blocks():
    assert len(_blocks()) >= 2


@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    data = write_synthetic_npz(tmp_path / "data.npz")
    monkeypatch.chdir(tmp_path)
    code = _toy(_blocks()[index], data)
    exec(compile(code, f"README.md python block {index}", "exec"), {"__name__": "__readme__"})

"""Every Python block of the README and of the pages under docs/ runs as written, at toy
size; every relative link there leads somewhere.

The blocks name their data and lengths in variables (``DATA``, ``STEPS``, ``K``); the test
points them at a small synthetic dataset and a few iterations, and changes nothing else.
"""

import glob
import os
import re
import urllib.parse

import pytest

from helpers import write_synthetic_npz

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
TOY = {"DATA": None, "STEPS": '"20it"', "K": '"5it"'}


def _docs() -> list[str]:
    """The pages under docs/ (sorted), absolute paths."""
    return sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def _read(path: str) -> str:
    return open(path, encoding="utf-8").read()


def _rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def _blocks() -> list[tuple[str, str]]:
    """``(file relative to the repository root, code)`` of every ```python block of the
    README, then of each page under docs/."""
    return [(_rel(path), code) for path in [README] + _docs()
            for code in re.findall(r"^```python\n(.*?)^```", _read(path), re.S | re.M)]


def _toy(code: str, data: str) -> str:
    values = dict(TOY, DATA=repr(data))
    if "STEPS, K =" in code:
        code, n = re.subn(r"^STEPS, K = .*$", f"STEPS, K = {values['STEPS']}, {values['K']}", code, flags=re.M)
        assert n == 1
    code, n = re.subn(r"^DATA = .*$", f"DATA = {values['DATA']}", code, flags=re.M)
    return code


def test_the_readme_has_python_blocks():
    blocks = _blocks()
    assert len(blocks) >= 2
    assert any(source == "README.md" for source, _ in blocks), "the README's library quickstart is gone"


_BLOCKS = _blocks()


@pytest.mark.parametrize("index", range(len(_BLOCKS)), ids=[f"{s}-{i}" for i, (s, _) in enumerate(_BLOCKS)])
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    data = write_synthetic_npz(tmp_path / "data.npz")
    monkeypatch.chdir(tmp_path)
    source, code = _BLOCKS[index]
    code = _toy(code, data)
    exec(compile(code, f"{source} python block {index}", "exec"), {"__name__": "__readme__"})


# ------------------------------------------------------------------ links

_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:, ...


def _prose(text: str) -> str:
    """``text`` with fenced code blocks blanked (line numbers kept) and inline code removed."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else re.sub(r"`[^`\n]*`", "", line))
    return "\n".join(out)


def _links(path: str):
    """``(line number, target)`` of every Markdown link and image of ``path`` (link texts
    may run over several lines)."""
    text = _prose(_read(path))
    for m in _LINK.finditer(text):
        yield text.count("\n", 0, m.start(1)) + 1, m.group(1)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: str) -> set[str]:
    """The anchors of a Markdown file's headings (a repeated one gets -1, -2, ...)."""
    seen, out, fenced = {}, set(), False
    for line in _read(path).splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else re.match(r"^#{1,6} +(.*?)#*\s*$", line)
        if m:
            base = slug(re.sub(r"`", "", m.group(1)))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


def test_slug_follows_github():
    assert slug("Compiled training (--jit_compile)") == "compiled-training---jit_compile"
    assert slug("Rewinding where its precondition holds: LeNet-300-100 at k = 100 (Fashion-MNIST, CPU)") == \
        "rewinding-where-its-precondition-holds-lenet-300-100-at-k--100-fashion-mnist-cpu"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {os.path.normpath(os.path.join(ROOT, urllib.parse.unquote(t.split("#")[0])))
              for _, t in _links(README) if not _EXTERNAL.match(t) and not t.startswith("#")}
    pages = _docs()
    assert pages, "no pages under docs/"
    missing = [_rel(p) for p in pages if os.path.normpath(p) not in linked]
    assert not missing, f"README.md links to no {missing}"


@pytest.mark.parametrize("path", [README] + _docs(), ids=lambda p: _rel(p))
def test_relative_links_lead_to_files_and_headings(path):
    checked, broken = 0, []
    for n, target in _links(path):
        if _EXTERNAL.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        dest = os.path.normpath(os.path.join(os.path.dirname(path), urllib.parse.unquote(file_part))) \
            if file_part else path
        checked += 1
        if not os.path.exists(dest):
            broken.append(f"{_rel(path)} line {n}: {target} ({_rel(dest)} does not exist)")
        elif fragment and dest.endswith(".md") and fragment not in anchors(dest):
            broken.append(f"{_rel(path)} line {n}: {target} (no heading #{fragment} in {_rel(dest)})")
    assert not broken, "\n".join(broken)
    if path == README:
        assert checked >= len(_docs()), checked

"""Every Python code block of the guides runs on its own (issue 14).

Each ``.. code-block:: python`` of ``docs/guide/*.rst`` (and the other top-level
pages) is executed in a fresh namespace, in a temporary folder, with matplotlib's
Agg backend: a block must import what it uses.  Blocks that need the bundled sample
skip in a wheel install.
"""
import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
_BLOCK = re.compile(r"^\.\. code-block:: python[ \t]*\n((?:[ \t]+:[^\n]*\n)*)\n((?:(?:[ \t]+[^\n]*)?\n)+)", re.M)


def python_blocks(path: Path):
    """``(line, code)`` of every ``.. code-block:: python`` in an .rst file."""
    text = path.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        code = textwrap.dedent(m.group(2)).strip("\n") + "\n"
        out.append((text.count("\n", 0, m.start()) + 1, code))
    return out


def _cases():
    pages = sorted(DOCS.glob("guide/*.rst")) + sorted(DOCS.glob("*.rst"))
    return [pytest.param(p, line, code, id=f"{p.relative_to(DOCS)}:{line}")
            for p in pages for line, code in python_blocks(p)]


def test_the_guides_have_examples():
    assert len(_cases()) >= 8


@pytest.mark.parametrize("page,line,code", _cases())
def test_guide_example_runs_on_its_own(page, line, code, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore.data import SampleNotAvailableError

    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"{page.name}:{line}", "exec"), {"__name__": "__docs_example__"})
    except SampleNotAvailableError as exc:  # pragma: no cover - wheel installs only
        pytest.skip(f"needs the bundled sample: {exc}")
    finally:
        plt.close("all")

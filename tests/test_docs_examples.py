"""Every Python code block of the guides runs on its own (issue 14).

Each ``.. code-block:: python`` of ``docs/guide/*.rst`` (and the other top-level
pages) is executed in a fresh namespace, in a temporary folder that sees the
repository's ``configs/``, with matplotlib's Agg backend: a block must import what it
uses.  Blocks that need the bundled sample skip in a wheel install.  A block that
cannot run in a test (e.g. a full two-hour training run) says so with the option
``:class: no-test`` and is reported as skipped.
"""
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_BLOCK = re.compile(r"^\.\. code-block:: python[ \t]*\n((?:[ \t]+:[^\n]*\n)*)\n((?:(?:[ \t]+[^\n]*)?\n)+)", re.M)


def python_blocks(path: Path):
    """``(line, code)`` of every ``.. code-block:: python`` in an .rst file."""
    text = path.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        code = textwrap.dedent(m.group(2)).strip("\n") + "\n"
        no_test = "no-test" in m.group(1)
        out.append((text.count("\n", 0, m.start()) + 1, None if no_test else code))
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

    if code is None:
        pytest.skip("marked :class: no-test in the page (cannot run in a test)")
    for name in ("configs",):  # read-only inputs the guides refer to by relative path
        if (ROOT / name).is_dir():
            (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    try:
        exec(compile(code, f"{page.name}:{line}", "exec"), {"__name__": "__docs_example__"})
    except SampleNotAvailableError as exc:  # pragma: no cover - wheel installs only
        pytest.skip(f"needs the bundled sample: {exc}")
    finally:
        plt.close("all")


def test_block_parser_reads_options_and_no_test(tmp_path):
    page = tmp_path / "p.rst"
    page.write_text("Title\n=====\n\n.. code-block:: python\n\n   x = 1\n   y = x + 1\n\ntext\n\n"
                    ".. code-block:: python\n   :class: no-test\n\n   train(time_limit=6900)\n")
    blocks = python_blocks(page)
    assert blocks == [(4, "x = 1\ny = x + 1\n"), (11, None)]

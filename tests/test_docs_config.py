"""Docs that work offline and a repository that explains itself (issue 14)."""
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_docs_render_equations_offline():
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    assert "sphinx-mathjax-offline" in conf["extensions"]  # MathJax copied into _static, no CDN
    assert not str(conf.get("mathjax_path", "")).startswith(("http:", "https:", "//"))


def test_architecture_page_replaces_the_external_design_pointer():
    index = (ROOT / "docs" / "index.rst").read_text()
    assert "architecture" in index.split()
    arch = (ROOT / "docs" / "architecture.rst").read_text()
    for word in ("Layers", "Where each method lives", "How a kernel reaches a torch layer"):
        assert word in arch
    assert "../shared" not in (ROOT / "README.md").read_text()

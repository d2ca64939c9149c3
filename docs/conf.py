"""Sphinx configuration: build with ``python -m sphinx -W -b html docs docs/_build/html``.

Needs the docs extra (``pip install "torch==2.13.0" -e ".[docs]"``); the build and the pages
work offline (MathJax is bundled, see ``extensions``).
"""
import os
import sys

sys.path.insert(0, os.path.abspath(".."))
import flmcore  # noqa: E402

project = "flmcore"
author = "flmcore developers"
copyright = "2026, flmcore developers"
release = flmcore.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    # Equations render offline: MathJax 3 is copied from the sphinx-mathjax-offline package
    # (the docs extra) into _build/html/_static/mathjax, and the pages load it from there
    # instead of a CDN.
    "sphinx-mathjax-offline",
    "sphinx.ext.viewcode",
    "numpydoc",
]
autodoc_default_options = {
    "members": True,
    "undoc-members": False,
    "show-inheritance": False,
    # scikit-learn generates these request methods on every estimator subclass
    "exclude-members": "set_fit_request, set_predict_request, set_score_request, set_transform_request, "
                       "set_partial_fit_request, get_metadata_routing",
}
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False
suppress_warnings = ["autodoc.import_object"] if os.environ.get("FLMCORE_DOCS_LENIENT") else []
nitpicky = False
templates_path = []
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = ["_static"]
master_doc = "index"

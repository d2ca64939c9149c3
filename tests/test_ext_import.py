"""Without built kernels, importing a module that needs them says what to do (issue 14)."""
import subprocess
import sys
import textwrap

import pytest

_BLOCK = textwrap.dedent("""
    import importlib.machinery as m
    # pretend flmcore._ext.{name} was never built: hide it from the path finder
    _orig = m.PathFinder.find_spec
    def find_spec(fullname, path=None, target=None, _orig=_orig):
        if fullname == "flmcore._ext.{name}":
            return None
        return _orig(fullname, path, target)
    m.PathFinder.find_spec = staticmethod(find_spec)
    try:
        {stmt}
    except ImportError as exc:
        print("IMPORTERROR", exc)
    else:
        print("IMPORTED")
""")


@pytest.mark.parametrize("name,stmt", [
    ("lddmm_kernels", "import flmcore.lddmm"),
    ("sift", "import flmcore._ext.sift"),
])
def test_missing_kernel_import_error_says_what_to_do(name, stmt):
    code = _BLOCK.format(name=name, stmt=stmt)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    out = res.stdout
    assert "IMPORTERROR" in out, out + res.stderr
    assert f"flmcore._ext.{name} is not built" in out
    assert "pip install" in out and "flmcore info" in out


def test_compiled_status_lists_kernels():
    from flmcore._ext import compiled_status

    st = compiled_status()
    assert {"lddmm_kernels", "sift", "similarity"} <= set(st)


def test_numba_compile_notice_only_without_cache(tmp_path, monkeypatch, caplog):
    """Numba kernels (cache=True) say once that they compile; a cached load is silent."""
    import importlib
    import logging

    import flmcore._ext as ext

    (tmp_path / "tiny_kernel.py").write_text(
        "from numba import njit\n\n@njit(cache=True)\ndef f(x):\n    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # the cache goes to tmp_path/__pycache__ beside the module (fresh for every run)
    monkeypatch.setattr(ext, "_NOTED", set())
    mod = importlib.import_module("tiny_kernel")
    with caplog.at_level(logging.WARNING, logger="flmcore"):
        ext.note_numba_compile(mod.f, "tiny")
        ext.note_numba_compile(mod.f, "tiny")  # once per process
        assert mod.f(1) == 2
    assert caplog.text.count("compiling the Numba tiny kernels") == 1
    caplog.clear()
    monkeypatch.setattr(ext, "_NOTED", set())
    mod = importlib.reload(mod)  # fresh dispatcher: loads from the on-disk cache
    with caplog.at_level(logging.WARNING, logger="flmcore"):
        ext.note_numba_compile(mod.f, "tiny")
    assert "compiling" not in caplog.text

"""Compiled kernels of flmcore (Cython ``.pyx`` built by setup.py, Numba ``@njit(cache=True)``).

Plain arrays in, plain arrays out; no validation (the public caller validated),
no Python objects, no torch.  :func:`compiled_status` reports which Cython
modules are importable (used by ``flmcore info``).

A Cython module that is not built (a source tree used without ``pip install``,
or a build that failed) raises an :class:`ImportError` that says how to build
it, instead of Python's bare ``cannot import name``.
"""
import importlib
import sys
from pathlib import Path

# The Cython kernel modules (one per .pyx); also found from the files present.
_CYTHON = ("lddmm_kernels", "sift", "similarity")

_BUILD_HINT = (
    "flmcore's compiled kernel flmcore._ext.{name} is not built or cannot be loaded ({err}). "
    "Build the kernels from the source checkout with `pip install \"torch==2.13.0\" -e .` "
    "(needs a C compiler; `pip install --no-build-isolation -e .` reuses your installed Cython "
    "and NumPy), or install a wheel built for this Python and platform. "
    "`flmcore info` lists which kernels are built."
)


def _cython_names():
    here = Path(__file__).parent
    found = {p.name.split(".")[0] for p in here.iterdir() if p.suffix in (".pyx", ".so", ".pyd")}
    return sorted(found | set(_CYTHON))


_NOTED = set()


def note_numba_compile(dispatcher, what: str) -> None:
    """Say once (a ``flmcore`` logging warning) that a Numba kernel is compiled now.

    Numba kernels use ``cache=True``: the first call on a machine compiles them
    (several seconds) and stores the result on disk; later processes load it.  The
    message is given only when no on-disk cache exists yet, once per process.

    Examples
    --------
    >>> note_numba_compile(object(), "nothing")  # not a dispatcher: silent
    """
    if what in _NOTED:
        return
    _NOTED.add(what)
    try:
        if dispatcher.signatures:
            return  # already compiled or loaded in this process
        import os

        if os.path.exists(dispatcher._cache._cache_file._index_path):
            return  # will load from Numba's on-disk cache (fast)
    except Exception:  # not a caching Numba dispatcher, or Numba internals changed
        return
    import logging

    logging.getLogger("flmcore").warning(
        "flmcore: compiling the Numba %s kernels (first use on this machine, a few seconds); "
        "they are cached on disk, so later runs start at once", what)


def _hint(name, exc):
    if str(exc).startswith("flmcore's compiled kernel"):
        return exc
    return ImportError(_BUILD_HINT.format(name=name, err=f"{type(exc).__name__}: {exc}"),
                       name=f"{__name__}.{name}")


def __getattr__(name):
    # Reached by ``from flmcore._ext import <kernel>`` before the submodule is imported.
    if name in _cython_names():
        try:
            return importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:
            raise _hint(name, exc) from exc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _MissingKernelFinder:
    """Last entry of ``sys.meta_path``: asked only when no finder found a kernel module
    (``import flmcore._ext.sift`` with no built ``.so``); raises the build hint."""

    @staticmethod
    def find_spec(fullname, path=None, target=None):
        pkg, _, name = fullname.rpartition(".")
        if pkg == __name__ and name in _cython_names():
            raise _hint(name, ModuleNotFoundError(f"No module named {fullname!r}"))
        return None


if not any(isinstance(f, _MissingKernelFinder) for f in sys.meta_path):
    sys.meta_path.append(_MissingKernelFinder())


def compiled_status():
    """Return ``{module_name: True/False}`` for every Cython kernel module.

    Examples
    --------
    >>> isinstance(compiled_status(), dict)
    True
    """
    names = _cython_names()
    out = {}
    for n in names:
        try:
            importlib.import_module(f"flmcore._ext.{n}")
            out[n] = True
        except ImportError:
            out[n] = False
    return out

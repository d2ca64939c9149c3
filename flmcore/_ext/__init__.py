"""Compiled kernels of flmcore (Cython ``.pyx`` built by setup.py, Numba ``@njit(cache=True)``).

Plain arrays in, plain arrays out; no validation (the public caller validated),
no Python objects, no torch.  :func:`compiled_status` reports which Cython
modules are importable (used by ``flmcore info``).
"""
import importlib
from pathlib import Path


def compiled_status():
    """Return ``{module_name: True/False}`` for every Cython kernel module.

    Examples
    --------
    >>> isinstance(compiled_status(), dict)
    True
    """
    here = Path(__file__).parent
    names = sorted({p.name.split(".")[0] for p in here.iterdir() if p.suffix in (".pyx",)})
    out = {}
    for n in names:
        try:
            importlib.import_module(f"flmcore._ext.{n}")
            out[n] = True
        except ImportError:
            out[n] = False
    return out

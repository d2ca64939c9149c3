"""flmcore: a classical-plus-deep numerical library for facial landmark detection.

The core (this package outside :mod:`flmcore.nn` and :mod:`flmcore.train`) is
NumPy in / NumPy out and never imports torch.  Public modules are imported on
demand, one per method: ``flmcore.schemes``, ``flmcore.io``, ``flmcore.procrustes``,
``flmcore.pose``, ``flmcore.anisotropic``, ``flmcore.metrics``, ``flmcore.ssr``,
``flmcore.sift``, ``flmcore.cascade``, ``flmcore.lddmm``; the torch layers live in
``flmcore.nn`` and the training procedures in ``flmcore.train``.
"""
import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "schemes", "io", "procrustes", "pose", "anisotropic", "metrics", "ssr", "sift",
    "cascade", "lddmm", "pip", "similar_points", "data", "nn", "train",
    "datasets", "crop", "augment", "evaluate", "detect", "models",
}


def load_model(name="ibug68", **kwargs):
    """A trained landmark model ready for inference (see :func:`flmcore.models.load_model`; imports torch)."""
    from .models import load_model as _load

    return _load(name, **kwargs)


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"flmcore.{name}")
    raise AttributeError(f"module 'flmcore' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))

"""Input checks shared by the torch layers: a NumPy array where a tensor is expected gets a clear error.

:func:`guard_tensor_inputs` wraps ``forward`` (and ``flow_points``/``transport``) of a
:class:`torch.nn.Module` class so that a :class:`numpy.ndarray` passed to a parameter
annotated as ``torch.Tensor`` raises ``TypeError: <Class>.forward: momenta expected a
torch.Tensor, got numpy.ndarray ...`` instead of an opaque error deep inside torch.
``flmcore.nn`` applies it to every module class it exports.
"""
from __future__ import annotations

import functools
import inspect

import numpy as np

__all__ = ["guard_tensor_inputs", "check_tensor"]

_METHODS = ("forward", "flow_points", "transport")


def check_tensor(x, name: str, where: str = "") -> None:
    """Raise ``TypeError`` naming ``name`` when ``x`` is a NumPy array.

    Examples
    --------
    >>> check_tensor(np.zeros(2), "points", "Layer.forward")
    Traceback (most recent call last):
    ...
    TypeError: Layer.forward: points expected a torch.Tensor, got numpy.ndarray (convert it with torch.as_tensor(x, dtype=torch.float32))
    """
    if isinstance(x, np.ndarray):
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}{name} expected a torch.Tensor, got numpy.ndarray "
                        "(convert it with torch.as_tensor(x, dtype=torch.float32))")


def _tensor_params(fn):
    params = list(inspect.signature(fn).parameters.values())[1:]  # drop self
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    tensors = {p.name for p in params if "Tensor" in str(p.annotation)}
    return positional, tensors


def _guard(cls, meth: str, fn):
    positional, tensors = _tensor_params(fn)
    if not tensors:
        return None
    where = f"{cls.__name__}.{meth}"

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        for name, a in zip(positional, args):
            if name in tensors:
                check_tensor(a, name, where)
        for name, a in kwargs.items():
            if name in tensors:
                check_tensor(a, name, where)
        return fn(self, *args, **kwargs)

    wrapper._flmcore_guarded = True
    return wrapper


def guard_tensor_inputs(cls):
    """Wrap the tensor-taking methods of a module class (idempotent); returns ``cls``."""
    for meth in _METHODS:
        fn = cls.__dict__.get(meth)
        if fn is None or not inspect.isfunction(fn) or getattr(fn, "_flmcore_guarded", False):
            continue
        wrapped = _guard(cls, meth, fn)
        if wrapped is not None:
            setattr(cls, meth, wrapped)
    return cls

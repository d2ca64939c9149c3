"""Argument checking shared by every public function of flmcore.

Every checker raises a :class:`ValueError` or :class:`TypeError` whose message
names the argument, what was expected and what was received, so that a user
sees at once which input is wrong.  Checkers return a converted array (never a
view that aliases a caller's array unless documented) so that kernels in
``flmcore._ext`` may drop bounds checks safely.

Nothing here imports torch.
"""
from __future__ import annotations

import numbers
from typing import Iterable, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "as_array",
    "check_array",
    "check_shapes",
    "check_same_points",
    "check_images",
    "check_positive",
    "check_nonnegative",
    "check_int",
    "check_in",
    "check_rng",
    "check_num_threads",
    "max_num_threads",
    "check_probability",
]


def as_array(x, name: str, dtype=None) -> np.ndarray:
    """``np.asarray(x, dtype)`` whose failures (ragged nested lists, unconvertible values) name ``name``.

    Examples
    --------
    >>> as_array([[1, 2], [3]], "shapes")
    Traceback (most recent call last):
    ...
    ValueError: shapes must be a rectangular array, got a ragged nested sequence (lengths differ along an axis)
    """
    try:
        return np.asarray(x, dtype=dtype)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if "inhomogeneous" in msg or "sequence" in msg:
            raise ValueError(f"{name} must be a rectangular array, got a ragged nested sequence "
                             "(lengths differ along an axis)") from None
        raise TypeError(f"{name} must be array-like of numbers, got {type(x).__name__} ({msg})") from None


def _shape_str(a) -> str:
    return "(" + ", ".join(str(s) for s in np.shape(a)) + (",)" if np.ndim(a) == 1 else ")")


def check_array(
    x,
    name: str,
    *,
    ndim: Union[int, Sequence[int], None] = None,
    dtype=np.float64,
    allow_nan: bool = False,
    allow_empty: bool = False,
    shape: Optional[Tuple[Optional[int], ...]] = None,
    copy: bool = False,
) -> np.ndarray:
    """Convert ``x`` to a C-contiguous array of ``dtype`` and check it.

    Parameters
    ----------
    x : array_like
        The input.
    name : str
        Argument name used in error messages.
    ndim : int or sequence of int, optional
        Allowed numbers of dimensions.
    dtype : numpy dtype, optional
        Target dtype (float64 by default).  Complex, object, string and bool
        inputs are rejected with a :class:`TypeError` when a float dtype is asked.
    allow_nan : bool
        Accept NaN entries (``inf`` is never accepted for float targets).
    allow_empty : bool
        Accept arrays with a zero-sized axis.
    shape : tuple of (int or None), optional
        Required sizes per axis, counted from the *last* axis (``None`` = any).
    copy : bool
        Always return a fresh array.

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> check_array([[1, 2], [3, 4]], "x", ndim=2).dtype
    dtype('float64')
    """
    if x is None:
        raise TypeError(f"{name} must be an array, got None")
    if hasattr(x, "detach") and hasattr(x, "device"):
        raise TypeError(f"{name} must be a NumPy array, got a torch.Tensor; use flmcore.nn for tensors")
    arr = as_array(x, name)
    if arr.dtype == object or arr.dtype.kind in "OUSV":
        raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
    target = np.dtype(dtype) if dtype is not None else arr.dtype
    if target.kind == "f" and arr.dtype.kind in "cb":
        raise TypeError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            exp = " or ".join(str(a) for a in allowed)
            raise ValueError(f"{name} must have {exp} dimensions, got shape {_shape_str(arr)} ({arr.ndim} dimensions)")
    if shape is not None:
        if arr.ndim < len(shape):
            raise ValueError(f"{name} must have at least {len(shape)} dimensions, got shape {_shape_str(arr)}")
        for k, want in enumerate(reversed(shape)):
            if want is not None and arr.shape[arr.ndim - 1 - k] != want:
                exp = "(..., " + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise ValueError(f"{name} must have shape {exp}, got shape {_shape_str(arr)}")
    if not allow_empty and arr.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {_shape_str(arr)}")
    out = np.array(arr, dtype=target, order="C", copy=True) if copy else np.asarray(arr, dtype=target, order="C")
    if out.dtype.kind == "f":
        finite = np.isfinite(out)
        if not finite.all():
            if np.isinf(out).any():
                raise ValueError(f"{name} contains infinite values")
            if not allow_nan:
                n = int(np.isnan(out).sum())
                raise ValueError(f"{name} contains {n} NaN value(s); expected finite numbers")
    return out


def check_shapes(
    x,
    name: str = "shapes",
    *,
    n_points: Optional[int] = None,
    batch: Optional[bool] = None,
    allow_nan: bool = False,
    min_points: int = 1,
    check_degenerate: bool = False,
) -> np.ndarray:
    """Check landmark shapes ``(P, 2)`` or ``(B, P, 2)`` and return float64.

    Parameters
    ----------
    x : array_like, shape (P, 2) or (B, P, 2)
        Landmark coordinates ``(x, y)`` in pixels.
    name : str
        Argument name used in error messages.
    n_points : int, optional
        Required number of points ``P`` (e.g. from a scheme).
    batch : bool, optional
        ``True`` requires ``(B, P, 2)``, ``False`` requires ``(P, 2)``,
        ``None`` accepts both.
    allow_nan : bool
        Accept NaN-masked (missing) points.
    min_points : int
        Minimum number of points.
    check_degenerate : bool
        Reject shapes whose (non-missing) points all coincide.

    Returns
    -------
    numpy.ndarray of float64

    Examples
    --------
    >>> check_shapes([[0, 0], [1, 1]]).shape
    (2, 2)
    """
    ndim = {None: (2, 3), True: 3, False: 2}[batch]
    arr = check_array(x, name, ndim=ndim, allow_nan=allow_nan, allow_empty=True)
    if arr.shape[-1] != 2:
        exp = "(B, P, 2)" if batch else ("(P, 2)" if batch is False else "(P, 2) or (B, P, 2)")
        raise ValueError(f"{name} must have shape {exp} of (x, y) coordinates, got shape {_shape_str(arr)}")
    if arr.ndim == 3 and arr.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one shape, got shape {_shape_str(arr)}")
    if arr.shape[-2] < max(min_points, 1):
        raise ValueError(f"{name} must have at least {max(min_points, 1)} point(s), got shape {_shape_str(arr)}")
    if n_points is not None and arr.shape[-2] != n_points:
        raise ValueError(f"{name} must have {n_points} points, got {arr.shape[-2]} (shape {_shape_str(arr)})")
    if check_degenerate:
        flat = arr.reshape(-1, arr.shape[-2], 2)
        with np.errstate(invalid="ignore"):
            spread = np.nanmax(flat, axis=1) - np.nanmin(flat, axis=1)
        bad = ~(np.nan_to_num(spread, nan=0.0) > 0).any(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)[:5].tolist()
            raise ValueError(f"{name} contains degenerate shapes (all points equal) at index {idx}")
    return arr


def check_same_points(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise if two shape arrays do not have the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> check_same_points(np.zeros((3, 2)), np.zeros((3, 2)), "a", "b")
    """
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {_shape_str(a)} and {_shape_str(b)}")


def check_images(
    images,
    name: str = "images",
    *,
    batch: Optional[bool] = None,
    dtype=np.float32,
) -> np.ndarray:
    """Check grayscale images ``(H, W)`` or ``(B, H, W)``; uint8 is scaled to [0, 1].

    Colour images ``(..., 3)`` are rejected with a message pointing at
    :func:`flmcore.io.to_gray`.

    Examples
    --------
    >>> import numpy as np
    >>> check_images(np.zeros((4, 5), np.uint8)).dtype
    dtype('float32')
    """
    arr = as_array(images, name)
    if arr.dtype == object or arr.dtype.kind not in "uif":
        raise TypeError(f"{name} must be uint8 or float images, got dtype {arr.dtype}")
    if arr.ndim >= 3 and arr.shape[-1] in (3, 4) and not (arr.ndim == 3 and batch is True):
        if arr.ndim == 3 and batch is None:
            raise ValueError(f"{name} of shape {_shape_str(arr)} is ambiguous: a colour (H, W, {arr.shape[-1]}) "
                             f"image or a batch of {arr.shape[0]} grayscale images {arr.shape[-1]} pixels wide; "
                             "convert colour with flmcore.io.to_gray, or pass the batch with batched shapes "
                             "(B, P, 2) / batch=True")
        raise ValueError(f"{name} must be grayscale {'(B, H, W)' if batch else '(H, W)'}, got colour-looking shape "
                         f"{_shape_str(arr)}; convert with flmcore.io.to_gray first")
    ndim = {None: (2, 3), True: 3, False: 2}[batch]
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        exp = " or ".join({2: "(H, W)", 3: "(B, H, W)"}[a] for a in allowed)
        raise ValueError(f"{name} must have shape {exp}, got shape {_shape_str(arr)}")
    if arr.size == 0 or arr.shape[-1] < 2 or arr.shape[-2] < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got shape {_shape_str(arr)}")
    if arr.dtype == np.uint8:
        return np.asarray(arr, dtype=dtype, order="C") / np.asarray(255.0, dtype=dtype)
    out = np.asarray(arr, dtype=dtype, order="C")
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def check_positive(value, name: str, *, strict: bool = True, finite: bool = True) -> float:
    """Return ``float(value)`` after checking it is (strictly) positive.

    Examples
    --------
    >>> check_positive(2, "sigma")
    2.0
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    v = float(value)
    if np.isnan(v) or (finite and np.isinf(v)):
        raise ValueError(f"{name} must be a finite number, got {v}")
    if (strict and not v > 0) or (not strict and v < 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {v}")
    return v


def check_nonnegative(value, name: str, *, finite: bool = False) -> float:
    """Return ``float(value)`` after checking ``value >= 0`` (``inf`` allowed unless ``finite``).

    Examples
    --------
    >>> check_nonnegative(float("inf"), "tau")
    inf
    """
    return check_positive(value, name, strict=False, finite=finite)


def check_int(value, name: str, *, min_value: Optional[int] = None, max_value: Optional[int] = None) -> int:
    """Return ``int(value)`` after checking it is an integer in range.

    Examples
    --------
    >>> check_int(3, "k", min_value=1)
    3
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    v = int(value)
    if min_value is not None and v < min_value:
        raise ValueError(f"{name} must be >= {min_value}, got {v}")
    if max_value is not None and v > max_value:
        raise ValueError(f"{name} must be <= {max_value}, got {v}")
    return v


def check_in(value, name: str, allowed: Iterable):
    """Check that ``value`` is one of ``allowed``.

    Examples
    --------
    >>> check_in("euler", "integrator", ("euler", "rk2"))
    'euler'
    """
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(repr(a) for a in allowed)}; got {value!r}")
    return value


def check_probability(value, name: str) -> float:
    """Check ``0 <= value <= 1``.

    Examples
    --------
    >>> check_probability(0.5, "p")
    0.5
    """
    v = check_nonnegative(value, name, finite=True)
    if v > 1:
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def check_rng(rng) -> np.random.Generator:
    """Return a :class:`numpy.random.Generator` from ``None``, an int or a Generator.

    Examples
    --------
    >>> bool(check_rng(0).integers(10) == check_rng(0).integers(10))
    True
    """
    if rng is None or isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(rng)
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int or a numpy.random.Generator, got {type(rng).__name__}")


def _available_cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def max_num_threads() -> int:
    """Largest ``num_threads`` any kernel accepts: ``max(64, 8 * cores)``.

    Every compiled kernel starts its OpenMP/Numba team from the value checked by
    :func:`check_num_threads`; an unbounded team (``num_threads=100000``) exhausts the
    thread stacks and crashes the process, so the bound is enforced here, once.

    Examples
    --------
    >>> max_num_threads() >= 64
    True
    """
    return max(64, 8 * _available_cores())


def check_num_threads(num_threads) -> int:
    """Resolve ``num_threads`` (``None`` = all cores) to an int in ``[1, max_num_threads()]``.

    The single place where every kernel's thread count is validated.

    Examples
    --------
    >>> check_num_threads(1)
    1
    """
    if num_threads is None:
        return _available_cores()
    v = check_int(num_threads, "num_threads", min_value=1)
    hi = max_num_threads()
    if v > hi:
        raise ValueError(f"num_threads must be <= {hi} (max(64, 8 x the {_available_cores()} available cores); "
                         f"None = all cores), got {v}")
    return v

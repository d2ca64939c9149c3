"""Anisotropic point weights of Rayhan et al. (BMVC 2020, "Not all points are created equal").

Each target point :math:`z_i` carries a covariance :math:`S_i` describing the
expected spread of annotation errors: variance :math:`a^2` along the boundary
curve through the point and :math:`b^2` across it (eq. 3). The cost compares a
prediction :math:`x` with the target by the Mahalanobis distance with the
*weight* (precision) matrices :math:`W_i = S_i^{-1}` (eq. 2):

.. math::

    Q_2 = \\sum_i (x_i - z_i)^T W_i (x_i - z_i), \\qquad
    W_i = \\frac{1}{a^2} t_i t_i^T + \\frac{1}{b^2} (I - t_i t_i^T)  \\quad (6)

with the unit tangent (eq. 4) :math:`t_i = (z_{i+1} - z_{i-1}) / |z_{i+1} - z_{i-1}|`
inside a curve and the one-sided differences of eq. (5),
:math:`t_1 = (z_2 - z_1)/|z_2 - z_1|` and :math:`t_n = (z_n - z_{n-1})/|z_n - z_{n-1}|`,
at the ends of an open curve; closed curves wrap around. Only at well-defined
corners is :math:`W_i = I` ("landmarks such as those at the corners of the eyes
or mouth ... are given unit covariance matrices", §3.1): the explicit corner
list of each scheme (:attr:`flmcore.schemes.Scheme.corners`: eye and mouth
corners, tips of closed brow outlines, plus isolated points such as pupils).
Jaw ends, iBUG brow ends, the top of the nose bridge and the nose-wing ends
are open-curve ends and take the end tangent of eq. (5). With ``a > b``
(paper: ``a = 5``, ``b = 3``) sliding along the boundary costs less than
leaving it, and corners weigh far more than curve points.

**Degenerate neighbours.** Where the two neighbours of a point coincide
(collapsed contours of profile faces) the two-sided difference vanishes; the
one-sided difference to the next point (else the previous one) is used
instead, in this module and in the torch loss
(:func:`flmcore.nn.functional.anisotropic_loss`) alike.

**W versus S.** The paper's eq. (3) and (6) define :math:`W = S^{-1}`, so the
matrices returned by :func:`weight_matrices` are precisions (eigenvalue
:math:`1/a^2` along the tangent, :math:`1/b^2` across);
``covariance=True`` returns :math:`S` itself.

**Curvature-adaptive (a, b)** (the paper's "Limitations": "the higher the
curvature, the lower the variance"). With ``adaptive=True`` each curve point
uses :math:`a_i = a^{s_i}`, :math:`b_i = b^{s_i}` with
:math:`s_i = 1 - \\theta_i / \\pi`, where :math:`\\theta_i \\in [0, \\pi]` is the
turning angle of the polyline at the point (angle between
:math:`z_i - z_{i-1}` and :math:`z_{i+1} - z_i`; at an open curve's end the
angle of its inner neighbour). A straight run keeps :math:`(a, b)`; a sharp
turn tends to the corner weight :math:`(1, 1)`. The turning angle is the
discrete curvature times the local spacing, so the weights stay invariant to
translation and scale and equivariant to rotation.
"""
from __future__ import annotations

import functools
from typing import Union

import numpy as np

from ._validate import check_array, check_positive, check_shapes

__all__ = ["tangents", "turning_angles", "weight_matrices", "mahalanobis_cost"]


def _get_scheme(scheme):
    from .schemes import Scheme, get_scheme

    if isinstance(scheme, str):
        return get_scheme(scheme)
    if not isinstance(scheme, Scheme):
        raise TypeError(f"scheme must be a Scheme or a scheme name, got {type(scheme).__name__}")
    return scheme


@functools.lru_cache(maxsize=64)
def _neighbours(scheme):
    """Index arrays (prev, next, angle_prev, angle_mid, angle_next, on_curve) of a scheme.

    ``t_i ~ z[next_i] - z[prev_i]`` (eq. 4/5: open ends use themselves as one
    side). The turning angle at point i is measured at vertex ``angle_mid_i``
    between ``angle_prev_i`` and ``angle_next_i`` (ends borrow the inner
    neighbour's angle; curves of < 3 points have ``angle_mid = -1``).
    """
    P = scheme.n_points
    prv = np.arange(P)
    nxt = np.arange(P)
    ap = np.arange(P)
    am = np.full(P, -1)
    an = np.arange(P)
    on = np.zeros(P, bool)
    for c in reversed(scheme.curves):  # the first curve listing a point wins
        idx = np.asarray(c.indices, dtype=np.int64)
        n = len(idx)
        on[idx] = True
        if n < 2:
            prv[idx] = idx
            nxt[idx] = idx
            am[idx] = -1
            continue
        if c.closed:
            prv[idx] = np.roll(idx, 1)
            nxt[idx] = np.roll(idx, -1)
            if n >= 3:
                ap[idx], am[idx], an[idx] = np.roll(idx, 1), idx, np.roll(idx, -1)
            else:
                am[idx] = -1
        else:
            prv[idx] = np.concatenate([idx[:1], idx[:-1]])
            nxt[idx] = np.concatenate([idx[1:], idx[-1:]])
            if n >= 3:
                mid = np.concatenate([idx[1:2], idx[1:-1], idx[-2:-1]])
                pos = np.concatenate([[1], np.arange(1, n - 1), [n - 2]])
                ap[idx], am[idx], an[idx] = idx[pos - 1], mid, idx[pos + 1]
            else:
                am[idx] = -1
    return prv, nxt, ap, am, an, on


def _shape_and_scheme(shape, scheme):
    sch = _get_scheme(scheme)
    x = check_shapes(shape, "shape", allow_nan=True, n_points=sch.n_points)
    return x, sch


def tangents(shape, scheme) -> np.ndarray:
    """Unit tangents of every landmark along its scheme curve (eq. 4 and 5).

    Parameters
    ----------
    shape : array_like, shape (P, 2) or (B, P, 2)
        Target landmarks :math:`z` (pixels).
    scheme : Scheme or str
        Annotation scheme (curves, corners), e.g. ``"ibug68"``.

    Returns
    -------
    ndarray, shape like ``shape``
        Unit vectors. Interior points: normalised difference of the two
        neighbours (eq. 4); open-curve ends: one-sided difference (eq. 5);
        closed curves wrap. Where the two neighbours coincide (collapsed
        contours of profile faces) the one-sided difference to the next (else
        the previous) point is used. Zero vectors for points on no curve and
        where every difference vanishes; NaN where a needed point is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((68, 2)); x[:17, 0] = np.arange(17.0)   # straight jaw along x
    >>> tangents(x, "ibug68")[[0, 8, 16]].tolist()
    [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    """
    x, sch = _shape_and_scheme(shape, scheme)
    prv, nxt, _, _, _, _ = _neighbours(sch)
    d = x[..., nxt, :] - x[..., prv, :]
    n = np.linalg.norm(d, axis=-1, keepdims=True)
    if np.any(n == 0):  # coincident neighbours (e.g. collapsed profile contours): one-sided differences
        fwd = x[..., nxt, :] - x
        bwd = x - x[..., prv, :]
        one = np.where(np.linalg.norm(fwd, axis=-1, keepdims=True) > 0, fwd, bwd)
        d = np.where(n == 0, one, d)
        n = np.linalg.norm(d, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(n > 0, d / np.where(n > 0, n, 1.0), np.where(np.isnan(n), np.nan, 0.0))
    return t


def turning_angles(shape, scheme) -> np.ndarray:
    """Turning angle :math:`\\theta_i \\in [0, \\pi]` of the curve polyline at each point.

    The angle between :math:`z_i - z_{i-1}` and :math:`z_{i+1} - z_i` (0 on a
    straight run, :math:`\\pi` for a full reversal). Open-curve ends take the
    angle of their inner neighbour; points on no curve or on curves with fewer
    than 3 points get 0. Used by :func:`weight_matrices` with ``adaptive=True``.

    Parameters
    ----------
    shape : array_like, shape (P, 2) or (B, P, 2)
    scheme : Scheme or str

    Returns
    -------
    ndarray, shape ``shape.shape[:-1]``

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((68, 2)); x[:17, 0] = np.arange(17.0)
    >>> float(turning_angles(x, "ibug68")[8])
    0.0
    """
    x, sch = _shape_and_scheme(shape, scheme)
    _, _, ap, am, an, _ = _neighbours(sch)
    has = am >= 0
    amc = np.where(has, am, ap)
    e1 = x[..., amc, :] - x[..., ap, :]
    e2 = x[..., an, :] - x[..., amc, :]
    cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
    dot = np.einsum("...k,...k->...", e1, e2)
    th = np.arctan2(np.abs(cross), dot)
    return np.where(has, th, 0.0)


def _param(v, name, P):
    if np.ndim(v) == 0:
        return np.asarray(check_positive(v, name))
    arr = check_array(v, name, ndim=1)
    if arr.ndim == 1 and arr.shape[0] != P:
        raise ValueError(f"{name} must be a number or have shape ({P},), got shape {arr.shape}")
    if not (arr > 0).all():
        raise ValueError(f"{name} must be > 0, got minimum {arr.min()}")
    return arr


def weight_matrices(shape, scheme, a: Union[float, np.ndarray] = 5.0, b: Union[float, np.ndarray] = 3.0, *,
                    adaptive: bool = False, covariance: bool = False) -> np.ndarray:
    """Per-point anisotropic weight matrices :math:`W_i = S_i^{-1}` (eq. 6).

    Parameters
    ----------
    shape : array_like, shape (P, 2) or (B, P, 2)
        Target landmarks :math:`z` that define the tangents.
    scheme : Scheme or str
        Annotation scheme giving curves and corners.
    a : float or array_like (P,)
        Standard deviation along the curve (paper: 5). Per point if an array.
    b : float or array_like (P,)
        Standard deviation across the curve (paper: 3).
    adaptive : bool
        Curvature-adaptive :math:`(a_i, b_i) = (a^{s_i}, b^{s_i})`,
        :math:`s_i = 1 - \\theta_i/\\pi` (see the module notes and
        :func:`turning_angles`).
    covariance : bool
        Return the covariances :math:`S_i = a^2 t t^T + b^2 (I - t t^T)`
        (eq. 3) instead of the weights.

    Returns
    -------
    ndarray, shape (P, 2, 2) or (B, P, 2, 2)
        Symmetric positive-definite matrices; the identity at corners
        (``scheme.corners``: true eye / mouth corners and isolated points, not
        open-curve ends) and wherever the tangent is undefined (zero vector);
        NaN where the tangent is NaN (missing points nearby) and, with
        ``adaptive=True``, where the turning angle is (an open-curve end borrows
        its inner neighbour's angle, so a missing point two steps in makes it NaN).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.zeros((68, 2)); x[:17, 0] = np.arange(17.0)
    >>> W = weight_matrices(x, "ibug68")
    >>> W[8].round(4).tolist(), W[0].round(4).tolist()  # mid-jaw; jaw end: end tangent (eq. 5)
    ([[0.04, 0.0], [0.0, 0.1111]], [[0.04, 0.0], [0.0, 0.1111]])
    >>> W[36].tolist()                                    # outer eye corner: identity
    [[1.0, 0.0], [0.0, 1.0]]
    """
    x, sch = _shape_and_scheme(shape, scheme)
    P = sch.n_points
    a_ = _param(a, "a", P)
    b_ = _param(b, "b", P)
    t = tangents(x, sch)
    if adaptive:
        s = 1.0 - turning_angles(x, sch) / np.pi
        a_ = a_ ** s
        b_ = b_ ** s
    a_ = np.broadcast_to(a_, x.shape[:-1])
    b_ = np.broadcast_to(b_, x.shape[:-1])
    tt = t[..., :, None] * t[..., None, :]
    eye = np.eye(2)
    if covariance:
        W = (a_ ** 2)[..., None, None] * tt + (b_ ** 2)[..., None, None] * (eye - tt)
    else:
        W = tt / (a_ ** 2)[..., None, None] + (eye - tt) / (b_ ** 2)[..., None, None]
    undefined = np.all(t == 0, axis=-1)
    corner = np.zeros(P, bool)
    corner[list(sch.corners)] = True
    ident = undefined | corner
    W = np.where(ident[..., None, None], eye, W)
    return W


def mahalanobis_cost(x, z, W, *, per_point: bool = False) -> np.ndarray:
    """Anisotropic cost :math:`Q_2 = \\sum_i (x_i - z_i)^T W_i (x_i - z_i)` (eq. 2).

    Parameters
    ----------
    x : array_like, shape (..., P, 2)
        Predicted points.
    z : array_like, shape (..., P, 2)
        Target points.
    W : array_like, shape (..., P, 2, 2)
        Weight matrices (e.g. :func:`weight_matrices` of ``z``); broadcast
        against the batch dimensions of ``x`` and ``z``.
    per_point : bool
        Return the per-point terms instead of their sum.

    Returns
    -------
    ndarray, shape (...) or (..., P)

    Examples
    --------
    >>> import numpy as np
    >>> W = np.array([np.eye(2), np.diag([0.04, 1 / 9])])
    >>> float(mahalanobis_cost([[1.0, 0.0], [5.0, 3.0]], np.zeros((2, 2)), W))
    3.0
    """
    xa = check_array(x, "x", shape=(None, 2))
    za = check_array(z, "z", shape=(None, 2))
    Wa = check_array(W, "W", shape=(None, 2, 2))
    if xa.ndim < 2 or za.ndim < 2:
        raise ValueError(f"x and z must have shape (..., P, 2), got {xa.shape} and {za.shape}")
    if xa.shape[-2] != za.shape[-2] or Wa.shape[-3] != xa.shape[-2]:
        raise ValueError(f"x, z and W must have the same number of points, got x {xa.shape}, z {za.shape}, "
                         f"W {Wa.shape}")
    try:
        d = xa - za
        q = np.einsum("...pi,...pij,...pj->...p", d, Wa, d)
    except ValueError as exc:
        raise ValueError(f"x {xa.shape}, z {za.shape} and W {Wa.shape} do not broadcast: {exc}") from None
    return q if per_point else q.sum(-1)

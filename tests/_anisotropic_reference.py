"""Rayhan, Galata & Cootes (BMVC 2020) eq. 3-6 transcribed point by point: the reference of the
anisotropic weights for the NumPy core (``tests/test_anisotropic_reference.py``) and the torch
losses (``tests/test_losses.py``, ``tests/test_losses_reference.py``).

Written from the paper and the module notes only, with plain Python loops over points: the
tangent of eq. 4 / 5 from the first curve that lists a point, the covariance
``S = R diag(a^2, b^2) R^T`` in the frame ``R = [t, n]`` (eq. 3), the weights ``W = S^{-1}``
(eq. 6) by a matrix inverse, unit matrices at corners and where the tangent is undefined, and the
curvature-adaptive ``(a^s, b^s)``, ``s = 1 - theta / pi``, with the turning angle from ``arccos``
of the normalised edge vectors.  None of the library's helpers is used.
"""
import math

import numpy as np


def ref_owner(scheme):
    """point -> (curve indices, position on the curve, closed) of the first curve listing it."""
    own = {}
    for c in scheme.curves:
        idx = [int(i) for i in c.indices]
        for k, i in enumerate(idx):
            if i not in own:
                own[i] = (idx, k, bool(c.closed))
    return own


def _norm(v):
    return math.hypot(v[0], v[1])


def ref_tangent(z, scheme, i):
    own = ref_owner(scheme).get(i)
    if own is None or len(own[0]) < 2:
        return np.zeros(2)
    idx, k, closed = own
    n = len(idx)
    if closed:
        prv, nxt = idx[(k - 1) % n], idx[(k + 1) % n]
    else:   # eq. 5: the end uses itself as the missing neighbour
        prv, nxt = idx[max(k - 1, 0)], idx[min(k + 1, n - 1)]
    d = z[nxt] - z[prv]
    if np.isnan(d).any():
        return np.full(2, np.nan)
    if _norm(d) == 0:   # coincident neighbours: one-sided difference to the next, else the previous point
        fwd, bwd = z[nxt] - z[i], z[i] - z[prv]
        d = fwd if _norm(fwd) > 0 else bwd
    if _norm(d) == 0:
        return np.zeros(2)
    return d / _norm(d)


def _angle(u, v):
    nu, nv = _norm(u), _norm(v)
    if nu == 0 or nv == 0:
        return 0.0
    c = (u[0] * v[0] + u[1] * v[1]) / (nu * nv)
    return math.acos(min(1.0, max(-1.0, c)))


def ref_turning_angle(z, scheme, i):
    own = ref_owner(scheme).get(i)
    if own is None or len(own[0]) < 3:
        return 0.0
    idx, k, closed = own
    n = len(idx)
    if closed:
        p, m, q = idx[(k - 1) % n], idx[k], idx[(k + 1) % n]
    else:   # ends take the angle of their inner neighbour
        kk = min(max(k, 1), n - 2)
        p, m, q = idx[kk - 1], idx[kk], idx[kk + 1]
    if np.isnan(z[[p, m, q]]).any():
        return np.nan
    return _angle(z[m] - z[p], z[q] - z[m])


def ref_matrices(z, scheme, a=5.0, b=3.0, adaptive=False, covariance=False):
    P = scheme.n_points
    a = np.broadcast_to(np.asarray(a, float), (P,))
    b = np.broadcast_to(np.asarray(b, float), (P,))
    out = np.empty((P, 2, 2))
    for i in range(P):
        t = ref_tangent(z, scheme, i)
        if i in set(int(c) for c in scheme.corners) or (t[0] == 0 and t[1] == 0):
            out[i] = np.eye(2)       # unit covariance (and weight) at corners / no tangent
            continue
        if np.isnan(t).any():
            out[i] = np.nan
            continue
        ai, bi = a[i], b[i]
        if adaptive:
            s = 1.0 - ref_turning_angle(z, scheme, i) / math.pi
            ai, bi = ai ** s, bi ** s
        R = np.array([[t[0], -t[1]], [t[1], t[0]]])          # columns: tangent, normal
        S = R @ np.diag([ai * ai, bi * bi]) @ R.T            # eq. 3
        out[i] = S if covariance else np.linalg.inv(S)       # eq. 6: W = S^-1
    return out

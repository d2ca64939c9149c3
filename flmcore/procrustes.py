"""Procrustes alignment of 2-D landmark shapes: pairwise similarity fits and GPA.

:func:`align` finds, for every pair of shapes, the similarity transform
(scale ``s``, rotation ``R``, translation ``t``) that minimises the weighted
least-squares distance

.. math:: E(s, R, t) = \\sum_i w_i \\lVert s R x_i + t - y_i \\rVert^2

in closed form (Umeyama 1991, specialised to 2-D: no SVD is needed).
:func:`generalized_procrustes` aligns a whole batch to its evolving mean
(Gower 1975), all shapes at once in a compiled kernel
(:mod:`flmcore._ext.similarity`, OpenMP over the batch).

Conventions
-----------
A transform maps row-vector points as ``y = s * x @ R.T + t``; a batch of
transforms is a :class:`Similarity` whose fields carry the batch dimensions.
Missing points are NaN: they get weight zero in every fit and in the mean, and
stay NaN in the aligned output.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from ._validate import check_array, check_int, check_nonnegative, check_num_threads, check_shapes

try:  # compiled kernel (built by setup.py); the NumPy path below computes the same numbers
    from ._ext import similarity as _kernel
except ImportError:  # pragma: no cover - exercised only without a build
    _kernel = None

__all__ = ["Similarity", "GPAResult", "align", "apply_similarity", "generalized_procrustes"]


class Similarity(NamedTuple):
    """A (batch of) 2-D similarity transform(s) ``y = s * x @ R.T + t``.

    Attributes
    ----------
    scale : ndarray, shape (...)
        Isotropic scale ``s`` (1 when fitted with ``scale=False``).
    rotation : ndarray, shape (..., 2, 2)
        Orthogonal matrix ``R`` (a rotation, or a reflection when allowed).
    translation : ndarray, shape (..., 2)
        Translation ``t`` in the target's units.

    Examples
    --------
    >>> import numpy as np
    >>> T = Similarity(np.float64(2.0), np.eye(2), np.array([1.0, 0.0]))
    >>> T.apply(np.array([[1.0, 1.0]]))
    array([[3., 2.]])
    >>> T.inverse().apply(T.apply(np.array([[1.0, 1.0]])))
    array([[1., 1.]])
    """

    scale: np.ndarray
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, shapes) -> np.ndarray:
        """Apply to ``shapes`` ``(..., P, 2)``; see :func:`apply_similarity`."""
        return apply_similarity(shapes, self)

    def inverse(self) -> "Similarity":
        """The inverse transform ``x = (1/s) (y - t) @ R``."""
        s = np.asarray(self.scale, dtype=np.float64)
        R = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64)
        Rt = np.swapaxes(R, -1, -2)
        inv_s = 1.0 / s
        inv_t = -inv_s[..., None] * np.einsum("...ij,...j->...i", Rt, t)
        return Similarity(inv_s, Rt, inv_t)

    def matrix(self) -> np.ndarray:
        """Homogeneous matrices ``(..., 3, 3)`` acting on column vectors ``(x, y, 1)``."""
        s = np.asarray(self.scale, dtype=np.float64)
        R = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation, dtype=np.float64)
        out = np.zeros(R.shape[:-2] + (3, 3))
        out[..., :2, :2] = s[..., None, None] * R
        out[..., :2, 2] = t
        out[..., 2, 2] = 1.0
        return out


class GPAResult(NamedTuple):
    """Result of :func:`generalized_procrustes`.

    Attributes
    ----------
    aligned : ndarray, shape (B, P, 2)
        Every shape mapped onto the mean by its own similarity (NaN where the
        input point was missing).
    mean : ndarray, shape (P, 2)
        The Procrustes mean: centred (zero centroid) and, with ``scale=True``,
        of unit Frobenius norm; its orientation is the reference orientation
        (see :func:`generalized_procrustes`).
    transform : Similarity
        Per-shape transforms (fields with leading dimension ``B``) mapping each
        input shape to ``aligned``.
    n_iter : int
        Number of mean updates performed.
    converged : bool
        Whether the relative change of the mean fell below ``tol``.
    mask : ndarray of bool, shape (B, P)
        ``True`` where the input point was present.
    """

    aligned: np.ndarray
    mean: np.ndarray
    transform: Similarity
    n_iter: int
    converged: bool
    mask: np.ndarray


# --------------------------------------------------------------------------- kernels
def _fit_numpy(src, dst, w, scale, reflection, do_apply=True):
    """Vectorised NumPy twin of ``_ext.similarity.similarity_fit`` (same formulas)."""
    B = src.shape[0]
    dst = np.broadcast_to(dst, src.shape)
    w = np.broadcast_to(w, src.shape[:2])
    pos = w > 0
    nvalid = pos.sum(1)
    sw = w.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx = np.einsum("bp,bpk->bk", w, src) / sw[:, None]
        my = np.einsum("bp,bpk->bk", w, dst) / sw[:, None]
        ax = src - mx[:, None]
        ay = dst - my[:, None]
        sxx = np.einsum("bp,bpk,bpk->b", w, ax, ax)
        syy = np.einsum("bp,bpk,bpk->b", w, ay, ay)
        rawx = np.einsum("bp,bpk,bpk->b", w, src, src)
        rawy = np.einsum("bp,bpk,bpk->b", w, dst, dst)
        M = np.einsum("bp,bpi,bpj->bij", w, ay, ax)
        p = M[:, 0, 0] + M[:, 1, 1]
        q = M[:, 1, 0] - M[:, 0, 1]
        mp = np.hypot(p, q)
        pr = M[:, 0, 0] - M[:, 1, 1]
        qr = M[:, 0, 1] + M[:, 1, 0]
        mr = np.hypot(pr, qr)
        use_refl = (mr > mp) if reflection else np.zeros(B, bool)
        safe_mp = np.where(mp > 0, mp, 1.0)
        c = np.where(mp > 0, p / safe_mp, 1.0)
        sn = np.where(mp > 0, q / safe_mp, 0.0)
        R = np.stack([np.stack([c, -sn], -1), np.stack([sn, c], -1)], -2)
        safe_mr = np.where(mr > 0, mr, 1.0)
        Rr = np.stack([np.stack([pr / safe_mr, qr / safe_mr], -1), np.stack([qr / safe_mr, -pr / safe_mr], -1)], -2)
        R = np.where(use_refl[:, None, None], Rr, R)
        s = np.where(use_refl, mr, mp) / sxx
    status = np.zeros(B, np.int8)
    status[~(syy > 1e-24 * rawy) | (syy <= 0)] = 3
    status[~(sxx > 1e-24 * rawx) | (sxx <= 0)] = 2
    status[nvalid < 2] = 1
    if not scale:
        s = np.ones(B)
    bad = status != 0
    s = np.where(bad, 1.0, s)
    R = np.where(bad[:, None, None], np.eye(2), R)
    t = my - s[:, None] * np.einsum("bij,bj->bi", R, mx)
    t = np.where(bad[:, None], 0.0, t)
    params = np.concatenate([s[:, None], R.reshape(B, 4), t], axis=1)
    aligned = s[:, None, None] * np.einsum("bij,bpj->bpi", R, src) + t[:, None, :] if do_apply else None
    return params, aligned, status


def _fit(src, dst, w, scale, reflection, num_threads, do_apply=True):
    """Dispatch to the compiled kernel (or the NumPy twin). Arrays are C-contiguous float64."""
    if _kernel is None:
        return _fit_numpy(src, dst, w, scale, reflection, do_apply)
    B, P = src.shape[:2]
    params = np.empty((B, 7))
    aligned = np.empty((B, P, 2)) if do_apply else np.empty((0, 0, 2))
    status = np.empty(B, np.int8)
    _kernel.similarity_fit(src, dst, w, bool(scale), bool(reflection), params, aligned, status, int(num_threads))
    return params, (aligned if do_apply else None), status


def _fit_mean(src, dst, fit_w, mean_w, scale, reflection, num_threads, params):
    """One GPA step: fit every shape to ``dst`` (weights ``fit_w``) and average the aligned
    shapes per point (weights ``mean_w``). Returns (status, mean)."""
    if _kernel is None or fit_w is not mean_w:
        # the fused kernel uses one weight array; the first step with an incomplete reference does not
        prm, aligned, status = _fit(src, dst, fit_w, scale, reflection, num_threads)
        params[:] = prm
        return status, _point_mean(aligned, mean_w, num_threads)
    status = np.empty(src.shape[0], np.int8)
    out = np.empty((src.shape[1], 2))
    _kernel.similarity_fit_mean(src, dst, fit_w, bool(scale), bool(reflection), params, status, out,
                                int(num_threads))
    return status, out


def _point_mean(shapes, w, num_threads):
    """Per-point weighted mean over the batch (``w`` (B, P) or (1, P)), NaN where a point has no weight."""
    if _kernel is None:
        w = np.broadcast_to(w, shapes.shape[:2])
        sw = w.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.einsum("bp,bpk->pk", w, shapes) / sw[:, None]
    out = np.empty((shapes.shape[1], 2))
    _kernel.weighted_point_mean(shapes, np.ascontiguousarray(w), out, int(num_threads))
    return out


def _moments(shapes, w, num_threads):
    """Per shape: total weight, weighted centroid (B, 2), weighted centred sum of squares."""
    if _kernel is None:
        sw = w.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            cen = np.einsum("bp,bpk->bk", w, shapes) / sw[:, None]
        cen = np.where(sw[:, None] > 0, cen, 0.0)
        d = shapes - cen[:, None]
        return sw, cen, np.einsum("bp,bpk,bpk->b", w, d, d)
    out = np.empty((shapes.shape[0], 4))
    _kernel.shape_moments(shapes, np.ascontiguousarray(w), out, int(num_threads))
    return out[:, 0], out[:, 1:3], out[:, 3]


def _params_to_similarity(params) -> Similarity:
    return Similarity(params[..., 0].copy(), params[..., 1:5].reshape(params.shape[:-1] + (2, 2)).copy(),
                      params[..., 5:7].copy())


def _raise_status(status, src_name, dst_name, offset=0):
    for code, msg in ((1, "fewer than 2 points with non-zero weight (NaN points count as missing)"),
                      (2, f"{src_name} is degenerate (all weighted points equal)"),
                      (3, f"{dst_name} is degenerate (all weighted points equal)")):
        idx = np.flatnonzero(status == code)
        if idx.size:
            shown = (idx[:8] + offset).tolist()
            more = f" and {idx.size - 8} more" if idx.size > 8 else ""
            raise ValueError(f"cannot fit a similarity for shape index {shown}{more}: {msg}")


def _check_magnitude(src, dst, status, params):
    """Coordinates so large that their squares overflow float64 would read as 'degenerate' or give
    inf/NaN parameters: say so instead."""
    big = max(float(np.abs(src).max(initial=0.0)), float(np.abs(dst).max(initial=0.0)))
    if (big > 1e150 and (status != 0).any()) or not np.isfinite(params[status == 0]).all():
        raise ValueError(f"src and dst coordinates must be below 1e150 in magnitude (their squares overflow "
                         f"float64), got a largest |coordinate| of {big:g}")


def _present(x):
    """``(..., P)`` mask of points with both coordinates finite (faster than ``isfinite(x).all(-1)``)."""
    return np.isfinite(x[..., 0]) & np.isfinite(x[..., 1])


def _check_weights(weights, B, P, name="weights"):
    w = check_array(weights, name, ndim=(1, 2))
    if w.shape[-1] != P or (w.ndim == 2 and w.shape[0] not in (1, B)):
        raise ValueError(f"{name} must have shape (P,) or (B, P) with P={P}, B={B}; got shape {w.shape}")
    if (w < 0).any():
        raise ValueError(f"{name} must be >= 0, got minimum {w.min()}")
    top = w.max()
    # only ratios matter (weighted least squares, weighted means): scale so that the largest is 1,
    # then weighted sums of squares cannot overflow however large the weights
    return w / top if top > 0 else w


# --------------------------------------------------------------------------- public API
def apply_similarity(shapes, transform: Similarity) -> np.ndarray:
    """Apply similarity transform(s) to shapes: ``y = s * x @ R.T + t``.

    Parameters
    ----------
    shapes : array_like, shape (..., P, 2)
        Points (NaN allowed; it propagates).
    transform : Similarity
        Fields with batch dimensions broadcastable against ``shapes.shape[:-2]``.

    Returns
    -------
    ndarray, shape (..., P, 2)

    Examples
    --------
    >>> import numpy as np
    >>> R90 = np.array([[0.0, -1.0], [1.0, 0.0]])
    >>> apply_similarity([[1.0, 0.0]], Similarity(np.float64(1.0), R90, np.zeros(2)))
    array([[0., 1.]])
    """
    x = check_array(shapes, "shapes", allow_nan=True, shape=(None, 2))
    if not isinstance(transform, Similarity):
        raise TypeError(f"transform must be a Similarity, got {type(transform).__name__}")
    s = np.asarray(transform.scale, dtype=np.float64)
    R = np.asarray(transform.rotation, dtype=np.float64)
    t = np.asarray(transform.translation, dtype=np.float64)
    if R.shape[-2:] != (2, 2) or t.shape[-1:] != (2,) or R.shape[:-2] != s.shape or t.shape[:-1] != s.shape:
        raise ValueError(f"transform fields must have shapes (...), (..., 2, 2), (..., 2); got {s.shape}, "
                         f"{R.shape}, {t.shape}")
    return s[..., None, None] * np.einsum("...ij,...pj->...pi", R, x) + t[..., None, :]


def align(src, dst, *, scale: bool = True, reflection: bool = False, weights=None,
          num_threads: Optional[int] = None) -> Tuple[np.ndarray, Similarity]:
    """Align ``src`` onto ``dst`` by the least-squares 2-D similarity (closed form).

    Minimises :math:`\\sum_i w_i \\lVert s R x_i + t - y_i \\rVert^2` over the
    scale ``s`` (fixed to 1 with ``scale=False``), the orthogonal ``R`` (a proper
    rotation unless ``reflection=True``) and the translation ``t`` (Umeyama's
    solution; in 2-D the optimum rotation is read directly from the 2x2
    cross-covariance without an SVD).

    Parameters
    ----------
    src, dst : array_like, shape (P, 2) or (B, P, 2)
        Source and target shapes (broadcast over the batch; a single ``dst``
        serves every ``src``). NaN marks a missing point: it gets weight 0.
    scale : bool
        Fit the isotropic scale.
    reflection : bool
        Allow improper orthogonal ``R`` (det = -1) when it fits better.
    weights : array_like, shape (P,) or (B, P), optional
        Non-negative per-point weights.
    num_threads : int, optional
        OpenMP threads of the kernel (``None``: all cores). Results do not
        depend on it.

    Returns
    -------
    aligned : ndarray, shape like the broadcast batch, (P, 2) or (B, P, 2)
        ``s * src @ R.T + t`` (NaN where ``src`` is NaN).
    transform : Similarity
        Scalars / ``(B,)`` fields.

    Raises
    ------
    ValueError
        Shapes with fewer than 2 weighted points, or whose weighted points all
        coincide (in ``src`` or ``dst``).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> y = 3.0 * x @ np.array([[0.0, -1.0], [1.0, 0.0]]).T + 5.0
    >>> aligned, T = align(x, y)
    >>> bool(np.allclose(aligned, y)), round(float(T.scale), 12)
    (True, 3.0)
    """
    src = check_shapes(src, "src", allow_nan=True, min_points=2)
    dst = check_shapes(dst, "dst", allow_nan=True, min_points=2)
    if src.shape[-2] != dst.shape[-2]:
        raise ValueError(f"src and dst must have the same number of points, got {src.shape[-2]} and {dst.shape[-2]}")
    single = src.ndim == 2 and dst.ndim == 2
    P = src.shape[-2]
    s3 = src.reshape(-1, P, 2)
    d3 = dst.reshape(-1, P, 2)
    if s3.shape[0] != d3.shape[0] and 1 not in (s3.shape[0], d3.shape[0]):
        raise ValueError(f"src and dst batch sizes must match or be 1, got {s3.shape[0]} and {d3.shape[0]}")
    B = max(s3.shape[0], d3.shape[0])
    if s3.shape[0] != B:
        s3 = np.broadcast_to(s3, (B, P, 2))
    sok = _present(s3)
    dok = _present(d3)
    w = (sok & dok).astype(np.float64) if d3.shape[0] == B else (sok & dok[0]).astype(np.float64)
    if weights is not None:
        w = w * _check_weights(weights, B, P)
    s0 = np.ascontiguousarray(np.where(sok[..., None], s3, 0.0))
    d0 = np.ascontiguousarray(np.where(dok[..., None], d3, 0.0))
    nt = check_num_threads(num_threads)
    params, aligned, status = _fit(s0, d0, np.ascontiguousarray(w), scale, reflection, nt)
    _check_magnitude(s0, d0, status, params)
    _raise_status(status, "src", "dst")
    aligned[~sok] = np.nan
    T = _params_to_similarity(params)
    if single:
        return aligned[0], Similarity(T.scale[0], T.rotation[0], T.translation[0])
    return aligned, T


def _normalise_mean(mean, ref, ref_w, scale, num_threads):
    """Centre, (unit-norm,) and rotate ``mean`` onto the reference orientation."""
    m = mean - mean.mean(0)
    if scale:
        m = m / np.linalg.norm(m)
    params, _, status = _fit(np.ascontiguousarray(m[None]), np.ascontiguousarray(ref[None]),
                             np.ascontiguousarray(ref_w[None]), False, False, 1, do_apply=False)
    if status[0] == 0:
        R = params[0, 1:5].reshape(2, 2)
        m = m @ R.T
    return m


def generalized_procrustes(shapes, *, max_iter: int = 100, tol: float = 1e-10, scale: bool = True,
                           reflection: bool = False, weights=None,
                           num_threads: Optional[int] = None) -> GPAResult:
    """Generalised Procrustes analysis of a batch of 2-D shapes (vectorised).

    Iterates (Gower 1975): align every shape to the current mean by its
    least-squares similarity (:func:`align`'s closed form, all ``B`` shapes in
    one compiled call), recompute the mean as the per-point weighted average of
    the aligned shapes (missing points excluded), normalise it, stop when the
    relative change of the mean is below ``tol``. A last alignment to the final
    mean makes ``aligned``, ``transform`` and ``mean`` consistent.

    Mean normalisation: centroid at the origin; unit Frobenius norm when
    ``scale=True`` (with ``scale=False`` it keeps the average size in input
    units); **orientation convention**: the mean is rotated (proper rotation,
    no scaling) to best fit the *reference*, which is the per-point average of
    the input shapes each centred (and scaled to unit norm when ``scale=True``)
    **in their own image axes** — so for roughly upright faces the mean is
    upright in image coordinates (x right, y down), independent of the order
    of the shapes. If that average nearly cancels (its norm is below 5% of the
    average shape norm, e.g. uniformly rotated shapes) the reference is the
    first shape with the most present points.

    Parameters
    ----------
    shapes : array_like, shape (B, P, 2)
        Shapes; NaN marks missing points (weight 0 in every fit and in the mean).
    max_iter : int
        Maximum number of mean updates.
    tol : float
        Stop when ``||mean_new - mean_old||_F / ||mean_new||_F < tol``.
    scale : bool
        Include scaling in the per-shape fits (full GPA) and normalise the mean
        to unit norm.
    reflection : bool
        Allow reflections in the per-shape fits.
    weights : array_like, shape (P,) or (B, P), optional
        Non-negative per-point weights in the fits and the mean.
    num_threads : int, optional
        OpenMP threads (``None``: all cores); results do not depend on it.

    Returns
    -------
    GPAResult

    Raises
    ------
    ValueError
        A shape with fewer than 2 present points, a degenerate shape (all
        points equal), or a point index missing in every shape.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(10, 2))
    >>> th = rng.uniform(-0.3, 0.3, 5)
    >>> R = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], -1).reshape(5, 2, 2)
    >>> shapes = 2.0 * np.einsum("bij,pj->bpi", R, base) + 7.0
    >>> res = generalized_procrustes(shapes)
    >>> res.converged, bool(np.allclose(res.aligned, res.mean, atol=1e-8))
    (True, True)
    """
    X = check_shapes(shapes, "shapes", batch=True, allow_nan=True, min_points=2)
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    tol = check_nonnegative(tol, "tol", finite=True)
    nt = check_num_threads(num_threads)
    B, P = X.shape[:2]
    mask = _present(X)
    complete = bool(mask.all())
    X0 = X if complete else np.ascontiguousarray(np.where(mask[..., None], X, 0.0))
    if weights is None and complete:
        w = np.ones((1, P))                   # shared weights: less memory traffic in the kernels
    else:
        w = mask.astype(np.float64)
        if weights is not None:
            w = w * _check_weights(weights, B, P)
        w = np.ascontiguousarray(np.broadcast_to(w, (B, P)))
    wb = np.broadcast_to(w, (B, P))
    if not complete or weights is not None:
        nvalid = (wb > 0).sum(1)
        few = np.flatnonzero(nvalid < 2)
        if few.size:
            raise ValueError(f"shapes {few[:8].tolist()} have fewer than 2 present (non-NaN, non-zero weight) points")
        never = np.flatnonzero(~(wb > 0).any(0))
        if never.size:
            raise ValueError(f"point index {never.tolist()} is missing (NaN or zero weight) in every shape; "
                             "drop it before the Procrustes analysis")
    else:
        nvalid = np.full(B, P)

    # reference orientation: per-point average of the individually centred (and unit-norm) shapes
    sw, cen, ss = _moments(X0, np.ascontiguousarray(wb), nt)
    norms = np.sqrt(ss / sw)
    bad = np.flatnonzero(~(norms > 1e-12 * (np.abs(cen).max(1) + 1.0)))
    if bad.size:
        raise ValueError(f"shapes {bad[:8].tolist()} are degenerate (all present points equal)")
    inv = 1.0 / norms if scale else np.ones(B)
    wn = w * inv[:, None] if w.shape[0] == B else np.ascontiguousarray(np.outer(inv, w[0]))
    s_wn = wn.sum(0)
    s_w = wb.sum(0)
    ref = (_point_mean(X0, wn, nt) * s_wn[:, None] - wn.T @ cen) / s_w[:, None]
    ref = ref - ref.mean(0)
    typical = float(np.mean(np.sqrt(ss) * inv))
    ref_w = np.ones(P)
    if not np.linalg.norm(ref) > 0.05 * typical:
        k = int(np.argmax(nvalid))
        ref_w = wb[k].copy()
        ref = np.where(ref_w[:, None] > 0, (X0[k] - cen[k]) * inv[k], 0.0)
    if scale:
        ref = ref / np.sqrt(np.sum(ref_w[:, None] * ref * ref))
    ref = np.ascontiguousarray(ref)

    mean = ref
    mean_w = ref_w
    params = np.empty((B, 7))
    converged = False
    n_iter = 0
    for n_iter in range(1, max_iter + 1):
        fit_w = w if mean_w.all() else np.ascontiguousarray(w * mean_w[None])
        status, new = _fit_mean(X0, np.ascontiguousarray(mean[None]), fit_w, w, scale, reflection, nt, params)
        if n_iter == 1:
            _raise_status(status, "shapes", "the reference mean")
        new = _normalise_mean(new, ref, ref_w, scale, nt)
        delta = np.linalg.norm(new - mean) / np.linalg.norm(new)
        full = bool(mean_w.all())
        mean = np.ascontiguousarray(new)
        mean_w = np.ones(P)
        if full and delta < tol:
            converged = True
            break
    params, aligned, status = _fit(X0, np.ascontiguousarray(mean[None]), w, scale, reflection, nt)
    _raise_status(status, "shapes", "the mean")
    if not complete:
        aligned[~mask] = np.nan
    return GPAResult(aligned, mean, _params_to_similarity(params), n_iter, converged, mask)

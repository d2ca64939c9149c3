"""Sparse shape regression (DRN-SSR, Zhang, Kan, Shan & Chen, ICCV 2015, eq. 7-14).

A landmark that a dataset does not annotate is predicted as a sparse linear
combination of the landmarks it does annotate: for every target landmark ``r``

.. math:: h_r = \\arg\\min_h \\sum_I \\| h S_i(I) - y_r(I) \\|^2
          \\quad \\text{s.t.} \\quad \\|h\\|_1 \\le \\tau          (eq. 14)

where the x and y coordinates of every face are the samples and the ``p_i``
source landmarks the features.  The rows ``h_r`` form ``H_ij`` (eq. 7) and the
stacked ``H_i = [H_i1; ...; E; ...; H_in]`` maps a dataset's landmarks onto the
union of all schemes (eq. 8).

Contents
--------
:func:`lars_lasso`
    exact lasso solutions at an L1 budget ``tau`` for many targets sharing one
    design (Gram matrix computed once, per-target LARS-lasso paths in a compiled
    Numba kernel, parallel over targets, identical results for any thread count).
:func:`lars_lasso_path`
    the same paths with every knot recorded (:class:`LassoPath`).
:class:`SparseShapeRegression`, :class:`SparseShapeRegressionCV`
    scikit-learn style estimators mapping shapes of one scheme to another.
:class:`SchemeUnion`
    the union landmark set of several schemes and the maps ``H_i`` of eq. (8).

Nothing here imports torch.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import metadata_routing
from sklearn.exceptions import ConvergenceWarning

from ._validate import (
    as_array,
    check_array,
    check_in,
    check_int,
    check_nonnegative,
    check_num_threads,
    check_shapes,
)

__all__ = [
    "lars_lasso",
    "lars_lasso_path",
    "lars_lasso_gram",
    "LassoPath",
    "SparseShapeRegression",
    "SparseShapeRegressionCV",
    "SchemeUnion",
    "shapes_to_design",
    "normalised_mean_error",
]

# relative tolerance on the maximal correlation below which a path has ended
_C_TOL = 1e-12
_STATUS = {0: "tau", 1: "end", 2: "max_iter"}


# --------------------------------------------------------------------------- kernel wrappers
def _omp_runtimes():
    """Loaded OpenMP runtimes as ``(omp_get_max_threads, omp_set_num_threads)`` ctypes pairs.

    Numba's 'omp' threading layer calls ``omp_set_num_threads(n)`` on the
    launching thread at every parallel launch.  That per-thread setting belongs
    to whichever OpenMP runtime the symbol binds to (often one shared with
    another framework, whose intra-op thread count then silently changes).
    Which one depends on the library load order, so every OpenMP runtime mapped
    in the process (``/proc/self/maps`` on Linux; elsewhere the global scope and
    numba's own dependency) is returned, deduplicated, for
    :func:`_run_threads` to save and restore.
    """
    import ctypes
    import os

    paths = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                name = line.rsplit(None, 1)[-1] if line.count(" ") >= 5 else ""
                base = os.path.basename(name)
                if base.startswith(("libgomp", "libomp", "libiomp")) and name not in paths:
                    paths.append(name)
    except OSError:
        pass
    paths.append(None)  # the global scope
    try:
        from numba.np.ufunc import omppool

        paths.append(omppool.__file__)  # dlsym also searches its OpenMP dependency
    except ImportError:
        pass
    out, seen = [], set()
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
            get, set_ = lib.omp_get_max_threads, lib.omp_set_num_threads
        except (OSError, AttributeError):
            continue
        addr = ctypes.cast(get, ctypes.c_void_p).value
        if addr in seen:
            continue
        seen.add(addr)
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        out.append((get, set_))
    return out


def _run_threads(num_threads, name, *args):
    """Run kernel ``flmcore._ext.lars.<name>(*args)`` on ``num_threads`` numba threads.

    Numba's 'omp' threading layer sets the launching thread's OpenMP thread
    count when it starts its pool (on the first import/use of a parallel
    kernel) and at every parallel launch; that count is shared with other
    libraries using the same OpenMP runtime (e.g. another framework's intra-op
    thread count).  The import and the call therefore run between a save and a
    restore of every loaded OpenMP runtime's setting (and of numba's own count).
    """
    omp = [(get(), set_) for get, set_ in _omp_runtimes()]
    try:
        import numba

        from ._ext import lars as _k  # may load cached parallel kernels and start numba's pool

        from ._ext import note_numba_compile

        note_numba_compile(getattr(_k, name), "LARS")  # says so once when it compiles (cache=True)
        n = min(check_num_threads(num_threads), numba.config.NUMBA_NUM_THREADS)
        old = numba.get_num_threads()
        numba.set_num_threads(n)
        try:
            return getattr(_k, name)(*args)
        finally:
            numba.set_num_threads(old)
    finally:
        for before, set_ in omp:
            set_(before)


def _check_tau(tau, n_targets: int) -> np.ndarray:
    if isinstance(tau, (list, tuple)):
        tau = as_array(tau, "tau")
    if np.ndim(tau) == 0:
        t = check_nonnegative(tau, "tau")
        return np.full(n_targets, t)
    arr = as_array(tau, "tau", dtype=np.float64)
    if arr.shape != (n_targets,):
        raise ValueError(f"tau must be a number or have shape ({n_targets},) (one per target), got shape {arr.shape}")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError(f"tau must be >= 0 (inf allowed), got min {np.nanmin(arr)} / NaN present: {np.isnan(arr).any()}")
    return arr


def _check_xy(X, Y) -> Tuple[np.ndarray, np.ndarray, bool]:
    X = check_array(X, "X", ndim=2)
    Y = check_array(Y, "Y", ndim=(1, 2))
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows (samples), got X {X.shape} and Y {Y.shape}")
    one = Y.ndim == 1
    return X, (Y[:, None] if one else Y), one


def _check_gram(G, XtY) -> Tuple[np.ndarray, np.ndarray, bool]:
    G = check_array(G, "G", ndim=2)
    XtY = check_array(XtY, "XtY", ndim=(1, 2))
    if G.shape[0] != G.shape[1]:
        raise ValueError(f"G must be a square Gram matrix (n_features, n_features), got shape {G.shape}")
    if XtY.shape[0] != G.shape[0]:
        raise ValueError(f"XtY must have {G.shape[0]} rows (n_features of G), got shape {XtY.shape}")
    one = XtY.ndim == 1
    return G, (XtY[:, None] if one else np.ascontiguousarray(XtY)), one


def _solve(G, XtY, tau, positive, max_iter, num_threads, record=False):
    p, T = XtY.shape
    # the Numba kernels run without bounds checks: every caller's shapes are checked here, once
    if np.shape(G) != (p, p) or np.shape(tau) != (T,):
        raise ValueError(f"lars_lasso: G must have shape ({p}, {p}) and tau one value per target ({T},); "
                         f"got G {np.shape(G)} and tau {np.shape(tau)}")
    coef = np.zeros((T, p))
    status = np.zeros(T, np.int64)
    n_steps = np.zeros(T, np.int64)
    if not record:
        _run_threads(num_threads, "lars_lasso_batch", G, XtY, tau, bool(positive), int(max_iter), _C_TOL,
                     coef, status, n_steps)
        rec = None
    else:
        K = int(max_iter) + 2
        rc = np.zeros((T, K, p))
        rC = np.zeros((T, K))
        rl = np.zeros((T, K))
        ra = np.zeros((T, K, p), np.int8)
        nk = np.zeros(T, np.int64)
        _run_threads(num_threads, "lars_lasso_path_batch", G, XtY, tau, bool(positive), int(max_iter), _C_TOL,
                     coef, status, n_steps, rc, rC, rl, ra, nk)
        rec = (rc, rC, rl, ra, nk)
    if (status == 2).any():
        bad = np.flatnonzero(status == 2)
        warnings.warn(f"lars_lasso: {bad.size} target(s) (first {bad[:5].tolist()}) stopped after max_iter="
                      f"{max_iter} steps before reaching tau or the end of the path; increase max_iter",
                      ConvergenceWarning, stacklevel=3)
    return coef, status, n_steps, rec


def lars_lasso_gram(G, XtY, tau, *, positive: bool = False, max_iter: int = 500,
                    num_threads: Optional[int] = None) -> np.ndarray:
    """Lasso at L1 norm ``tau`` from sufficient statistics ``G = X^T X`` and ``XtY = X^T Y``.

    Same solution as :func:`lars_lasso` (which computes ``G`` and ``XtY`` and calls this).
    Useful when the statistics are updated cheaply, e.g. ``G_train = G_all - G_fold``
    in cross-validation.

    Parameters
    ----------
    G : array_like, shape (n_features, n_features)
        Gram matrix (symmetric positive semi-definite).
    XtY : array_like, shape (n_features,) or (n_features, n_targets)
        Cross products of the features with each target.
    tau : float or array_like of shape (n_targets,)
        L1 budget(s), ``>= 0``; ``inf`` gives the end of the path.
    positive : bool
        Constrain the coefficients to be ``>= 0``.
    max_iter : int
        Maximum number of LARS steps per target.
    num_threads : int, optional
        Threads for the per-target loop (``None``: all cores); results do not depend on it.

    Returns
    -------
    coef : ndarray, shape (n_targets, n_features) or (n_features,)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 4)); y = X @ [1.0, -2.0, 0.0, 0.0]
    >>> np.round(lars_lasso_gram(X.T @ X, X.T @ y, np.inf), 6)
    array([ 1., -2.,  0.,  0.])
    """
    G, XtY, one = _check_gram(G, XtY)
    tau = _check_tau(tau, XtY.shape[1])
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    coef = _solve(G, XtY, tau, positive, max_iter, num_threads)[0]
    return coef[0] if one else coef


def lars_lasso(X, Y, tau, *, positive: bool = False, max_iter: int = 500,
               num_threads: Optional[int] = None) -> np.ndarray:
    """Exact lasso solutions at L1 norm ``tau`` for many targets sharing one design (DRN-SSR eq. 14).

    For every column ``y`` of ``Y`` solves

    .. math:: \\min_h \\|X h - y\\|_2^2 \\quad \\text{s.t.} \\quad \\|h\\|_1 \\le \\tau

    by following the LARS-lasso homotopy path (Efron et al. 2004, with the lasso
    modification: a variable whose coefficient reaches zero leaves the active
    set) and interpolating linearly on the segment where ``||h||_1`` crosses
    ``tau`` (the path is piecewise linear and ``||h||_1`` grows linearly on each
    segment, so this is exact).  If ``tau`` exceeds the L1 norm at the end of the
    path the end point is returned: the least-squares solution when
    ``n_samples >= n_features`` and ``X`` has full column rank; otherwise the end of
    the lasso path (the limit ``alpha -> 0``: an interpolating solution with at most
    ``rank(X)`` non-zeros, the minimum-L1-norm one when that is unique).  There is no
    intercept: centre ``X`` and ``Y`` first if you want one.

    ``G = X^T X`` and ``X^T Y`` are computed once (BLAS); the per-target paths run in
    a compiled Numba kernel parallel over targets, with Cholesky updates when a
    variable enters and Givens downdates when one leaves.  Each target is solved
    independently, so results are identical for any ``num_threads``.  A variable
    that is (numerically) in the span of the active ones (duplicated columns, more
    features than samples) is skipped until the active set changes.

    Parameters
    ----------
    X : array_like, shape (n_samples, n_features)
        Design (float64, finite).
    Y : array_like, shape (n_samples,) or (n_samples, n_targets)
        Targets.
    tau : float or array_like of shape (n_targets,)
        L1 budget(s), ``>= 0`` (``0`` gives zeros, ``inf`` the end of the path).
    positive : bool
        Constrain coefficients to be non-negative (the positive lasso).
    max_iter : int
        Maximum number of LARS steps per target (a warning is issued if reached).
    num_threads : int, optional
        Threads for the per-target loop (``None``: all cores).

    Returns
    -------
    coef : ndarray, shape (n_targets, n_features), or (n_features,) for 1-D ``Y``

    Raises
    ------
    ValueError
        NaN/inf entries, mismatched rows, wrong ``ndim`` or negative ``tau``.

    See Also
    --------
    lars_lasso_path : every knot of the paths.
    sklearn.linear_model.lars_path : one target at a time, no L1 stop.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(100, 5))
    >>> Y = X @ np.array([[2.0, 0, 0, -1.0, 0], [0, 0, 1.0, 0, 0]]).T
    >>> H = lars_lasso(X, Y, tau=1.4)
    >>> H.shape, np.round(np.abs(H).sum(axis=1), 12)
    ((2, 5), array([1.4, 1. ]))
    """
    X, Y, one = _check_xy(X, Y)
    tau = _check_tau(tau, Y.shape[1])
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    G = X.T @ X
    XtY = np.ascontiguousarray(X.T @ Y)
    coef = _solve(G, XtY, tau, positive, max_iter, num_threads)[0]
    return coef[0] if one else coef


@dataclass(frozen=True)
class LassoPath:
    """The knots of one target's LARS-lasso path.

    Attributes
    ----------
    alphas : ndarray, shape (n_knots,)
        Regularisation at each knot in scikit-learn's convention
        ``alpha = max_j |x_j^T r| / n_samples`` (objective ``||y - Xh||^2 / (2 n) + alpha ||h||_1``).
    l1_norms : ndarray, shape (n_knots,)
        ``||h||_1`` at each knot (non-decreasing).
    coefs : ndarray, shape (n_knots, n_features)
        Coefficients at each knot (the first is zero).
    active : ndarray of bool, shape (n_knots, n_features)
        Active set after each knot (a variable that just entered has a zero coefficient).
    status : str
        ``"tau"`` (stopped at the requested budget; the last knot is the
        interpolated solution), ``"end"`` (end of the path) or ``"max_iter"``.
    """

    alphas: np.ndarray
    l1_norms: np.ndarray
    coefs: np.ndarray
    active: np.ndarray
    status: str

    @property
    def active_sets(self) -> List[np.ndarray]:
        """Active variable indices after each knot."""
        return [np.flatnonzero(a) for a in self.active]

    def coef_at(self, tau) -> np.ndarray:
        """Interpolate the path at L1 norm(s) ``tau`` (beyond the last knot: the last coefficients).

        Parameters
        ----------
        tau : float or array_like of shape (n,)

        Returns
        -------
        ndarray, shape (n_features,) or (n, n_features)

        Examples
        --------
        >>> import numpy as np
        >>> X = np.random.default_rng(1).normal(size=(30, 3)); y = X @ [1.0, 0.5, 0.0]
        >>> path = lars_lasso_path(X, y)
        >>> np.allclose(path.coef_at(0.7), lars_lasso(X, y, 0.7))
        True
        """
        t = np.asarray(tau, dtype=np.float64)
        if np.isnan(t).any() or (t < 0).any():
            raise ValueError(f"tau must be >= 0, got {tau!r}")
        tt = np.atleast_1d(t)
        l1 = self.l1_norms
        i = np.searchsorted(l1, tt, side="left")
        out = np.empty((tt.size, self.coefs.shape[1]))
        for n, (ti, ii) in enumerate(zip(tt, i)):
            if ii == 0:
                out[n] = self.coefs[0]
            elif ii >= l1.size:
                out[n] = self.coefs[-1]
            else:
                d = l1[ii] - l1[ii - 1]
                f = (ti - l1[ii - 1]) / d if d > 0 else 1.0
                out[n] = self.coefs[ii - 1] + f * (self.coefs[ii] - self.coefs[ii - 1])
        return out[0] if t.ndim == 0 else out


def _paths_from_record(rec, status, n_samples) -> List[LassoPath]:
    rc, rC, rl, ra, nk = rec
    out = []
    for t in range(rc.shape[0]):
        k = int(nk[t])
        out.append(LassoPath(alphas=rC[t, :k] / n_samples, l1_norms=rl[t, :k].copy(), coefs=rc[t, :k].copy(),
                             active=ra[t, :k].astype(bool), status=_STATUS[int(status[t])]))
    return out


def lars_lasso_path(X, Y, tau=np.inf, *, positive: bool = False, max_iter: int = 500,
                    num_threads: Optional[int] = None) -> Union[LassoPath, List[LassoPath]]:
    """Every knot of the LARS-lasso path of each target, up to L1 norm ``tau``.

    Same algorithm and arguments as :func:`lars_lasso`; the last knot of a path that
    stopped on ``tau`` is the interpolated solution at ``||h||_1 = tau``.  Memory is
    ``O(n_targets * max_iter * n_features)``.

    Returns
    -------
    LassoPath or list of LassoPath
        One per target (a single one for 1-D ``Y``).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(40, 6)); y = X[:, 0] - 0.5 * X[:, 3]
    >>> path = lars_lasso_path(X, y)
    >>> path.status, [s.tolist() for s in path.active_sets[1:3]]
    ('end', [[0], [0, 3]])
    """
    X, Y, one = _check_xy(X, Y)
    tau = _check_tau(tau, Y.shape[1])
    max_iter = check_int(max_iter, "max_iter", min_value=1)
    G = X.T @ X
    XtY = np.ascontiguousarray(X.T @ Y)
    _, status, _, rec = _solve(G, XtY, tau, positive, max_iter, num_threads, record=True)
    paths = _paths_from_record(rec, status, X.shape[0])
    return paths[0] if one else paths


# --------------------------------------------------------------------------- shapes <-> design
def shapes_to_design(shapes) -> np.ndarray:
    """Stack the x and y coordinates of every face as samples (DRN-SSR eq. 14).

    Parameters
    ----------
    shapes : array_like, shape (N, P, 2)

    Returns
    -------
    ndarray, shape (2 N, P)
        Row ``2 I`` holds the x coordinates of face ``I``, row ``2 I + 1`` its y coordinates.

    Examples
    --------
    >>> shapes_to_design([[[1.0, 2.0], [3.0, 4.0]]])
    array([[1., 3.],
           [2., 4.]])
    """
    s = check_shapes(shapes, "shapes", batch=True)
    return np.ascontiguousarray(s.transpose(0, 2, 1).reshape(-1, s.shape[1]))


def _design_to_shapes(D: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(D.reshape(-1, 2, D.shape[1]).transpose(0, 2, 1))


def _to_complex(s: np.ndarray) -> np.ndarray:
    return s[..., 0] + 1j * s[..., 1]


def _from_complex(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


def _similarity_to(src: np.ndarray, ref: Optional[np.ndarray]):
    """Per-face normalising similarity ``T(x) = a (x - m)`` (complex ``a``), ``m`` = source centroid.

    ``ref`` None: translation only (``a = 1``); else ``|a|`` scales the centred source to unit
    RMS size and ``arg(a)`` is the rotation that best aligns it to the centred reference
    (exactly equivariant: ``T_{S(x)} = T_x o S^-1``).  The fit does not depend on the
    reference: the loss of eq. (14) is invariant to a rotation of each face.
    """
    z = _to_complex(src)
    m = z.mean(axis=-1)
    zc = z - m[..., None]
    if ref is None:
        a = np.ones_like(m)
    else:
        r = _to_complex(ref)
        r = r - r.mean()
        size = np.sqrt(np.mean(np.abs(zc) ** 2, axis=-1))
        if (size <= 0).any():
            bad = np.flatnonzero(size <= 0)[:5].tolist()
            raise ValueError(f"src contains degenerate shapes (all points equal) at index {bad}")
        b = np.sum(np.conj(zc) * r, axis=-1)
        rot = np.where(np.abs(b) > 0, b / np.where(np.abs(b) > 0, np.abs(b), 1.0), 1.0)
        a = rot / size
    return a, m


def _procrustes_reference(src: np.ndarray, n_iter: int = 20) -> np.ndarray:
    """Generalised Procrustes mean of the source shapes (centred, unit RMS size)."""
    z = _to_complex(src)
    zc = z - z.mean(axis=-1, keepdims=True)
    ref = zc[0] / np.sqrt(np.mean(np.abs(zc[0]) ** 2))
    for _ in range(n_iter):
        a = np.sum(np.conj(zc) * ref, axis=-1) / np.sum(np.abs(zc) ** 2, axis=-1)
        new = (a[:, None] * zc).mean(axis=0)
        new = new / np.sqrt(np.mean(np.abs(new) ** 2))
        # keep the orientation of the first shape (fix the free global rotation)
        rot = np.sum(np.conj(new) * ref)
        new = new * (rot / abs(rot)) if abs(rot) > 0 else new
        if np.max(np.abs(new - ref)) < 1e-12:
            ref = new
            break
        ref = new
    return _from_complex(ref)


def normalised_mean_error(pred, truth, norm="diagonal") -> np.ndarray:
    """Per-face normalised mean error (NME): mean point-to-point distance / normaliser.

    Parameters
    ----------
    pred, truth : array_like, shape (N, P, 2) or (P, 2)
        Predicted and ground-truth shapes (pixels).
    norm : {"diagonal", "bbox"} or tuple (i, j)
        A box normaliser of :func:`flmcore.metrics.normalising_distance` (the one
        definition shared with :mod:`flmcore.metrics`): ``"diagonal"``
        :math:`\\sqrt{w^2 + h^2}` (default) or ``"bbox"`` :math:`\\sqrt{w h}` of
        the ground truth's landmark box; a pair of indices: the distance between
        those two ground-truth points (e.g. the outer eye corners).  (Before
        0.x flmcore called the diagonal ``"bbox"`` here; the name now means
        :math:`\\sqrt{w h}` everywhere.)

    Returns
    -------
    ndarray, shape (N,) or scalar

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> float(normalised_mean_error(t + [0.5, 0.0], t))
    0.1
    """
    p = check_shapes(pred, "pred")
    t = check_shapes(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}")
    err = np.linalg.norm(p - t, axis=-1).mean(axis=-1)
    if isinstance(norm, str):
        from .metrics import normalising_distance

        check_in(norm, "norm", ("diagonal", "bbox"))
        d = normalising_distance(t, norm)
    else:
        i, j = (check_int(k, "norm index", min_value=0, max_value=t.shape[-2] - 1) for k in norm)
        d = np.linalg.norm(t[..., i, :] - t[..., j, :], axis=-1)
    if np.any(d <= 0):
        raise ValueError("norm: a ground-truth normaliser is zero (degenerate shape)")
    return err / d


# --------------------------------------------------------------------------- estimators
class SparseShapeRegression(RegressorMixin, BaseEstimator):
    """Sparse linear map from landmarks of one scheme to those of another (DRN-SSR eq. 7, 14).

    ``fit`` learns ``H`` (``p_j x p_i``) whose row ``r`` is the lasso solution of eq. (14)
    at L1 budget ``tau`` with the x and y coordinates of all training faces as samples.
    Predictions are ``c + H (S - c)`` in the frame chosen by ``normalize``:

    ``"procrustes"`` (default)
        each face (source and target) is expressed in the frame of the similarity that
        normalises its *source* shape: centroid at 0, unit RMS size, rotated onto the
        Procrustes mean source shape; predicting maps back.  Every face weighs the same
        whatever its size, the fitted ``H`` does not change when the training faces are
        moved by arbitrary similarities, and predictions are exactly equivariant to
        similarity transforms of the input.
    ``"centre"``
        translation only (the source centroid).  Equivariant too (a linear ``H`` applied
        to the point index commutes with rotations and scalings), but large faces weigh more.
    ``None``
        the paper's raw ``H S``: not translation-equivariant unless the rows of ``H`` sum to 1.

    Parameters
    ----------
    tau : float
        L1 budget per row (``inf`` = least squares); 1.4 in the paper.
    normalize : {"procrustes", "centre", None}
    positive : bool
        Non-negative weights.
    nme_norm : {"auto", "diagonal", "bbox", "interocular"} or tuple (i, j)
        Normaliser of :meth:`score` (negative mean NME): ``"auto"`` uses the inter-ocular
        distance of ``target_scheme`` when given, else the bounding-box diagonal
        (``"diagonal"``); ``"bbox"`` is :math:`\\sqrt{w h}` of the landmark box, as in
        :func:`flmcore.metrics.normalising_distance`.
    target_scheme : str, optional
        Name of the target scheme (see :mod:`flmcore.schemes`), for ``nme_norm``.
    max_iter : int
        LARS steps per target.
    num_threads : int, optional
        Threads of the LARS kernel (results do not depend on it).

    Attributes
    ----------
    H_ : ndarray, shape (p_j, p_i)
        The sparse regression matrix (in the normalised frame).
    support_ : ndarray of bool, shape (p_j, p_i)
        Source landmarks used by each target landmark.
    reference_ : ndarray, shape (p_i, 2) or None
        Procrustes mean source shape (``normalize="procrustes"``).
    n_steps_ : ndarray, shape (p_j,)
        LARS steps per target landmark.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> src = rng.normal(size=(40, 6, 2)) + 10
    >>> dst = 0.5 * (src[:, [0]] + src[:, [1]]) + 0.01 * rng.normal(size=(40, 1, 2))
    >>> model = SparseShapeRegression(tau=0.9).fit(src, dst)
    >>> model.H_.shape, model.support_[0].nonzero()[0].tolist()
    ((1, 6), [0, 1])
    >>> model.predict(src).shape
    (40, 1, 2)
    """

    # src / dst are the data, not metadata to route (no set_*_request methods)
    __metadata_request__fit = {"src": metadata_routing.UNUSED, "dst": metadata_routing.UNUSED}
    __metadata_request__predict = {"src": metadata_routing.UNUSED}
    __metadata_request__score = {"src": metadata_routing.UNUSED, "dst": metadata_routing.UNUSED}

    def __init__(self, tau: float = 1.4, normalize: Optional[str] = "procrustes", positive: bool = False,
                 nme_norm="auto", target_scheme: Optional[str] = None, max_iter: int = 500,
                 num_threads: Optional[int] = None):
        self.tau = tau
        self.normalize = normalize
        self.positive = positive
        self.nme_norm = nme_norm
        self.target_scheme = target_scheme
        self.max_iter = max_iter
        self.num_threads = num_threads

    # -- helpers
    def _check_params(self):
        check_nonnegative(self.tau, "tau")
        check_in(self.normalize, "normalize", ("procrustes", "centre", None))
        check_int(self.max_iter, "max_iter", min_value=1)
        if self.num_threads is not None:
            check_num_threads(self.num_threads)

    @staticmethod
    def _check_src(src, name="src", n_points=None):
        try:
            return check_shapes(src, name, batch=True, n_points=n_points)
        except ValueError as e:
            if "NaN" in str(e):
                raise ValueError(f"{e}; sparse shape regression needs every landmark: drop faces with missing "
                                 f"points first, e.g. {name}[~np.isnan({name}).any(axis=(1, 2))]") from None
            raise

    def _frames(self, src):
        if self.normalize is None:
            return None, None
        return _similarity_to(src, self.reference_ if self.normalize == "procrustes" else None)

    @staticmethod
    def _apply(shapes, a, m):
        if a is None:
            return shapes
        z = _to_complex(shapes)
        return _from_complex(a[:, None] * (z - m[:, None]))

    @staticmethod
    def _unapply(shapes, a, m):
        if a is None:
            return shapes
        z = _to_complex(shapes)
        return _from_complex(z / a[:, None] + m[:, None])

    def _normalised_design(self, src, dst=None):
        a, m = self._frames(src)
        X = shapes_to_design(self._apply(src, a, m))
        Y = None if dst is None else shapes_to_design(self._apply(dst, a, m))
        return X, Y

    # -- API
    def fit(self, src, dst):
        """Learn ``H`` from paired shapes.

        Parameters
        ----------
        src : array_like, shape (N, p_i, 2)
            Source-scheme landmarks (finite; drop faces with missing points first).
        dst : array_like, shape (N, p_j, 2)
            Target-scheme landmarks of the same faces.

        Returns
        -------
        self
        """
        self._check_params()
        src = self._check_src(src, "src")
        dst = self._check_src(dst, "dst")
        if src.shape[0] != dst.shape[0]:
            raise ValueError(f"src and dst must hold the same faces, got {src.shape[0]} and {dst.shape[0]} shapes")
        self.reference_ = _procrustes_reference(src) if self.normalize == "procrustes" else None
        X, Y = self._normalised_design(src, dst)
        G = X.T @ X
        XtY = np.ascontiguousarray(X.T @ Y)
        tau = np.full(Y.shape[1], check_nonnegative(self.tau, "tau"))
        H, status, n_steps, _ = _solve(G, XtY, tau, self.positive, self.max_iter, self.num_threads)
        self.H_ = H
        self.support_ = H != 0
        self.n_steps_ = n_steps
        self.n_source_points_ = src.shape[1]
        self.n_target_points_ = dst.shape[1]
        return self

    def _check_fitted(self):
        if not hasattr(self, "H_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call fit(src, dst) first")

    def predict(self, src) -> np.ndarray:
        """Predict target-scheme landmarks.

        Parameters
        ----------
        src : array_like, shape (N, p_i, 2) or (p_i, 2)

        Returns
        -------
        ndarray, shape (N, p_j, 2) or (p_j, 2)
        """
        self._check_fitted()
        s = np.asarray(src)
        single = s.ndim == 2
        s = self._check_src(s[None] if single else s, "src", n_points=self.n_source_points_)
        a, m = self._frames(s)
        out = self._unapply(np.einsum("rk,nkd->nrd", self.H_, self._apply(s, a, m)), a, m)
        return out[0] if single else out

    def _norm(self):
        nn = self.nme_norm
        if isinstance(nn, str):
            check_in(nn, "nme_norm", ("auto", "diagonal", "bbox", "interocular"))
            if nn in ("diagonal", "bbox"):
                return nn
            if nn == "auto" and self.target_scheme is None:
                return "diagonal"
            if self.target_scheme is None:
                raise ValueError("nme_norm='interocular' needs target_scheme (a scheme name)")
            from .schemes import get_scheme

            return tuple(get_scheme(self.target_scheme).interocular)
        return tuple(nn)

    def score(self, src, dst) -> float:
        """Negative mean NME of the predictions (higher is better; see ``nme_norm``).

        Parameters
        ----------
        src : array_like, shape (N, p_i, 2)
        dst : array_like, shape (N, p_j, 2)
            Ground truth.

        Returns
        -------
        float
        """
        dst = self._check_src(dst, "dst", n_points=getattr(self, "n_target_points_", None))
        e = normalised_mean_error(self.predict(src), dst, self._norm())
        return -float(np.mean(e))

    def sparse_H(self):
        """``H_`` as a :class:`scipy.sparse.csr_matrix` (zeros dropped)."""
        import scipy.sparse as sp

        self._check_fitted()
        return sp.csr_matrix(self.H_)


class SparseShapeRegressionCV(SparseShapeRegression):
    """:class:`SparseShapeRegression` with ``tau`` chosen by K-fold cross-validation along the path.

    The faces are split into ``cv`` folds.  For each fold, the Gram statistics of the
    training faces are obtained by subtraction (``G_all - G_fold``), the LARS-lasso path
    of every target is computed once up to the largest ``tau`` of the grid, and every
    grid value is read off the path by interpolation (no refit per ``tau``).  The ``tau``
    with the lowest mean NME over the held-out faces is refitted on all faces.

    Parameters
    ----------
    taus : array_like, optional
        Candidate budgets (``inf`` allowed).  Default: 25 values ``geomspace(0.25, 16)``,
        the paper's 1.4 and ``inf``.
    cv : int
        Number of folds (>= 2).
    rng : int or Generator, optional
        Fold shuffling.
    normalize, positive, nme_norm, target_scheme, max_iter, num_threads
        As in :class:`SparseShapeRegression`.

    Attributes
    ----------
    tau_ : float
        Selected budget.
    taus_ : ndarray, shape (n_taus,)
    cv_nme_ : ndarray, shape (cv, n_taus)
        Mean held-out NME per fold and ``tau``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> src = rng.normal(size=(60, 6, 2)) + 10
    >>> mid = 0.5 * (src[:, [0]] + src[:, [1]])
    >>> dst = np.concatenate([mid, src[:, [4]]], axis=1) + 0.05 * rng.normal(size=(60, 2, 2))
    >>> model = SparseShapeRegressionCV(cv=3, rng=0).fit(src, dst)
    >>> model.tau_, model.cv_nme_.shape
    (1.0, (3, 27))
    """

    def __init__(self, taus=None, cv: int = 5, rng=0, normalize: Optional[str] = "procrustes",
                 positive: bool = False, nme_norm="auto", target_scheme: Optional[str] = None,
                 max_iter: int = 500, num_threads: Optional[int] = None):
        self.taus = taus
        self.cv = cv
        self.rng = rng
        self.normalize = normalize
        self.positive = positive
        self.nme_norm = nme_norm
        self.target_scheme = target_scheme
        self.max_iter = max_iter
        self.num_threads = num_threads

    def fit(self, src, dst):
        """Choose ``tau`` by cross-validation, then fit on all faces (see class docstring)."""
        from ._validate import check_rng

        check_in(self.normalize, "normalize", ("procrustes", "centre", None))
        max_iter = check_int(self.max_iter, "max_iter", min_value=1)
        src = self._check_src(src, "src")
        dst = self._check_src(dst, "dst")
        N = src.shape[0]
        if dst.shape[0] != N:
            raise ValueError(f"src and dst must hold the same faces, got {N} and {dst.shape[0]} shapes")
        K = check_int(self.cv, "cv", min_value=2, max_value=N)
        if self.taus is None:
            taus = np.unique(np.r_[np.geomspace(0.25, 16.0, 25), 1.4, np.inf])
        else:
            taus = np.unique(np.atleast_1d(np.asarray(self.taus, dtype=np.float64)))
            if taus.ndim != 1 or np.isnan(taus).any() or (taus < 0).any():
                raise ValueError(f"taus must be a 1-D list of values >= 0, got {self.taus!r}")
        self.reference_ = _procrustes_reference(src) if self.normalize == "procrustes" else None
        a, m = self._frames(src)
        sn, dn = self._apply(src, a, m), self._apply(dst, a, m)
        X, Y = shapes_to_design(sn), shapes_to_design(dn)
        G_all = X.T @ X
        XtY_all = X.T @ Y
        perm = check_rng(self.rng).permutation(N)
        folds = np.array_split(perm, K)
        norm = self._norm()
        tmax = float(taus.max())
        scores = np.empty((K, taus.size))
        for k, idx in enumerate(folds):
            rows = np.sort(np.r_[2 * idx, 2 * idx + 1])
            Xf, Yf = X[rows], Y[rows]
            G = G_all - Xf.T @ Xf
            XtY = np.ascontiguousarray(XtY_all - Xf.T @ Yf)
            _, st, _, rec = _solve(G, XtY, np.full(Y.shape[1], tmax), self.positive, max_iter,
                                   self.num_threads, record=True)
            paths = _paths_from_record(rec, st, 2 * (N - idx.size))
            Hs = np.stack([pth.coef_at(taus) for pth in paths], axis=1)  # (n_taus, p_j, p_i)
            pred = np.einsum("trk,nkd->tnrd", Hs, sn[idx])
            # back to image coordinates (the bounding-box normaliser is not rotation invariant)
            af = None if a is None else a[idx]
            mf = None if m is None else m[idx]
            for ti in range(taus.size):
                scores[k, ti] = normalised_mean_error(self._unapply(pred[ti], af, mf), dst[idx], norm).mean()
        self.taus_ = taus
        self.cv_nme_ = scores
        best = int(np.argmin(scores.mean(axis=0)))
        self.tau_ = float(taus[best])
        final = SparseShapeRegression(tau=self.tau_, normalize=self.normalize, positive=self.positive,
                                      nme_norm=self.nme_norm, target_scheme=self.target_scheme,
                                      max_iter=max_iter, num_threads=self.num_threads).fit(src, dst)
        for att in ("reference_", "H_", "support_", "n_steps_", "n_source_points_", "n_target_points_"):
            setattr(self, att, getattr(final, att))
        return self


# --------------------------------------------------------------------------- union of schemes (eq. 8)
class SchemeUnion:
    """Union landmark set of several annotation schemes and the maps ``H_i`` of DRN-SSR eq. (8).

    Dataset ``i`` annotates ``p_i`` points.  Points declared common (same semantic
    point in two schemes) appear once in the union.  For every dataset ``i`` and every
    union point it does not define, a :class:`SparseShapeRegression` learnt on faces
    annotated in both scheme ``i`` and a scheme ``j`` that defines that point predicts
    it; the rows of the points ``i`` defines form the identity block ``E``.

    Parameters
    ----------
    n_points : sequence of int
        Points per dataset/scheme (``p_1, ..., p_n``).
    common : mapping {(i, j): array_like (K, 2)}, optional
        Pairs ``(index in scheme i, index in scheme j)`` of common points, e.g. from
        :func:`flmcore.schemes.correspondences`.
    tau, normalize, positive, max_iter, num_threads
        Passed to every :class:`SparseShapeRegression`.

    Attributes
    ----------
    n_union_ : int
        Number of union points ``p``.
    index_ : list of ndarray
        ``index_[i][k]`` is the union index of point ``k`` of dataset ``i``.
    owner_ : ndarray, shape (p, 2)
        For each union point, the first ``(dataset, index)`` that defines it.
    models_ : dict {(i, j): SparseShapeRegression}
        Fitted maps (after :meth:`fit`).
    H_ : list of ndarray, shape (p, p_i)
        ``H_i = [H_i1; ...; E; ...; H_in]`` with rows in union order (NaN rows for
        points no paired data could reach).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a = rng.normal(size=(50, 5, 2)) + 5          # scheme 0: 5 points
    >>> b = np.concatenate([a[:, :2], a[:, 2:4].mean(1, keepdims=True)], 1)  # scheme 1: 3 points
    >>> u = SchemeUnion([5, 3], common={(0, 1): [[0, 0], [1, 1]]}).fit({(0, 1): (a, b)})
    >>> u.n_union_, u.transform(b, dataset=1).shape
    (6, (50, 6, 2))
    """

    def __init__(self, n_points: Sequence[int], common: Optional[Mapping[Tuple[int, int], object]] = None,
                 tau: float = 1.4, normalize: Optional[str] = "procrustes", positive: bool = False,
                 max_iter: int = 500, num_threads: Optional[int] = None):
        if np.ndim(n_points) != 1 or len(n_points) < 2:
            raise ValueError(f"n_points must list at least two schemes' point counts, got {n_points!r}")
        self.n_points = [check_int(p, f"n_points[{k}]", min_value=1) for k, p in enumerate(n_points)]
        self.common = {} if common is None else dict(common)
        self.tau = check_nonnegative(tau, "tau")
        self.normalize = check_in(normalize, "normalize", ("procrustes", "centre", None))
        self.positive = positive
        self.max_iter = max_iter
        self.num_threads = num_threads
        self._build_union()

    @classmethod
    def from_schemes(cls, names: Sequence[str], **kwargs) -> "SchemeUnion":
        """Build from scheme names, with the common points of :func:`flmcore.schemes.correspondences`.

        Examples
        --------
        >>> u = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"])
        >>> u.n_union_ < 68 + 29
        True
        """
        from .schemes import correspondences, get_scheme

        schemes = [get_scheme(n) for n in names]
        common = {}
        for i in range(len(schemes)):
            for j in range(i + 1, len(schemes)):
                pairs = np.asarray(correspondences(schemes[i], schemes[j]), dtype=np.int64).reshape(-1, 2)
                if pairs.size:
                    common[(i, j)] = pairs
        u = cls([s.n_points for s in schemes], common=common, **kwargs)
        u.names_ = [s.name for s in schemes]
        return u

    def _build_union(self):
        n = len(self.n_points)
        offs = np.r_[0, np.cumsum(self.n_points)]
        parent = np.arange(offs[-1])

        def find(x):
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        for key, pairs in self.common.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"common keys must be (i, j) dataset pairs, got {key!r}")
            i, j = (check_int(k, "common dataset index", min_value=0, max_value=n - 1) for k in key)
            pr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
            if pr.size and ((pr[:, 0] < 0).any() or (pr[:, 0] >= self.n_points[i]).any()
                            or (pr[:, 1] < 0).any() or (pr[:, 1] >= self.n_points[j]).any()):
                raise ValueError(f"common[{key}] has point indices outside 0..{self.n_points[i] - 1} / "
                                 f"0..{self.n_points[j] - 1}")
            for u, v in pr:
                ru, rv = find(offs[i] + u), find(offs[j] + v)
                if ru != rv:
                    parent[max(ru, rv)] = min(ru, rv)
        roots = np.array([find(x) for x in range(offs[-1])])
        uniq, first = np.unique(roots, return_index=True)
        order = np.argsort(first)  # union order = order of first appearance
        label = np.empty(offs[-1], np.int64)
        for new, o in enumerate(order):
            label[roots == uniq[o]] = new
        self.n_union_ = int(uniq.size)
        self.index_ = [label[offs[i]:offs[i + 1]].copy() for i in range(n)]
        owner = np.empty((self.n_union_, 2), np.int64)
        for i in reversed(range(n)):
            owner[self.index_[i]] = np.c_[np.full(self.n_points[i], i), np.arange(self.n_points[i])]
        self.owner_ = owner

    def fit(self, pairs: Mapping[Tuple[int, int], Tuple[object, object]]) -> "SchemeUnion":
        """Learn the ``H_ij`` blocks from faces annotated in two schemes.

        Parameters
        ----------
        pairs : mapping {(i, j): (S_i (N, p_i, 2), S_j (N, p_j, 2))}
            Paired training sets (the same N faces in scheme ``i`` and scheme ``j``).  A
            pair is used in both directions (``i -> j`` and ``j -> i``).

        Returns
        -------
        self
        """
        n = len(self.n_points)
        data: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = {}
        for key, val in pairs.items():
            i, j = (check_int(k, "pairs dataset index", min_value=0, max_value=n - 1) for k in key)
            if i == j:
                raise ValueError(f"pairs key {key!r} must name two different datasets")
            si = check_shapes(val[0], f"pairs[{key}][0]", batch=True, n_points=self.n_points[i])
            sj = check_shapes(val[1], f"pairs[{key}][1]", batch=True, n_points=self.n_points[j])
            if si.shape[0] != sj.shape[0]:
                raise ValueError(f"pairs[{key}] must hold the same faces in both schemes, got {si.shape[0]} "
                                 f"and {sj.shape[0]} shapes")
            data[(i, j)] = (si, sj)
            data.setdefault((j, i), (sj, si))
        self.models_ = {}
        self.targets_ = {}
        self.H_ = []
        for i in range(n):
            defined = set(self.index_[i].tolist())
            H = np.full((self.n_union_, self.n_points[i]), np.nan)
            for u in defined:
                row = np.zeros(self.n_points[i])
                row[list(self.index_[i]).index(u)] = 1.0
                H[u] = row
            todo = set(range(self.n_union_)) - defined
            for j in range(n):
                if j == i or (i, j) not in data or not todo:
                    continue
                tgt = [k for k in range(self.n_points[j]) if self.index_[j][k] in todo]
                if not tgt:
                    continue
                si, sj = data[(i, j)]
                model = SparseShapeRegression(tau=self.tau, normalize=self.normalize, positive=self.positive,
                                              max_iter=self.max_iter, num_threads=self.num_threads)
                model.fit(si, sj[:, tgt])
                self.models_[(i, j)] = model
                self.targets_[(i, j)] = (np.asarray(tgt), self.index_[j][tgt])
                H[self.index_[j][tgt]] = model.H_
                todo -= set(self.index_[j][tgt].tolist())
            self.H_.append(H)
        return self

    def transform(self, shapes, dataset: int) -> np.ndarray:
        """Union shapes of faces annotated in scheme ``dataset`` (eq. 8).

        Parameters
        ----------
        shapes : array_like, shape (N, p_i, 2) or (p_i, 2)
        dataset : int

        Returns
        -------
        ndarray, shape (N, p, 2) or (p, 2)
            Defined points copied, the others predicted (NaN where no pair reaches them).
        """
        if not hasattr(self, "H_"):
            raise RuntimeError("SchemeUnion is not fitted yet; call fit(pairs) first")
        i = check_int(dataset, "dataset", min_value=0, max_value=len(self.n_points) - 1)
        s = np.asarray(shapes)
        single = s.ndim == 2
        s = check_shapes(s[None] if single else s, "shapes", batch=True, n_points=self.n_points[i])
        out = np.full((s.shape[0], self.n_union_, 2), np.nan)
        out[:, self.index_[i]] = s
        for (a, j), model in self.models_.items():
            if a != i:
                continue
            out[:, self.targets_[(a, j)][1]] = model.predict(s)
        return out[0] if single else out

"""Pose bins from shape statistics and pose-balanced resampling.

Rayhan et al. (BMVC 2020, "Not all points are created equal", §3.2), following
Feng et al. (Wing loss, CVPR 2018): align all training shapes by generalised
Procrustes analysis, project them with PCA, and split the projection on the
first principal component — which mostly captures head yaw — into ``K``
equal-width bins (a histogram of the coefficients). Each bin has a mean shape
:math:`\\bar{x}_k`; the mean of the bin means
:math:`\\bar{x} = \\frac{1}{K}\\sum_k \\bar{x}_k` is the regression origin
(the network predicts :math:`\\delta x = x - \\bar{x}`).

**Frames.** :attr:`PoseBins.origin` and :attr:`PoseBins.bin_means` live in the
unit Procrustes frame of the alignment (centroid 0, unit size), where the bins
are defined.  A network regresses crop pixels, so the origin it needs is the
mean of the bin means *of the training shapes in the crop frame*:
:meth:`PoseBins.origin_in` computes it (pass it as ``origin=`` of
:class:`flmcore.nn.losses.AnisotropicLoss` or :class:`flmcore.nn.heads.CoordHead`). Training then
under-samples (Rayhan) or over-samples / replicates (Feng) the bins to equal
counts, see :func:`balanced_indices`.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Optional

import numpy as np

from ._validate import check_array, check_in, check_int, check_rng, check_shapes
from .procrustes import GPAResult, generalized_procrustes, align

__all__ = ["PoseBins", "pose_bins", "assign_pose_bins", "balanced_indices", "pca"]


class PoseBins(NamedTuple):
    """Result of :func:`pose_bins`.

    Attributes
    ----------
    labels : ndarray of int, shape (B,)
        Bin index ``0..K-1`` of every shape, increasing along the binned
        principal component.
    edges : ndarray, shape (K + 1,)
        Bin edges on the projection coefficient (``edges[0]`` = minimum,
        ``edges[-1]`` = maximum of the training projections).
    counts : ndarray of int, shape (K,)
        Shapes per bin (equal-width bins may be empty).
    bin_means : ndarray, shape (K, P, 2)
        Mean aligned shape of each bin in the GPA frame (NaN for empty bins;
        missing points are excluded per point).
    origin : ndarray, shape (P, 2)
        Mean of the bin means over non-empty bins (Rayhan's regression origin),
        in the unit Procrustes frame; use :meth:`origin_in` for the crop/pixel
        frame a network predicts in.
    projections : ndarray, shape (B, n_components)
        PCA coefficients of the aligned shapes.
    components : ndarray, shape (n_components, 2 P)
        Principal axes on the flattened ``(x0, y0, x1, y1, ...)`` aligned
        shapes, unit norm; sign convention of scikit-learn (largest-magnitude
        entry positive).
    explained_variance : ndarray, shape (n_components,)
        Variance along each axis (``ddof=1``).
    explained_variance_ratio : ndarray, shape (n_components,)
    pca_mean : ndarray, shape (2 P,)
        Mean of the flattened aligned shapes (after imputation).
    component : int
        Index of the component that was binned.
    gpa : GPAResult
        The Procrustes analysis the bins were built on.
    """

    labels: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    bin_means: np.ndarray
    origin: np.ndarray
    projections: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    pca_mean: np.ndarray
    component: int
    gpa: GPAResult

    def origin_in(self, shapes) -> np.ndarray:
        """Rayhan's regression origin in the frame of ``shapes``: the mean of the per-bin means.

        :math:`\\bar{x} = \\frac{1}{K'} \\sum_{k:\\,n_k > 0} \\frac{1}{n_k} \\sum_{b \\in k} x_b`
        over the non-empty bins, with the bins of :attr:`labels` and the shapes
        as given (e.g. the training landmarks in crop pixels); missing (NaN)
        points are left out of each bin mean.  This is the ``origin`` to pass to
        :class:`flmcore.nn.losses.AnisotropicLoss` / :class:`flmcore.nn.heads.CoordHead`.

        Parameters
        ----------
        shapes : array_like, shape (B, P, 2)
            The shapes the bins were computed from, in the frame wanted (same order).

        Returns
        -------
        ndarray, shape (P, 2)

        Examples
        --------
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> shapes = rng.normal(size=(30, 5, 2)) * 10 + 100
        >>> bins = pose_bins(shapes, n_bins=3)
        >>> o = bins.origin_in(shapes)
        >>> o.shape, bool(np.all(np.abs(o - 100) < 10))
        ((5, 2), True)
        """
        X = check_shapes(shapes, "shapes", batch=True, allow_nan=True)
        B, P = self.labels.shape[0], self.bin_means.shape[1]
        if X.shape[:2] != (B, P):
            raise ValueError(f"shapes must be the ({B}, {P}, 2) shapes the bins were computed from, got {X.shape}")
        means = []
        for k in range(len(self.counts)):
            sel = X[self.labels == k]
            if len(sel):
                ok = np.isfinite(sel).all(-1)
                n = ok.sum(0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    means.append(np.where(n[:, None] > 0, np.where(ok[..., None], sel, 0.0).sum(0) / n[:, None],
                                          np.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a point missing in every bin stays NaN
            return np.nanmean(np.stack(means), axis=0)


def _gram(Xc):
    """``Xc.T @ Xc`` by the symmetric rank-k BLAS update (half the flops of a general product)."""
    try:
        from scipy.linalg.blas import dsyrk
    except ImportError:  # pragma: no cover
        return Xc.T @ Xc
    G = dsyrk(1.0, np.asfortranarray(Xc.T), trans=0)
    return np.triu(G) + np.triu(G, 1).T


def pca(X, n_components: int):
    """Principal component analysis of the rows of ``X`` (exact, covariance eigen-decomposition).

    Parameters
    ----------
    X : array_like, shape (N, D)
    n_components : int
        ``1 <= n_components <= D``.

    Returns
    -------
    mean : ndarray (D,)
    components : ndarray (n_components, D)
        Unit axes, decreasing variance; each axis signed so that its
        largest-magnitude entry is positive (as scikit-learn's ``PCA``).
    explained_variance : ndarray (n_components,)
        Eigenvalues of the ``ddof=1`` covariance.
    explained_variance_ratio : ndarray (n_components,)
    projections : ndarray (N, n_components)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 0.0], [2.0, 0.0], [4.0, 0.1]])
    >>> mean, comps, var, ratio, proj = pca(X, 1)
    >>> np.round(np.abs(comps), 3)
    array([[1.   , 0.025]])
    """
    X = check_array(X, "X", ndim=2)
    N, D = X.shape
    if N < 2:
        raise ValueError(f"X must have at least 2 rows for a PCA, got {N}")
    n_components = check_int(n_components, "n_components", min_value=1, max_value=D)
    mean = X.mean(0)
    Xc = X - mean
    cov = _gram(Xc) / (N - 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    comps = evecs[:, order].T[:n_components].copy()
    big = np.argmax(np.abs(comps), axis=1)
    signs = np.sign(comps[np.arange(n_components), big])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    total = evals.sum()
    ratio = evals[:n_components] / total if total > 0 else np.zeros(n_components)
    return mean, comps, evals[:n_components].copy(), ratio, Xc @ comps.T


def pose_bins(shapes, n_bins: int = 9, *, n_components: int = 2, component: int = 0,
              binning: str = "width", max_iter: int = 100, tol: float = 1e-10,
              num_threads: Optional[int] = None) -> PoseBins:
    """Split shapes into pose bins: GPA, PCA projection, K bins on one component.

    Rayhan et al. §3.2 (after Feng et al.): the shapes are aligned to their
    Procrustes mean (:func:`flmcore.procrustes.generalized_procrustes`,
    similarity with scale), flattened, projected by PCA, and the coefficient on
    ``component`` (default the first, which mostly encodes yaw) is cut into
    ``n_bins`` bins. Missing (NaN) points are excluded from the Procrustes fits
    and from the bin means; for the PCA they are imputed with the Procrustes
    mean's coordinates.

    Parameters
    ----------
    shapes : array_like, shape (B, P, 2)
        Training shapes (NaN = missing point).
    n_bins : int
        Number of bins ``K`` (9 in Rayhan et al. and Feng et al.).
    n_components : int
        Number of principal components kept in the result.
    component : int
        Index of the component to bin (``< n_components``).
    binning : {"width", "quantile"}
        ``"width"``: equal-width bins between the minimum and maximum
        coefficient (the histogram of Feng et al.; extreme poses get small
        bins, which is what balancing needs). ``"quantile"``: equal-count bins.
    max_iter, tol : GPA settings (see :func:`~flmcore.procrustes.generalized_procrustes`).
    num_threads : int, optional
        Threads of the Procrustes kernel.

    Returns
    -------
    PoseBins

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(12, 2))
    >>> squash = rng.uniform(0.5, 1.5, size=40)
    >>> shapes = base * np.stack([squash, np.ones(40)], -1)[:, None, :]
    >>> res = pose_bins(shapes, n_bins=3)
    >>> res.bin_means.shape, int(res.counts.sum())
    ((3, 12, 2), 40)
    """
    X = check_shapes(shapes, "shapes", batch=True, allow_nan=True, min_points=2)
    n_bins = check_int(n_bins, "n_bins", min_value=1)
    B, P = X.shape[:2]
    if B < 2:
        raise ValueError(f"shapes must hold at least 2 shapes for pose bins, got {B}")
    n_components = check_int(n_components, "n_components", min_value=1, max_value=min(2 * P, B))
    component = check_int(component, "component", min_value=0, max_value=n_components - 1)
    check_in(binning, "binning", ("width", "quantile"))
    gpa = generalized_procrustes(X, max_iter=max_iter, tol=tol, num_threads=num_threads)
    complete = bool(gpa.mask.all())
    filled = gpa.aligned if complete else np.where(gpa.mask[..., None], gpa.aligned, gpa.mean[None])
    mean, comps, var, ratio, proj = pca(filled.reshape(B, 2 * P), n_components)
    coef = proj[:, component]
    lo, hi = float(coef.min()), float(coef.max())
    if binning == "width":
        edges = np.linspace(lo, hi, n_bins + 1)
    else:
        edges = np.quantile(coef, np.linspace(0.0, 1.0, n_bins + 1))
    labels = _digitize(coef, edges)
    counts = np.bincount(labels, minlength=n_bins)
    # bin means by one-hot products (no loop over bins): per point, sum of present aligned points / count
    onehot = np.zeros((B, n_bins))
    onehot[np.arange(B), labels] = 1.0
    present = gpa.mask.astype(np.float64)
    aligned0 = gpa.aligned if complete else np.where(gpa.mask[..., None], gpa.aligned, 0.0)
    sums = (onehot.T @ aligned0.reshape(B, 2 * P)).reshape(n_bins, P, 2)
    npts = onehot.T @ present
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_means = np.where(npts[..., None] > 0, sums / npts[..., None], np.nan)
    origin = np.nanmean(bin_means[counts > 0], axis=0) if P else bin_means[0]
    return PoseBins(labels, edges, counts, bin_means, origin, proj, comps, var, ratio, mean, component, gpa)


def _digitize(coef, edges):
    """Bin index in 0..K-1 (inner edges only; values beyond the ends go to the end bins)."""
    K = len(edges) - 1
    return np.clip(np.searchsorted(edges[1:-1], coef, side="right"), 0, K - 1).astype(np.int64)


def assign_pose_bins(shapes, bins: PoseBins, *, num_threads: Optional[int] = None) -> np.ndarray:
    """Assign new shapes to the bins of a :class:`PoseBins` (e.g. a test set).

    Each shape is aligned (similarity, missing points excluded) to the
    training Procrustes mean, imputed, projected on the binned component and
    placed by the training edges (values beyond the range go to the end bins).

    Parameters
    ----------
    shapes : array_like, shape (B, P, 2) or (P, 2)
    bins : PoseBins
    num_threads : int, optional

    Returns
    -------
    ndarray of int, shape (B,) (or a scalar array for one shape)

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> base = rng.normal(size=(12, 2))
    >>> shapes = base * np.stack([rng.uniform(0.5, 1.5, 40), np.ones(40)], -1)[:, None, :]
    >>> res = pose_bins(shapes, n_bins=3)
    >>> bool((assign_pose_bins(shapes, res) == res.labels).all())
    True
    """
    if not isinstance(bins, PoseBins):
        raise TypeError(f"bins must be a PoseBins, got {type(bins).__name__}")
    P = bins.gpa.mean.shape[0]
    X = check_shapes(shapes, "shapes", allow_nan=True, n_points=P, min_points=2)
    single = X.ndim == 2
    X3 = X.reshape(-1, P, 2)
    aligned, _ = align(X3, bins.gpa.mean, num_threads=num_threads)
    filled = np.where(np.isfinite(aligned), aligned, bins.gpa.mean[None])
    coef = (filled.reshape(len(X3), 2 * P) - bins.pca_mean) @ bins.components[bins.component]
    labels = _digitize(coef, bins.edges)
    return labels[0] if single else labels


def balanced_indices(labels, mode: str = "undersample", *, rng=None) -> np.ndarray:
    """Indices that give every (non-empty) bin the same number of samples.

    ``"undersample"`` (Rayhan et al. §3.2): each bin keeps ``min(counts)``
    samples drawn without replacement. ``"oversample"`` (Feng et al.): each bin
    keeps all its samples and replicates randomly drawn ones (with
    replacement) up to ``max(counts)``.

    Parameters
    ----------
    labels : array_like of int, shape (N,)
        Bin label per sample (e.g. :attr:`PoseBins.labels`); labels that do not
        occur are ignored.
    mode : {"undersample", "oversample"}
    rng : int or numpy.random.Generator, optional

    Returns
    -------
    ndarray of int64, shape (n_bins_present * m,)
        Sorted sample indices (with repeats when over-sampling).

    Examples
    --------
    >>> import numpy as np
    >>> labels = np.array([0, 0, 0, 1, 2, 2])
    >>> np.bincount(labels[balanced_indices(labels, "undersample", rng=0)]).tolist()
    [1, 1, 1]
    >>> np.bincount(labels[balanced_indices(labels, "oversample", rng=0)]).tolist()
    [3, 3, 3]
    """
    lab = check_array(labels, "labels", ndim=1, dtype=None)
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise TypeError(f"labels must be integers, got dtype {lab.dtype}")
    check_in(mode, "mode", ("undersample", "oversample"))
    gen = check_rng(rng)
    uniq, inv, counts = np.unique(lab, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = []
    if mode == "undersample":
        m = int(counts.min())
        for u in range(len(uniq)):  # one vectorised draw per bin
            members = order[starts[u]:starts[u] + counts[u]]
            out.append(gen.choice(members, size=m, replace=False))
    else:
        m = int(counts.max())
        for u in range(len(uniq)):
            members = order[starts[u]:starts[u] + counts[u]]
            extra = gen.choice(members, size=m - counts[u], replace=True)
            out.append(np.concatenate([members, extra]))
    return np.sort(np.concatenate(out)).astype(np.int64)

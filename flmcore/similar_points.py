"""Similar landmarks between two annotation schemes, found automatically from their mean faces.

ATF (Lan, Hu, Cheng, §III-C) ties the branches of two datasets with the landmarks that mean the
same thing in both schemes ("8 to 16 similar landmarks on a pair of datasets"); the official code
hard-codes them.  :func:`flmcore.schemes.correspondences` gives the curated pairs; this module
finds them from data instead: the two mean faces (each in its own frame) are brought together
by a similarity transform estimated with an ICP-style loop (match, Procrustes fit, repeat), and
point pairs that are mutual nearest neighbours closer than a threshold (a fraction of the face
size) are reported.  NumPy only.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ._validate import check_array, check_int, check_positive, check_shapes

__all__ = ["similar_landmark_pairs", "fit_similarity"]


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Tuple[float, np.ndarray, np.ndarray]:
    """Least-squares 2-D similarity ``dst ≈ s R src + t`` (Umeyama, no reflection).

    Parameters
    ----------
    src, dst : array_like, shape (K, 2)
        Corresponding points, ``K >= 2``.

    Returns
    -------
    scale : float
    R : numpy.ndarray, shape (2, 2)
    t : numpy.ndarray, shape (2,)

    Examples
    --------
    >>> import numpy as np
    >>> src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> s, R, t = fit_similarity(src, 2 * src + 1)
    >>> round(s, 6), np.round(t, 6).tolist()
    (2.0, [1.0, 1.0])
    """
    a = check_shapes(src, "src", batch=False, min_points=2)
    b = check_shapes(dst, "dst", batch=False, min_points=2)
    if a.shape != b.shape:
        raise ValueError(f"src and dst must have the same shape, got {a.shape} and {b.shape}")
    ma, mb = a.mean(0), b.mean(0)
    ac, bc = a - ma, b - mb
    var_a = (ac ** 2).sum() / len(a)
    if var_a <= 0:
        raise ValueError("src points all coincide; a similarity cannot be fitted")
    cov = bc.T @ ac / len(a)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0
    R = U @ D @ Vt
    s = float(np.trace(np.diag(S) @ D) / var_a)
    t = mb - s * R @ ma
    return s, R, t


def _size(x: np.ndarray) -> float:
    return float(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))


def _hypothesis_search(A: np.ndarray, B: np.ndarray, radius: float, scale0: float, rotations) -> np.ndarray:
    """Initial placement of ``B`` on ``A``: the scale/rotation/translation hypothesis that puts
    the most points of ``B`` within ``radius`` of a point of ``A``.

    Scales are a grid around the RMS-size ratio ``scale0``, rotations the given angles, and the
    translations every ``A_l - s R B_k`` (one hypothesis per candidate point pair).
    """
    Pb, Pa = len(B), len(A)
    Bc = B - B.mean(0)
    best = (-1, np.inf, None)
    for ang in rotations:
        c, s_ = np.cos(ang), np.sin(ang)
        R = np.array([[c, -s_], [s_, c]])
        for sc in scale0 * np.linspace(0.7, 1.3, 9):
            Bs = sc * Bc @ R.T
            D = (A[None, :, :] - Bs[:, None, :]).reshape(-1, 2)  # (Pb * Pa) candidate translations
            n2 = (D * D).sum(1)
            for lo in range(0, len(D), 1024):
                cand = D[lo:lo + 1024]
                d2 = n2[lo:lo + 1024, None] + n2[None, :] - 2.0 * cand @ D.T
                dmin = np.sqrt(np.maximum(d2.reshape(len(cand), Pb, Pa).min(-1), 0.0))
                inl = dmin <= radius
                cnt = inl.sum(-1)
                res = np.where(inl, dmin, 0.0).sum(-1)
                k = int(np.lexsort((res, -cnt))[0])
                if cnt[k] > best[0] or (cnt[k] == best[0] and res[k] < best[1]):
                    best = (int(cnt[k]), float(res[k]), Bs + cand[k])
    return best[2]


def similar_landmark_pairs(mean_a, mean_b, threshold: float = 0.05, *, align: bool = True,
                           anchors=None, rotations=(0.0,), n_iter: int = 20, return_distances: bool = False):
    """Pairs of landmarks of two schemes that sit at the same place on the mean face (ATF §III-C).

    Parameters
    ----------
    mean_a : array_like, shape (P_a, 2)
        Mean face of scheme ``a`` (e.g. the Procrustes mean of its training shapes,
        :func:`flmcore.procrustes.generalized_procrustes`).
    mean_b : array_like, shape (P_b, 2)
        Mean face of scheme ``b``, in its own frame.
    threshold : float
        Largest distance between paired points, as a fraction of the RMS radius of ``mean_a``
        (distance of its points to their centroid).
    align : bool
        Estimate the similarity that maps ``mean_b`` onto ``mean_a`` (``False`` when both means
        are already in one frame, e.g. the means of two annotations of the same images).
    anchors : array_like (K, 2) of int, optional
        Known pairs (index in ``a``, index in ``b``) for the initial alignment.  Without them the
        initial alignment is the hypothesis (scale on a grid around the RMS-size ratio, rotation
        in ``rotations``, translation from every candidate point pair) that brings the most
        points of ``b`` within ``threshold`` of a point of ``a``.
    rotations : sequence of float
        Rotation angles (radians) tried by that search; ``(0.0,)`` for upright mean faces.
    n_iter : int
        Maximum ICP iterations (match mutual nearest neighbours, refit, stop when the pairs no
        longer change).
    return_distances : bool
        Also return each pair's distance (fraction of the RMS radius).

    Returns
    -------
    pairs : numpy.ndarray of int64, shape (K, 2)
        ``(index in a, index in b)``, mutual nearest neighbours within ``threshold``, sorted by
        the ``a`` index.
    distances : numpy.ndarray, shape (K,)
        Only with ``return_distances=True``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.0], [2.0, 1.0]])
    >>> b = 2.0 * a[[2, 0, 1]] + 5.0        # a subset, reordered, scaled and shifted
    >>> similar_landmark_pairs(a, b, 0.05).tolist()
    [[0, 1], [1, 2], [2, 0]]
    """
    A = check_shapes(mean_a, "mean_a", batch=False, min_points=2, check_degenerate=True)
    Bm = check_shapes(mean_b, "mean_b", batch=False, min_points=2, check_degenerate=True)
    threshold = check_positive(threshold, "threshold")
    n_iter = check_int(n_iter, "n_iter", min_value=1)
    size_a = _size(A)
    if not align:
        Bt = Bm.copy()
    elif anchors is not None:
        anc = check_array(anchors, "anchors", ndim=2, dtype=np.int64, shape=(None, 2))
        if len(anc) < 2:
            raise ValueError(f"anchors must hold at least 2 pairs, got {len(anc)}")
        if anc.min() < 0 or anc[:, 0].max() >= len(A) or anc[:, 1].max() >= len(Bm):
            raise ValueError(f"anchors index out of range for {len(A)} and {len(Bm)} points")
        s, R, t = fit_similarity(Bm[anc[:, 1]], A[anc[:, 0]])
        Bt = Bm @ (s * R).T + t
    else:
        Bt = _hypothesis_search(A, Bm, threshold * size_a, size_a / _size(Bm), rotations)

    def match(Bx, thr):
        d = np.linalg.norm(A[:, None, :] - Bx[None, :, :], axis=-1)
        ab = d.argmin(1)
        ba = d.argmin(0)
        ia = np.flatnonzero(ba[ab] == np.arange(len(A)))
        ib = ab[ia]
        keep = d[ia, ib] <= thr * size_a
        return np.stack([ia[keep], ib[keep]], 1), d[ia[keep], ib[keep]] / size_a

    if align:
        prev = None
        # a loose radius first (the initial alignment is rough), then the requested threshold
        for it in range(n_iter):
            thr = max(threshold, 0.5 * 0.5 ** it)
            pairs, _ = match(Bt, thr)
            if len(pairs) < 2:
                break
            s, R, t = fit_similarity(Bm[pairs[:, 1]], A[pairs[:, 0]])
            Bt = Bm @ (s * R).T + t
            key = pairs.tobytes()
            if key == prev and thr == threshold:
                break
            prev = key
    pairs, dist = match(Bt, threshold)
    order = np.argsort(pairs[:, 0], kind="stable")
    pairs = pairs[order].astype(np.int64)
    return (pairs, dist[order]) if return_distances else pairs

"""Evaluation metrics for facial landmark localisation.

* :func:`nme` — normalised mean error per face,
  :math:`\\mathrm{NME} = \\frac{1}{|V|} \\sum_{i \\in V} \\lVert \\hat{x}_i - x_i \\rVert / d`
  over the visible ground-truth points :math:`V`, with ``d`` the inter-ocular
  (outer eye corners), inter-pupil (eye centres), bounding-box
  (:math:`\\sqrt{wh}` of the ground-truth box) or box-diagonal
  (:math:`\\sqrt{w^2 + h^2}`) distance, or user-given per-face values.
* :func:`failure_rate`, :func:`ced`, :func:`auc` — the cumulative error
  distribution (CED) and its normalised area up to a threshold (trapezoid rule).
* :func:`point_var` — PIPNet's Point-Var (Jin, Liao & Shao, IJCV 2021, §4.3.2):
  the variance of the per-point differences between prediction and ground
  truth within each face, averaged over the faces.
* :func:`nme_curve` — LDDMM-Face's curve error :math:`\\mathrm{NME}_c` (Yang et
  al., ICLR 2022): the mean closest-point (ICP) distance between predicted and
  true curves, normalised like :func:`nme`; it needs no point-to-point
  correspondence, so prediction and ground truth may use different schemes.
  ``mode="lddmm_face"`` is the official definition (nearest vertex, averaged
  over five facial regions); the default ``"polyline"`` is flmcore's.

A zero or non-finite normalising distance never silently yields ``inf``: it
raises a :class:`ValueError` naming the faces, or gives NaN for those faces
when ``on_invalid="nan"``.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from ._validate import check_array, check_in, check_int, check_positive, check_shapes

__all__ = ["normalising_distance", "nme", "failure_rate", "ced", "auc", "point_var", "nme_curve", "curve_regions"]

_NORMS = ("interocular", "interpupil", "bbox", "diagonal", "face_box")


def _get_scheme(scheme, n_points, name="scheme"):
    from .schemes import Scheme, get_scheme

    if scheme is None:
        return None
    sch = get_scheme(scheme) if isinstance(scheme, str) else scheme
    if not isinstance(sch, Scheme):
        raise TypeError(f"{name} must be a Scheme or a scheme name, got {type(scheme).__name__}")
    if n_points is not None and sch.n_points != n_points:
        raise ValueError(f"{name} {sch.name!r} has {sch.n_points} points but the shapes have {n_points}")
    return sch


def normalising_distance(gt, norm: Union[str, float, np.ndarray] = "interocular", *, scheme=None,
                         on_invalid: str = "raise", boxes=None) -> np.ndarray:
    """Per-face normalising distance ``d`` used by :func:`nme`.

    The single definition of the box normalisers in flmcore (:mod:`flmcore.ssr`
    uses it too).

    Parameters
    ----------
    gt : array_like, shape (P, 2) or (B, P, 2)
        Ground-truth shapes (NaN = missing point).
    norm : {"interocular", "interpupil", "bbox", "diagonal", "face_box"} or float or array_like (B,)
        ``"interocular"``: distance of the outer eye corners
        (``scheme.interocular``); ``"interpupil"``: distance of the eye centres
        (``scheme.left_eye`` / ``right_eye`` means); ``"bbox"``:
        :math:`\\sqrt{w h}` of the ground-truth *landmark* box over present
        points; ``"diagonal"``: :math:`\\sqrt{w^2 + h^2}` of that box;
        ``"face_box"``: :math:`\\sqrt{w h}` of the given face rectangles
        ``boxes`` -- the AFLW protocol (Zhu et al., CVPR 2016; the HRNet,
        PIPNet and LDDMM-Face AFLW-19 evaluations), whose box is the dataset's
        face rectangle, not the box of the landmarks; a number or one value per
        face: used as given.
    scheme : Scheme or str, optional
        Needed for ``"interocular"`` and ``"interpupil"``.
    on_invalid : {"raise", "nan"}
        What to do with a zero / non-finite distance.
    boxes : array_like, shape (4,) or (B, 4), optional
        Face rectangles ``(x0, y0, x1, y1)`` (pixels) for ``"face_box"``.

    Returns
    -------
    ndarray, shape (B,) (shape () for a single face)

    Examples
    --------
    >>> import numpy as np
    >>> float(normalising_distance(np.array([[0.0, 0.0], [3.0, 4.0]]), "diagonal"))
    5.0
    >>> float(normalising_distance(np.zeros((19, 2)), "face_box", boxes=[10, 20, 110, 245]))
    150.0
    """
    g = check_shapes(gt, "gt", allow_nan=True)
    check_in(on_invalid, "on_invalid", ("raise", "nan"))
    single = g.ndim == 2
    g3 = g.reshape(-1, g.shape[-2], 2)
    B = g3.shape[0]
    if isinstance(norm, str):
        check_in(norm, "norm", _NORMS)
        if norm == "face_box":
            if boxes is None:
                raise ValueError("norm='face_box' needs the face rectangles: pass boxes=(B, 4) (x0, y0, x1, y1)")
            bx = check_array(boxes, "boxes", allow_nan=True)
            if bx.shape not in ((4,), (B, 4)) or (bx.ndim == 1 and not single and B != 1):
                raise ValueError(f"boxes must have shape (4,) for one face or ({B}, 4), got {bx.shape}")
            bx = bx.reshape(-1, 4)
            with np.errstate(invalid="ignore"):
                d = np.sqrt((bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1]))
        elif norm in ("interocular", "interpupil"):
            if scheme is None:
                raise ValueError(f"norm={norm!r} needs the annotation scheme: pass scheme=<name or Scheme>")
            sch = _get_scheme(scheme, g3.shape[1])
            d = sch.interocular_distance(g3) if norm == "interocular" else sch.interpupil_distance(g3)
        else:
            ok = np.isfinite(g3).all(-1)
            big = np.where(ok[..., None], g3, -np.inf).max(1)
            small = np.where(ok[..., None], g3, np.inf).min(1)
            with np.errstate(invalid="ignore"):
                wh = big - small
                d = np.sqrt(wh[:, 0] * wh[:, 1]) if norm == "bbox" else np.hypot(wh[:, 0], wh[:, 1])
            d = np.where(ok.sum(1) > 0, d, np.nan)
    else:
        arr = np.asarray(norm, dtype=np.float64) if np.ndim(norm) == 0 else check_array(
            norm, "norm", ndim=1, allow_nan=True)
        if arr.ndim == 1 and arr.shape[0] != B:
            raise ValueError(f"norm must be a number or have shape ({B},) (one value per face), got shape {arr.shape}")
        d = np.broadcast_to(arr, (B,)).astype(np.float64)
    d = np.asarray(d, dtype=np.float64)
    bad = ~(np.isfinite(d) & (d > 0))
    if bad.any():
        if on_invalid == "raise":
            idx = np.flatnonzero(bad)
            more = f" and {idx.size - 10} more" if idx.size > 10 else ""
            raise ValueError(f"normalising distance ({norm if isinstance(norm, str) else 'given'}) is zero or "
                             f"not finite for face index {idx[:10].tolist()}{more} (values "
                             f"{d[idx[:3]].tolist()}); pass on_invalid='nan' to get NaN for these faces")
        d = np.where(bad, np.nan, d)
    return d[0] if single else d


def _pair(pred, gt):
    p = check_shapes(pred, "pred")
    g = check_shapes(gt, "gt", allow_nan=True)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}")
    return p, g


def nme(pred, gt, norm: Union[str, float, np.ndarray] = "interocular", *, scheme=None,
        on_invalid: str = "raise", boxes=None) -> np.ndarray:
    """Normalised mean error per face.

    .. math:: \\mathrm{NME}_b = \\frac{1}{|V_b|} \\sum_{i \\in V_b}
              \\frac{\\lVert \\hat{x}_{b,i} - x_{b,i} \\rVert_2}{d_b}

    where :math:`V_b` are the present (non-NaN) ground-truth points.

    Parameters
    ----------
    pred : array_like, shape (P, 2) or (B, P, 2)
        Predicted landmarks (finite).
    gt : array_like, same shape
        Ground truth; NaN marks a missing point (left out of the mean).
    norm : str or float or array_like (B,)
        See :func:`normalising_distance`.
    scheme : Scheme or str, optional
        Annotation scheme (for the eye-based normalisations).
    on_invalid : {"raise", "nan"}
        A zero / non-finite normaliser (or a face without any present point)
        raises a ``ValueError`` naming the faces, or yields NaN for them.
    boxes : array_like, shape (4,) or (B, 4), optional
        Face rectangles for ``norm="face_box"`` (AFLW protocol).

    Returns
    -------
    ndarray, shape (B,) (shape () for a single face)
        Unitless errors (multiply by 100 for the usual percent).

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((68, 2)); gt[45] = (10.0, 0.0)     # inter-ocular distance 10
    >>> float(nme(gt + [0.0, 1.0], gt, scheme="ibug68"))
    0.1
    """
    p, g = _pair(pred, gt)
    d = normalising_distance(g, norm, scheme=scheme, on_invalid=on_invalid, boxes=boxes)
    err = np.linalg.norm(p - g, axis=-1)
    ok = ~np.isnan(err)
    n = ok.sum(-1)
    mean_err = np.where(ok, err, 0.0).sum(-1) / np.maximum(n, 1)
    empty = n == 0
    if np.any(empty):
        if on_invalid == "raise":
            raise ValueError(f"gt has no present point for face index {np.flatnonzero(np.atleast_1d(empty))[:10].tolist()}")
        mean_err = np.where(empty, np.nan, mean_err)
    return mean_err / d


def _errors(errors):
    e = check_array(errors, "errors", ndim=1)
    if (e < 0).any():
        raise ValueError(f"errors must be >= 0, got minimum {e.min()}")
    return e


def failure_rate(errors, threshold: float) -> float:
    """Fraction of faces whose error exceeds ``threshold`` (e.g. NME > 0.1).

    Parameters
    ----------
    errors : array_like, shape (N,)
        Per-face errors (finite, >= 0; drop NaN faces first).
    threshold : float
        Failure threshold (> 0).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> failure_rate([0.01, 0.05, 0.2, 0.11], 0.1)
    0.5
    """
    e = _errors(errors)
    th = check_positive(threshold, "threshold")
    return float(np.mean(e > th))


def ced(errors, max_threshold: float, n: int = 1001) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution on a uniform grid of thresholds.

    Parameters
    ----------
    errors : array_like, shape (N,)
    max_threshold : float
        Largest threshold (> 0).
    n : int
        Number of grid points ``0, ..., max_threshold`` (>= 2).

    Returns
    -------
    thresholds : ndarray (n,)
    fraction : ndarray (n,)
        ``mean(errors <= threshold)`` at each threshold.

    Examples
    --------
    >>> th, frac = ced([0.0, 0.5, 1.0, 3.0], 1.0, n=3)
    >>> th.tolist(), frac.tolist()
    ([0.0, 0.5, 1.0], [0.25, 0.5, 0.75])
    """
    e = np.sort(_errors(errors))
    th = np.linspace(0.0, check_positive(max_threshold, "max_threshold"), check_int(n, "n", min_value=2))
    frac = np.searchsorted(e, th, side="right") / e.size
    return th, frac


def auc(errors, threshold: float, n: int = 1001) -> float:
    """Area under the CED up to ``threshold``, normalised to [0, 1] (trapezoid rule).

    :math:`\\mathrm{AUC}_T = \\frac{1}{T} \\int_0^T \\mathrm{CED}(e)\\,de`
    evaluated with the trapezoid rule on ``n`` uniform thresholds (the grid of
    :func:`ced`). The exact area of the step CED is
    :math:`\\frac{1}{N T}\\sum_b \\max(0, T - e_b)`; the trapezoid value differs
    from it by at most :math:`1/(2(n-1))`.

    Parameters
    ----------
    errors : array_like, shape (N,)
    threshold : float
        Upper limit ``T`` (e.g. 0.08 or 0.1 for NME).
    n : int
        Grid size (>= 2).

    Returns
    -------
    float in [0, 1]

    Examples
    --------
    >>> round(auc([0.0, 0.0], 0.1), 6)
    1.0
    >>> round(auc([0.05], 0.1, n=3), 6)        # CED 0, 1, 1 -> (0.5 + 1) / 2
    0.75
    """
    th, frac = ced(errors, threshold, n)
    area = float(np.sum(0.5 * (frac[1:] + frac[:-1]) * np.diff(th)))
    return area / float(th[-1])


def point_var(pred, gt, norm: Union[str, float, np.ndarray, None] = "interocular", *, scheme=None,
              average: bool = True, on_invalid: str = "raise"):
    """PIPNet's Point-Var: per-face variance of the prediction errors, averaged.

    Zhou et al. (PIPNet, §4.3.2) "compute the variance of the difference
    between the ground-truth and the predictions for each test image, then
    average them over a test set". With :math:`\\delta_i = (\\hat{x}_i - x_i)/d`
    over the present points :math:`V` of a face,

    .. math:: \\mathrm{Var} = \\frac{1}{|V|}\\sum_{i \\in V}
              \\lVert \\delta_i - \\bar{\\delta} \\rVert^2

    (population variance of the 2-D difference vectors, summed over x and y),
    and Point-Var is its mean over faces. A constant offset of all points
    (pure bias) has zero Point-Var.

    Parameters
    ----------
    pred, gt : array_like, shape (P, 2) or (B, P, 2)
    norm : str, float, array_like (B,) or None
        Normaliser of the differences as in :func:`nme`; ``None`` keeps pixels.
    scheme : Scheme or str, optional
    average : bool
        Return the mean over faces (default) or the per-face values.
    on_invalid : {"raise", "nan"}

    Returns
    -------
    float, or ndarray (B,) with ``average=False``

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((4, 2)); pred = gt + [[1, 0], [-1, 0], [0, 1], [0, -1]]
    >>> point_var(pred, gt, norm=None)
    1.0
    """
    p, g = _pair(pred, gt)
    p3 = p.reshape(-1, p.shape[-2], 2)
    g3 = g.reshape(-1, g.shape[-2], 2)
    if norm is None:
        d = np.ones(len(g3))
    else:
        d = np.atleast_1d(normalising_distance(g3, norm, scheme=scheme, on_invalid=on_invalid))
    diff = (p3 - g3) / d[:, None, None]
    ok = np.isfinite(diff).all(-1)
    n = ok.sum(1)
    if on_invalid == "raise" and (n == 0).any():
        raise ValueError(f"gt has no present point for face index {np.flatnonzero(n == 0)[:10].tolist()}")
    diff0 = np.where(ok[..., None], diff, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu = diff0.sum(1) / n[:, None]
        dev = np.where(ok[..., None], diff0 - mu[:, None], 0.0)
        var = (dev ** 2).sum((1, 2)) / n
    var = np.where(n > 0, var, np.nan)
    if average:
        return float(np.mean(var))
    return var[0] if p.ndim == 2 else var


def _point_to_polyline(pts, poly, closed, vertices_only):
    """Distances ``(B, n)`` from points ``(B, n, 2)`` to polylines ``(B, m, 2)`` (NaN vertices dropped)."""
    if vertices_only or poly.shape[1] == 1:
        d = np.linalg.norm(pts[:, :, None, :] - poly[:, None, :, :], axis=-1)
    else:
        a = poly
        b = np.roll(poly, -1, axis=1) if closed else poly[:, 1:]
        a = a if closed else poly[:, :-1]
        ab = b - a                                       # (B, s, 2)
        ap = pts[:, :, None, :] - a[:, None, :, :]       # (B, n, s, 2)
        den = np.einsum("bsk,bsk->bs", ab, ab)
        with np.errstate(invalid="ignore", divide="ignore"):
            u = np.einsum("bnsk,bsk->bns", ap, ab) / den[:, None, :]
        u = np.where(den[:, None, :] > 0, np.clip(u, 0.0, 1.0), 0.0)
        d = np.linalg.norm(ap - u[..., None] * ab[:, None, :, :], axis=-1)
    d = np.where(np.isnan(d), np.inf, d)
    out = d.min(-1)
    return np.where(np.isinf(out), np.nan, out)


def nme_curve(pred, gt, scheme, *, gt_scheme=None, norm: Union[str, float, np.ndarray] = "interocular",
              mode: str = "polyline", on_invalid: str = "raise") -> np.ndarray:
    """LDDMM-Face curve error :math:`\\mathrm{NME}_c` per face.

    For every curve name shared by ``scheme`` and ``gt_scheme`` (jaw, brows,
    nose, eyes, lips, ...), each predicted curve point is matched to its
    closest point on the true curve and each true point to the closest point
    on the predicted curve (the ICP correspondence step, both directions).
    :math:`\\mathrm{NME}_c` is the mean of all these distances divided by the
    normalising distance of the ground truth. Curves are polylines through
    their ordered points (closed curves include the closing segment); with
    ``mode="points"`` only the vertices are candidates (closest landmark, as
    the LDDMM-Face evaluation code's nearest-neighbour variant).

    Parameters
    ----------
    pred : array_like, shape (P, 2) or (B, P, 2)
        Predictions in ``scheme``.
    gt : array_like, shape (Q, 2) or (B, Q, 2)
        Ground truth in ``gt_scheme`` (NaN = missing point: it is skipped and
        the polyline runs through the remaining points).
    scheme : Scheme or str
        Scheme of ``pred``.
    gt_scheme : Scheme or str, optional
        Scheme of ``gt`` (default: ``scheme``) — cross-annotation evaluation.
    norm : str or float or array_like (B,)
        Normaliser of ``gt`` (see :func:`normalising_distance`, with ``gt_scheme``).
    mode : {"polyline", "points", "lddmm_face"}
        ``"polyline"`` (flmcore default): point-to-segment distances pooled
        over all curve points.  ``"points"``: the same with vertices only.
        ``"lddmm_face"``: the official LDDMM-Face metric (``compute_curve_dist``
        of its ``lib/core/evaluation.py``): the points are grouped into five
        regions -- edge (jaw), eyebrows, nose, eyes, mouth (all curves of a
        region together, e.g. both eyes) -- and per region the nearest-*vertex*
        distances pred -> truth and truth -> pred are averaged together and
        divided by the normaliser; :math:`\\mathrm{NME}_c` is the mean over
        the regions present in both schemes (five for iBUG-68 and WFLW-98;
        a region whose true points are all missing in a face is left out of
        that face's mean).
        On HELEN it is about 1.5x the polyline value, because a point between
        two true vertices is not at distance 0.
    on_invalid : {"raise", "nan"}

    Returns
    -------
    ndarray, shape (B,) (shape () for a single face)

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((68, 2)); gt[:, 0] = np.arange(68.0); gt[45] = (10.0, 0.0)
    >>> pred = gt.copy(); pred[1:16, 0] += 0.5               # inner jaw points slide along it
    >>> float(nme_curve(pred, gt, "ibug68", norm=10.0))
    0.0
    >>> round(float(nme_curve(pred, gt, "ibug68", norm=10.0, mode="lddmm_face")), 4)  # vertices: 0.5 px off
    0.0088
    """
    sch = _get_scheme(scheme, None)
    gsch = sch if gt_scheme is None else _get_scheme(gt_scheme, None, "gt_scheme")
    p = check_shapes(pred, "pred", n_points=sch.n_points)
    g = check_shapes(gt, "gt", allow_nan=True, n_points=gsch.n_points)
    if p.ndim != g.ndim or (p.ndim == 3 and p.shape[0] != g.shape[0]):
        raise ValueError(f"pred and gt must hold the same number of faces, got shapes {p.shape} and {g.shape}")
    check_in(mode, "mode", ("polyline", "points", "lddmm_face"))
    single = p.ndim == 2
    p3 = p.reshape(-1, sch.n_points, 2)
    g3 = g.reshape(-1, gsch.n_points, 2)
    d = np.atleast_1d(normalising_distance(g3, norm, scheme=gsch, on_invalid=on_invalid))
    if mode == "lddmm_face":
        out = _nme_curve_regions(p3, g3, sch, gsch, d, on_invalid)
        return out[0] if single else out
    names = [c.name for c in sch.curves if c.name in set(gsch.curve_names)]
    if not names:
        raise ValueError(f"schemes {sch.name!r} and {gsch.name!r} share no curve name")
    total = np.zeros(len(p3))
    count = np.zeros(len(p3))
    for name in names:  # a handful of curves; each step vectorised over faces
        cp, cg = sch.curve(name), gsch.curve(name)
        P_ = p3[:, list(cp.indices)]
        G_ = g3[:, list(cg.indices)]
        closed = cp.closed and cg.closed
        vo = mode == "points"
        d1 = _point_to_polyline(P_, _compact(G_), closed, vo)   # pred -> true curve
        d2 = _point_to_polyline(G_, P_, closed, vo)             # true -> predicted curve
        for dd in (d1, d2):
            ok = ~np.isnan(dd)
            total += np.where(ok, dd, 0.0).sum(1)
            count += ok.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = total / count / d
    if on_invalid == "raise" and (count == 0).any():
        raise ValueError(f"no present curve point for face index {np.flatnonzero(count == 0)[:10].tolist()}")
    return out[0] if single else out


#: The five regions of the official LDDMM-Face curve error, by curve-name prefix.
_LDDMM_REGIONS = (("edge", ("jaw",)), ("eyebrow", ("brow",)), ("nose", ("nose",)), ("eye", ("eye",)),
                  ("mouth", ("lip", "mouth")))


def curve_regions(scheme) -> dict:
    """Point indices of the five LDDMM-Face error regions of a scheme (edge, eyebrow, nose, eye, mouth).

    Each region is the union of the scheme's curves whose names start with
    ``jaw``, ``brow``, ``nose``, ``eye`` or ``lip``/``mouth``; isolated points
    (pupils) belong to none.  For iBUG-68 these are the official groups
    0-16, 17-26, 27-35, 36-47, 48-67; a region a scheme lacks is absent.

    Examples
    --------
    >>> r = curve_regions("ibug68")
    >>> list(r), r["nose"][[0, -1]].tolist()
    (['edge', 'eyebrow', 'nose', 'eye', 'mouth'], [27, 35])
    """
    sch = _get_scheme(scheme, None)
    out = {}
    for region, prefixes in _LDDMM_REGIONS:
        idx = sorted({i for c in sch.curves if c.name.startswith(prefixes) for i in c.indices})
        if idx:
            out[region] = np.asarray(idx, dtype=np.int64)
    return out


def _nme_curve_regions(p3, g3, sch, gsch, d, on_invalid):
    """Official LDDMM-Face NME_c: per region, mean of both nearest-vertex distance sets / d; mean over regions."""
    rp, rg = curve_regions(sch), curve_regions(gsch)
    names = [r for r in rp if r in rg]
    if not names:
        raise ValueError(f"schemes {sch.name!r} and {gsch.name!r} share no LDDMM-Face region")
    per = np.full((len(p3), len(names)), np.nan)
    for k, r in enumerate(names):
        P_, G_ = p3[:, rp[r]], g3[:, rg[r]]
        dist = np.linalg.norm(P_[:, :, None, :] - G_[:, None, :, :], axis=-1)    # (B, n, m)
        dist = np.where(np.isnan(dist), np.inf, dist)
        d1 = dist.min(2)                                                           # pred -> nearest true vertex
        d2 = np.where(np.isnan(G_).any(-1), np.inf, dist.min(1))                   # true -> nearest pred vertex
        both = np.concatenate([d1, d2], 1)
        ok = np.isfinite(both)
        with np.errstate(invalid="ignore", divide="ignore"):
            per[:, k] = np.where(ok, both, 0.0).sum(1) / ok.sum(1) / d
    # a region whose true points are all missing in a face is left out of that face's mean
    # (it used to make the whole face NaN, reported as "no present curve point")
    has = ~np.isnan(per)
    n_reg = has.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(has, per, 0.0).sum(1) / n_reg
    if on_invalid == "raise" and np.isnan(out).any():
        raise ValueError(f"no present curve point for face index {np.flatnonzero(np.isnan(out))[:10].tolist()}")
    return out


def _compact(G):
    """Move NaN vertices of each polyline to the end (the remaining points keep their order)."""
    ok = np.isfinite(G).all(-1)
    if ok.all():
        return G
    order = np.argsort(~ok, axis=1, kind="stable")
    Gc = np.take_along_axis(G, order[..., None], axis=1)
    # a NaN vertex makes its segments NaN; duplicate the last valid vertex so no gap joins the ends wrongly
    n = ok.sum(1)
    last = np.take_along_axis(Gc, np.maximum(n - 1, 0)[:, None, None].repeat(2, -1), axis=1)
    idx = np.arange(G.shape[1])[None, :]
    return np.where((idx < n[:, None])[..., None], Gc, last)

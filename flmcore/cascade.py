"""Cascaded shape regression on shape-indexed SIFT: the Supervised Descent Method (SDM).

Xiong & De la Torre (CVPR 2013): starting from the mean shape placed by the face box,
``K`` stages update the shape by a linear regression of the shape-indexed SIFT features,

.. math:: S^{k} = S^{k-1} + b \\, (\\phi(I, S^{k-1}) R_k + r_k),

where ``b`` is the box size (the regressors work in box units, so they are scale-free).
Each ``R_k`` is a ridge regression (closed form) fitted on Monte-Carlo perturbed
initialisations of the training faces.  DRN-SSR (eq. 10) keeps this pipeline and replaces
``R_k`` by a deep network (:class:`flmcore.nn.models.DRNCascade`).

Boxes are ``(x0, y0, x1, y1)`` pixel corners.  Nothing here imports torch.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import scipy.linalg
from sklearn.base import BaseEstimator

from ._validate import (check_array, check_images, check_int, check_nonnegative, check_num_threads,
                        check_positive, check_rng, check_shapes)
from .sift import OPENCV_SMOOTH, shape_indexed_sift

__all__ = ["SDM", "check_boxes", "box_frames", "place_mean_shape", "ridge_fit", "perturbation_model",
           "to_box_units", "from_box_units", "normalise_faces"]


def check_boxes(boxes, n: Optional[int] = None, name: str = "boxes") -> np.ndarray:
    """Validate face boxes ``(B, 4)`` of ``(x0, y0, x1, y1)`` corners (float64, ``x1 > x0``, ``y1 > y0``).

    Examples
    --------
    >>> check_boxes([[0, 0, 10, 20]]).dtype
    dtype('float64')
    """
    b = check_array(boxes, name, ndim=2, shape=(4,))
    if n is not None and b.shape[0] != n:
        raise ValueError(f"{name} must hold one box per face ({n}), got {b.shape[0]}")
    if not ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all():
        raise ValueError(f"{name} must have x1 > x0 and y1 > y0 (corners x0, y0, x1, y1)")
    return b


def box_frames(boxes) -> Tuple[np.ndarray, np.ndarray]:
    """Centres ``(B, 2)`` and sizes ``(B,)`` (geometric mean of width and height) of boxes.

    Examples
    --------
    >>> c, s = box_frames([[0, 0, 10, 40]])
    >>> c.tolist(), s.tolist()
    ([[5.0, 20.0]], [20.0])
    """
    b = check_boxes(boxes)
    centre = 0.5 * (b[:, :2] + b[:, 2:])
    size = np.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    return centre, size


def place_mean_shape(mean, boxes) -> np.ndarray:
    """Map a box-normalised mean shape (centre 0, box size 1) into each box: ``(B, P, 2)``.

    Examples
    --------
    >>> place_mean_shape([[0.0, 0.0], [0.5, 0.0]], [[0, 0, 10, 10]]).tolist()
    [[[5.0, 5.0], [10.0, 5.0]]]
    """
    m = check_shapes(mean, "mean", batch=False)
    c, s = box_frames(boxes)
    return c[:, None, :] + s[:, None, None] * m[None]


def ridge_fit(X, Y, alpha: float) -> Tuple[np.ndarray, np.ndarray]:
    """Ridge regression with intercept, closed form: ``min ||X R + r - Y||^2 + lam ||R||^2``.

    ``lam = alpha * trace(Xc^T Xc) / n_features`` (scale-free ``alpha``); the dual
    system ``(Xc Xc^T + lam I)`` is solved when there are fewer samples than features.

    Returns
    -------
    R : ndarray, shape (n_features, n_targets)
    r : ndarray, shape (n_targets,)

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(50, 3))
    >>> R, r = ridge_fit(X, X @ [1.0, 2.0, 3.0] + 4.0, alpha=1e-9)
    >>> np.round(R.ravel(), 6).tolist(), round(float(r[0]), 6)
    ([1.0, 2.0, 3.0], 4.0)
    """
    X = check_array(X, "X", ndim=2)
    Y = check_array(Y, "Y", ndim=(1, 2))
    one = Y.ndim == 1
    Y = Y[:, None] if one else Y
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
    alpha = check_nonnegative(alpha, "alpha", finite=True)
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    n, d = Xc.shape
    lam = alpha * float((Xc * Xc).sum()) / d
    if n < d:
        G = Xc @ Xc.T
        G[np.diag_indices_from(G)] += lam
        R = Xc.T @ scipy.linalg.solve(G, Yc, assume_a="pos" if lam > 0 else "sym")
    else:
        G = Xc.T @ Xc
        G[np.diag_indices_from(G)] += lam
        R = scipy.linalg.solve(G, Xc.T @ Yc, assume_a="pos" if lam > 0 else "sym")
    r = ym - xm @ R
    return R, r


def perturbation_model(mean, shapes, boxes) -> np.ndarray:
    """Mean and standard deviation of the similarity from the box-placed mean to the true shapes.

    Returns ``(2, 4)``: rows mean / std of ``(log scale, tx / box, ty / box, angle)``; the
    distribution of the face detector's offsets that SDM's Monte-Carlo initialisations
    sample from.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.array([[-0.2, 0.0], [0.2, 0.0], [0.0, 0.3]])
    >>> perturbation_model(m, m[None] * 10 + 5, [[0, 0, 10, 10]]).round(6).tolist()[0]
    [0.0, 0.0, 0.0, 0.0]
    """
    from .procrustes import align

    S = check_shapes(shapes, "shapes", batch=True)
    b = check_boxes(boxes, S.shape[0])
    init = place_mean_shape(mean, b)
    _, size = box_frames(b)
    _, T = align(init, S)
    ang = np.arctan2(T.rotation[:, 1, 0], T.rotation[:, 0, 0])
    # translation of the centroid, in box units
    shift = (S.mean(1) - init.mean(1)) / size[:, None]
    p = np.column_stack([np.log(T.scale), shift, ang])
    return np.stack([p.mean(0), p.std(0)])


def _perturb(mean, boxes, model, n, rng) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` initial shapes per box drawn from the perturbation model; returns (shapes, box index)."""
    init = place_mean_shape(mean, boxes)
    _, size = box_frames(boxes)
    B, P, _ = init.shape
    idx = np.repeat(np.arange(B), n)
    draws = model[0] + model[1] * rng.standard_normal((B * n, 4))
    s, a = np.exp(draws[:, 0]), draws[:, 3]
    R = np.stack([np.stack([np.cos(a), -np.sin(a)], -1), np.stack([np.sin(a), np.cos(a)], -1)], -2)
    x = init[idx]
    c = x.mean(1, keepdims=True)
    x = s[:, None, None] * np.einsum("bij,bpj->bpi", R, x - c) + c
    x = x + (draws[:, 1:3] * size[idx, None])[:, None, :]
    return x, idx


class SDM(BaseEstimator):
    """Supervised Descent Method: a cascade of ridge regressors on shape-indexed SIFT.

    Parameters
    ----------
    n_stages : int
        Number of linear stages ``K``.
    alpha : float
        Ridge strength (scale-free, see :func:`ridge_fit`).
    n_perturbations : int
        Monte-Carlo initialisations per training face.
    window : float
        SIFT window side as a fraction of the box size.
    smooth : float
        Gaussian pre-smoothing of the SIFT images (pixels), see
        :func:`flmcore.sift.shape_indexed_sift`.
    rng : int or numpy.random.Generator, optional
        Seed of the perturbations.
    num_threads : int, optional
        Threads of the SIFT kernel.

    Attributes
    ----------
    mean_shape_ : ndarray, shape (P, 2)
        Mean shape in box units (centre 0, size 1).
    perturbation_ : ndarray, shape (2, 4)
        See :func:`perturbation_model`.
    stages_ : list of (R, r)
        Regressors ``(128 P, 2 P)`` and intercepts ``(2 P,)``.
    train_error_ : list of float
        Mean point-to-point error (box units) of the training samples after each stage
        (index 0: the perturbed initialisations).

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.data import load_sample
    >>> d = load_sample("helen_pairs")
    >>> boxes = np.tile([0.0, 0.0, 128.0, 128.0], (40, 1))
    >>> sdm = SDM(n_stages=2, n_perturbations=2, rng=0).fit(d["images"][:40], d["shapes29"][:40], boxes)
    >>> sdm.predict(d["images"][40:42], boxes[:2]).shape
    (2, 29, 2)
    """

    def __init__(self, n_stages: int = 4, alpha: float = 0.05, n_perturbations: int = 10, window: float = 0.2,
                 smooth: float = OPENCV_SMOOTH, rng=None, num_threads: Optional[int] = None):
        self.n_stages = n_stages
        self.alpha = alpha
        self.n_perturbations = n_perturbations
        self.window = window
        self.smooth = smooth
        self.rng = rng
        self.num_threads = num_threads

    def _features(self, images, shapes, size, idx=None):
        imgs = images if idx is None else images[idx]
        f = shape_indexed_sift(imgs, shapes, window=self.window * size[:, None], smooth=self.smooth,
                               num_threads=self.num_threads)
        return f.reshape(f.shape[0], -1).astype(np.float64)

    def fit(self, images, shapes, boxes) -> "SDM":
        """Learn the mean shape, the perturbation model and the ``K`` ridge stages.

        Parameters
        ----------
        images : array_like, shape (B, H, W)
            Grayscale training images.
        shapes : array_like, shape (B, P, 2)
            Ground-truth landmarks (pixels).
        boxes : array_like, shape (B, 4)
            Face boxes ``(x0, y0, x1, y1)``.
        """
        check_int(self.n_stages, "n_stages", min_value=1)
        check_int(self.n_perturbations, "n_perturbations", min_value=1)
        check_positive(self.window, "window")
        check_num_threads(self.num_threads)
        imgs = check_images(images, "images", batch=True)
        S = check_shapes(shapes, "shapes", batch=True)
        if S.shape[0] != imgs.shape[0]:
            raise ValueError(f"images and shapes must hold the same number of faces, got {imgs.shape[0]} and "
                             f"{S.shape[0]}")
        b = check_boxes(boxes, S.shape[0])
        rng = check_rng(self.rng)
        centre, size = box_frames(b)
        self.mean_shape_ = ((S - centre[:, None]) / size[:, None, None]).mean(0)
        self.perturbation_ = perturbation_model(self.mean_shape_, S, b)
        x, idx = _perturb(self.mean_shape_, b, self.perturbation_, int(self.n_perturbations), rng)
        sz = size[idx]
        self.stages_: List[Tuple[np.ndarray, np.ndarray]] = []
        self.train_error_ = [float(np.linalg.norm((x - S[idx]) / sz[:, None, None], axis=-1).mean())]
        for _ in range(int(self.n_stages)):
            F = self._features(imgs, x, sz, idx)
            Y = ((S[idx] - x) / sz[:, None, None]).reshape(len(idx), -1)
            R, r = ridge_fit(F, Y, self.alpha)
            self.stages_.append((R, r))
            x = x + sz[:, None, None] * (F @ R + r).reshape(x.shape)
            self.train_error_.append(float(np.linalg.norm((x - S[idx]) / sz[:, None, None], axis=-1).mean()))
        self.n_points_ = S.shape[1]
        return self

    def predict(self, images, boxes, *, init=None, return_stages: bool = False):
        """Align faces: start from the box-placed mean shape (or ``init``) and run the stages.

        Parameters
        ----------
        images : array_like, shape (B, H, W)
        boxes : array_like, shape (B, 4)
        init : array_like, shape (B, P, 2), optional
            Initial shapes (default: the mean shape placed by the boxes).
        return_stages : bool
            Also return the ``(K + 1, B, P, 2)`` estimates after each stage.

        Returns
        -------
        ndarray, shape (B, P, 2)
        """
        if not hasattr(self, "stages_"):
            raise RuntimeError("SDM is not fitted; call fit(images, shapes, boxes) first")
        imgs = check_images(images, "images", batch=True)
        b = check_boxes(boxes, imgs.shape[0])
        _, size = box_frames(b)
        x = place_mean_shape(self.mean_shape_, b) if init is None else \
            check_shapes(init, "init", batch=True, n_points=self.n_points_).copy()
        if x.shape[0] != imgs.shape[0]:
            raise ValueError(f"init must hold one shape per image ({imgs.shape[0]}), got {x.shape[0]}")
        hist = [x]
        for R, r in self.stages_:
            F = self._features(imgs, x, size)
            x = x + size[:, None, None] * (F @ R + r).reshape(x.shape)
            hist.append(x)
        return (x, np.stack(hist)) if return_stages else x


def to_box_units(shapes, boxes) -> np.ndarray:
    """Pixels -> box units (box centre at 0, box size 1): ``(S - centre) / size``.

    Examples
    --------
    >>> to_box_units([[[10.0, 5.0]]], [[0, 0, 10, 10]]).tolist()
    [[[0.5, 0.0]]]
    """
    S = check_shapes(shapes, "shapes", batch=True)
    c, s = box_frames(check_boxes(boxes, S.shape[0]))
    return (S - c[:, None]) / s[:, None, None]


def from_box_units(units, boxes) -> np.ndarray:
    """Box units -> pixels, the inverse of :func:`to_box_units`.

    Examples
    --------
    >>> from_box_units([[[0.5, 0.0]]], [[0, 0, 10, 10]]).tolist()
    [[[10.0, 5.0]]]
    """
    U = check_shapes(units, "units", batch=True)
    c, s = box_frames(check_boxes(boxes, U.shape[0]))
    return c[:, None] + s[:, None, None] * U


def normalise_faces(images, boxes, size: int) -> np.ndarray:
    """Resample every face box to a ``size x size`` image (bilinear; DRN-SSR's 80 / 140 px faces).

    Face pixel ``(i, j)`` samples the image at ``x = x0 + (j + 0.5) w / size - 0.5`` (and
    likewise ``y``), so box units map to face pixels by ``x_face = (u + 1/2) size - 1/2``
    for a square box.  Outside the image the face is zero.

    Parameters
    ----------
    images : array_like, shape (B, H, W)
    boxes : array_like, shape (B, 4)
    size : int

    Returns
    -------
    ndarray of float32, shape (B, size, size)

    Examples
    --------
    >>> import numpy as np
    >>> normalise_faces(np.ones((1, 8, 8), np.float32), [[0, 0, 8, 8]], 4).shape
    (1, 4, 4)
    """
    from scipy import ndimage

    imgs = check_images(images, "images", batch=True)
    b = check_boxes(boxes, imgs.shape[0])
    size = check_int(size, "size", min_value=3)
    out = np.empty((imgs.shape[0], size, size), np.float32)
    g = (np.arange(size) + 0.5) / size
    for k in range(imgs.shape[0]):
        x0, y0, x1, y1 = b[k]
        xs = x0 + g * (x1 - x0) - 0.5
        ys = y0 + g * (y1 - y0) - 0.5
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        out[k] = ndimage.map_coordinates(imgs[k], [yy, xx], order=1, mode="constant", cval=0.0)
    return out

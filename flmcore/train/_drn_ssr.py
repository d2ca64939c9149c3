"""DRN-SSR training: deep regression cascade coupled with sparse shape regression (§3.2).

Datasets ``D_1 .. D_n`` are annotated in different schemes; the model predicts the union
of their landmarks (:class:`flmcore.ssr.SchemeUnion` gives the union layout and the
common points).  For every stage ``k``:

1. (stage 1 only, unless ``H_init`` is given) initialise ``F`` with the selection
   function :math:`\\delta_i` (eq. 11): shared hidden layers, output rows of scheme ``i``
   trained only on dataset ``i``;
2. alternate ``n_alternations`` times: given ``F``, fit every ``H_i`` row by row with the
   L1-constrained least squares of eq. (12-14) (:func:`flmcore.ssr.lars_lasso`,
   ``||h||_1 <= tau``); given ``H``, fit ``F`` on the targets ``H_i S_i`` (eq. 15);
3. move the shapes with ``F_k``; stage ``k + 1`` starts from ``H`` of stage ``k``.

``H_i`` acts on shapes in face-frame coordinates (box units shifted to ``[0, 1]``), so
a row of ``H_i`` is a sparse, nearly convex combination of the defined points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch

from .._validate import check_images, check_int, check_nonnegative, check_rng, check_shapes
from ..cascade import check_boxes, from_box_units, perturbation_model, to_box_units
from ..nn._drn import DRNCascade
from ..sift import OPENCV_SMOOTH
from ..ssr import SchemeUnion, lars_lasso, shapes_to_design

__all__ = ["DRNSSRResult", "fit_drn_ssr", "drn_ssr_init"]


@dataclass
class DRNSSRResult:
    """Output of :func:`fit_drn_ssr`.

    Attributes
    ----------
    model : DRNCascade
        The cascade predicting the union landmarks (``model.predict(images, boxes)``).
    H : list of ndarray, shape (p, p_i)
        Sparse shape regression matrices of the last stage (eq. 8), rows in union order.
    union : SchemeUnion
        Union layout (``union.index_[i]`` = union indices of scheme ``i``'s points).
    history : list of dict
        One entry per stage and alternation: ``stage``, ``iteration``, ``objective_F``
        (eq. 9 data term, mean squared box units per face), ``objective_H`` (eq. 12), and
        ``l1_max`` (largest row L1 norm of the fitted ``H``).
    """

    model: DRNCascade
    H: List[np.ndarray]
    union: SchemeUnion
    history: List[dict] = field(default_factory=list)

    def predict(self, images, boxes) -> np.ndarray:
        """Union landmarks ``(B, p, 2)`` in pixels."""
        return self.model.predict(images, boxes)


def _fit_H(U_i: np.ndarray, pred: np.ndarray, own: np.ndarray, p: int, tau: float,
           num_threads: Optional[int]) -> np.ndarray:
    """Eq. (12-14) for one dataset: rows of the defined points are the identity (E)."""
    pi = U_i.shape[1]
    H = np.zeros((p, pi))
    H[own, np.arange(pi)] = 1.0
    other = np.setdiff1d(np.arange(p), own)
    if other.size:
        X = shapes_to_design(U_i + 0.5)
        Y = shapes_to_design(pred[:, other] + 0.5)
        saved = torch.get_num_threads()
        try:
            H[other] = lars_lasso(X, Y, tau, num_threads=num_threads)
        finally:
            # the LARS kernel's OpenMP runtime may change the shared thread count
            torch.set_num_threads(saved)
    return H


def _apply_H(H: np.ndarray, U_i: np.ndarray) -> np.ndarray:
    return np.einsum("qp,npc->nqc", H, U_i + 0.5) - 0.5


def drn_ssr_init(shapes, boxes, predicted, schemes: Sequence, dataset: int, *, tau: float = 1.4,
                 num_threads: Optional[int] = None) -> np.ndarray:
    """``H_i`` of the two-step 'Deep+Sparse' baseline (DRN-SSR §4.2.1), for ``H_init`` of :func:`fit_drn_ssr`.

    Dataset ``i``'s own points map to themselves (the identity rows ``E``); every
    union point that scheme ``i`` lacks gets the L1-constrained least-squares row of
    eq. (12-14) that best reproduces ``predicted`` (e.g. another scheme's model run
    on dataset ``i``'s faces) from dataset ``i``'s own landmarks, in face-box units.

    Parameters
    ----------
    shapes : (N, p_i, 2)
        Dataset ``i``'s landmarks in pixels.
    boxes : (N, 4)
        Face boxes ``(x0, y0, x1, y1)``.
    predicted : (N, p, 2)
        Union landmarks in pixels (union order of :class:`flmcore.ssr.SchemeUnion`);
        only the rows of the points scheme ``i`` lacks are used (others may be NaN).
    schemes : sequence of str or Scheme
        The schemes of :func:`fit_drn_ssr`.
    dataset : int
        ``i``.
    tau : float
        L1 budget of every row (eq. 7).
    num_threads : int, optional
        Threads of the LARS kernel.

    Returns
    -------
    ndarray, shape (p, p_i)

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.data import load_sample
    >>> from flmcore.ssr import SchemeUnion
    >>> d = load_sample("helen_pairs")
    >>> u = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"])
    >>> guess = np.full((40, u.n_union_, 2), np.nan)
    >>> guess[:, u.index_[1]] = d["shapes29"][:40]          # the 29 points of the same faces
    >>> box = np.tile([0.0, 0.0, 128.0, 128.0], (40, 1))
    >>> drn_ssr_init(d["shapes68"][:40], box, guess, ["ibug68", "helen_zhou29"], 0).shape
    (76, 68)
    """
    union = SchemeUnion.from_schemes([getattr(s, "name", s) for s in schemes])
    i = check_int(dataset, "dataset", min_value=0)
    if i >= len(union.index_):
        raise ValueError(f"dataset must be < {len(union.index_)} (the number of schemes), got {i}")
    S = check_shapes(shapes, "shapes", batch=True, n_points=union.n_points[i])
    b = check_boxes(boxes, S.shape[0], name="boxes")
    P = np.asarray(predicted, dtype=np.float64)
    if P.shape != (S.shape[0], union.n_union_, 2):
        raise ValueError(f"predicted must have shape ({S.shape[0]}, {union.n_union_}, 2), got {P.shape}")
    own = np.asarray(union.index_[i])
    other = np.setdiff1d(np.arange(union.n_union_), own)
    if not np.isfinite(P[:, other]).all():
        raise ValueError(f"predicted must be finite at the union points that the scheme of dataset {i} lacks")
    P = P.copy()
    P[:, own] = 0.0
    tau = check_nonnegative(tau, "tau", finite=True)
    return _fit_H(to_box_units(S, b), to_box_units(P, b), own, union.n_union_, tau, num_threads)


def fit_drn_ssr(datasets: Sequence, schemes: Sequence, *, n_stages: int = 4,
                hidden: Sequence[int] = (1296, 784, 400), face_sizes: Sequence[int] = (80, 80, 140, 140),
                window: float = 0.3, smooth: float = OPENCV_SMOOTH, tau: float = 1.4, n_alternations: int = 2,
                n_perturbations: int = 5, optimizer: str = "lbfgs", max_iter: int = 100,
                weight_decay: float = 1e-3, H_init: Optional[Sequence[np.ndarray]] = None,
                alternate: bool = True, rng=None, progress: bool = True,
                num_threads: Optional[int] = None, target_scale: str = "per_dim") -> DRNSSRResult:
    """Train DRN-SSR (eq. 9-15) on datasets annotated in different schemes.

    Parameters
    ----------
    datasets : sequence of (images, shapes, boxes)
        Dataset ``i``: images ``(N_i, H, W)``, its own landmarks ``(N_i, p_i, 2)`` in
        pixels, face boxes ``(N_i, 4)`` as ``(x0, y0, x1, y1)``.
    schemes : sequence of str or Scheme
        Scheme of each dataset (common points from :func:`flmcore.schemes.correspondences`).
    n_stages, hidden, face_sizes, window, smooth
        Cascade layout, see :class:`flmcore.nn.models.DRNCascade`.
    tau : float
        L1 budget of every row of ``H`` (eq. 7; 1.4 in the paper).
    n_alternations : int
        ``H``/``F`` alternations per stage (§3.2.2).
    n_perturbations : int
        Monte-Carlo initialisations per face.
    optimizer, max_iter, weight_decay
        Training of every network, see :meth:`DRNCascade.fit_stage` (``weight_decay``
        is the paper's alpha = 0.001).
    H_init : sequence of ndarray (p, p_i), optional
        Start from these ``H`` (skips the eq. 11 initialisation).  With
        ``alternate=False`` they stay fixed: the two-step 'Deep+Sparse' baseline.
    alternate : bool
        Refit ``H`` from ``F`` (the coupled method).  ``False`` requires ``H_init``.
    rng : int or Generator, optional
    progress : bool
        Show a tqdm progress bar over stages and alternations.
    num_threads : int, optional
        Threads of the SIFT and LARS kernels.
    target_scale : {"per_dim", "global"}
        Target standardisation of every network (:meth:`DRNCascade.fit_stage`):
        ``"global"`` keeps eq. (15)'s unweighted squared error, ``"per_dim"``
        (flmcore's default) weighs every output coordinate by its inverse
        variance.

    Returns
    -------
    DRNSSRResult

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.data import load_sample
    >>> d = load_sample("helen_pairs")
    >>> box = np.tile([0.0, 0.0, 128.0, 128.0], (20, 1))
    >>> ds = [(d["images"][:20], d["shapes68"][:20], box), (d["images"][20:40], d["shapes29"][20:40], box)]
    >>> res = fit_drn_ssr(ds, ["ibug68", "helen_zhou29"], n_stages=1, hidden=(8,), face_sizes=(48,),
    ...                   n_alternations=1, n_perturbations=1, max_iter=3, rng=0, progress=False)
    >>> res.predict(d["images"][:2], box[:2]).shape, len(res.history)
    ((2, 76, 2), 2)
    """
    if len(datasets) != len(schemes) or len(schemes) < 2:
        raise ValueError(f"datasets and schemes must be sequences of the same length >= 2, got {len(datasets)} "
                         f"and {len(schemes)}")
    n_stages = check_int(n_stages, "n_stages", min_value=1)
    n_alternations = check_int(n_alternations, "n_alternations", min_value=0)
    n_perturbations = check_int(n_perturbations, "n_perturbations", min_value=1)
    tau = check_nonnegative(tau, "tau", finite=True)
    if not alternate and H_init is None:
        raise ValueError("alternate=False (two-step training) needs H_init")
    union = SchemeUnion.from_schemes([getattr(s, "name", s) for s in schemes])
    p = union.n_union_
    gen = check_rng(rng)
    n = len(datasets)
    imgs, U, boxes = [], [], []
    for i, item in enumerate(datasets):
        if len(item) != 3:
            raise ValueError(f"datasets[{i}] must be (images, shapes, boxes)")
        im = check_images(item[0], f"datasets[{i}] images", batch=True)
        S = check_shapes(item[1], f"datasets[{i}] shapes", batch=True, n_points=union.n_points[i])
        if S.shape[0] != im.shape[0]:
            raise ValueError(f"datasets[{i}]: {im.shape[0]} images but {S.shape[0]} shapes")
        b = check_boxes(item[2], S.shape[0], name=f"datasets[{i}] boxes")
        imgs.append(im)
        U.append(to_box_units(S, b))
        boxes.append(b)
    own = [np.asarray(union.index_[i]) for i in range(n)]
    if H_init is not None:
        H = [np.asarray(h, np.float64) for h in H_init]
        for i, h in enumerate(H):
            if h.shape != (p, union.n_points[i]):
                raise ValueError(f"H_init[{i}] must have shape ({p}, {union.n_points[i]}), got {h.shape}")
    else:
        H = None

    # union mean shape (box units): each point averaged over the datasets that define it
    acc, cnt = np.zeros((p, 2)), np.zeros(p)
    for i in range(n):
        np.add.at(acc, own[i], U[i].sum(0))
        np.add.at(cnt, own[i], U[i].shape[0])
    mean = acc / cnt[:, None]
    pert = np.mean([perturbation_model(mean[own[i]], from_box_units(U[i], boxes[i]), boxes[i])
                    for i in range(n)], axis=0)
    model = DRNCascade(p, n_stages=n_stages, hidden=hidden, face_sizes=face_sizes, window=window, smooth=smooth,
                       num_threads=num_threads)
    model.set_mean_shape(mean, pert)

    # Monte-Carlo initialisations per dataset (box units)
    idx, xu = [], []
    for i in range(n):
        x, ix = model.initial_shapes(boxes[i], n_perturbations, gen)
        idx.append(ix)
        xu.append(to_box_units(x, boxes[i][ix]))
    sizes = np.cumsum([0] + [len(ix) for ix in idx])
    torch_gen = torch.Generator().manual_seed(int(gen.integers(2 ** 31)))
    fit_kw = dict(optimizer=optimizer, max_iter=max_iter, weight_decay=weight_decay, generator=torch_gen,
                  target_scale=target_scale)

    steps = [(k, a) for k in range(n_stages) for a in range(-1, n_alternations if alternate else 0)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(steps), desc="DRN-SSR")
    history: List[dict] = []

    def targets():
        return np.concatenate([_apply_H(H[i], U[i][idx[i]]) - xu[i] for i in range(n)])

    def objectives(k, X, Xcur):
        with torch.no_grad():
            pred = model.step(k, X, torch.from_numpy(Xcur)).numpy()
        objF = float(((np.concatenate([_apply_H(H[i], U[i][idx[i]]) for i in range(n)]) - pred) ** 2)
                     .sum((1, 2)).mean())
        return pred, objF

    for k in range(n_stages):
        X = torch.cat([model.features(k, imgs[i][idx[i]], boxes[i][idx[i]], from_box_units(xu[i], boxes[i][idx[i]]))
                       for i in range(n)])
        Xcur = np.concatenate(xu)
        h_fresh = False  # H was just fitted to the current F (stage-1 initialisation)
        if H is None:
            # eq. (11): every dataset supervises only its own output rows
            Y = np.zeros((X.shape[0], p, 2))
            M = np.zeros((X.shape[0], p, 2), bool)
            for i in range(n):
                sl = slice(sizes[i], sizes[i + 1])
                Y[sl][:, own[i]] = U[i][idx[i]] - xu[i][:, own[i]]
                M[sl][:, own[i]] = True
            model.fit_stage(k, X, torch.from_numpy(Y.reshape(len(Y), -1)),
                            torch.from_numpy(M.reshape(len(M), -1)), **fit_kw)
            with torch.no_grad():
                pred = model.step(k, X, torch.from_numpy(Xcur)).numpy()
            H = [_fit_H(U[i][idx[i]], pred[sizes[i]:sizes[i + 1]], own[i], p, tau, num_threads) for i in range(n)]
            h_fresh = True
        else:
            model.fit_stage(k, X, torch.from_numpy(targets().reshape(len(Xcur), -1)), **fit_kw)
        pred, objF = objectives(k, X, Xcur)
        objH = float(sum(((_apply_H(H[i], U[i][idx[i]]) - pred[sizes[i]:sizes[i + 1]]) ** 2).sum((1, 2)).sum()
                         for i in range(n)) / len(Xcur))
        history.append(dict(stage=k, iteration=0, objective_F=objF, objective_H=objH,
                            l1_max=float(max(np.abs(h).sum(1).max() for h in H))))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(stage=k, objF=f"{objF:.4g}")
        for a in range(n_alternations if alternate else 0):
            # given F, optimise H (eq. 12-14); skipped once right after the initialisation, whose
            # H was fitted to this same F (the lasso would return the same H)
            if not (a == 0 and h_fresh):
                H = [_fit_H(U[i][idx[i]], pred[sizes[i]:sizes[i + 1]], own[i], p, tau, num_threads)
                     for i in range(n)]
            # given H, optimise F (eq. 15), warm start
            model.fit_stage(k, X, torch.from_numpy(targets().reshape(len(Xcur), -1)), warm_start=True, **fit_kw)
            pred, objF = objectives(k, X, Xcur)
            objH = float(sum(((_apply_H(H[i], U[i][idx[i]]) - pred[sizes[i]:sizes[i + 1]]) ** 2).sum((1, 2)).sum()
                             for i in range(n)) / len(Xcur))
            history.append(dict(stage=k, iteration=a + 1, objective_F=objF, objective_H=objH,
                                l1_max=float(max(np.abs(h).sum(1).max() for h in H))))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(stage=k, objF=f"{objF:.4g}")
        xu = [pred[sizes[i]:sizes[i + 1]] for i in range(n)]
    if bar is not None:
        bar.close()
    return DRNSSRResult(model=model, H=H, union=union, history=history)

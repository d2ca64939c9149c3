"""Cascaded deep regression networks on shape-indexed SIFT (DRN-SSR eq. 4-6 and 10).

Stage ``k`` is a fully connected network ``F_k`` with sigmoid hidden layers (1296-784-400
in the paper) and a linear output.  It maps the SIFT features of the current shape,
computed on the face resampled to ``face_sizes[k]`` pixels (80 px for stages 1-2 and
140 px for stages 3-4 in the paper), to the shape increment in box units:

.. math:: S^k = S^{k-1} + F_k(\\phi(I, S^{k-1})).

Inputs are standardised per dimension (statistics stored as buffers).  Targets are
centred per dimension and scaled either per dimension (``target_scale="per_dim"``,
flmcore's default: every output coordinate weighs the same in the loss whatever its
spread, a *weighted* least squares that conditions L-BFGS better) or by one common scale
(``"global"``: the unweighted squared error of the paper's eq. 15, up to a constant
factor).  Training minimises the mean squared error over the observed targets plus
``weight_decay * sum_q ||W_q||_F^2`` (eq. 15) with L-BFGS (as in the paper) or Adam.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn

from .._validate import check_in, check_int, check_nonnegative, check_positive, check_shapes
from ..cascade import (check_boxes, from_box_units, normalise_faces, perturbation_model,
                       to_box_units)
from ..sift import OPENCV_SMOOTH, shape_indexed_sift

__all__ = ["DRNStage", "DRNCascade"]


class DRNStage(nn.Module):
    """One deep regression network: sigmoid hidden layers, linear output (eq. 4-6).

    Examples
    --------
    >>> import torch
    >>> DRNStage(10, 4, hidden=(8, 6))(torch.zeros(3, 10)).shape
    torch.Size([3, 4])
    """

    def __init__(self, n_in: int, n_out: int, hidden: Sequence[int] = (1296, 784, 400)):
        super().__init__()
        layers = []
        prev = n_in
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), nn.Sigmoid()]
            prev = int(h)
        layers.append(nn.Linear(prev, n_out))
        self.net = nn.Sequential(*layers)
        self.register_buffer("x_mean", torch.zeros(n_in))
        self.register_buffer("x_std", torch.ones(n_in))
        self.register_buffer("y_mean", torch.zeros(n_out))
        self.register_buffer("y_std", torch.ones(n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw features ``(N, n_in)`` -> increments ``(N, n_out)`` in target units."""
        z = self.net((x - self.x_mean) / self.x_std)
        return z * self.y_std + self.y_mean

    def weight_norm2(self) -> torch.Tensor:
        """:math:`\\sum_q \\|W_q\\|_F^2` (biases excluded)."""
        return sum((m.weight ** 2).sum() for m in self.net if isinstance(m, nn.Linear))


class DRNCascade(nn.Module):
    """K cascaded deep regression networks on shape-indexed SIFT (DRN-SSR eq. 10).

    Parameters
    ----------
    n_points : int
        Landmarks predicted (the union ``p`` for DRN-SSR).
    n_stages : int
        Number of stages ``K`` (4 in the paper).
    hidden : sequence of int
        Hidden layer sizes (paper: 1296, 784, 400; use smaller ones on a CPU).
    face_sizes : sequence of int
        Face side (pixels) per stage; the paper uses 80, 80, 140, 140.
    window : float
        SIFT window side as a fraction of the face side.
    smooth : float
        SIFT pre-smoothing (pixels of the normalised face).
    num_threads : int, optional
        Threads of the SIFT kernel.

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.data import load_sample
    >>> d = load_sample("helen_pairs")
    >>> boxes = np.tile([0.0, 0.0, 128.0, 128.0], (30, 1))
    >>> net = DRNCascade(29, n_stages=1, hidden=(16,), face_sizes=(64,))
    >>> _ = net.fit(d["images"][:30], d["shapes29"][:30], boxes, n_perturbations=1, max_iter=5, rng=0)
    >>> net.predict(d["images"][:2], boxes[:2]).shape
    (2, 29, 2)
    """

    def __init__(self, n_points: int, n_stages: int = 4, hidden: Sequence[int] = (1296, 784, 400),
                 face_sizes: Sequence[int] = (80, 80, 140, 140), window: float = 0.3,
                 smooth: float = OPENCV_SMOOTH, num_threads: Optional[int] = None):
        super().__init__()
        self.n_points = check_int(n_points, "n_points", min_value=1)
        self.n_stages = check_int(n_stages, "n_stages", min_value=1)
        if len(face_sizes) != self.n_stages:
            raise ValueError(f"face_sizes must give one size per stage ({self.n_stages}), got {len(face_sizes)}")
        self.face_sizes = tuple(check_int(s, "face_sizes", min_value=8) for s in face_sizes)
        self.hidden = tuple(check_int(h, "hidden", min_value=1) for h in hidden)
        self.window = check_positive(window, "window")
        self.smooth = check_nonnegative(smooth, "smooth", finite=True)
        self.num_threads = num_threads
        self.stages = nn.ModuleList([DRNStage(128 * self.n_points, 2 * self.n_points, self.hidden)
                                     for _ in range(self.n_stages)])
        self.register_buffer("mean_shape", torch.zeros(self.n_points, 2, dtype=torch.float64))
        self.register_buffer("perturbation", torch.tensor([[0.0] * 4, [0.05, 0.03, 0.03, 0.05]],
                                                          dtype=torch.float64))

    # ------------------------------------------------------------------ features
    def features(self, k: int, images, boxes, shapes) -> torch.Tensor:
        """SIFT features ``(N, 128 P)`` of stage ``k`` at ``shapes`` (pixels of ``images``).

        Faces are resampled to ``face_sizes[k]`` (see :func:`flmcore.cascade.normalise_faces`).
        """
        size = self.face_sizes[k]
        faces = normalise_faces(images, boxes, size)
        units = to_box_units(shapes, boxes)
        pts = (units + 0.5) * size - 0.5
        f = shape_indexed_sift(faces, pts, window=self.window * size, smooth=self.smooth,
                               num_threads=self.num_threads)
        return torch.from_numpy(f.reshape(f.shape[0], -1))

    def step(self, k: int, feats: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Apply stage ``k``: box-unit shapes ``(N, P, 2)`` plus the predicted increment."""
        st = self.stages[k]
        with torch.no_grad():
            delta = st(feats.to(st.x_mean.dtype)).to(units.dtype)
        return units + delta.view_as(units)

    # ------------------------------------------------------------------ training
    def fit_stage(self, k: int, X: torch.Tensor, Y: torch.Tensor, mask: Optional[torch.Tensor] = None, *,
                  optimizer: str = "lbfgs", max_iter: int = 100, weight_decay: float = 1e-3, lr: float = 1e-3,
                  batch_size: int = 256, generator: Optional[torch.Generator] = None,
                  warm_start: bool = False, target_scale: str = "per_dim") -> list:
        """Train stage ``k`` on features ``X (N, 128 P)`` and increments ``Y (N, 2 P)`` (box units).

        ``mask (N, 2 P)`` (bool) selects the observed targets: the selection function
        :math:`\\delta_i` of eq. (11).  The loss is the mean over samples of the masked
        squared error of the standardised targets plus ``weight_decay * sum ||W||^2``
        (eq. 15).  ``optimizer="lbfgs"`` runs full-batch L-BFGS for ``max_iter``
        iterations; ``"adam"`` runs ``max_iter`` epochs of mini-batches.
        ``target_scale="per_dim"`` (default) divides each target coordinate by its
        own standard deviation (a per-coordinate weighted least squares);
        ``"global"`` by one common standard deviation, so the data term is the
        paper's unweighted :math:`\\sum \\lVert \\Delta S - F \\rVert_2^2` (eq. 15)
        up to a constant factor.

        Returns
        -------
        list of float
            Loss after each iteration / epoch.
        """
        check_in(optimizer, "optimizer", ("lbfgs", "adam"))
        check_in(target_scale, "target_scale", ("per_dim", "global"))
        max_iter = check_int(max_iter, "max_iter", min_value=1)
        weight_decay = check_nonnegative(weight_decay, "weight_decay", finite=True)
        st = self.stages[k]
        dt = st.x_mean.dtype
        X = X.to(dt)
        Y = Y.to(dt)
        if X.ndim != 2 or X.shape[1] != 128 * self.n_points or Y.shape != (X.shape[0], 2 * self.n_points):
            raise ValueError(f"X must be (N, {128 * self.n_points}) and Y (N, {2 * self.n_points}), got "
                             f"{tuple(X.shape)} and {tuple(Y.shape)}")
        M = torch.ones_like(Y, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        Mf = M.to(dt)
        if not warm_start:
            with torch.no_grad():
                st.x_mean.copy_(X.mean(0))
                st.x_std.copy_(X.std(0).clamp_min(1e-4))
                cnt = Mf.sum(0).clamp_min(1.0)
                ym = (Y * Mf).sum(0) / cnt
                yv = (((Y - ym) * Mf) ** 2).sum(0) / cnt
                st.y_mean.copy_(ym)
                if target_scale == "global":   # one scale: eq. (15)'s unweighted squared error
                    yv = torch.full_like(yv, float((yv * cnt).sum() / cnt.sum()))
                st.y_std.copy_(yv.sqrt().clamp_min(1e-6))
        Z = torch.where(M, (Y - st.y_mean) / st.y_std, torch.zeros_like(Y))
        Xn = (X - st.x_mean) / st.x_std
        params = list(st.net.parameters())
        log = []

        def loss_on(idx=None):
            xb, zb, mb = (Xn, Z, Mf) if idx is None else (Xn[idx], Z[idx], Mf[idx])
            err = ((st.net(xb) - zb) * mb) ** 2
            return err.sum() / xb.shape[0] + weight_decay * st.weight_norm2()

        if optimizer == "lbfgs":
            opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                                    line_search_fn="strong_wolfe")

            def closure():
                opt.zero_grad()
                loss = loss_on()
                loss.backward()
                log.append(float(loss.detach()))
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam(params, lr=lr)
            n = X.shape[0]
            for _ in range(max_iter):
                perm = torch.randperm(n, generator=generator)
                tot = 0.0
                for s in range(0, n, batch_size):
                    idx = perm[s:s + batch_size]
                    opt.zero_grad()
                    loss = loss_on(idx)
                    loss.backward()
                    opt.step()
                    tot += float(loss.detach()) * len(idx)
                log.append(tot / n)
        return log

    def set_mean_shape(self, mean_units, perturbation=None) -> None:
        """Store the box-unit mean shape ``(P, 2)`` (and the ``(2, 4)`` perturbation model)."""
        m = check_shapes(mean_units, "mean_units", batch=False, n_points=self.n_points)
        self.mean_shape.copy_(torch.from_numpy(m))
        if perturbation is not None:
            self.perturbation.copy_(torch.as_tensor(np.asarray(perturbation, np.float64)))

    def initial_shapes(self, boxes, n: int = 1, rng=None) -> tuple:
        """Mean shape placed by each box (``n == 1`` and ``rng is None``: unperturbed) or ``n``
        Monte-Carlo perturbations per box; returns ``(shapes (B n, P, 2) pixels, box index)``."""
        from .._validate import check_rng
        from ..cascade import _perturb, place_mean_shape

        b = check_boxes(boxes)
        mean = self.mean_shape.numpy()
        if rng is None and n == 1:
            return place_mean_shape(mean, b), np.arange(b.shape[0])
        return _perturb(mean, b, self.perturbation.numpy(), n, check_rng(rng))

    def fit(self, images, shapes, boxes, *, n_perturbations: int = 5, optimizer: str = "lbfgs",
            max_iter: int = 100, weight_decay: float = 1e-3, rng=None, progress=None) -> "DRNCascade":
        """Train all stages on completely labelled faces (the plain cascade, 'Deep' in §4.2.1).

        Parameters
        ----------
        images : array_like, shape (B, H, W)
        shapes : array_like, shape (B, P, 2)
        boxes : array_like, shape (B, 4)
        n_perturbations : int
            Monte-Carlo initialisations per face.
        optimizer, max_iter, weight_decay
            See :meth:`fit_stage`.
        rng : int or Generator, optional
        progress : callable, optional
            ``progress(iterable, desc=...)`` wrapper (e.g. ``tqdm``).
        """
        from .._validate import check_rng

        S = check_shapes(shapes, "shapes", batch=True, n_points=self.n_points)
        b = check_boxes(boxes, S.shape[0])
        gen = check_rng(rng)
        U = to_box_units(S, b)
        mean = U.mean(0)
        self.set_mean_shape(mean, perturbation_model(mean, S, b))
        x, idx = self.initial_shapes(b, int(n_perturbations), gen)
        xu = torch.from_numpy(to_box_units(x, b[idx]))
        tgt = torch.from_numpy(U[idx])
        it = range(self.n_stages) if progress is None else progress(range(self.n_stages), desc="DRN stages")
        torch_gen = torch.Generator().manual_seed(int(gen.integers(2 ** 31)))
        for k in it:
            X = self.features(k, np.asarray(images)[idx], b[idx], from_box_units(xu.numpy(), b[idx]))
            self.fit_stage(k, X, (tgt - xu).reshape(len(idx), -1), optimizer=optimizer, max_iter=max_iter,
                           weight_decay=weight_decay, generator=torch_gen)
            xu = self.step(k, X, xu)
        return self

    def predict(self, images, boxes, *, init=None, return_stages: bool = False):
        """Run the cascade from the box-placed mean shape (or ``init`` pixels); NumPy in / out.

        Returns
        -------
        ndarray, shape (B, P, 2) pixels (and ``(K + 1, B, P, 2)`` with ``return_stages``)
        """
        b = check_boxes(boxes)
        x = self.initial_shapes(b)[0] if init is None else check_shapes(init, "init", batch=True,
                                                                           n_points=self.n_points)
        xu = torch.from_numpy(to_box_units(x, b))
        hist = [x]
        for k in range(self.n_stages):
            X = self.features(k, images, b, from_box_units(xu.numpy(), b))
            xu = self.step(k, X, xu)
            hist.append(from_box_units(xu.numpy(), b))
        return (hist[-1], np.stack(hist)) if return_stages else hist[-1]

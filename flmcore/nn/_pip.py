"""PIPNet in torch: pixel-in-pixel head, label assignment, loss, batched decoding, model.

Jin, Liao & Shao, "Pixel-in-Pixel Net: Towards Efficient Facial Landmark
Detection in the Wild", IJCV 2021.  On a low-resolution feature map (stride
``S``) PIPNet predicts for every landmark ``i`` a score per cell, the
landmark's offset inside the cell (in cell units), and the offsets of its
``C`` nearest mean-face neighbours (neighbour regression module, NRM).

Layout of every tensor follows the official code: score and offsets are
``(B, N, H, W)``; neighbour offsets are ``(B, N * C, H, W)`` with channel
``i * C + c`` holding landmark ``i``'s prediction of its neighbour
``indices[i, c]``.  Positions are in input pixels, ``x = (cell + offset) * S``
with the cell grid anchored at the pixel origin (the official ``[0, 1]``
normalisation times the input size).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_in, check_int, check_positive
from ..pip import NeighborTable, neighbor_table

__all__ = [
    "PIPHead", "PIPLoss", "PIPNet", "pip_targets", "pip_score_targets", "pip_decode",
    "pip_merge", "PIP_LOSS_WEIGHTS",
]

PIPOutputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

#: alpha = beta of eq. (5) per network stride (paper, Sec. 4.1.2; for 256x256 inputs).
PIP_LOSS_WEIGHTS = {16: 0.02, 32: 0.1, 64: 0.125, 128: 0.25}


# ----------------------------------------------------------------------------- helpers
def _as_table(neighbors, n_points: Optional[int] = None, name: str = "neighbors") -> Optional[NeighborTable]:
    """Accept a NeighborTable, ``(P, C)`` indices (array or tensor) or None."""
    if neighbors is None:
        return None
    if isinstance(neighbors, NeighborTable):
        table = neighbors
    else:
        if isinstance(neighbors, torch.Tensor):
            neighbors = neighbors.detach().cpu().numpy()
        try:
            table = NeighborTable.from_indices(neighbors)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{name}: {e}") from None
    if n_points is not None and table.n_points != n_points:
        raise ValueError(f"{name} is a table for {table.n_points} landmarks, but the input has {n_points} landmarks")
    return table


def _map_size(map_size) -> Tuple[int, int]:
    if isinstance(map_size, (tuple, list)) or (isinstance(map_size, np.ndarray) and map_size.ndim == 1):
        if len(map_size) != 2:
            raise ValueError(f"map_size must be an int or (height, width), got {map_size!r}")
        h, w = (check_int(v, "map_size", min_value=1) for v in map_size)
        return h, w
    s = check_int(map_size, "map_size", min_value=1)
    return s, s


def _shapes_tensor(shapes, name: str = "shapes") -> torch.Tensor:
    if isinstance(shapes, torch.Tensor):
        t = shapes
        if t.is_complex() or t.dtype == torch.bool:
            raise TypeError(f"{name} must be a real-valued tensor, got dtype {t.dtype}")
        if not t.is_floating_point():
            t = t.to(torch.float32)
    else:
        arr = np.asarray(shapes)
        if arr.dtype == object or arr.dtype.kind not in "iuf":
            raise TypeError(f"{name} must be a numeric array or tensor, got dtype {arr.dtype}")
        t = torch.as_tensor(np.ascontiguousarray(arr, dtype=np.float64))
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[-1] != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} must have shape (B, P, 2) or (P, 2), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values; PIPNet targets need every landmark")
    return t


def _cells(shapes: torch.Tensor, hw: Tuple[int, int], stride: float, outside: str):
    """Positive cell (cx, cy) and the position in cell units (u, v)."""
    h, w = hw
    u = shapes[..., 0] / stride
    v = shapes[..., 1] / stride
    if outside == "raise":
        # the input covers [-0.5, size - 0.5] in 0-based pixel coordinates
        lo = -0.5 / stride
        bad = (u < lo) | (v < lo) | (u > w - 0.5 / stride) | (v > h - 0.5 / stride)
        if bool(bad.any()):
            b, p = [int(i) for i in torch.nonzero(bad)[0]]
            raise ValueError(
                f"shapes has landmark(s) outside the {h * stride:g}x{w * stride:g} input (e.g. shape {b}, point {p} "
                f"at ({float(shapes[b, p, 0]):.2f}, {float(shapes[b, p, 1]):.2f})); crop differently or use outside='clip'")
    cx = torch.floor(u).clamp_(0, w - 1)
    cy = torch.floor(v).clamp_(0, h - 1)
    return u, v, cx, cy


# ----------------------------------------------------------------------------- head
class PIPHead(nn.Module):
    """Pixel-in-pixel head: five 1x1 convolutions (PIPNet, Sec. 3.1-3.2, Fig. 3d).

    Parameters
    ----------
    in_channels : int
        Channels of the backbone feature map.
    n_points : int
        Landmarks ``N``.
    n_neighbors : int
        Neighbours ``C`` per landmark (0 disables the neighbour regression module;
        the neighbour outputs are then ``(B, 0, H, W)``).

    Notes
    -----
    ``forward(features)`` maps ``(B, in_channels, H, W)`` features to the tuple
    ``(score, offset_x, offset_y, neighbor_x, neighbor_y)`` with shapes
    ``(B, N, H, W)`` x 3 and ``(B, N * C, H, W)`` x 2 (official layout; channel
    ``i * C + c`` of the neighbour maps is landmark ``i``'s neighbour ``c``).
    Weights are initialised as in the official code (normal, std 0.001; zero bias).

    Examples
    --------
    >>> import torch
    >>> head = PIPHead(32, n_points=68, n_neighbors=10)
    >>> [tuple(t.shape) for t in head(torch.zeros(2, 32, 8, 8))]
    [(2, 68, 8, 8), (2, 68, 8, 8), (2, 68, 8, 8), (2, 680, 8, 8), (2, 680, 8, 8)]
    """

    def __init__(self, in_channels: int, n_points: int, n_neighbors: int = 10):
        super().__init__()
        self.in_channels = check_int(in_channels, "in_channels", min_value=1)
        self.n_points = check_int(n_points, "n_points", min_value=1)
        self.n_neighbors = check_int(n_neighbors, "n_neighbors", min_value=0)
        if self.n_neighbors > self.n_points - 1:
            raise ValueError(f"n_neighbors must be <= n_points - 1 = {self.n_points - 1}, got {self.n_neighbors}")
        n, c = self.n_points, self.n_neighbors
        self.score = nn.Conv2d(in_channels, n, 1)
        self.offset_x = nn.Conv2d(in_channels, n, 1)
        self.offset_y = nn.Conv2d(in_channels, n, 1)
        self.neighbor_x = nn.Conv2d(in_channels, n * c, 1) if c else None
        self.neighbor_y = nn.Conv2d(in_channels, n * c, 1) if c else None
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # official initialisation
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, features: torch.Tensor) -> PIPOutputs:
        if not isinstance(features, torch.Tensor) or features.ndim != 4 or features.shape[1] != self.in_channels:
            got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
            raise ValueError(f"features must have shape (B, {self.in_channels}, H, W), got {got}")
        s, ox, oy = self.score(features), self.offset_x(features), self.offset_y(features)
        if self.neighbor_x is None:
            empty = features.new_zeros((features.shape[0], 0) + tuple(features.shape[2:]))
            return s, ox, oy, empty, empty
        return s, ox, oy, self.neighbor_x(features), self.neighbor_y(features)


# ----------------------------------------------------------------------------- targets
def pip_score_targets(shapes, map_size, stride: float, *, outside: str = "clip",
                      device=None, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """One-hot score maps ``(B, N, H, W)`` (positive cell = ``floor(position / stride)``).

    Used for the extra, higher-stride score heads of self-training with
    curriculum (Sec. 3.3).  Arguments as in :func:`pip_targets`.

    Examples
    --------
    >>> import torch
    >>> t = pip_score_targets(torch.tensor([[[5., 9.]]]), 4, stride=4)
    >>> torch.nonzero(t[0, 0]).tolist()
    [[2, 1]]
    """
    return pip_targets(shapes, map_size, stride, None, outside=outside, device=device, dtype=dtype)[0]


def pip_targets(shapes, map_size, stride: float, neighbors=None, *, outside: str = "clip",
                device=None, dtype: Optional[torch.dtype] = None) -> PIPOutputs:
    """Vectorised PIPNet label assignment (official ``gen_target_pip`` semantics; Fig. 4).

    For landmark ``i`` at ``(x, y)`` pixels, with ``u = x / stride`` and
    ``v = y / stride`` in cell units:

    * positive cell ``(cx, cy) = (floor(u), floor(v))`` clamped to the map;
      ``score[i, cy, cx] = 1``, all other cells 0;
    * ``offset_x[i, cy, cx] = u - cx``, ``offset_y[i, cy, cx] = v - cy``
      (relative to the cell's top-left corner, in cell units; in ``[0, 1)``
      for landmarks inside the map);
    * for the ``c``-th neighbour ``j = indices[i, c]``:
      ``neighbor_x[i * C + c, cy, cx] = u_j - cx`` (and likewise for y),
      stored at landmark ``i``'s positive cell (may be negative or > 1).

    All other offset entries are 0.

    Parameters
    ----------
    shapes : array_like or torch.Tensor, shape (B, N, 2) or (N, 2)
        Landmarks ``(x, y)`` in input pixels (0-based).  NaN is rejected.
    map_size : int or (H, W)
        Size of the head's maps (input size / stride).
    stride : float
        Input pixels per map cell.
    neighbors : NeighborTable or array_like (N, C) of int, optional
        Neighbour table (:func:`flmcore.pip.neighbor_table`); ``None`` gives
        empty neighbour targets ``(B, 0, H, W)``.
    outside : {"clip", "raise"}
        Landmarks outside the ``H * stride`` x ``W * stride`` input: ``"clip"``
        (official) moves their positive cell to the nearest border cell and
        keeps the true offset (then outside ``[0, 1)``), so decoding still
        returns the true position; ``"raise"`` raises a ValueError.
    device, dtype : optional
        Of the returned tensors (default: the input tensor's, else CPU float32).

    Returns
    -------
    tuple of 5 tensors
        ``(score, offset_x, offset_y, neighbor_x, neighbor_y)``: ``(B, N, H, W)``
        x 3 and ``(B, N * C, H, W)`` x 2, the same structure as :class:`PIPHead`.

    Examples
    --------
    >>> import numpy as np
    >>> from flmcore.pip import neighbor_table
    >>> s = np.array([[[10., 20.], [40., 8.], [30., 30.]]])
    >>> t = pip_targets(s, 4, 16, neighbor_table(s[0], 2))
    >>> [tuple(x.shape) for x in t]
    [(1, 3, 4, 4), (1, 3, 4, 4), (1, 3, 4, 4), (1, 6, 4, 4), (1, 6, 4, 4)]
    >>> float(t[1][0, 0, 1, 0]), float(t[2][0, 0, 1, 0])
    (0.625, 0.25)
    """
    check_in(outside, "outside", ("clip", "raise"))
    stride = check_positive(stride, "stride")
    h, w = _map_size(map_size)
    t = _shapes_tensor(shapes)
    out_dtype = dtype or (t.dtype if isinstance(shapes, torch.Tensor) else torch.float32)
    out_device = torch.device(device) if device is not None else t.device
    t = t.to(device=out_device, dtype=torch.float64)
    b, n, _ = t.shape
    table = _as_table(neighbors, n)
    c = table.n_neighbors if table is not None else 0
    u, v, cx, cy = _cells(t, (h, w), stride, outside)
    flat = (cy * w + cx).long()  # (B, N)
    hw = h * w
    score = torch.zeros(b, n, hw, dtype=out_dtype, device=out_device)
    score.scatter_(2, flat[..., None], 1.0)
    ox = torch.zeros_like(score).scatter_(2, flat[..., None], (u - cx)[..., None].to(out_dtype))
    oy = torch.zeros_like(score).scatter_(2, flat[..., None], (v - cy)[..., None].to(out_dtype))
    if c:
        idx = torch.as_tensor(table.indices, device=out_device)  # (N, C)
        nbx = (u[:, idx] - cx[..., None]).reshape(b, n * c, 1).to(out_dtype)
        nby = (v[:, idx] - cy[..., None]).reshape(b, n * c, 1).to(out_dtype)
        flat_nb = flat.repeat_interleave(c, dim=1)[..., None]
        nx = torch.zeros(b, n * c, hw, dtype=out_dtype, device=out_device).scatter_(2, flat_nb, nbx)
        ny = torch.zeros(b, n * c, hw, dtype=out_dtype, device=out_device).scatter_(2, flat_nb, nby)
    else:
        nx = ny = torch.zeros(b, 0, hw, dtype=out_dtype, device=out_device)
    return (score.view(b, n, h, w), ox.view(b, n, h, w), oy.view(b, n, h, w),
            nx.view(b, n * c, h, w), ny.view(b, n * c, h, w))


# ----------------------------------------------------------------------------- validation of outputs
def _check_outputs(outputs, name: str = "outputs") -> Tuple[int, int, int, int, int]:
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 5:
        raise TypeError(f"{name} must be the 5-tuple (score, offset_x, offset_y, neighbor_x, neighbor_y), "
                        f"got {type(outputs).__name__}" + (f" of length {len(outputs)}" if isinstance(outputs, (tuple, list)) else ""))
    for k, o in enumerate(outputs):
        if not isinstance(o, torch.Tensor):
            raise TypeError(f"{name}[{k}] must be a torch.Tensor, got {type(o).__name__}")
        if o.ndim != 4:
            raise ValueError(f"{name}[{k}] must have 4 dimensions (B, channels, H, W), got shape {tuple(o.shape)}")
    s, ox, oy, nx, ny = outputs
    b, n, h, w = s.shape
    for k, o in ((1, ox), (2, oy)):
        if tuple(o.shape) != (b, n, h, w):
            raise ValueError(f"{name}[{k}] must have the score's shape {(b, n, h, w)}, got {tuple(o.shape)}")
    if tuple(nx.shape) != tuple(ny.shape):
        raise ValueError(f"{name}[3] and {name}[4] must have the same shape, got {tuple(nx.shape)} and {tuple(ny.shape)}")
    if nx.shape[0] != b or tuple(nx.shape[2:]) != (h, w) or nx.shape[1] % n:
        raise ValueError(f"{name}[3] must have shape (B, N * C, H, W) = ({b}, {n} * C, {h}, {w}), got {tuple(nx.shape)}")
    return b, n, h, w, nx.shape[1] // n


# ----------------------------------------------------------------------------- loss
class PIPLoss(nn.Module):
    r"""PIPNet training loss, eqs. (1)-(6).

    .. math::

        L = L_S + \alpha L_O + \beta L_N,\quad
        L_S = \frac{1}{BNHW}\sum (s^* - s')^2,\quad
        L_O = \frac{1}{2BN}\sum_{s^*=1}\sum_{l=1}^{2}|o^* - o'|,\quad
        L_N = \frac{1}{2BCN}\sum_{s^*=1}\sum_{l=1}^{2}\sum_{m=1}^{C}|n^* - n'|

    ``L_S`` (L2) runs over every cell; ``L_O`` and ``L_N`` (L1) only at the
    positive cells (the argmax of the target score map, as in the official
    ``compute_loss_pip``).  The official training script (``cls_loss_weight=10,
    reg_loss_weight=1``, both criteria averaged per channel) equals
    ``10 * L`` with ``alpha = beta = 0.2``.

    Parameters
    ----------
    alpha, beta : float
        Weights of the offset and neighbour terms.  The paper uses
        ``alpha = beta`` = 0.02, 0.1, 0.125, 0.25 for strides 16, 32, 64, 128 at
        256x256 (i.e. maps of 16, 8, 4, 2 cells; :data:`PIP_LOSS_WEIGHTS`).

    Examples
    --------
    >>> import torch
    >>> from flmcore.pip import neighbor_table
    >>> s = torch.tensor([[[10., 20.], [40., 8.], [30., 30.]]])
    >>> t = pip_targets(s, 4, 16, neighbor_table(s[0].numpy(), 2))
    >>> float(PIPLoss()(t, t))
    0.0
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.1):
        super().__init__()
        self.alpha = check_positive(alpha, "alpha", strict=False)
        self.beta = check_positive(beta, "beta", strict=False)

    def terms(self, outputs: PIPOutputs, targets: PIPOutputs, mask: Optional[torch.Tensor] = None):
        """The three terms ``(L_S, L_O, L_N)`` (``L_N = 0`` when ``C = 0``).

        ``mask`` (B,) bool selects the samples that contribute (all by default);
        with no selected sample every term is 0 (and keeps the graph).
        """
        b, n, h, w, c = _check_outputs(outputs, "outputs")
        tb, tn, th, tw, tc = _check_outputs(targets, "targets")
        if (b, n, h, w, c) != (tb, tn, th, tw, tc):
            raise ValueError(f"targets must match outputs: outputs are (B={b}, N={n}, H={h}, W={w}, C={c}), "
                             f"targets are (B={tb}, N={tn}, H={th}, W={tw}, C={tc})")
        s, ox, oy, nx, ny = outputs
        ts, tox, toy, tnx, tny = (t.to(s.dtype) for t in targets)
        if mask is not None:
            mask = torch.as_tensor(mask, device=s.device)
            if mask.dtype != torch.bool or tuple(mask.shape) != (b,):
                raise ValueError(f"mask must be a bool tensor of shape ({b},), got {mask.dtype} {tuple(mask.shape)}")
            s, ox, oy, nx, ny = (o[mask] for o in outputs)
            ts, tox, toy, tnx, tny = (t[mask] for t in (ts, tox, toy, tnx, tny))
            b = int(mask.sum())
        if b == 0:
            zero = s.sum() * 0.0
            return zero, zero, zero
        ls = F.mse_loss(s, ts)
        pos = ts.reshape(b, n, h * w).argmax(-1, keepdim=True)  # (B, N, 1)

        def pick(o, k):
            return o.reshape(b, n * k, h * w).gather(2, pos.repeat_interleave(k, dim=1)).squeeze(2)

        lo = (F.l1_loss(pick(ox, 1), pick(tox, 1), reduction="sum")
              + F.l1_loss(pick(oy, 1), pick(toy, 1), reduction="sum")) / (2 * b * n)
        if c:
            ln = (F.l1_loss(pick(nx, c), pick(tnx, c), reduction="sum")
                  + F.l1_loss(pick(ny, c), pick(tny, c), reduction="sum")) / (2 * b * c * n)
        else:
            ln = lo * 0.0
        return ls, lo, ln

    def forward(self, outputs: PIPOutputs, targets: PIPOutputs, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        ls, lo, ln = self.terms(outputs, targets, mask)
        return ls + self.alpha * lo + self.beta * ln


# ----------------------------------------------------------------------------- decoding
def _table_tensors(table: NeighborTable, device, dtype):
    """Index/count tensors of a table on ``device``, cached on the table."""
    key = ("torch", str(device), dtype)
    got = table.cache.get(key)
    if got is None:
        idx = torch.as_tensor(table.indices.ravel(), device=device)
        inv = (1.0 / (1.0 + torch.as_tensor(table.counts, device=device, dtype=torch.float64))).to(dtype)
        i1, i2, max_len = table.padded_reverse_index()
        padded = torch.as_tensor((i1 * table.n_neighbors + i2).ravel(), device=device) if (i1 >= 0).all() else None
        got = (idx, inv, padded, max_len)
        table.cache[key] = got
    return got


def _merge_xy(ox, oy, vx, vy, table: NeighborTable, method: str):
    """Merge per axis: ``ox`` (B, N), ``vx`` (B, N * C) -> merged x (B, N) (same for y)."""
    b, n = ox.shape
    idx, inv, padded, max_len = _table_tensors(table, ox.device, ox.dtype)
    if method == "exact":
        return ox.index_add(1, idx, vx) * inv, oy.index_add(1, idx, vy) * inv
    if padded is None:
        raise ValueError("the padded (official) merge needs every landmark to have at least one voter")
    scale = 1.0 / (1.0 + max_len)
    return ((ox + vx[:, padded].view(b, n, max_len).sum(2)) * scale,
            (oy + vy[:, padded].view(b, n, max_len).sum(2)) * scale)


def pip_merge(own: torch.Tensor, votes: torch.Tensor, neighbors, method: str = "exact") -> torch.Tensor:
    """Merge each landmark's own prediction with the neighbour votes for it.

    ``"exact"``: landmark ``j`` becomes the plain mean of its own prediction and
    the ``counts[j]`` votes ``votes[:, i, c]`` with ``indices[i, c] == j``
    (paper, Sec. 3.2), computed with one scatter-add (``index_add``) per axis.
    ``"padded"``: the official trick (every landmark averages ``1 + max_len``
    entries, its voter list repeated to ``max_len``), which over-weights some
    votes of landmarks with fewer than ``max_len`` voters.

    Parameters
    ----------
    own : torch.Tensor, shape (B, N, 2)
    votes : torch.Tensor, shape (B, N, C, 2)
        ``votes[:, i, c]`` = landmark ``i``'s prediction of landmark ``indices[i, c]``.
    neighbors : NeighborTable or (N, C) indices
    method : {"exact", "padded"}

    Returns
    -------
    torch.Tensor, shape (B, N, 2)

    Examples
    --------
    >>> import torch
    >>> from flmcore.pip import neighbor_table
    >>> tab = neighbor_table([[0., 0.], [1., 0.], [5., 0.]], 1)   # 0->1, 1->0, 2->1
    >>> own = torch.tensor([[[0., 0.], [1., 0.], [5., 0.]]])
    >>> votes = torch.tensor([[[[2., 0.]], [[0., 3.]], [[3., 0.]]]])
    >>> pip_merge(own, votes, tab)[0].tolist()
    [[0.0, 1.5], [2.0, 0.0], [5.0, 0.0]]
    """
    check_in(method, "method", ("exact", "padded"))
    if not isinstance(own, torch.Tensor) or own.ndim != 3 or own.shape[-1] != 2:
        raise ValueError(f"own must be a tensor of shape (B, N, 2), got {getattr(own, 'shape', type(own).__name__)}")
    b, n, _ = own.shape
    table = _as_table(neighbors, n)
    c = table.n_neighbors
    if not isinstance(votes, torch.Tensor) or tuple(votes.shape) != (b, n, c, 2):
        raise ValueError(f"votes must have shape (B, N, C, 2) = {(b, n, c, 2)}, got {tuple(votes.shape)}")
    if c == 0:
        return own.clone()
    v = votes.reshape(b, n * c, 2)
    mx, my = _merge_xy(own[..., 0], own[..., 1], v[..., 0], v[..., 1], table, method)
    return torch.stack((mx, my), dim=-1)


def pip_decode(outputs: PIPOutputs, stride: float, neighbors=None, *, merge: str = "exact",
               return_votes: bool = False):
    """Batched PIPNet decoding: argmax cell + its offsets, then the neighbour merge.

    For landmark ``i`` the cell ``(cx, cy)`` with the highest score gives
    ``p_i = ((cx, cy) + offset) * stride`` and the votes
    ``q_{i,c} = ((cx, cy) + neighbor_offset_c) * stride`` for landmark
    ``indices[i, c]``; the merge (Sec. 3.2) averages each landmark's own
    prediction with the votes for it (see :func:`pip_merge`).  There is no
    batch-size limit (the official ``forward_pip`` asserts ``B == 1``).

    Parameters
    ----------
    outputs : tuple of 5 tensors
        ``(score, offset_x, offset_y, neighbor_x, neighbor_y)`` as returned by
        :class:`PIPHead` or :func:`pip_targets`.
    stride : float
        Input pixels per map cell.
    neighbors : NeighborTable or (N, C) indices, optional
        Required when ``merge != "none"`` and ``C > 0``.
    merge : {"exact", "padded", "none"}
        ``"none"`` returns the plain PIP prediction (no NRM).
    return_votes : bool
        Also return ``(own, votes)``: ``own`` (B, N, 2) the unmerged
        prediction, ``votes`` (B, N, C, 2) the neighbour predictions.

    Returns
    -------
    torch.Tensor, shape (B, N, 2)
        Landmarks in input pixels (dtype and device of ``outputs``); with
        ``return_votes``, the tuple ``(landmarks, own, votes)``.

    Examples
    --------
    >>> import torch
    >>> from flmcore.pip import neighbor_table
    >>> s = torch.tensor([[[10., 20.], [40., 8.], [30., 30.]]])
    >>> tab = neighbor_table(s[0].numpy(), 2)
    >>> pip_decode(pip_targets(s, 4, 16, tab), 16, tab)
    tensor([[[10., 20.],
             [40.,  8.],
             [30., 30.]]])
    """
    check_in(merge, "merge", ("exact", "padded", "none"))
    stride = check_positive(stride, "stride")
    b, n, h, w, c = _check_outputs(outputs)
    table = _as_table(neighbors, n)
    if table is not None and table.n_neighbors != c:
        raise ValueError(f"neighbors has C={table.n_neighbors} neighbours per landmark, but the neighbour maps "
                         f"have {n * c} = {n} x {c} channels")
    if merge != "none" and c and table is None:
        raise ValueError("neighbors (the neighbour table) is required to merge; pass merge='none' to skip the NRM")
    s, ox, oy, nx, ny = outputs
    hw = h * w
    pos = s.reshape(b, n, hw).argmax(-1)  # (B, N)
    dtype = ox.dtype
    cx = (pos % w).to(dtype)
    cy = torch.div(pos, w, rounding_mode="floor").to(dtype)
    px = cx + ox.reshape(b, n, hw).gather(2, pos[..., None]).squeeze(2)  # cell units
    py = cy + oy.reshape(b, n, hw).gather(2, pos[..., None]).squeeze(2)
    need_votes = c > 0 and (return_votes or merge != "none")
    if need_votes:
        pe = pos[..., None, None].expand(b, n, c, 1)
        vx = (cx[..., None] + nx.reshape(b, n, c, hw).gather(3, pe).squeeze(3)).reshape(b, n * c)
        vy = (cy[..., None] + ny.reshape(b, n, c, hw).gather(3, pe).squeeze(3)).reshape(b, n * c)
    if merge == "none" or c == 0:
        mx, my = px, py
    else:
        mx, my = _merge_xy(px, py, vx, vy, table, merge)
    out = torch.stack((mx, my), dim=-1) * stride
    if not return_votes:
        return out
    own = torch.stack((px, py), dim=-1) * stride
    votes = (torch.stack((vx, vy), dim=-1).view(b, n, c, 2) * stride) if need_votes else own.new_zeros((b, n, 0, 2))
    return out, own, votes


# ----------------------------------------------------------------------------- model
def _scheme_points(scheme) -> Tuple[int, str]:
    if isinstance(scheme, str):
        from ..schemes import get_scheme  # the core scheme registry (no torch)
        sch = get_scheme(scheme)
        return int(sch.n_points), sch.name
    if hasattr(scheme, "n_points"):
        return int(scheme.n_points), str(getattr(scheme, "name", f"{scheme.n_points}pt"))
    if isinstance(scheme, (int, np.integer)) and not isinstance(scheme, bool):
        return check_int(scheme, "scheme", min_value=1), f"{int(scheme)}pt"
    raise TypeError(f"scheme must be a scheme name, a Scheme or a number of points, got {type(scheme).__name__}")


class PIPNet(nn.Module):
    """PIPNet: backbone + :class:`PIPHead` (+ the STC score heads), with the neighbour table.

    Parameters
    ----------
    backbone : torch.nn.Module
        Feature extractor with attributes ``out_channels`` and ``stride``
        (e.g. :class:`flmcore.nn.backbones.ResNet18`).
    scheme : str, Scheme or int
        Annotation scheme (``flmcore.schemes`` name or object) or the number
        of landmarks ``N``.
    n_neighbors : int
        ``C`` (10 in the paper; 0 = PIP regression without the NRM).
    mean_shape : array_like (N, 2), optional
        Mean face of the training shapes in the crop frame
        (:func:`flmcore.pip.mean_face`); it sets the neighbour table.  Can be
        set later with :meth:`set_mean_face` (the training helpers do).
    stc_heads : int
        Number of extra score heads for self-training with curriculum
        (Sec. 3.3, Fig. 8): head ``k`` (1-based) scores cells of stride
        ``stride * 2**k``; as in the official code it is the PIP score
        convolution applied to ``k`` times 2x2-max-pooled features.
    input_mean, input_std : float or sequence of float
        Input normalisation applied inside :meth:`forward` (images in [0, 1]):
        one value, or one per input channel (ImageNet: ``(0.485, 0.456, 0.406)``
        and ``(0.229, 0.224, 0.225)`` for RGB backbones with ImageNet weights).

    Examples
    --------
    >>> import torch
    >>> from flmcore.nn.backbones import ResNet18
    >>> net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2,
    ...              mean_shape=[[20, 20], [44, 20], [32, 32], [24, 44], [40, 44]])
    >>> net.predict(torch.rand(3, 1, 64, 64)).shape
    torch.Size([3, 5, 2])
    """

    def __init__(self, backbone: nn.Module, scheme, n_neighbors: int = 10, mean_shape=None,
                 stc_heads: int = 0, input_mean: Union[float, Sequence[float]] = 0.5,
                 input_std: Union[float, Sequence[float]] = 0.25):
        super().__init__()
        if (not isinstance(backbone, nn.Module) or not isinstance(getattr(backbone, "out_channels", None), (int, np.integer))
                or not isinstance(getattr(backbone, "stride", None), (int, np.integer))):
            raise TypeError("backbone must be a torch.nn.Module with integer attributes out_channels and stride "
                            "(e.g. flmcore.nn.backbones.ResNet18)")
        self.n_points, self.scheme_name = _scheme_points(scheme)
        self.backbone = backbone
        self.stride = int(backbone.stride)
        self.head = PIPHead(int(backbone.out_channels), self.n_points, n_neighbors)
        self.n_neighbors = self.head.n_neighbors
        self.stc_heads = check_int(stc_heads, "stc_heads", min_value=0, max_value=4)
        cin = int(getattr(backbone, "in_channels", 1))
        mean = np.broadcast_to(np.asarray(input_mean, dtype=np.float64).reshape(-1), (cin,)) \
            if np.size(input_mean) in (1, cin) else None
        std = np.broadcast_to(np.asarray(input_std, dtype=np.float64).reshape(-1), (cin,)) \
            if np.size(input_std) in (1, cin) else None
        if mean is None or not np.isfinite(mean).all():
            raise ValueError(f"input_mean must be one finite value or one per input channel ({cin}), got {input_mean!r}")
        if std is None or not (np.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"input_std must be one positive value or one per input channel ({cin}), got {input_std!r}")
        self.input_mean = float(mean[0]) if np.ndim(input_mean) == 0 else tuple(float(v) for v in mean)
        self.input_std = float(std[0]) if np.ndim(input_std) == 0 else tuple(float(v) for v in std)
        self.register_buffer("_in_mean", torch.as_tensor(mean.copy(), dtype=torch.float32).view(1, cin, 1, 1),
                             persistent=False)
        self.register_buffer("_in_std", torch.as_tensor(std.copy(), dtype=torch.float32).view(1, cin, 1, 1),
                             persistent=False)
        self.register_buffer("neighbor_indices", torch.full((self.n_points, self.n_neighbors), -1, dtype=torch.long))
        self.register_buffer("mean_shape", torch.full((self.n_points, 2), float("nan"), dtype=torch.float64))
        if mean_shape is not None:
            self.set_mean_face(mean_shape)

    # -- neighbour table --------------------------------------------------------------
    def set_mean_face(self, mean_shape) -> "PIPNet":
        """Set the mean face ``(N, 2)`` (crop frame) and rebuild the neighbour table."""
        from .._validate import check_shapes

        m = check_shapes(mean_shape, "mean_shape", batch=False, n_points=self.n_points)
        table = neighbor_table(m, self.n_neighbors)
        self.mean_shape.copy_(torch.as_tensor(m))
        self.neighbor_indices.copy_(torch.as_tensor(table.indices))
        return self

    @property
    def neighbors(self) -> Optional[NeighborTable]:
        """The :class:`~flmcore.pip.NeighborTable` (``None`` before :meth:`set_mean_face` when ``C > 0``)."""
        idx = self.neighbor_indices.detach().cpu().numpy()
        if self.n_neighbors and (idx < 0).any():
            return None
        cached = self.__dict__.get("_table_cache")
        if cached is None or not np.array_equal(cached.indices, idx):  # rebuilt after load_state_dict
            # a copy: on CPU ``idx`` shares the buffer's memory, which set_mean_face / load_state_dict
            # overwrite in place -- an aliased cache would then look current and keep stale counts
            cached = NeighborTable.from_indices(idx.copy())
            self.__dict__["_table_cache"] = cached
        return cached

    def _table(self) -> NeighborTable:
        t = self.neighbors
        if t is None:
            raise ValueError("the neighbour table is not set: call model.set_mean_face(mean_shape) "
                             "(flmcore.pip.mean_face of the training shapes) first")
        return t

    # -- forward / targets / decode ---------------------------------------------------
    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self._in_mean.to(x.dtype)) / self._in_std.to(x.dtype))

    def forward(self, x: torch.Tensor) -> PIPOutputs:
        """Images ``(B, in_channels, H, W)`` in [0, 1] -> the head's 5-tuple of maps."""
        return self.head(self._features(x))

    def forward_stc(self, x: torch.Tensor) -> Tuple[PIPOutputs, List[torch.Tensor]]:
        """The 5-tuple plus the ``stc_heads`` extra score maps (strides ``2 S``, ``4 S``, ...)."""
        f = self._features(x)
        out = self.head(f)
        extra = []
        for _ in range(self.stc_heads):
            f = F.max_pool2d(f, 2)
            extra.append(self.head.score(f))
        return out, extra

    def map_size(self, input_size) -> Tuple[int, int]:
        """``(H, W)`` of the maps for an input of ``input_size`` (int or (H, W))."""
        h, w = _map_size(input_size)
        if h % self.stride or w % self.stride:
            raise ValueError(f"input size must be a multiple of the stride {self.stride}, got {h}x{w}")
        return h // self.stride, w // self.stride

    def targets(self, shapes, input_size, *, outside: str = "clip", device=None) -> PIPOutputs:
        """:func:`pip_targets` for this model (its stride and neighbour table)."""
        t = _shapes_tensor(shapes)
        if t.shape[1] != self.n_points:
            raise ValueError(f"shapes must have {self.n_points} points (scheme {self.scheme_name}), got {t.shape[1]}")
        table = self._table() if self.n_neighbors else None
        return pip_targets(shapes, self.map_size(input_size), self.stride, table, outside=outside, device=device)

    def decode(self, outputs: PIPOutputs, merge: str = "exact", return_votes: bool = False):
        """:func:`pip_decode` with this model's stride and neighbour table."""
        table = self._table() if (self.n_neighbors and (merge != "none" or return_votes)) else None
        return pip_decode(outputs, self.stride, table, merge=merge if self.n_neighbors else "none",
                          return_votes=return_votes)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, merge: str = "exact") -> torch.Tensor:
        """Landmarks ``(B, N, 2)`` in input pixels for images ``(B, C, H, W)`` in [0, 1] (eval mode)."""
        was = self.training
        self.eval()
        try:
            return self.decode(self(x), merge=merge)
        finally:
            self.train(was)

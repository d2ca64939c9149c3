"""Multi-branch landmark models of ATF (Lan, Hu, Cheng): one shared backbone, one private head per
dataset (annotation scheme), with pruning (single detector), branch adding on a frozen backbone
(novel detector) and per-branch fine-tuning (joint detector), §III-B and §III-D of the paper.

Heads: :class:`CoordHead` (direct coordinate regression, the paper's OCN head: one
fully-connected layer) and :class:`HeatmapHead` (two 1x1 convolutions, the paper's HRNet head),
plus Gaussian heatmap targets and decoding so that ATF applies to both families.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["CoordHead", "HeatmapHead", "MultiBranch", "heatmap_targets", "decode_heatmaps"]


def _check_count(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return int(v)


class CoordHead(nn.Module):
    """Direct coordinate-regression head: global average pooling, optional hidden layer, linear
    layer to ``2 P`` values, reshaped to ``(B, P, 2)``.

    ``output = origin + scale * linear(features)``: with ``origin`` the mean shape (e.g. the mean
    of pose-bin means of :func:`flmcore.pose.pose_bins`) the layer predicts the displacement from
    it (Rayhan et al. §3.2); ``scale`` brings unit-scale activations to pixels.

    Parameters
    ----------
    in_features : int
        Channels of the backbone feature map ``(B, C, H, W)`` (or features ``(B, C)``); with
        ``pool="flatten"`` the flattened size ``C * H * W``.
    n_points : int
        Number of landmarks ``P``.
    hidden : int, optional
        Width of a hidden ReLU layer (``None``: a single linear layer, as the paper's OCN).
    origin : array_like (P, 2), optional
        Regression origin (pixels); zeros by default.
    scale : float
        Output scale (pixels per unit).
    pool : {"avg", "flatten"}
        Global average pooling of a feature map, or flattening it (keeps the spatial layout,
        better for small backbones).

    Examples
    --------
    >>> import torch
    >>> head = CoordHead(8, 5, scale=10.0)
    >>> head(torch.zeros(3, 8, 4, 4)).shape
    torch.Size([3, 5, 2])
    """

    def __init__(self, in_features: int, n_points: int, *, hidden: Optional[int] = None, origin=None,
                 scale: float = 1.0, pool: str = "avg"):
        super().__init__()
        if pool not in ("avg", "flatten"):
            raise ValueError(f"pool must be 'avg' or 'flatten'; got {pool!r}")
        self.pool = pool
        in_features = _check_count(in_features, "in_features")
        self.n_points = _check_count(n_points, "n_points")
        layers = []
        width = in_features
        if hidden is not None:
            layers += [nn.Linear(width, _check_count(hidden, "hidden")), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Linear(width, 2 * self.n_points))
        self.mlp = nn.Sequential(*layers)
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {scale!r}")
        self.scale = float(scale)
        o = np.zeros((self.n_points, 2)) if origin is None else np.asarray(origin, dtype=np.float64)
        if o.shape != (self.n_points, 2) or not np.isfinite(o).all():
            raise ValueError(f"origin must be a finite array of shape ({self.n_points}, 2), got {o.shape}")
        self.register_buffer("origin", torch.as_tensor(o, dtype=torch.float32))

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() == 4:
            features = features.mean(dim=(2, 3)) if self.pool == "avg" else features.flatten(1)
        elif features.dim() != 2:
            raise ValueError(f"features must have shape (B, C, H, W) or (B, C), got {tuple(features.shape)}")
        y = self.mlp(features).view(features.shape[0], self.n_points, 2)
        return self.origin.to(y.dtype) + self.scale * y


class HeatmapHead(nn.Module):
    """Heatmap head: 1x1 conv, batch norm, ReLU, 1x1 conv to ``P`` maps (ATF's HRNet head).

    Parameters
    ----------
    in_channels : int
        Channels of the backbone feature map.
    n_points : int
        Number of landmarks (output maps).
    mid_channels : int, optional
        Channels of the first 1x1 convolution (default ``in_channels``).

    Examples
    --------
    >>> import torch
    >>> HeatmapHead(8, 5)(torch.zeros(2, 8, 16, 16)).shape
    torch.Size([2, 5, 16, 16])
    """

    def __init__(self, in_channels: int, n_points: int, *, mid_channels: Optional[int] = None):
        super().__init__()
        in_channels = _check_count(in_channels, "in_channels")
        self.n_points = _check_count(n_points, "n_points")
        mid = in_channels if mid_channels is None else _check_count(mid_channels, "mid_channels")
        self.net = nn.Sequential(nn.Conv2d(in_channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                                 nn.Conv2d(mid, self.n_points, 1))

    def forward(self, features: Tensor) -> Tensor:
        if features.dim() != 4:
            raise ValueError(f"features must have shape (B, C, H, W), got {tuple(features.shape)}")
        return self.net(features)


def heatmap_targets(shapes: Tensor, size: Tuple[int, int], *, stride: float = 1.0, sigma: float = 1.0) -> Tensor:
    """Gaussian heatmap targets ``exp(-|c - p|^2 / (2 sigma^2))`` (peak 1) for landmarks.

    Heatmap cell ``(r, c)`` has its centre at input pixel ``(c * stride + (stride - 1) / 2,
    r * stride + (stride - 1) / 2)`` (0-based pixel centres), ``sigma`` is in heatmap cells.

    Parameters
    ----------
    shapes : Tensor, shape (B, P, 2)
        Landmarks in input pixels.
    size : (int, int)
        Heatmap height and width.

    Returns
    -------
    Tensor, shape (B, P, H, W)

    Examples
    --------
    >>> import torch
    >>> hm = heatmap_targets(torch.tensor([[[3.0, 2.0]]]), (8, 8))
    >>> hm[0, 0, 2, 3].item()
    1.0
    """
    if shapes.dim() != 3 or shapes.shape[-1] != 2:
        raise ValueError(f"shapes must have shape (B, P, 2), got {tuple(shapes.shape)}")
    h, w = (_check_count(s, "size") for s in size)
    if not stride > 0 or not sigma > 0:
        raise ValueError(f"stride and sigma must be > 0, got {stride}, {sigma}")
    p = (shapes - (stride - 1) / 2.0) / stride
    ys = torch.arange(h, dtype=shapes.dtype, device=shapes.device)
    xs = torch.arange(w, dtype=shapes.dtype, device=shapes.device)
    gx = torch.exp(-(xs - p[..., 0:1]) ** 2 / (2 * sigma * sigma))  # (B, P, W)
    gy = torch.exp(-(ys - p[..., 1:2]) ** 2 / (2 * sigma * sigma))  # (B, P, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)


def decode_heatmaps(heatmaps: Tensor, *, stride: float = 1.0, soft: bool = False) -> Tensor:
    """Landmark coordinates from heatmaps (inverse of :func:`heatmap_targets`' cell convention).

    ``soft=False``: argmax cell with a quarter-cell shift towards the higher neighbour (HRNet
    decoding); ``soft=True``: integral regression, the centroid of the rectified map
    ``sum(relu(h) c) / sum(relu(h))`` (differentiable, unbiased for Gaussian maps away from the
    border).

    Parameters
    ----------
    heatmaps : Tensor, shape (B, P, H, W)

    Returns
    -------
    Tensor, shape (B, P, 2) in input pixels.

    Examples
    --------
    >>> import torch
    >>> hm = heatmap_targets(torch.tensor([[[5.0, 3.0]]]), (8, 8))
    >>> decode_heatmaps(hm).tolist()
    [[[5.0, 3.0]]]
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must have shape (B, P, H, W), got {tuple(heatmaps.shape)}")
    B, P, H, W = heatmaps.shape
    if not bool(torch.isfinite(heatmaps).all()):
        raise ValueError(f"heatmaps contains {int((~torch.isfinite(heatmaps)).sum())} NaN or infinite value(s); "
                         "expected finite maps (a diverged network?)")
    flat = heatmaps.reshape(B, P, H * W)
    if soft:
        pos = flat.clamp_min(0)
        prob = (pos / pos.sum(-1, keepdim=True).clamp_min(torch.finfo(pos.dtype).tiny)).view(B, P, H, W)
        xs = torch.arange(W, dtype=heatmaps.dtype, device=heatmaps.device)
        ys = torch.arange(H, dtype=heatmaps.dtype, device=heatmaps.device)
        x = (prob.sum(2) * xs).sum(-1)
        y = (prob.sum(3) * ys).sum(-1)
    else:
        idx = flat.argmax(-1)
        yi, xi = idx // W, idx % W
        x = xi.to(heatmaps.dtype)
        y = yi.to(heatmaps.dtype)
        hm = heatmaps.detach()
        b_i = torch.arange(B, device=hm.device)[:, None].expand(B, P)
        p_i = torch.arange(P, device=hm.device)[None, :].expand(B, P)
        right = hm[b_i, p_i, yi, (xi + 1).clamp(max=W - 1)]
        left = hm[b_i, p_i, yi, (xi - 1).clamp(min=0)]
        down = hm[b_i, p_i, (yi + 1).clamp(max=H - 1), xi]
        up = hm[b_i, p_i, (yi - 1).clamp(min=0), xi]
        inner_x = (xi > 0) & (xi < W - 1)
        inner_y = (yi > 0) & (yi < H - 1)
        x = x + torch.where(inner_x, 0.25 * torch.sign(right - left), torch.zeros_like(x))
        y = y + torch.where(inner_y, 0.25 * torch.sign(down - up), torch.zeros_like(y))
    return torch.stack([x, y], -1) * stride + (stride - 1) / 2.0


class MultiBranch(nn.Module):
    """Shared backbone with one private head per dataset (ATF §III-B, Fig. 2-4).

    Parameters
    ----------
    backbone : nn.Module
        Shared part ``Part_s``: images ``(B, C, H, W)`` -> features.
    heads : mapping name -> nn.Module
        Private parts ``Part_p``, one per dataset / annotation scheme (e.g. :class:`CoordHead`
        or :class:`HeatmapHead`).

    Notes
    -----
    ``forward(x)`` runs the backbone once and every head (a dict name -> output);
    ``forward(x, "name")`` returns one head's output.  The three ATF scenarios:

    - single detector: :meth:`prune` keeps the target head (or :meth:`detector` gives
      ``Sequential(backbone, head)``, the original network structure);
    - joint detector: :meth:`set_trainable` with ``backbone=False`` fine-tunes each branch on
      its own data;
    - novel detector: :meth:`add_branch` with ``freeze_backbone=True`` trains only the new head.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> bb = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
    >>> m = MultiBranch(bb, {"ibug68": CoordHead(8, 68), "cofw29": CoordHead(8, 29)})
    >>> out = m(torch.zeros(2, 1, 16, 16))
    >>> {k: tuple(v.shape) for k, v in out.items()}
    {'ibug68': (2, 68, 2), 'cofw29': (2, 29, 2)}
    >>> m.prune("ibug68").branch_names
    ('ibug68',)
    """

    def __init__(self, backbone: nn.Module, heads: Mapping[str, nn.Module]):
        super().__init__()
        if not isinstance(backbone, nn.Module):
            raise TypeError(f"backbone must be a torch.nn.Module, got {type(backbone).__name__}")
        if not isinstance(heads, Mapping) or len(heads) == 0:
            raise ValueError("heads must be a non-empty mapping name -> nn.Module")
        self.backbone = backbone
        self.heads = nn.ModuleDict()
        for name, head in heads.items():
            self._check_new(name, head)
            self.heads[name] = head
        self._backbone_frozen = False
        self._frozen_heads = set()

    # ------------------------------------------------------------------ structure
    def _check_new(self, name, head) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError(f"branch names must be non-empty strings, got {name!r}")
        if not isinstance(head, nn.Module):
            raise TypeError(f"head {name!r} must be a torch.nn.Module, got {type(head).__name__}")
        if hasattr(self, "heads") and name in self.heads:
            raise ValueError(f"branch {name!r} already exists; branches: {list(self.heads)}")

    @property
    def branch_names(self) -> Tuple[str, ...]:
        """Names of the branches, in insertion order."""
        return tuple(self.heads.keys())

    def _names(self, branches) -> Sequence[str]:
        if branches is None:
            return list(self.heads.keys())
        names = [branches] if isinstance(branches, str) else list(branches)
        unknown = [n for n in names if n not in self.heads]
        if unknown:
            raise ValueError(f"unknown branch(es) {unknown}; branches: {list(self.heads)}")
        return names

    def forward(self, x: Tensor, branches: Union[None, str, Iterable[str]] = None):
        feats = self.backbone(x)
        if isinstance(branches, str):
            self._names(branches)
            return self.heads[branches](feats)
        return {n: self.heads[n](feats) for n in self._names(branches)}

    def prune(self, keep: Union[str, Iterable[str]]) -> "MultiBranch":
        """Remove every branch not in ``keep`` (in place; the single-detector scenario). Returns self."""
        names = set(self._names(keep))
        if not names:
            raise ValueError("keep must name at least one branch")
        for n in list(self.heads.keys()):
            if n not in names:
                del self.heads[n]
                self._frozen_heads.discard(n)
        return self

    def add_branch(self, name: str, head: nn.Module, *, freeze_backbone: bool = True) -> "MultiBranch":
        """Add a private head (novel-detector scenario); by default freeze the shared backbone. Returns self."""
        self._check_new(name, head)
        p = next(self.backbone.parameters(), None)
        if p is not None:
            head.to(device=p.device)
        self.heads[name] = head
        if freeze_backbone:
            self.freeze_backbone(True)
        return self

    def detector(self, name: str) -> nn.Sequential:
        """``Sequential(backbone, head)``: the original single-branch network (shares parameters)."""
        self._names(name)
        return nn.Sequential(self.backbone, self.heads[name])

    # ------------------------------------------------------------------ freezing
    def freeze_backbone(self, frozen: bool = True) -> "MultiBranch":
        """Stop (or restart) training the backbone: no gradients, batch-norm statistics kept (eval mode)."""
        self._backbone_frozen = bool(frozen)
        for p in self.backbone.parameters():
            p.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)
        return self

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def set_trainable(self, *, backbone: bool = True, branches: Union[None, str, Iterable[str]] = None
                      ) -> "MultiBranch":
        """Choose what trains: the backbone and the listed branches (``None`` = all); the other
        branches are frozen (no gradients, batch-norm statistics kept).
        ``set_trainable(backbone=False, branches="cofw29")`` fine-tunes one
        private branch on a frozen backbone (joint-detector scenario).
        """
        names = set(self._names(branches))
        self.freeze_backbone(not backbone)
        self._frozen_heads = set(self.heads.keys()) - names
        for n, head in self.heads.items():
            for p in head.parameters():
                p.requires_grad_(n in names)
            head.train(self.training and n in names)
        return self

    def trainable_parameters(self):
        """Parameters that require gradients (for the optimiser)."""
        return [p for p in self.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> "MultiBranch":
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.train(False)
        for n in self._frozen_heads:
            if n in self.heads:
                self.heads[n].train(False)
        return self

"""Torch adapter of :func:`flmcore.sift.shape_indexed_sift` (shape-indexed SIFT features).

CPU tensors go through the compiled kernel (``flmcore._ext.sift``); tensors on other
devices use :func:`shape_indexed_sift_torch`, a pure-torch implementation of the same
descriptor (it is also the reference of the adapter's tests).

No gradient flows to the shapes or the images: SIFT is piecewise smooth in the landmark
positions but its derivative is not provided; in a cascade :math:`\\phi(I, S^{k-1})` is
an input of stage ``k``, never differentiated (DRN-SSR eq. 10).
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np
import torch
from torch import nn

from ..sift import OPENCV_SMOOTH, _prepare, shape_indexed_sift

__all__ = ["ShapeIndexedSIFT", "shape_indexed_sift_torch"]


def _to_numpy_images(images: torch.Tensor) -> np.ndarray:
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.is_complex() or images.dtype == torch.bool:
        raise TypeError(f"images must be real-valued (uint8 or float), got dtype {images.dtype}")
    if images.is_floating_point() and images.dtype != torch.float64:
        images = images.float()       # float16 / bfloat16 (NumPy has no bfloat16): the kernel runs in float32
    return images.detach().cpu().numpy()


def shape_indexed_sift_torch(images: torch.Tensor, shapes: torch.Tensor, *, window=32.0, orientation=0.0,
                             reference=None, smooth: float = OPENCV_SMOOTH) -> torch.Tensor:
    """Pure-torch shape-indexed SIFT (same definition as :func:`flmcore.sift.shape_indexed_sift`).

    Parameters
    ----------
    images : torch.Tensor, shape (B, H, W) or (B, 1, H, W)
        Grayscale images (uint8 or float) on any device.
    shapes : torch.Tensor, shape (B, P, 2)
        Landmarks in pixels.
    window, orientation, reference, smooth
        As in :func:`flmcore.sift.shape_indexed_sift`.

    Returns
    -------
    torch.Tensor, shape (B, P, 128), float32, on the images' device

    Examples
    --------
    >>> import torch
    >>> img = torch.rand(1, 40, 40)
    >>> shape_indexed_sift_torch(img, torch.tensor([[[20.0, 20.0]]]), window=12.0).shape
    torch.Size([1, 1, 128])
    """
    dev = images.device
    imgs_np, kp_np, taps_np, _, _ = _prepare(_to_numpy_images(images), shapes.detach().cpu().numpy(), window,
                                             orientation, reference, smooth, 1)
    imgs = torch.as_tensor(imgs_np, device=dev)
    kp = torch.as_tensor(kp_np, device=dev)
    taps = torch.as_tensor(taps_np, device=dev)
    B, H, W = imgs.shape
    P = kp.shape[1]
    R = (taps.numel() - 1) // 2
    x = imgs[:, None]
    if R > 0:
        x = torch.nn.functional.pad(x, (R, R, 0, 0), mode="reflect")
        x = torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1))
        x = torch.nn.functional.pad(x, (0, 0, R, R), mode="reflect")
        x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1))
    sm = x[:, 0]
    gx = torch.zeros_like(sm)
    gy = torch.zeros_like(sm)
    gx[:, 1:-1, 1:-1] = 0.5 * (sm[:, 1:-1, 2:] - sm[:, 1:-1, :-2])
    gy[:, 1:-1, 1:-1] = 0.5 * (sm[:, :-2, 1:-1] - sm[:, 2:, 1:-1])
    mag = torch.hypot(gx, gy).reshape(B, -1)
    abin = torch.remainder(torch.atan2(gy, gx) * (4.0 / math.pi), 8.0).reshape(B, -1)

    px, py, cw, th = kp.unbind(-1)                                       # (B, P)
    ext = 2.5 * cw * (th.cos().abs() + th.sin().abs())
    K = int(math.ceil(float(ext.max()))) + 1
    off = torch.arange(-K, K + 1, device=dev, dtype=torch.float64)
    cx, cy = torch.round(px), torch.round(py)
    cc = (cx[..., None, None] + off[None, None, None, :]).expand(B, P, off.numel(), off.numel())
    rr = (cy[..., None, None] + off[None, None, :, None]).expand(B, P, off.numel(), off.numel())
    dx, dy = cc - px[..., None, None], rr - py[..., None, None]
    ca, sa = (th.cos() / cw)[..., None, None], (th.sin() / cw)[..., None, None]
    u = dx * ca + dy * sa
    v = dy * ca - dx * sa
    inside = (cc >= 1) & (cc <= W - 2) & (rr >= 1) & (rr <= H - 2) & (u.abs() < 2.5) & (v.abs() < 2.5)
    lin = (rr.clamp(0, H - 1) * W + cc.clamp(0, W - 1)).long().reshape(B, -1)
    m = torch.gather(mag, 1, lin).reshape(u.shape).double()
    ob = torch.gather(abin, 1, lin).reshape(u.shape).double()
    s2 = (2.0 * cw)[..., None, None] ** 2
    m = torch.where(inside, m * torch.exp(-(dx * dx + dy * dy) / (2.0 * s2)), torch.zeros_like(m))
    ob = torch.remainder(ob + (th * (4.0 / math.pi))[..., None, None], 8.0)
    rb = torch.where(inside, v + 1.5, torch.zeros_like(v))
    cb = torch.where(inside, u + 1.5, torch.zeros_like(u))
    r0, c0, o0 = rb.floor(), cb.floor(), ob.floor()
    fr, fc, fo = rb - r0, cb - c0, ob - o0
    hist = torch.zeros(B, P, 6 * 6 * 10, device=dev, dtype=torch.float64)
    base = ((r0 + 1) * 6 + c0 + 1) * 10 + o0
    for dr in (0, 1):
        wr = fr if dr else 1 - fr
        for dc in (0, 1):
            wc = fc if dc else 1 - fc
            for do in (0, 1):
                wo = fo if do else 1 - fo
                idx = (base + (dr * 6 + dc) * 10 + do).long().reshape(B, P, -1)
                hist.scatter_add_(2, idx, (m * wr * wc * wo).reshape(B, P, -1))
    hist = hist.view(B, P, 6, 6, 10)[:, :, 1:5, 1:5]
    hist = hist[..., :8] + torch.nn.functional.pad(hist[..., 8:9], (0, 7))
    d = hist.reshape(B, P, 128)
    n = d.norm(dim=-1, keepdim=True)
    d = torch.minimum(d / n.clamp_min(1e-300), torch.tensor(0.2, dtype=d.dtype, device=dev))
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    d = torch.where(n > 1e-12, d, torch.zeros_like(d))
    return d.float()


class ShapeIndexedSIFT(nn.Module):
    """Shape-indexed SIFT features :math:`\\phi(I, S)` as a module (DRN-SSR eq. 4).

    Parameters
    ----------
    window, orientation, reference, smooth, num_threads
        As in :func:`flmcore.sift.shape_indexed_sift`; ``reference`` may be an array
        or a tensor ``(P, 2)``.
    flatten : bool
        Return ``(B, P * 128)`` instead of ``(B, P, 128)``.

    Notes
    -----
    The output is detached: no gradient w.r.t. the shapes or the images (see the
    module docstring).  It has the dtype of ``shapes`` and the device of ``images``.

    Examples
    --------
    >>> import torch
    >>> layer = ShapeIndexedSIFT(window=12.0)
    >>> layer(torch.rand(2, 40, 40), torch.full((2, 5, 2), 20.0)).shape
    torch.Size([2, 5, 128])
    """

    def __init__(self, window: Union[float, np.ndarray] = 32.0, orientation: Union[float, str] = 0.0,
                 reference=None, smooth: float = OPENCV_SMOOTH, num_threads: Optional[int] = None,
                 flatten: bool = False):
        super().__init__()
        self.window = window
        self.orientation = orientation
        if isinstance(reference, torch.Tensor):
            reference = reference.detach().cpu().numpy()
        self.reference = None if reference is None else np.asarray(reference, dtype=np.float64)
        self.smooth = smooth
        self.num_threads = num_threads
        self.flatten = flatten

    def forward(self, images: torch.Tensor, shapes: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or not isinstance(shapes, torch.Tensor):
            raise TypeError(f"images and shapes must be torch.Tensor, got {type(images).__name__} and "
                            f"{type(shapes).__name__}")
        if shapes.ndim != 3:
            raise ValueError(f"shapes must have shape (B, P, 2), got {tuple(shapes.shape)}")
        out_dtype = shapes.dtype if shapes.is_floating_point() else torch.float32
        if images.device.type == "cpu":
            if shapes.is_complex():
                raise TypeError(f"shapes must be real-valued, got dtype {shapes.dtype}")
            d = shape_indexed_sift(_to_numpy_images(images), shapes.detach().cpu().double().numpy(), window=self.window,
                                   orientation=self.orientation, reference=self.reference, smooth=self.smooth,
                                   num_threads=self.num_threads)
            if d.ndim == 2:
                raise ValueError(f"images must be a batch (B, H, W), got {tuple(images.shape)}")
            out = torch.from_numpy(d)
        else:
            out = shape_indexed_sift_torch(images, shapes, window=self.window, orientation=self.orientation,
                                           reference=self.reference, smooth=self.smooth)
        out = out.to(device=images.device, dtype=out_dtype)
        return out.reshape(out.shape[0], -1) if self.flatten else out

    def extra_repr(self) -> str:
        return f"window={self.window}, orientation={self.orientation!r}, smooth={self.smooth:.3g}"

"""Landmark losses: Wing, Adaptive Wing, Soft Wing, L1/L2/smooth-L1, anisotropic (Mahalanobis)
losses and the ATF mixed-branch loss.

Every coordinate loss takes ``input`` and ``target`` of shape ``(B, P, 2)`` (pixels, any float
dtype, any device), reduces the two coordinates of a point to one per-point value
``l[b, p]``, multiplies by optional per-point ``weights`` (broadcastable to ``(B, P)``) and
reduces with ``reduction`` in ``{"mean", "sum", "none"}``: ``"mean"`` is
``sum(weights * l) / (B * P)``, ``"none"`` returns the ``(B, P)`` per-point values.

**Precision.** float32 and float64 inputs are computed and returned in their own dtype.
float16 and bfloat16 inputs are upcast and computed in float32, and the loss is *returned in
float32*: a squared pixel distance of a few hundred pixels, or a sum over a batch, exceeds the
float16 maximum (65504), so a half-precision result could be ``inf`` for finite input (this is
also what ``torch.autocast`` does for its losses). Gradients flow back to the half-precision
input in its own dtype.

References
----------
- Feng et al., *Wing loss for robust facial landmark localisation with CNNs*, CVPR 2018 (eq. 5).
- Wang et al., *Adaptive Wing loss for robust face alignment via heatmap regression*, ICCV 2019
  (eq. 6-7).
- Lin et al., *Structure-coherent deep feature learning for robust face alignment*, IEEE TIP 2021
  (Soft Wing loss).
- Rayhan, Galata, Cootes, *Not all points are created equal - an anisotropic cost function for
  facial landmark location*, BMVC 2020 (eq. 2-6, §3.2).
- Lan, Hu, Cheng, *ATF: an alternating training framework for weakly supervised face alignment*,
  IEEE TMM 2022 (eq. 3-5).
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = [
    "l1_loss", "l2_loss", "smooth_l1_loss", "wing_loss", "adaptive_wing_loss", "soft_wing_loss",
    "anisotropic_weights", "anisotropic_loss", "anisotropic_wing_loss", "mixed_branch_loss",
    "L1Loss", "L2Loss", "SmoothL1Loss", "WingLoss", "AdaptiveWingLoss", "SoftWingLoss",
    "AnisotropicLoss", "AnisotropicWingLoss", "MixedBranchLoss",
]

_REDUCTIONS = ("mean", "sum", "none")


# --------------------------------------------------------------------------------------------
# validation helpers (torch side)
# --------------------------------------------------------------------------------------------
def _check_tensor(x, name: str, ndim=None) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if ndim is not None and x.dim() not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def _check_pair(input: Tensor, target: Tensor) -> None:
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if input.dim() != 3 or input.shape[-1] != 2:
        raise ValueError(f"input must have shape (B, P, 2), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"target must have the shape of input {tuple(input.shape)}, got {tuple(target.shape)}")


def _check_reduction(reduction: str) -> str:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, _REDUCTIONS))}; got {reduction!r}")
    return reduction


def _check_pos(v, name: str, strict: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or (v <= 0 if strict else v < 0):
        raise ValueError(f"{name} must be a finite number {'> 0' if strict else '>= 0'}, got {v}")
    return v


_HALF = (torch.float16, torch.bfloat16)


def _up(x: Tensor) -> Tensor:
    """float16 / bfloat16 -> float32 (every loss computes at least in float32); others unchanged."""
    return x.float() if x.dtype in _HALF else x


def _check_weight_values(w: Tensor) -> None:
    if w.numel() and not bool((torch.isfinite(w) & (w >= 0)).all()):
        bad = w[~(torch.isfinite(w) & (w >= 0))]
        raise ValueError(f"weights must be finite and >= 0, got {float(bad.flatten()[0])}")


def _check_ab(v, name: str, n_points: int):
    """``a`` / ``b`` of the anisotropic cost: a number > 0 or a per-point array ``(P,)`` of numbers > 0.

    Returns a float or a float64 ndarray of shape ``(P,)``.
    """
    if isinstance(v, Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray) and v.ndim == 0:
        v = v[()]  # a 0-d array or tensor is a number
    if np.ndim(v) == 0:
        return _check_pos(v, name)
    arr = np.asarray(v)
    if arr.dtype.kind not in "iuf" or arr.dtype == bool:
        raise TypeError(f"{name} must be a number or a real array of shape ({n_points},), got dtype {arr.dtype}")
    if arr.shape != (n_points,):
        raise ValueError(f"{name} must be a number or have shape ({n_points},), got shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and > 0 at every point, got {arr[k]} at point {k}")
    return arr


def _ab_value(v, like: Tensor):
    """A float stays a float; a per-point array becomes a ``(P,)`` tensor of ``like``'s dtype/device."""
    return v if isinstance(v, float) else torch.as_tensor(v, dtype=like.dtype, device=like.device)


def _reduce(per_point: Tensor, weights, reduction: str) -> Tensor:
    """Apply per-point weights to ``(B, P)`` values and reduce."""
    _check_reduction(reduction)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=per_point.dtype, device=per_point.device)
        try:
            torch.broadcast_shapes(w.shape, per_point.shape)
        except RuntimeError:
            raise ValueError(f"weights must broadcast to (B, P) = {tuple(per_point.shape)}, "
                             f"got shape {tuple(w.shape)}") from None
        if torch.broadcast_shapes(w.shape, per_point.shape) != per_point.shape:
            raise ValueError(f"weights must broadcast to (B, P) = {tuple(per_point.shape)}, "
                             f"got shape {tuple(w.shape)}")
        _check_weight_values(w)
        per_point = per_point * w
    if reduction == "none":
        return per_point
    if reduction == "sum":
        return per_point.sum()
    return per_point.sum() / per_point.numel()


# --------------------------------------------------------------------------------------------
# element-wise coordinate losses
# --------------------------------------------------------------------------------------------
def l1_loss(input: Tensor, target: Tensor, *, weights=None, reduction: str = "mean") -> Tensor:
    """L1 landmark loss: ``l[b, p] = |dx| + |dy|`` (ATF eq. 5 uses it in its coordinate form).

    Parameters
    ----------
    input, target : Tensor, shape (B, P, 2)
        Predicted and true landmarks (pixels).
    weights : array_like or Tensor, optional
        Per-point weights broadcastable to ``(B, P)``, finite and >= 0 (else ``ValueError``
        naming ``weights``).
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the weighted sum by ``B * P``.

    Returns
    -------
    Tensor
        A scalar, or ``(B, P)`` when ``reduction="none"``; in the input dtype, float32 for
        float16 / bfloat16 input (computed in float32, see the module notes).

    Examples
    --------
    >>> import torch
    >>> l1_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item()
    2.0
    """
    _check_pair(input, target)
    input, target = _up(input), _up(target)
    return _reduce((input - target).abs().sum(-1), weights, reduction)


def l2_loss(input: Tensor, target: Tensor, *, weights=None, reduction: str = "mean") -> Tensor:
    """Squared-Euclidean landmark loss ``l[b, p] = dx^2 + dy^2`` (Rayhan et al. eq. 1).

    Examples
    --------
    >>> import torch
    >>> l2_loss(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item()
    2.0
    """
    _check_pair(input, target)
    input, target = _up(input), _up(target)
    return _reduce((input - target).pow(2).sum(-1), weights, reduction)


def smooth_l1_loss(input: Tensor, target: Tensor, *, beta: float = 1.0, weights=None,
                   reduction: str = "mean") -> Tensor:
    """Smooth-L1 (Huber-like) landmark loss, per coordinate ``0.5 x^2 / beta`` if ``|x| < beta``
    else ``|x| - 0.5 beta``, summed over x and y.

    Examples
    --------
    >>> import torch
    >>> smooth_l1_loss(torch.tensor([[[0.5, 3.0]]]), torch.zeros(1, 1, 2)).item()
    2.625
    """
    _check_pair(input, target)
    beta = _check_pos(beta, "beta")
    input, target = _up(input), _up(target)
    x = (input - target).abs()
    per = torch.where(x < beta, 0.5 * x * x / beta, x - 0.5 * beta)
    return _reduce(per.sum(-1), weights, reduction)


def _wing(x: Tensor, w: float, epsilon: float) -> Tensor:
    """Wing function of a non-negative tensor (Feng et al. eq. 5)."""
    c = w - w * math.log1p(w / epsilon)
    return torch.where(x < w, w * torch.log1p(x / epsilon), x - c)


def wing_loss(input: Tensor, target: Tensor, *, w: float = 10.0, epsilon: float = 2.0, weights=None,
              reduction: str = "mean") -> Tensor:
    """Wing loss (Feng et al., CVPR 2018, eq. 5) applied to each coordinate error and summed over x, y.

    ``wing(x) = w ln(1 + |x|/epsilon)`` if ``|x| < w`` else ``|x| - C`` with
    ``C = w - w ln(1 + w/epsilon)`` (continuous at ``|x| = w``).

    Parameters
    ----------
    input, target : Tensor, shape (B, P, 2)
    w : float
        Width of the non-linear (log) part, pixels (> 0).
    epsilon : float
        Curvature of the log part (> 0).
    weights : optional per-point weights broadcastable to (B, P)
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> round(wing_loss(torch.tensor([[[2.0, 0.0]]]), torch.zeros(1, 1, 2)).item(), 4)
    6.9315
    """
    _check_pair(input, target)
    w = _check_pos(w, "w")
    epsilon = _check_pos(epsilon, "epsilon")
    input, target = _up(input), _up(target)
    return _reduce(_wing((input - target).abs(), w, epsilon).sum(-1), weights, reduction)


def soft_wing_loss(input: Tensor, target: Tensor, *, omega1: float = 2.0, omega2: float = 20.0,
                   epsilon: float = 0.5, weights=None, reduction: str = "mean") -> Tensor:
    """Soft Wing loss (Lin et al., TIP 2021): linear near zero, logarithmic for large errors.

    Per coordinate ``|x|`` if ``|x| < omega1`` else ``omega2 ln(1 + |x|/epsilon) + B`` with
    ``B = omega1 - omega2 ln(1 + omega1/epsilon)`` (continuous at ``omega1``), summed over x, y.

    Examples
    --------
    >>> import torch
    >>> soft_wing_loss(torch.tensor([[[1.0, 0.0]]]), torch.zeros(1, 1, 2)).item()
    1.0
    """
    _check_pair(input, target)
    omega1 = _check_pos(omega1, "omega1")
    omega2 = _check_pos(omega2, "omega2")
    epsilon = _check_pos(epsilon, "epsilon")
    b = omega1 - omega2 * math.log1p(omega1 / epsilon)
    input, target = _up(input), _up(target)
    x = (input - target).abs()
    per = torch.where(x < omega1, x, omega2 * torch.log1p(x / epsilon) + b)
    return _reduce(per.sum(-1), weights, reduction)


def adaptive_wing_loss(input: Tensor, target: Tensor, *, omega: float = 14.0, theta: float = 0.5,
                       epsilon: float = 1.0, alpha: float = 2.1, weights=None,
                       reduction: str = "mean") -> Tensor:
    """Adaptive Wing loss for heatmaps (Wang et al., ICCV 2019, eq. 6-7).

    With ``y`` the target heatmap value (in [0, 1]) and ``d = |input - y|``::

        AWing = omega ln(1 + (d/epsilon)^(alpha - y))   if d < theta
              = A d - C                                  otherwise
        A = omega (alpha - y) (theta/epsilon)^(alpha - y - 1) / (epsilon (1 + (theta/epsilon)^(alpha - y)))
        C = theta A - omega ln(1 + (theta/epsilon)^(alpha - y))

    Parameters
    ----------
    input, target : Tensor, shape (B, P, ...)
        Predicted and target heatmaps (any trailing dims, e.g. ``(B, P, H, W)``).
    weights : optional per-landmark weights broadcastable to (B, P)
    reduction : {"mean", "sum", "none"}
        The per-landmark value sums over the trailing (pixel) dimensions; ``"mean"`` divides
        the weighted sum by ``B * P``, ``"none"`` returns ``(B, P)``.

    Examples
    --------
    >>> import torch
    >>> adaptive_wing_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)).item()
    0.0
    """
    _check_tensor(input, "input")
    _check_tensor(target, "target")
    if input.dim() < 2:
        raise ValueError(f"input must have shape (B, P, ...), got {tuple(input.shape)}")
    if target.shape != input.shape:
        raise ValueError(f"target must have the shape of input {tuple(input.shape)}, got {tuple(target.shape)}")
    omega = _check_pos(omega, "omega")
    theta = _check_pos(theta, "theta")
    epsilon = _check_pos(epsilon, "epsilon")
    alpha = _check_pos(alpha, "alpha")
    input, target = _up(input), _up(target)
    d = (input - target).abs()
    p = alpha - target
    r = theta / epsilon
    a = omega * p * torch.pow(torch.full_like(p, r), p - 1) / (epsilon * (1 + torch.pow(torch.full_like(p, r), p)))
    c = theta * a - omega * torch.log1p(torch.pow(torch.full_like(p, r), p))
    small = omega * torch.log1p(torch.pow(d / epsilon, p))
    per = torch.where(d < theta, small, a * d - c)
    per = per.reshape(per.shape[0], per.shape[1], -1).sum(-1)
    return _reduce(per, weights, reduction)


# --------------------------------------------------------------------------------------------
# anisotropic (Mahalanobis) loss
# --------------------------------------------------------------------------------------------
def _resolve_scheme(scheme):
    if isinstance(scheme, str):
        from flmcore.schemes import get_scheme

        return get_scheme(scheme)
    if not all(hasattr(scheme, k) for k in ("n_points", "curves", "corners")):
        raise TypeError(f"scheme must be a scheme name or a flmcore.schemes.Scheme, got {type(scheme).__name__}")
    return scheme


_NEIGHBOUR_CACHE: Dict[Tuple, Tuple[np.ndarray, ...]] = {}


def _curve_neighbours(scheme) -> Tuple[np.ndarray, ...]:
    """Index arrays ``(prev, next, on_curve, ang_prev, ang_mid, ang_next)`` of a scheme.

    The tangent of point ``i`` is ``z[next] - z[prev]``: interior curve points use their two
    neighbours (Rayhan et al. eq. 4), closed curves wrap around, open-curve ends use the
    one-sided difference (eq. 5).  Corners (``scheme.corners``: the true eye / mouth corners,
    isolated and shared points -- not the open-curve ends) are ``on_curve = False`` (W = I).
    A point listed by two curves keeps the first curve.  The turning angle of point ``i`` (for
    curvature-adaptive (a, b)) is measured at vertex ``ang_mid`` between ``ang_prev`` and
    ``ang_next``; open-curve ends borrow their inner neighbour's angle, curves of fewer than 3
    points have no angle (``ang_mid = -1``).
    """
    key = (scheme.name, scheme.n_points, tuple((c.indices, c.closed) for c in scheme.curves),
           tuple(scheme.corners))
    hit = _NEIGHBOUR_CACHE.get(key)
    if hit is not None:
        return hit
    P = scheme.n_points
    prev, nxt = np.arange(P), np.arange(P)
    ap, am, an = np.arange(P), np.full(P, -1), np.arange(P)
    on = np.zeros(P, bool)
    seen = np.zeros(P, bool)
    for curve in scheme.curves:
        idx = list(curve.indices)
        n = len(idx)
        for k, i in enumerate(idx):
            if seen[i]:
                continue
            seen[i] = True
            on[i] = n >= 2
            if n < 2:
                continue
            if curve.closed:
                prev[i], nxt[i] = idx[(k - 1) % n], idx[(k + 1) % n]
                if n >= 3:
                    ap[i], am[i], an[i] = idx[(k - 1) % n], i, idx[(k + 1) % n]
                continue
            prev[i] = idx[max(k - 1, 0)]
            nxt[i] = idx[min(k + 1, n - 1)]
            if n >= 3:
                m = min(max(k, 1), n - 2)  # ends borrow the inner neighbour's angle
                ap[i], am[i], an[i] = idx[m - 1], idx[m], idx[m + 1]
    on[list(scheme.corners)] = False
    out = (prev, nxt, on, ap, am, an)
    _NEIGHBOUR_CACHE[key] = out
    return out


def _tangent_dirs(target: Tensor, prev: Tensor, nxt: Tensor) -> Tensor:
    """Unnormalised tangent directions ``z[next] - z[prev]`` (eq. 4/5) with the one-sided fallback.

    Where the two neighbours coincide (collapsed contours of profile faces) the forward
    difference ``z[next] - z_i`` is used, else the backward one ``z_i - z[prev]`` -- exactly as
    :func:`flmcore.anisotropic.tangents`; zero only where every difference vanishes (W = I).
    """
    zp = target.index_select(1, prev)
    zn = target.index_select(1, nxt)
    v = zn - zp
    zero = (v * v).sum(-1, keepdim=True) == 0
    if bool(zero.any()):
        fwd = zn - target
        bwd = target - zp
        one = torch.where((fwd * fwd).sum(-1, keepdim=True) > 0, fwd, bwd)
        v = torch.where(zero, one, v)
    return v


def _log(v, like: Tensor) -> Tensor:
    """``log`` of a float or a per-point ``(P,)`` array as a tensor broadcastable to ``(B, P)``."""
    return torch.log(torch.as_tensor(v, dtype=like.dtype, device=like.device))


def _sq(v, like: Tensor) -> Tensor:
    """``v * v`` of a float or a per-point ``(P,)`` array as a tensor broadcastable to ``(B, P)``."""
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return t * t


def _aniso_coeffs(target: Tensor, scheme, a, b, adaptive: bool = False):
    """Return ``(c_iso, c_tan, t)`` with ``d^T W d = c_iso |d|^2 + c_tan (t.d)^2`` (eq. 6).

    Curve points (including open-curve ends, eq. 5): ``c_iso = 1/b^2``,
    ``c_tan = 1/a^2 - 1/b^2`` (``a``, ``b`` floats or per-point ``(P,)`` arrays); corners,
    isolated points and points whose tangent vanishes even one-sidedly: ``c_iso = 1``,
    ``c_tan = 0`` (W = I), as in
    :func:`flmcore.anisotropic.weight_matrices`.
    """
    prev, nxt, on, ap, am, an = _curve_neighbours(scheme)
    dev = target.device
    v = _tangent_dirs(target, torch.as_tensor(prev, device=dev), torch.as_tensor(nxt, device=dev))
    nrm = torch.linalg.vector_norm(v, dim=-1)
    ok = nrm > 0
    t = v / torch.where(ok, nrm, torch.ones_like(nrm)).unsqueeze(-1)
    on_t = torch.as_tensor(on, device=dev) & ok
    if adaptive:
        has = torch.as_tensor(am >= 0, device=dev)
        mid = torch.as_tensor(np.where(am >= 0, am, ap), device=dev)
        zp = target[:, torch.as_tensor(ap, device=dev)]
        zm = target[:, mid]
        zn = target[:, torch.as_tensor(an, device=dev)]
        e1, e2 = zm - zp, zn - zm
        cross = e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]
        dot = (e1 * e2).sum(-1)
        theta = torch.where(has, torch.atan2(cross.abs(), dot), torch.zeros_like(dot))
        s = 1.0 - theta / math.pi  # a_i = a^s, b_i = b^s (flmcore.anisotropic, curvature-adaptive)
        inv_a2 = torch.exp(-2.0 * s * _log(a, target))
        inv_b2 = torch.exp(-2.0 * s * _log(b, target))
    else:
        inv_a2 = (1.0 / _sq(a, target)).expand(target.shape[:2])
        inv_b2 = (1.0 / _sq(b, target)).expand(target.shape[:2])
    c_iso = torch.where(on_t, inv_b2, torch.ones_like(inv_b2))
    c_tan = torch.where(on_t, inv_a2 - inv_b2, torch.zeros_like(inv_b2))
    return c_iso, c_tan, t


def _check_scheme_points(target: Tensor, scheme) -> None:
    if target.dim() != 3 or target.shape[-1] != 2:
        raise ValueError(f"target must have shape (B, P, 2), got {tuple(target.shape)}")
    if target.shape[1] != scheme.n_points:
        raise ValueError(f"target has {target.shape[1]} points but scheme {scheme.name!r} has "
                         f"{scheme.n_points}")


def anisotropic_weights(target: Tensor, scheme, a: float = 5.0, b: float = 3.0, *,
                        adaptive: bool = False) -> Tensor:
    """Anisotropic weight matrices ``W_i`` of Rayhan et al. eq. (6), computed in closed form.

    ``W_i = t_i t_i^T / a^2 + (I - t_i t_i^T) / b^2`` on curve points, with ``t_i`` the
    tangent of eq. (4)/(5) on the target shape, and ``W_i = I`` at the scheme's corners.
    Vectorised over the batch, no eigen-solver; the torch twin of
    :func:`flmcore.anisotropic.weight_matrices`.

    Parameters
    ----------
    target : Tensor, shape (B, P, 2)
        True shapes (pixels).
    scheme : str or Scheme
        Annotation scheme with ``P`` points (curves and corners).
    a, b : float or array_like (P,)
        Standard deviations along and across the curve, pixels (``a > b`` lets points slide);
        per point when arrays (every entry finite and > 0).
    adaptive : bool
        Curvature-adaptive per-point (a, b) as in :func:`flmcore.anisotropic.weight_matrices`.

    Returns
    -------
    Tensor, shape (B, P, 2, 2)
        float64 for float64 ``target``, else float32 (float16/bfloat16 are computed in float32).

    Examples
    --------
    >>> import torch
    >>> z = torch.rand(2, 68, 2, dtype=torch.float64) * 100
    >>> anisotropic_weights(z, "ibug68").shape
    torch.Size([2, 68, 2, 2])
    """
    _check_tensor(target, "target")
    scheme = _resolve_scheme(scheme)
    _check_scheme_points(target, scheme)
    a = _check_ab(a, "a", scheme.n_points)
    b = _check_ab(b, "b", scheme.n_points)
    target = _up(target)
    c_iso, c_tan, t = _aniso_coeffs(target, scheme, a, b, adaptive)
    eye = torch.eye(2, dtype=target.dtype, device=target.device)
    tt = t.unsqueeze(-1) * t.unsqueeze(-2)
    return c_iso[..., None, None] * eye + c_tan[..., None, None] * tt


_INDEX_CACHE: Dict[Tuple, Tuple[Tensor, Tensor, Tensor]] = {}


def _fixed_index(scheme, device) -> Tuple[Tensor, Tensor, Tensor]:
    """``(prev, next, on_curve)`` as tensors on ``device`` (cached per scheme and device)."""
    key = (id(scheme), scheme.name, str(device))
    hit = _INDEX_CACHE.get(key)
    if hit is None:
        prev, nxt, on, *_ = _curve_neighbours(scheme)
        hit = (torch.as_tensor(prev, device=device), torch.as_tensor(nxt, device=device),
               torch.as_tensor(on, device=device))
        _INDEX_CACHE[key] = hit
    return hit


def _mahalanobis_sq(d: Tensor, target: Tensor, scheme, a, b, adaptive: bool) -> Tensor:
    """Per-point ``d^T W d`` (eq. 2, 6) without forming W."""
    target = target.detach()
    if adaptive:
        c_iso, c_tan, t = _aniso_coeffs(target, scheme, a, b, adaptive)
        proj = (d * t).sum(-1)
        return c_iso * d.pow(2).sum(-1) + c_tan * proj * proj
    # fixed (a, b): with v = z[next] - z[prev], (t.d)^2 = (v.d)^2 / |v|^2
    prev, nxt, on = _fixed_index(scheme, target.device)
    v = _tangent_dirs(target, prev, nxt)
    vv = (v * v).sum(-1)
    curve = on & (vv > 0)
    dd = (d * d).sum(-1)
    vd = (v * d).sum(-1)
    a, b = _ab_value(a, target), _ab_value(b, target)
    inv_b2 = 1.0 / (b * b)
    q_curve = inv_b2 * dd + (1.0 / (a * a) - inv_b2) * vd * vd / torch.where(curve, vv, torch.ones_like(vv))
    return torch.where(curve, q_curve, dd)


def _prep_aniso(input, target, scheme, a, b, origin):
    _check_pair(input, target)
    scheme = _resolve_scheme(scheme)
    _check_scheme_points(target, scheme)
    a = _check_ab(a, "a", scheme.n_points)
    b = _check_ab(b, "b", scheme.n_points)
    input, target = _up(input), _up(target)
    if origin is not None:
        o = torch.as_tensor(origin, dtype=input.dtype, device=input.device)
        if o.shape != input.shape[1:]:
            raise ValueError(f"origin must have shape (P, 2) = {tuple(input.shape[1:])}, got {tuple(o.shape)}")
        input = input + o
    return input, target, scheme, a, b


def anisotropic_loss(input: Tensor, target: Tensor, scheme, a: float = 5.0, b: float = 3.0, *,
                     adaptive: bool = False, origin=None, weights=None, reduction: str = "mean") -> Tensor:
    """Anisotropic cost of Rayhan et al. (eq. 2 with the weights of eq. 6).

    ``l[b, i] = (x_i - z_i)^T W_i (x_i - z_i)`` with ``W_i`` built from the target shape
    ``z`` (see :func:`anisotropic_weights`).  Evaluated as
    ``|d|^2 / b^2 + (1/a^2 - 1/b^2) (t.d)^2`` on curve points and ``|d|^2`` at corners,
    so no 2x2 matrix is formed.  The weights are treated as constants (no gradient flows
    through the target tangents), as in the paper where they are pre-computed.

    Parameters
    ----------
    input : Tensor, shape (B, P, 2)
        Predicted landmarks, or their displacement from ``origin`` when it is given
        (§3.2: predict ``dx = x - mean of pose-bin means``).
    target : Tensor, shape (B, P, 2)
        True landmarks (pixels).
    scheme : str or Scheme
        Annotation scheme with ``P`` points.
    a, b : float or array_like (P,)
        Standard deviation along / across the curve (pixels); the paper's best is a=5, b=3.
        Per point when arrays; every entry must be finite and > 0 (a zero standard deviation
        would be an infinite weight: ``ValueError`` naming ``a`` or ``b``).
    adaptive : bool
        Per-point curvature-adaptive (a, b) (extension, as in :mod:`flmcore.anisotropic`).
    origin : array_like or Tensor, shape (P, 2), optional
        Regression origin added to ``input`` (e.g. ``flmcore.pose.pose_bins(...)`` mean of bin means).
    weights : optional per-point weights broadcastable to (B, P)
    reduction : {"mean", "sum", "none"}

    Examples
    --------
    >>> import torch
    >>> z = torch.rand(4, 68, 2) * 100
    >>> float(anisotropic_loss(z, z, "ibug68"))
    0.0
    """
    input, target, scheme, a, b = _prep_aniso(input, target, scheme, a, b, origin)
    q = _mahalanobis_sq(input - target, target, scheme, a, b, adaptive)
    return _reduce(q, weights, reduction)


def anisotropic_wing_loss(input: Tensor, target: Tensor, scheme, a: float = 5.0, b: float = 3.0, *,
                          w: float = 10.0, epsilon: float = 2.0, adaptive: bool = False, origin=None,
                          weights=None, reduction: str = "mean", scale: float = 1.0) -> Tensor:
    """Anisotropic Wing loss (extension): the Wing function of the Mahalanobis distance.

    ``l[b, i] = wing(scale * sqrt(d_i^T W_i d_i))`` with ``W_i`` from :func:`anisotropic_weights`.
    Since ``W = I/b^2`` across a curve, ``scale = b`` makes the distance across curves and at
    corners (where ``W = I``) comparable with a pixel error; ``scale=1`` keeps the raw distance.

    Examples
    --------
    >>> import torch
    >>> z = torch.rand(2, 68, 2) * 100
    >>> float(anisotropic_wing_loss(z, z, "ibug68"))
    0.0
    """
    input, target, scheme, a, b = _prep_aniso(input, target, scheme, a, b, origin)
    w = _check_pos(w, "w")
    epsilon = _check_pos(epsilon, "epsilon")
    scale = _check_pos(scale, "scale")
    q = _mahalanobis_sq(input - target, target, scheme, a, b, adaptive)
    pos = q > 0
    m = scale * torch.where(pos, torch.where(pos, q, torch.ones_like(q)).sqrt(), torch.zeros_like(q))
    return _reduce(_wing(m, w, epsilon), weights, reduction)


# --------------------------------------------------------------------------------------------
# ATF mixed-branch loss (eq. 3-5)
# --------------------------------------------------------------------------------------------
def _as_pairs(p, name) -> Tensor:
    arr = np.asarray(p.cpu().numpy() if isinstance(p, Tensor) else p)
    if arr.dtype.kind not in "iu" and arr.size:
        raise TypeError(f"{name} must hold integer index pairs, got dtype {arr.dtype}")
    arr = arr.reshape(-1, 2) if arr.size == 0 else arr
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (K, 2) of (index in a, index in b), got {arr.shape}")
    return torch.as_tensor(arr.astype(np.int64))


def _sample_term(pred: Tensor, gt: Tensor, form: str) -> Tensor:
    """L_m / L_a of eq. 4 (heatmap: per-landmark pixel sum of squares) or eq. 5 (coordinate: L1)."""
    if pred.shape != gt.shape:
        raise ValueError(f"branch output {tuple(pred.shape)} and target {tuple(gt.shape)} differ in shape")
    d = pred - gt
    if form == "coord":
        per = d.abs().sum(-1)  # (B, P)
    else:
        per = d.pow(2).reshape(d.shape[0], d.shape[1], -1).sum(-1)
    return per.mean()  # 1 / (N_I N_L) sum_i sum_j


def _pair_term(pa: Tensor, pb: Tensor, pairs: Tensor, form: str) -> Tensor:
    """L_ps of eq. 4/5 between the similar landmarks predicted by two branches on the same images."""
    if pairs.numel() == 0:
        return pa.new_zeros(())
    ia = pairs[:, 0].to(pa.device)
    ib = pairs[:, 1].to(pb.device)
    sa = pa.index_select(1, ia)
    sb = pb.index_select(1, ib)
    if sa.shape != sb.shape:
        raise ValueError(f"similar landmarks of the two branches differ in shape: {tuple(sa.shape)} vs "
                         f"{tuple(sb.shape)} (heatmap heads must share the resolution)")
    return _sample_term(sa, sb, form)


def mixed_branch_loss(outputs: Mapping[str, Tensor], target: Tensor, dataset: str, *, main: str,
                      pairs: Mapping[Tuple[str, str], object], alpha: float = 1.0, beta: float = 1.0,
                      gamma: float = 1.0, form: str = "coord") -> Tensor:
    """Mixed branch loss of ATF (Lan et al., eq. 3) in the coordinate (eq. 5) or heatmap (eq. 4) form.

    For a batch drawn from dataset ``dataset`` and the outputs of every branch on that batch::

        L_MB = L_m + alpha * L_ps              if dataset == main
             = beta * L_a + gamma * L_ps       otherwise (an auxiliary dataset)

    ``L_m``/``L_a`` compare the batch's own branch with its labels; ``L_ps`` compares the
    *predictions* of the similar landmarks of two branches (no label needed), averaged over the
    branch pairs of ``pairs`` that contain ``dataset``.  Coordinate form: mean over images and
    landmarks of the L1 norm ``|dx| + |dy|``; heatmap form: mean over images and landmarks of
    the pixel sum of squared differences.

    Parameters
    ----------
    outputs : mapping name -> Tensor
        Every branch's output on the batch, ``(B, P_k, 2)`` coordinates or ``(B, P_k, H, W)``
        heatmaps.
    target : Tensor
        Labels of the batch in ``dataset``'s scheme (coordinates or heatmaps).
    dataset : str
        Name of the branch (dataset) the batch comes from.
    main : str
        Name of the target (main) branch ``D_m``.
    pairs : mapping (name_a, name_b) -> (K, 2) int array
        Similar landmarks: row ``(i, j)`` pairs landmark ``i`` of branch ``a`` with ``j`` of ``b``
        (e.g. from :func:`flmcore.schemes.correspondences` or
        :func:`flmcore.similar_points.similar_landmark_pairs`).
    alpha, beta, gamma : float
        Weights of eq. 3 (>= 0): ``alpha`` the pair term on main batches, ``beta`` the auxiliary
        label term, ``gamma`` the pair term on auxiliary batches.
    form : {"coord", "heatmap"}

    Returns
    -------
    Tensor (scalar)
        float16 / bfloat16 branch outputs are computed in float32 and give a float32 loss.

    Examples
    --------
    >>> import torch
    >>> out = {"a": torch.zeros(2, 3, 2), "b": torch.ones(2, 2, 2)}
    >>> mixed_branch_loss(out, torch.zeros(2, 3, 2), "a", main="a", pairs={("a", "b"): [[0, 0]]},
    ...                   alpha=0.5).item()
    1.0
    """
    if form not in ("coord", "heatmap"):
        raise ValueError(f"form must be 'coord' or 'heatmap'; got {form!r}")
    for v, n in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")):
        _check_pos(v, n, strict=False)
    if dataset not in outputs:
        raise ValueError(f"dataset {dataset!r} has no branch output; outputs: {sorted(outputs)}")
    if main not in outputs:
        raise ValueError(f"main branch {main!r} has no output; outputs: {sorted(outputs)}")
    _check_tensor(target, "target")
    outputs = {k: _up(v) if isinstance(v, Tensor) else v for k, v in outputs.items()}
    own = _sample_term(outputs[dataset], target.to(outputs[dataset].dtype), form)
    terms = []
    for (na, nb), p in pairs.items():
        if dataset not in (na, nb) or na not in outputs or nb not in outputs:
            continue
        pt = p if isinstance(p, Tensor) and p.dtype == torch.int64 else _as_pairs(p, f"pairs[{(na, nb)!r}]")
        terms.append(_pair_term(outputs[na], outputs[nb], pt, form))
    ps = torch.stack(terms).mean() if terms else own.new_zeros(())
    if dataset == main:
        return own + alpha * ps
    return beta * own + gamma * ps


# --------------------------------------------------------------------------------------------
# nn.Module wrappers
# --------------------------------------------------------------------------------------------
class _PointLoss(nn.Module):
    def __init__(self, reduction: str = "mean", weights=None):
        super().__init__()
        self.reduction = _check_reduction(reduction)
        if weights is not None:
            w = torch.as_tensor(np.asarray(weights), dtype=torch.float64)
            _check_weight_values(w)
            self.register_buffer("weights", w)
        else:
            self.weights = None

    def _w(self, weights):
        return weights if weights is not None else self.weights


class L1Loss(_PointLoss):
    """Module form of :func:`l1_loss` (optional per-point ``weights`` of shape (P,) or (B, P)).

    Examples
    --------
    >>> import torch
    >>> L1Loss()(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item()
    2.0
    """

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return l1_loss(input, target, weights=self._w(weights), reduction=self.reduction)


class L2Loss(_PointLoss):
    """Module form of :func:`l2_loss`.

    Examples
    --------
    >>> import torch
    >>> L2Loss()(torch.ones(1, 2, 2), torch.zeros(1, 2, 2)).item()
    2.0
    """

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return l2_loss(input, target, weights=self._w(weights), reduction=self.reduction)


class SmoothL1Loss(_PointLoss):
    """Module form of :func:`smooth_l1_loss`.

    Examples
    --------
    >>> import torch
    >>> SmoothL1Loss(beta=1.0)(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2)).item()
    0.0
    """

    def __init__(self, beta: float = 1.0, reduction: str = "mean", weights=None):
        super().__init__(reduction, weights)
        self.beta = _check_pos(beta, "beta")

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return smooth_l1_loss(input, target, beta=self.beta, weights=self._w(weights), reduction=self.reduction)


class WingLoss(_PointLoss):
    """Wing loss module (Feng et al. eq. 5); see :func:`wing_loss`.

    Examples
    --------
    >>> import torch
    >>> WingLoss(w=10.0, epsilon=2.0)(torch.zeros(3, 5, 2), torch.zeros(3, 5, 2)).item()
    0.0
    """

    def __init__(self, w: float = 10.0, epsilon: float = 2.0, reduction: str = "mean", weights=None):
        super().__init__(reduction, weights)
        self.w = _check_pos(w, "w")
        self.epsilon = _check_pos(epsilon, "epsilon")

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return wing_loss(input, target, w=self.w, epsilon=self.epsilon, weights=self._w(weights),
                         reduction=self.reduction)


class SoftWingLoss(_PointLoss):
    """Soft Wing loss module; see :func:`soft_wing_loss`.

    Examples
    --------
    >>> import torch
    >>> SoftWingLoss()(torch.zeros(3, 5, 2), torch.zeros(3, 5, 2)).item()
    0.0
    """

    def __init__(self, omega1: float = 2.0, omega2: float = 20.0, epsilon: float = 0.5,
                 reduction: str = "mean", weights=None):
        super().__init__(reduction, weights)
        self.omega1 = _check_pos(omega1, "omega1")
        self.omega2 = _check_pos(omega2, "omega2")
        self.epsilon = _check_pos(epsilon, "epsilon")

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return soft_wing_loss(input, target, omega1=self.omega1, omega2=self.omega2, epsilon=self.epsilon,
                              weights=self._w(weights), reduction=self.reduction)


class AdaptiveWingLoss(_PointLoss):
    """Adaptive Wing loss module for heatmaps (Wang et al. eq. 6-7); see :func:`adaptive_wing_loss`.

    Examples
    --------
    >>> import torch
    >>> AdaptiveWingLoss()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)).item()
    0.0
    """

    def __init__(self, omega: float = 14.0, theta: float = 0.5, epsilon: float = 1.0, alpha: float = 2.1,
                 reduction: str = "mean", weights=None):
        super().__init__(reduction, weights)
        self.omega = _check_pos(omega, "omega")
        self.theta = _check_pos(theta, "theta")
        self.epsilon = _check_pos(epsilon, "epsilon")
        self.alpha = _check_pos(alpha, "alpha")

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return adaptive_wing_loss(input, target, omega=self.omega, theta=self.theta, epsilon=self.epsilon,
                                  alpha=self.alpha, weights=self._w(weights), reduction=self.reduction)


class AnisotropicLoss(_PointLoss):
    """Anisotropic landmark cost of Rayhan et al. (eq. 2, 6); see :func:`anisotropic_loss`.

    Parameters
    ----------
    scheme : str or Scheme
        Annotation scheme (curves, corners) of the landmarks.
    a, b : float or array_like (P,)
        Standard deviations along / across curves (pixels), ``a=5, b=3`` in the paper; per
        point when arrays (every entry finite and > 0).
    adaptive : bool
        Curvature-adaptive per-point (a, b) (extension).
    origin : array_like (P, 2), optional
        When given, the network predicts the displacement from this shape (§3.2, e.g. the mean
        of pose-bin means of :func:`flmcore.pose.pose_bins`).
    reduction : {"mean", "sum", "none"}
    weights : optional per-point weights (P,)

    Examples
    --------
    >>> import torch
    >>> loss = AnisotropicLoss("ibug68")
    >>> z = torch.rand(2, 68, 2) * 100
    >>> loss(z + 1.0, z).item() > 0
    True
    """

    def __init__(self, scheme, a: float = 5.0, b: float = 3.0, *, adaptive: bool = False, origin=None,
                 reduction: str = "mean", weights=None):
        super().__init__(reduction, weights)
        self.scheme = _resolve_scheme(scheme)
        self.a = _check_ab(a, "a", self.scheme.n_points)
        self.b = _check_ab(b, "b", self.scheme.n_points)
        self.adaptive = bool(adaptive)
        if origin is not None:
            o = torch.as_tensor(np.asarray(origin, dtype=np.float64))
            if o.shape != (self.scheme.n_points, 2):
                raise ValueError(f"origin must have shape ({self.scheme.n_points}, 2), got {tuple(o.shape)}")
            self.register_buffer("origin", o)
        else:
            self.origin = None

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return anisotropic_loss(input, target, self.scheme, self.a, self.b, adaptive=self.adaptive,
                                origin=self.origin, weights=self._w(weights), reduction=self.reduction)


class AnisotropicWingLoss(AnisotropicLoss):
    """Wing function of the anisotropic (Mahalanobis) distance (extension); see
    :func:`anisotropic_wing_loss`.

    Examples
    --------
    >>> import torch
    >>> z = torch.rand(2, 68, 2) * 100
    >>> AnisotropicWingLoss("ibug68", scale=3.0)(z, z).item()
    0.0
    """

    def __init__(self, scheme, a: float = 5.0, b: float = 3.0, *, w: float = 10.0, epsilon: float = 2.0,
                 scale: float = 1.0, adaptive: bool = False, origin=None, reduction: str = "mean", weights=None):
        super().__init__(scheme, a, b, adaptive=adaptive, origin=origin, reduction=reduction, weights=weights)
        self.w = _check_pos(w, "w")
        self.epsilon = _check_pos(epsilon, "epsilon")
        self.scale = _check_pos(scale, "scale")

    def forward(self, input: Tensor, target: Tensor, weights=None) -> Tensor:
        return anisotropic_wing_loss(input, target, self.scheme, self.a, self.b, w=self.w, epsilon=self.epsilon,
                                     adaptive=self.adaptive, origin=self.origin, weights=self._w(weights),
                                     reduction=self.reduction, scale=self.scale)


class MixedBranchLoss(nn.Module):
    """ATF mixed branch loss (Lan et al. eq. 3) with the coordinate (eq. 5) or heatmap (eq. 4) form.

    Parameters
    ----------
    alpha, beta, gamma : float
        Eq. 3 weights: ``L = L_m + alpha L_ps`` on batches of the main dataset,
        ``L = beta L_a + gamma L_ps`` on auxiliary batches (paper: 0.2, 0.8, 0.1 for WFLW + AFLW).
    pairs : mapping (name_a, name_b) -> (K, 2) int array
        Similar landmarks between branches (index in ``a``, index in ``b``).
    main : str
        Name of the main (target) branch.
    form : {"coord", "heatmap"}

    Examples
    --------
    >>> import torch
    >>> crit = MixedBranchLoss(0.2, 0.8, 0.1, {("w68", "h29"): [[36, 8]]}, main="w68")
    >>> out = {"w68": torch.zeros(2, 68, 2), "h29": torch.zeros(2, 29, 2)}
    >>> crit(out, torch.zeros(2, 29, 2), "h29").item()
    0.0
    """

    def __init__(self, alpha: float, beta: float, gamma: float, pairs: Mapping[Tuple[str, str], object], *,
                 main: str, form: str = "coord"):
        super().__init__()
        for v, n in ((alpha, "alpha"), (beta, "beta"), (gamma, "gamma")):
            _check_pos(v, n, strict=False)
        if form not in ("coord", "heatmap"):
            raise ValueError(f"form must be 'coord' or 'heatmap'; got {form!r}")
        if not isinstance(pairs, Mapping):
            raise TypeError(f"pairs must be a mapping (name_a, name_b) -> (K, 2) array, got {type(pairs).__name__}")
        self.alpha, self.beta, self.gamma = float(alpha), float(beta), float(gamma)
        self.main = main
        self.form = form
        self.pairs = {}
        for key, p in pairs.items():
            if not (isinstance(key, tuple) and len(key) == 2):
                raise ValueError(f"pairs keys must be (name_a, name_b) tuples, got {key!r}")
            self.pairs[key] = _as_pairs(p, f"pairs[{key!r}]")

    def forward(self, outputs: Mapping[str, Tensor], target: Tensor, dataset: str) -> Tensor:
        for (na, nb), p in self.pairs.items():
            for name, col in ((na, 0), (nb, 1)):
                if name in outputs and p.numel() and int(p[:, col].max()) >= outputs[name].shape[1]:
                    raise ValueError(f"pairs[{(na, nb)!r}] index {int(p[:, col].max())} out of range for branch "
                                     f"{name!r} with {outputs[name].shape[1]} landmarks")
        return mixed_branch_loss(outputs, target, dataset, main=self.main, pairs=self.pairs, alpha=self.alpha,
                                 beta=self.beta, gamma=self.gamma, form=self.form)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, gamma={self.gamma}, main={self.main!r}, form={self.form!r}, "
                f"pairs={{{', '.join(f'{k}: {len(v)}' for k, v in self.pairs.items())}}}")

"""PyTorch adapters of :mod:`flmcore.lddmm`: LDDMM flows, shooting and curve losses; LDDMM-Face modules.

On CPU tensors the autograd Functions call the fused compiled kernels of
``flmcore._ext.lddmm_kernels`` (forward and hand-written adjoint backward,
memory O(B T P), no P x P matrices).  On other devices (or with
``backend="torch"``) a pure-torch implementation of the same math runs
(dense kernel matrices, autograd); it is also the reference of the tests.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .. import lddmm as _core
from .._ext import lddmm_kernels as _k
from .._validate import check_nonnegative, check_shapes

__all__ = [
    "lddmm_flow",
    "lddmm_shoot",
    "lddmm_flow_points",
    "currents_loss",
    "varifold_loss",
    "LDDMMDeformation",
    "MomentumHead",
    "CurveLandmarkLoss",
    "LDDMMFace",
]

_BACKENDS = ("auto", "kernel", "torch")


# ----------------------------------------------------------------------------- plans
def _curves_key(curves):
    cl = _core._curve_list(curves)
    if cl is None:
        return None
    return tuple((tuple(int(i) for i in idx), closed) for idx, closed in cl)


def _sigma_key(sigma):
    if isinstance(sigma, torch.Tensor):
        sigma = sigma.detach().cpu().numpy()
    if np.ndim(sigma) == 0:
        return float(sigma)
    return tuple(float(s) for s in np.asarray(sigma, dtype=np.float64).ravel())


class _FlowPlan:
    """Kernel-order bookkeeping for one (P, sigma, curves) combination."""

    def __init__(self, n_points: int, sigma, curves):
        g = _core.PointGroups.build(n_points, sigma, curves)
        self.groups = g
        self.P = n_points
        self.identity = g.identity
        self.perm = torch.as_tensor(g.perm)
        self.inv = torch.as_tensor(g.inv)
        self.gend = g.gend
        self._ginv = {np.float32: g.ginv(np.float32), np.float64: g.ginv(np.float64)}
        self._dense = {}

    def ginv(self, dtype: torch.dtype) -> np.ndarray:
        return self._ginv[np.float32 if dtype == torch.float32 else np.float64]

    def dense(self, device, dtype):
        """(mask (P, P), inv (P, 1)) tensors for the pure-torch path (kernel order)."""
        key = (str(device), dtype)
        if key not in self._dense:
            g = self.groups
            j = np.arange(self.P)
            mask = (j[None, :] >= g.gstart[:, None]) & (j[None, :] < g.gend[:, None])
            self._dense[key] = (torch.as_tensor(mask, device=device, dtype=dtype),
                                torch.as_tensor(1.0 / g.sigma ** 2, device=device, dtype=dtype)[:, None])
        return self._dense[key]

    def to_k(self, t: torch.Tensor, dim: int = -2) -> torch.Tensor:
        if self.identity:
            return t
        return t.index_select(dim, self.perm.to(t.device))

    def from_k(self, t: torch.Tensor, dim: int = -2) -> torch.Tensor:
        if self.identity:
            return t
        return t.index_select(dim, self.inv.to(t.device))


@lru_cache(maxsize=64)
def _flow_plan_cached(n_points, sigma_key, curves_key):
    curves = None if curves_key is None else [(np.asarray(i), c) for i, c in curves_key]
    return _FlowPlan(n_points, sigma_key if isinstance(sigma_key, float) else list(sigma_key), curves)


def _flow_plan(n_points, sigma, curves) -> _FlowPlan:
    return _flow_plan_cached(int(n_points), _sigma_key(sigma), _curves_key(curves))


def _kind(kernel: str) -> int:
    return _core._kind(kernel)


def _use_kernel(backend: str, *tensors) -> bool:
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, _BACKENDS))}; got {backend!r}")
    cpu = all(t.device.type == "cpu" for t in tensors)
    if backend == "kernel" and not cpu:
        raise ValueError("backend='kernel' needs CPU tensors; use backend='auto' or 'torch' on other devices")
    return backend == "kernel" or (backend == "auto" and cpu)


#: Below this many kernel evaluations per call the kernels run on one thread (thread start-up and
#: wake-up latency would dominate; results do not depend on the thread count anyway).
PARALLEL_MIN_WORK = 200_000


def _nthreads(batch: int, work: int = PARALLEL_MIN_WORK) -> int:
    if work < PARALLEL_MIN_WORK:
        return 1
    return max(1, min(torch.get_num_threads(), batch))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


def _check_tensor(t, name: str, ndim: Sequence[int], allow_nan: bool = False) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() not in tuple(ndim):
        exp = " or ".join(str(d) for d in ndim)
        raise ValueError(f"{name} must have {exp} dimensions, got shape {tuple(t.shape)}")
    if t.shape[-1] != 2:
        raise ValueError(f"{name} must end with 2 (x, y) coordinates, got shape {tuple(t.shape)}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if not allow_nan and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


# ----------------------------------------------------------------------------- pure torch math
def _kmat(x, y, inv, kind):
    """Kernel matrix (and f') between (B, N, 2) and (B, M, 2); inv (N, 1)."""
    d = x[:, :, None, :] - y[:, None, :, :]
    u = (d * d).sum(-1)
    if kind == 0:
        f = torch.exp(-u * inv)
        f1 = -inv * f
    else:
        f = 1.0 / (1.0 + u * inv)
        f1 = -inv * f * f
    return f, f1, d


def _torch_velocity(x, a, mask, inv, kind):
    f, _, _ = _kmat(x, x, inv, kind)
    return (f * mask) @ a


def _torch_ham(x, p, mask, inv, kind):
    f, f1, d = _kmat(x, x, inv, kind)
    f = f * mask
    c = p @ p.transpose(1, 2)
    vx = f @ p
    vp = -2 * ((f1 * mask * c)[..., None] * d).sum(2)
    return vx, vp


def _torch_flow(x0, mom, T, mask, inv, kind, full):
    h = 1.0 / T
    xs = [x0]
    x = x0
    for t in range(T):
        a = mom[:, t if mom.shape[1] > 1 else 0]
        x = x + h * _torch_velocity(x, a, mask, inv, kind)
        xs.append(x)
    return torch.stack(xs, 1) if full else x


def _torch_shoot(x0, p0, T, c, w1, w2, mask, inv, kind, full):
    h = 1.0 / T
    x, p = x0, p0
    xs, ps = [x], [p]
    for _ in range(T):
        k1x, k1p = _torch_ham(x, p, mask, inv, kind)
        if c == 0:
            x, p = x + h * k1x, p + h * k1p
        else:
            k2x, k2p = _torch_ham(x + c * h * k1x, p + c * h * k1p, mask, inv, kind)
            x, p = x + h * (w1 * k1x + w2 * k2x), p + h * (w1 * k1p + w2 * k2p)
        xs.append(x)
        ps.append(p)
    if full:
        return torch.stack(xs, 1), torch.stack(ps, 1)
    return x, p


# ----------------------------------------------------------------------------- autograd Functions
def _first_order(backward):
    """The compiled kernels give first derivatives only: refuse a double backward (``create_graph=True``,
    where the engine runs ``backward`` with grad mode on) instead of returning silently wrong (zero or
    ``None``) second derivatives."""
    def wrapper(ctx, *grads):
        if torch.is_grad_enabled():
            raise RuntimeError("second derivatives (create_graph=True / double backward) are not available "
                               "through the compiled LDDMM kernels (backend='kernel', or 'auto' on CPU); "
                               "use backend='torch'")
        return torch.autograd.function.once_differentiable(backward)(ctx, *grads)
    wrapper.__doc__ = backward.__doc__
    return wrapper


def _finite_or_raise(arr: np.ndarray, func: str, what: str) -> None:
    """The compiled kernels compute in the input dtype: a float32 overflow must not pass silently."""
    if not np.isfinite(arr).all():
        raise ValueError(f"{func} overflowed to non-finite values in {arr.dtype}: {what} too large for the kernel "
                         "width (rescale the inputs or use float64)")


class _FlowFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x0, mom, n_steps, plan, kind, full):
        B, P = x0.shape[:2]
        dt = np.float32 if x0.dtype == torch.float32 else np.float64
        traj = np.empty((B, n_steps + 1, P, 2), dt)
        xn, mn = _np(x0), _np(mom)
        _k.flow_forward(xn, mn, n_steps, plan.gend, plan.ginv(x0.dtype), kind, traj, np.empty((B, P, 2), dt),
                        _nthreads(B, B * n_steps * P * P))
        _finite_or_raise(traj[:, -1], "lddmm_flow", "momenta are")
        traj_t = torch.from_numpy(traj)
        ctx.save_for_backward(traj_t, torch.from_numpy(mn) if not mom.is_contiguous() else mom.detach())
        ctx.meta = (n_steps, plan, kind, full)
        return traj_t.clone() if full else traj_t[:, -1].clone()

    @staticmethod
    @_first_order
    def backward(ctx, g):
        traj, mom = ctx.saved_tensors
        n_steps, plan, kind, full = ctx.meta
        B, P = traj.shape[0], traj.shape[2]
        dt = np.float32 if traj.dtype == torch.float32 else np.float64
        gn = _np(g) if full else _np(g)[:, None]
        gx0 = np.empty((B, P, 2), dt)
        gmom = np.empty(tuple(mom.shape), dt)
        _k.flow_backward(traj.numpy(), _np(mom), gn, n_steps, plan.gend, plan.ginv(traj.dtype), kind, gx0, gmom,
                         np.empty((B, 2, P, 2), dt), _nthreads(B, 2 * B * n_steps * P * P))
        return torch.from_numpy(gx0), torch.from_numpy(gmom), None, None, None, None


class _ShootFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x0, p0, n_steps, coef, plan, kind, full):
        B, P = x0.shape[:2]
        dt = np.float32 if x0.dtype == torch.float32 else np.float64
        tx = np.empty((B, n_steps + 1, P, 2), dt)
        tp = np.empty((B, n_steps + 1, P, 2), dt)
        _k.shoot_forward(_np(x0), _np(p0), n_steps, coef[0], coef[1], coef[2], plan.gend, plan.ginv(x0.dtype), kind,
                         tx, tp, np.empty((B, 6, P, 2), dt), _nthreads(B, B * n_steps * P * P))
        _finite_or_raise(tx[:, -1], "lddmm_shoot", "p0 is")
        _finite_or_raise(tp[:, -1], "lddmm_shoot", "p0 is")
        tx_t, tp_t = torch.from_numpy(tx), torch.from_numpy(tp)
        ctx.save_for_backward(tx_t, tp_t)
        ctx.meta = (n_steps, coef, plan, kind, full)
        if full:
            return tx_t.clone(), tp_t.clone()
        return tx_t[:, -1].clone(), tp_t[:, -1].clone()

    @staticmethod
    @_first_order
    def backward(ctx, gx, gp):
        tx, tp = ctx.saved_tensors
        n_steps, coef, plan, kind, full = ctx.meta
        B, P = tx.shape[0], tx.shape[2]
        dt = np.float32 if tx.dtype == torch.float32 else np.float64
        shape = (B, n_steps + 1, P, 2) if full else (B, 1, P, 2)
        gxn = np.zeros(shape, dt) if gx is None else _np(gx).reshape(shape)
        gpn = np.zeros(shape, dt) if gp is None else _np(gp).reshape(shape)
        gx0 = np.empty((B, P, 2), dt)
        gp0 = np.empty((B, P, 2), dt)
        _k.shoot_backward(tx.numpy(), tp.numpy(), gxn, gpn, n_steps, coef[0], coef[1], coef[2], plan.gend,
                          plan.ginv(tx.dtype), kind, gx0, gp0, np.empty((B, 12, P, 2), dt),
                          _nthreads(B, 3 * B * n_steps * P * P))
        return torch.from_numpy(gx0), torch.from_numpy(gp0), None, None, None, None, None


class _CurveFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ca, ta, cb, tb, cplan, kind, varifold):
        B = ca.shape[0]
        dt = np.float32 if ca.dtype == torch.float32 else np.float64
        grad = any(ctx.needs_input_grad[:4])
        arrs = [_np(v) for v in (ca, ta, cb, tb)]
        out = np.empty(B, dt)
        gs = [np.empty_like(v) for v in arrs]
        _k.curve_distance(*arrs, cplan.aend, cplan.ainv[dt], cplan.bend, cplan.binv[dt], cplan.lo, cplan.hi, kind,
                          int(varifold), int(grad), out, *gs,
                          _nthreads(B, 4 * B * arrs[0].shape[1] * arrs[2].shape[1]))
        _finite_or_raise(out, "currents/varifold loss", "coordinates are")
        if grad:
            ctx.save_for_backward(*[torch.from_numpy(v) for v in gs])
        return torch.from_numpy(out)

    @staticmethod
    @_first_order
    def backward(ctx, g):
        gs = ctx.saved_tensors
        w = g[:, None, None]
        return tuple(w * v for v in gs) + (None, None, None)


# ----------------------------------------------------------------------------- functional API
def _prep_flow(x0, momenta, n_steps):
    _check_tensor(x0, "x0", (3,))
    _check_tensor(momenta, "momenta", (3, 4))
    if momenta.dtype != x0.dtype or momenta.device != x0.device:
        raise TypeError(f"momenta must have x0's dtype and device ({x0.dtype}, {x0.device}), "
                        f"got ({momenta.dtype}, {momenta.device})")
    B, P = x0.shape[:2]
    if momenta.dim() == 3:
        if tuple(momenta.shape) != (B, P, 2):
            raise ValueError(f"momenta must have shape (B, P, 2) = {(B, P, 2)} or (B, T, P, 2), "
                             f"got {tuple(momenta.shape)}")
        if n_steps is None:
            raise ValueError("n_steps is required with constant momenta (B, P, 2)")
        mom = momenta[:, None]
    else:
        if momenta.shape[0] != B or tuple(momenta.shape[2:]) != (P, 2) or momenta.shape[1] < 1:
            raise ValueError(f"momenta must have shape (B, T, P, 2) with B = {B}, P = {P}, got {tuple(momenta.shape)}")
        if n_steps is not None and int(n_steps) != momenta.shape[1]:
            raise ValueError(f"n_steps ({n_steps}) must equal the number of momenta time steps ({momenta.shape[1]})")
        n_steps = momenta.shape[1]
        mom = momenta
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    return mom, int(n_steps)


def lddmm_flow(x0: torch.Tensor, momenta: torch.Tensor, sigma, *, n_steps: Optional[int] = None, curves=None,
               kernel: str = "gaussian", return_trajectory: bool = False, backend: str = "auto") -> torch.Tensor:
    """Differentiable LDDMM flow with Euler steps ``x_{t+1} = x_t + (1/T) K(x_t, x_t) alpha_t`` (eq. 6-7).

    Parameters
    ----------
    x0 : torch.Tensor, shape (B, P, 2)
        Initial points (float32 or float64).
    momenta : torch.Tensor, shape (B, T, P, 2) or (B, P, 2)
        Time-varying momenta, or constant momenta used at each of ``n_steps`` steps.
    sigma : float or sequence of float
        sigma_V, one per curve with ``curves``.
    n_steps : int, optional
        Required with constant momenta.
    curves : Scheme or sequence of curves, optional
        Per-curve flows (the paper's deformation layer); ``None``: one global flow.
    kernel : {"gaussian", "cauchy"}
    return_trajectory : bool
        Return ``(B, T+1, P, 2)`` instead of the final points ``(B, P, 2)``.
    backend : {"auto", "kernel", "torch"}
        ``auto``: compiled kernels on CPU, pure torch elsewhere.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> x0 = torch.zeros(1, 1, 2)
    >>> lddmm_flow(x0, torch.ones(1, 4, 1, 2), 3.0).tolist()
    [[[1.0, 1.0]]]
    """
    mom, T = _prep_flow(x0, momenta, n_steps)
    plan = _flow_plan(x0.shape[1], sigma, curves)
    kind = _kind(kernel)
    xk, mk = plan.to_k(x0), plan.to_k(mom)
    if _use_kernel(backend, x0, momenta):
        out = _FlowFn.apply(xk.contiguous(), mk.contiguous(), T, plan, kind, bool(return_trajectory))
    else:
        mask, inv = plan.dense(x0.device, x0.dtype)
        out = _torch_flow(xk, mk, T, mask, inv, kind, bool(return_trajectory))
    return plan.from_k(out)


def lddmm_shoot(x0: torch.Tensor, p0: torch.Tensor, sigma, n_steps: int = 10, *, integrator: str = "euler",
                curves=None, kernel: str = "gaussian", return_trajectory: bool = False,
                backend: str = "auto") -> Tuple[torch.Tensor, torch.Tensor]:
    """Differentiable geodesic shooting ``dx/dt = K p``, ``dp/dt = -d/dx (p^T K p / 2)``.

    Parameters
    ----------
    x0, p0 : torch.Tensor, shape (B, P, 2)
        Initial points and momenta.
    sigma : float or sequence of float
    n_steps : int
    integrator : {"euler", "rk2", "ralston"}
    curves : Scheme or sequence of curves, optional
    kernel : {"gaussian", "cauchy"}
    return_trajectory : bool
        Return trajectories ``(B, T+1, P, 2)`` instead of final states.
    backend : {"auto", "kernel", "torch"}

    Returns
    -------
    x1, p1 : torch.Tensor

    Examples
    --------
    >>> x1, p1 = lddmm_shoot(torch.zeros(1, 1, 2), torch.ones(1, 1, 2), 2.0, 5)
    >>> x1.tolist()
    [[[1.0, 1.0]]]
    """
    _check_tensor(x0, "x0", (3,))
    _check_tensor(p0, "p0", (3,))
    if p0.shape != x0.shape or p0.dtype != x0.dtype or p0.device != x0.device:
        raise ValueError(f"p0 must match x0 in shape, dtype and device, got {tuple(p0.shape)} {p0.dtype} vs "
                         f"{tuple(x0.shape)} {x0.dtype}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
    if integrator not in _core.INTEGRATORS:
        raise ValueError(f"integrator must be one of {', '.join(map(repr, _core.INTEGRATORS))}; got {integrator!r}")
    coef = _core.INTEGRATORS[integrator]
    plan = _flow_plan(x0.shape[1], sigma, curves)
    kind = _kind(kernel)
    xk, pk = plan.to_k(x0), plan.to_k(p0)
    if _use_kernel(backend, x0, p0):
        x, p = _ShootFn.apply(xk.contiguous(), pk.contiguous(), int(n_steps), coef, plan, kind,
                              bool(return_trajectory))
    else:
        mask, inv = plan.dense(x0.device, x0.dtype)
        x, p = _torch_shoot(xk, pk, int(n_steps), *coef, mask, inv, kind, bool(return_trajectory))
    return plan.from_k(x), plan.from_k(p)


def lddmm_flow_points(trajectory: torch.Tensor, momenta: torch.Tensor, points: torch.Tensor, sigma, *,
                      curves=None, point_curves=None, kernel: str = "gaussian") -> torch.Tensor:
    """Carry extra points along an Euler flow (pure torch, differentiable; paper section 3.3).

    Parameters
    ----------
    trajectory : torch.Tensor, shape (B, T+1, P, 2)
        From ``lddmm_flow(..., return_trajectory=True)``.
    momenta : torch.Tensor, shape (B, T, P, 2) or (B, P, 2)
        The momenta of that flow.
    points : torch.Tensor, shape (B, M, 2) or (M, 2)
        Points at time 0.
    sigma, curves, kernel
        As for the flow.
    point_curves : sequence of int, shape (M,), optional
        Curve carrying each point (``-1``: static); required in per-curve mode.

    Returns
    -------
    torch.Tensor, shape (B, M, 2)

    Examples
    --------
    >>> mom = torch.ones(1, 1, 2)
    >>> traj = lddmm_flow(torch.zeros(1, 1, 2), mom, 50.0, n_steps=2, return_trajectory=True)
    >>> lddmm_flow_points(traj, mom, torch.zeros(1, 2), 50.0).round(decimals=3).tolist()
    [[[1.0, 1.0]]]
    """
    _check_tensor(trajectory, "trajectory", (4,))
    _check_tensor(momenta, "momenta", (3, 4))
    _check_tensor(points, "points", (2, 3))
    B, T1, P = trajectory.shape[:3]
    T = T1 - 1
    if T < 1:
        raise ValueError("trajectory must hold at least 2 time points")
    mom = momenta[:, None] if momenta.dim() == 3 else momenta
    if mom.shape[0] != B or mom.shape[1] not in (1, T) or tuple(mom.shape[2:]) != (P, 2):
        raise ValueError(f"momenta must have shape (B, P, 2) or (B, T, P, 2) matching trajectory "
                         f"{tuple(trajectory.shape)}, got {tuple(momenta.shape)}")
    y = points.expand(B, *points.shape) if points.dim() == 2 else points
    if y.shape[0] != B:
        raise ValueError(f"points batch ({y.shape[0]}) must match the trajectory batch ({B})")
    plan = _flow_plan(P, sigma, curves)
    M = y.shape[1]
    if point_curves is None:
        if plan.groups.n_curves > 0:
            raise ValueError("point_curves is required in per-curve mode")
        pc = np.zeros(M, np.int64)
    else:
        pc = np.asarray(point_curves, dtype=np.int64)
        if pc.shape != (M,):
            raise ValueError(f"point_curves must have shape ({M},), got {pc.shape}")
    lo, hi, sig = plan.groups.ranges_for(pc)
    j = np.arange(P)
    mask = torch.as_tensor((j[None] >= lo[:, None]) & (j[None] < hi[:, None]), dtype=y.dtype, device=y.device)
    inv = torch.as_tensor(1.0 / sig ** 2, dtype=y.dtype, device=y.device)[:, None]
    kind = _kind(kernel)
    trajk, momk = plan.to_k(trajectory), plan.to_k(mom)
    h = 1.0 / T
    for t in range(T):
        f, _, _ = _kmat(y, trajk[:, t], inv, kind)
        y = y + h * (f * mask) @ momk[:, t if momk.shape[1] > 1 else 0]
    return y


class _CurvePlan:
    """Segment indices and kernel blocks for the curve losses."""

    def __init__(self, n_a, n_b, curves_a, curves_b, sigma_w):
        ca = _core._curve_list(curves_a, n_a, "curves")
        cb = _core._curve_list(curves_b, n_b, "curves_b")
        if len(ca) != len(cb):
            raise ValueError(f"curves and curves_b must hold the same number of curves, got {len(ca)} and {len(cb)}")
        sig = _core._sigma_list(sigma_w, len(ca), "sigma_w")

        def segs(cl):
            i0s, i1s, blocks, n = [], [], [], 0
            for idx, closed in cl:
                m = len(idx)
                if m < 2:
                    blocks.append((n, n))
                    continue
                r = np.arange(m)
                if closed and m > 2:
                    a, b = r, (r + 1) % m
                else:
                    a, b = r[:-1], r[1:]
                i0s.append(idx[a])
                i1s.append(idx[b])
                blocks.append((n, n + len(a)))
                n += len(a)
            if n == 0:
                raise ValueError("curves must define at least one segment (a curve of >= 2 points)")
            return np.concatenate(i0s), np.concatenate(i1s), blocks, n

        self.i0a, self.i1a, ba, na = segs(ca)
        self.i0b, self.i1b, bb, nb = segs(cb)
        self.aend = np.zeros(na, np.int32)
        self.bend = np.zeros(nb, np.int32)
        ainv = np.ones(na)
        binv = np.ones(nb)
        self.lo = np.zeros(na, np.int32)
        self.hi = np.zeros(na, np.int32)
        for (a0, a1), (b0, b1), s in zip(ba, bb, sig):
            self.aend[a0:a1] = a1
            self.bend[b0:b1] = b1
            ainv[a0:a1] = 1 / s ** 2
            binv[b0:b1] = 1 / s ** 2
            self.lo[a0:a1] = b0
            self.hi[a0:a1] = b1
        self.ainv = {np.float32: ainv.astype(np.float32), np.float64: ainv}
        self.binv = {np.float32: binv.astype(np.float32), np.float64: binv}
        self.t = {}

    def tensors(self, device):
        key = str(device)
        if key not in self.t:
            self.t[key] = tuple(torch.as_tensor(v, device=device) for v in (self.i0a, self.i1a, self.i0b, self.i1b))
        return self.t[key]

    def dense(self, device, dtype):
        key = (str(device), dtype, "dense")
        if key not in self.t:
            na, nb = len(self.aend), len(self.bend)
            ja, jb = np.arange(na), np.arange(nb)
            astart = np.zeros(na, np.int64)
            bstart = np.zeros(nb, np.int64)
            for i in range(na):
                astart[i] = ja[self.aend == self.aend[i]].min()
            for i in range(nb):
                bstart[i] = jb[self.bend == self.bend[i]].min()
            maa = (ja[None] >= astart[:, None]) & (ja[None] < self.aend[:, None])
            mbb = (jb[None] >= bstart[:, None]) & (jb[None] < self.bend[:, None])
            mab = (jb[None] >= self.lo[:, None]) & (jb[None] < self.hi[:, None])
            conv = lambda v: torch.as_tensor(v, device=device, dtype=dtype)  # noqa: E731
            self.t[key] = (conv(maa), conv(mbb), conv(mab), conv(self.ainv[np.float64])[:, None],
                           conv(self.binv[np.float64])[:, None])
        return self.t[key]


@lru_cache(maxsize=64)
def _curve_plan_cached(n_a, n_b, ka, kb, sigma_key):
    ca = [(np.asarray(i), c) for i, c in ka]
    cb = [(np.asarray(i), c) for i, c in kb]
    return _CurvePlan(n_a, n_b, ca, cb, sigma_key if isinstance(sigma_key, float) else list(sigma_key))


def _tangent_weight(t1, t2, varifold):
    dot = t1 @ t2.transpose(1, 2)
    if not varifold:
        return dot
    n1 = t1.norm(dim=-1)
    n2 = t2.norm(dim=-1)
    den = n1[:, :, None] * n2[:, None, :]
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, dot * dot / safe, torch.zeros_like(den))


def _curve_loss(a, b, sigma_w, closed, curves, curves_b, kernel, varifold, reduction, backend):
    _check_tensor(a, "a", (3,))
    _check_tensor(b, "b", (3,))
    if a.shape[0] != b.shape[0] or a.dtype != b.dtype or a.device != b.device:
        raise ValueError(f"a and b must share batch size, dtype and device, got {tuple(a.shape)} {a.dtype} and "
                         f"{tuple(b.shape)} {b.dtype}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if curves is None:
        if a.shape[1] < 2 or b.shape[1] < 2:
            raise ValueError(f"polylines need at least 2 points, got {tuple(a.shape)} and {tuple(b.shape)}")
        ka = ((tuple(range(a.shape[1])), bool(closed)),)
        kb = ((tuple(range(b.shape[1])), bool(closed)),)
    else:
        ka = _curves_key(curves)
        kb = _curves_key(curves if curves_b is None else curves_b)
    plan = _curve_plan_cached(a.shape[1], b.shape[1], ka, kb, _sigma_key(sigma_w))
    i0a, i1a, i0b, i1b = plan.tensors(a.device)
    ca, ta = (a[:, i0a] + a[:, i1a]) / 2, a[:, i1a] - a[:, i0a]
    cb, tb = (b[:, i0b] + b[:, i1b]) / 2, b[:, i1b] - b[:, i0b]
    kind = _kind(kernel)
    if _use_kernel(backend, a, b):
        val = _CurveFn.apply(ca.contiguous(), ta.contiguous(), cb.contiguous(), tb.contiguous(), plan, kind,
                             bool(varifold))
    else:
        maa, mbb, mab, ainv, binv = plan.dense(a.device, a.dtype)
        e = lambda c1, t1, c2, t2, m, inv: ((_kmat(c1, c2, inv, kind)[0] * m)  # noqa: E731
                                            * _tangent_weight(t1, t2, varifold)).sum((1, 2))
        val = e(ca, ta, ca, ta, maa, ainv) + e(cb, tb, cb, tb, mbb, binv) - 2 * e(ca, ta, cb, tb, mab, ainv)
    if reduction == "mean":
        return val.mean()
    if reduction == "sum":
        return val.sum()
    return val


def currents_loss(a: torch.Tensor, b: torch.Tensor, sigma_w, *, closed: bool = False, curves=None, curves_b=None,
                  kernel: str = "gaussian", reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """Squared currents distance between polylines (eq. 1, 4), differentiable.

    Parameters
    ----------
    a, b : torch.Tensor, shape (B, n, 2) and (B, m, 2)
        Polylines (or whole shapes with ``curves``).
    sigma_w : float or sequence of float
        Kernel width of k_W (one per curve with ``curves``).
    closed : bool
        Closed polylines (without ``curves``).
    curves : Scheme or sequence of curves, optional
        Compare curve by curve (each with its own sigma_W); the loss is the sum over curves.
    curves_b : optional
        Curves of ``b`` when they differ from those of ``a`` (same count, e.g. a sparse target).
    kernel : {"gaussian", "cauchy"}
    reduction : {"mean", "sum", "none"}
        Over the batch.
    backend : {"auto", "kernel", "torch"}

    Returns
    -------
    torch.Tensor (scalar, or (B,) with ``reduction="none"``)

    Examples
    --------
    >>> a = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]]])
    >>> float(currents_loss(a, a, 1.0))
    0.0
    """
    return _curve_loss(a, b, sigma_w, closed, curves, curves_b, kernel, False, reduction, backend)


def varifold_loss(a: torch.Tensor, b: torch.Tensor, sigma_w, *, closed: bool = False, curves=None, curves_b=None,
                  kernel: str = "gaussian", reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """Squared varifold distance between polylines (orientation-free), differentiable.

    Same arguments as :func:`currents_loss`; tangent products are ``(t.s)^2 / (|t||s|)``.

    Examples
    --------
    >>> a = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [2.0, 1.0]]])
    >>> abs(float(varifold_loss(a, a.flip(1), 1.0))) < 1e-6
    True
    """
    return _curve_loss(a, b, sigma_w, closed, curves, curves_b, kernel, True, reduction, backend)


# ----------------------------------------------------------------------------- modules
def _as_mean(mean_shape, n_points=None) -> np.ndarray:
    if isinstance(mean_shape, torch.Tensor):
        mean_shape = mean_shape.detach().cpu().numpy()
    m = check_shapes(mean_shape, "mean_shape", batch=False, n_points=n_points)
    return m


_PRESETS = ("flmcore", "paper")


def _check_preset(preset) -> str:
    if not isinstance(preset, str) or preset not in _PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, _PRESETS))}; got {preset!r}")
    return preset


def _get_scheme(scheme):
    if scheme is None:
        return None
    if hasattr(scheme, "curves") and hasattr(scheme, "n_points"):
        return scheme
    from .. import schemes
    return schemes.get_scheme(scheme)


class LDDMMDeformation(nn.Module):
    """LDDMM deformation layer (paper section 3.1.2): flows the mean face with predicted momenta.

    Parameters
    ----------
    mean_shape : array_like or torch.Tensor, shape (P, 2)
        Initial (mean) face, in the pixel frame of the predictions.
    scheme : Scheme or str, optional
        Annotation scheme giving the curves; ``None`` with ``mode="global"``.
    mode : {"paper", "global", "geodesic"}
        ``paper``: one flow per curve, sigma_V = curve scale (Euler steps with constant or
        time-varying momenta); ``global``: one flow over all points, sigma_V = face scale;
        ``geodesic``: geodesic shooting from initial momenta (per curve unless ``per_curve=False``).
    n_steps : int
        Time steps (the paper's official code: 2).
    kernel : {"gaussian", "cauchy"}
    sigma_v : float or sequence, optional
        Override the kernel widths.
    integrator : {"euler", "rk2", "ralston"}
        For ``mode="geodesic"``.
    per_curve : bool
        Per-curve shooting in ``geodesic`` mode.
    backend : {"auto", "kernel", "torch"}
    preset : {"flmcore", "paper"}
        Curve layout and default kernel widths of the per-curve flows.
        ``"flmcore"``: the scheme's curves (iBUG-68: 9, one jaw, closed eyes
        and lips) with sigma_V = the RMS radius of each mean-face curve
        (:func:`flmcore.lddmm.curve_sigmas`; 0.78 inter-ocular distances for
        the jaw).  ``"paper"``: the 12 curves of the paper and its official
        code (:func:`flmcore.schemes.lddmm_face_curves`) with the official
        sigma_V table expressed relative to the inter-ocular distance of the
        mean face (:func:`flmcore.schemes.lddmm_face_sigma_v`; 0.30 for the
        first jaw half); iBUG-68 only.

    Examples
    --------
    >>> layer = LDDMMDeformation([[0.0, 0.0], [4.0, 0.0]], None, mode="global", n_steps=2)
    >>> layer(torch.zeros(3, 2, 2)).shape
    torch.Size([3, 2, 2])
    >>> import numpy as np
    >>> mean = np.random.default_rng(0).uniform(20, 44, (68, 2))
    >>> len(LDDMMDeformation(mean, "ibug68", preset="paper").sigma)
    12
    """

    def __init__(self, mean_shape, scheme=None, mode: str = "paper", n_steps: int = 2, *, kernel: str = "gaussian",
                 sigma_v=None, integrator: str = "euler", per_curve: bool = True, backend: str = "auto",
                 preset: str = "flmcore"):
        super().__init__()
        if mode not in ("paper", "global", "geodesic"):
            raise ValueError(f"mode must be 'paper', 'global' or 'geodesic', got {mode!r}")
        _check_preset(preset)
        if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive integer, got {n_steps!r}")
        _kind(kernel)
        if integrator not in _core.INTEGRATORS:
            raise ValueError(f"integrator must be one of {tuple(_core.INTEGRATORS)}, got {integrator!r}")
        self.scheme = _get_scheme(scheme)
        mean = _as_mean(mean_shape, None if self.scheme is None else self.scheme.n_points)
        self.mode, self.n_steps, self.kernel = mode, int(n_steps), kernel
        self.integrator, self.backend = integrator, backend
        use_curves = mode == "paper" or (mode == "geodesic" and per_curve)
        if use_curves and self.scheme is None:
            raise ValueError(f"mode={mode!r} with per-curve flows needs a scheme")
        if preset == "paper" and not use_curves:
            raise ValueError(f"preset='paper' defines per-curve flows; mode={mode!r} with per_curve={per_curve} "
                             "has one global flow (use preset='flmcore')")
        self.preset = preset
        from .. import schemes as _schemes
        self.curves = _schemes.lddmm_face_curves(self.scheme, preset) if use_curves else None
        if sigma_v is None and preset == "paper":
            sig = _schemes.lddmm_face_sigma_v(self.scheme, mean)
        elif sigma_v is None:
            sig = _core.curve_sigmas(mean, self.curves) if self.curves is not None else _core.curve_scale(mean)
        else:
            n_curves = 1 if self.curves is None else len(_core._curve_list(self.curves))
            sig = _core._sigma_list(sigma_v, n_curves, "sigma_v")  # a number is shared by every curve
        self.sigma = [float(s) for s in np.atleast_1d(sig)] if self.curves is not None else float(np.ravel(sig)[0])
        self.register_buffer("mean_shape", torch.as_tensor(mean, dtype=torch.float32))

    @property
    def n_points(self) -> int:
        return self.mean_shape.shape[0]

    def _x0(self, momenta, x0):
        if x0 is None:
            x0 = self.mean_shape.to(device=momenta.device, dtype=momenta.dtype).expand(momenta.shape[0], -1, -1)
        return x0.contiguous()

    def forward(self, momenta: torch.Tensor, x0: Optional[torch.Tensor] = None,
                return_trajectory: bool = False) -> torch.Tensor:
        """Deform ``x0`` (default: the mean face) with momenta ``(B, P, 2)`` or ``(B, T, P, 2)``."""
        x0 = self._x0(momenta, x0)
        if self.mode == "geodesic":
            if momenta.dim() != 3:
                raise ValueError(f"geodesic mode takes initial momenta (B, P, 2), got {tuple(momenta.shape)}")
            x, p = lddmm_shoot(x0, momenta, self.sigma, self.n_steps, integrator=self.integrator, curves=self.curves,
                               kernel=self.kernel, return_trajectory=return_trajectory, backend=self.backend)
            return (x, p) if return_trajectory else x
        return lddmm_flow(x0, momenta, self.sigma, n_steps=self.n_steps if momenta.dim() == 3 else None,
                          curves=self.curves, kernel=self.kernel, return_trajectory=return_trajectory,
                          backend=self.backend)

    def flow_points(self, momenta: torch.Tensor, points: torch.Tensor, point_curves=None) -> torch.Tensor:
        """Flow extra points ``(M, 2)`` (mean-face frame) with the flow of ``momenta``; returns ``(B, M, 2)``.

        The torch counterpart of :func:`flmcore.lddmm.flow_points` (also reachable as
        ``transport``, its former name).  ``point_curves`` (default: nearest mean-face
        curve) chooses the flow carrying each point.
        """
        if self.mode == "geodesic":
            if self.integrator != "euler":
                raise ValueError("flow_points supports Euler geodesics only")
            traj, ptraj = self.forward(momenta, return_trajectory=True)
            mom = ptraj[:, :-1]
        else:
            traj = self.forward(momenta, return_trajectory=True)
            mom = momenta
        if point_curves is None and self.curves is not None:
            pts_np = points.detach().cpu().numpy().astype(np.float64)
            point_curves = _core.assign_to_curves(pts_np, self.mean_shape.cpu().numpy(), self.curves)
        return lddmm_flow_points(traj, mom, points.to(traj.dtype), self.sigma, curves=self.curves,
                                 point_curves=point_curves, kernel=self.kernel)

    def transport(self, momenta: torch.Tensor, points: torch.Tensor, point_curves=None) -> torch.Tensor:
        """Alias of :meth:`flow_points` (the name used by :mod:`flmcore.lddmm`), kept for compatibility."""
        return self.flow_points(momenta, points, point_curves=point_curves)


class MomentumHead(nn.Module):
    """Momentum estimator: global average pooling + fully-connected layer(s) -> momenta.

    Parameters
    ----------
    in_features : int
        Channels of the backbone's feature map ``(B, C, H, W)`` or size of its vector ``(B, C)``.
    n_points : int
        Number of landmarks ``P``.
    n_times : int
        1: constant momenta ``(B, P, 2)``; ``T > 1``: time-varying ``(B, T, P, 2)``.
    hidden : int
        Width of an optional hidden layer (0: none, as in the paper).
    init_std : float
        Std of the last layer's initial weights (small: training starts at the mean face).
    scale : float
        Output multiplier (momenta in pixels per unit time): lets the optimiser reach
        momenta of the size of facial displacements with O(1) weights.

    Examples
    --------
    >>> MomentumHead(8, 5)(torch.zeros(2, 8, 3, 3)).shape
    torch.Size([2, 5, 2])
    """

    def __init__(self, in_features: int, n_points: int, n_times: int = 1, hidden: int = 0, init_std: float = 1e-3,
                 scale: float = 1.0):
        super().__init__()
        self.scale = check_nonnegative(scale, "scale", finite=True)
        for name, v, lo in (("in_features", in_features, 1), ("n_points", n_points, 1), ("n_times", n_times, 1),
                            ("hidden", hidden, 0)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        self.n_points, self.n_times = int(n_points), int(n_times)
        layers = []
        width = in_features
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
            width = hidden
        last = nn.Linear(width, self.n_times * self.n_points * 2)
        nn.init.normal_(last.weight, std=init_std)
        nn.init.zeros_(last.bias)
        layers.append(last)
        self.fc = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.dim() == 4:
            features = features.mean((2, 3))
        elif features.dim() != 2:
            raise ValueError(f"features must be (B, C) or (B, C, H, W), got shape {tuple(features.shape)}")
        out = self.fc(features) * self.scale
        if self.n_times == 1:
            return out.view(-1, self.n_points, 2)
        return out.view(-1, self.n_times, self.n_points, 2)


class CurveLandmarkLoss(nn.Module):
    r"""LDDMM-Face loss (paper eq. 8 with eq. 4 and 5), in two presets.

    ``preset="paper"`` -- the paper's loss as its official code computes it
    (``LDDMMError`` of ``lib/core/evaluation.py``), for iBUG-68:

    .. math::

        L = \frac{1}{d_{io}} \Big( \frac{1}{P} \sum_{i=1}^{P} \lVert \hat{y}_i - y_i \rVert_2
            + \beta \, \frac{1}{P} \sum_{p=1}^{12} D_c^p \Big)

    with :math:`D_c^p` the squared currents distance of eq. (4) between the
    predicted and true curve ``p`` of the paper's 12-curve layout
    (:func:`flmcore.schemes.lddmm_face_curves`), Gaussian kernel of width
    sigma_W = sigma_V / 2 per curve (the official sigma_V table,
    :func:`flmcore.schemes.lddmm_face_sigma_v`), and :math:`d_{io}` the
    ground-truth outer-eye-corner distance (points 36 / 45).  The landmark term
    is eq. (5)'s "Euclidean distance averaged across all point pairs" (not
    squared).  The official code writes ``0.8 L_l + 0.2 L_c``, which is
    0.8 times this loss with ``beta = 0.25``; the paper states beta = 0.1
    (the default).  Unlike the official code, each curve uses its own
    sigma_W (the official loss indexes the per-*point* sigma table by the
    curve number, so every curve gets a jaw width).

    ``preset="flmcore"`` (default) -- flmcore's reading of eq. (8):

    .. math::

        L = \frac{1}{d_{ipd}} \sum_{p} \Big( \beta D_c^p + \frac{1}{n_p} \sum_{i \in p}
            \lVert \hat{y}_i - y_i \rVert_2^2 \Big)

    over the scheme's own curves (points on no curve count as their own
    group), sigma_W = half the RMS radius of each mean-face curve, and
    :math:`d_{ipd}` the ground-truth distance of the eye centres (the paper's
    "distance between the pupils").  It weighs every curve equally whatever
    its number of points.  The balance of the two terms differs between the
    presets (and with the face size in pixels), so the same beta does not
    mean the same loss (see the LDDMM and Fidelity guides).

    Losses are averaged over the batch (``reduction="mean"``).

    Parameters
    ----------
    scheme : Scheme or str
    mean_shape : array_like, shape (P, 2), optional
        Mean face for sigma_W (ignored when ``sigma_w`` is given).
    beta : float
        Weight of the curve term (paper: 0.1).
    sigma_w : float or sequence, optional
        One width per curve of the preset's layout (9 or 12 for iBUG-68).
    kernel : {"gaussian", "cauchy"}
    varifold : bool
        Varifold instead of currents distance (flmcore extension).
    squared : bool, optional
        Squared landmark distances; default per preset (flmcore: True, paper: False).
    normalize : bool
        Divide by the preset's normalising distance (flmcore: eye centres,
        paper: outer eye corners).
    backend : {"auto", "kernel", "torch"}
    preset : {"flmcore", "paper"}

    Examples
    --------
    >>> from flmcore.schemes import get_scheme
    >>> s = get_scheme("ibug68")
    >>> y = torch.rand(2, 68, 2, dtype=torch.float64) * 100
    >>> abs(float(CurveLandmarkLoss(s, sigma_w=5.0)(y, y))) < 1e-9
    True
    >>> loss = CurveLandmarkLoss(s, y[0].numpy(), preset="paper")
    >>> len(loss.sigma_w), loss.squared
    (12, False)
    """

    def __init__(self, scheme, mean_shape=None, beta: float = 0.1, *, sigma_w=None, kernel: str = "gaussian",
                 varifold: bool = False, squared: Optional[bool] = None, normalize: bool = True,
                 backend: str = "auto", preset: str = "flmcore"):
        super().__init__()
        self.scheme = _get_scheme(scheme)
        if self.scheme is None:
            raise ValueError("scheme is required")
        self.preset = _check_preset(preset)
        from .. import schemes as _schemes
        self.curves = _schemes.lddmm_face_curves(self.scheme, preset)
        self.beta = check_nonnegative(beta, "beta", finite=True)
        if sigma_w is None:
            if mean_shape is None:
                raise ValueError("give mean_shape (sigma_W = half the mean-face curve scale) or sigma_w")
            mean = _as_mean(mean_shape, self.scheme.n_points)
            if preset == "paper":
                sigma_w = 0.5 * _schemes.lddmm_face_sigma_v(self.scheme, mean)
            else:
                sigma_w = _core.curve_sigmas(mean, self.curves, factor=0.5)
        sw = np.asarray(sigma_w, np.float64)
        if sw.ndim > 1 or (sw.ndim == 1 and sw.size not in (1, len(self.curves))):
            raise ValueError(f"sigma_w must be a number or hold one value per curve ({len(self.curves)} for "
                             f"preset={preset!r}), got shape {sw.shape}")
        self.sigma_w = [float(v) for v in np.broadcast_to(sw.ravel() if sw.ndim else sw, (len(self.curves),))]
        _kind(kernel)
        if squared is None:
            squared = preset == "flmcore"
        self.kernel, self.varifold, self.squared, self.normalize, self.backend = (kernel, bool(varifold),
                                                                                  bool(squared), bool(normalize),
                                                                                  backend)
        P = self.scheme.n_points
        if preset == "paper":
            lm_w = np.full(P, 1.0 / P)          # mean over all points (official code)
            self._curve_scale = 1.0 / P         # curve term / number of points (official code)
        else:
            on = {i for c in self.curves for i in c.indices}
            groups = [list(c.indices) for c in self.curves] + [[i] for i in range(P) if i not in on]
            w = np.zeros((len(groups), P))
            for k, g in enumerate(groups):
                w[k, g] = 1.0 / len(g)
            lm_w = w.sum(0)                      # sum over curves of the per-curve mean
            self._curve_scale = 1.0
        self.register_buffer("_lm_weight", torch.as_tensor(lm_w, dtype=torch.float64))
        self._left = list(self.scheme.left_eye)
        self._right = list(self.scheme.right_eye)
        self._io = list(self.scheme.interocular)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        _check_tensor(pred, "pred", (3,))
        _check_tensor(target, "target", (3,))
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
        P = self.scheme.n_points
        if pred.shape != target.shape or pred.shape[1] != P:
            raise ValueError(f"pred and target must both have shape (B, {P}, 2), got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        d2 = ((pred - target) ** 2).sum(-1)
        dl = d2 if self.squared else torch.sqrt(d2 + 1e-12)
        loss = (dl * self._lm_weight.to(device=dl.device, dtype=dl.dtype)).sum(1)
        if self.beta > 0:
            fn = varifold_loss if self.varifold else currents_loss
            dc = fn(pred, target, self.sigma_w, curves=self.curves, kernel=self.kernel, reduction="none",
                    backend=self.backend)
            loss = loss + (self.beta * self._curve_scale) * dc
        if self.normalize:
            if self.preset == "paper":
                d = (target[:, self._io[0]] - target[:, self._io[1]]).norm(dim=-1)
            else:
                d = (target[:, self._left].mean(1) - target[:, self._right].mean(1)).norm(dim=-1)
            loss = loss / d.clamp_min(1e-6)
        if reduction == "none":
            return loss
        return loss.mean() if reduction == "mean" else loss.sum()


def _fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine map (3, 2) with ``[src, 1] @ A ~ dst``."""
    X = np.c_[src, np.ones(len(src))]
    A, *_ = np.linalg.lstsq(X, dst, rcond=None)
    return A


class LDDMMFace(nn.Module):
    """LDDMM-Face: backbone -> momentum head -> LDDMM deformation of the mean face.

    Parameters
    ----------
    backbone : torch.nn.Module
        Any module mapping images ``(B, C, H, W)`` to a feature map ``(B, F, h, w)`` or vector ``(B, F)``.
    scheme : Scheme or str
        Training annotation scheme.
    mean_shape : array_like, shape (P, 2)
        Mean face in the pixel frame of the images.
    feature_dim : int, optional
        ``F``; default: ``backbone.out_channels`` / ``backbone.num_features`` if present,
        else inferred by a dummy forward on ``image_size``.
    n_steps : int
        Flow steps (paper's code: 2).
    mode : {"paper", "global", "geodesic"}
    n_times : int
        1: constant momenta; T: time-varying (must equal ``n_steps``).
    kernel : {"gaussian", "cauchy"}
    in_channels : int
        Image channels fed to the backbone (grayscale inputs ``(B, H, W)`` get a channel axis).
    image_size : (int, int)
        For inferring ``feature_dim``.
    hidden : int
        Hidden width of the momentum head (0: the paper's single FC layer).
    momentum_scale : float, optional
        Output scale of the momentum head; default: a tenth of the mean face's scale
        (:func:`flmcore.lddmm.curve_scale` of all its points).
    preset : {"flmcore", "paper"}
        Curve layout and kernel widths of the deformation layer (see
        :class:`LDDMMDeformation`); pair it with the same preset of
        :class:`CurveLandmarkLoss`.

    Examples
    --------
    >>> from flmcore.schemes import get_scheme
    >>> import numpy as np
    >>> bb = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU())
    >>> mean = np.random.default_rng(0).uniform(20, 44, (68, 2))
    >>> model = LDDMMFace(bb, get_scheme("ibug68"), mean, image_size=(32, 32))
    >>> model(torch.zeros(2, 32, 32)).shape
    torch.Size([2, 68, 2])
    """

    def __init__(self, backbone: nn.Module, scheme, mean_shape, *, feature_dim: Optional[int] = None,
                 n_steps: int = 2, mode: str = "paper", n_times: int = 1, kernel: str = "gaussian",
                 in_channels: int = 1, image_size: Tuple[int, int] = (128, 128), hidden: int = 0,
                 momentum_scale: Optional[float] = None, preset: str = "flmcore"):
        super().__init__()
        self.scheme = _get_scheme(scheme)
        if self.scheme is None:
            raise ValueError("scheme is required")
        if n_times not in (1, n_steps):
            raise ValueError(f"n_times must be 1 (constant momenta) or n_steps ({n_steps}), got {n_times}")
        self.backbone = backbone
        self.in_channels = int(in_channels)
        if feature_dim is None:
            feature_dim = getattr(backbone, "out_channels", None) or getattr(backbone, "num_features", None)
        if feature_dim is None:
            with torch.no_grad():
                was = backbone.training
                backbone.eval()
                f = backbone(torch.zeros(1, self.in_channels, *image_size))
                backbone.train(was)
            feature_dim = int(f.shape[1])
        self.deformation = LDDMMDeformation(mean_shape, self.scheme, mode=mode, n_steps=n_steps, kernel=kernel,
                                            preset=preset)
        if momentum_scale is None:
            momentum_scale = 0.1 * _core.curve_scale(_as_mean(mean_shape, self.scheme.n_points))
        self.head = MomentumHead(int(feature_dim), self.scheme.n_points, n_times=n_times, hidden=hidden,
                                 scale=momentum_scale)
        self._other = {}

    def _images(self, images):
        if images.dim() == 3:
            images = images[:, None]
        if images.dim() != 4:
            raise ValueError(f"images must be (B, H, W) or (B, C, H, W), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return images

    def momenta(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted momenta ``(B, P, 2)`` or ``(B, T, P, 2)``."""
        return self.head(self.backbone(self._images(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Landmarks ``(B, P, 2)`` of the training scheme, in the mean face's pixel frame."""
        mom = self.momenta(images)
        return self.deformation(mom.to(self.deformation.mean_shape.dtype))

    def add_scheme(self, scheme, mean_shape) -> None:
        """Register the mean face of another scheme for :meth:`predict`."""
        s = _get_scheme(scheme)
        self._other[s.name] = _as_mean(mean_shape, s.n_points)

    def other_scheme_points(self, scheme, mean_shape=None) -> Tuple[np.ndarray, np.ndarray]:
        """Another scheme's mean face mapped into this model's mean-face frame, and its curve assignment.

        The affine map is fitted on the semantically corresponding points of the two
        schemes (:func:`flmcore.schemes.correspondences`) between the two mean faces
        (paper section 4.3); each mapped point follows its nearest mean-face curve.
        """
        from .. import schemes
        s = _get_scheme(scheme)
        other = _as_mean(mean_shape, s.n_points) if mean_shape is not None else self._other.get(s.name)
        if other is None:
            raise ValueError(f"no mean face for scheme {s.name!r}: pass mean_shape or call add_scheme first")
        pairs = schemes.correspondences(s, self.scheme)
        if len(pairs) < 3:
            raise ValueError(f"schemes {s.name} and {self.scheme.name} share {len(pairs)} points; "
                             "an affine map needs at least 3")
        mean = self.deformation.mean_shape.cpu().numpy().astype(np.float64)
        A = _fit_affine(other[pairs[:, 0]], mean[pairs[:, 1]])
        y0 = np.c_[other, np.ones(len(other))] @ A
        if self.deformation.curves is None:
            pc = np.zeros(len(y0), np.int64)
        else:
            pc = _core.assign_to_curves(y0, mean, self.deformation.curves)
        return y0, pc

    @torch.no_grad()
    def predict(self, images: torch.Tensor, scheme=None, mean_shape=None) -> torch.Tensor:
        """Predict landmarks; with ``scheme`` another scheme's points by flowing its (affinely mapped)
        mean face through the predicted diffeomorphisms (cross-annotation prediction)."""
        was = self.training
        self.eval()
        try:
            if scheme is None or _get_scheme(scheme).name == self.scheme.name:
                return self.forward(images)
            y0, pc = self.other_scheme_points(scheme, mean_shape)
            mom = self.momenta(images).to(self.deformation.mean_shape.dtype)
            pts = torch.as_tensor(y0, dtype=mom.dtype, device=mom.device)
            return self.deformation.flow_points(mom, pts, point_curves=pc)
        finally:
            self.train(was)

"""Landmark losses against hand-written per-element formulas (the papers' equations in plain
Python / NumPy, never flmcore's own helpers), analytic gradients, bad input.

No loss here has a custom backward (all are plain torch ops), so there is no gradcheck: the
values are checked against the formulas, and the gradients against their closed forms where the
code does something autograd could get wrong (detached anisotropic weights, sqrt at zero).
More references (half precision, per-point a/b, adaptive, Adaptive Wing epsilon != 1) live in
``tests/test_losses_reference.py``.
"""
import math

import numpy as np
import pytest
import torch
from _anisotropic_reference import ref_matrices

from flmcore.nn import functional as F
from flmcore.nn.losses import (AdaptiveWingLoss, AnisotropicLoss, AnisotropicWingLoss, L1Loss, L2Loss,
                               MixedBranchLoss, SmoothL1Loss, SoftWingLoss, WingLoss)
from flmcore.schemes import get_scheme

torch.set_default_dtype(torch.float32)


def _pair(B=3, P=7, scale=8.0, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, P, 2, generator=g, dtype=dtype) * scale
    z = torch.randn(B, P, 2, generator=g, dtype=dtype) * scale
    return x, z


# ---------------------------------------------------------------- per-element references
def ref_wing(v, w, eps):
    a = abs(v)
    c = w - w * math.log(1 + w / eps)
    return w * math.log(1 + a / eps) if a < w else a - c


def ref_soft_wing(v, o1, o2, eps):
    a = abs(v)
    b = o1 - o2 * math.log(1 + o1 / eps)
    return a if a < o1 else o2 * math.log(1 + a / eps) + b


def ref_smooth_l1(v, beta):
    a = abs(v)
    return 0.5 * a * a / beta if a < beta else a - 0.5 * beta


def ref_awing(p, y, omega, theta, eps, alpha):
    d = abs(p - y)
    e = alpha - y
    if d < theta:
        return omega * math.log(1 + (d / eps) ** e)
    A = omega * (1 / (1 + (theta / eps) ** e)) * e * (theta / eps) ** (e - 1) / eps
    C = theta * A - omega * math.log(1 + (theta / eps) ** e)
    return A * d - C


def per_point(fn, x, z):
    B, P, _ = x.shape
    out = np.zeros((B, P))
    for b in range(B):
        for p in range(P):
            out[b, p] = sum(fn(float(x[b, p, c] - z[b, p, c])) for c in range(2))
    return out


@pytest.mark.parametrize("name,fn,ref", [
    ("l1", lambda x, z: F.l1_loss(x, z, reduction="none"), lambda v: abs(v)),
    ("l2", lambda x, z: F.l2_loss(x, z, reduction="none"), lambda v: v * v),
    ("smooth_l1", lambda x, z: F.smooth_l1_loss(x, z, beta=3.0, reduction="none"), lambda v: ref_smooth_l1(v, 3.0)),
    ("wing", lambda x, z: F.wing_loss(x, z, w=10.0, epsilon=2.0, reduction="none"), lambda v: ref_wing(v, 10.0, 2.0)),
    ("wing_small", lambda x, z: F.wing_loss(x, z, w=3.0, epsilon=0.5, reduction="none"),
     lambda v: ref_wing(v, 3.0, 0.5)),
    ("soft_wing", lambda x, z: F.soft_wing_loss(x, z, reduction="none"), lambda v: ref_soft_wing(v, 2.0, 20.0, 0.5)),
])
def test_pointwise_losses_match_formula(name, fn, ref):
    x, z = _pair()
    got = fn(x, z).numpy()
    np.testing.assert_allclose(got, per_point(ref, x, z), rtol=1e-12, atol=1e-12)
    assert got.shape == (3, 7)


def test_wing_is_continuous_at_w():
    w, eps = 10.0, 2.0
    z = torch.zeros(1, 1, 2, dtype=torch.float64)
    lo = F.wing_loss(torch.tensor([[[w - 1e-9, 0.0]]], dtype=torch.float64), z, w=w, epsilon=eps).item()
    hi = F.wing_loss(torch.tensor([[[w + 1e-9, 0.0]]], dtype=torch.float64), z, w=w, epsilon=eps).item()
    assert abs(lo - hi) < 1e-7
    assert abs(lo - w * math.log(1 + w / eps)) < 1e-7  # both sides equal w ln(1 + w/eps) at |x| = w


def test_soft_wing_is_continuous_at_omega1():
    z = torch.zeros(1, 1, 2, dtype=torch.float64)
    lo = F.soft_wing_loss(torch.tensor([[[2.0 - 1e-9, 0.0]]], dtype=torch.float64), z).item()
    hi = F.soft_wing_loss(torch.tensor([[[2.0 + 1e-9, 0.0]]], dtype=torch.float64), z).item()
    assert abs(lo - hi) < 1e-6


def test_adaptive_wing_matches_formula_and_is_continuous():
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    p = y + (torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) - 0.5) * 2.0
    got = F.adaptive_wing_loss(p, y, reduction="none").numpy()
    ref = np.zeros((2, 3))
    for idx in np.ndindex(2, 3, 5, 5):
        ref[idx[:2]] += ref_awing(float(p[idx]), float(y[idx]), 14.0, 0.5, 1.0, 2.1)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
    yv = torch.full((1, 1, 1), 0.3, dtype=torch.float64)
    lo = F.adaptive_wing_loss(yv + 0.5 - 1e-9, yv).item()
    hi = F.adaptive_wing_loss(yv + 0.5 + 1e-9, yv).item()
    assert abs(lo - hi) < 1e-6


def test_soft_wing_other_parameters_and_modules_match_formula():
    x, z = _pair(scale=15.0, seed=3)
    ref = per_point(lambda v: ref_soft_wing(v, 3.0, 10.0, 1.5), x, z)
    np.testing.assert_allclose(F.soft_wing_loss(x, z, omega1=3.0, omega2=10.0, epsilon=1.5, reduction="none").numpy(),
                               ref, rtol=1e-12)
    np.testing.assert_allclose(SoftWingLoss(3.0, 10.0, 1.5, reduction="sum")(x, z).item(), ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(SmoothL1Loss(beta=2.5, reduction="none")(x, z).numpy(),
                               per_point(lambda v: ref_smooth_l1(v, 2.5), x, z), rtol=1e-12)


def test_weights_and_reductions():
    x, z = _pair()
    w = torch.rand(7, dtype=torch.float64)
    per = per_point(lambda v: ref_wing(v, 10.0, 2.0), x, z)
    wn = w.numpy()
    np.testing.assert_allclose(F.wing_loss(x, z, weights=w, reduction="none").numpy(), per * wn, rtol=1e-12)
    np.testing.assert_allclose(F.wing_loss(x, z, weights=w).item(), (per * wn).sum() / 21, rtol=1e-12)
    np.testing.assert_allclose(F.wing_loss(x, z, reduction="sum").item(), per.sum(), rtol=1e-12)
    np.testing.assert_allclose(F.wing_loss(x, z).item(), per.sum() / 21, rtol=1e-12)
    wb = torch.rand(3, 7, dtype=torch.float64)
    l1 = per_point(abs, x, z)
    np.testing.assert_allclose(L1Loss(weights=w)(x, z).item(), (l1 * wn).mean(), rtol=1e-12)
    np.testing.assert_allclose(L1Loss(weights=w, reduction="sum")(x, z).item(), (l1 * wn).sum(), rtol=1e-12)
    np.testing.assert_allclose(L1Loss(weights=w)(x, z, weights=wb).item(), (l1 * wb.numpy()).mean(), rtol=1e-12)
    np.testing.assert_allclose(L1Loss()(x, z, weights=wb).item(), (l1 * wb.numpy()).mean(), rtol=1e-12)


def test_modules_match_formulas_and_keep_dtype():
    x, z = _pair(B=2, P=29)
    s29 = get_scheme("helen_zhou29")
    W = np.stack([ref_matrices(z[i].numpy(), s29, 4.0, 2.0) for i in range(2)])
    d = (x - z).numpy()
    q = np.einsum("bpi,bpij,bpj->bp", d, W, d)
    W53 = np.stack([ref_matrices(z[i].numpy(), s29, 5.0, 3.0) for i in range(2)])
    q53 = np.einsum("bpi,bpij,bpj->bp", d, W53, d)
    cases = [
        (L1Loss(), per_point(abs, x, z).mean()), (L2Loss(), per_point(lambda v: v * v, x, z).mean()),
        (SmoothL1Loss(beta=2.0), per_point(lambda v: ref_smooth_l1(v, 2.0), x, z).mean()),
        (WingLoss(w=5.0, epsilon=1.0), per_point(lambda v: ref_wing(v, 5.0, 1.0), x, z).mean()),
        (SoftWingLoss(), per_point(lambda v: ref_soft_wing(v, 2.0, 20.0, 0.5), x, z).mean()),
        (AnisotropicLoss("helen_zhou29", 4.0, 2.0), q.mean()),
        (AnisotropicWingLoss("helen_zhou29", scale=3.0),
         np.vectorize(lambda v: ref_wing(v, 10.0, 2.0))(3.0 * np.sqrt(q53)).mean()),
        (AnisotropicWingLoss("helen_zhou29", 4.0, 2.0, w=4.0, epsilon=1.0, scale=2.0),
         np.vectorize(lambda v: ref_wing(v, 4.0, 1.0))(2.0 * np.sqrt(q)).mean()),
    ]
    for mod, ref in cases:
        out = mod(x, z)
        assert out.dtype == torch.float64
        np.testing.assert_allclose(out.item(), ref, rtol=1e-12)
    out32 = WingLoss()(x.float(), z.float())
    assert out32.dtype == torch.float32
    hm = torch.rand(1, 2, 3, 3)
    assert AdaptiveWingLoss()(hm, hm).item() == 0.0


# ---------------------------------------------------------------- anisotropic
@pytest.mark.parametrize("name", ["ibug68", "helen_zhou29", "wflw98"])
def test_anisotropic_weights_match_equations(name):
    s = get_scheme(name)
    g = torch.Generator().manual_seed(4)
    z = torch.rand(3, s.n_points, 2, generator=g, dtype=torch.float64) * 100
    W = F.anisotropic_weights(z, name, 5.0, 3.0).numpy()
    for bi in range(3):
        np.testing.assert_allclose(W[bi], ref_matrices(z[bi].numpy(), s, 5.0, 3.0), rtol=1e-12, atol=1e-14)


def test_anisotropic_weights_match_core_numpy():
    an = pytest.importorskip("flmcore.anisotropic")
    for name in ("ibug68", "helen_zhou29"):
        s = get_scheme(name)
        z = np.random.default_rng(5).uniform(0, 100, size=(4, s.n_points, 2))
        got = F.anisotropic_weights(torch.as_tensor(z), name, 5.0, 3.0).numpy()
        ref = an.weight_matrices(z, s, 5.0, 3.0)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_anisotropic_adaptive_matches_core_numpy():
    an = pytest.importorskip("flmcore.anisotropic")
    s = get_scheme("ibug68")
    z = np.random.default_rng(6).uniform(0, 100, size=(3, 68, 2))
    try:
        ref = an.weight_matrices(z, s, 5.0, 3.0, adaptive=True)
    except TypeError:
        pytest.skip("flmcore.anisotropic.weight_matrices has no adaptive option")
    got = F.anisotropic_weights(torch.as_tensor(z), s, 5.0, 3.0, adaptive=True).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12)


def test_anisotropic_loss_matches_quadratic_form_and_eigenpairs():
    x, z = _pair(B=2, P=68, scale=30.0, seed=7)
    s68 = get_scheme("ibug68")
    d = x - z
    ref = np.zeros((2, 68))
    for bi in range(2):
        Wr = ref_matrices(z[bi].numpy(), s68, 5.0, 3.0)
        for i in range(68):
            di = d[bi, i].numpy()
            ref[bi, i] = di @ Wr[i] @ di  # eq. 2
    W = F.anisotropic_weights(z, "ibug68", 5.0, 3.0)
    got = F.anisotropic_loss(x, z, "ibug68", 5.0, 3.0, reduction="none").numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # eigenpairs on a curve point: 1/a^2 along the tangent, 1/b^2 across
    zz = z[0].numpy()
    t = zz[2] - zz[0]
    t /= np.linalg.norm(t)
    n = np.array([-t[1], t[0]])
    np.testing.assert_allclose(W[0, 1].numpy() @ t, t / 25.0, atol=1e-14)
    np.testing.assert_allclose(W[0, 1].numpy() @ n, n / 9.0, atol=1e-14)
    np.testing.assert_allclose(W[0, 36].numpy(), np.eye(2))  # eye corner


def test_anisotropic_loss_rotation_invariant_and_sliding_cheaper():
    x, z = _pair(B=2, P=68, scale=30.0, seed=8)
    th = 0.7
    R = torch.tensor([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]], dtype=torch.float64)
    a = F.anisotropic_loss(x, z, "ibug68", reduction="none")
    b = F.anisotropic_loss(x @ R.T + 5.0, z @ R.T + 5.0, "ibug68", reduction="none")
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10)
    # moving jaw point 5 along its tangent costs less than across
    t = z[:, 6] - z[:, 4]
    t = t / t.norm(dim=-1, keepdim=True)
    nrm = torch.stack([-t[:, 1], t[:, 0]], -1)
    along = z.clone()
    along[:, 5] += 2.0 * t
    across = z.clone()
    across[:, 5] += 2.0 * nrm
    la = F.anisotropic_loss(along, z, "ibug68", reduction="none")[:, 5]
    lc = F.anisotropic_loss(across, z, "ibug68", reduction="none")[:, 5]
    np.testing.assert_allclose(la.numpy(), 4.0 / 25.0)
    np.testing.assert_allclose(lc.numpy(), 4.0 / 9.0)


def test_anisotropic_origin_and_wing_forms():
    x, z = _pair(B=2, P=29, scale=10.0, seed=9)
    origin = np.random.default_rng(0).normal(size=(29, 2)) * 20
    ot = torch.as_tensor(origin)
    np.testing.assert_allclose(F.anisotropic_loss(x, z, "helen_zhou29", origin=origin).item(),
                               F.anisotropic_loss(x + ot, z, "helen_zhou29").item(), rtol=1e-12)
    np.testing.assert_allclose(AnisotropicLoss("helen_zhou29", origin=origin)(x, z).item(),
                               F.anisotropic_loss(x + ot, z, "helen_zhou29").item(), rtol=1e-12)
    s29 = get_scheme("helen_zhou29")
    d = (x - z).numpy()
    W = np.stack([ref_matrices(z[i].numpy(), s29, 5.0, 3.0) for i in range(2)])
    q = np.einsum("bpi,bpij,bpj->bp", d, W, d)
    ref = np.vectorize(lambda v: ref_wing(v, 10.0, 2.0))(3.0 * np.sqrt(q))
    np.testing.assert_allclose(F.anisotropic_wing_loss(x, z, "helen_zhou29", scale=3.0, reduction="none").numpy(),
                               ref, rtol=1e-12)


def test_anisotropic_no_grad_through_target_weights():
    x, z = _pair(B=1, P=68, seed=10)
    z.requires_grad_(True)
    loss = F.anisotropic_loss(x, z, "ibug68")
    loss.backward()
    # d/dz of (x-z)^T W (x-z) with W fixed is -2 W (x-z)
    W = ref_matrices(z.detach()[0].numpy(), get_scheme("ibug68"), 5.0, 3.0)
    ref = -2 * np.einsum("pij,pj->pi", W, (x - z.detach())[0].numpy()) / 68
    np.testing.assert_allclose(z.grad[0].numpy(), ref, rtol=1e-10)


def test_anisotropic_gradients_closed_form():
    """d/dx of mean_i d_i^T W_i d_i is 2 W d / (B P); of wing(s sqrt(q)): wing'(m) s W d / (sqrt(q) B P)."""
    x, z = _pair(B=2, P=29, scale=6.0, seed=3)
    s29 = get_scheme("helen_zhou29")
    W = np.stack([ref_matrices(z[i].numpy(), s29, 5.0, 3.0) for i in range(2)])
    d = (x - z).numpy()
    Wd = np.einsum("bpij,bpj->bpi", W, d)
    xr = x.clone().requires_grad_(True)
    F.anisotropic_loss(xr, z, "helen_zhou29").backward()
    np.testing.assert_allclose(xr.grad.numpy(), 2 * Wd / 58, rtol=1e-10)
    q = np.einsum("bpi,bpi->bp", d, Wd)
    m = 3.0 * np.sqrt(q)
    dwing = np.where(m < 10.0, 10.0 / (2.0 + m), 1.0)  # derivative of Feng eq. 5 (w=10, eps=2)
    xr = x.clone().requires_grad_(True)
    F.anisotropic_wing_loss(xr, z, "helen_zhou29", scale=3.0, reduction="sum").backward()
    np.testing.assert_allclose(xr.grad.numpy(), (dwing * 3.0 / np.sqrt(q))[..., None] * Wd, rtol=1e-10)


def test_anisotropic_wing_gradient_at_zero_error_is_zero_not_nan():
    x, z = _pair(B=2, P=29, scale=6.0, seed=4)
    x[0, 3] = z[0, 3]
    x[1, :] = z[1, :]
    xr = x.clone().requires_grad_(True)
    out = F.anisotropic_wing_loss(xr, z, "helen_zhou29", scale=3.0, reduction="none")
    assert out[1].abs().max().item() == 0.0 and out[0, 3].item() == 0.0
    out.sum().backward()
    assert bool(torch.isfinite(xr.grad).all())
    assert xr.grad[1].abs().max().item() == 0.0 and xr.grad[0, 3].abs().max().item() == 0.0
    assert xr.grad[0, 4].abs().max().item() > 0


# ---------------------------------------------------------------- mixed branch loss (ATF eq. 3-5)
def test_mixed_branch_coordinate_form_eq3_eq5():
    g = torch.Generator().manual_seed(11)
    out = {"m": torch.randn(4, 6, 2, generator=g, dtype=torch.float64),
           "a": torch.randn(4, 5, 2, generator=g, dtype=torch.float64)}
    pairs = np.array([[0, 1], [3, 4], [5, 0]])
    tm = torch.randn(4, 6, 2, generator=g, dtype=torch.float64)
    ta = torch.randn(4, 5, 2, generator=g, dtype=torch.float64)
    alpha, beta, gamma = 0.2, 0.8, 0.1

    def l1(p, v):
        return sum(abs(float(p[i, j, 0] - v[i, j, 0])) + abs(float(p[i, j, 1] - v[i, j, 1]))
                   for i in range(p.shape[0]) for j in range(p.shape[1])) / (p.shape[0] * p.shape[1])

    lps = sum(abs(float(out["m"][i, pm, c] - out["a"][i, pa, c]))
              for i in range(4) for pm, pa in pairs for c in range(2)) / (4 * len(pairs))
    crit = MixedBranchLoss(alpha, beta, gamma, {("m", "a"): pairs}, main="m")
    np.testing.assert_allclose(crit(out, tm, "m").item(), l1(out["m"], tm) + alpha * lps, rtol=1e-12)
    np.testing.assert_allclose(crit(out, ta, "a").item(), beta * l1(out["a"], ta) + gamma * lps, rtol=1e-12)
    # the functional twin, and pairs given in the other direction
    np.testing.assert_allclose(
        F.mixed_branch_loss(out, ta, "a", main="m", pairs={("a", "m"): pairs[:, ::-1].copy()}, alpha=alpha,
                            beta=beta, gamma=gamma).item(), crit(out, ta, "a").item(), rtol=1e-12)


def test_mixed_branch_heatmap_form_eq4():
    g = torch.Generator().manual_seed(12)
    out = {"m": torch.rand(2, 4, 5, 5, generator=g, dtype=torch.float64),
           "a": torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)}
    tm = torch.rand(2, 4, 5, 5, generator=g, dtype=torch.float64)
    pairs = [[1, 2], [3, 0]]
    lm = ((out["m"] - tm) ** 2).sum().item() / (2 * 4)
    lps = sum(((out["m"][i, pm] - out["a"][i, pa]) ** 2).sum().item() for i in range(2) for pm, pa in pairs) / (2 * 2)
    crit = MixedBranchLoss(0.5, 1.0, 1.0, {("m", "a"): pairs}, main="m", form="heatmap")
    np.testing.assert_allclose(crit(out, tm, "m").item(), lm + 0.5 * lps, rtol=1e-12)


def test_mixed_branch_pair_term_trains_both_branches_and_three_datasets():
    out = {n: torch.randn(2, k, 2, dtype=torch.float64, requires_grad=True) for n, k in (("m", 4), ("a", 3), ("c", 3))}
    crit = MixedBranchLoss(1.0, 1.0, 1.0, {("m", "a"): [[0, 0]], ("a", "c"): [[1, 1]], ("m", "c"): [[2, 2]]}, main="m")
    crit(out, torch.zeros(2, 3, 2, dtype=torch.float64), "a").backward()
    assert out["a"].grad.abs().sum() > 0
    assert out["m"].grad[:, 0].abs().sum() > 0 and out["m"].grad[:, 1:].abs().sum() == 0
    assert out["c"].grad[:, 1].abs().sum() > 0 and out["c"].grad[:, 2].abs().sum() == 0
    # gamma = 0 on an auxiliary batch: only the auxiliary label term, weighted by beta
    crit0 = MixedBranchLoss(1.0, 0.5, 0.0, {("m", "a"): [[0, 0]]}, main="m")
    t = torch.zeros(2, 3, 2, dtype=torch.float64)
    np.testing.assert_allclose(crit0(out, t, "a").item(), 0.5 * F.l1_loss(out["a"], t).item(), rtol=1e-12)


# ---------------------------------------------------------------- bad input
def test_bad_input_raises():
    x, z = _pair()
    with pytest.raises(ValueError, match="target"):
        F.wing_loss(x, z[:, :3])
    with pytest.raises(ValueError, match="input"):
        F.l1_loss(x[0], z[0])
    with pytest.raises(ValueError, match="reduction"):
        F.l2_loss(x, z, reduction="avg")
    with pytest.raises(ValueError, match="w must"):
        WingLoss(w=-1.0)
    with pytest.raises(ValueError, match="epsilon"):
        F.wing_loss(x, z, epsilon=0.0)
    with pytest.raises(ValueError, match="weights"):
        F.l1_loss(x, z, weights=torch.ones(5))
    with pytest.raises(TypeError, match="input"):
        F.l1_loss(x.numpy(), z)
    with pytest.raises(TypeError, match="floating"):
        F.l1_loss(x.long(), z.long())
    with pytest.raises(ValueError, match="scheme 'ibug68' has 68"):
        F.anisotropic_loss(x, z, "ibug68")
    with pytest.raises(ValueError, match="unknown scheme"):
        AnisotropicLoss("nope")
    with pytest.raises(ValueError, match="origin"):
        AnisotropicLoss("helen_zhou29", origin=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="b must"):
        F.anisotropic_loss(*_pair(P=29), "helen_zhou29", 5.0, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        MixedBranchLoss(-1.0, 1.0, 1.0, {}, main="m")
    with pytest.raises(ValueError, match="form"):
        MixedBranchLoss(1.0, 1.0, 1.0, {}, main="m", form="dense")
    with pytest.raises(ValueError, match="out of range"):
        MixedBranchLoss(1.0, 1.0, 1.0, {("m", "a"): [[9, 0]]}, main="m")(
            {"m": torch.zeros(1, 3, 2), "a": torch.zeros(1, 3, 2)}, torch.zeros(1, 3, 2), "m")
    with pytest.raises(ValueError, match="shape \\(K, 2\\)"):
        MixedBranchLoss(1.0, 1.0, 1.0, {("m", "a"): [[0, 1, 2]]}, main="m")
    with pytest.raises(ValueError, match="no branch output"):
        F.mixed_branch_loss({"m": torch.zeros(1, 3, 2)}, torch.zeros(1, 3, 2), "q", main="m", pairs={})


@pytest.mark.parametrize("adaptive", [False, True])
def test_anisotropic_coincident_neighbours_one_sided_like_core(adaptive):
    """Issue 13: coincident neighbours -> the one-sided tangent (as the NumPy core), not W = I."""
    from flmcore import anisotropic as core

    g = torch.Generator().manual_seed(7)
    z = torch.rand(2, 68, 2, generator=g, dtype=torch.float64) * 50
    z[0, 4] = z[0, 6]                  # jaw point 5: neighbours coincide -> forward difference z6 - z5
    z[1, 6] = z[1, 4]                  # the same on the other face
    z[1, 30] = z[1, 28]                # nose bridge 29: neighbours coincide -> forward z30 - z29
    a, b = 5.0, 3.0

    def eq6(t):  # reference from the paper: t one-sided (eq. 5 form), W = tt^T/a^2 + (I - tt^T)/b^2
        t = t / np.linalg.norm(t)
        tt = np.outer(t, t)
        return tt / a ** 2 + (np.eye(2) - tt) / b ** 2

    zn = z.numpy()
    W = F.anisotropic_weights(z, "ibug68", a, b).numpy()
    np.testing.assert_allclose(W[0, 5], eq6(zn[0, 6] - zn[0, 5]), rtol=1e-12)
    np.testing.assert_allclose(W[1, 5], eq6(zn[1, 6] - zn[1, 5]), rtol=1e-12)
    np.testing.assert_allclose(W[1, 29], eq6(zn[1, 30] - zn[1, 29]), rtol=1e-12)
    assert not np.allclose(W[0, 5], np.eye(2))
    # the torch weights and loss equal the NumPy core on exactly this case
    Wc = core.weight_matrices(zn, "ibug68", a, b, adaptive=adaptive)
    Wt = F.anisotropic_weights(z, "ibug68", a, b, adaptive=adaptive).numpy()
    np.testing.assert_allclose(Wt, Wc, rtol=1e-12, atol=1e-15)
    x = z + torch.randn(z.shape, generator=g, dtype=torch.float64)
    q = F.anisotropic_loss(x, z, "ibug68", a, b, adaptive=adaptive, reduction="none")
    qc = core.mahalanobis_cost(x.numpy(), zn, Wc, per_point=True)
    np.testing.assert_allclose(q.numpy(), qc, rtol=1e-10)
    # fully collapsed (every difference zero): identity in both
    z2 = z.clone()
    z2[0, 4] = z2[0, 5] = z2[0, 6]
    np.testing.assert_allclose(F.anisotropic_weights(z2, "ibug68")[0, 5].numpy(), np.eye(2))
    np.testing.assert_allclose(core.weight_matrices(z2.numpy(), "ibug68")[0, 5], np.eye(2))


def test_piecewise_branch_at_the_join_follows_the_paper():
    """Feng eq. 5 / Lin et al.: the log part is for |x| < w (omega1 for Soft Wing), the other part from
    |x| = w on; the value is continuous there but the slope is not, so the gradient at the join shows
    which branch is taken: 1 (linear part of Wing) and omega2 / (epsilon + omega1) (log part of Soft Wing)."""
    x = torch.tensor([[[10.0, -10.0]]], dtype=torch.float64, requires_grad=True)
    F.wing_loss(x, torch.zeros(1, 1, 2, dtype=torch.float64), w=10.0, epsilon=2.0, reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[1.0, -1.0]]])
    x = torch.tensor([[[2.0, -2.0]]], dtype=torch.float64, requires_grad=True)
    F.soft_wing_loss(x, torch.zeros(1, 1, 2, dtype=torch.float64), reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[20.0 / 2.5, -20.0 / 2.5]]])
    # just inside: the other branch (w / (epsilon + |x|) for Wing, 1 for Soft Wing)
    x = torch.tensor([[[9.5, 1.5]]], dtype=torch.float64, requires_grad=True)
    F.wing_loss(x, torch.zeros(1, 1, 2, dtype=torch.float64), reduction="sum").backward()
    np.testing.assert_allclose(x.grad.numpy(), [[[10.0 / 11.5, 10.0 / 3.5]]])

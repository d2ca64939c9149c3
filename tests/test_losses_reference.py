"""Landmark losses against independent references written from the papers in plain NumPy / loops.

No flmcore helper is used to build an expected value: the Wing (Feng et al. eq. 5), Soft Wing
(Lin et al.), Adaptive Wing (Wang et al. eq. 6-7), anisotropic cost (Rayhan et al. eq. 2-6, the
tangent of eq. 4/5 point by point from the scheme's curves) and ATF mixed-branch (Lan et al.
eq. 3-5) formulas are written out below.  Covered here (issue "Hardening"):

* float16 / bfloat16 input with pixel coordinates of 500-1000 gives a finite float32 loss close
  to the float64 formula, for every public loss function and module of ``flmcore.nn._losses``;
* Adaptive Wing with epsilon != 1 (and other omega / theta / alpha);
* per-point ``a`` / ``b`` arrays in the anisotropic cost, zero or negative entries rejected;
* ``adaptive=True`` (curvature-adaptive a, b) in the functional and module forms;
* negative / non-finite weights rejected with a ValueError naming ``weights``.
"""
import math

import numpy as np
import pytest
import torch
from _anisotropic_reference import ref_matrices

from flmcore.nn import _losses as L
from flmcore.schemes import get_scheme


# ================================================================ references (paper formulas)
def ref_l1(x, z):
    return np.abs(x - z).sum(-1)


def ref_l2(x, z):
    return ((x - z) ** 2).sum(-1)


def ref_smooth_l1(x, z, beta=1.0):
    a = np.abs(x - z)
    return np.where(a < beta, 0.5 * a * a / beta, a - 0.5 * beta).sum(-1)


def wing_scalar(v, w, eps):
    """Feng et al. 2018 eq. 5: w ln(1 + |x|/eps) if |x| < w else |x| - C, C = w - w ln(1 + w/eps)."""
    a = abs(v)
    C = w - w * math.log(1.0 + w / eps)
    return w * math.log(1.0 + a / eps) if a < w else a - C


def ref_wing(x, z, w=10.0, eps=2.0):
    d = x - z
    out = np.zeros(d.shape[:-1])
    for idx in np.ndindex(*d.shape[:-1]):
        out[idx] = wing_scalar(d[idx][0], w, eps) + wing_scalar(d[idx][1], w, eps)
    return out


def ref_soft_wing(x, z, o1=2.0, o2=20.0, eps=0.5):
    d = x - z
    B_ = o1 - o2 * math.log(1.0 + o1 / eps)
    out = np.zeros(d.shape[:-1])
    for idx in np.ndindex(*d.shape):
        a = abs(d[idx])
        out[idx[:-1]] += a if a < o1 else o2 * math.log(1.0 + a / eps) + B_
    return out


def awing_scalar(p, y, omega, theta, eps, alpha):
    """Wang et al. 2019 eq. 6-7, per pixel, y the ground-truth heatmap value."""
    d = abs(p - y)
    e = alpha - y
    if d < theta:
        return omega * math.log(1.0 + (d / eps) ** e)
    A = omega * (1.0 / (1.0 + (theta / eps) ** e)) * e * ((theta / eps) ** (e - 1.0)) * (1.0 / eps)
    C = theta * A - omega * math.log(1.0 + (theta / eps) ** e)
    return A * d - C


def ref_awing(p, y, omega=14.0, theta=0.5, eps=1.0, alpha=2.1):
    out = np.zeros(p.shape[:2])
    for idx in np.ndindex(*p.shape):
        out[idx[:2]] += awing_scalar(float(p[idx]), float(y[idx]), omega, theta, eps, alpha)
    return out


def ref_aniso(x, z, scheme, a=5.0, b=3.0, adaptive=False):
    """Per-point d^T W d (eq. 2), shape (B, P)."""
    out = np.zeros(x.shape[:2])
    for bi in range(x.shape[0]):
        W = ref_matrices(z[bi], scheme, a, b, adaptive)
        for i in range(x.shape[1]):
            d = x[bi, i] - z[bi, i]
            out[bi, i] = d @ W[i] @ d
    return out


def ref_aniso_wing(x, z, scheme, a=5.0, b=3.0, w=10.0, eps=2.0, scale=1.0, adaptive=False):
    q = ref_aniso(x, z, scheme, a, b, adaptive)
    return np.vectorize(lambda v: wing_scalar(scale * math.sqrt(v), w, eps))(q)


def ref_mixed(outputs, target, dataset, main, pairs, alpha, beta, gamma, form):
    """ATF eq. 3 with the coordinate (eq. 5, L1) or heatmap (eq. 4, pixel sum of squares) terms."""
    def term(p, g):
        diff = p - g
        per = np.abs(diff).sum(-1) if form == "coord" else (diff ** 2).reshape(diff.shape[0], diff.shape[1], -1).sum(-1)
        return per.mean()

    own = term(outputs[dataset], target)
    ps = []
    for (na, nb), pr in pairs.items():
        if dataset in (na, nb):
            pr = np.asarray(pr)
            ps.append(term(outputs[na][:, pr[:, 0]], outputs[nb][:, pr[:, 1]]))
    lps = float(np.mean(ps)) if ps else 0.0
    return own + alpha * lps if dataset == main else beta * own + gamma * lps


def _np(t):
    return t.detach().double().cpu().numpy()


# ================================================================ 1. half precision
S68 = get_scheme("ibug68")


def _big_pair(dtype, B=4, P=68, seed=0):
    """Targets and predictions at pixel coordinates 500-1000, rounded to ``dtype``."""
    g = torch.Generator().manual_seed(seed)
    z = 500.0 + 500.0 * torch.rand(B, P, 2, generator=g, dtype=torch.float64)
    x = 500.0 + 500.0 * torch.rand(B, P, 2, generator=g, dtype=torch.float64)
    return x.to(dtype), z.to(dtype)


def _big_heatmaps(dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(2, 5, 6, 6, generator=g, dtype=torch.float64)
    p = 500.0 + 500.0 * torch.rand(2, 5, 6, 6, generator=g, dtype=torch.float64)
    return p.to(dtype), y.to(dtype)


def _mixed_case(dtype, form):
    g = torch.Generator().manual_seed(2)
    shp = (lambda k: (3, k, 2)) if form == "coord" else (lambda k: (3, k, 4, 4))
    out = {n: (500.0 + 500.0 * torch.rand(*shp(k), generator=g, dtype=torch.float64)).to(dtype)
           for n, k in (("m", 6), ("a", 5))}
    tgt = (500.0 + 500.0 * torch.rand(*shp(6), generator=g, dtype=torch.float64)).to(dtype)
    pairs = {("m", "a"): [[0, 1], [3, 4], [5, 0]]}
    return out, tgt, pairs


def _coord(fn, ref):
    def run(dtype):
        x, z = _big_pair(dtype)
        xr = x.clone().requires_grad_(True)
        return fn(xr, z), ref(_np(x), _np(z)), xr
    return run


# name -> run(dtype) returning (result, expected float64 array, leaf input or None)
HALF_CASES = {
    "l1_loss": _coord(lambda x, z: L.l1_loss(x, z), lambda x, z: ref_l1(x, z).mean()),
    "L1Loss": _coord(lambda x, z: L.L1Loss(reduction="sum")(x, z), lambda x, z: ref_l1(x, z).sum()),
    "l2_loss": _coord(lambda x, z: L.l2_loss(x, z), lambda x, z: ref_l2(x, z).mean()),
    "L2Loss": _coord(lambda x, z: L.L2Loss(reduction="none")(x, z), ref_l2),
    "smooth_l1_loss": _coord(lambda x, z: L.smooth_l1_loss(x, z, beta=2.0),
                             lambda x, z: ref_smooth_l1(x, z, 2.0).mean()),
    "SmoothL1Loss": _coord(lambda x, z: L.SmoothL1Loss()(x, z), lambda x, z: ref_smooth_l1(x, z).mean()),
    "wing_loss": _coord(lambda x, z: L.wing_loss(x, z), lambda x, z: ref_wing(x, z).mean()),
    "WingLoss": _coord(lambda x, z: L.WingLoss(w=5.0, epsilon=1.0, reduction="sum")(x, z),
                       lambda x, z: ref_wing(x, z, 5.0, 1.0).sum()),
    "soft_wing_loss": _coord(lambda x, z: L.soft_wing_loss(x, z), lambda x, z: ref_soft_wing(x, z).mean()),
    "SoftWingLoss": _coord(lambda x, z: L.SoftWingLoss(reduction="sum")(x, z),
                           lambda x, z: ref_soft_wing(x, z).sum()),
    "anisotropic_loss": _coord(lambda x, z: L.anisotropic_loss(x, z, "ibug68"),
                               lambda x, z: ref_aniso(x, z, S68).mean()),
    "anisotropic_loss_adaptive": _coord(lambda x, z: L.anisotropic_loss(x, z, "ibug68", adaptive=True),
                                        lambda x, z: ref_aniso(x, z, S68, adaptive=True).mean()),
    "AnisotropicLoss": _coord(lambda x, z: L.AnisotropicLoss("ibug68", 4.0, 2.0, reduction="sum")(x, z),
                              lambda x, z: ref_aniso(x, z, S68, 4.0, 2.0).sum()),
    "anisotropic_wing_loss": _coord(lambda x, z: L.anisotropic_wing_loss(x, z, "ibug68", scale=3.0),
                                    lambda x, z: ref_aniso_wing(x, z, S68, scale=3.0).mean()),
    "AnisotropicWingLoss": _coord(lambda x, z: L.AnisotropicWingLoss("ibug68", reduction="sum")(x, z),
                                  lambda x, z: ref_aniso_wing(x, z, S68).sum()),
}


def _awing_run(module):
    def run(dtype):
        p, y = _big_heatmaps(dtype)
        pr = p.clone().requires_grad_(True)
        fn = L.AdaptiveWingLoss(epsilon=2.0, reduction="sum") if module else \
            (lambda a, b: L.adaptive_wing_loss(a, b, epsilon=2.0, reduction="sum"))
        return fn(pr, y), ref_awing(_np(p), _np(y), eps=2.0).sum(), pr
    return run


def _weights_run(dtype):
    _, z = _big_pair(dtype, B=2)
    zn = _np(z)
    return L.anisotropic_weights(z, "ibug68", 5.0, 3.0), np.stack([ref_matrices(zn[i], S68, 5.0, 3.0) for i in range(2)]), None


def _mixed_run(module, form):
    def run(dtype):
        out, tgt, pairs = _mixed_case(dtype, form)
        if module:
            got = L.MixedBranchLoss(0.2, 0.8, 0.1, pairs, main="m", form=form)(out, tgt, "m")
        else:
            got = L.mixed_branch_loss(out, tgt, "m", main="m", pairs=pairs, alpha=0.2, beta=0.8, gamma=0.1,
                                      form=form)
        ref = ref_mixed({k: _np(v) for k, v in out.items()}, _np(tgt), "m", "m",
                        {k: np.asarray(v) for k, v in pairs.items()}, 0.2, 0.8, 0.1, form)
        return got, ref, None
    return run


HALF_CASES.update({
    "adaptive_wing_loss": _awing_run(False),
    "AdaptiveWingLoss": _awing_run(True),
    "anisotropic_weights": _weights_run,
    "mixed_branch_loss": _mixed_run(False, "coord"),
    "mixed_branch_loss_heatmap": _mixed_run(False, "heatmap"),
    "MixedBranchLoss": _mixed_run(True, "heatmap"),
})


def test_every_public_loss_has_a_half_precision_case():
    names = {k.replace("_adaptive", "").replace("_heatmap", "") for k in HALF_CASES}
    assert set(L.__all__) <= names, sorted(set(L.__all__) - names)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", sorted(HALF_CASES))
def test_half_precision_finite_float32_and_close_to_float64_formula(name, dtype):
    got, ref, leaf = HALF_CASES[name](dtype)
    assert got.dtype == torch.float32  # documented: half inputs are computed and returned in float32
    assert bool(torch.isfinite(got).all())
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=2e-5, atol=1e-6)
    if leaf is not None:  # the gradient reaches the half-precision input, finite, in its dtype
        got.sum().backward()
        assert leaf.grad.dtype == dtype
        assert bool(torch.isfinite(leaf.grad).all()) and bool((leaf.grad != 0).any())


def test_float32_and_float64_keep_their_dtype():
    for dt in (torch.float32, torch.float64):
        x, z = _big_pair(dt, B=2)
        for fn in (L.l1_loss, L.l2_loss, L.wing_loss, L.soft_wing_loss, L.smooth_l1_loss):
            assert fn(x, z).dtype == dt
        assert L.anisotropic_loss(x, z, "ibug68").dtype == dt
        assert L.anisotropic_weights(z, "ibug68").dtype == dt
        np.testing.assert_allclose(L.l2_loss(x, z, reduction="none").numpy(), ref_l2(_np(x), _np(z)),
                                   rtol=1e-6 if dt == torch.float32 else 1e-13)


# ================================================================ 2. Adaptive Wing, epsilon != 1
@pytest.mark.parametrize("omega,theta,eps,alpha", [
    (14.0, 0.5, 2.0, 2.1), (14.0, 0.5, 0.5, 2.1), (10.0, 0.3, 1.7, 2.5), (6.0, 2.0, 0.25, 1.5),
])
def test_adaptive_wing_general_parameters_match_wang_eq6_7(omega, theta, eps, alpha):
    g = torch.Generator().manual_seed(3)
    y = torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64)
    p = y + (torch.rand(2, 3, 5, 5, generator=g, dtype=torch.float64) - 0.5) * 4.0 * theta  # both branches
    d = (p - y).abs()
    assert bool((d < theta).any()) and bool((d >= theta).any())
    ref = ref_awing(p.numpy(), y.numpy(), omega, theta, eps, alpha)
    got = L.adaptive_wing_loss(p, y, omega=omega, theta=theta, epsilon=eps, alpha=alpha, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-12, atol=1e-12)
    mod = L.AdaptiveWingLoss(omega=omega, theta=theta, epsilon=eps, alpha=alpha, reduction="sum")
    np.testing.assert_allclose(mod(p, y).item(), ref.sum(), rtol=1e-12)
    # continuity at |d| = theta (the paper's reason for A and C)
    yv = torch.full((1, 1, 1), 0.3, dtype=torch.float64)
    lo = L.adaptive_wing_loss(yv + theta * (1 - 1e-10), yv, omega=omega, theta=theta, epsilon=eps, alpha=alpha)
    hi = L.adaptive_wing_loss(yv + theta * (1 + 1e-10), yv, omega=omega, theta=theta, epsilon=eps, alpha=alpha)
    assert abs(lo.item() - hi.item()) < 1e-7


# ================================================================ 3. per-point a, b
@pytest.mark.parametrize("adaptive", [False, True])
def test_per_point_a_b_match_eq6(adaptive):
    rng = np.random.default_rng(4)
    z = rng.uniform(0, 100, size=(2, 68, 2))
    x = z + rng.normal(scale=4.0, size=z.shape)
    a = rng.uniform(2.0, 8.0, size=68)
    b = rng.uniform(0.3, 4.0, size=68)  # some below one pixel
    xt, zt = torch.as_tensor(x), torch.as_tensor(z)
    W = L.anisotropic_weights(zt, "ibug68", a, b, adaptive=adaptive).numpy()
    for i in range(2):
        np.testing.assert_allclose(W[i], ref_matrices(z[i], S68, a, b, adaptive), rtol=1e-10, atol=1e-14)
    ref = ref_aniso(x, z, S68, a, b, adaptive)
    got = L.anisotropic_loss(xt, zt, "ibug68", a, b, adaptive=adaptive, reduction="none")
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    mod = L.AnisotropicLoss("ibug68", torch.as_tensor(a), list(b), adaptive=adaptive, reduction="none")
    np.testing.assert_allclose(mod(xt, zt).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(
        L.anisotropic_wing_loss(xt, zt, "ibug68", a, b, scale=2.0, adaptive=adaptive, reduction="none").numpy(),
        ref_aniso_wing(x, z, S68, a, b, scale=2.0, adaptive=adaptive), rtol=1e-12)
    # 0-d arrays / tensors are numbers
    np.testing.assert_allclose(
        L.anisotropic_loss(xt, zt, "ibug68", np.array(4.0), torch.tensor(2.0), adaptive=adaptive,
                           reduction="none").numpy(), ref_aniso(x, z, S68, 4.0, 2.0, adaptive), rtol=1e-10)
    # a per-point array of one value equals the scalar
    np.testing.assert_allclose(L.anisotropic_loss(xt, zt, "ibug68", np.full(68, 5.0), 3.0, adaptive=adaptive).item(),
                               ref_aniso(x, z, S68, 5.0, 3.0, adaptive).mean(), rtol=1e-12)


@pytest.mark.parametrize("which", ["a", "b"])
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_per_point_zero_or_negative_a_b_rejected(which, bad):
    x, z = torch.zeros(1, 68, 2), torch.rand(1, 68, 2)
    arr = np.full(68, 3.0)
    arr[7] = bad
    kw = {"a": 5.0, "b": 3.0, which: arr}
    calls = [
        lambda: L.anisotropic_loss(x, z, "ibug68", **kw),
        lambda: L.anisotropic_loss(x, z, "ibug68", adaptive=True, **kw),
        lambda: L.anisotropic_wing_loss(x, z, "ibug68", **kw),
        lambda: L.anisotropic_weights(z, "ibug68", **kw),
        lambda: L.AnisotropicLoss("ibug68", **kw),
        lambda: L.AnisotropicWingLoss("ibug68", **kw),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=rf"^{which} must .*point 7"):
            call()
    # the scalar forms too
    with pytest.raises(ValueError, match=rf"^{which} must"):
        L.anisotropic_loss(x, z, "ibug68", **{"a": 5.0, "b": 3.0, which: bad})


def test_per_point_a_b_bad_shape_or_type():
    x, z = torch.zeros(1, 68, 2), torch.rand(1, 68, 2)
    with pytest.raises(ValueError, match=r"^a must be a number or have shape \(68,\)"):
        L.anisotropic_loss(x, z, "ibug68", np.ones(67), 3.0)
    with pytest.raises(ValueError, match=r"^b must be a number or have shape \(68,\)"):
        L.AnisotropicLoss("ibug68", 5.0, np.ones((2, 68)))
    with pytest.raises(TypeError, match="^a must"):
        L.anisotropic_loss(x, z, "ibug68", np.array(["x"] * 68), 3.0)
    with pytest.raises(TypeError, match="^b must"):
        L.anisotropic_loss(x, z, "ibug68", 5.0, np.ones(68, bool))


# ================================================================ 4. adaptive=True
@pytest.mark.parametrize("name", ["ibug68", "helen_zhou29", "wflw98"])
def test_anisotropic_adaptive_matches_independent_reference(name):
    s = get_scheme(name)
    rng = np.random.default_rng(5)
    z = rng.uniform(0, 100, size=(2, s.n_points, 2))
    x = z + rng.normal(scale=5.0, size=z.shape)
    xt, zt = torch.as_tensor(x), torch.as_tensor(z)
    ref = ref_aniso(x, z, s, 5.0, 3.0, adaptive=True)
    assert not np.allclose(ref, ref_aniso(x, z, s, 5.0, 3.0))  # the adaptive weights differ
    W = L.anisotropic_weights(zt, name, 5.0, 3.0, adaptive=True).numpy()
    for i in range(2):  # (arccos here, atan2 there: agree to ~1e-12 relative)
        np.testing.assert_allclose(W[i], ref_matrices(z[i], s, 5.0, 3.0, True), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(L.anisotropic_loss(xt, zt, name, adaptive=True, reduction="none").numpy(),
                               ref, rtol=1e-12)
    np.testing.assert_allclose(L.AnisotropicLoss(name, adaptive=True)(xt, zt).item(), ref.mean(), rtol=1e-12)
    np.testing.assert_allclose(L.AnisotropicLoss(name, 5.0, 3.0, adaptive=True, reduction="sum")(xt, zt).item(),
                               ref.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        L.AnisotropicWingLoss(name, adaptive=True, scale=3.0, reduction="none")(xt, zt).numpy(),
        ref_aniso_wing(x, z, s, scale=3.0, adaptive=True), rtol=1e-12)
    origin = rng.normal(size=(s.n_points, 2))
    crit = L.AnisotropicLoss(name, adaptive=True, origin=origin, reduction="none")
    np.testing.assert_allclose(crit(xt - torch.as_tensor(origin), zt).numpy(), ref, rtol=1e-9)


def test_anisotropic_adaptive_straight_and_sharp_turn():
    """A straight jaw keeps (a, b); a right-angle turn gives a^(1/2), b^(1/2)."""
    z = np.random.default_rng(6).uniform(0, 100, size=(1, 68, 2))
    z[0, :17] = np.stack([np.arange(17.0) * 3, np.full(17, 10.0)], -1)   # straight jaw along x
    z[0, 9] = z[0, 8] + [0.0, 3.0]                                      # turn 90 deg at point 8 ...
    z[0, 10:17] = z[0, 9] + np.stack([np.zeros(7), 3.0 * np.arange(1, 8)], -1)  # ... then straight up
    W = L.anisotropic_weights(torch.as_tensor(z), "ibug68", 5.0, 3.0, adaptive=True)[0].numpy()
    np.testing.assert_allclose(W[3], np.diag([1 / 25, 1 / 9]), rtol=1e-12, atol=1e-15)
    t = np.array([1.0, 1.0]) / math.sqrt(2)  # at point 8: (z9 - z7) is diagonal; theta = pi/2
    tt = np.outer(t, t)
    np.testing.assert_allclose(W[8], tt / 5.0 + (np.eye(2) - tt) / 3.0, rtol=1e-12)


# ================================================================ 5. weights
BAD_WEIGHTS = [-0.5, float("nan"), float("inf")]


@pytest.mark.parametrize("bad", BAD_WEIGHTS)
@pytest.mark.parametrize("fn", [
    lambda x, z, w: L.l1_loss(x, z, weights=w), lambda x, z, w: L.l2_loss(x, z, weights=w),
    lambda x, z, w: L.smooth_l1_loss(x, z, weights=w), lambda x, z, w: L.wing_loss(x, z, weights=w),
    lambda x, z, w: L.soft_wing_loss(x, z, weights=w),
    lambda x, z, w: L.adaptive_wing_loss(torch.rand(2, 68, 3, 3), torch.rand(2, 68, 3, 3), weights=w),
    lambda x, z, w: L.anisotropic_loss(x, z, "ibug68", weights=w),
    lambda x, z, w: L.anisotropic_wing_loss(x, z, "ibug68", weights=w, reduction="none"),
    lambda x, z, w: L.WingLoss()(x, z, weights=w),
    lambda x, z, w: L.AnisotropicLoss("ibug68")(x, z, w),
], ids=["l1", "l2", "smooth_l1", "wing", "soft_wing", "awing", "aniso", "aniso_wing", "WingLoss", "AnisotropicLoss"])
def test_bad_weights_rejected_naming_weights(fn, bad):
    x, z = torch.rand(2, 68, 2), torch.rand(2, 68, 2)
    w = torch.full((68,), 0.5)
    w[0] = 0.0
    w[11] = bad
    with pytest.raises(ValueError, match=f"^weights must be finite and >= 0, got {bad}$"):
        fn(x, z, w)
    with pytest.raises(ValueError, match=f"^weights must be finite and >= 0, got {bad}$"):
        fn(x, z, w.numpy().reshape(1, 68).repeat(2, 0))


@pytest.mark.parametrize("cls", [L.L1Loss, L.L2Loss, L.SmoothL1Loss, L.WingLoss, L.SoftWingLoss, L.AdaptiveWingLoss,
                                 lambda **k: L.AnisotropicLoss("ibug68", **k),
                                 lambda **k: L.AnisotropicWingLoss("ibug68", **k)])
@pytest.mark.parametrize("bad", BAD_WEIGHTS)
def test_module_constructor_rejects_bad_weights(cls, bad):
    w = np.ones(68)
    w[3] = bad
    with pytest.raises(ValueError, match="^weights must be finite and >= 0"):
        cls(weights=w)


def test_zero_weights_allowed_and_weighted_mean_over_B_P():
    x, z = torch.rand(2, 68, 2, dtype=torch.float64) * 9, torch.rand(2, 68, 2, dtype=torch.float64) * 9
    w = np.linspace(0.0, 2.0, 68)
    ref = (ref_wing(x.numpy(), z.numpy()) * w).sum() / (2 * 68)
    np.testing.assert_allclose(L.WingLoss(weights=w)(x, z).item(), ref, rtol=1e-12)
    np.testing.assert_allclose(L.wing_loss(x, z, weights=torch.as_tensor(w)).item(), ref, rtol=1e-12)


@pytest.mark.parametrize("arg", ["alpha", "beta", "gamma"])
def test_mixed_branch_negative_weights_rejected(arg):
    kw = {"alpha": 1.0, "beta": 1.0, "gamma": 1.0, arg: -0.1}
    with pytest.raises(ValueError, match=f"^{arg} must"):
        L.MixedBranchLoss(pairs={}, main="m", **kw)
    with pytest.raises(ValueError, match=f"^{arg} must"):
        L.mixed_branch_loss({"m": torch.zeros(1, 3, 2)}, torch.zeros(1, 3, 2), "m", main="m", pairs={}, **kw)


# ================================================================ 6. scheme corner cases, small scales
def _toy_scheme(name):
    """Curves of 3 (open), 2 (open), 2 (closed), 3 (closed) and 1 points, a curve sharing a point with
    an earlier one, a corner at an open-curve end and a point on no curve."""
    from types import SimpleNamespace as NS

    curves = (NS(indices=(0, 1, 2), closed=False), NS(indices=(3, 4), closed=False),
              NS(indices=(5, 6), closed=True), NS(indices=(7, 8, 9), closed=True), NS(indices=(10,), closed=False),
              NS(indices=(2, 11, 12), closed=False))
    return NS(name=name, n_points=14, curves=curves, corners=(0,))


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_toy_scheme_short_curves_shared_points_match_eq4_6(adaptive, scale):
    s = _toy_scheme(f"toy-{adaptive}-{scale}")
    rng = np.random.default_rng(7)
    z = rng.uniform(0, scale, size=(3, 14, 2))
    x = z + rng.normal(scale=0.1 * scale, size=z.shape)
    zt, xt = torch.as_tensor(z), torch.as_tensor(x)
    W = L.anisotropic_weights(zt, s, 5.0, 3.0, adaptive=adaptive).numpy()
    for i in range(3):
        Wr = ref_matrices(z[i], s, 5.0, 3.0, adaptive)
        np.testing.assert_allclose(W[i], Wr, rtol=1e-10, atol=1e-14)
        for k in (0, 10, 13):
            np.testing.assert_array_equal(Wr[k], np.eye(2))
        for k in (1, 3, 4, 5, 6, 8, 12):
            assert not np.allclose(Wr[k], np.eye(2))
    ref = ref_aniso(x, z, s, 5.0, 3.0, adaptive)
    np.testing.assert_allclose(L.anisotropic_loss(xt, zt, s, adaptive=adaptive, reduction="none").numpy(), ref,
                               rtol=1e-10)
    np.testing.assert_allclose(L.AnisotropicLoss(s, adaptive=adaptive, reduction="sum")(xt, zt).item(), ref.sum(),
                               rtol=1e-10)


@pytest.mark.parametrize("adaptive", [False, True])
def test_anisotropic_normalised_coordinates(adaptive):
    """Shapes in [0, 1] (neighbour distances well below one pixel): the same weights as eq. 6."""
    rng = np.random.default_rng(8)
    z = rng.uniform(0, 1, size=(2, 68, 2))
    x = z + rng.normal(scale=0.05, size=z.shape)
    W = L.anisotropic_weights(torch.as_tensor(z), "ibug68", 0.05, 0.03, adaptive=adaptive).numpy()
    for i in range(2):
        np.testing.assert_allclose(W[i], ref_matrices(z[i], S68, 0.05, 0.03, adaptive), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        L.anisotropic_loss(torch.as_tensor(x), torch.as_tensor(z), "ibug68", 0.05, 0.03, adaptive=adaptive,
                           reduction="none").numpy(), ref_aniso(x, z, S68, 0.05, 0.03, adaptive), rtol=1e-10)


@pytest.mark.parametrize("bad", [True, "10", None, [1.0]])
def test_non_number_parameters_rejected_with_type_error(bad):
    x, z = torch.zeros(1, 3, 2), torch.ones(1, 3, 2)
    with pytest.raises(TypeError, match="^w must be a real number"):
        L.wing_loss(x, z, w=bad)
    with pytest.raises(TypeError, match="^epsilon must be a real number"):
        L.WingLoss(epsilon=bad)
    with pytest.raises(TypeError, match="^beta must be a real number"):
        L.SmoothL1Loss(beta=bad)
    with pytest.raises(TypeError, match="^alpha must be a real number"):
        L.MixedBranchLoss(bad, 1.0, 1.0, {}, main="m")


def test_mixed_branch_empty_pairs_and_unrelated_pairs():
    g = torch.Generator().manual_seed(9)
    out = {"m": torch.randn(2, 4, 2, generator=g, dtype=torch.float64),
           "a": torch.randn(2, 3, 2, generator=g, dtype=torch.float64),
           "c": torch.randn(2, 3, 2, generator=g, dtype=torch.float64)}
    t = torch.randn(2, 4, 2, generator=g, dtype=torch.float64)
    own = np.abs(out["m"].numpy() - t.numpy()).sum(-1).mean()
    for pairs in ({("m", "a"): []}, {("m", "a"): np.zeros((0, 2), np.int64)}, {("a", "c"): [[0, 1]]}, {}):
        crit = L.MixedBranchLoss(0.5, 1.0, 1.0, pairs, main="m")
        np.testing.assert_allclose(crit(out, t, "m").item(), own, rtol=1e-12)
        np.testing.assert_allclose(L.mixed_branch_loss(out, t, "m", main="m", pairs=pairs, alpha=0.5).item(), own,
                                   rtol=1e-12)
    # two pair terms are averaged (eq. 3 with several auxiliary branches)
    pairs = {("m", "a"): [[0, 0]], ("c", "m"): [[2, 3]]}
    l1 = np.abs(out["m"][:, 0].numpy() - out["a"][:, 0].numpy()).sum(-1).mean()
    l2 = np.abs(out["c"][:, 2].numpy() - out["m"][:, 3].numpy()).sum(-1).mean()
    np.testing.assert_allclose(L.MixedBranchLoss(0.5, 1.0, 1.0, pairs, main="m")(out, t, "m").item(),
                               own + 0.5 * (l1 + l2) / 2, rtol=1e-12)


# ================================================================ 7. defaults and edge values
def test_documented_defaults_match_the_papers():
    """Wing w=10, eps=2; AWing omega=14, theta=0.5, eps=1, alpha=2.1; anisotropic a=5, b=3; scale=1;
    ATF alpha=beta=gamma=1 in the functional form."""
    rng = np.random.default_rng(10)
    z = rng.uniform(0, 100, size=(2, 68, 2))
    x = z + rng.normal(scale=3.0, size=z.shape)
    xt, zt = torch.as_tensor(x), torch.as_tensor(z)
    W = L.anisotropic_weights(zt, "ibug68").numpy()
    np.testing.assert_allclose(W[1], ref_matrices(z[1], S68, 5.0, 3.0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(L.anisotropic_wing_loss(xt, zt, "ibug68", reduction="none").numpy(),
                               ref_aniso_wing(x, z, S68), rtol=1e-12)
    np.testing.assert_allclose(L.AnisotropicWingLoss("ibug68", reduction="none")(xt, zt).numpy(),
                               ref_aniso_wing(x, z, S68), rtol=1e-12)
    g = torch.Generator().manual_seed(11)
    y = torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64)
    p = y + (torch.rand(2, 3, 4, 4, generator=g, dtype=torch.float64) - 0.5) * 2.0
    ref = ref_awing(p.numpy(), y.numpy(), 14.0, 0.5, 1.0, 2.1)
    np.testing.assert_allclose(L.AdaptiveWingLoss(reduction="none")(p, y).numpy(), ref, rtol=1e-12)
    np.testing.assert_allclose(L.adaptive_wing_loss(p, y).item(), ref.mean(), rtol=1e-12)
    out = {"m": xt[:, :5], "a": zt[:, :4]}
    t = zt[:, 10:15]
    pairs = {("m", "a"): [[0, 1], [4, 3]]}
    ref = ref_mixed({k: v.numpy() for k, v in out.items()}, t.numpy(), "m", "m", pairs, 1.0, 1.0, 1.0, "coord")
    np.testing.assert_allclose(L.mixed_branch_loss(out, t, "m", main="m", pairs=pairs).item(), ref, rtol=1e-12)
    ref = ref_mixed({k: v.numpy() for k, v in out.items()}, zt[:, 20:24].numpy(), "a", "m", pairs, 1.0, 1.0, 1.0,
                    "coord")
    np.testing.assert_allclose(L.mixed_branch_loss(out, zt[:, 20:24], "a", main="m", pairs=pairs).item(), ref,
                               rtol=1e-12)


def test_adaptive_wing_accepts_values_per_landmark():
    """(B, P) input: no pixel dimensions, one value per landmark."""
    g = torch.Generator().manual_seed(12)
    y = torch.rand(3, 4, generator=g, dtype=torch.float64)
    p = y + torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5
    np.testing.assert_allclose(L.adaptive_wing_loss(p, y, reduction="none").numpy(),
                               ref_awing(p.numpy(), y.numpy()), rtol=1e-12)
    with pytest.raises(ValueError, match="^input must have shape"):
        L.adaptive_wing_loss(p[0], y[0])


def test_anisotropic_wing_small_errors_and_collapsed_points():
    """Mahalanobis distances below 1 (sqrt(q) < q) and a fully collapsed curve point (W = I)."""
    rng = np.random.default_rng(13)
    z = rng.uniform(0, 100, size=(2, 68, 2))
    z[1, 4] = z[1, 5] = z[1, 6]                 # jaw point 5 and both neighbours coincide
    x = z + rng.normal(scale=0.3, size=z.shape)
    xt, zt = torch.as_tensor(x), torch.as_tensor(z)
    q = ref_aniso(x, z, S68)
    assert (q < 1).mean() > 0.5
    np.testing.assert_allclose(ref_matrices(z[1], S68, 5.0, 3.0)[5], np.eye(2))
    np.testing.assert_allclose(L.anisotropic_loss(xt, zt, "ibug68", reduction="none").numpy(), q, rtol=1e-12)
    np.testing.assert_allclose(L.anisotropic_wing_loss(xt, zt, "ibug68", reduction="none").numpy(),
                               ref_aniso_wing(x, z, S68), rtol=1e-12)
    np.testing.assert_allclose(L.anisotropic_wing_loss(xt, zt, "ibug68", adaptive=True, reduction="none").numpy(),
                               ref_aniso_wing(x, z, S68, adaptive=True), rtol=1e-10)

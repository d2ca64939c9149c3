"""flmcore.lddmm and flmcore.nn LDDMM layers: behaviour the mutation runs found untested, each against a
reference written here (the documented formula, plain numpy)."""
import numpy as np
import pytest

from flmcore import lddmm as L


def test_deformation_grid_default_bounds_are_the_box_enlarged_by_20_percent_per_side():
    pts = np.array([[10.0, 20.0], [50.0, 25.0], [30.0, 40.0]])          # box 40 x 20: pad 0.2 * 40 = 8
    traj = np.stack([pts, pts])
    rows, cols = L.deformation_grid(traj, np.zeros_like(pts), 5.0, n_lines=3, n_samples=4)
    np.testing.assert_allclose(rows[0, 0], [2.0, 12.0], atol=1e-6)
    np.testing.assert_allclose(rows[-1, -1], [58.0, 48.0], atol=1e-6)
    np.testing.assert_allclose(rows[1, :, 1], 30.0, atol=1e-6)          # the middle row line, undeformed
    np.testing.assert_allclose(cols[:, 0, 0], [2.0, 30.0, 58.0], atol=1e-6)


def _hamiltonian_reference(x0, p0, sigma, n_steps, kernel, groups):
    """Euler geodesic shooting of H = 1/2 sum_curves sum_ij p_i.p_j k(|x_i - x_j|^2 / sigma^2), written here:
    dx/dt = dH/dp, dp/dt = -dH/dx (autograd of this H), k = exp(-u) (Gaussian) or 1 / (1 + u) (Cauchy)."""
    torch = pytest.importorskip("torch")
    x, p = x0.clone(), p0.clone()
    h = 1.0 / n_steps
    for _ in range(n_steps):
        xv = x.detach().requires_grad_(True)
        pv = p.detach().requires_grad_(True)
        H = 0.0
        for g, s in zip(groups, sigma):
            d = xv[:, g, None, :] - xv[:, None, g, :]
            u = (d * d).sum(-1) / s ** 2
            k = torch.exp(-u) if kernel == "gaussian" else 1.0 / (1.0 + u)
            H = H + 0.5 * (k * (pv[:, g] @ pv[:, g].transpose(1, 2))).sum()
        gx, gp = torch.autograd.grad(H, (xv, pv))
        x, p = x + h * gp, p - h * gx
    return x.detach(), p.detach()


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy"])
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_geodesic_shooting_follows_the_hamiltonian(kernel, backend):
    """nn.lddmm_shoot (pure torch and compiled) against Hamilton's equations of the kernel written above,
    two curves with their own widths (the Cauchy derivative -k^2 / sigma^2 included)."""
    torch = pytest.importorskip("torch")
    from flmcore.nn import functional as F

    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2, 7, 2, generator=g, dtype=torch.float64) * 10
    p0 = torch.randn(2, 7, 2, generator=g, dtype=torch.float64) * 2
    groups, sigma = [[0, 1, 2, 3], [4, 5, 6]], [4.0, 2.5]
    want_x, want_p = _hamiltonian_reference(x0, p0, sigma, 4, kernel, groups)
    got_x, got_p = F.lddmm_shoot(x0, p0, sigma, 4, curves=[(groups[0], False), (groups[1], False)], kernel=kernel,
                                 backend=backend)
    np.testing.assert_allclose(got_x.numpy(), want_x.numpy(), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got_p.numpy(), want_p.numpy(), rtol=1e-9, atol=1e-9)


def test_lddmm_face_defaults_are_the_official_ones():
    """LDDMMFace: 2 Euler steps of constant momenta, per-curve ('paper' mode) Gaussian flows, one FC layer
    (the official LandmarkDeformLayer / head); the momentum scale is a tenth of the mean face's scale."""
    torch = pytest.importorskip("torch")
    from flmcore.nn.models import LDDMMFace

    mean = np.random.default_rng(0).uniform(20, 100, (68, 2))
    bb = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    m = LDDMMFace(bb, "ibug68", mean, feature_dim=4)
    d = m.deformation
    assert (d.n_steps, d.mode, d.kernel, d.preset) == (2, "paper", "gaussian", "flmcore")
    assert m.head(torch.zeros(1, 4)).shape == (1, 68, 2)                # constant momenta
    c = mean - mean.mean(0)
    assert m.head.scale == pytest.approx(0.1 * np.sqrt((c ** 2).sum(1).mean()), rel=1e-6)


def test_geodesic_flow_points_ride_the_time_varying_momenta():
    """LDDMMDeformation(mode='geodesic').flow_points: extra points follow dy/dt = sum_j k(y, x_j(t)) p_j(t)
    with the shooting's own x(t), p(t) (Euler, written here), not the initial momenta throughout."""
    torch = pytest.importorskip("torch")
    from flmcore.nn import LDDMMDeformation

    g = torch.Generator().manual_seed(1)
    mean = torch.rand(6, 2, generator=g, dtype=torch.float64) * 10
    mom = torch.randn(1, 6, 2, generator=g, dtype=torch.float64) * 4
    pts = torch.rand(4, 2, generator=g, dtype=torch.float64) * 10
    s, T = 3.0, 4
    layer = LDDMMDeformation(mean.numpy(), None, mode="geodesic", n_steps=T, sigma_v=s, per_curve=False)
    x, p, y = mean[None].clone(), mom.clone(), pts[None].clone()
    for _ in range(T):
        xv, pv = x.clone().requires_grad_(True), p.clone().requires_grad_(True)
        d = xv[:, :, None] - xv[:, None]
        H = 0.5 * (torch.exp(-(d * d).sum(-1) / s ** 2) * (pv @ pv.transpose(1, 2))).sum()
        gx, gp = torch.autograd.grad(H, (xv, pv))
        dy = y[:, :, None] - x[:, None]
        y = y + (torch.exp(-(dy * dy).sum(-1) / s ** 2) @ p) / T
        x, p = x + gp / T, p - gx / T
    got = layer.flow_points(mom, pts)      # the layer stores its mean face in float32
    np.testing.assert_allclose(got.numpy(), y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer(mom).numpy(), x.numpy(), rtol=1e-5, atol=1e-5)
    assert np.abs(got.numpy() - pts.numpy()).max() > 1.0                  # the points did move


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_currents_of_a_closed_triangle_include_the_closing_segment(backend):
    """A closed 3-point curve has 3 segments (0-1, 1-2, 2-0): currents norm written out here (eq. 1, 4)."""
    torch = pytest.importorskip("torch")
    from flmcore.nn import functional as F

    a = np.array([[[0.0, 0.0], [4.0, 0.0], [1.0, 3.0]]])
    b = np.array([[[0.5, 0.2], [4.2, 0.4], [1.5, 2.5]]])
    s = 2.0

    def segs(z):
        z = z[0]
        return [(z[i] + z[(i + 1) % 3]) / 2 for i in range(3)], [z[(i + 1) % 3] - z[i] for i in range(3)]

    ca, ta = segs(a)
    cb, tb = segs(b)
    c, t = ca + cb, ta + [-v for v in tb]
    want = sum(np.exp(-np.sum((ci - cj) ** 2) / s ** 2) * ti @ tj for ci, ti in zip(c, t) for cj, tj in zip(c, t))
    got = F.currents_loss(torch.as_tensor(a), torch.as_tensor(b), s, curves=[([0, 1, 2], True)], reduction="none",
                          backend=backend)
    assert float(got[0]) == pytest.approx(want, rel=1e-9)


def test_curve_landmark_loss_sigma_w_one_value_or_one_per_curve():
    pytest.importorskip("torch")
    from flmcore.nn import CurveLandmarkLoss

    assert CurveLandmarkLoss("ibug68", sigma_w=[3.0]).sigma_w == [3.0] * 9       # one value, every curve
    assert CurveLandmarkLoss("ibug68", sigma_w=np.arange(1.0, 10.0)).sigma_w == list(np.arange(1.0, 10.0))
    for bad in ([1.0, 2.0], np.ones((9, 1))):
        with pytest.raises(ValueError, match="sigma_w"):
            CurveLandmarkLoss("ibug68", sigma_w=bad)


def test_assign_to_curves_with_a_collapsed_segment():
    """A curve whose points coincide is a point: distance |p - a| (written here), for 2 and 3 query points."""
    shape = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [5.0, 5.0]])
    curves = [([0, 1], False), ([2, 3], False)]
    for pts, want in (([[5.0, 4.0], [1.0, 0.5]], [1, 0]), ([[5.0, 4.0], [9.0, 1.0], [5.0, 3.0]], [1, 0, 1])):
        assert L.assign_to_curves(np.array(pts), shape, curves).tolist() == want


def test_register_per_curve_widths_are_used_for_each_curve():
    """sigma_v given per curve: the result stores them and its deformed template is the Euler flow (written
    here) of its momenta with each curve's own Gaussian width; the two curves move independently."""
    rng = np.random.default_rng(0)
    tpl = np.r_[np.c_[np.linspace(0, 10, 5), np.zeros(5)], np.c_[np.linspace(0, 10, 4), np.full(4, 8.0)]]
    tgt = tpl + rng.normal(scale=0.5, size=tpl.shape)
    curves = [(np.arange(5), False), (np.arange(5, 9), False)]
    sig = [3.0, 6.0]
    res = L.register(tpl, tgt, curves=curves, sigma_v=sig, beta=0.0, n_steps=3, mode="flow", max_iter=50)
    np.testing.assert_allclose(res.sigma_v, sig)
    mom = np.asarray(res.momenta).reshape(3, 9, 2)
    x = tpl.copy()
    for t in range(3):
        v = np.zeros_like(x)
        for (idx, _), s in zip(curves, sig):
            d = x[idx][:, None] - x[idx][None]
            v[idx] = np.exp(-(d ** 2).sum(-1) / s ** 2) @ mom[t, idx]
        x = x + v / 3
    np.testing.assert_allclose(res.deformed, x, atol=1e-8)
    assert np.abs(res.deformed - tgt).max() < 0.05

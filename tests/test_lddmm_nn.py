"""Tests of the torch adapters of LDDMM (flmcore.nn): compiled-kernel path vs the pure-torch
reference, gradcheck in float64 on both paths, dtypes, modules and bad input."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore import lddmm as L  # noqa: E402
from flmcore.nn import functional as F  # noqa: E402
from flmcore.nn import CurveLandmarkLoss, LDDMMDeformation, MomentumHead  # noqa: E402
from flmcore.nn.models import LDDMMFace  # noqa: E402
from flmcore.schemes import convert, get_scheme  # noqa: E402

CURVES = [([0, 1, 2, 3], False), ([4, 5, 6], True)]
ODD = [([5, 0, 3], False), ([6, 2, 1], True)]  # non-contiguous; point 4 on no curve
CASES = [(None, 1.3), (CURVES, [1.2, 0.8]), (ODD, [0.9, 1.6])]


def _t(a, dtype=torch.float64, grad=True):
    return torch.as_tensor(np.asarray(a), dtype=dtype).requires_grad_(grad)


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy"])
@pytest.mark.parametrize("curves,sig", CASES)
def test_flow_kernel_vs_torch_and_gradcheck(rng, kernel, curves, sig):
    x = _t(rng.normal(size=(2, 7, 2)))
    a = _t(rng.normal(size=(2, 3, 7, 2)))
    for traj in (False, True):
        y1 = F.lddmm_flow(x, a, sig, curves=curves, kernel=kernel, return_trajectory=traj)
        y2 = F.lddmm_flow(x, a, sig, curves=curves, kernel=kernel, return_trajectory=traj, backend="torch")
        torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    for backend in ("kernel", "torch"):
        assert torch.autograd.gradcheck(
            lambda x, a: F.lddmm_flow(x, a, sig, curves=curves, kernel=kernel, backend=backend), (x, a))
        assert torch.autograd.gradcheck(
            lambda x, a: F.lddmm_flow(x, a[:, 0], sig, n_steps=2, curves=curves, kernel=kernel,
                                      return_trajectory=True, backend=backend), (x, a))
    # numpy core agrees
    np.testing.assert_allclose(F.lddmm_flow(x, a, sig, curves=curves, kernel=kernel).detach().numpy(),
                               L.flow(x.detach().numpy(), a.detach().numpy(), sig, curves=curves,
                                      kernel=kernel)[:, -1], atol=1e-12)


@pytest.mark.parametrize("integrator", ["euler", "rk2", "ralston"])
@pytest.mark.parametrize("curves,sig", CASES[:2] + [(get_scheme("helen_zhou29"), None)])
def test_shoot_kernel_vs_torch_and_gradcheck(rng, integrator, curves, sig):
    P = 7 if sig is not None else 29
    if sig is None:
        sig = list(np.linspace(1.0, 3.0, len(curves.curves)))
    x = _t(rng.normal(size=(2, P, 2)) * 2)
    p = _t(rng.normal(size=(2, P, 2)))
    r1 = F.lddmm_shoot(x, p, sig, 3, integrator=integrator, curves=curves)
    r2 = F.lddmm_shoot(x, p, sig, 3, integrator=integrator, curves=curves, backend="torch")
    for u, v in zip(r1, r2):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    if P > 7:
        return
    for backend in ("kernel", "torch"):
        assert torch.autograd.gradcheck(
            lambda x, p: F.lddmm_shoot(x, p, sig, 3, integrator=integrator, curves=curves, backend=backend), (x, p))
    assert torch.autograd.gradcheck(
        lambda x, p: F.lddmm_shoot(x, p, sig, 2, integrator=integrator, curves=curves, return_trajectory=True),
        (x, p))


@pytest.mark.parametrize("fn", [F.currents_loss, F.varifold_loss])
@pytest.mark.parametrize("kernel", ["gaussian", "cauchy"])
def test_curve_losses_kernel_vs_torch_and_gradcheck(rng, fn, kernel):
    a = _t(rng.normal(size=(3, 7, 2)))
    b = _t(rng.normal(size=(3, 7, 2)))
    c = _t(rng.normal(size=(3, 5, 2)))
    for kw, s in ((dict(closed=True), 1.5), (dict(closed=False), 0.8), (dict(curves=ODD), [1.0, 2.0])):
        l1 = fn(a, b, s, kernel=kernel, reduction="none", **kw)
        l2 = fn(a, b, s, kernel=kernel, reduction="none", backend="torch", **kw)
        torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-10)
        for backend in ("kernel", "torch"):
            assert torch.autograd.gradcheck(lambda a, b: fn(a, b, s, kernel=kernel, backend=backend, **kw), (a, b))
    # different point counts (a sparse target polyline) and the NumPy core
    v = fn(a, c, 1.1, kernel=kernel, reduction="none")
    core = L.varifold_distance if fn is F.varifold_loss else L.currents_distance
    np.testing.assert_allclose(v.detach().numpy(), core(a.detach().numpy(), c.detach().numpy(), 1.1, kernel=kernel),
                               rtol=1e-10)
    assert torch.autograd.gradcheck(lambda a, c: fn(a, c, 1.1, kernel=kernel), (a, c))


def test_float32_supported_and_close_to_float64(rng):
    x = rng.normal(size=(4, 9, 2)) * 5
    a = rng.normal(size=(4, 3, 9, 2))
    out = {}
    for dt in (torch.float32, torch.float64):
        xt, at = _t(x, dt), _t(a, dt)
        y = F.lddmm_flow(xt, at, 4.0, curves=[list(range(5)), list(range(5, 9))])
        x1, p1 = F.lddmm_shoot(xt, at[:, 0], 4.0, 3)
        loss = y.square().sum() + x1.square().sum() + F.currents_loss(y, xt, 2.0)
        loss.backward()
        assert y.dtype == dt and x1.dtype == dt and xt.grad.dtype == dt
        assert torch.isfinite(xt.grad).all() and torch.isfinite(at.grad).all()
        out[dt] = (y.detach().double(), xt.grad.double(), at.grad.double())
    for u, v in zip(out[torch.float32], out[torch.float64]):
        torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-3)


def test_flow_points_matches_core(rng):
    x = rng.normal(size=(2, 7, 2))
    a = rng.normal(size=(2, 3, 7, 2))
    pts = rng.normal(size=(2, 4, 2))
    pc = np.array([0, 1, -1, 1])
    traj = F.lddmm_flow(_t(x, grad=False), _t(a, grad=False), [1.0, 2.0], curves=ODD, return_trajectory=True)
    y = F.lddmm_flow_points(traj, _t(a, grad=False), _t(pts, grad=False), [1.0, 2.0], curves=ODD, point_curves=pc)
    ref = L.flow_points(traj.numpy(), a, pts, [1.0, 2.0], curves=ODD, point_curves=pc)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(y[:, 2].numpy(), pts[:, 2])  # point on no curve stays


def test_bad_input(rng):
    x = torch.zeros(2, 4, 2)
    a = torch.ones(2, 3, 4, 2)
    with pytest.raises(ValueError, match="momenta.*NaN"):
        F.lddmm_flow(x, torch.full_like(a, float("nan")), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        F.lddmm_flow(x, a, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        F.lddmm_shoot(x, a[:, 0], -2.0, 2)
    with pytest.raises(ValueError, match="momenta must have shape"):
        F.lddmm_flow(x, torch.ones(2, 3, 5, 2), 1.0)
    with pytest.raises(ValueError, match="n_steps is required"):
        F.lddmm_flow(x, a[:, 0], 1.0)
    with pytest.raises(ValueError, match="x0"):
        F.lddmm_flow(torch.zeros(4, 2), a, 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        F.lddmm_flow(x.half(), a.half(), 1.0)
    with pytest.raises(ValueError, match="backend"):
        F.lddmm_flow(x, a, 1.0, backend="cuda")
    with pytest.raises(ValueError, match="curves"):
        F.lddmm_flow(x, a, 1.0, curves=[[0, 1], []])
    with pytest.raises(ValueError, match="at least 2 points"):
        F.currents_loss(torch.zeros(2, 1, 2), torch.zeros(2, 3, 2), 1.0)
    with pytest.raises(ValueError, match="empty"):
        F.currents_loss(torch.zeros(2, 0, 2), torch.zeros(2, 3, 2), 1.0)
    with pytest.raises(ValueError, match="reduction"):
        F.currents_loss(torch.zeros(2, 3, 2), torch.zeros(2, 3, 2), 1.0, reduction="max")


# ----------------------------------------------------------------------------- modules
@pytest.fixture(scope="module")
def mean68():
    rng = np.random.default_rng(3)
    t = np.linspace(-1, 1, 17)
    jaw = np.c_[30 * t, 20 + 25 * (1 - t ** 2)]
    pts = [jaw]
    pts.append(np.c_[np.linspace(-25, -5, 5), np.full(5, -15.0)])
    pts.append(np.c_[np.linspace(5, 25, 5), np.full(5, -15.0)])
    pts.append(np.c_[np.zeros(4), np.linspace(-10, 5, 4)])
    pts.append(np.c_[np.linspace(-6, 6, 5), np.full(5, 8.0)])
    ang = np.linspace(0, 2 * np.pi, 7)[:-1]
    pts.append(np.c_[-15 + 6 * np.cos(ang), -8 + 2 * np.sin(ang)])
    pts.append(np.c_[15 + 6 * np.cos(ang), -8 + 2 * np.sin(ang)])
    a12 = np.linspace(0, 2 * np.pi, 13)[:-1]
    pts.append(np.c_[12 * np.cos(a12), 20 + 5 * np.sin(a12)])
    a8 = np.linspace(0, 2 * np.pi, 9)[:-1]
    pts.append(np.c_[8 * np.cos(a8), 20 + 2 * np.sin(a8)])
    return np.concatenate(pts) + 64 + rng.normal(size=(68, 2)) * 0.1


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(1, 6, 5, stride=4), torch.nn.ReLU(),
                                        torch.nn.Conv2d(6, 8, 3, stride=2), torch.nn.ReLU())

    def forward(self, x):
        return self.body(x)


def test_deformation_layer_modes(mean68):
    s = get_scheme("ibug68")
    torch.manual_seed(0)
    mom = torch.randn(3, 68, 2)
    for mode in ("paper", "global", "geodesic"):
        layer = LDDMMDeformation(mean68, s, mode=mode, n_steps=2)
        out = layer(mom)
        assert out.shape == (3, 68, 2) and out.dtype == torch.float32
        torch.testing.assert_close(layer(torch.zeros(3, 68, 2)), layer.mean_shape.expand(3, -1, -1))
    layer = LDDMMDeformation(mean68, s, mode="paper", n_steps=2)
    np.testing.assert_allclose(layer.sigma, L.curve_sigmas(mean68, s.curves), rtol=1e-12)
    # per-curve: momenta on one curve do not move another curve
    m = torch.zeros(1, 68, 2)
    m[0, :17] = 5.0
    out = layer(m)[0]
    torch.testing.assert_close(out[17:], layer.mean_shape[17:])
    # time-varying momenta and transport of the control points themselves
    mt = torch.randn(2, 2, 68, 2, dtype=torch.float64)
    y = layer(mt)
    moved = layer.transport(mt, torch.as_tensor(mean68[:20]), point_curves=s.curve_labels()[:20])
    torch.testing.assert_close(moved, y[:, :20])
    with pytest.raises(ValueError, match="mode"):
        LDDMMDeformation(mean68, s, mode="spline")
    with pytest.raises(ValueError, match="needs a scheme"):
        LDDMMDeformation(mean68, None, mode="paper")


def test_head_and_loss(mean68, rng):
    s = get_scheme("ibug68")
    head = MomentumHead(8, 68, n_times=3)
    assert head(torch.zeros(2, 8, 4, 4)).shape == (2, 3, 68, 2)
    assert MomentumHead(8, 68)(torch.zeros(2, 8)).shape == (2, 68, 2)
    with pytest.raises(ValueError, match="features"):
        head(torch.zeros(2, 8, 4))
    loss = CurveLandmarkLoss(s, mean68, beta=0.1)
    np.testing.assert_allclose(loss.sigma_w, L.curve_sigmas(mean68, s.curves, factor=0.5), rtol=1e-6)
    y = torch.as_tensor(mean68[None].repeat(2, 0))
    assert float(loss(y, y)) == pytest.approx(0.0, abs=1e-9)
    pred = (y + torch.as_tensor(rng.normal(size=y.shape))).requires_grad_(True)
    val = loss(pred, y, reduction="none")
    # reference: eq. 8 written out with the NumPy core, per sample
    for b in range(2):
        p, t = pred[b].detach().numpy(), y[b].numpy()
        ref = 0.0
        for c, sw in zip(s.curves, loss.sigma_w):
            idx = list(c.indices)
            ref += 0.1 * L.currents_distance(p[idx], t[idx], sw, closed=c.closed) + L.landmark_distance(p[idx], t[idx])
        ipd = np.linalg.norm(t[list(s.left_eye)].mean(0) - t[list(s.right_eye)].mean(0))
        assert float(val[b].detach()) == pytest.approx(ref / ipd, rel=1e-9)
    val.sum().backward()
    assert torch.isfinite(pred.grad).all()
    with pytest.raises(ValueError, match="mean_shape"):
        CurveLandmarkLoss(s)
    with pytest.raises(ValueError, match="pred and target"):
        loss(y[:, :10], y[:, :10])


def test_lddmm_face_train_step_and_cross_scheme(mean68):
    torch.manual_seed(0)
    s68 = get_scheme("ibug68")
    model = LDDMMFace(TinyNet(), s68, mean68, image_size=(64, 64), n_steps=2)
    imgs = torch.rand(4, 64, 64)
    target = torch.as_tensor(mean68, dtype=torch.float32).expand(4, -1, -1) + torch.randn(4, 68, 2)
    crit = CurveLandmarkLoss(s68, mean68)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(15):
        opt.zero_grad()
        loss = crit(model(imgs), target)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    assert float(loss.detach()) < first
    out = model.predict(imgs)
    assert out.shape == (4, 68, 2)
    # cross-scheme: a 29-point mean face taken from the 68-point one -> the corresponding predicted
    # 29-point landmarks coincide with the 68-point predictions (same points, same flows)
    pairs = np.array([[i, j] for i, j in __import__("flmcore").schemes.correspondences("helen_zhou29", "ibug68")])
    m29 = convert(mean68, "ibug68", "helen_zhou29", allow_missing=True)
    miss = np.isnan(m29).any(1)
    m29[miss] = mean68.mean(0)  # points with no 68-point counterpart: anywhere near the face
    model.add_scheme("helen_zhou29", m29)
    pred29 = model.predict(imgs, scheme="helen_zhou29")
    assert pred29.shape == (4, 29, 2)
    y0, pc = model.other_scheme_points("helen_zhou29")
    labels = s68.curve_labels()
    same = [(i, j) for i, j in pairs if not miss[i] and pc[i] == labels[j]]
    assert len(same) >= 10
    i29, i68 = np.array(same).T
    torch.testing.assert_close(pred29[:, i29], out[:, i68], rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="no mean face"):
        model.predict(imgs, scheme="wflw98")

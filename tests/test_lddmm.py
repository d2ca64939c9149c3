"""Tests of flmcore.lddmm (NumPy core) against dense NumPy references, SciPy ODE solutions,
finite differences, analytic cases and invariants."""
import subprocess
import sys

import numpy as np
import pytest

from flmcore import lddmm as L

CURVES = [([0, 1, 2, 3], False), ([4, 5, 6], True)]
ODD_CURVES = [([5, 0, 3], False), ([6, 2], False)]  # non-contiguous, points 1 and 4 on no curve


def kmat(x, y, s, kernel="gaussian"):
    """Kernel matrix written from the paper (independent of L.kernel_matrix):
    Gaussian exp(-|x-y|^2 / s^2), Cauchy 1 / (1 + |x-y|^2 / s^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    d2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / s ** 2) if kernel == "gaussian" else 1.0 / (1.0 + d2 / s ** 2)


def segments(q, closed=False):
    """Segment centres and tangents tau_k = q_{k+1} - q_k (eq. 1), written out (independent of
    L.polyline_segments); a closed polyline of more than two points adds the last-to-first segment."""
    q = np.asarray(q, float)
    nxt = list(range(1, len(q))) + ([0] if closed and len(q) > 2 else [])
    cur = list(range(len(nxt)))
    return (q[cur] + q[nxt]) / 2.0, q[nxt] - q[cur]


def dense_flow(x0, mom, T, groups):
    """Slow reference: explicit Euler with dense per-group kernel matrices."""
    x = x0.copy()
    traj = [x.copy()]
    for t in range(T):
        a = mom[t] if mom.ndim == 3 else mom
        v = np.zeros_like(x)
        for idx, s in groups:
            v[idx] = kmat(x[idx], x[idx], s) @ a[idx]
        x = x + v / T
        traj.append(x.copy())
    return np.array(traj)


def ham_rhs(x, p, s):
    K = kmat(x, x, s)
    d = x[:, None] - x[None]
    dp = 2.0 / s ** 2 * ((K * (p @ p.T))[..., None] * d).sum(1)
    return K @ p, dp


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy"])
def test_kernel_matvec_matches_dense(rng, kernel):
    x = rng.normal(size=(3, 7, 2)) * 2
    a = rng.normal(size=(3, 7, 2))
    v = L.kernel_matvec(x, a, 1.7, kernel=kernel)
    ref = kmat(x, x, 1.7, kernel=kernel) @ a
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-12)
    v = L.kernel_matvec(x[0], a[0], [1.0, 2.0], curves=ODD_CURVES, kernel=kernel)
    ref = a[0].copy()  # points on no curve move by their own momentum (k(0) = 1)
    for (idx, _), s in zip(ODD_CURVES, [1.0, 2.0]):
        ref[idx] = kmat(x[0][idx], x[0][idx], s, kernel=kernel) @ a[0][idx]
    np.testing.assert_allclose(v, ref, rtol=1e-12, atol=1e-12)


def test_kernel_values_paper_form():
    # Gaussian exp(-|x-y|^2 / sigma^2) (no factor 2), Cauchy 1 / (1 + |x-y|^2 / sigma^2)
    K = L.kernel_matrix([[0.0, 0.0]], [[3.0, 4.0]], 5.0)
    assert K[0, 0] == pytest.approx(np.exp(-1.0))
    K = L.kernel_matrix([[0.0, 0.0]], [[3.0, 4.0]], 5.0, kernel="cauchy")
    assert K[0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("kernel", ["gaussian", "cauchy"])
def test_kernel_values_at_many_distances(kernel):
    """|x - y| = sigma gives the same value for exp(-u), exp(-u/2) with sigma rescaled ...; check
    distances 0, sigma/3, sigma/2, 2 sigma, 3 sigma against the closed forms."""
    s = 2.0
    d = np.array([0.0, s / 3, s / 2, 2 * s, 3 * s])
    y = np.stack([d * 0.6, d * 0.8], -1)                  # |y| = d
    K = L.kernel_matrix([[0.0, 0.0]], y, s, kernel=kernel)[0]
    expect = {"gaussian": [1.0, np.exp(-1 / 9), np.exp(-0.25), np.exp(-4.0), np.exp(-9.0)],
              "cauchy": [1.0, 1 / (1 + 1 / 9), 0.8, 0.2, 0.1]}[kernel]
    np.testing.assert_allclose(K, expect, rtol=1e-14)
    np.testing.assert_allclose(K, kmat([[0.0, 0.0]], y, s, kernel)[0], rtol=1e-14)
    v = L.kernel_matvec(np.concatenate([[[0.0, 0.0]], y]), np.eye(6, 2)[[0, 2, 2, 2, 2, 2]], s, kernel=kernel)
    np.testing.assert_allclose(v[1:, 0], K, rtol=1e-13)              # v_i = k(x_i, x_0) a_0


def test_polyline_segments_orientation():
    q = [[0.0, 0.0], [2.0, 0.0], [2.0, 3.0]]
    c, t = L.polyline_segments(q)
    np.testing.assert_array_equal(t, [[2.0, 0.0], [0.0, 3.0]])       # forward: q_{k+1} - q_k
    np.testing.assert_array_equal(c, [[1.0, 0.0], [2.0, 1.5]])
    c, t = L.polyline_segments(q, closed=True)
    np.testing.assert_array_equal(t[-1], [-2.0, -3.0])
    for closed in (False, True):
        for got, ref in zip(L.polyline_segments(q, closed), segments(q, closed)):
            np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("curves,sig", [(None, 1.5), (CURVES, [1.2, 0.7]), (ODD_CURVES, [0.9, 2.0])])
def test_flow_matches_dense_reference(rng, curves, sig):
    x0 = rng.normal(size=(7, 2))
    mom = rng.normal(size=(4, 7, 2))
    traj = L.flow(x0, mom, sig, curves=curves)
    if curves is None:
        groups = [(np.arange(7), sig)]
    else:
        on = {i for idx, _ in curves for i in idx}
        groups = [(np.array(idx), s) for (idx, _), s in zip(curves, sig)]
        groups += [(np.array([i]), 1.0) for i in range(7) if i not in on]
    np.testing.assert_allclose(traj, dense_flow(x0, mom, 4, groups), atol=1e-12)
    # constant momenta == time-varying momenta repeated
    t1 = L.flow(x0, mom[0], sig, n_steps=3, curves=curves)
    t2 = L.flow(x0, np.repeat(mom[:1], 3, 0), sig, curves=curves)
    np.testing.assert_allclose(t1, t2, atol=1e-14)
    # batch == loop over shapes
    xb = rng.normal(size=(3, 7, 2))
    mb = rng.normal(size=(3, 4, 7, 2))
    tb = L.flow(xb, mb, sig, curves=curves)
    for b in range(3):
        np.testing.assert_allclose(tb[b], L.flow(xb[b], mb[b], sig, curves=curves), atol=1e-14)


@pytest.mark.parametrize("n_steps", [1, 2, 7])
def test_single_point_moves_by_its_momentum(n_steps):
    # K(0) = 1: one point with constant momentum alpha moves by alpha per unit time
    alpha = np.array([[1.5, -0.25]])
    for kernel in L.KERNELS:
        traj = L.flow([[3.0, 4.0]], alpha, 0.7, n_steps=n_steps, kernel=kernel)
        np.testing.assert_allclose(traj[-1], [[4.5, 3.75]], atol=1e-14)
        np.testing.assert_allclose(traj[1] - traj[0], alpha / n_steps, atol=1e-14)
        for integ in L.INTEGRATORS:
            x1, p1 = L.shoot([[3.0, 4.0]], alpha, 0.7, n_steps=n_steps, integrator=integ, kernel=kernel)
            np.testing.assert_allclose(x1, [[4.5, 3.75]], atol=1e-14)
            np.testing.assert_allclose(p1, alpha, atol=1e-14)


def test_far_apart_points_move_independently():
    x0 = np.array([[0.0, 0.0], [1000.0, 0.0]])
    mom = np.array([[1.0, 0.0], [0.0, 2.0]])
    traj = L.flow(x0, mom, 1.0, n_steps=5)
    np.testing.assert_allclose(traj[-1], x0 + mom, atol=1e-12)


def test_shoot_converges_to_ode_solution(rng):
    from scipy.integrate import solve_ivp

    x0 = rng.normal(size=(5, 2))
    p0 = rng.normal(size=(5, 2)) * 0.5
    s = 1.3

    def rhs(_, y):
        dx, dp = ham_rhs(y[:10].reshape(5, 2), y[10:].reshape(5, 2), s)
        return np.r_[dx.ravel(), dp.ravel()]

    sol = solve_ivp(rhs, (0, 1), np.r_[x0.ravel(), p0.ravel()], rtol=1e-11, atol=1e-12)
    ref_x = sol.y[:10, -1].reshape(5, 2)
    errs = {}
    for integ in L.INTEGRATORS:
        errs[integ] = [np.abs(L.shoot(x0, p0, s, n_steps=n, integrator=integ)[0] - ref_x).max() for n in (20, 40)]
    assert errs["euler"][1] < 0.6 * errs["euler"][0]  # first order
    for integ in ("rk2", "ralston"):  # second order: error / 4 when steps double
        assert errs[integ][1] < 0.3 * errs[integ][0]
        assert errs[integ][1] < 1e-3


def test_shoot_hamiltonian_conserved(rng):
    x0 = rng.normal(size=(6, 2))
    p0 = rng.normal(size=(6, 2))
    _, _, (tx, tp) = L.shoot(x0, p0, 1.0, n_steps=200, integrator="ralston", return_trajectory=True)
    H = [float((tp[t] * L.kernel_matvec(tx[t], tp[t], 1.0)).sum()) for t in (0, 100, 200)]
    np.testing.assert_allclose(H, H[0], rtol=1e-4)


@pytest.mark.parametrize("integrator", ["euler", "rk2"])
def test_flow_points_reproduces_control_points(rng, integrator):
    x0 = rng.normal(size=(6, 2))
    p0 = rng.normal(size=(6, 2))
    x1, _, (tx, tp) = L.shoot(x0, p0, 1.2, n_steps=5, integrator=integrator, return_trajectory=True)
    y = L.flow_points(tx, tp, x0, 1.2, integrator=integrator)
    np.testing.assert_allclose(y, x1, atol=1e-12)
    mom = rng.normal(size=(3, 6, 2))
    traj = L.flow(x0, mom, [1.0, 0.5], curves=[[0, 1, 2], [3, 4, 5]])
    y = L.flow_points(traj, mom, x0, [1.0, 0.5], curves=[[0, 1, 2], [3, 4, 5]])  # nearest curve = own curve
    np.testing.assert_allclose(y, traj[-1], atol=1e-12)


def test_jacobian_matches_finite_differences(rng):
    x0 = rng.normal(size=(5, 2))
    p0 = rng.normal(size=(5, 2))
    pts = rng.normal(size=(4, 2))
    for integrator in ("euler", "ralston"):
        _, _, (tx, tp) = L.shoot(x0, p0, 1.0, n_steps=6, integrator=integrator, return_trajectory=True)
        _, J = L.flow_points(tx, tp, pts, 1.0, integrator=integrator, return_jacobian=True)
        eps = 1e-6
        for k in range(2):
            d = np.zeros(2)
            d[k] = eps
            fd = (L.flow_points(tx, tp, pts + d, 1.0, integrator=integrator)
                  - L.flow_points(tx, tp, pts - d, 1.0, integrator=integrator)) / (2 * eps)
            np.testing.assert_allclose(J[:, :, k], fd, atol=1e-7)
        det = L.jacobian_determinant(tx, tp, pts, 1.0, integrator=integrator)
        np.testing.assert_allclose(det, np.linalg.det(J), rtol=1e-12)


def test_single_curve_flow_preserves_order_and_detj_positive(rng):
    # points on a line with momenta along it: the flow restricted to the line is a 1-D
    # diffeomorphism, so the order of the points never changes
    xs = np.sort(rng.uniform(0, 20, 15))
    x0 = np.c_[xs, np.zeros(15)]
    mom = np.zeros((10, 15, 2))
    mom[..., 0] = rng.normal(size=(10, 15)) * 3
    traj = L.flow(x0, mom, 4.0)
    assert (np.diff(traj[:, :, 0], axis=1) > 0).all()
    grid = np.stack(np.meshgrid(np.linspace(-5, 25, 9), np.linspace(-5, 5, 5)), -1).reshape(-1, 2)
    det = L.jacobian_determinant(traj, mom, grid, 4.0)
    assert (det > 0).all()
    # zero momenta: identity map, DetJ = 1
    np.testing.assert_allclose(L.jacobian_determinant(traj, np.zeros_like(mom), grid, 4.0), 1.0)


def test_deformation_grid_shapes_and_identity():
    x0 = np.array([[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]])
    traj = L.flow(x0, np.zeros((3, 2)), 2.0, n_steps=2)
    rows, cols = L.deformation_grid(traj, np.zeros((3, 2)), 2.0, bounds=(0, 4, 0, 3), n_lines=3, n_samples=5)
    assert rows.shape == (3, 5, 2) and cols.shape == (3, 5, 2)
    np.testing.assert_allclose(rows[0, :, 0], np.linspace(0, 4, 5))
    np.testing.assert_allclose(cols[:, 0, 0], [0, 2, 4])


def dense_currents(a, b, s, closed=False, varifold=False):
    ca, ta = segments(a, closed)
    cb, tb = segments(b, closed)

    def e(c1, t1, c2, t2):
        dot = t1 @ t2.T
        if varifold:
            dot = dot ** 2 / np.outer(np.linalg.norm(t1, axis=1), np.linalg.norm(t2, axis=1))
        return (kmat(c1, c2, s) * dot).sum()

    return e(ca, ta, ca, ta) + e(cb, tb, cb, tb) - 2 * e(ca, ta, cb, tb)


@pytest.mark.parametrize("closed", [False, True])
def test_currents_and_varifold_match_dense(rng, closed):
    a = rng.normal(size=(6, 2))
    b = rng.normal(size=(9, 2))
    assert L.currents_distance(a, b, 1.3, closed=closed) == pytest.approx(dense_currents(a, b, 1.3, closed), rel=1e-12)
    assert L.varifold_distance(a, b, 1.3, closed=closed) == pytest.approx(
        dense_currents(a, b, 1.3, closed, varifold=True), rel=1e-12)
    batch = L.currents_distance(np.stack([a, a]), np.stack([a, a + 1]), 1.3, closed=closed)
    assert batch.shape == (2,) and batch[0] == pytest.approx(0, abs=1e-12) and batch[1] > 0


def test_currents_invariants():
    t = np.linspace(0, np.pi, 9)
    curve = np.c_[10 * np.cos(t), 6 * np.sin(t)]
    assert L.currents_distance(curve, curve, 3.0) == pytest.approx(0.0, abs=1e-10)
    assert L.currents_distance(curve, curve, 3.0, closed=True) == pytest.approx(0.0, abs=1e-10)
    # reparametrisation: the same arc sampled at 33 points is close; a 1-pixel shift is much farther
    t2 = np.linspace(0, np.pi, 33)
    fine = np.c_[10 * np.cos(t2), 6 * np.sin(t2)]
    d_resampled = L.currents_distance(curve, fine, 3.0)
    d_shift = L.currents_distance(curve, curve + [0.0, 1.0], 3.0)
    assert d_resampled < 0.1 * d_shift
    # orientation: currents see a reversed curve, varifolds do not
    assert L.currents_distance(curve, curve[::-1], 3.0) > 100 * d_resampled
    assert L.varifold_distance(curve, curve[::-1], 3.0) == pytest.approx(0.0, abs=1e-10)
    # translation invariance of the distance between two curves
    assert L.currents_distance(curve + 5, fine + 5, 3.0) == pytest.approx(d_resampled, rel=1e-9)


def test_landmark_distance():
    a = np.zeros((3, 2))
    b = np.array([[3.0, 4.0], [0, 0], [0, 0]])
    assert L.landmark_distance(a, b) == pytest.approx(25 / 3)
    assert L.landmark_distance(a, b, squared=False) == pytest.approx(5 / 3)


def test_curve_sigmas_and_scale():
    mean = np.array([[0, 0], [10, 3], [20, 0], [5, 5], [5, 9]], float)
    rms = np.sqrt((100 + 4 + 0 + 1 + 100 + 1) / 3)  # centroid (10, 1)
    np.testing.assert_allclose(L.curve_sigmas(mean, [[0, 1, 2], [3, 4]]), [rms, 2])
    np.testing.assert_allclose(L.curve_sigmas(mean, [[0, 1, 2], [3, 4]], factor=0.5), [rms / 2, 1])
    # a one-point curve gets the median of the others
    np.testing.assert_allclose(L.curve_sigmas(mean, [[0, 1, 2], [3]]), [rms, rms])
    assert L.curve_scale([[0, 0], [6, 8]]) == pytest.approx(5.0)


@pytest.mark.parametrize("mode", ["flow", "constant", "geodesic"])
def test_register_recovers_a_flow(rng, mode):
    t = np.linspace(0, 1, 8)
    template = np.c_[40 * t, 10 * np.sin(3 * t)]
    template = np.r_[template, template[::-1] + [0, 15]]
    curves = [(list(range(8)), False), (list(range(8, 16)), False)]
    true_mom = np.tile([[2.0, 1.0]], (16, 1)) + rng.normal(size=(16, 2)) * 0.3
    target = L.flow(template, true_mom, L.curve_sigmas(template, curves), n_steps=5, curves=curves)[-1]
    res = L.register(template, target, curves=curves, mode=mode, n_steps=5, beta=0.1, max_iter=300)
    err0 = np.linalg.norm(template - target, axis=1).mean()
    err = np.linalg.norm(res.deformed - target, axis=1).mean()
    assert err < 0.05 * err0
    assert res.trajectory.shape == (6, 16, 2)
    np.testing.assert_allclose(res.trajectory[-1], res.deformed)
    assert (res.jacobian_determinant(template) > 0).all()


def test_register_sparse_target_and_gradient(rng):
    t = np.linspace(0, 1, 11)
    template = np.c_[30 * t, 5 * t ** 2]
    target_full = template * 1.1 + [3.0, -2.0]
    kept = np.arange(0, 11, 2)
    res = L.register(template, target_full[kept], curves=[list(range(11))], target_indices=kept, sigma_v=20.0,
                     n_steps=4, beta=0.1, gamma=1e-4, max_iter=200)
    hidden = np.setdiff1d(np.arange(11), kept)
    err_hidden = np.linalg.norm(res.deformed[hidden] - target_full[hidden], axis=1).mean()
    err_id = np.linalg.norm(template[hidden] - target_full[hidden], axis=1).mean()
    assert err_hidden < 0.1 * err_id
    # the same fit through flow_points of a kept-points-only template
    res2 = L.register(template[kept], target_full[kept], curves=[list(range(len(kept)))], n_steps=4, max_iter=200)
    moved = res2.flow_points(template[hidden], point_curves=np.zeros(len(hidden), int))
    assert np.linalg.norm(moved - target_full[hidden], axis=1).mean() < 0.1 * err_id


def test_register_energy_gradient_is_exact(rng):
    """The L-BFGS gradient (adjoint + energy terms) equals finite differences of the objective."""
    from flmcore._ext import lddmm_kernels as K
    import scipy.optimize

    template = rng.normal(size=(6, 2)) * 4
    target = template + rng.normal(size=(6, 2))
    captured = {}
    orig = scipy.optimize.minimize

    def spy(fun, x0, **kw):
        captured["fun"] = fun
        return orig(fun, x0, **{**kw, "options": {"maxiter": 1}})

    scipy.optimize.minimize = spy
    try:
        for mode in ("flow", "geodesic"):
            L.register(template, target, curves=[([0, 1, 2, 3, 4, 5], True)], mode=mode, gamma=0.3, n_steps=3)
            f = captured["fun"]
            theta = rng.normal(size=(3 if mode == "flow" else 1) * 12) * 0.5
            _, g = f(theta)
            eps = 1e-6
            fd = np.array([(f(theta + eps * e)[0] - f(theta - eps * e)[0]) / (2 * eps) for e in np.eye(theta.size)])
            np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)
    finally:
        scipy.optimize.minimize = orig
    assert K is not None


def test_thread_count_does_not_change_results(rng):
    x0 = rng.normal(size=(5, 9, 2))
    mom = rng.normal(size=(5, 3, 9, 2))
    a = L.flow(x0, mom, 1.0, num_threads=1)
    b = L.flow(x0, mom, 1.0, num_threads=2)
    assert np.array_equal(a, b)


def test_bad_input():
    x0 = np.zeros((3, 2))
    mom = np.ones((3, 2))
    with pytest.raises(ValueError, match="momenta.*NaN"):
        L.flow(x0, np.full((3, 2), np.nan), 1.0, n_steps=2)
    with pytest.raises(ValueError, match="sigma"):
        L.flow(x0, mom, 0.0, n_steps=2)
    with pytest.raises(ValueError, match="sigma"):
        L.flow(x0, mom, -1.0, n_steps=2)
    with pytest.raises(ValueError, match="sigma"):
        L.flow(x0, mom, [1.0, 2.0, 3.0], n_steps=2, curves=[[0, 1], [2]])
    with pytest.raises(ValueError, match="momenta must have shape"):
        L.flow(x0, np.ones((4, 2)), 1.0, n_steps=2)
    with pytest.raises(ValueError, match="n_steps is required"):
        L.flow(x0, mom, 1.0)
    with pytest.raises(ValueError, match="n_steps"):
        L.flow(x0, np.ones((2, 3, 2)), 1.0, n_steps=3)
    with pytest.raises(ValueError, match="x0"):
        L.flow(np.zeros((3, 3)), mom, 1.0, n_steps=2)
    with pytest.raises(ValueError, match="curves"):
        L.flow(x0, mom, 1.0, n_steps=2, curves=[])
    with pytest.raises(ValueError, match="curves\\[1\\]"):
        L.flow(x0, mom, 1.0, n_steps=2, curves=[[0, 1], []])
    with pytest.raises(ValueError, match="outside"):
        L.flow(x0, mom, 1.0, n_steps=2, curves=[[0, 5]])
    with pytest.raises(ValueError, match="kernel"):
        L.flow(x0, mom, 1.0, n_steps=2, kernel="laplace")
    with pytest.raises(ValueError, match="integrator"):
        L.shoot(x0, mom, 1.0, integrator="rk4")
    with pytest.raises(ValueError, match="p0"):
        L.shoot(x0, np.ones((2, 2)), 1.0)
    with pytest.raises(ValueError, match="curve_a"):
        L.currents_distance(np.zeros((1, 2)), np.zeros((3, 2)), 1.0)
    with pytest.raises(ValueError, match="sigma_w"):
        L.currents_distance(np.zeros((2, 2)), np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="target_indices"):
        L.register(x0, x0[:2], target_indices=[0, 0])
    with pytest.raises(ValueError, match="target must have 3 points"):
        L.register(x0, x0[:2])
    with pytest.raises(TypeError, match="string"):
        L.flow(x0, mom, 1.0, n_steps=2, curves="ibug68")


def test_core_does_not_import_torch():
    code = "import sys, flmcore.lddmm; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

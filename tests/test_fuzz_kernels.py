"""Property-based tests (hypothesis) of every compiled kernel against slow NumPy references.

The references below are written from the formulas in the papers / docstrings, *not* with
flmcore's helpers (no ``polyline_segments``, no ``kernel_matrix``): a bug shared by the code
under test and its reference would otherwise pass.  Examples are derandomised and few
(``max_examples`` <= 40 per property) so that the whole file runs in well under a minute.
"""
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from flmcore import lddmm, procrustes  # noqa: E402
from flmcore.sift import shape_indexed_sift  # noqa: E402
from flmcore.ssr import lars_lasso  # noqa: E402

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _points(n_min=2, n_max=9, lo=-20.0, hi=20.0, batch=None):
    shape = st.integers(n_min, n_max).map(lambda n: (n, 2) if batch is None else (batch, n, 2))
    return shape.flatmap(lambda s: hnp.arrays(np.float64, s, elements=st.floats(lo, hi, allow_nan=False,
                                                                              allow_infinity=False, width=64)))


def _spread_ok(x):
    return np.ptp(x[..., 0]) + np.ptp(x[..., 1]) > 1e-3


# ----------------------------------------------------------------------------- kernels, references
def k_ref(d2, sigma, kernel):
    u = d2 / sigma ** 2
    return np.exp(-u) if kernel == "gaussian" else 1.0 / (1.0 + u)


def dk_ref(d2, sigma, kernel):
    """d k / d u."""
    u = d2 / sigma ** 2
    return -np.exp(-u) if kernel == "gaussian" else -1.0 / (1.0 + u) ** 2


def matvec_ref(x, a, sigma, kernel, blocks=None):
    P = len(x)
    out = np.zeros_like(a)
    for i in range(P):
        for j in range(P):
            if blocks is not None and blocks[i] != blocks[j]:
                continue
            d2 = (x[i, 0] - x[j, 0]) ** 2 + (x[i, 1] - x[j, 1]) ** 2
            s = sigma if blocks is None else sigma[blocks[i]]
            out[i] += k_ref(d2, s, kernel) * a[j]
    return out


def ham_ref(x, p, sigma, kernel):
    """(dx/dt, dp/dt) of H = 1/2 sum_ij (p_i . p_j) k(|x_i - x_j|^2 / sigma^2)."""
    P = len(x)
    vx = np.zeros_like(x)
    vp = np.zeros_like(p)
    for i in range(P):
        for j in range(P):
            d = x[i] - x[j]
            d2 = d @ d
            vx[i] += k_ref(d2, sigma, kernel) * p[j]
            vp[i] -= (p[i] @ p[j]) * dk_ref(d2, sigma, kernel) * 2.0 * d / sigma ** 2
    return vx, vp


def segments_ref(q, closed):
    """Segment centres and tangents of a polyline, written out point by point."""
    n = len(q)
    pairs = [(k, k + 1) for k in range(n - 1)]
    if closed and n > 2:
        pairs.append((n - 1, 0))
    c = np.array([[(q[a][0] + q[b][0]) / 2, (q[a][1] + q[b][1]) / 2] for a, b in pairs])
    t = np.array([[q[b][0] - q[a][0], q[b][1] - q[a][1]] for a, b in pairs])
    return c, t


def curve_energy_ref(c1, t1, c2, t2, sigma, kernel, varifold):
    e = 0.0
    for i in range(len(c1)):
        for j in range(len(c2)):
            d2 = ((c1[i] - c2[j]) ** 2).sum()
            dot = t1[i] @ t2[j]
            if varifold:
                n = np.linalg.norm(t1[i]) * np.linalg.norm(t2[j])
                dot = dot * dot / n if n > 0 else 0.0
            e += k_ref(d2, sigma, kernel) * dot
    return e


# ----------------------------------------------------------------------------- LDDMM kernels
@FUZZ
@given(x=_points(), seed=st.integers(0, 2 ** 16), sigma=st.floats(0.3, 30.0),
       kernel=st.sampled_from(["gaussian", "cauchy"]))
def test_kernel_matvec_matches_dense_reference(x, seed, sigma, kernel):
    a = np.random.default_rng(seed).normal(size=x.shape)
    np.testing.assert_allclose(lddmm.kernel_matvec(x, a, sigma, kernel=kernel), matvec_ref(x, a, sigma, kernel),
                               rtol=1e-10, atol=1e-10)


@FUZZ
@given(x=_points(n_min=4), seed=st.integers(0, 2 ** 16), s1=st.floats(0.5, 10.0), s2=st.floats(0.5, 10.0),
       split=st.integers(1, 3), kernel=st.sampled_from(["gaussian", "cauchy"]))
def test_per_curve_blocks_match_reference(x, seed, s1, s2, split, kernel):
    P = len(x)
    perm = np.random.default_rng(seed).permutation(P)
    curves = [perm[:split].tolist(), perm[split:].tolist()]
    blocks = np.empty(P, int)
    blocks[perm[:split]], blocks[perm[split:]] = 0, 1
    a = np.random.default_rng(seed + 1).normal(size=x.shape)
    got = lddmm.kernel_matvec(x, a, [s1, s2], curves=curves, kernel=kernel)
    np.testing.assert_allclose(got, matvec_ref(x, a, [s1, s2], kernel, blocks), rtol=1e-10, atol=1e-10)


@FUZZ
@given(x=_points(), seed=st.integers(0, 2 ** 16), sigma=st.floats(0.5, 20.0), T=st.integers(1, 4),
       varying=st.booleans(), kernel=st.sampled_from(["gaussian", "cauchy"]))
def test_flow_matches_euler_reference(x, seed, sigma, T, varying, kernel):
    rng = np.random.default_rng(seed)
    mom = rng.normal(size=(T,) + x.shape) if varying else rng.normal(size=x.shape)
    traj = lddmm.flow(x, mom, sigma, n_steps=None if varying else T, kernel=kernel)
    y = x.copy()
    ref = [y.copy()]
    for t in range(T):
        y = y + matvec_ref(y, mom[t] if varying else mom, sigma, kernel) / T
        ref.append(y.copy())
    np.testing.assert_allclose(traj, np.stack(ref), rtol=1e-9, atol=1e-9)
    # every thread count gives the same bits
    np.testing.assert_array_equal(lddmm.flow(x[None].repeat(3, 0), np.broadcast_to(mom, (3,) + mom.shape), sigma,
                                             n_steps=None if varying else T, kernel=kernel, num_threads=2)[1], traj)


@FUZZ
@given(x=_points(), seed=st.integers(0, 2 ** 16), sigma=st.floats(0.5, 20.0), T=st.integers(1, 4),
       integrator=st.sampled_from(["euler", "rk2", "ralston"]), kernel=st.sampled_from(["gaussian", "cauchy"]))
def test_shoot_matches_hamiltonian_reference(x, seed, sigma, T, integrator, kernel):
    p = np.random.default_rng(seed).normal(size=x.shape)
    c, w1, w2 = {"euler": (0.0, 1.0, 0.0), "rk2": (0.5, 0.0, 1.0), "ralston": (2 / 3, 0.25, 0.75)}[integrator]
    xr, pr = x.copy(), p.copy()
    h = 1.0 / T
    for _ in range(T):
        k1x, k1p = ham_ref(xr, pr, sigma, kernel)
        if c == 0:
            xr, pr = xr + h * k1x, pr + h * k1p
        else:
            k2x, k2p = ham_ref(xr + c * h * k1x, pr + c * h * k1p, sigma, kernel)
            xr, pr = xr + h * (w1 * k1x + w2 * k2x), pr + h * (w1 * k1p + w2 * k2p)
    x1, p1 = lddmm.shoot(x, p, sigma, n_steps=T, integrator=integrator, kernel=kernel)
    np.testing.assert_allclose(x1, xr, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(p1, pr, rtol=1e-9, atol=1e-9)


@FUZZ
@given(x=_points(), pts=_points(n_min=1, n_max=4), seed=st.integers(0, 2 ** 16), sigma=st.floats(0.5, 20.0),
       T=st.integers(1, 3), kernel=st.sampled_from(["gaussian", "cauchy"]))
def test_flow_points_matches_reference(x, pts, seed, sigma, T, kernel):
    mom = np.random.default_rng(seed).normal(size=(T,) + x.shape)
    traj = lddmm.flow(x, mom, sigma, kernel=kernel)
    y = pts.copy()
    for t in range(T):
        v = np.zeros_like(y)
        for m in range(len(y)):
            for j in range(len(x)):
                v[m] += k_ref(((y[m] - traj[t, j]) ** 2).sum(), sigma, kernel) * mom[t, j]
        y = y + v / T
    np.testing.assert_allclose(lddmm.flow_points(traj, mom, pts, sigma, kernel=kernel), y, rtol=1e-9, atol=1e-9)


@FUZZ
@given(a=_points(n_min=2, n_max=7), b=_points(n_min=2, n_max=7), sigma=st.floats(0.5, 20.0),
       closed=st.booleans(), kernel=st.sampled_from(["gaussian", "cauchy"]), varifold=st.booleans())
def test_curve_distances_match_reference(a, b, sigma, closed, kernel, varifold):
    ca, ta = segments_ref(a, closed)
    cb, tb = segments_ref(b, closed)
    ref = (curve_energy_ref(ca, ta, ca, ta, sigma, kernel, varifold) + curve_energy_ref(cb, tb, cb, tb, sigma, kernel,
                                                                                        varifold)
           - 2 * curve_energy_ref(ca, ta, cb, tb, sigma, kernel, varifold))
    f = lddmm.varifold_distance if varifold else lddmm.currents_distance
    got = f(a, b, sigma, closed=closed, kernel=kernel)
    scale = 1.0 + curve_energy_ref(ca, ta, ca, ta, sigma, kernel, varifold) + \
        curve_energy_ref(cb, tb, cb, tb, sigma, kernel, varifold)
    assert abs(got - ref) <= 1e-9 * scale
    if not varifold and len(a) > 2:   # currents see orientation: a reversed curve is far unless degenerate
        rev = f(a, a[::-1], sigma, closed=closed, kernel=kernel)
        np.testing.assert_allclose(rev, 4 * curve_energy_ref(ca, ta, ca, ta, sigma, kernel, False), rtol=1e-9,
                                   atol=1e-9)


# ----------------------------------------------------------------------------- similarity kernel
def umeyama_ref(src, dst, w, scale=True):
    """Weighted least-squares similarity (Umeyama 1991), by SVD: returns s, R, t."""
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    C = (b * w[:, None]).T @ a
    U, S, Vt = np.linalg.svd(C)
    D = np.diag([1.0, np.sign(np.linalg.det(U @ Vt)) or 1.0])
    R = U @ D @ Vt
    var = (w * (a ** 2).sum(1)).sum()
    s = (S * np.diag(D)).sum() / var if scale else 1.0
    return s, R, md - s * R @ ms


@FUZZ
@given(src=_points(n_min=3, n_max=10), seed=st.integers(0, 2 ** 16), scale=st.booleans(),
       weighted=st.booleans())
def test_align_matches_umeyama_reference(src, seed, scale, weighted):
    if not _spread_ok(src):
        return
    rng = np.random.default_rng(seed)
    dst = src @ np.array([[0.6, -0.8], [0.8, 0.6]]).T * 1.7 + 3.0 + rng.normal(scale=0.5, size=src.shape)
    if not _spread_ok(dst):
        return
    w = rng.uniform(0.2, 2.0, len(src)) if weighted else np.ones(len(src))
    s, R, t = umeyama_ref(src, dst, w, scale)
    out, T = procrustes.align(src, dst, scale=scale, weights=w if weighted else None)
    np.testing.assert_allclose(T.rotation, R, atol=1e-8)
    np.testing.assert_allclose(T.scale, s, rtol=1e-8)
    np.testing.assert_allclose(out, s * src @ R.T + t, atol=1e-7)


@FUZZ
@given(shapes=_points(n_min=3, n_max=8, batch=4), seed=st.integers(0, 2 ** 16))
def test_numpy_fallback_equals_compiled_similarity_kernel(shapes, seed):
    """The pure-NumPy fallback (used when the Cython kernel is not built) equals the kernel."""
    if not all(_spread_ok(s) for s in shapes):
        return
    w = np.random.default_rng(seed).uniform(0.1, 1.0, shapes.shape[1])
    a1, T1 = procrustes.align(shapes, shapes[0] * 2 + 1, weights=w)
    g1 = procrustes.generalized_procrustes(shapes, weights=w)
    saved = procrustes._kernel
    procrustes._kernel = None
    try:
        a2, T2 = procrustes.align(shapes, shapes[0] * 2 + 1, weights=w)
        g2 = procrustes.generalized_procrustes(shapes, weights=w)
    finally:
        procrustes._kernel = saved
    np.testing.assert_allclose(a1, a2, atol=1e-9)
    np.testing.assert_allclose(T1.scale, T2.scale, rtol=1e-9)
    np.testing.assert_allclose(g1.mean, g2.mean, atol=1e-8)


# ----------------------------------------------------------------------------- SIFT kernel
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(seed=st.integers(0, 2 ** 16), x=st.floats(-10.0, 50.0), y=st.floats(-10.0, 50.0),
       window=st.floats(2.0, 40.0), smooth=st.sampled_from([0.0, 1.0, 1.52]))
def test_sift_upright_and_rotated_paths_agree(seed, x, y, window, smooth):
    """Angle 0 runs the separable path, angle 2*pi the rotated scatter: same frame, same descriptor."""
    img = np.random.default_rng(seed).random((40, 44)).astype(np.float32)
    up = shape_indexed_sift(img, [[x, y]], window=window, smooth=smooth)
    rot = shape_indexed_sift(img, [[x, y]], window=window, smooth=smooth, orientation=2 * np.pi)
    assert np.isfinite(up).all() and np.isfinite(rot).all()
    n = np.linalg.norm(up)
    assert n == 0 or abs(n - 1) < 1e-5
    assert (up >= 0).all()
    np.testing.assert_allclose(up, rot, atol=2e-4)
    # several threads and a batch give the same bits
    b = shape_indexed_sift(np.stack([img] * 3), np.full((3, 1, 2), [x, y]), window=window, smooth=smooth,
                           num_threads=2)
    np.testing.assert_array_equal(b[1, 0], up[0])


# ----------------------------------------------------------------------------- LARS kernel (Numba)
@FUZZ
@given(seed=st.integers(0, 2 ** 16), n=st.integers(6, 15), p=st.integers(2, 6), frac=st.floats(0.05, 0.95),
       positive=st.booleans())
def test_lars_lasso_satisfies_kkt(seed, n, p, frac, positive):
    """min ||Xh - y||^2 s.t. ||h||_1 <= tau: at the solution the correlations c = X^T (y - X h) have
    |c_j| = lambda on the support (with the sign of h_j) and |c_j| <= lambda elsewhere."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    y = X @ rng.normal(size=p) + 0.1 * rng.normal(size=n)
    if positive:
        ls = lars_lasso(X, y, np.inf, positive=True)
    else:
        ls = np.linalg.lstsq(X, y, rcond=None)[0]
    tau = frac * np.abs(ls).sum()
    if tau < 1e-6:
        return
    h = lars_lasso(X, y, tau, positive=positive)
    assert abs(np.abs(h).sum() - tau) <= 1e-7 * max(1.0, tau)
    c = X.T @ (y - X @ h)
    act = np.abs(h) > 1e-10
    lam = np.abs(c[act]).max()
    np.testing.assert_allclose(np.abs(c[act]), lam, rtol=1e-6, atol=1e-8)
    assert (np.sign(c[act]) == np.sign(h[act])).all()
    if positive:
        assert (h >= -1e-12).all() and (c[~act] <= lam * (1 + 1e-6) + 1e-8).all()
    else:
        assert (np.abs(c[~act]) <= lam * (1 + 1e-6) + 1e-8).all()

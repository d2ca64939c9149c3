"""Tests of flmcore.anisotropic (Rayhan et al. eq. 2-6) on hand examples and real 68-point shapes."""
import numpy as np
import pytest

from flmcore import anisotropic as an
from flmcore.schemes import Curve, Scheme, get_scheme


@pytest.fixture(scope="module")
def shapes68(shared_data):
    d = shared_data / "aflw_3ddfa_multischeme"
    return np.load(d / "AFLW2000-3D-Reannotated.pts68.npy").astype(np.float64).transpose(0, 2, 1)[:40].copy()


@pytest.fixture
def tiny():
    """Open curve 0-1-2 (ends are corners) and closed triangle 3-4-5; point 6 isolated."""
    sch = Scheme("tiny", 7, (Curve("open", (0, 1, 2), False), Curve("loop", (3, 4, 5), True)),
                 (0, 2, 6), (0, 2), (0,), (2,))
    z = np.array([[0.0, 0.0], [3.0, 0.0], [3.0, 4.0], [10.0, 10.0], [12.0, 10.0], [10.0, 13.0], [5.0, 5.0]])
    return sch, z


def rot(th):
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


def test_hand_computed_example(tiny):
    sch, z = tiny
    t = an.tangents(z, sch)
    np.testing.assert_allclose(t[0], [1.0, 0.0])               # eq. 5, first end
    np.testing.assert_allclose(t[1], [0.6, 0.8])               # eq. 4: (z2 - z0) / |z2 - z0| = (3, 4) / 5
    np.testing.assert_allclose(t[2], [0.0, 1.0])               # eq. 5, last end
    np.testing.assert_allclose(t[3], np.array([2.0, -3.0]) / np.sqrt(13))   # closed: (z4 - z5) wraps
    np.testing.assert_allclose(t[6], [0.0, 0.0])               # isolated point: no tangent
    W = an.weight_matrices(z, sch, a=5.0, b=3.0)
    # W1 = t t^T / 25 + (I - t t^T) / 9 with t = (0.6, 0.8), written out by hand
    np.testing.assert_allclose(W[1], [[0.36 / 25 + 0.64 / 9, 0.48 / 25 - 0.48 / 9],
                                      [0.48 / 25 - 0.48 / 9, 0.64 / 25 + 0.36 / 9]], rtol=1e-12)
    for k in (0, 2, 6):
        np.testing.assert_array_equal(W[k], np.eye(2))        # corners / isolated: identity (eq. 6)
    S = an.weight_matrices(z, sch, covariance=True)
    np.testing.assert_allclose(np.einsum("pij,pjk->pik", W, S), np.broadcast_to(np.eye(2), (7, 2, 2)), atol=1e-12)
    # adaptive: turning angle at point 1 is 90 degrees -> s = 1/2 -> (a, b) = (sqrt 5, sqrt 3)
    th = an.turning_angles(z, sch)
    assert th[1] == pytest.approx(np.pi / 2)
    e1, e2 = z[4] - z[3], z[5] - z[4]
    assert th[4] == pytest.approx(np.arccos(e1 @ e2 / np.linalg.norm(e1) / np.linalg.norm(e2)))
    Wa = an.weight_matrices(z, sch, adaptive=True)
    tt = np.outer(t[1], t[1])
    np.testing.assert_allclose(Wa[1], tt / 5.0 + (np.eye(2) - tt) / 3.0, rtol=1e-12)


def test_symmetry_eigenpairs_corners(shapes68):
    sch = get_scheme("ibug68")
    a, b = 5.0, 3.0
    W = an.weight_matrices(shapes68, sch, a, b)
    t = an.tangents(shapes68, sch)
    assert W.shape == (40, 68, 2, 2)
    np.testing.assert_allclose(W, np.swapaxes(W, -1, -2), atol=0)
    curve = np.setdiff1d(np.arange(68), sch.corners)
    n = np.stack([-t[..., 1], t[..., 0]], -1)
    Wt = np.einsum("bpij,bpj->bpi", W, t)[:, curve]
    Wn = np.einsum("bpij,bpj->bpi", W, n)[:, curve]
    np.testing.assert_allclose(Wt, t[:, curve] / a ** 2, atol=1e-14)   # eigenpair along the tangent
    np.testing.assert_allclose(Wn, n[:, curve] / b ** 2, atol=1e-14)   # and across it
    tn = np.linalg.norm(t[:, curve], axis=-1)
    assert np.mean(np.abs(tn - 1) < 1e-12) > 0.99 and np.all((np.abs(tn - 1) < 1e-12) | (tn == 0))   # 0: 3 coincident points
    # where the neighbours coincide (integer re-annotations of profile faces) eq. 5's one-sided rule is used
    z = shapes68[1].copy()
    z[24] = z[22]
    t1 = an.tangents(z, sch)[23]
    np.testing.assert_allclose(t1, (z[24] - z[23]) / np.linalg.norm(z[24] - z[23]))
    z[23] = z[22]
    assert np.array_equal(an.tangents(z, sch)[23], [0.0, 0.0])           # fully collapsed: no tangent
    np.testing.assert_array_equal(an.weight_matrices(z, sch)[23], np.eye(2))
    np.testing.assert_array_equal(W[:, list(sch.corners)], np.broadcast_to(np.eye(2), (40, len(sch.corners), 2, 2)))
    # batched == one at a time
    np.testing.assert_allclose(W[7], an.weight_matrices(shapes68[7], sch, a, b))
    # closed eye curve wraps: tangent at 37 from 36 -> 38, at 41 from 40 -> 36
    z = shapes68[0]
    d = z[36] - z[40]
    np.testing.assert_allclose(t[0, 41], d / np.linalg.norm(d))


@pytest.mark.parametrize("adaptive", [False, True])
def test_rotation_equivariance(shapes68, rng, adaptive):
    sch = get_scheme("ibug68")
    R = rot(rng.uniform(-np.pi, np.pi))
    moved = 1.7 * shapes68 @ R.T + rng.normal(size=2) * 50
    W0 = an.weight_matrices(shapes68, sch, adaptive=adaptive)
    W1 = an.weight_matrices(moved, sch, adaptive=adaptive)
    np.testing.assert_allclose(W1, R @ W0 @ R.T, atol=1e-12)


def test_per_point_parameters_and_adaptive_range(shapes68):
    sch = get_scheme("ibug68")
    a = np.full(68, 5.0)
    a[20] = 8.0
    W = an.weight_matrices(shapes68[0], sch, a=a)
    t = an.tangents(shapes68[0], sch)[20]
    assert t @ W[20] @ t == pytest.approx(1 / 64)
    th = an.turning_angles(shapes68, sch)
    assert (th >= 0).all() and (th <= np.pi).all()
    Wa = an.weight_matrices(shapes68, sch, adaptive=True)
    ev = np.linalg.eigvalsh(Wa)
    assert (ev >= 1 / 25 - 1e-12).all() and (ev <= 1 + 1e-12).all()   # between the curve and corner weights


def test_mahalanobis_cost(shapes68, rng):
    sch = get_scheme("ibug68")
    z = shapes68[:5]
    x = z + rng.normal(size=z.shape) * 3
    W = an.weight_matrices(z, sch)
    q = an.mahalanobis_cost(x, z, W)
    ref = np.array([sum((x[b, i] - z[b, i]) @ W[b, i] @ (x[b, i] - z[b, i]) for i in range(68)) for b in range(5)])
    np.testing.assert_allclose(q, ref, rtol=1e-12)
    # decomposition along / across the tangent: (d.t)^2 / a^2 + (d.n)^2 / b^2 on curve points
    t = an.tangents(z, sch)
    n = np.stack([-t[..., 1], t[..., 0]], -1)
    d = x - z
    per = an.mahalanobis_cost(x, z, W, per_point=True)
    curve = np.setdiff1d(np.arange(68), sch.corners)
    exp = np.sum(d * t, -1) ** 2 / 25 + np.sum(d * n, -1) ** 2 / 9
    exp = np.where(np.linalg.norm(t, axis=-1) > 0, exp, (d ** 2).sum(-1))   # no tangent at all: W = I
    np.testing.assert_allclose(per[:, curve], exp[:, curve], rtol=1e-10)
    # identity weights give eq. (1)
    np.testing.assert_allclose(an.mahalanobis_cost(x, z, np.eye(2)[None].repeat(68, 0)), ((x - z) ** 2).sum((1, 2)))


def test_nan_propagates_locally(shapes68):
    z = shapes68[0].copy()
    z[5] = np.nan
    W = an.weight_matrices(z, "ibug68")
    assert np.isnan(W[[4, 6]]).all()
    assert np.isfinite(W[np.setdiff1d(np.arange(68), [4, 5, 6])]).all()


def test_bad_inputs(shapes68):
    z = shapes68[0]
    with pytest.raises(ValueError, match="68 points"):
        an.weight_matrices(z[:60], "ibug68")
    with pytest.raises(ValueError, match="a must be > 0"):
        an.weight_matrices(z, "ibug68", a=0.0)
    with pytest.raises(ValueError, match=r"b must be a number or have shape \(68,\)"):
        an.weight_matrices(z, "ibug68", b=np.ones(3))
    with pytest.raises(ValueError, match="ibug68"):
        an.tangents(z, "ibug_68")
    with pytest.raises(TypeError, match="Scheme"):
        an.tangents(z, 68)
    with pytest.raises(ValueError, match="same number of points"):
        an.mahalanobis_cost(z, z, np.zeros((60, 2, 2)))
    with pytest.raises(ValueError, match="broadcast"):
        an.mahalanobis_cost(np.stack([z] * 3), np.stack([z] * 3), np.zeros((2, 68, 2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        an.mahalanobis_cost(z * np.nan, z, np.zeros((68, 2, 2)))

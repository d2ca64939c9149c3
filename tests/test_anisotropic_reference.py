"""flmcore.anisotropic against a point-by-point transcription of Rayhan, Galata & Cootes (BMVC 2020).

The reference is written from the paper (eq. 3-6) and the module notes only, with plain
Python loops over points: the tangent of eq. 4 / 5 from the first curve that lists a point, the
covariance ``S = R diag(a^2, b^2) R^T`` in the frame ``R = [t, n]`` of the tangent and normal
(eq. 3), the weights ``W = S^{-1}`` (eq. 6) by a matrix inverse, unit matrices at corners and where
the tangent is undefined, and the curvature-adaptive ``(a^s, b^s)``, ``s = 1 - theta / pi``, with
the turning angle taken from ``arccos`` of the normalised edge vectors.  None of the library's
helpers is used to build the expected values (``tests/_anisotropic_reference.py``, shared with the
torch loss tests).
"""
import numpy as np
import pytest
from _anisotropic_reference import _angle, ref_matrices, ref_tangent, ref_turning_angle

from flmcore import anisotropic as an
from flmcore.schemes import Curve, Scheme, get_scheme

ALL_SCHEMES = ["ibug68", "wflw98", "cofw29", "aflw19", "aflw21", "helen_zhou29", "lapa106", "mtfl5"]


def random_shapes(rng, P, B=3):
    return rng.uniform(0, 100, size=(B, P, 2))


# ----------------------------------------------------------------------------- schemes built here
def edge_scheme():
    """Curves of every length and kind, an overlap (point 9 on two curves) and an isolated non-corner."""
    curves = (
        Curve("single", (0,), False),             # one point: no tangent
        Curve("pair_open", (1, 2), False),        # two points, open: both ends use z2 - z1
        Curve("pair_closed", (3, 4), True),       # two points, closed: neighbours coincide
        Curve("tri_closed", (5, 6, 7), True),
        Curve("open4", (8, 9, 10, 11), False),
        Curve("loop5", (12, 13, 9, 14, 15), True),   # 9 is listed by open4 first
        Curve("open3", (16, 17, 18), False),
    )
    return Scheme("edge", 20, curves, (16,), (0, 1), (0,), (1,))   # 19: on no curve, not a corner


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("name", ALL_SCHEMES)
def test_bundled_schemes_against_reference(name, rng):
    sch = get_scheme(name)
    z = random_shapes(rng, sch.n_points)
    a = rng.uniform(1.5, 9.0, size=sch.n_points)
    b = rng.uniform(1.5, 9.0, size=sch.n_points)
    t = an.tangents(z, sch)
    th = an.turning_angles(z, sch)
    W = an.weight_matrices(z, name, a=5.0, b=3.0)
    Wp = an.weight_matrices(z, sch, a=a, b=b)
    Wad = an.weight_matrices(z, sch, a=a, b=b, adaptive=True)
    Sad = an.weight_matrices(z, sch, a=a, b=b, adaptive=True, covariance=True)
    assert W.shape == (3, sch.n_points, 2, 2) and th.shape == (3, sch.n_points)
    for f in range(z.shape[0]):
        np.testing.assert_allclose(t[f], [ref_tangent(z[f], sch, i) for i in range(sch.n_points)],
                                   rtol=0, atol=1e-13)
        np.testing.assert_allclose(th[f], [ref_turning_angle(z[f], sch, i) for i in range(sch.n_points)],
                                   rtol=0, atol=1e-7)
        np.testing.assert_allclose(W[f], ref_matrices(z[f], sch), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(Wp[f], ref_matrices(z[f], sch, a, b), rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(Wad[f], ref_matrices(z[f], sch, a, b, adaptive=True), rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(Sad[f], ref_matrices(z[f], sch, a, b, adaptive=True, covariance=True),
                                   rtol=1e-6, atol=1e-10)
        # one face at a time == batched
        np.testing.assert_array_equal(an.weight_matrices(z[f], sch, a=a, b=b, adaptive=True), Wad[f])


def test_edge_scheme_every_curve_kind(rng):
    sch = edge_scheme()
    z = random_shapes(rng, 20, B=4)
    a = rng.uniform(2.0, 6.0, size=20)
    b = rng.uniform(0.5, 2.0, size=20)
    for adaptive in (False, True):
        for cov in (False, True):
            got = an.weight_matrices(z, sch, a=a, b=b, adaptive=adaptive, covariance=cov)
            for f in range(4):
                np.testing.assert_allclose(got[f], ref_matrices(z[f], sch, a, b, adaptive, cov),
                                           rtol=1e-6, atol=1e-12)
    t = an.tangents(z, sch)
    th = an.turning_angles(z, sch)
    for f in range(4):
        np.testing.assert_allclose(t[f], [ref_tangent(z[f], sch, i) for i in range(20)], atol=1e-13)
        np.testing.assert_allclose(th[f], [ref_turning_angle(z[f], sch, i) for i in range(20)], atol=1e-7)
    # spelled out: the two points of an open pair share the direction z2 - z1
    d = z[0, 2] - z[0, 1]
    np.testing.assert_allclose(t[0, [1, 2]], [d / np.linalg.norm(d)] * 2, atol=1e-14)
    # closed pair: both neighbours of 3 are 4, so the one-sided difference z4 - z3 (and z3 - z4 at 4)
    d = z[0, 4] - z[0, 3]
    np.testing.assert_allclose(t[0, [3, 4]], [d / np.linalg.norm(d), -d / np.linalg.norm(d)], atol=1e-14)
    # single-point curve, unlisted point: no tangent, identity, zero angle; curves of < 3 points: angle 0
    for i in (0, 19):
        assert np.array_equal(t[:, i], np.zeros((4, 2)))
        assert np.array_equal(an.weight_matrices(z, sch, adaptive=True)[:, i], np.broadcast_to(np.eye(2), (4, 2, 2)))
    assert np.array_equal(th[:, [0, 1, 2, 3, 4, 19]], np.zeros((4, 6)))
    # point 9 belongs to open4 (listed first): its tangent is z10 - z8, its angle the one at 9 on open4
    d = z[1, 10] - z[1, 8]
    np.testing.assert_allclose(t[1, 9], d / np.linalg.norm(d), atol=1e-14)
    assert th[1, 9] == pytest.approx(_angle(z[1, 9] - z[1, 8], z[1, 10] - z[1, 9]), abs=1e-7)
    # open ends borrow the inner neighbour's angle; closed triangle wraps
    assert th[2, 8] == pytest.approx(th[2, 9]) and th[2, 11] == pytest.approx(th[2, 10])
    assert th[2, 16] == th[2, 17] == th[2, 18]
    assert th[3, 5] == pytest.approx(_angle(z[3, 5] - z[3, 7], z[3, 6] - z[3, 5]), abs=1e-7)
    assert th[3, 7] == pytest.approx(_angle(z[3, 7] - z[3, 6], z[3, 5] - z[3, 7]), abs=1e-7)


def test_hand_computed_adaptive_values():
    """Right angle -> s = 1/2 -> (sqrt a, sqrt b); straight run -> (a, b); reversal -> identity."""
    sch = Scheme("line", 4, (Curve("c", (0, 1, 2, 3), False),), (), (0, 3), (0,), (3,))
    z = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 3.0], [2.0, 7.0]])   # 90 degrees at 1, straight at 2
    th = an.turning_angles(z, sch)
    np.testing.assert_allclose(th, [np.pi / 2, np.pi / 2, 0.0, 0.0], atol=1e-15)
    W = an.weight_matrices(z, sch, a=16.0, b=4.0, adaptive=True)
    # point 0: tangent (1, 0), s = 1/2 -> a = 4, b = 2
    np.testing.assert_allclose(W[0], [[1 / 16, 0.0], [0.0, 1 / 4]], rtol=1e-12)
    # point 1: tangent (z2 - z0) / |.| = (2, 3) / sqrt 13, a = 4, b = 2
    t = np.array([2.0, 3.0]) / np.sqrt(13)
    tt = np.outer(t, t)
    np.testing.assert_allclose(W[1], tt / 16 + (np.eye(2) - tt) / 4, rtol=1e-12)
    # points 2, 3: vertical tangent, s = 1 -> a = 16, b = 4
    for i in (2, 3):
        np.testing.assert_allclose(W[i], [[1 / 16, 0.0], [0.0, 1 / 256]], rtol=1e-12)
    S = an.weight_matrices(z, sch, a=16.0, b=4.0, adaptive=True, covariance=True)
    np.testing.assert_allclose(S[0], [[16.0, 0.0], [0.0, 4.0]], rtol=1e-12)
    np.testing.assert_allclose(S[2], [[16.0, 0.0], [0.0, 256.0]], rtol=1e-12)
    # a full reversal (theta = pi) tends to the corner weight (1, 1)
    z2 = np.array([[0.0, 0.0], [5.0, 0.0], [1.0, 0.0], [9.0, 1.0]])
    assert an.turning_angles(z2, sch)[1] == pytest.approx(np.pi)
    np.testing.assert_allclose(an.weight_matrices(z2, sch, a=16.0, b=4.0, adaptive=True)[1], np.eye(2), atol=1e-12)


def test_degenerate_neighbours_one_sided_rule(rng):
    sch = get_scheme("ibug68")
    z = rng.uniform(0, 100, size=(68, 2))
    z[9] = z[7]                       # jaw: neighbours of 8 coincide -> t8 = (z9 - z8) / |.|
    z[28] = z[27]                     # nose bridge 27-30: the open end 27 has d = z28 - z27 = 0: no tangent
    z[20] = z[18]
    z[19] = z[18]                     # brow 17-21: 18 = 19 = 20, so at 19 every difference vanishes
    z[41] = z[37]                     # left eye loop 36..41: neighbours of the corner 36 coincide
    z[50] = z[51] = z[52]             # outer lip loop: 51 has no tangent, 50 and 52 keep theirs
    t = an.tangents(z, sch)
    W = an.weight_matrices(z, sch, a=[4.0] * 68, b=np.full(68, 2.0), adaptive=True)
    for i in range(68):
        np.testing.assert_allclose(t[i], ref_tangent(z, sch, i), atol=1e-13, err_msg=str(i))
    np.testing.assert_allclose(W, ref_matrices(z, sch, 4.0, 2.0, adaptive=True), rtol=1e-6, atol=1e-12)
    d = z[9] - z[8]
    np.testing.assert_allclose(t[8], d / np.linalg.norm(d), atol=1e-14)
    for i in (19, 27, 51):
        assert np.array_equal(t[i], [0.0, 0.0]) and np.array_equal(W[i], np.eye(2))
    d = z[51] - z[49]
    np.testing.assert_allclose(t[50], d / np.linalg.norm(d), atol=1e-14)
    np.testing.assert_array_equal(W[36], np.eye(2))


def test_real_shapes_against_reference(shared_data):
    d = shared_data / "aflw_3ddfa_multischeme"
    shapes = np.load(d / "AFLW2000-3D-Reannotated.pts68.npy").astype(np.float64).transpose(0, 2, 1)[:12].copy()
    sch = get_scheme("ibug68")
    a = np.linspace(2.0, 8.0, 68)
    b = np.linspace(5.0, 1.0, 68)
    for adaptive in (False, True):
        got = an.weight_matrices(shapes, sch, a=a, b=b, adaptive=adaptive)
        for f in range(shapes.shape[0]):
            np.testing.assert_allclose(got[f], ref_matrices(shapes[f], sch, a, b, adaptive), rtol=1e-6, atol=1e-12)


def test_nan_targets_against_reference(rng):
    sch = get_scheme("wflw98")
    z = rng.uniform(0, 100, size=(98, 2))
    z[[3, 40, 70]] = np.nan
    t = an.tangents(z, sch)
    W = an.weight_matrices(z, sch)
    for i in range(98):
        np.testing.assert_array_equal(np.isnan(t[i]), np.isnan(ref_tangent(z, sch, i)))
    ref = ref_matrices(z, sch)
    np.testing.assert_array_equal(np.isnan(W), np.isnan(ref))
    np.testing.assert_allclose(W[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("which", ["a", "b"])
def test_per_point_zero_or_negative_parameter_rejected(which, rng):
    z = rng.uniform(0, 100, size=(68, 2))
    for bad in (0.0, -1.0):
        v = np.full(68, 3.0)
        v[17] = bad
        with pytest.raises(ValueError, match=f"{which} must be > 0"):
            an.weight_matrices(z, "ibug68", **{which: v})
        v = np.full(68, 3.0)
        v[36] = bad                    # even at a corner, where the value is not used
        with pytest.raises(ValueError, match=f"{which} must be > 0"):
            an.weight_matrices(z, "ibug68", **{which: v}, adaptive=True)
        with pytest.raises(ValueError, match=which):
            an.weight_matrices(z, "ibug68", **{which: bad})
    with pytest.raises(ValueError, match=rf"{which} must be a number or have shape \(68,\)"):
        an.weight_matrices(z, "ibug68", **{which: np.full(67, 3.0)})
    # a tiny positive per-point value is accepted and used
    v = np.full(68, 3.0)
    v[20] = 1e-3
    W = an.weight_matrices(z, "ibug68", **{which: v})
    ref = ref_matrices(z, get_scheme("ibug68"), **{which: v})
    np.testing.assert_allclose(W, ref, rtol=1e-9, atol=1e-14)


def test_per_point_parameters_broadcast_over_batch(rng):
    sch = get_scheme("ibug68")
    z = random_shapes(rng, 68, B=5)
    a = rng.uniform(1.0, 9.0, size=68)
    W = an.weight_matrices(z, sch, a=a, b=2.0, covariance=True)
    for f in range(5):
        np.testing.assert_allclose(W[f], ref_matrices(z[f], sch, a, 2.0, covariance=True), rtol=1e-10)
    W = an.weight_matrices(z, sch, a=7.0, b=np.full(68, 2.5) + np.arange(68) / 10)
    for f in range(5):
        np.testing.assert_allclose(W[f], ref_matrices(z[f], sch, 7.0, np.full(68, 2.5) + np.arange(68) / 10),
                                   rtol=1e-10)


def test_mahalanobis_cost_against_loops(rng):
    P = 7
    x = rng.normal(size=(2, 3, P, 2)) * 4
    z = rng.normal(size=(2, 3, P, 2)) * 4
    L = rng.normal(size=(P, 2, 2))
    W = L @ np.swapaxes(L, -1, -2) + 0.1 * np.eye(2)        # (P, 2, 2), broadcast over (2, 3)
    per = an.mahalanobis_cost(x, z, W, per_point=True)
    tot = an.mahalanobis_cost(x, z, W)
    assert per.shape == (2, 3, P) and tot.shape == (2, 3)
    for u in range(2):
        for v in range(3):
            terms = []
            for i in range(P):
                d = x[u, v, i] - z[u, v, i]
                terms.append(sum(d[j] * W[i, j, k] * d[k] for j in range(2) for k in range(2)))
            np.testing.assert_allclose(per[u, v], terms, rtol=1e-12)
            assert tot[u, v] == pytest.approx(sum(terms), rel=1e-12)
    # a single shape: a scalar sum
    q = an.mahalanobis_cost(x[0, 0], z[0, 0], W)
    assert np.ndim(q) == 0 and float(q) == pytest.approx(tot[0, 0], rel=1e-12)
    # the cost with weights of the target: eq. 2 with eq. 6 (reference matrices)
    sch = get_scheme("aflw19")
    zz = random_shapes(rng, 19, B=2)
    xx = zz + rng.normal(size=zz.shape) * 2
    Wz = an.weight_matrices(zz, sch)
    ref = [sum((xx[f, i] - zz[f, i]) @ ref_matrices(zz[f], sch)[i] @ (xx[f, i] - zz[f, i]) for i in range(19))
           for f in range(2)]
    np.testing.assert_allclose(an.mahalanobis_cost(xx, zz, Wz), ref, rtol=1e-10)


def test_degenerate_neighbours_with_missing_points_elsewhere(rng):
    """The one-sided rule is decided per point: a NaN elsewhere in the shape (or batch) changes nothing."""
    sch = get_scheme("ibug68")
    z = rng.uniform(0, 100, size=(2, 68, 2))
    z[:, 9] = z[:, 7]                 # neighbours of 8 coincide
    z[:, 44] = z[:, 42]               # right eye loop 42..47: neighbours of 43 coincide
    z[0, 60] = np.nan                 # a missing inner-lip point in face 0
    z[1, 30, 0] = np.nan              # a half-missing nose point in face 1
    t = an.tangents(z, sch)
    W = an.weight_matrices(z, sch)
    for f in range(2):
        ref_t = np.array([ref_tangent(z[f], sch, i) for i in range(68)])
        np.testing.assert_array_equal(np.isnan(t[f]), np.isnan(ref_t))
        ok = ~np.isnan(ref_t)
        np.testing.assert_allclose(t[f][ok], ref_t[ok], atol=1e-13)
        ref_w = ref_matrices(z[f], sch)
        ok = ~np.isnan(ref_w)
        np.testing.assert_allclose(W[f][ok], ref_w[ok], rtol=1e-10, atol=1e-14)
        for i, j in ((8, 9), (43, 44)):
            d = z[f, j] - z[f, i]
            np.testing.assert_allclose(t[f, i], d / np.linalg.norm(d), atol=1e-14)


def test_ibug68_identity_exactly_at_the_documented_corners(rng):
    """Paper §3.1 / fidelity page: W = I at the eye and mouth corners only; open-curve ends use eq. 5."""
    z = rng.uniform(0, 100, size=(68, 2))
    for adaptive in (False, True):
        W = an.weight_matrices(z, "ibug68", a=5.0, b=3.0, adaptive=adaptive)
        ident = [i for i in range(68) if np.array_equal(W[i], np.eye(2))]
        assert ident == [36, 39, 42, 45, 48, 54, 60, 64]
    W = an.weight_matrices(z, "ibug68", a=5.0, b=3.0)
    for i, (p, q) in {0: (0, 1), 16: (15, 16), 17: (17, 18), 21: (20, 21), 22: (22, 23), 26: (25, 26),
                      27: (27, 28), 30: (29, 30), 31: (31, 32), 35: (34, 35)}.items():
        t = (z[q] - z[p]) / np.linalg.norm(z[q] - z[p])
        n = np.array([-t[1], t[0]])
        assert t @ W[i] @ t == pytest.approx(1 / 25, rel=1e-12)
        assert n @ W[i] @ n == pytest.approx(1 / 9, rel=1e-12)
        assert t @ W[i] @ n == pytest.approx(0.0, abs=1e-15)

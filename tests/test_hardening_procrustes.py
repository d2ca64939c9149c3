"""Procrustes paths that no test checked before issue 13 (found by tools/mutate.py): reflections,
homogeneous matrices, (B, P) weights, two-point shapes, a NaN in y only, the NumPy fallback."""
import numpy as np
import pytest

from flmcore import procrustes
from flmcore.procrustes import Similarity, align, generalized_procrustes

RNG = np.random.default_rng(7)
SRC = RNG.normal(size=(6, 2)) * 5


def _umeyama(src, dst, w=None, reflection=False):
    """Weighted LS similarity by SVD; reflection allowed or not (independent reference)."""
    w = np.ones(len(src)) if w is None else w
    w = w / w.sum()
    ms, md = w @ src, w @ dst
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd((b * w[:, None]).T @ a)
    d = 1.0 if reflection else (np.sign(np.linalg.det(U @ Vt)) or 1.0)
    D = np.diag([1.0, d])
    R = U @ D @ Vt
    s = (S * np.diag(D)).sum() / (w * (a ** 2).sum(1)).sum()
    return s, R, md - s * R @ ms


@pytest.fixture(params=["kernel", "numpy"])
def backend(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(procrustes, "_kernel", None)
    return request.param


def test_reflection_fit_matches_svd_reference(backend):
    flip = np.array([[1.0, 0.0], [0.0, -1.0]])
    rot = np.array([[0.8, -0.6], [0.6, 0.8]])
    dst = 1.3 * SRC @ (rot @ flip).T + [2.0, -1.0] + RNG.normal(scale=0.05, size=SRC.shape)
    s, R, t = _umeyama(SRC, dst, reflection=True)
    assert np.linalg.det(R) < 0
    out, T = align(SRC, dst, reflection=True)
    np.testing.assert_allclose(T.rotation, R, atol=1e-10)
    np.testing.assert_allclose(T.scale, s, rtol=1e-10)
    np.testing.assert_allclose(out, s * SRC @ R.T + t, atol=1e-9)
    s0, R0, _ = _umeyama(SRC, dst, reflection=False)        # without reflections: the best rotation
    _, T0 = align(SRC, dst, reflection=False)
    np.testing.assert_allclose(T0.rotation, R0, atol=1e-10)
    assert np.linalg.det(T0.rotation) > 0


def test_matrix_is_homogeneous_and_acts_like_apply():
    T = Similarity(np.array([2.0, 0.5]), np.stack([np.eye(2), [[0.0, -1.0], [1.0, 0.0]]]), np.array([[1.0, 2.0],
                                                                                                   [-3.0, 0.5]]))
    M = T.matrix()
    assert M.shape == (2, 3, 3)
    np.testing.assert_array_equal(M[:, 2], [[0.0, 0.0, 1.0]] * 2)
    pts = np.stack([SRC, SRC])
    hom = np.concatenate([pts, np.ones(pts.shape[:-1] + (1,))], -1)
    np.testing.assert_allclose(np.einsum("bij,bpj->bpi", M, hom)[..., :2], T.apply(pts), atol=1e-12)
    np.testing.assert_allclose(T.inverse().apply(T.apply(pts)), pts, atol=1e-12)


def test_per_shape_weights(backend):
    dst = SRC @ np.array([[0.0, -1.0], [1.0, 0.0]]).T * 2 + 1
    src = np.stack([SRC, SRC + RNG.normal(scale=0.3, size=SRC.shape)])
    w = RNG.uniform(0.1, 2.0, size=(2, 6))
    out, T = align(src, dst, weights=w)                    # (B, P) weights are valid
    for b in range(2):
        s, R, t = _umeyama(src[b], dst, w[b])
        np.testing.assert_allclose(out[b], s * src[b] @ R.T + t, atol=1e-9)
    np.testing.assert_allclose(align(src, dst, weights=w[:1])[0], align(src, dst, weights=w[0])[0], atol=1e-12)
    msg = r"weights must have shape \(P,\) or \(B, P\) with P=6, B=2; got shape \(3, 6\)"
    with pytest.raises(ValueError, match=msg):
        align(src, dst, weights=np.ones((3, 6)))
    with pytest.raises(ValueError, match="weights must be >= 0"):
        align(src, dst, weights=-np.ones(6))


def test_two_point_shapes_are_enough(backend):
    src = np.array([[0.0, 0.0], [1.0, 0.0]])
    dst = np.array([[1.0, 1.0], [1.0, 3.0]])
    out, T = align(src, dst)
    np.testing.assert_allclose(out, dst, atol=1e-12)
    np.testing.assert_allclose(T.scale, 2.0)
    g = generalized_procrustes(np.stack([SRC, SRC * 2 + 1, np.where(np.arange(6)[:, None] < 2, SRC, np.nan)]))
    assert np.isfinite(g.mean).all()
    with pytest.raises(ValueError, match="fewer than 2 present"):
        generalized_procrustes(np.stack([SRC, np.where(np.arange(6)[:, None] < 1, SRC, np.nan)]))


def test_nan_in_one_coordinate_marks_the_point_missing(backend):
    dst = SRC * 1.5 + 2
    src = SRC.copy()
    src[2, 1] = np.nan                                    # only y is NaN
    out, T = align(src, dst)
    keep = np.arange(6) != 2
    _, T_ref = align(SRC[keep], dst[keep])
    np.testing.assert_allclose(T.scale, T_ref.scale, rtol=1e-12)
    assert np.isnan(out[2]).all() and np.isfinite(out[keep]).all()
    src2 = SRC.copy()
    src2[2, 0] = np.nan                                   # only x is NaN
    np.testing.assert_allclose(align(src2, dst)[1].scale, T_ref.scale, rtol=1e-12)


def test_weighted_gpa_against_slow_reference(backend):
    """GPA with per-point weights, against a plain loop: align every shape to the current mean by
    weighted Umeyama, average, normalise (centre, unit norm), until it stops moving."""
    shapes = np.stack([SRC @ np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]).T * (1 + 0.2 * k) + k
                       + RNG.normal(scale=0.2, size=SRC.shape) for k, a in enumerate([0.0, 0.4, -0.3, 1.0])])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0, 1.0])
    g = generalized_procrustes(shapes, weights=w, tol=1e-14, max_iter=500)
    mean = g.mean
    aligned = np.stack([_apply(_umeyama(s, mean, w), s) for s in shapes])
    # fixed point: the weighted mean of the shapes aligned to the mean is the mean up to a similarity
    avg = aligned.mean(0)
    s, R, t = _umeyama(avg, mean, w)
    np.testing.assert_allclose(_apply((s, R, t), avg), mean, atol=1e-6)
    np.testing.assert_allclose(g.aligned, aligned, atol=1e-6)


def _apply(srt, x):
    s, R, t = srt
    return s * x @ R.T + t


def _unit(x):
    c = x - x.mean(0)
    return c / np.sqrt((c ** 2).sum(1).mean())


def _rot(t):
    return np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])


@pytest.mark.parametrize("theta,fallback", [(0.0, True), (0.1, True), (0.12, False), (0.5, False)])
def test_gpa_reference_orientation_and_its_fallback(backend, theta, fallback):
    """The mean's orientation is that of the average of the unit-RMS centred shapes; when that
    average nearly vanishes (norm <= 0.05 x typical, e.g. a shape and its 180-degree turn) the
    first complete shape gives the orientation instead.  Shapes S and -R(theta) S average to a norm
    of sin(theta / 2) x typical: 0.05 at theta = 0.1 rad."""
    S = _unit(SRC)
    shapes = np.stack([S, -(S @ _rot(theta).T)])
    ref = S if fallback else _unit((shapes[0] + shapes[1]) / 2)
    g = generalized_procrustes(shapes, tol=1e-14, max_iter=200)
    _, T = align(g.mean, ref)
    np.testing.assert_allclose(T.rotation, np.eye(2), atol=1e-6)


def test_one_source_onto_a_batch_of_targets(backend):
    dst = np.stack([SRC * 2 + 1, SRC @ _rot(0.7).T - 3, SRC * 0.5])
    out, T = align(SRC, dst)                      # src (P, 2) broadcast over dst (B, P, 2)
    assert out.shape == (3, 6, 2) and T.scale.shape == (3,)
    np.testing.assert_allclose(out, dst, atol=1e-9)
    np.testing.assert_allclose(T.scale, [2.0, 1.0, 0.5], rtol=1e-12)
    with pytest.raises(ValueError, match="src and dst batch sizes must match or be 1, got 2 and 3"):
        align(np.stack([SRC, SRC]), dst)


def test_degenerate_source_or_target_named(backend):
    flat = np.full_like(SRC, 3.0)
    with pytest.raises(ValueError, match=r"shape index \[0\]: dst is degenerate"):
        align(SRC, flat)
    with pytest.raises(ValueError, match=r"shape index \[1\]: src is degenerate"):
        align(np.stack([SRC, flat]), SRC)
    with pytest.raises(ValueError, match="fewer than 2 points with non-zero weight"):
        align(SRC, SRC * 2, weights=np.eye(6)[0])

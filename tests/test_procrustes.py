"""Tests of flmcore.procrustes against SciPy and a slow per-shape SVD reference, on real shapes."""
import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial import procrustes as scipy_procrustes

from flmcore import procrustes as pr


# ----------------------------------------------------------------------------- references
def svd_similarity(x, y, w=None, scale=True, reflection=False):
    """Slow reference: weighted Umeyama via SVD for one pair (P, 2); NaN rows dropped."""
    ok = np.isfinite(x).all(1) & np.isfinite(y).all(1)
    w = np.ones(len(x)) if w is None else np.asarray(w, float)
    ok &= w > 0
    x, y, w = x[ok], y[ok], w[ok]
    mx = (w[:, None] * x).sum(0) / w.sum()
    my = (w[:, None] * y).sum(0) / w.sum()
    X, Y = x - mx, y - my
    M = (w[:, None] * Y).T @ X
    U, S, Vt = np.linalg.svd(M)
    D = np.eye(2)
    if not reflection and np.linalg.det(U @ Vt) < 0:
        D[1, 1] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (w * (X ** 2).sum(1)).sum() if scale else 1.0
    t = my - s * R @ mx
    return s, R, t


def loop_gpa(shapes, n_iter, scale=True):
    """Slow reference GPA: per-shape SVD fits in a Python loop, same normalisation convention."""
    B, P = shapes.shape[:2]
    mask = np.isfinite(shapes).all(-1)
    normed = []
    for b in range(B):
        x = shapes[b][mask[b]]
        xc = x - x.mean(0)
        if scale:
            xc = xc / np.sqrt((xc ** 2).sum() / len(xc))
        full = np.full((P, 2), np.nan)
        full[mask[b]] = xc
        normed.append(full)
    ref = np.nanmean(np.array(normed), axis=0)
    ref -= ref.mean(0)
    if scale:
        ref /= np.linalg.norm(ref)
    mean = ref
    for _ in range(n_iter):
        al = np.array([_apply(shapes[b], *svd_similarity(shapes[b], mean, scale=scale)) for b in range(B)])
        new = np.nanmean(al, axis=0)
        new -= new.mean(0)
        if scale:
            new /= np.linalg.norm(new)
        _, R, _ = svd_similarity(new, ref, scale=False)
        mean = new @ R.T
    al = np.array([_apply(shapes[b], *svd_similarity(shapes[b], mean, scale=scale)) for b in range(B)])
    return al, mean


def _apply(x, s, R, t):
    return s * x @ R.T + t


def rot(th):
    return np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])


# ----------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def aflw21(shared_data):
    a = np.load(shared_data / "aflw_3ddfa_multischeme" / "AFLW2000-3D.pts21.npy").astype(np.float64)
    a = a.transpose(0, 2, 1).copy()        # (N, 2, 21) -> (N, 21, 2)
    a[a < 0] = np.nan                      # -1 marks a missing point
    return a[:300]


@pytest.fixture(scope="module")
def helen68(shared_data):
    d = shared_data / "300w_helen_trainset_68pt" / "pts"
    files = sorted(d.glob("*.pts"))[:120]
    return np.array([np.loadtxt(f) for f in files]) - 1.0   # 1-based on disk


# ----------------------------------------------------------------------------- align
def test_align_recovers_known_similarity(rng):
    x = rng.normal(size=(6, 20, 2)) * 30
    th = rng.uniform(-np.pi, np.pi, 6)
    s = rng.uniform(0.2, 5, 6)
    t = rng.normal(size=(6, 2)) * 100
    y = s[:, None, None] * np.einsum("bij,bpj->bpi", np.array([rot(a) for a in th]), x) + t[:, None]
    x_nan = x.copy()
    x_nan[:, :3] = np.nan                  # missing points must not matter
    for src in (x, x_nan):
        aligned, T = pr.align(src, y)
        np.testing.assert_allclose(T.scale, s, rtol=1e-10)
        np.testing.assert_allclose(T.rotation, np.array([rot(a) for a in th]), atol=1e-10)
        np.testing.assert_allclose(T.translation, t, atol=1e-8)
        ok = np.isfinite(src)
        np.testing.assert_allclose(aligned[ok], y[ok], atol=1e-8)
        assert np.isnan(aligned[~ok]).all()


def test_align_matches_svd_reference_on_real_shapes(aflw21, helen68, rng):
    for shapes in (aflw21[:80], helen68[:60]):
        dst = shapes[rng.permutation(len(shapes))]
        w = rng.uniform(0.1, 2.0, shapes.shape[1])
        for scale in (True, False):
            for refl in (False, True):
                aligned, T = pr.align(shapes, dst, scale=scale, reflection=refl, weights=w)
                for b in range(len(shapes)):
                    s, R, t = svd_similarity(shapes[b], dst[b], w, scale=scale, reflection=refl)
                    assert T.scale[b] == pytest.approx(s, rel=1e-9)
                    np.testing.assert_allclose(T.rotation[b], R, atol=1e-9)
                    np.testing.assert_allclose(T.translation[b], t, rtol=1e-9, atol=1e-6)


def test_align_against_scipy_orthogonal_procrustes(helen68):
    a = helen68[0] - helen68[0].mean(0)
    b = helen68[7] - helen68[7].mean(0)
    R_sp, _ = orthogonal_procrustes(a, b)           # a @ R_sp ~ b, reflections allowed
    _, T = pr.align(a, b, scale=False, reflection=True)
    np.testing.assert_allclose(T.rotation.T, R_sp, atol=1e-12)
    # scipy.spatial.procrustes: standardise both, fit scale + orthogonal map; compare the disparity
    m1, m2, disp = scipy_procrustes(helen68[3], helen68[11])
    s1 = (helen68[3] - helen68[3].mean(0)) / np.linalg.norm(helen68[3] - helen68[3].mean(0))
    s2 = (helen68[11] - helen68[11].mean(0)) / np.linalg.norm(helen68[11] - helen68[11].mean(0))
    al, _ = pr.align(s2, s1, reflection=True)
    assert np.sum((al - s1) ** 2) == pytest.approx(disp, rel=1e-10)
    np.testing.assert_allclose(al, m2, atol=1e-12)


def test_reflection_flag(helen68):
    x = helen68[5]
    y = x * [-1.0, 1.0] + [500.0, 0.0]                # mirror image
    al_no, T_no = pr.align(x, y)
    al_yes, T_yes = pr.align(x, y, reflection=True)
    assert np.linalg.det(T_no.rotation) == pytest.approx(1.0)
    assert np.linalg.det(T_yes.rotation) == pytest.approx(-1.0)
    np.testing.assert_allclose(al_yes, y, atol=1e-9)
    assert np.abs(al_no - y).max() > 10.0


def test_kernel_matches_numpy_twin_and_threads(aflw21, rng):
    if pr._kernel is None:
        pytest.skip("compiled kernel not built")
    X = np.where(np.isfinite(aflw21), aflw21, 0.0)
    w = np.isfinite(aflw21).all(-1).astype(float)
    dst = np.ascontiguousarray(np.nan_to_num(np.nanmean(aflw21, 0))[None])
    ref = pr._fit_numpy(X, dst, w, True, True)
    one = pr._fit(X, dst, w, True, True, 1)
    two = pr._fit(X, dst, w, True, True, 2)
    np.testing.assert_allclose(one[0], ref[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(one[1], ref[1], rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(one[2], ref[2])
    np.testing.assert_array_equal(one[0], two[0])       # identical for any thread count
    np.testing.assert_array_equal(one[1], two[1])


def test_similarity_helpers(rng):
    T = pr.Similarity(np.array([2.0, 0.5]), np.array([rot(0.3), rot(-1.0)]), np.array([[1.0, 2.0], [-3.0, 0.0]]))
    x = rng.normal(size=(2, 5, 2))
    y = pr.apply_similarity(x, T)
    np.testing.assert_allclose(T.inverse().apply(y), x, atol=1e-12)
    H = T.matrix()
    yh = np.einsum("bij,bpj->bpi", H, np.concatenate([x, np.ones((2, 5, 1))], -1))[..., :2]
    np.testing.assert_allclose(yh, y, atol=1e-12)
    with pytest.raises(TypeError, match="Similarity"):
        pr.apply_similarity(x, (1.0, np.eye(2), np.zeros(2)))


def test_align_bad_inputs():
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with pytest.raises(ValueError, match="degenerate"):
        pr.align(np.ones((4, 2)), x[[0, 1, 2, 0]])
    with pytest.raises(ValueError, match="dst is degenerate"):
        pr.align(x, np.full((3, 2), 7.0))
    with pytest.raises(ValueError, match="fewer than 2"):
        pr.align(np.array([[0.0, 0.0], [np.nan, 1.0], [np.nan, 2.0]]), x)
    with pytest.raises(ValueError, match="same number of points"):
        pr.align(x, x[:2])
    with pytest.raises(ValueError, match="shape"):
        pr.align(np.zeros((3, 3)), x)
    with pytest.raises(ValueError, match="infinite"):
        pr.align(np.array([[0.0, np.inf], [1.0, 0.0], [0.0, 1.0]]), x)
    with pytest.raises(ValueError, match="weights"):
        pr.align(x, x, weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="batch sizes"):
        pr.align(np.stack([x] * 2), np.stack([x] * 3))


# ----------------------------------------------------------------------------- GPA
def test_gpa_matches_loop_reference(aflw21, helen68):
    for shapes in (aflw21[:150], helen68):
        res = pr.generalized_procrustes(shapes, max_iter=5, tol=0.0)
        al_ref, mean_ref = loop_gpa(shapes, 5)
        assert res.n_iter == 5 and not res.converged
        np.testing.assert_allclose(res.mean, mean_ref, atol=1e-10)
        np.testing.assert_allclose(res.aligned, al_ref, atol=1e-10)


def test_gpa_properties(aflw21, helen68, rng):
    res = pr.generalized_procrustes(aflw21)
    assert res.converged
    np.testing.assert_allclose(res.mean.mean(0), 0.0, atol=1e-12)
    assert np.linalg.norm(res.mean) == pytest.approx(1.0)
    assert np.isnan(res.aligned[~res.mask]).all() and np.isfinite(res.aligned[res.mask]).all()
    np.testing.assert_allclose(res.transform.apply(aflw21)[res.mask], res.aligned[res.mask], atol=1e-12)
    # order of the shapes does not matter
    perm = rng.permutation(len(aflw21))
    res_p = pr.generalized_procrustes(aflw21[perm])
    np.testing.assert_allclose(res_p.mean, res.mean, atol=1e-8)
    # a common similarity of all inputs rotates the mean with it (orientation follows the data)
    R = rot(0.4)
    res_r = pr.generalized_procrustes(3.0 * helen68 @ R.T + 11.0)
    res_0 = pr.generalized_procrustes(helen68)
    np.testing.assert_allclose(res_r.mean, res_0.mean @ R.T, atol=1e-8)
    # faces are upright in image axes: eyes (36, 45) above the chin (8) in y-down coordinates
    assert res_0.mean[8, 1] > res_0.mean[36, 1] and res_0.mean[45, 0] > res_0.mean[36, 0]
    # no scaling: every transform has unit scale, mean keeps pixel size
    res_ns = pr.generalized_procrustes(helen68, scale=False)
    np.testing.assert_allclose(res_ns.transform.scale, 1.0)
    assert np.linalg.norm(res_ns.mean) > 100.0
    # results do not depend on the number of threads
    r1 = pr.generalized_procrustes(aflw21, num_threads=1)
    r2 = pr.generalized_procrustes(aflw21, num_threads=2)
    np.testing.assert_array_equal(r1.mean, r2.mean)


def test_gpa_random_rotations_fall_back_to_a_shape(helen68, rng):
    th = np.linspace(0, 2 * np.pi, 40, endpoint=False)   # average of rotated copies cancels out
    shapes = np.array([helen68[0] @ rot(a).T for a in th])
    res = pr.generalized_procrustes(shapes)
    assert res.converged
    np.testing.assert_allclose(res.aligned, np.broadcast_to(res.mean, res.aligned.shape), atol=1e-9)


def test_gpa_bad_inputs(helen68):
    s = helen68[:5].copy()
    with pytest.raises(ValueError, match="degenerate"):
        bad = s.copy()
        bad[2] = 5.0
        pr.generalized_procrustes(bad)
    with pytest.raises(ValueError, match="fewer than 2"):
        bad = s.copy()
        bad[1, 1:] = np.nan
        pr.generalized_procrustes(bad)
    with pytest.raises(ValueError, match="missing .* in every shape"):
        bad = s.copy()
        bad[:, 4] = np.nan
        pr.generalized_procrustes(bad)
    with pytest.raises(ValueError, match=r"\(B, P, 2\)|dimensions"):
        pr.generalized_procrustes(s[0])
    with pytest.raises(ValueError, match="max_iter"):
        pr.generalized_procrustes(s, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        pr.generalized_procrustes(s, tol=-1.0)

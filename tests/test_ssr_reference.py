"""flmcore.ssr against references written here: a projected-gradient solver of the L1-constrained
least squares of DRN-SSR eq. (14), scikit-learn's ``lars_path`` interpolated at ``||h||_1 = tau``,
and the shape normalisation / design stacking / NME written out with plain numpy.

None of the library's own helpers is used to build an expected value.  Fast tests come first
(mutation runs stop at the first failure).
"""
import warnings

import numpy as np
import pytest
from _lasso_reference import sk_at, sk_path

from flmcore import ssr
from flmcore.ssr import (
    SchemeUnion,
    SparseShapeRegression,
    SparseShapeRegressionCV,
    lars_lasso,
    lars_lasso_gram,
    lars_lasso_path,
    normalised_mean_error,
)


# ----------------------------------------------------------------------------- references
def proj_l1_ball(v, tau):
    """Euclidean projection onto {h : ||h||_1 <= tau} (Duchi et al. 2008)."""
    if np.abs(v).sum() <= tau:
        return v
    u = np.sort(np.abs(v))[::-1]
    css = np.cumsum(u)
    j = np.arange(1, v.size + 1)
    rho = np.nonzero(u * j > css - tau)[0][-1]
    theta = (css[rho] - tau) / (rho + 1.0)
    return np.sign(v) * np.maximum(np.abs(v) - theta, 0.0)


def constrained_lasso_pg(X, y, tau, n_iter=20000):
    """min ||X h - y||^2 s.t. ||h||_1 <= tau by accelerated projected gradient (FISTA)."""
    L = 2 * np.linalg.eigvalsh(X.T @ X).max()
    h = z = np.zeros(X.shape[1])
    t = 1.0
    for _ in range(n_iter):
        h_new = proj_l1_ball(z - 2 * X.T @ (X @ z - y) / L, tau)
        t_new = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
        z = h_new + (t - 1) / t_new * (h_new - h)
        if np.abs(h_new - h).max() < 1e-15:
            h = h_new
            break
        h, t = h_new, t_new
    return h




def stack_xy(shapes):
    """Rows 2I / 2I+1: x / y coordinates of face I (eq. 14's samples)."""
    N, P, _ = shapes.shape
    D = np.empty((2 * N, P))
    for n in range(N):
        D[2 * n] = shapes[n, :, 0]
        D[2 * n + 1] = shapes[n, :, 1]
    return D


def diag_nme(pred, truth):
    out = []
    for p, t in zip(pred, truth):
        w, h = t.max(axis=0) - t.min(axis=0)
        out.append(np.mean([np.hypot(*(p[k] - t[k])) for k in range(len(t))]) / np.hypot(w, h))
    return np.array(out)


def close(a, b, rtol=1e-8):
    scale = max(np.abs(a).max(), np.abs(b).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


# ----------------------------------------------------------------------------- fast checks first
def test_argument_checks():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    Y = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="tau must be >= 0"):
        lars_lasso(X, Y, np.array([1.0, -0.5]))           # negative entry, no NaN
    with pytest.raises(ValueError, match="tau must be >= 0"):
        lars_lasso(X, Y, [np.nan, 1.0])
    with pytest.raises(ValueError, match=r"tau must be a number or have shape \(2,\)"):
        lars_lasso(X, Y, np.ones(3))
    np.testing.assert_array_equal(lars_lasso(X, Y, [0.0, 0.0]), np.zeros((2, 3)))
    for fn, args in ((lars_lasso, (X, Y, 1.0)), (lars_lasso_gram, (X.T @ X, X.T @ Y, 1.0)),
                     (lars_lasso_path, (X, Y, 1.0))):
        with pytest.raises(ValueError, match="max_iter must be >= 1"):
            fn(*args, max_iter=0)
    with pytest.raises(ValueError, match="G must have 2 dimensions"):
        lars_lasso_gram(np.ones((3, 3, 1)), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="XtY must have 3 rows"):
        lars_lasso_gram(np.eye(3), np.ones(4), 1.0)
    with pytest.raises(ValueError, match="XtY must have"):
        lars_lasso_gram(np.eye(3), np.ones((3, 2, 1)), 1.0)
    with pytest.raises(ValueError, match="n_points"):
        SchemeUnion([4])
    with pytest.raises(ValueError, match="n_points"):
        SchemeUnion([[4, 3]])
    with pytest.raises(ValueError, match="common dataset index"):
        SchemeUnion([4, 3], common={(0, 2): [[0, 0]]})
    with pytest.raises(ValueError, match="common dataset index"):
        SchemeUnion([4, 3], common={(-1, 1): [[0, 0]]})
    with pytest.raises(ValueError, match=r"\(i, j\) dataset pairs"):
        SchemeUnion([4, 3], common={(0, 1, 1): [[0, 0]]})
    with pytest.raises(ValueError, match=r"\(i, j\) dataset pairs"):
        SchemeUnion([4, 3], common={0: [[0, 0]]})
    for bad in ([[0, 3]], [[4, 0]], [[-1, 0]], [[0, -1]]):
        with pytest.raises(ValueError, match="outside"):
            SchemeUnion([4, 3], common={(0, 1): bad})
    u = SchemeUnion([4, 3], common={(0, 1): [[3, 2]]})       # the largest valid indices
    assert u.n_union_ == 6 and u.index_[1].tolist() == [4, 5, 3]
    with pytest.raises(ValueError, match="must name two different"):
        u.fit({(1, 1): (np.zeros((2, 3, 2)), np.zeros((2, 3, 2)))})
    with pytest.raises(ValueError, match=r"must have 3 points"):
        u.fit({(0, 1): (np.zeros((2, 4, 2)), np.zeros((2, 4, 2)))})
    with pytest.raises(ValueError, match="same faces"):
        u.fit({(0, 1): (np.zeros((2, 4, 2)), np.zeros((3, 3, 2)))})
    with pytest.raises(RuntimeError, match="not fitted"):
        u.transform(np.zeros((4, 2)), 0)


def test_design_layout_and_inverse():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(5, 7, 2))
    D = ssr.shapes_to_design(s)
    np.testing.assert_array_equal(D, stack_xy(s))
    back = ssr._design_to_shapes(D)
    np.testing.assert_array_equal(back, s)
    assert back.flags.c_contiguous


def test_normalised_mean_error_by_hand():
    rng = np.random.default_rng(2)
    t = rng.uniform(0, 50, size=(4, 9, 2))
    p = t + rng.normal(size=t.shape)
    np.testing.assert_allclose(normalised_mean_error(p, t), diag_nme(p, t), rtol=1e-12)
    w, h = (t.max(1) - t.min(1)).T
    err = np.array([np.mean([np.hypot(*(p[n, k] - t[n, k])) for k in range(9)]) for n in range(4)])
    np.testing.assert_allclose(normalised_mean_error(p, t, "bbox"), err / np.sqrt(w * h), rtol=1e-12)
    np.testing.assert_allclose(normalised_mean_error(p, t, (2, 8)), err / np.linalg.norm(t[:, 2] - t[:, 8], axis=1),
                               rtol=1e-12)
    assert np.ndim(normalised_mean_error(p[0], t[0])) == 0
    with pytest.raises(ValueError, match="same shape"):
        normalised_mean_error(p[:, :8], t)
    with pytest.raises(ValueError, match="zero"):
        normalised_mean_error(p, t, (3, 3))
    with pytest.raises(ValueError, match="norm index"):
        normalised_mean_error(p, t, (0, 9))


def test_lars_lasso_against_projected_gradient_and_sklearn():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, 8))
    X[:, 3] = 0.8 * X[:, 2] + 0.6 * X[:, 3]              # some correlation
    Y = X @ rng.normal(size=(8, 4)) + 0.5 * rng.normal(size=(60, 4))
    ols = np.linalg.lstsq(X, Y, rcond=None)[0]
    taus = np.array([0.3, 1.0, 0.6 * np.abs(ols[:, 2]).sum(), np.inf])
    H = lars_lasso(X, Y, taus)
    Hg = lars_lasso_gram(X.T @ X, X.T @ Y, taus)
    assert H.shape == Hg.shape == (4, 8)
    for t in range(4):
        ref = ols[:, t] if np.isinf(taus[t]) else constrained_lasso_pg(X, Y[:, t], taus[t])
        np.testing.assert_allclose(H[t], ref, atol=1e-7 * np.abs(ref).max())
        np.testing.assert_allclose(Hg[t], ref, atol=1e-7 * np.abs(ref).max())
        close(H[t], sk_at(X, Y[:, t], taus[t]))
        if np.isfinite(taus[t]):
            assert np.abs(H[t]).sum() == pytest.approx(taus[t], rel=1e-10)
    h1 = lars_lasso_gram(X.T @ X, X.T @ Y[:, 1], 1.0)
    assert h1.shape == (8,)
    close(h1, sk_at(X, Y[:, 1], 1.0))


def test_positive_against_projected_gradient():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(50, 6))
    y = X @ np.array([1.0, -1.0, 0.5, 0.0, 2.0, -0.3]) + 0.2 * rng.normal(size=50)
    for tau in (0.4, 1.5, 2.5):
        h = lars_lasso(X, y, tau, positive=True)
        assert (h >= 0).all()
        close(h, sk_at(X, y, tau, positive=True))
        # projected gradient on the positive part of the L1 ball: clip, then project
        L = 2 * np.linalg.eigvalsh(X.T @ X).max()
        g = np.zeros(6)
        for _ in range(20000):
            v = np.maximum(g - 2 * X.T @ (X @ g - y) / L, 0.0)
            g = proj_l1_ball(v, tau)
        np.testing.assert_allclose(h, g, atol=1e-7)


def test_path_knots_alphas_and_coef_at_against_sklearn():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(45, 7))
    y = X @ rng.normal(size=7) + rng.normal(size=45)
    alphas, coefs = sk_path(X, y)
    path = lars_lasso_path(X, y)
    assert path.status == "end"
    np.testing.assert_allclose(path.alphas, alphas, rtol=1e-8, atol=1e-12 * alphas[0])
    np.testing.assert_allclose(path.coefs, coefs, rtol=1e-8, atol=1e-10 * np.abs(coefs).max())
    np.testing.assert_allclose(path.l1_norms, np.abs(coefs).sum(axis=1), rtol=1e-10)
    assert [a.tolist() for a in path.active_sets] == [np.flatnonzero(r).tolist() for r in path.active]
    l1_end = np.abs(coefs[-1]).sum()
    taus = np.r_[0.0, np.linspace(0.05, l1_end, 13), path.l1_norms[1:4], 1.3 * l1_end]
    got = path.coef_at(taus)
    assert got.shape == (taus.size, 7)
    for k, tau in enumerate(taus):
        close(got[k], sk_at(X, y, tau))
        close(path.coef_at(float(tau)), sk_at(X, y, tau))
    # a path stopped at tau: its last knot is the solution at ||h||_1 = tau
    tau = 0.55 * l1_end
    stopped = lars_lasso_path(X, y, tau)
    assert stopped.status == "tau"
    assert stopped.l1_norms[-1] == pytest.approx(tau, rel=1e-12)
    close(stopped.coefs[-1], sk_at(X, y, tau))
    # ... and its alpha (max |correlation| / n) is scikit-learn's, linear in ||h||_1 on the segment
    l1 = np.abs(coefs).sum(axis=1)
    i = int(np.searchsorted(l1, tau))
    f = (tau - l1[i - 1]) / (l1[i] - l1[i - 1])
    assert stopped.alphas[-1] == pytest.approx(alphas[i - 1] + f * (alphas[i] - alphas[i - 1]), rel=1e-8)
    assert stopped.active[-1].tolist() == (np.abs(sk_at(X, y, tau)) > 1e-12).tolist()   # its active set
    # several targets, per-target budgets, sample count in the alphas
    Y = np.c_[y, -2 * y]
    paths = lars_lasso_path(X, Y, [np.inf, 0.5])
    assert [p.status for p in paths] == ["end", "tau"]
    np.testing.assert_allclose(paths[0].alphas, alphas, rtol=1e-8, atol=1e-12 * alphas[0])
    np.testing.assert_allclose(paths[1].alphas[0], 2 * alphas[0], rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert lars_lasso_path(X, y, max_iter=2).status == "max_iter"


# ----------------------------------------------------------------------------- estimators
def test_raw_fit_few_faces_many_targets():
    """normalize=None: H is the lasso of eq. 14 on the raw stacked coordinates, one row per target.

    Two faces (4 samples) and 60 target points: more targets than samples.
    """
    rng = np.random.default_rng(6)
    src = rng.normal(size=(2, 5, 2)) * 3
    dst = rng.normal(size=(2, 60, 2)) * 3
    tau = 0.05
    model = SparseShapeRegression(tau=tau, normalize=None).fit(src, dst)
    X, Y = stack_xy(src), stack_xy(dst)
    assert model.H_.shape == (60, 5)
    for r in range(60):
        close(model.H_[r], sk_at(X, Y[:, r], tau), rtol=1e-7)
    np.testing.assert_allclose(np.abs(model.H_).sum(axis=1), tau, rtol=1e-10)
    assert model.n_source_points_ == 5 and model.n_target_points_ == 60
    np.testing.assert_allclose(model.predict(src), np.einsum("rk,nkd->nrd", model.H_, src), atol=1e-12)


@pytest.mark.parametrize("normalize", ["procrustes", "centre"])
def test_normalised_fit_against_reference(normalize):
    """'centre': centred faces; 'procrustes': centred faces at unit RMS size (the rotation onto the
    Procrustes mean changes neither the Gram matrix nor X^T y of the stacked x / y samples)."""
    rng = np.random.default_rng(7)
    N, p, q = 30, 6, 3
    base = rng.normal(size=(p, 2)) * 3
    src = base + 0.4 * rng.normal(size=(N, p, 2))
    W = rng.normal(size=(q, p)) * 0.4
    dst = np.einsum("rk,nkd->nrd", W, src) + 0.05 * rng.normal(size=(N, q, 2))
    s = rng.uniform(0.3, 4.0, size=N)                       # faces of very different sizes
    th = rng.uniform(-np.pi, np.pi, size=N)
    sh = rng.normal(size=(N, 1, 2)) * 30
    R = np.stack([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]).transpose(2, 0, 1)
    src = s[:, None, None] * np.einsum("nij,npj->npi", R, src) + sh
    dst = s[:, None, None] * np.einsum("nij,npj->npi", R, dst) + sh
    for positive in (False, True):
        model = SparseShapeRegression(tau=0.8, normalize=normalize, positive=positive).fit(src, dst)
        c = src.mean(axis=1, keepdims=True)
        scale = np.ones((N, 1, 1))
        if normalize == "procrustes":
            scale = 1.0 / np.sqrt(((src - c) ** 2).sum(axis=2).mean(axis=1))[:, None, None]
        X, Y = stack_xy(scale * (src - c)), stack_xy(scale * (dst - c))
        for r in range(q):
            close(model.H_[r], sk_at(X, Y[:, r], 0.8, positive=positive), rtol=1e-7)
        np.testing.assert_array_equal(model.support_, model.H_ != 0)
        # prediction: c + H (S - c) in every frame
        test = src[:4] * 1.5 + 2.0
        ct = test.mean(axis=1, keepdims=True)
        np.testing.assert_allclose(model.predict(test), ct + np.einsum("rk,nkd->nrd", model.H_, test - ct),
                                   atol=1e-9 * np.abs(test).max())
        assert model.score(src, dst) == pytest.approx(-diag_nme(model.predict(src), dst).mean(), rel=1e-12)


def test_procrustes_reference_is_a_gpa_fixed_point():
    rng = np.random.default_rng(8)
    base = rng.normal(size=(8, 2))
    src = base + 0.15 * rng.normal(size=(25, 8, 2))
    th = rng.uniform(-1, 1, size=25)
    R = np.stack([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]).transpose(2, 0, 1)
    src = rng.uniform(0.5, 3, size=(25, 1, 1)) * np.einsum("nij,npj->npi", R, src) + rng.normal(size=(25, 1, 2))
    model = SparseShapeRegression(tau=1.0).fit(src, src[:, :2])
    ref = model.reference_
    assert ref.shape == (8, 2)
    np.testing.assert_allclose(ref.mean(axis=0), 0.0, atol=1e-12)
    assert np.sqrt((ref ** 2).sum(axis=1).mean()) == pytest.approx(1.0, rel=1e-12)
    # align every centred face to ref by least squares (scale + rotation), average, normalise: ref again
    zr = ref[:, 0] + 1j * ref[:, 1]
    acc = np.zeros(8, complex)
    for f in src:
        z = f[:, 0] + 1j * f[:, 1]
        z = z - z.mean()
        acc += (np.vdot(z, zr) / np.vdot(z, z)) * z
    acc /= np.sqrt(np.mean(np.abs(acc) ** 2))
    rot = np.vdot(acc, zr)
    assert abs(rot.imag) < 1e-9 and rot.real > 0
    np.testing.assert_allclose(acc, zr, atol=1e-9)
    assert SparseShapeRegression(normalize="centre").fit(src, src[:, :2]).reference_ is None


def test_cv_scores_against_explicit_folds_few_faces():
    """SparseShapeRegressionCV (normalize=None): every fold score from scikit-learn paths, by hand."""
    rng = np.random.default_rng(9)
    N, p, q = 5, 4, 40                                     # 2 N = 10 samples < 40 targets
    src = rng.normal(size=(N, p, 2)) * 2 + 5
    dst = np.einsum("rk,nkd->nrd", rng.normal(size=(q, p)) * 0.3, src) + 0.1 * rng.normal(size=(N, q, 2))
    taus = [0.02, 0.1, 0.5, np.inf]
    cvm = SparseShapeRegressionCV(taus=taus, cv=2, rng=3, normalize=None).fit(src, dst)
    assert cvm.cv_nme_.shape == (2, 4)
    np.testing.assert_array_equal(cvm.taus_, taus)
    folds = np.array_split(np.random.default_rng(3).permutation(N), 2)
    expected = np.empty((2, 4))
    for k, idx in enumerate(folds):
        train = np.setdiff1d(np.arange(N), idx)
        X, Y = stack_xy(src[train]), stack_xy(dst[train])
        for ti, tau in enumerate(taus):
            H = np.stack([sk_at(X, Y[:, r], tau) for r in range(q)])
            expected[k, ti] = diag_nme(np.einsum("rk,nkd->nrd", H, src[idx]), dst[idx]).mean()
    np.testing.assert_allclose(cvm.cv_nme_, expected, rtol=1e-7)
    best = taus[int(np.argmin(expected.mean(axis=0)))]
    assert cvm.tau_ == best
    X, Y = stack_xy(src), stack_xy(dst)
    for r in range(q):
        close(cvm.H_[r], sk_at(X, Y[:, r], best), rtol=1e-7)
    assert cvm.n_source_points_ == p and cvm.n_target_points_ == q


def test_scheme_union_blocks_against_reference():
    rng = np.random.default_rng(10)
    n = 40
    s0 = rng.normal(size=(5, 2)) * 3 + 0.3 * rng.normal(size=(n, 5, 2))
    s1 = np.concatenate([s0[:, [1]], s0[:, [2, 4]].mean(axis=1, keepdims=True) + 0.01 * rng.normal(size=(n, 1, 2))],
                        axis=1)
    u = SchemeUnion([5, 2], common={(1, 0): [[0, 1]]}, tau=0.7, normalize="centre").fit({(1, 0): (s1, s0)})
    assert u.n_union_ == 6
    assert u.index_[0].tolist() == [0, 1, 2, 3, 4] and u.index_[1].tolist() == [1, 5]
    assert u.owner_.tolist() == [[0, 0], [0, 1], [0, 2], [0, 3], [0, 4], [1, 1]]
    c0 = s0.mean(axis=1, keepdims=True)
    X, Y = stack_xy(s0 - c0), stack_xy(s1[:, [1]] - c0)
    np.testing.assert_allclose(u.H_[0][5], sk_at(X, Y[:, 0], 0.7), atol=1e-9)
    np.testing.assert_array_equal(u.H_[0][:5], np.eye(5))
    out = u.transform(s0, dataset=0)
    np.testing.assert_array_equal(out[:, :5], s0)
    np.testing.assert_allclose(out[:, 5], (c0 + np.einsum("k,nkd->nd", u.H_[0][5], s0 - c0)[:, None])[:, 0],
                               atol=1e-9)


def test_solver_entry_checks_shapes_before_the_unchecked_kernel():
    """The Numba LARS kernels drop bounds checks: ssr._solve refuses a tau or G of the wrong shape."""
    from flmcore import ssr as _ssr

    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(6, 3)), rng.normal(size=(6, 4))
    G, XtY = X.T @ X, X.T @ Y
    coef, *_ = _ssr._solve(G, XtY, np.full(4, 0.5), False, 50, 1)
    assert coef.shape == (4, 3)
    for g, t in ((G, np.full(8, 0.5)), (G, np.full(2, 0.5)), (G[:2, :2], np.full(4, 0.5))):
        with pytest.raises(ValueError, match="one value per target"):
            _ssr._solve(g, XtY, t, False, 50, 1)


def test_zero_budget_path_is_the_origin_alone():
    """tau = 0: the lasso solution is 0 and the path holds the single knot at the origin (no LARS step),
    stopped on the budget."""
    from flmcore.ssr import lars_lasso_path

    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(8, 4)), rng.normal(size=8)
    path = lars_lasso_path(X, y, tau=0.0)
    assert path.coefs.shape == (1, 4) and not path.coefs.any() and not path.active.any()
    assert path.status == "tau"
    np.testing.assert_allclose(path.alphas[0], np.abs(X.T @ y).max() / len(y), rtol=1e-12)


def test_lars_step_counts_at_the_two_early_exits():
    """No LARS step is taken for a zero budget (status 0: stopped on tau) nor for a target uncorrelated
    with every feature (X^T y = 0: the whole path is the origin, status 1)."""
    from flmcore import ssr as _ssr

    rng = np.random.default_rng(4)
    X = rng.normal(size=(7, 3))
    Y = np.c_[rng.normal(size=7), np.zeros(7)]
    coef, status, n_steps, _ = _ssr._solve(X.T @ X, X.T @ Y, np.array([0.0, 1.0]), False, 50, 1)
    assert not coef.any()
    assert status.tolist() == [0, 1] and n_steps.tolist() == [0, 0]
    coef, status, n_steps, _ = _ssr._solve(X.T @ X, X.T @ Y, np.array([np.inf, np.inf]), False, 50, 1)
    assert n_steps[0] >= 3 and n_steps[1] == 0 and status.tolist() == [1, 1]

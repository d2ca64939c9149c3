"""LARS-lasso kernel of flmcore.ssr against scikit-learn's lars_path (method="lasso")."""
import warnings

import numpy as np
import pytest
from scipy.optimize import nnls
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import lars_path

from _lasso_reference import sk_at, sk_path

from flmcore.ssr import LassoPath, lars_lasso, lars_lasso_gram, lars_lasso_path




def assert_close_rel(a, b, rtol=1e-8):
    scale = max(np.abs(b).max(), np.abs(a).max(), 1e-300)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


def design(kind, rng, n=60, p=12):
    if kind == "random":
        return rng.normal(size=(n, p))
    if kind == "correlated":  # AR(1)-like strong correlation between neighbours
        Z = rng.normal(size=(n, p))
        X = np.empty_like(Z)
        X[:, 0] = Z[:, 0]
        for j in range(1, p):
            X[:, j] = 0.9 * X[:, j - 1] + np.sqrt(1 - 0.81) * Z[:, j]
        return X
    if kind == "collinear":  # nearly collinear: pairs differing by 1e-3
        X = rng.normal(size=(n, p))
        X[:, 1::2] = X[:, 0::2] + 1e-3 * rng.normal(size=(n, p // 2))
        return X
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["random", "correlated", "collinear"])
def test_matches_sklearn_along_the_path(kind, rng):
    X = design(kind, rng)
    Y = X[:, :4] @ rng.normal(size=(4, 5)) + 0.3 * rng.normal(size=(X.shape[0], 5))
    ols_l1 = np.abs(np.linalg.lstsq(X, Y, rcond=None)[0]).sum(axis=0)
    for frac in (0.05, 0.3, 0.7, 0.99):
        for t in range(Y.shape[1]):
            tau = frac * ols_l1[t]
            h = lars_lasso(X, Y[:, t], tau)
            assert_close_rel(h, sk_at(X, Y[:, t], tau))
            assert np.abs(h).sum() == pytest.approx(tau, rel=1e-10)
    # batched call == per-target calls
    H = lars_lasso(X, Y, 0.5 * ols_l1)
    for t in range(Y.shape[1]):
        assert_close_rel(H[t], sk_at(X, Y[:, t], 0.5 * ols_l1[t]))


def test_knots_and_alphas_match_sklearn(rng):
    X = design("random", rng, n=40, p=8)
    y = X @ rng.normal(size=8) + rng.normal(size=40)
    path = lars_lasso_path(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alphas, _, coefs = lars_path(X, y, method="lasso")
    assert isinstance(path, LassoPath) and path.status == "end"
    np.testing.assert_allclose(path.alphas, alphas, rtol=1e-8, atol=1e-12 * alphas[0])
    np.testing.assert_allclose(path.coefs, coefs.T, rtol=1e-8, atol=1e-10 * np.abs(coefs).max())
    assert np.all(np.diff(path.l1_norms) >= -1e-12)
    np.testing.assert_allclose(path.l1_norms, np.abs(path.coefs).sum(axis=1), rtol=1e-12)
    for tau in np.linspace(0, path.l1_norms[-1] * 1.2, 9):
        np.testing.assert_allclose(path.coef_at(tau), lars_lasso(X, y, tau), rtol=1e-9, atol=1e-12)


def _find_drop(rng, tries=400):
    for _ in range(tries):
        n, p = 30, 8
        X = design("correlated", rng, n=n, p=p)
        y = X @ rng.normal(size=p) + 0.5 * rng.normal(size=n)
        path = lars_lasso_path(X, y)
        sizes = path.active.sum(axis=1)
        drops = np.flatnonzero(np.diff(sizes) < 0)
        if drops.size:
            return X, y, path, drops
    return None


def test_path_with_variable_drop(rng):
    found = _find_drop(rng)
    assert found is not None, "no lasso path with a dropped variable found"
    X, y, path, drops = found
    k = drops[0] + 1
    # the dropped variable's coefficient is exactly zero at its knot and it is inactive after
    left = np.flatnonzero(path.active[k - 1] & ~path.active[k])
    assert left.size == 1 and path.coefs[k, left[0]] == 0.0
    # scikit-learn drops the same variable (its path has a knot where it returns to zero)
    sk = sk_path(X, y)[1]
    assert np.any((np.abs(sk[1:-1, left[0]]) == 0) & (np.abs(sk[:-2, left[0]]) > 0))
    l1 = path.l1_norms
    for tau in (0.5 * (l1[k - 1] + l1[k]), l1[k], 0.5 * (l1[k] + l1[min(k + 1, l1.size - 1)]), l1[-1] * 1.1):
        assert_close_rel(lars_lasso(X, y, tau), sk_at(X, y, tau))


def test_duplicated_columns(rng):
    X0 = rng.normal(size=(50, 6))
    X = np.c_[X0, X0[:, 1], X0[:, 4]]  # columns 6, 7 duplicate 1, 4
    y = X0 @ np.array([1.0, 2.0, 0.0, -1.0, 0.5, 0.0]) + 0.2 * rng.normal(size=50)
    groups = [[0], [1, 6], [2], [3], [4, 7], [5]]
    ols_l1 = np.abs(np.linalg.lstsq(X0, y, rcond=None)[0]).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tau in (0.3, 1.5, 3.0, 0.999 * ols_l1, 2 * ols_l1):
            h = lars_lasso(X, y, tau)
            r = sk_at(X, y, tau)
            # the split between duplicates is not unique: compare fits, L1 norms and group sums
            assert_close_rel(X @ h, X @ r)
            assert np.abs(h).sum() == pytest.approx(np.abs(r).sum(), rel=1e-8)
            assert_close_rel(np.array([h[g].sum() for g in groups]), np.array([r[g].sum() for g in groups]))
            # and equals the lasso of the de-duplicated design
            assert_close_rel(np.array([h[g].sum() for g in groups]), lars_lasso(X0, y, tau))


def test_fewer_samples_than_features(rng):
    n, p = 8, 20
    X = rng.normal(size=(n, p))
    y = X[:, :3] @ [1.0, -1.0, 0.5] + 0.1 * rng.normal(size=n)
    path = lars_lasso_path(X, y)
    assert path.status == "end"
    assert path.active[-1].sum() <= n
    end = path.coefs[-1]
    np.testing.assert_allclose(X @ end, y, atol=1e-8 * np.abs(y).max())  # interpolates
    for tau in np.linspace(0.1, 1.5 * path.l1_norms[-1], 7):
        assert_close_rel(lars_lasso(X, y, tau), sk_at(X, y, tau))


def test_zero_targets_tau_zero_and_least_squares(rng):
    X = rng.normal(size=(30, 5))
    Y = np.c_[np.zeros(30), X @ [1.0, 0, 2.0, 0, -1.0] + 0.1 * rng.normal(size=30)]
    assert np.array_equal(lars_lasso(X, Y, 1.0)[0], np.zeros(5))
    assert np.array_equal(lars_lasso(X, Y, 0.0), np.zeros((2, 5)))
    ols = np.linalg.lstsq(X, Y[:, 1], rcond=None)[0]
    for tau in (np.abs(ols).sum() * 1.0001, 1e6, np.inf):
        h = lars_lasso(X, Y, tau)
        np.testing.assert_allclose(h[1], ols, rtol=1e-10, atol=1e-12)
        assert_close_rel(h[1], sk_at(X, Y[:, 1], tau))
    path = lars_lasso_path(X, Y)
    assert path[0].status == "end" and path[0].coefs.shape == (1, 5)


def test_positive(rng):
    X = design("correlated", rng, n=40, p=10)
    Y = X @ (rng.normal(size=(10, 6)) + 0.7) + 0.3 * rng.normal(size=(40, 6))
    long_paths = 0
    for t in range(Y.shape[1]):
        y = Y[:, t]
        sk = sk_path(X, y, positive=True)[1]
        l1 = np.abs(sk).sum(axis=1)
        long_paths += l1.size >= 4
        # interior of the path: equal to scikit-learn's positive lars
        for tau in np.linspace(0, l1[-2], 6) if l1.size >= 3 else ():
            h = lars_lasso(X, y, tau, positive=True)
            assert (h >= 0).all()
            assert_close_rel(h, sk_at(X, y, tau, positive=True))
        # end of the positive path: the non-negative least-squares solution
        h = lars_lasso(X, y, np.inf, positive=True)
        ref = nnls(X, y)[0]
        np.testing.assert_allclose(h, ref, atol=1e-8 * max(np.abs(ref).max(), 1.0))
    assert long_paths >= 2


def test_thread_count_does_not_change_results(rng):
    X = design("correlated", rng, n=80, p=15)
    Y = X @ rng.normal(size=(15, 33)) + rng.normal(size=(80, 33))
    a = lars_lasso(X, Y, 2.0, num_threads=1)
    b = lars_lasso(X, Y, 2.0, num_threads=2)
    assert np.array_equal(a, b)
    pa = lars_lasso_path(X, Y, num_threads=1)
    pb = lars_lasso_path(X, Y, num_threads=2)
    assert all(np.array_equal(u.coefs, v.coefs) for u, v in zip(pa, pb))


def test_torch_thread_count_untouched_in_subprocess():
    # numba's 'omp' threading layer shares the OpenMP runtime with torch; its thread count must not leak
    pytest.importorskip("torch")
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import numpy as np
        import torch
        torch.set_num_threads(1)
        assert torch.get_num_threads() == 1
        from flmcore.ssr import lars_lasso, lars_lasso_path
        rng = np.random.default_rng(0)
        X, Y = rng.normal(size=(30, 8)), rng.normal(size=(30, 5))
        lars_lasso(X, Y, 1.0, num_threads=2)
        a = torch.get_num_threads()
        lars_lasso_path(X, Y, 1.0, num_threads=2)
        print(a, torch.get_num_threads())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1"]


def test_per_target_tau_gram_api_and_1d(rng):
    X = rng.normal(size=(40, 6))
    Y = X @ rng.normal(size=(6, 3))
    taus = np.array([0.2, 1.0, np.inf])
    H = lars_lasso(X, Y, taus)
    for t in range(3):
        # (X^T y by gemv may round differently from the batched gemm)
        np.testing.assert_allclose(H[t], lars_lasso(X, Y[:, t], taus[t]), rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(H, lars_lasso_gram(X.T @ X, X.T @ Y, taus))
    assert lars_lasso(X, Y[:, 0], 1.0).shape == (6,)


def test_max_iter_warns(rng):
    X = rng.normal(size=(40, 6))
    y = X @ rng.normal(size=6)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        h = lars_lasso(X, y, np.inf, max_iter=1)
    assert np.count_nonzero(h) == 1


def test_bad_input(rng):
    X = rng.normal(size=(10, 3))
    y = rng.normal(size=10)
    Xn = X.copy()
    Xn[2, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        lars_lasso(Xn, y, 1.0)
    with pytest.raises(ValueError, match="Y contains"):
        lars_lasso(X, np.r_[y[:-1], np.nan], 1.0)
    with pytest.raises(ValueError, match="same number of rows"):
        lars_lasso(X, y[:-1], 1.0)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        lars_lasso(X, y, -1.0)
    with pytest.raises(ValueError, match="tau must be"):
        lars_lasso(X, y, [1.0, 2.0])
    with pytest.raises(ValueError, match="X must have 2 dimensions"):
        lars_lasso(X[:, 0], y, 1.0)
    with pytest.raises(ValueError, match="Y must have 1 or 2 dimensions"):
        lars_lasso(X, y[:, None, None], 1.0)
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        lars_lasso(X, y, 1.0, max_iter=0)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        lars_lasso(X, y, 1.0, num_threads=0)
    with pytest.raises(ValueError, match="square"):
        lars_lasso_gram(np.ones((3, 2)), np.ones(3), 1.0)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        lars_lasso_path(X, y).coef_at(-1.0)

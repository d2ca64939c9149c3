"""SparseShapeRegression, SparseShapeRegressionCV and SchemeUnion (flmcore.ssr)."""
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import lars_path
from sklearn.model_selection import GridSearchCV

from flmcore.ssr import (
    SchemeUnion,
    SparseShapeRegression,
    SparseShapeRegressionCV,
    normalised_mean_error,
    shapes_to_design,
)


def similarity(shapes, s, theta, t):
    R = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    return s * shapes @ R.T + t


def make_pairs(rng, n=120, p_src=10, noise=0.02):
    """Random faces (a mean shape + deformation, random pose) and targets that are sparse mixes."""
    mean = rng.normal(size=(p_src, 2)) * 3
    src = mean + 0.3 * rng.normal(size=(n, p_src, 2))
    W = np.zeros((4, p_src))
    W[0, [0, 1]] = 0.5
    W[1, [2, 3, 4]] = [0.6, 0.3, 0.1]
    W[2, 5] = 1.0
    W[3, [6, 7]] = [1.2, -0.2]
    dst = np.einsum("rk,nkd->nrd", W, src) + noise * rng.normal(size=(n, 4, 2))
    pose = [(rng.uniform(0.5, 2), rng.uniform(-0.5, 0.5), rng.normal(size=2) * 20) for _ in range(n)]
    src = np.stack([similarity(s, *p) for s, p in zip(src, pose)])
    dst = np.stack([similarity(d, *p) for d, p in zip(dst, pose)])
    return src, dst, W


def test_recovers_sparse_support(rng):
    src, dst, W = make_pairs(rng)
    model = SparseShapeRegression(tau=np.inf).fit(src, dst)
    np.testing.assert_allclose(model.H_, W, atol=0.05)
    model = SparseShapeRegression(tau=0.9).fit(src, dst)
    assert model.H_.shape == (4, 10)
    np.testing.assert_allclose(np.abs(model.H_).sum(axis=1), 0.9, rtol=1e-10)
    assert set(np.argsort(-np.abs(model.H_[0]))[:2]) == {0, 1}
    assert np.argmax(np.abs(model.H_[2])) == 5 and np.abs(model.H_[2, 5]) > 0.8
    assert model.support_.sum() < model.H_.size / 2
    assert np.array_equal(model.support_, model.H_ != 0)


def test_centre_fit_equals_sklearn_on_stacked_coordinates(rng):
    """H_ with normalize='centre' is the lasso of eq. 14 on centred, stacked x/y samples."""
    src, dst, _ = make_pairs(rng, n=40)
    model = SparseShapeRegression(tau=0.9, normalize="centre").fit(src, dst)
    c = src.mean(axis=1, keepdims=True)
    X = np.concatenate([(src - c)[:, :, 0], (src - c)[:, :, 1]])  # x rows, then y rows (order irrelevant)
    Y = np.concatenate([(dst - c)[:, :, 0], (dst - c)[:, :, 1]])
    for r in range(4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, _, coefs = lars_path(X, Y[:, r], method="lasso")
        l1 = np.abs(coefs).sum(axis=0)
        i = np.searchsorted(l1, 0.9)
        ref = coefs[:, -1] if i >= l1.size else coefs[:, i - 1] + (0.9 - l1[i - 1]) / (l1[i] - l1[i - 1]) * (
            coefs[:, i] - coefs[:, i - 1])
        np.testing.assert_allclose(model.H_[r], ref, atol=1e-8 * np.abs(ref).max())
    # prediction = c + H (S - c)
    pred = c + np.einsum("rk,nkd->nrd", model.H_, src - c)
    np.testing.assert_allclose(model.predict(src), pred, atol=1e-9)


def test_shapes_to_design_layout():
    s = np.arange(12.0).reshape(2, 3, 2)
    D = shapes_to_design(s)
    np.testing.assert_array_equal(D, [[0, 2, 4], [1, 3, 5], [6, 8, 10], [7, 9, 11]])


@pytest.mark.parametrize("normalize", ["procrustes", "centre"])
def test_predictions_are_similarity_equivariant(normalize, rng):
    src, dst, _ = make_pairs(rng, n=60)
    model = SparseShapeRegression(tau=1.4, normalize=normalize).fit(src, dst)
    test = src[:5]
    for s, th, t in [(2.5, 0.7, np.array([30.0, -12.0])), (0.3, -2.0, np.array([-5.0, 100.0]))]:
        a = model.predict(similarity(test, s, th, t))
        b = similarity(model.predict(test), s, th, t)
        np.testing.assert_allclose(a, b, atol=1e-9 * np.abs(b).max())


def test_raw_regression_is_not_translation_equivariant(rng):
    src, dst, _ = make_pairs(rng, n=60)
    # with ||h_r||_1 <= 0.5 the rows cannot sum to 1: the raw map shrinks translations
    model = SparseShapeRegression(tau=0.5, normalize=None).fit(src, dst)
    t = np.array([50.0, -20.0])
    assert np.abs(model.predict(src[:3] + t) - (model.predict(src[:3]) + t)).max() > 10.0
    model = SparseShapeRegression(tau=0.5, normalize="procrustes").fit(src, dst)
    np.testing.assert_allclose(model.predict(src[:3] + t), model.predict(src[:3]) + t, atol=1e-9)


def test_procrustes_fit_is_invariant_to_per_face_similarities(rng):
    src, dst, _ = make_pairs(rng, n=50)
    pose = [(rng.uniform(0.2, 5), rng.uniform(-3, 3), rng.normal(size=2) * 100) for _ in range(50)]
    src2 = np.stack([similarity(s, *p) for s, p in zip(src, pose)])
    dst2 = np.stack([similarity(d, *p) for d, p in zip(dst, pose)])
    # binding budget: the lasso solution is unique
    H = SparseShapeRegression(tau=0.9).fit(src, dst).H_
    H2 = SparseShapeRegression(tau=0.9).fit(src2, dst2).H_
    np.testing.assert_allclose(H, H2, atol=1e-8)
    # least squares: centred designs have the null vector (1, ..., 1), so H is unique only up to
    # adding c * 1 to a row -- which does not change predictions
    m1 = SparseShapeRegression(tau=np.inf).fit(src, dst)
    m2 = SparseShapeRegression(tau=np.inf).fit(src2, dst2)
    np.testing.assert_allclose(m1.predict(src), m2.predict(src), atol=1e-8)


def test_sparse_H_score_and_nme(rng):
    src, dst, _ = make_pairs(rng, n=50)
    model = SparseShapeRegression(tau=1.4).fit(src, dst)
    S = model.sparse_H()
    assert sp.issparse(S) and S.nnz == np.count_nonzero(model.H_)
    np.testing.assert_array_equal(S.toarray(), model.H_)
    pred = model.predict(src)
    diag = np.linalg.norm(dst.max(axis=1) - dst.min(axis=1), axis=1)
    nme = (np.linalg.norm(pred - dst, axis=2).mean(axis=1) / diag).mean()
    assert model.score(src, dst) == pytest.approx(-nme, rel=1e-12)
    np.testing.assert_allclose(normalised_mean_error(pred, dst, (0, 2)),
                               np.linalg.norm(pred - dst, axis=2).mean(1) / np.linalg.norm(dst[:, 0] - dst[:, 2], axis=1))
    single = model.predict(src[0])
    np.testing.assert_allclose(single, pred[0])


def test_interocular_score_with_target_scheme(rng):
    from flmcore.schemes import get_scheme

    sch = get_scheme("ibug68")
    base = rng.normal(size=(68, 2)) * 20
    dst = base + rng.normal(size=(30, 68, 2))
    src = dst[:, ::4] + 0.1 * rng.normal(size=(30, 17, 2))
    model = SparseShapeRegression(tau=2.0, target_scheme="ibug68").fit(src, dst)
    i, j = sch.interocular
    pred = model.predict(src)
    ref = (np.linalg.norm(pred - dst, axis=2).mean(1) / np.linalg.norm(dst[:, i] - dst[:, j], axis=1)).mean()
    assert model.score(src, dst) == pytest.approx(-ref, rel=1e-12)


def test_sklearn_clone_and_grid_search(rng):
    src, dst, _ = make_pairs(rng, n=80)
    est = SparseShapeRegression(tau=0.5)
    c = clone(est)
    assert c.get_params()["tau"] == 0.5 and c.set_params(tau=2.0).tau == 2.0
    gs = GridSearchCV(SparseShapeRegression(), {"tau": [0.05, 1.4, np.inf]}, cv=3).fit(src, dst)
    assert gs.best_params_["tau"] in (1.4, np.inf)
    assert gs.predict(src).shape == dst.shape
    assert gs.cv_results_["mean_test_score"][0] < gs.cv_results_["mean_test_score"][1]


def test_cv_selects_tau_and_matches_explicit_folds(rng):
    src, dst, _ = make_pairs(rng, n=60, noise=0.05)
    taus = [0.05, 0.3, 1.4, np.inf]
    cvm = SparseShapeRegressionCV(taus=taus, cv=3, rng=0).fit(src, dst)
    assert cvm.tau_ in taus and cvm.cv_nme_.shape == (3, 4)
    assert cvm.tau_ >= 1.4  # the true maps need an L1 norm ~ 1-1.4
    # independent check: refit each fold explicitly (path interpolation vs direct solve)
    perm = np.random.default_rng(0).permutation(60)
    folds = np.array_split(perm, 3)
    for k, idx in enumerate(folds):
        train = np.setdiff1d(np.arange(60), idx)
        for ti, tau in enumerate(taus):
            m = SparseShapeRegression(tau=tau).fit(src[train], dst[train])
            # the Procrustes reference of the CV comes from all faces: the fit is invariant to it
            assert -m.score(src[idx], dst[idx]) == pytest.approx(cvm.cv_nme_[k, ti], rel=1e-7)
    final = SparseShapeRegression(tau=cvm.tau_).fit(src, dst)
    np.testing.assert_allclose(cvm.H_, final.H_, atol=1e-10)


def test_scheme_union(rng):
    # scheme 0: 8 points; scheme 1: points 0, 1 of scheme 0 + 3 midpoints; scheme 2: 2 own points
    n = 80
    s0 = rng.normal(size=(8, 2)) * 3 + 0.2 * rng.normal(size=(n, 8, 2))
    mids = np.stack([s0[:, [2, 3]].mean(1), s0[:, [4, 5]].mean(1), s0[:, [6, 7]].mean(1)], axis=1)
    s1 = np.concatenate([s0[:, :2], mids], axis=1)
    s2 = np.stack([s0[:, 0] + s0[:, 1] - s0[:, 2], s0[:, 5]], axis=1)  # point 1 of s2 == point 5 of s0
    u = SchemeUnion([8, 5, 2], common={(0, 1): [[0, 0], [1, 1]], (2, 0): [[1, 5]]}, tau=np.inf)
    assert u.n_union_ == 8 + 3 + 1
    assert u.index_[0].tolist() == list(range(8)) and u.index_[1][:2].tolist() == [0, 1]
    assert u.index_[2][1] == 5
    u.fit({(0, 1): (s0, s1), (0, 2): (s0, s2)})
    # each H_i has an identity block on the points the dataset defines
    for i, p in enumerate([8, 5, 2]):
        H = u.H_[i]
        assert H.shape == (12, p)
        np.testing.assert_array_equal(H[u.index_[i]], np.eye(p))
    U0 = u.transform(s0, dataset=0)
    np.testing.assert_array_equal(U0[:, :8], s0)
    np.testing.assert_allclose(U0[:, 8:11], mids, atol=1e-8)   # exact linear maps are recovered
    np.testing.assert_allclose(U0[:, 11], s2[:, 0], atol=1e-8)
    U1 = u.transform(s1, dataset=1)
    np.testing.assert_array_equal(U1[:, u.index_[1]], s1)
    tgt_local, tgt_union = u.targets_[(1, 0)]
    np.testing.assert_array_equal(U1[:, tgt_union], u.models_[(1, 0)].predict(s1))
    # least squares is linear in the targets: predicted pairs average to the known midpoints
    for k, (a, b) in enumerate([(2, 3), (4, 5), (6, 7)]):
        np.testing.assert_allclose(U1[:, [a, b]].mean(axis=1), s1[:, 2 + k], atol=1e-6)
    assert np.isnan(U1[:, 11]).all()  # no (1, 2) pair: scheme 2's own point is unreachable from 1
    assert not np.isnan(U1[:, :11]).any()
    assert u.transform(s1[0], dataset=1).shape == (12, 2)


def test_scheme_union_from_schemes():
    from flmcore.schemes import correspondences

    u = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"])
    k = len(correspondences("ibug68", "helen_zhou29"))
    assert u.n_union_ == 68 + 29 - k


def test_bad_input(rng):
    src, dst, _ = make_pairs(rng, n=20)
    bad = src.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="drop faces with missing points"):
        SparseShapeRegression().fit(bad, dst)
    with pytest.raises(ValueError, match="same faces"):
        SparseShapeRegression().fit(src, dst[:-1])
    with pytest.raises(ValueError, match="must have shape"):
        SparseShapeRegression().fit(src[..., :1], dst)
    with pytest.raises(ValueError, match="dimensions"):
        SparseShapeRegression().fit(src[0, 0], dst)
    with pytest.raises(ValueError, match="tau must be >= 0"):
        SparseShapeRegression(tau=-1).fit(src, dst)
    with pytest.raises(ValueError, match="normalize must be one of"):
        SparseShapeRegression(normalize="unit").fit(src, dst)
    with pytest.raises(RuntimeError, match="not fitted"):
        SparseShapeRegression().predict(src)
    model = SparseShapeRegression().fit(src, dst)
    with pytest.raises(ValueError, match="must have 10 points"):
        model.predict(src[:, :5])
    with pytest.raises(ValueError, match="n_points"):
        SchemeUnion([5])
    with pytest.raises(ValueError, match="outside"):
        SchemeUnion([5, 3], common={(0, 1): [[7, 0]]})
    with pytest.raises(ValueError, match="same faces"):
        SchemeUnion([10, 4]).fit({(0, 1): (src, dst[:-1])})
    with pytest.raises(ValueError, match="cv must be"):
        SparseShapeRegressionCV(cv=1).fit(src, dst)

"""Tests of flmcore.pose: PCA against scikit-learn, bins, balancing, yaw on real AFLW2000 shapes."""
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.decomposition import PCA

from flmcore import pose, procrustes


@pytest.fixture(scope="module")
def aflw2000(shared_data):
    d = shared_data / "aflw_3ddfa_multischeme"
    p21 = np.load(d / "AFLW2000-3D.pts21.npy").astype(np.float64).transpose(0, 2, 1).copy()
    p21[p21 < 0] = np.nan                                   # -1 = missing
    p68 = np.load(d / "AFLW2000-3D-Reannotated.pts68.npy").astype(np.float64).transpose(0, 2, 1).copy()
    yaw = np.load(d / "AFLW2000-3D-new.pose.npy").astype(np.float64)   # |yaw| in degrees
    return p21, p68, yaw


def test_pca_matches_sklearn(aflw2000):
    _, p68, _ = aflw2000
    X = procrustes.generalized_procrustes(p68[:400]).aligned.reshape(400, -1)
    mean, comps, var, ratio, proj = pose.pca(X, 4)
    sk = PCA(n_components=4, svd_solver="full").fit(X)
    np.testing.assert_allclose(mean, sk.mean_, atol=1e-12)
    np.testing.assert_allclose(var, sk.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(ratio, sk.explained_variance_ratio_, rtol=1e-8)
    signs = np.sign(np.sum(comps * sk.components_, axis=1))
    assert np.all(signs == 1)                       # same sign convention as scikit-learn
    np.testing.assert_allclose(comps, sk.components_, atol=1e-7)
    np.testing.assert_allclose(proj, sk.transform(X), atol=1e-8)


def test_pose_bins_structure(aflw2000):
    p21, _, _ = aflw2000
    res = pose.pose_bins(p21, 9)
    B = len(p21)
    assert res.labels.shape == (B,) and res.labels.min() >= 0 and res.labels.max() <= 8
    assert res.counts.sum() == B and np.array_equal(res.counts, np.bincount(res.labels, minlength=9))
    coef = res.projections[:, 0]
    # bins are ordered along the component and equal-width between min and max
    np.testing.assert_allclose(np.diff(res.edges), (coef.max() - coef.min()) / 9)
    for k in range(8):
        if res.counts[k] and res.counts[k + 1]:
            assert coef[res.labels == k].max() <= coef[res.labels == k + 1].min()
    # bin means: per-point mean of the aligned shapes of the bin; origin = mean of bin means
    k = int(np.argmax(res.counts))
    np.testing.assert_allclose(res.bin_means[k], np.nanmean(res.gpa.aligned[res.labels == k], axis=0))
    np.testing.assert_allclose(res.origin, np.nanmean(res.bin_means[res.counts > 0], axis=0))
    # projections are those of the mean-imputed aligned shapes onto the components
    filled = np.where(res.gpa.mask[..., None], res.gpa.aligned, res.gpa.mean).reshape(B, -1)
    np.testing.assert_allclose(res.projections, (filled - res.pca_mean) @ res.components.T, atol=1e-10)
    # the training shapes are assigned to their own bins
    np.testing.assert_array_equal(pose.assign_pose_bins(p21, res), res.labels)
    q = pose.pose_bins(p21, 5, binning="quantile")
    assert q.counts.max() - q.counts.min() <= 1


def test_first_component_tracks_yaw(aflw2000):
    p21, p68, yaw = aflw2000
    r21 = pose.pose_bins(p21, 9)
    rho21 = spearmanr(r21.projections[:, 0], yaw)[0]
    assert abs(rho21) > 0.6, rho21                 # AFLW-21 (missing points in profile): PC1 ~ |yaw|
    r68 = pose.pose_bins(p68, 9)
    pc = r68.projections[:, 0]
    rho68 = spearmanr(np.abs(pc - np.median(pc)), yaw)[0]
    assert rho68 > 0.8, rho68                      # complete 68 points: PC1 ~ signed yaw
    # extreme bins hold large poses
    ext = (r68.labels == 0) | (r68.labels == 8)
    assert np.median(yaw[ext]) > 2 * np.median(yaw[r68.labels == 4])


def test_balanced_indices(rng):
    labels = np.repeat(np.arange(5), [3, 50, 7, 1, 20])
    und = pose.balanced_indices(labels, "undersample", rng=0)
    assert np.array_equal(np.bincount(labels[und]), [1] * 5)
    assert len(np.unique(und)) == len(und)                 # without replacement
    ovr = pose.balanced_indices(labels, "oversample", rng=0)
    assert np.array_equal(np.bincount(labels[ovr]), [50] * 5)
    assert set(np.flatnonzero(labels == 2)) <= set(ovr)    # every original sample kept
    np.testing.assert_array_equal(pose.balanced_indices(labels, rng=3), pose.balanced_indices(labels, rng=3))
    gaps = np.array([0, 0, 4, 4, 4, 9])                     # labels that do not occur are ignored
    assert np.array_equal(np.bincount(gaps[pose.balanced_indices(gaps, rng=rng)], minlength=10)[[0, 4, 9]], [1, 1, 1])


def test_bad_inputs(aflw2000):
    p21, _, _ = aflw2000
    with pytest.raises(ValueError, match="n_bins"):
        pose.pose_bins(p21[:50], 0)
    with pytest.raises(ValueError, match="component"):
        pose.pose_bins(p21[:50], 3, n_components=2, component=2)
    with pytest.raises(ValueError, match="binning"):
        pose.pose_bins(p21[:50], 3, binning="log")
    with pytest.raises(ValueError, match="at least 2 shapes"):
        pose.pose_bins(p21[:1], 3)
    with pytest.raises(ValueError, match="mode"):
        pose.balanced_indices([0, 1], "both")
    with pytest.raises(TypeError, match="integers"):
        pose.balanced_indices([0.5, 1.0])
    with pytest.raises(ValueError, match="empty"):
        pose.balanced_indices([])
    with pytest.raises(TypeError, match="PoseBins"):
        pose.assign_pose_bins(p21[:3], None)
    with pytest.raises(ValueError, match="rows"):
        pose.pca(np.ones((1, 3)), 1)

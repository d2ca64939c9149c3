"""Tests of flmcore.metrics against hand formulas and slow references on real AFLW2000 annotations."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from flmcore import metrics as m
from flmcore.schemes import Curve, Scheme, get_scheme


@pytest.fixture(scope="module")
def aflw(shared_data):
    d = shared_data / "aflw_3ddfa_multischeme"
    fitted = np.load(d / "AFLW2000-3D.pts68.npy")[:, :2].astype(np.float64).transpose(0, 2, 1)[:200].copy()
    manual = np.load(d / "AFLW2000-3D-Reannotated.pts68.npy").astype(np.float64).transpose(0, 2, 1)[:200].copy()
    p21 = np.load(d / "AFLW2000-3D.pts21.npy").astype(np.float64).transpose(0, 2, 1)[:200].copy()
    p21[p21 < 0] = np.nan
    return fitted, manual, p21


def test_nme_against_hand_formulas(aflw):
    pred, gt, _ = aflw
    err = np.linalg.norm(pred - gt, axis=-1).mean(-1)
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    ip = np.linalg.norm(gt[:, 36:42].mean(1) - gt[:, 42:48].mean(1), axis=-1)
    wh = gt.max(1) - gt.min(1)
    np.testing.assert_allclose(m.nme(pred, gt, "interocular", scheme="ibug68"), err / io, rtol=1e-12)
    np.testing.assert_allclose(m.nme(pred, gt, "interpupil", scheme=get_scheme("ibug68")), err / ip, rtol=1e-12)
    np.testing.assert_allclose(m.nme(pred, gt, "bbox"), err / np.sqrt(wh[:, 0] * wh[:, 1]), rtol=1e-12)
    np.testing.assert_allclose(m.nme(pred, gt, "diagonal"), err / np.hypot(wh[:, 0], wh[:, 1]), rtol=1e-12)
    np.testing.assert_allclose(m.nme(pred, gt, np.full(200, 2.0)), err / 2.0, rtol=1e-12)
    assert m.nme(pred[3], gt[3], 4.0) == pytest.approx(err[3] / 4.0)


def test_nme_missing_points_and_invalid_normaliser(aflw):
    _, _, p21 = aflw
    rng = np.random.default_rng(0)
    pred = np.where(np.isfinite(p21), p21, 100.0) + rng.normal(size=p21.shape) * 2
    ref = []
    for b in range(len(p21)):
        ok = np.isfinite(p21[b]).all(1)
        x = p21[b][ok]
        w, h = x.max(0) - x.min(0)
        ref.append(np.linalg.norm(pred[b][ok] - x, axis=1).mean() / np.sqrt(w * h))
    np.testing.assert_allclose(m.nme(pred, p21, "bbox"), ref, rtol=1e-12)
    # AFLW-21 outer eye corners (6, 11) are missing on profile faces: the default raises and names them
    missing = np.flatnonzero(np.isnan(p21[:, [6, 11]]).any((1, 2)))
    assert missing.size > 0
    with pytest.raises(ValueError, match=rf"face index \[{missing[0]}"):
        m.nme(pred, p21, "interocular", scheme="aflw21")
    e = m.nme(pred, p21, "interocular", scheme="aflw21", on_invalid="nan")
    assert np.array_equal(np.flatnonzero(np.isnan(e)), missing)
    # zero normaliser: coincident eye corners
    gt = aflw[1][:4].copy()
    gt[2, 45] = gt[2, 36]
    with pytest.raises(ValueError, match=r"face index \[2\]"):
        m.nme(aflw[0][:4], gt, scheme="ibug68")
    e = m.nme(aflw[0][:4], gt, scheme="ibug68", on_invalid="nan")
    assert np.isnan(e[2]) and np.isfinite(e[[0, 1, 3]]).all()
    with pytest.raises(ValueError, match="zero or not finite"):
        m.nme(aflw[0][:4], aflw[1][:4], np.array([1.0, 0.0, 1.0, 1.0]))


def test_failure_rate_ced_auc():
    e = np.array([0.01, 0.03, 0.05, 0.2, 0.09, 0.1])
    assert m.failure_rate(e, 0.1) == pytest.approx(1 / 6)         # strictly above the threshold fails
    assert m.failure_rate(e, 0.08) == pytest.approx(3 / 6)
    th, frac = m.ced(e, 0.1, n=11)
    np.testing.assert_allclose(th, np.linspace(0, 0.1, 11))
    np.testing.assert_allclose(frac, [(e <= t).mean() for t in th])
    # known CED: errors 0.02, 0.04, 0.06, 0.08 -> exact area (1/NT) sum(T - e) = 0.5
    assert m.auc([0.02, 0.04, 0.06, 0.08], 0.1, n=100001) == pytest.approx(0.5, abs=1e-5)
    assert m.auc(np.zeros(5), 0.1) == pytest.approx(1.0)
    assert m.auc(np.full(5, 0.5), 0.1) == 0.0
    rng = np.random.default_rng(1)
    r = rng.uniform(0, 0.15, 500)
    exact = np.mean(np.maximum(0.0, 0.08 - r)) / 0.08
    for n in (101, 1001):
        assert abs(m.auc(r, 0.08, n) - exact) <= 1 / (2 * (n - 1)) + 1e-12
    # hand trapezoid on a coarse grid: CED at 0, 0.05, 0.1 = 0, 0.5, 1 -> (0.25 + 0.75) / 2
    assert m.auc([0.05, 0.1], 0.1, n=3) == pytest.approx(0.5)


def test_point_var(aflw):
    pred, gt, p21 = aflw
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    diff = (pred - gt) / io[:, None, None]
    ref = np.var(diff, axis=1).sum(-1)
    np.testing.assert_allclose(m.point_var(pred, gt, scheme="ibug68", average=False), ref, rtol=1e-10)
    assert m.point_var(pred, gt, scheme="ibug68") == pytest.approx(ref.mean())
    assert m.point_var(gt + [3.0, -7.0], gt, scheme="ibug68") == pytest.approx(0.0, abs=1e-20)   # pure bias
    # missing points are left out
    pred21 = np.where(np.isfinite(p21), p21, 0.0) + 1.0
    pred21[:, 0] += 5.0
    v = m.point_var(pred21, p21, norm=None, average=False)
    ok = np.isfinite(p21[5]).all(1)
    d = (pred21[5] - p21[5])[ok]
    assert v[5] == pytest.approx(np.var(d, axis=0).sum())


def _dense_distance(pts, poly, closed):
    """Slow reference: distance from each point to a densely sampled polyline."""
    seg = list(zip(poly[:-1], poly[1:])) + ([(poly[-1], poly[0])] if closed else [])
    u = np.linspace(0, 1, 4001)[:, None]
    dense = np.concatenate([a + u * (b - a) for a, b in seg]) if seg else poly
    return cKDTree(dense).query(pts)[0]


def test_nme_curve_against_slow_reference(aflw):
    pred, gt, _ = aflw
    sch = get_scheme("ibug68")
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    got = m.nme_curve(pred[:6], gt[:6], sch)
    got_pts = m.nme_curve(pred[:6], gt[:6], sch, mode="points")
    for b in range(6):
        dl, dp = [], []
        for c in sch.curves:
            P, G = pred[b, list(c.indices)], gt[b, list(c.indices)]
            dl += [_dense_distance(P, G, c.closed), _dense_distance(G, P, c.closed)]
            dp += [cKDTree(G).query(P)[0], cKDTree(P).query(G)[0]]
        assert got[b] == pytest.approx(np.concatenate(dl).mean() / io[b], rel=1e-3)
        assert got_pts[b] == pytest.approx(np.concatenate(dp).mean() / io[b], rel=1e-12)
    # curve error never exceeds the landmark error (closest points are at most the paired points)
    assert np.all(m.nme_curve(pred, gt, sch) <= m.nme(pred, gt, scheme=sch) + 1e-12)


def test_nme_curve_cross_annotation(aflw):
    """A denser annotation of the same curves (midpoints inserted) has zero curve error."""
    gt = aflw[1][:5]
    sch = get_scheme("ibug68")
    curves, pts, k = [], [], 0
    for c in sch.curves:
        z = gt[:, list(c.indices)]
        nxt = np.roll(z, -1, axis=1) if c.closed else z[:, 1:]
        mids = (z[:, :len(nxt[0])] + nxt) / 2
        dense = np.empty((5, z.shape[1] + mids.shape[1], 2))
        dense[:, 0::2] = z
        dense[:, 1::2] = mids
        curves.append(Curve(c.name, tuple(range(k, k + dense.shape[1])), c.closed))
        pts.append(dense)
        k += dense.shape[1]
    dense_scheme = Scheme("dense", k, tuple(curves), (0,), (0, 1), (0,), (1,))
    pred = np.concatenate(pts, axis=1)
    np.testing.assert_allclose(m.nme_curve(pred, gt, dense_scheme, gt_scheme=sch), 0.0, atol=1e-12)
    assert (m.nme_curve(pred + [0.0, 2.0], gt, dense_scheme, gt_scheme=sch) > 0).all()


def test_bad_inputs(aflw):
    pred, gt, _ = aflw
    with pytest.raises(ValueError, match="needs the annotation scheme"):
        m.nme(pred, gt)
    with pytest.raises(ValueError, match="norm must be one of"):
        m.nme(pred, gt, "eyes")
    with pytest.raises(ValueError, match="same shape"):
        m.nme(pred[:, :60], gt, "bbox")
    with pytest.raises(ValueError, match="NaN"):
        m.nme(pred * np.nan, gt, "bbox")
    with pytest.raises(ValueError, match="68 points"):
        m.nme(pred[:, :21], gt[:, :21], scheme="ibug68")
    with pytest.raises(ValueError, match="one value per face"):
        m.nme(pred, gt, np.ones(3))
    with pytest.raises(ValueError, match="on_invalid"):
        m.nme(pred, gt, "bbox", on_invalid="ignore")
    with pytest.raises(ValueError, match="errors must be >= 0"):
        m.auc([-0.1, 0.2], 0.1)
    with pytest.raises(ValueError, match="NaN"):
        m.failure_rate([np.nan, 0.1], 0.1)
    with pytest.raises(ValueError, match="empty"):
        m.ced([], 0.1)
    with pytest.raises(ValueError, match="threshold"):
        m.failure_rate([0.1], 0.0)
    with pytest.raises(ValueError, match="n must be >= 2"):
        m.auc([0.1], 0.1, n=1)
    with pytest.raises(ValueError, match="share no curve"):
        m.nme_curve(pred[:2], gt[:2, :5], "ibug68", gt_scheme="mtfl5", norm=1.0)
    with pytest.raises(ValueError, match="same number of faces"):
        m.nme_curve(pred[:2], gt[:3], "ibug68")

"""flmcore.metrics against independent references written here with plain loops.

Every expected value below comes from a formula restated in this file (NME = mean point error /
normaliser over the present points; box normalisers sqrt(w h) and sqrt(w^2 + h^2); point-to-
segment distances by projection and clamping; the official LDDMM-Face NME_c = per region the
mean of the nearest-vertex distances both ways / normaliser, averaged over the five regions),
never from flmcore's own helpers.  Missing ground-truth points are NaN.
"""
import math

import numpy as np
import pytest

from flmcore import metrics as m
from flmcore.schemes import Curve, Scheme, get_scheme


# ----------------------------------------------------------------------------- references
def ref_point_dist(p, q):
    return math.sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2)


def ref_segment_dist(p, a, b):
    """Distance from p to the segment [a, b]: project, clamp the parameter to [0, 1]."""
    abx, aby = b[0] - a[0], b[1] - a[1]
    den = abx * abx + aby * aby
    if den == 0.0:
        return ref_point_dist(p, a)
    t = ((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / den
    t = min(1.0, max(0.0, t))
    return ref_point_dist(p, (a[0] + t * abx, a[1] + t * aby))


def present(points):
    return [tuple(q) for q in points if not (math.isnan(q[0]) or math.isnan(q[1]))]


def ref_curve_dist(p, verts, closed, vertices_only):
    """Distance from p to the polyline through the present vertices (None if there is none)."""
    v = present(verts)
    if not v:
        return None
    if vertices_only or len(v) == 1:
        return min(ref_point_dist(p, q) for q in v)
    segs = list(zip(v[:-1], v[1:])) + ([(v[-1], v[0])] if closed else [])
    return min(ref_segment_dist(p, a, b) for a, b in segs)


def ref_nme_curve(pred, gt, pcurves, gcurves, d, vertices_only=False):
    """flmcore's pooled NME_c of one face: all point-to-curve distances both ways / d."""
    dists = []
    for name, (pi, pclosed) in pcurves.items():
        if name not in gcurves:
            continue
        gi, gclosed = gcurves[name]
        P = [pred[i] for i in pi]
        G = [gt[i] for i in gi]
        closed = pclosed and gclosed
        for p in P:
            dd = ref_curve_dist(p, G, closed, vertices_only)
            if dd is not None:
                dists.append(dd)
        for g in present(G):
            dists.append(ref_curve_dist(g, P, closed, vertices_only))
    return sum(dists) / len(dists) / d if dists else float("nan")


def ref_lddmm_face(pred, gt, pregions, gregions, d):
    """Official LDDMM-Face compute_curve_dist of one face: per region
    mean(concat(nearest gt vertex of each pred point, nearest pred vertex of each gt point)) / d,
    then the mean over the regions (a region without any present gt point is left out)."""
    per = []
    for r in ("edge", "eyebrow", "nose", "eye", "mouth"):
        if r not in pregions or r not in gregions:
            continue
        P = [tuple(pred[i]) for i in pregions[r]]
        G = present([gt[i] for i in gregions[r]])
        if not G:
            continue
        dist = [min(ref_point_dist(p, g) for g in G) for p in P]
        dist_inv = [min(ref_point_dist(g, p) for p in P) for g in G]
        both = dist + dist_inv
        per.append(sum(both) / len(both) / d)
    return sum(per) / len(per) if per else float("nan")


def ref_nme(pred, gt, d):
    errs = [ref_point_dist(p, g) for p, g in zip(pred, gt) if not math.isnan(g[0])]
    return sum(errs) / len(errs) / d


def ref_landmark_box(gt):
    v = present(gt)
    xs, ys = [q[0] for q in v], [q[1] for q in v]
    return max(xs) - min(xs), max(ys) - min(ys)


def curves_of(scheme):
    return {c.name: (list(c.indices), c.closed) for c in scheme.curves}


def regions_by_prefix(scheme):
    """LDDMM-Face's five regions: the union of the curves whose name starts with the region's prefix."""
    prefixes = {"edge": ("jaw",), "eyebrow": ("brow",), "nose": ("nose",), "eye": ("eye",),
                "mouth": ("lip", "mouth")}
    out = {}
    for r, pre in prefixes.items():
        idx = sorted({i for c in scheme.curves if c.name.startswith(pre) for i in c.indices})
        if idx:
            out[r] = idx
    return out


#: The official iBUG-68 groups of LDDMM-Face's lib/core/evaluation.py (curve2landmark68 merged per region).
IBUG68_REGIONS = {"edge": list(range(0, 17)), "eyebrow": list(range(17, 27)), "nose": list(range(27, 36)),
                  "eye": list(range(36, 48)), "mouth": list(range(48, 68))}


def random_faces(b, p, seed, spread=60.0):
    rs = np.random.default_rng(seed)
    return rs.uniform(0, spread, (b, p, 2)), rs


# ----------------------------------------------------------------------------- normalisers and NME
def test_face_box_normaliser_against_formula():
    pred, rs = random_faces(3, 19, 0)
    gt = pred + rs.normal(size=pred.shape)
    gt[1, 4] = np.nan
    boxes = np.array([[10.0, 20.0, 110.0, 245.0], [-5.0, 3.0, 37.0, 11.0], [2.5, 40.0, 9.0, 140.0]])
    d_ref = [math.sqrt((x1 - x0) * (y1 - y0)) for x0, y0, x1, y1 in boxes]
    np.testing.assert_allclose(m.normalising_distance(gt, "face_box", boxes=boxes), d_ref, rtol=1e-14)
    np.testing.assert_allclose(m.nme(pred, gt, "face_box", boxes=boxes),
                               [ref_nme(pred[b], gt[b], d_ref[b]) for b in range(3)], rtol=1e-12)
    # one face with one (4,) box, and a batch of one face with a (4,) box
    e1 = m.nme(pred[1], gt[1], "face_box", boxes=boxes[1])
    assert np.ndim(e1) == 0 and float(e1) == pytest.approx(ref_nme(pred[1], gt[1], d_ref[1]), rel=1e-12)
    e2 = m.nme(pred[1:2], gt[1:2], "face_box", boxes=boxes[1])
    assert e2.shape == (1,) and e2[0] == pytest.approx(ref_nme(pred[1], gt[1], d_ref[1]), rel=1e-12)
    e3 = m.nme(pred[2], gt[2], "face_box", boxes=boxes[2:3])
    assert float(e3) == pytest.approx(ref_nme(pred[2], gt[2], d_ref[2]), rel=1e-12)
    # a single (4,) box for several faces is ambiguous, as are other shapes
    with pytest.raises(ValueError, match=r"boxes must have shape \(4,\) for one face or \(3, 4\)"):
        m.nme(pred, gt, "face_box", boxes=boxes[0])
    with pytest.raises(ValueError, match=r"boxes must have shape \(4,\) for one face or \(2, 4\)"):
        m.nme(pred[:2], gt[:2], "face_box", boxes=boxes[0])
    with pytest.raises(ValueError, match="boxes must have shape"):
        m.nme(pred, gt, "face_box", boxes=boxes[:2])
    with pytest.raises(ValueError, match="boxes must have shape"):
        m.nme(pred, gt, "face_box", boxes=boxes[:, :3])
    with pytest.raises(ValueError, match="needs the face rectangles"):
        m.nme(pred, gt, "face_box")
    # an empty box (zero width) never yields inf
    bad = boxes.copy()
    bad[1, 2] = bad[1, 0]
    with pytest.raises(ValueError, match=r"face index \[1\]"):
        m.nme(pred, gt, "face_box", boxes=bad)
    e = m.nme(pred, gt, "face_box", boxes=bad, on_invalid="nan")
    assert np.isnan(e[1]) and e[0] == pytest.approx(ref_nme(pred[0], gt[0], d_ref[0]), rel=1e-12)


def test_landmark_box_normalisers_with_missing_points():
    pred, rs = random_faces(4, 21, 1)
    gt = pred + rs.normal(scale=2.0, size=pred.shape)
    gt[0, [0, 5, 7]] = np.nan
    gt[2, :, :] = gt[2] * [1.0, 0.25]          # a flat face: w != h
    gt[3, 10:] = np.nan
    e1 = m.nme(pred[:1], np.where(np.arange(21)[None, :, None] == 4, gt[:1], np.nan), 2.0)   # one present point
    assert e1[0] == pytest.approx(ref_point_dist(pred[0, 4], gt[0, 4]) / 2.0, rel=1e-12)
    for norm in ("bbox", "diagonal"):
        ref = []
        for b in range(4):
            w, h = ref_landmark_box(gt[b])
            d = math.sqrt(w * h) if norm == "bbox" else math.sqrt(w * w + h * h)
            ref.append(ref_nme(pred[b], gt[b], d))
        np.testing.assert_allclose(m.nme(pred, gt, norm), ref, rtol=1e-12)
        assert float(m.nme(pred[2], gt[2], norm)) == pytest.approx(ref[2], rel=1e-12)
    # a face without any present point: raise naming it, or NaN for it
    gt[1] = np.nan
    with pytest.raises(ValueError, match=r"face index \[1\]"):
        m.nme(pred, gt, "bbox")
    e = m.nme(pred, gt, "bbox", on_invalid="nan")
    assert np.isnan(e[1]) and np.isfinite(e[[0, 2, 3]]).all()
    d = m.normalising_distance(gt, "diagonal", on_invalid="nan")
    assert np.isnan(d[1]) and np.isfinite(d[[0, 2, 3]]).all()
    # given normalisers: a number, one per face, and the missing-point mean with a given d
    np.testing.assert_allclose(m.nme(pred, gt, 2.0, on_invalid="nan")[[0, 2, 3]],
                               [ref_nme(pred[b], gt[b], 2.0) for b in (0, 2, 3)], rtol=1e-12)
    with pytest.raises(ValueError, match="no present point"):
        m.nme(pred, gt, 2.0)
    assert np.isnan(m.nme(pred, gt, 2.0, on_invalid="nan")[1])


def test_invalid_normaliser_messages():
    gt, rs = random_faces(12, 5, 20)
    pred = gt + 1.0
    d = np.ones(12)
    d[:11] = 0.0
    with pytest.raises(ValueError, match=r"face index \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] and 1 more \(values"):
        m.nme(pred, gt, d)
    d[10] = 1.0
    with pytest.raises(ValueError, match=r"face index \[0, 1, 2, 3, 4, 5, 6, 7, 8, 9\] \(values"):
        m.nme(pred, gt, d)
    # the landmark box of a face without present points is NaN, that of a single point 0
    g = gt[:3].copy()
    g[1] = np.nan
    with pytest.raises(ValueError, match=r"\(bbox\) is zero or not finite for face index \[1\] \(values \[nan\]\)"):
        m.normalising_distance(g, "bbox")
    g[1, 2] = (4.0, 5.0)
    with pytest.raises(ValueError, match=r"\(diagonal\) is zero or not finite for face index \[1\] \(values \[0.0\]\)"):
        m.normalising_distance(g, "diagonal")


def test_small_normalised_coordinates():
    """Shapes in normalised units (a face of size ~1): normalisers and segments shorter than 1."""
    sch, pred, gt = _perturbed_faces("ibug68", 2, 21)
    pred, gt = pred / 400.0, gt / 400.0
    gt[1, [38, 60]] = np.nan
    a, b = sch.interocular
    got = m.nme_curve(pred, gt, sch)
    for f in range(2):
        d = ref_point_dist(gt[f, a], gt[f, b])
        assert d < 1
        assert got[f] == pytest.approx(ref_nme_curve(pred[f], gt[f], curves_of(sch), curves_of(sch), d), rel=1e-10)
    for f in range(2):
        w, h = ref_landmark_box(gt[f])
        assert m.nme(pred, gt, "bbox")[f] == pytest.approx(ref_nme(pred[f], gt[f], math.sqrt(w * h)), rel=1e-12)


def test_eye_normalisers_against_formula():
    sch = get_scheme("wflw98")
    pred, rs = random_faces(3, 98, 2)
    gt = pred + rs.normal(size=pred.shape)
    io = [ref_point_dist(gt[b, 60], gt[b, 72]) for b in range(3)]
    np.testing.assert_allclose(m.nme(pred, gt, "interocular", scheme=sch),
                               [ref_nme(pred[b], gt[b], io[b]) for b in range(3)], rtol=1e-12)
    le, re = gt[:, list(sch.left_eye)].mean(1), gt[:, list(sch.right_eye)].mean(1)
    ip = [ref_point_dist(le[b], re[b]) for b in range(3)]
    np.testing.assert_allclose(m.normalising_distance(gt, "interpupil", scheme="wflw98"), ip, rtol=1e-12)
    with pytest.raises(ValueError, match="98 points but the shapes have 68"):
        m.nme(pred[:, :68], gt[:, :68], scheme="wflw98")
    with pytest.raises(TypeError, match="scheme must be a Scheme"):
        m.nme(pred, gt, scheme=3)


def test_point_var_with_missing_points_against_loops():
    pred, rs = random_faces(3, 10, 3)
    gt = pred + rs.normal(size=pred.shape)
    gt[0, [1, 2]] = np.nan
    gt[2, 1:] = np.nan                       # one present point: a variance of 0, not an error

    def ref(b, d):
        diffs = [((pred[b, i, 0] - gt[b, i, 0]) / d, (pred[b, i, 1] - gt[b, i, 1]) / d)
                 for i in range(10) if not math.isnan(gt[b, i, 0])]
        mx = sum(q[0] for q in diffs) / len(diffs)
        my = sum(q[1] for q in diffs) / len(diffs)
        return sum((q[0] - mx) ** 2 + (q[1] - my) ** 2 for q in diffs) / len(diffs)

    v = m.point_var(pred, gt, norm=None, average=False)
    np.testing.assert_allclose(v, [ref(b, 1.0) for b in range(3)], rtol=1e-12, atol=1e-300)
    assert v[2] == 0.0
    np.testing.assert_allclose(m.point_var(pred, gt, norm=4.0, average=False), [ref(b, 4.0) for b in range(3)],
                               rtol=1e-12)
    assert m.point_var(pred, gt, norm=None) == pytest.approx(np.mean([ref(b, 1.0) for b in range(3)]), rel=1e-12)
    assert float(m.point_var(pred[0], gt[0], norm=None, average=False)) == pytest.approx(ref(0, 1.0), rel=1e-12)
    gt[1] = np.nan
    with pytest.raises(ValueError, match=r"no present point for face index \[1\]"):
        m.point_var(pred, gt, norm=None)
    w = m.point_var(pred, gt, norm=None, average=False, on_invalid="nan")
    assert np.isnan(w[1]) and np.isfinite(w[[0, 2]]).all()


# ----------------------------------------------------------------------------- nme_curve, polyline / points
def _perturbed_faces(scheme_name, b, seed, nan_points=()):
    sch = get_scheme(scheme_name)
    gt, rs = random_faces(b, sch.n_points, seed, spread=80.0)
    pred = gt + rs.normal(scale=3.0, size=gt.shape)
    for face, idx in nan_points:
        gt[face, idx] = np.nan
    return sch, pred, gt


@pytest.mark.parametrize("scheme_name", ["ibug68", "wflw98", "cofw29"])
@pytest.mark.parametrize("mode", ["polyline", "points"])
def test_nme_curve_against_point_to_segment_reference(scheme_name, mode):
    sch, pred, gt = _perturbed_faces(scheme_name, 3, 4)
    a, b = sch.interocular
    got = m.nme_curve(pred, gt, scheme_name, mode=mode)
    for f in range(3):
        d = ref_point_dist(gt[f, a], gt[f, b])
        ref = ref_nme_curve(pred[f], gt[f], curves_of(sch), curves_of(sch), d, vertices_only=mode == "points")
        assert got[f] == pytest.approx(ref, rel=1e-10)
    single = m.nme_curve(pred[1], gt[1], sch, mode=mode, norm=7.0)
    assert np.ndim(single) == 0
    assert float(single) == pytest.approx(
        ref_nme_curve(pred[1], gt[1], curves_of(sch), curves_of(sch), 7.0, mode == "points"), rel=1e-10)


def test_nme_curve_nan_ground_truth_points():
    """Missing landmarks: skipped, the true polyline runs through the remaining points (required by the issue)."""
    sch = get_scheme("ibug68")
    nan_points = [
        (0, [3, 4, 5]),          # inside the open jaw
        (0, [0, 16]),            # both jaw ends
        (0, [37, 40]),           # inside the closed left eye
        (1, [42]),               # the first vertex of the closed right eye (its closing segment moves)
        (1, [47]),               # and its last vertex
        (1, [48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58]),   # most of the closed outer lip: one point left
        (2, list(range(17, 22))),                             # a whole curve (left brow) missing
        (2, [27, 29]),
        (2, [44]),               # exactly one vertex missing from closed curves (the closing segment)
        (0, [64]),
        (1, [33]),               # and from an open one
    ]
    _, pred, gt = _perturbed_faces("ibug68", 3, 5, nan_points)
    for mode in ("polyline", "points"):
        got = m.nme_curve(pred, gt, sch, norm=np.array([10.0, 20.0, 5.0]), mode=mode)
        for f, d in enumerate((10.0, 20.0, 5.0)):
            ref = ref_nme_curve(pred[f], gt[f], curves_of(sch), curves_of(sch), d, vertices_only=mode == "points")
            assert got[f] == pytest.approx(ref, rel=1e-10), (mode, f)
    # pred sitting anywhere on the remaining true polyline has zero error
    g = gt[1].copy()
    pred_on = np.where(np.isfinite(g), g, 0.0)
    for c in sch.curves:
        idx = [i for i in c.indices if np.isfinite(g[i]).all()]
        for i in c.indices:
            if not np.isfinite(g[i]).all():
                pred_on[i] = g[idx[0]] if len(idx) == 1 else 0.5 * (g[idx[0]] + g[idx[1]])
    assert float(m.nme_curve(pred_on, g, sch, norm=1.0)) == pytest.approx(0.0, abs=1e-12)
    # a face whose every curve point is missing: raise naming it, or NaN for it
    gt2 = gt.copy()
    gt2[2] = np.nan
    with pytest.raises(ValueError, match=r"no present curve point for face index \[2\]"):
        m.nme_curve(pred, gt2, sch, norm=1.0)
    out = m.nme_curve(pred, gt2, sch, norm=1.0, on_invalid="nan")
    assert np.isnan(out[2]) and np.isfinite(out[:2]).all()


def test_nme_curve_short_curves_and_closed_flags():
    """One-point and two-point curves, open and closed (custom scheme)."""
    curves = (Curve("jaw", (0, 1, 2, 3), False), Curve("eye_left", (4, 5, 6), True),
              Curve("nose_tip", (7,), False), Curve("brow_left", (8, 9), False), Curve("lip_outer", (10, 11), True))
    sch = Scheme("toy12", 12, curves, (7,), (4, 6), (4,), (6,))
    pred, rs = random_faces(4, 12, 6, spread=30.0)
    gt = pred + rs.normal(scale=4.0, size=pred.shape)
    gt[3, [1, 5, 9]] = np.nan
    for mode in ("polyline", "points"):
        got = m.nme_curve(pred, gt, sch, norm=2.0, mode=mode)
        for f in range(4):
            ref = ref_nme_curve(pred[f], gt[f], curves_of(sch), curves_of(sch), 2.0, mode == "points")
            assert got[f] == pytest.approx(ref, rel=1e-10), (mode, f)
    # the one-point curve alone: plain point distances, both ways
    only = Scheme("one", 1, (Curve("nose_tip", (0,), False),), (0,), (0, 0), (0,), (0,))
    assert float(m.nme_curve([[3.0, 4.0]], [[0.0, 0.0]], only, norm=1.0)) == pytest.approx(5.0)
    # a closed triangle: a point beside the closing edge is near it; open, it is not
    tri = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]])
    for closed in (True, False):
        s = Scheme("tri", 4, (Curve("eye_left", (0, 1, 2), closed), Curve("nose_tip", (3,), False)),
                   (3,), (0, 1), (0,), (1,))
        p = np.vstack([tri, [[50.0, 50.0]]])
        g = np.vstack([tri, [[50.0, 50.0]]])
        p[1] = (6.0, 5.0)                 # inside the triangle, 1 px from the closing edge (0,0)-(10,10) (x - y = 1)
        # pred -> truth: (6, 5) to the closing edge: |6 - 5| / sqrt(2) if closed, else to the edge (10,0)-(10,10): 4
        d_pt = 1 / math.sqrt(2) if closed else 4.0
        ref = ref_nme_curve(p, g, curves_of(s), curves_of(s), 1.0)
        assert float(m.nme_curve(p, g, s, norm=1.0)) == pytest.approx(ref, rel=1e-12)
        # truth -> pred: vertex (10, 0) to the predicted polyline (0,0)-(6,5)-(10,10)[-(0,0)]
        d_back = min(ref_segment_dist((10.0, 0.0), (0.0, 0.0), (6.0, 5.0)),
                     ref_segment_dist((10.0, 0.0), (6.0, 5.0), (10.0, 10.0)))
        dists = [0.0, d_pt, 0.0, 0.0] + [0.0, d_back, 0.0, 0.0]   # eye points and nose tip, both ways
        assert ref == pytest.approx(sum(dists) / len(dists), rel=1e-12)
        assert float(m.nme_curve(p, g, s, norm=1.0)) == pytest.approx(sum(dists) / len(dists), rel=1e-12)


def test_nme_curve_cross_scheme_and_errors():
    """Prediction and truth in different schemes: only the shared curve names count."""
    ib = get_scheme("ibug68")
    sub = Scheme("sub", 9, (Curve("jaw", tuple(range(5)), False), Curve("eye_left", (5, 6, 7, 8), True)),
                 (), (5, 7), (5,), (7,))
    pred, rs = random_faces(2, 9, 7)
    _, _, gt = _perturbed_faces("ibug68", 2, 8, [(1, [2, 40])])
    got = m.nme_curve(pred, gt, sub, gt_scheme="ibug68", norm=3.0)
    for f in range(2):
        assert got[f] == pytest.approx(ref_nme_curve(pred[f], gt[f], curves_of(sub), curves_of(ib), 3.0),
                                       rel=1e-10)
    # the reverse direction, eye-based normaliser of the ground truth's scheme
    got2 = m.nme_curve(gt[:1] + 1.0, pred[:1], "ibug68", gt_scheme=sub)
    d = ref_point_dist(pred[0, 5], pred[0, 7])
    assert got2[0] == pytest.approx(ref_nme_curve(gt[0] + 1.0, pred[0], curves_of(ib), curves_of(sub), d),
                                    rel=1e-10)
    # a curve closed in one scheme and open in the other is compared as an open polyline
    sub_open = Scheme("sub_open", 9, (Curve("jaw", tuple(range(5)), False), Curve("eye_left", (5, 6, 7, 8), False)),
                      (), (5, 7), (5,), (7,))
    got_open = m.nme_curve(pred, gt, sub_open, gt_scheme=ib, norm=3.0)
    for f in range(2):
        assert got_open[f] == pytest.approx(
            ref_nme_curve(pred[f], gt[f], curves_of(sub_open), curves_of(ib), 3.0), rel=1e-10)
    ref_closed = ref_nme_curve(pred[0], gt[0], {"eye_left": ([5, 6, 7, 8], True)}, {"eye_left": (list(range(36, 42)), True)}, 3.0)
    ref_open = ref_nme_curve(pred[0], gt[0], {"eye_left": ([5, 6, 7, 8], False)}, {"eye_left": (list(range(36, 42)), True)}, 3.0)
    assert ref_closed != pytest.approx(ref_open)     # the data tells the two apart
    # one face each (P != Q points)
    one = m.nme_curve(pred[1], gt[1], sub, gt_scheme=ib, norm=3.0)
    assert np.ndim(one) == 0
    assert float(one) == pytest.approx(ref_nme_curve(pred[1], gt[1], curves_of(sub), curves_of(ib), 3.0), rel=1e-10)
    with pytest.raises(ValueError, match="mode must be one of"):
        m.nme_curve(pred, gt, sub, gt_scheme="ibug68", norm=1.0, mode="icp")
    with pytest.raises(ValueError, match="same number of faces"):
        m.nme_curve(pred[0], gt, sub, gt_scheme="ibug68", norm=1.0)
    with pytest.raises(ValueError, match="share no curve name"):
        m.nme_curve(pred, gt[:, :5], sub, gt_scheme="mtfl5", norm=1.0)
    with pytest.raises(TypeError, match="gt_scheme must be a Scheme"):
        m.nme_curve(pred, gt, sub, gt_scheme=5, norm=1.0)


# ----------------------------------------------------------------------------- nme_curve, official LDDMM-Face
def test_curve_regions_match_the_official_groups():
    r = m.curve_regions("ibug68")
    assert list(r) == ["edge", "eyebrow", "nose", "eye", "mouth"]
    for k, v in IBUG68_REGIONS.items():
        assert r[k].tolist() == v
    w = m.curve_regions(get_scheme("wflw98"))
    expect = {"edge": range(0, 33), "eyebrow": range(33, 51), "nose": range(51, 60), "eye": range(60, 76),
              "mouth": range(76, 96)}
    assert {k: v.tolist() for k, v in w.items()} == {k: list(v) for k, v in expect.items()}   # pupils 96, 97 in none
    assert list(m.curve_regions("aflw19")) == ["eyebrow", "nose", "mouth"]


@pytest.mark.parametrize("scheme_name", ["ibug68", "wflw98"])
def test_nme_curve_lddmm_face_against_official_formula(scheme_name):
    sch, pred, gt = _perturbed_faces(scheme_name, 3, 9)
    regions = IBUG68_REGIONS if scheme_name == "ibug68" else regions_by_prefix(sch)
    a, b = sch.interocular
    got = m.nme_curve(pred, gt, scheme_name, mode="lddmm_face")
    for f in range(3):
        d = ref_point_dist(gt[f, a], gt[f, b])
        assert got[f] == pytest.approx(ref_lddmm_face(pred[f], gt[f], regions, regions, d), rel=1e-12)
    one = m.nme_curve(pred[2], gt[2], sch, mode="lddmm_face", norm=4.0)
    assert np.ndim(one) == 0
    assert float(one) == pytest.approx(ref_lddmm_face(pred[2], gt[2], regions, regions, 4.0), rel=1e-12)


def test_nme_curve_lddmm_face_cross_scheme_and_missing_points():
    """Different point counts per region (n != m) and NaN ground truth, against the official formula."""
    ib = get_scheme("ibug68")
    curves, k = [], 0
    for c in ib.curves:      # a denser pred scheme: one extra point per curve
        curves.append(Curve(c.name, tuple(range(k, k + len(c.indices) + 1)), c.closed))
        k += len(c.indices) + 1
    dense = Scheme("dense", k, tuple(curves), (0,), (curves[5].indices[0], curves[6].indices[3]), (0,), (1,))
    pred, rs = random_faces(3, k, 10, spread=80.0)
    _, _, gt = _perturbed_faces("ibug68", 3, 11, [(1, [0, 5, 20, 36, 50]), (2, list(range(17, 27)) + [60])])
    got = m.nme_curve(pred, gt, dense, gt_scheme=ib, norm=np.array([2.0, 3.0, 4.0]), mode="lddmm_face")
    for f, d in enumerate((2.0, 3.0, 4.0)):
        ref = ref_lddmm_face(pred[f], gt[f], regions_by_prefix(dense), IBUG68_REGIONS, d)
        assert got[f] == pytest.approx(ref, rel=1e-12), f
    # face 2 lacks its whole eyebrow region: the mean runs over the four regions it has
    assert np.isfinite(got).all()
    gt_none = gt.copy()
    gt_none[0] = np.nan
    with pytest.raises(ValueError, match=r"no present curve point for face index \[0\]"):
        m.nme_curve(pred, gt_none, dense, gt_scheme=ib, norm=1.0, mode="lddmm_face")
    out = m.nme_curve(pred, gt_none, dense, gt_scheme=ib, norm=1.0, mode="lddmm_face", on_invalid="nan")
    assert np.isnan(out[0]) and np.isfinite(out[1:]).all()
    mt = get_scheme("mtfl5")
    with pytest.raises(ValueError, match="share no LDDMM-Face region"):
        m.nme_curve(np.zeros((5, 2)), np.zeros((5, 2)), mt, norm=1.0, mode="lddmm_face")


def test_lddmm_face_exceeds_polyline_between_vertices():
    """A prediction sliding along the true curve: 0 for the polyline, vertex distances for the official metric."""
    sch = get_scheme("ibug68")
    gt = np.zeros((68, 2))
    gt[:, 0] = np.arange(68.0) * 2.0
    gt[:, 1] = np.arange(68.0) % 3
    gt[:17, 1] = 0.0                                # a straight jaw
    pred = gt.copy()
    pred[1:16] = 0.5 * (gt[1:16] + gt[2:17])       # jaw points halfway to their next vertex
    assert float(m.nme_curve(pred, gt, sch, norm=1.0)) == pytest.approx(0.0, abs=1e-12)
    ref = ref_lddmm_face(pred, gt, IBUG68_REGIONS, IBUG68_REGIONS, 1.0)
    assert ref > 0
    assert float(m.nme_curve(pred, gt, sch, norm=1.0, mode="lddmm_face")) == pytest.approx(ref, rel=1e-12)


# ----------------------------------------------------------------------------- CED / AUC / failure rate
def ref_trapezoid_auc(errors, T, n):
    th = [T * k / (n - 1) for k in range(n)]
    ced_ = [sum(e <= t for e in errors) / len(errors) for t in th]
    return sum(0.5 * (ced_[k] + ced_[k + 1]) * (th[k + 1] - th[k]) for k in range(n - 1)) / T


def test_ced_auc_default_grid_and_formula():
    errors = [0.0501, 0.013, 0.2, 0.0777]
    th, frac = m.ced(errors, 0.1)                          # default grid: 1001 thresholds
    assert th.shape == frac.shape == (1001,)
    assert th[1] == pytest.approx(1e-4) and th[-1] == pytest.approx(0.1)
    np.testing.assert_allclose(frac, [sum(e <= t for e in errors) / 4 for t in th])
    assert m.auc(errors, 0.1) == pytest.approx(ref_trapezoid_auc(errors, 0.1, 1001), rel=1e-12)
    assert m.auc(errors, 0.1) != pytest.approx(ref_trapezoid_auc(errors, 0.1, 1002), rel=1e-6)
    for n in (2, 3, 17):
        assert m.auc(errors, 0.08, n) == pytest.approx(ref_trapezoid_auc(errors, 0.08, n), rel=1e-12)
    assert m.failure_rate(errors, 0.0777) == 0.25          # strictly greater fails
    assert m.failure_rate(errors, 0.05) == 0.75

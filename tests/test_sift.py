"""Shape-indexed SIFT: slow NumPy reference, OpenCV agreement, invariants, threads, bad input."""
import math

import numpy as np
import pytest
from scipy import ndimage

from flmcore.sift import OPENCV_SMOOTH, shape_indexed_sift, similarity_frames


# ----------------------------------------------------------------------------- reference
def reference_sift(img, x, y, window, theta, smooth=OPENCV_SMOOTH):
    """Independent float64 implementation of the documented descriptor (slow, vectorised per point)."""
    img = np.asarray(img, np.float64)
    if img.dtype == np.uint8:
        img = img / 255.0
    sm = ndimage.gaussian_filter(img, smooth, mode="mirror", truncate=4.0) if smooth > 0 else img
    H, W = sm.shape
    gx = np.zeros_like(sm)
    gy = np.zeros_like(sm)
    gx[1:-1, 1:-1] = 0.5 * (sm[1:-1, 2:] - sm[1:-1, :-2])
    gy[1:-1, 1:-1] = 0.5 * (sm[:-2, 1:-1] - sm[2:, 1:-1])  # y axis up
    mag = np.hypot(gx, gy)
    ori = np.mod(np.arctan2(gy, gx), 2 * np.pi)
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float64)
    cw = window / 4.0
    dx, dy = cc - x, rr - y
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / cw
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / cw
    keep = (np.abs(u) < 2.5) & (np.abs(v) < 2.5) & (mag > 0)
    u, v, m, o = u[keep], v[keep], mag[keep], ori[keep]
    d2 = dx[keep] ** 2 + dy[keep] ** 2
    m = m * np.exp(-d2 / (2.0 * (2.0 * cw) ** 2))
    rb, cb = v + 1.5, u + 1.5
    ob = np.mod((o + theta) * 8.0 / (2 * np.pi), 8.0)
    r0, c0, o0 = np.floor(rb).astype(int), np.floor(cb).astype(int), np.floor(ob).astype(int)
    fr, fc, fo = rb - r0, cb - c0, ob - o0
    hist = np.zeros((4, 4, 8))
    for dr in (0, 1):
        wr = fr if dr else 1 - fr
        for dc in (0, 1):
            wc = fc if dc else 1 - fc
            for do in (0, 1):
                wo = fo if do else 1 - fo
                ri, ci, oi = r0 + dr, c0 + dc, (o0 + do) % 8
                ok = (ri >= 0) & (ri < 4) & (ci >= 0) & (ci < 4)
                np.add.at(hist, (ri[ok], ci[ok], oi[ok]), (m * wr * wc * wo)[ok])
    d = hist.ravel()
    n = np.linalg.norm(d)
    if n <= 1e-12:
        return np.zeros(128)
    d = np.minimum(d / n, 0.2)
    return d / np.linalg.norm(d)


@pytest.fixture(scope="module")
def faces(helen_pairs):
    return helen_pairs["images"][:6], helen_pairs["shapes68"][:6]


def _smooth_image(rng, H=48, W=56):
    return ndimage.gaussian_filter(rng.random((H, W)), 1.5).astype(np.float32)


# ----------------------------------------------------------------------------- reference agreement
def test_matches_numpy_reference(rng):
    img = _smooth_image(rng)
    pts = np.array([[20.3, 25.7], [1.2, 3.9], [54.0, 46.5], [30.0, 24.0], [-3.0, 10.0], [28.6, 47.2]])
    windows = np.array([16.0, 12.0, 20.0, 9.5, 18.0, 24.0])
    thetas = np.array([0.0, 0.4, -1.3, math.pi, 2.5, 0.05])
    got = shape_indexed_sift(img[None], pts[None], window=windows[None], orientation=thetas[None])[0]
    for p in range(len(pts)):
        want = reference_sift(img, pts[p, 0], pts[p, 1], windows[p], thetas[p])
        np.testing.assert_allclose(got[p], want, atol=2e-6, err_msg=f"point {p}")


def test_matches_reference_without_smoothing_and_uint8(rng):
    img = (rng.random((40, 40)) * 255).astype(np.uint8)
    pts = np.array([[19.5, 20.25], [5.0, 33.0]])
    got = shape_indexed_sift(img, pts, window=14.0, orientation=0.7, smooth=0)
    for p in range(2):
        want = reference_sift(img / 255.0, pts[p, 0], pts[p, 1], 14.0, 0.7, smooth=0)
        np.testing.assert_allclose(got[p], want, atol=2e-6)


def test_descriptor_properties(rng):
    img = _smooth_image(rng)
    d = shape_indexed_sift(img, rng.uniform(10, 40, (7, 2)), window=16.0)
    assert d.dtype == np.float32 and d.shape == (7, 128)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, rtol=1e-5)
    assert (d >= 0).all()


# ----------------------------------------------------------------------------- OpenCV agreement
def _cosines(a, b):
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


@pytest.mark.parametrize("angle_deg", [0.0, 25.0])
def test_agrees_with_opencv_on_real_faces(faces, angle_deg):
    cv2 = pytest.importorskip("cv2")
    images, shapes = faces
    window = 24.0
    sift = cv2.SIFT_create()
    med_int, med_sub = [], []
    for img, shp in zip(images, shapes):
        kps = [cv2.KeyPoint(float(x), float(y), window / 6.0, angle_deg) for x, y in shp]
        kps, dcv = sift.compute(img, kps)
        pts = np.array([k.pt for k in kps])
        # OpenCV rounds the centre to the nearest pixel: compare there, and at the sub-pixel points
        d_int = shape_indexed_sift(img, np.round(pts), window=window, orientation=math.radians(angle_deg))
        d_sub = shape_indexed_sift(img, pts, window=window, orientation=math.radians(angle_deg))
        med_int.append(np.median(_cosines(d_int, dcv)))
        med_sub.append(np.median(_cosines(d_sub, dcv)))
    assert np.median(med_int) >= 0.99
    assert np.median(med_sub) >= 0.95


# ----------------------------------------------------------------------------- invariants
def _warp(img, A, t, out_shape):
    """out(p) = img(A^-1 (p - t)) with p = (x, y): bicubic, for a similarity A."""
    Ainv = np.linalg.inv(A)
    # ndimage works in (row, col) = (y, x)
    M = Ainv[::-1, ::-1]
    off = -(M @ t[::-1])
    return ndimage.affine_transform(img.astype(np.float64), M, offset=off, output_shape=out_shape, order=3,
                                    mode="nearest").astype(np.float32)


def test_rotation_and_scale_normalisation(faces):
    images, shapes = faces
    img = images[0].astype(np.float32) / 255.0
    shp = shapes[0]
    inner = shp[17:]  # brows, nose, eyes, mouth: well inside the crop
    mean = inner - inner.mean(0)
    ang, s = math.radians(30.0), 1.3
    A = s * np.array([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    c = np.array([63.5, 63.5])
    t = c - A @ c + np.array([10.0, 5.0])
    H = 180
    warped = _warp(img, A, t, (H, H))
    inner_w = inner @ A.T + t
    d0 = shape_indexed_sift(img, inner, window=24.0, orientation="shape", reference=mean)
    d1 = shape_indexed_sift(warped, inner_w, window=24.0, orientation="shape", reference=mean)
    follow = np.median(_cosines(d0, d1))
    # fixed frames (same pixel window, upright) do not follow the similarity
    f0 = shape_indexed_sift(img, inner, window=24.0 * similarity_frames(inner, mean)[0], orientation=0.0)
    f1 = shape_indexed_sift(warped, inner_w, window=24.0 * similarity_frames(inner, mean)[0], orientation=0.0)
    fixed = np.median(_cosines(f0, f1))
    assert follow >= 0.9, follow
    assert fixed < follow - 0.1, (fixed, follow)
    sc, an = similarity_frames(inner_w, mean)
    sc0, an0 = similarity_frames(inner, mean)
    assert sc / sc0 == pytest.approx(s, rel=1e-9) and an - an0 == pytest.approx(ang, abs=1e-9)


def test_illumination_affine_invariance(rng):
    img = _smooth_image(rng)
    pts = rng.uniform(5, 45, (9, 2))
    d0 = shape_indexed_sift(img, pts, window=15.0, orientation=0.3)
    d1 = shape_indexed_sift(0.35 * img + 0.4, pts, window=15.0, orientation=0.3)
    np.testing.assert_allclose(d0, d1, atol=1e-5)


def test_border_handling(rng):
    img = _smooth_image(rng, 32, 32)
    far = np.array([[-500.0, 10.0], [10.0, 1e9], [-1e12, -1e12], [40.0, 40.0]])
    d = shape_indexed_sift(img, far, window=8.0)
    assert np.all(d[:3] == 0)
    # (40, 40) with an 8-pixel window reaches back into the 32x32 image: partial support
    want = reference_sift(img, 40.0, 40.0, 8.0, 0.0)
    np.testing.assert_allclose(d[3], want, atol=2e-6)
    # a window much larger than the image stays in bounds and matches the reference
    big = shape_indexed_sift(img, [[16.0, 16.0]], window=400.0)
    np.testing.assert_allclose(big[0], reference_sift(img, 16.0, 16.0, 400.0, 0.0), atol=2e-6)
    # a flat image has no gradient: zeros, no NaN
    flat = shape_indexed_sift(np.full((20, 20), 0.5, np.float32), [[10.0, 10.0]], window=8.0)
    assert np.all(flat == 0)


def test_deterministic_across_thread_counts(faces):
    images, shapes = faces
    a = shape_indexed_sift(images, shapes, window=20.0, orientation=0.2, num_threads=1)
    b = shape_indexed_sift(images, shapes, window=20.0, orientation=0.2, num_threads=2)
    c = shape_indexed_sift(images, shapes, window=20.0, orientation=0.2, num_threads=3)
    d = shape_indexed_sift(images, shapes, window=20.0, orientation=0.2, num_threads=4)  # chunked path
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)


def test_axis_aligned_path_matches_reference(rng):
    # angle-0 frames use the separable (orientation-channel) path: same descriptor as the reference
    img = _smooth_image(rng, 40, 52)
    pts = np.concatenate([rng.uniform(-6.0, 58.0, (10, 2)), [[0.0, 0.0], [51.0, 39.0], [25.5, 19.5]]])
    windows = np.concatenate([rng.uniform(5.0, 40.0, 10), [8.0, 12.0, 200.0]])
    thetas = np.zeros(len(pts))
    thetas[3] = -0.0
    got = shape_indexed_sift(img[None], pts[None], window=windows[None], orientation=thetas[None])[0]
    for p in range(len(pts)):
        want = reference_sift(img, pts[p, 0], pts[p, 1], windows[p], 0.0)
        np.testing.assert_allclose(got[p], want, atol=2e-6, err_msg=f"point {p}")
    # mixing rotated frames into the batch does not change the angle-0 descriptors
    mixed = thetas.copy()
    mixed[::2] = 0.3
    got2 = shape_indexed_sift(img[None], pts[None], window=windows[None], orientation=mixed[None])[0]
    assert np.array_equal(got2[1::2], got[1::2])
    np.testing.assert_allclose(got2[0], reference_sift(img, pts[0, 0], pts[0, 1], windows[0], 0.3), atol=2e-6)


def test_axis_aligned_deterministic_across_thread_counts(faces):
    images, shapes = faces
    # 1-3 threads: whole images per thread; 4 threads on 6 images: the chunked images x points path
    a = shape_indexed_sift(images, shapes, window=30.0, num_threads=1)
    for nt in (2, 3, 4):
        assert np.array_equal(a, shape_indexed_sift(images, shapes, window=30.0, num_threads=nt)), nt


def test_batch_equals_single(faces):
    images, shapes = faces
    batch = shape_indexed_sift(images[:3], shapes[:3], window=18.0)
    for b in range(3):
        assert np.array_equal(batch[b], shape_indexed_sift(images[b], shapes[b], window=18.0))


def test_per_point_parameters(rng):
    img = _smooth_image(rng)
    pts = rng.uniform(10, 40, (2, 3, 2))
    imgs = np.stack([img, img[::-1].copy()])
    win = np.array([[10.0, 12.0, 14.0], [9.0, 11.0, 13.0]])
    ori = np.array([0.1, -0.5])
    d = shape_indexed_sift(imgs, pts, window=win, orientation=ori)
    for b in range(2):
        for p in range(3):
            np.testing.assert_allclose(d[b, p], reference_sift(imgs[b], *pts[b, p], win[b, p], ori[b]), atol=2e-6)


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs(rng):
    img = _smooth_image(rng, 20, 20)
    pts = np.array([[5.0, 5.0], [10.0, 12.0]])
    with pytest.raises(TypeError, match="images"):
        shape_indexed_sift(img.astype(np.complex64), pts)
    with pytest.raises(TypeError, match="images"):
        shape_indexed_sift(img.astype(bool), pts)
    with pytest.raises(ValueError, match="grayscale"):
        shape_indexed_sift(np.zeros((20, 20, 3), np.uint8), pts)
    with pytest.raises(ValueError, match="same number of faces"):
        shape_indexed_sift(np.stack([img, img]), np.stack([pts, pts, pts]))
    with pytest.raises(ValueError, match="shapes"):
        shape_indexed_sift(np.stack([img, img]), pts)  # a batch of images needs (B, P, 2)
    with pytest.raises(ValueError, match="NaN"):
        shape_indexed_sift(img, np.array([[np.nan, 1.0], [2.0, 3.0]]))
    with pytest.raises(ValueError, match="shapes"):
        shape_indexed_sift(img, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="window"):
        shape_indexed_sift(img, pts, window=0.0)
    with pytest.raises(ValueError, match="window"):
        shape_indexed_sift(img, pts, window=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="window"):
        shape_indexed_sift(img, pts, window=1e9)
    with pytest.raises(ValueError, match="orientation"):
        shape_indexed_sift(img, pts, orientation="upright")
    with pytest.raises(ValueError, match="reference"):
        shape_indexed_sift(img, pts, orientation="shape")
    with pytest.raises(ValueError, match="reference"):
        shape_indexed_sift(img, pts, reference=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="smooth"):
        shape_indexed_sift(img, pts, smooth=10.0)
    with pytest.raises(ValueError, match="smooth"):
        shape_indexed_sift(img, pts, smooth=-1.0)
    with pytest.raises(ValueError, match="num_threads"):
        shape_indexed_sift(img, pts, num_threads=0)
    with pytest.raises(ValueError, match="images"):
        shape_indexed_sift(np.zeros((2, 30), np.float32), pts)

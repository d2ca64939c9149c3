"""flmcore.crop on real images, against independent references.

* bilinear resampling: ``scipy.ndimage.map_coordinates(order=1)`` at ``T^-1 u`` (pixel centres at
  integers; <= 1 grey level) and OpenCV ``cv2.warpAffine(INTER_LINEAR)`` with the forward matrix
  (OpenCV 4 quantises positions to 1/32 px: 99 % of pixels within 1 grey level);
* anti-aliasing: a 1-pixel checkerboard shrunk 4x must become uniform grey (plain bilinear does
  not), and a downscaled real photo must match an area-averaged reference;
* geometry: a bright marker drawn in a real face lands where ``transform_points`` puts it, and
  ``uncrop_points`` inverts ``transform_points`` exactly.
"""
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, map_coordinates

from flmcore.crop import (DEFAULT_MARGIN, as_rgb, check_box, crop_image, crop_transform, landmark_box,
                          transform_points, uncrop_points)


@pytest.fixture(scope="module")
def photo(helen_pairs):
    """A real colour photo (three real faces as R, G, B), 128 x 128, with the face of channel R."""
    im = helen_pairs["images"]
    return np.stack([im[10], im[11], im[12]], -1), helen_pairs["shapes68"][10]


def reference_bilinear(img, T, size, fill=0):
    """Independent bilinear crop: sample the image at T^-1 (u, v) with pixel centres at integers."""
    inv = np.linalg.inv(T)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x = inv[0, 0] * u + inv[0, 1] * v + inv[0, 2]
    y = inv[1, 0] * u + inv[1, 1] * v + inv[1, 2]
    h, w = img.shape[:2]
    out = np.stack([map_coordinates(img[..., c].astype(np.float64), [y, x], order=1, mode="nearest")
                    for c in range(img.shape[2])], -1)
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    outside = (x < -0.5) | (x > w - 0.5) | (y < -0.5) | (y > h - 0.5)
    out[outside] = fill
    return out, inside, outside


CASES = [  # box, size, margin, angle, shift, flip: upscaling and mild downscaling (no box reduction)
    ([30, 35, 100, 110], 96, 1.25, 0.0, (0, 0), False),
    ([30, 35, 100, 110], 96, 1.25, 17.0, (0.05, -0.03), True),
    ([20, 20, 90, 100], 160, 1.6, -30.0, (0, 0.1), False),   # partly outside the image
    ([40, 30, 80, 90], 200, 1.0, 8.0, (0, 0), False),         # 2.7x upscaling
    ([0, 0, 127, 127], 70, 1.1, 45.0, (0, 0), True),          # 0.5 < s < 1
]


@pytest.mark.parametrize("box, size, margin, angle, shift, flip", CASES)
def test_crop_matches_bilinear_references(photo, box, size, margin, angle, shift, flip):
    img = photo[0]
    T = crop_transform(box, size, margin=margin, angle=angle, shift=shift, flip=flip)
    assert np.sqrt(abs(np.linalg.det(T[:2, :2]))) > 0.5  # no anti-aliasing in these cases
    crop = crop_image(img, T, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8 and crop.flags.writeable
    ref, inside, outside = reference_bilinear(img, T, size)
    assert inside.sum() > 0.5 * size * size
    assert np.abs(crop.astype(float) - ref)[inside].max() <= 1.0
    assert (crop[outside] == 0).all()


@pytest.mark.parametrize("box, size, margin, angle, shift, flip", CASES)
def test_crop_matches_opencv_warp_affine(photo, box, size, margin, angle, shift, flip):
    cv2 = pytest.importorskip("cv2")
    img = photo[0]
    T = crop_transform(box, size, margin=margin, angle=angle, shift=shift, flip=flip)
    crop = crop_image(img, T, size)
    _, inside, _ = reference_bilinear(img, T, size)
    cv = cv2.warpAffine(img, T[:2].astype(np.float64), (size, size), flags=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    d = np.abs(crop.astype(int) - cv.astype(int))[inside]
    # OpenCV 4 rounds sample positions to 1/32 pixel (INTER_BITS = 5): a few grey levels on sharp edges
    assert np.percentile(d, 99) <= 1 and d.mean() < 0.6 and d.max() <= 6


def test_crop_fill_and_a_crop_that_misses_the_image(photo):
    img = photo[0]
    T = crop_transform([100, 100, 140, 140], 48, margin=2.0)
    crop = crop_image(img, T, 48, fill=(10, 20, 30))
    _, _, outside = reference_bilinear(img, T, 48)
    assert outside.any() and (crop[outside] == [10, 20, 30]).all()
    far = crop_image(img, crop_transform([1000, 1000, 1050, 1040], 32), 32, fill=7)
    assert far.shape == (32, 32, 3) and (far == 7).all() and far.flags.writeable


def test_grayscale_and_float_inputs_give_the_same_crop(photo):
    g = photo[0][..., 0]
    T = crop_transform([30, 35, 100, 110], 64, angle=10.0)
    a = crop_image(g, T, 64)
    b = crop_image(g.astype(np.float32) / 255.0, T, 64)
    c = crop_image(np.dstack([g, g, g, np.full_like(g, 255)]), T, 64)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


@pytest.mark.parametrize("side, max_std", [(400, 1.0), (460, 15.0), (530, 15.0)])
def test_antialiasing_checkerboard_becomes_uniform_grey(side, max_std):
    yy, xx = np.mgrid[0:side, 0:side]
    board = (((xx + yy) % 2) * 255).astype(np.uint8)
    # the crop square is the whole board (pixel edges -0.5 .. side - 0.5): a side/100 x reduction
    T = crop_transform([-0.5, -0.5, side - 0.5, side - 0.5], 100, margin=1.0)
    crop = crop_image(board, T, 100)[5:-5, 5:-5, 0].astype(float)
    assert abs(crop.mean() - 127.5) < 3 and crop.std() < max_std
    if side % 100:  # plain bilinear sampling of the same board aliases badly (what the box reduction avoids)
        plain, inside, _ = reference_bilinear(board[..., None], T, 100)
        assert plain[5:-5, 5:-5, 0].std() > 40


def test_antialiased_downscale_of_a_real_photo(photo):
    big = np.kron(photo[0][..., 0], np.ones((5, 5), np.uint8))  # 640 x 640, a real face
    big = gaussian_filter(big.astype(float), 1.0).round().astype(np.uint8)
    # exactly 5x: crop pixel (u, v) covers the image block [5u, 5u + 5) x [5v, 5v + 5)
    T = crop_transform([-0.5, -0.5, 639.5, 639.5], 128, margin=1.0)
    crop = crop_image(big, T, 128)[..., 0].astype(float)
    ref = big.reshape(128, 5, 128, 5).astype(float).mean((1, 3))  # area average of each 5x5 block
    assert np.abs(crop - ref).max() <= 2.0 and np.abs(crop - ref).mean() < 0.6  # uint8 rounding twice
    # a non-integer factor (5.6x) stays close to a smoothed reference
    T2 = crop_transform([-0.5, -0.5, 639.5, 639.5], 114, margin=1.0)
    crop2 = crop_image(big, T2, 114)[..., 0].astype(float)
    ref2, inside, _ = reference_bilinear(gaussian_filter(big.astype(float), 2.4)[..., None], T2, 114)
    d = np.abs(crop2 - ref2[..., 0])[inside]
    assert d.mean() < 2.0 and d.max() < 25


def test_antialiased_geometry_keeps_a_blob_in_place():
    img = np.zeros((600, 500), np.uint8)
    img[301:306, 201:206] = 255  # centre (203, 303)
    T = crop_transform([100, 150, 420, 520], 64, margin=1.25, angle=12.0)  # ~7x reduction
    crop = crop_image(img, T, 64)[..., 0].astype(float)
    v, u = np.mgrid[0:64, 0:64]
    centroid = [(u * crop).sum() / crop.sum(), (v * crop).sum() / crop.sum()]
    np.testing.assert_allclose(centroid, transform_points([[203.0, 303.0]], T)[0], atol=0.15)


@pytest.mark.parametrize("angle, flip", [(0.0, False), (25.0, False), (-30.0, True)])
def test_marker_in_a_real_face_lands_at_the_transformed_point(photo, angle, flip):
    img, shape = photo
    img = img.copy()
    p = np.round(shape[45])  # outer corner of the image-right eye, on a pixel centre
    marked = img.copy()
    marked[int(p[1]), int(p[0])] = 255
    box = landmark_box(shape)
    T = crop_transform(box, 160, angle=angle, flip=flip, shift=(0.02, -0.04))
    diff = crop_image(marked, T, 160).astype(float) - crop_image(img, T, 160).astype(float)
    d = np.abs(diff).sum(-1)
    v, u = np.mgrid[0:160, 0:160]
    centroid = np.array([(u * d).sum() / d.sum(), (v * d).sum() / d.sum()])
    expected = transform_points(p[None], T)[0]
    np.testing.assert_allclose(centroid, expected, atol=0.25)
    peak = np.unravel_index(np.argmax(d), d.shape)[::-1]
    assert np.abs(np.array(peak) - expected).max() <= 1.0
    # and back: the crop point uncrops to the marked pixel
    np.testing.assert_allclose(uncrop_points(centroid[None], T)[0], p, atol=0.25)


def test_crop_convention_and_rotation_direction():
    box = [10, 20, 50, 40]  # centre (30, 30), longer side 40
    T = crop_transform(box, 64, margin=1.5)  # side 60 image px -> 64 crop px
    np.testing.assert_allclose(transform_points([[30.0, 30.0]], T), [[31.5, 31.5]])
    # the crop square's outer edges (image x = 0 and x = 60) are the crop's pixel edges -0.5 and 63.5
    np.testing.assert_allclose(transform_points([[0.0, 30.0], [60.0, 0.0]], T), [[-0.5, 31.5], [63.5, -0.5]])
    assert np.allclose(np.linalg.det(T[:2, :2]), (64 / 60) ** 2)
    # scale > 1 zooms in, shift moves the crop centre by a fraction of its side
    Tz = crop_transform(box, 64, margin=1.5, scale=2.0, shift=(0.25, 0.0))
    np.testing.assert_allclose(transform_points([[30.0 + 0.25 * 30, 30.0]], Tz), [[31.5, 31.5]])
    np.testing.assert_allclose(np.linalg.det(Tz[:2, :2]), (64 / 30) ** 2)
    # positive angle: a point right of the centre in the image appears above the centre in the crop,
    # i.e. the face turns counter-clockwise on screen (the crop window turns clockwise)
    Tr = crop_transform(box, 64, margin=1.5, angle=90.0)
    np.testing.assert_allclose(transform_points([[40.0, 30.0]], Tr), [[31.5, 31.5 - 10 * 64 / 60]], atol=1e-9)
    # flip mirrors about the box centre
    Tf = crop_transform(box, 64, margin=1.5, flip=True)
    np.testing.assert_allclose(transform_points([[40.0, 25.0]], Tf),
                               [[31.5 - 10 * 64 / 60, 31.5 - 5 * 64 / 60]], atol=1e-9)
    assert DEFAULT_MARGIN == 1.25


def test_uncrop_inverts_crop_points(rng):
    pts = rng.uniform(-20, 300, (5, 68, 2))
    pts[0, 3] = np.nan
    Ts = np.stack([crop_transform(rng.uniform(0, 100, 2).tolist() + rng.uniform(150, 250, 2).tolist(),
                                  int(rng.integers(32, 300)), margin=rng.uniform(1, 2),
                                  angle=rng.uniform(-40, 40), scale=rng.uniform(0.8, 1.2),
                                  shift=rng.uniform(-0.1, 0.1, 2), flip=bool(i % 2)) for i in range(5)])
    back = uncrop_points(transform_points(pts, Ts), Ts)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    assert np.isnan(back[0, 3]).all()
    for i in range(5):  # batch == one by one
        np.testing.assert_allclose(transform_points(pts[i], Ts[i]), transform_points(pts, Ts)[i])


def test_landmark_box_and_check_box_errors():
    np.testing.assert_allclose(landmark_box([[[1, 2], [5, 9], [np.nan, np.nan]], [[0, 0], [3, 3], [1, 1]]]),
                               [[1, 2, 5, 9], [0, 0, 3, 3]])
    with pytest.raises(ValueError, match="at least one annotated"):
        landmark_box(np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="y1 > y0"):
        check_box([0, 5, 10, 5])
    with pytest.raises(ValueError, match="outside the image"):
        check_box([200, 10, 260, 60], image_size=(100, 150))
    with pytest.raises(ValueError, match="outside the image"):
        check_box([10, -90, 60, -1], image_size=(100, 150))
    with pytest.raises(ValueError):
        check_box([0, 0, np.inf, 5])
    with pytest.raises(ValueError, match="invertible"):
        crop_image(np.zeros((10, 10), np.uint8), np.diag([0.0, 1.0, 1.0]), 8)
    for size in (0, -3):  # a crop of no pixels is an error naming size, in both functions
        with pytest.raises(ValueError, match="size"):
            crop_transform([0, 0, 10, 10], size)
        with pytest.raises(ValueError, match="size"):
            crop_image(np.zeros((10, 10), np.uint8), np.eye(3), size)
    assert crop_transform([0, 0, 10, 10], 1).shape == (3, 3)  # one pixel is allowed


def test_as_rgb_conversions():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    np.testing.assert_array_equal(as_rgb(g), np.dstack([g, g, g]))
    np.testing.assert_array_equal(as_rgb(g[..., None]), np.dstack([g, g, g]))
    np.testing.assert_array_equal(as_rgb(g.astype(np.float64) / 255.0), np.dstack([g, g, g]))
    np.testing.assert_array_equal(as_rgb(g.astype(np.uint16) * 257), np.dstack([g, g, g]))
    rgba = np.dstack([g, g, g, np.zeros_like(g)])
    np.testing.assert_array_equal(as_rgb(rgba), np.dstack([g, g, g]))
    with pytest.raises(ValueError, match="NaN"):
        as_rgb(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        as_rgb(np.zeros((2, 2, 5), np.uint8))


def test_box_boundaries_and_longer_side():
    """Mutation-found gaps: degenerate boxes, boxes touching the image edge, the side of a tall box."""
    from flmcore.crop import check_box, crop_transform

    with pytest.raises(ValueError, match="x1 > x0"):
        check_box([5.0, 0.0, 5.0, 10.0])
    with pytest.raises(ValueError, match="x1 > x0"):
        check_box([0.0, 5.0, 10.0, 5.0])
    # touching the image from outside (edges at -0.5 / W - 0.5) still overlaps; beyond does not
    assert check_box([-10.0, -10.0, -0.5, -0.5], image_size=(100, 80)) is not None
    assert check_box([79.5, 99.5, 90.0, 120.0], image_size=(100, 80)) is not None
    with pytest.raises(ValueError, match="outside"):
        check_box([10.0, 150.0, 50.0, 200.0], image_size=(100, 80))  # below the image, x inside
    with pytest.raises(ValueError, match="outside"):
        check_box([90.0, 10.0, 95.0, 50.0], image_size=(100, 80))  # right of the image, y inside
    # a tall box: the crop side is margin x its height (independent formula)
    T = crop_transform([0.0, 0.0, 10.0, 40.0], 100, margin=1.5)
    assert np.isclose(np.hypot(T[0, 0], T[1, 0]), 100 / (1.5 * 40.0))


def test_one_pixel_image_is_valid():
    from flmcore.crop import as_rgb

    assert as_rgb(np.zeros((1, 1), np.uint8)).shape == (1, 1, 3)

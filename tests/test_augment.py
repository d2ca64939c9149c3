"""flmcore.augment and the per-scheme flip permutations (flmcore.schemes.flip_permutation).

References written here: the standard 300-W flip table typed out by hand, the schemes' own
left/right structure (curves, eyes, outer eye corners), real mean faces (HELEN 68 and 29 points,
AFLW-21) for mirror symmetry, and bright marker pixels in real faces for "points move exactly with
the image".
"""
import numpy as np
import pytest

from flmcore.augment import (PRESETS, Augmentation, augmented_crop, color_jitter, gaussian_blur,
                             get_augmentation, hflip_points, occlude, to_grayscale)
from flmcore.crop import crop_image, crop_transform, landmark_box, transform_points
from flmcore.schemes import flip_permutation, get_scheme, list_schemes

# ----------------------------------------------------------------------------- flip tables
PAIRS_300W = ([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]
              + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46),
                 (48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])
SELF_300W = [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]


def test_ibug68_flip_equals_the_standard_300w_table():
    ref = np.arange(68)
    for a, b in PAIRS_300W:
        ref[a], ref[b] = b, a
    assert sorted(SELF_300W + [i for p in PAIRS_300W for i in p]) == list(range(68))
    np.testing.assert_array_equal(flip_permutation("ibug68"), ref)


@pytest.mark.parametrize("name", list_schemes())
def test_flip_is_an_involution_matching_the_scheme_structure(name):
    s = get_scheme(name)
    perm = flip_permutation(name)
    assert perm.dtype.kind == "i" and sorted(perm.tolist()) == list(range(s.n_points))
    np.testing.assert_array_equal(perm[perm], np.arange(s.n_points))
    # image-left and image-right swap: eyes, outer eye corners, left/right curves; the others map to themselves
    assert sorted(perm[list(s.left_eye)]) == sorted(s.right_eye)
    assert sorted(perm[list(s.interocular)]) == sorted(s.interocular) and perm[s.interocular[0]] == s.interocular[1]
    names = {c.name: c for c in s.curves}
    for c in s.curves:
        if c.name.endswith("_left"):
            other = names[c.name[:-5] + "_right"]
            assert sorted(perm[list(c.indices)]) == sorted(other.indices), c.name
        elif not c.name.endswith("_right"):
            assert sorted(perm[list(c.indices)]) == sorted(c.indices), c.name


@pytest.mark.parametrize("name", list_schemes())
def test_flipping_twice_is_identity_and_commutes_with_the_mean(name, rng):
    n = get_scheme(name).n_points
    shapes = rng.uniform(0, 200, (12, n, 2))
    shapes[3, 0] = np.nan
    twice = hflip_points(hflip_points(shapes, 200, name), 200, name)
    np.testing.assert_allclose(twice, shapes)
    once = hflip_points(shapes, 200, name)
    # the flipped point is the mirrored point of the partner index (x -> W - 1 - x)
    perm = flip_permutation(name)
    np.testing.assert_allclose(once[..., 0], 199.0 - shapes[:, perm, 0])
    np.testing.assert_allclose(once[..., 1], shapes[:, perm, 1])
    mean = np.nanmean(shapes, 0)
    np.testing.assert_allclose(hflip_points(mean, 200, name), np.nanmean(once, 0))
    with pytest.raises(ValueError, match="shape"):
        hflip_points(np.zeros((n + 1, 2)), 10, name)


def _real_mean_faces():
    from conftest import load_bundled_sample

    hp = load_bundled_sample("helen_pairs")
    af = load_bundled_sample("aflw2000")
    out = {"ibug68": hp["shapes68"], "helen_zhou29": hp["shapes29"], "cofw29": hp["shapes29"],
           "aflw21": af["pts21"][np.abs(af["yaw"]) < 10]}
    return out


def test_flipped_real_mean_face_is_the_mean_face():
    """A frontal mean face is mirror-symmetric: mirrored + relabelled, it lands on itself."""
    for name, shapes in _real_mean_faces().items():
        normed = []
        for s in shapes:
            b = landmark_box(s)
            normed.append((s - b[:2]) / max(b[2] - b[0], b[3] - b[1]))
        normed = np.array(normed)
        mean = np.nanmean(normed, 0)
        flipped_mean = hflip_points(mean, 1.0, name)
        mean_of_flipped = np.nanmean(hflip_points(normed, 1.0, name), 0)
        np.testing.assert_allclose(flipped_mean, mean_of_flipped, atol=1e-12)
        # symmetric up to a horizontal shift (the mirror axis is not the face's axis)
        dx = np.nanmean(flipped_mean[:, 0] - mean[:, 0])
        resid = np.abs(flipped_mean - mean - [dx, 0.0])
        assert np.nanmax(resid) < 0.06, (name, np.nanmax(resid))
        # mirrored without relabelling (the identity table) it is far from itself: the test has teeth
        mirrored = mean * [-1.0, 1.0]
        dx0 = np.nanmean(mirrored[:, 0] - mean[:, 0])
        assert np.nanmax(np.abs(mirrored - mean - [dx0, 0.0])) > 0.2


def test_unknown_scheme_has_no_flip():
    with pytest.raises(ValueError, match="nope"):
        flip_permutation("nope")


# ----------------------------------------------------------------------------- augmented crops
@pytest.fixture(scope="module")
def face(helen_pairs):
    """A real face photo (colour from three real crops) enlarged to a non-square 150 x 170."""
    from PIL import Image

    im = helen_pairs["images"]
    rgb = np.stack([im[20], im[21], im[22]], -1)
    big = np.asarray(Image.fromarray(rgb).resize((150, 170), Image.BILINEAR))
    sx, sy = 150 / 128, 170 / 128
    pts = (helen_pairs["shapes68"][20] + 0.5) * [sx, sy] - 0.5
    return big.copy(), pts


def _marker_centroid(image, point, **kw):
    """Crop ``image`` with a white and with a black 3x3 marker centred on the pixel ``point``:
    the intensity centroid of the difference is where the crop puts the marker."""
    x, y = int(round(point[0])), int(round(point[1]))
    white, black = image.copy(), image.copy()
    white[y - 1:y + 2, x - 1:x + 2] = 255
    black[y - 1:y + 2, x - 1:x + 2] = 0
    a = augmented_crop(white, **kw)
    b = augmented_crop(black, **kw)
    d = (a[0].astype(float) - b[0].astype(float)).sum(-1)
    assert d.min() >= 0 and d.max() > 100
    v, u = np.mgrid[0:d.shape[0], 0:d.shape[1]]
    return np.array([(u * d).sum() / d.sum(), (v * d).sum() / d.sum()]), a


def test_preset_none_is_the_plain_crop_exactly(face):
    img, pts = face
    box = landmark_box(pts)
    for seed in range(3):
        crop, p, T = augmented_crop(img, pts, box, 96, scheme="ibug68", augmentation="none", rng=seed)
        T0 = crop_transform(box, 96)
        np.testing.assert_array_equal(T, T0)
        np.testing.assert_array_equal(crop, crop_image(img, T0, 96))
        np.testing.assert_array_equal(p, transform_points(pts, T0))
    crop2, _, _ = augmented_crop(img, pts, box, 96, scheme="ibug68", augmentation=None, rng=5)
    np.testing.assert_array_equal(crop2, crop)


def test_reproducible_from_a_seed(face):
    img, pts = face
    box = landmark_box(pts)
    runs = [augmented_crop(img, pts, box, 64, scheme="ibug68", augmentation="flmcore", rng=s) for s in (7, 7, 8)]
    g = augmented_crop(img, pts, box, 64, scheme="ibug68", augmentation="flmcore", rng=np.random.default_rng(7))
    for x, y in zip(runs[0], runs[1]):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(runs[0], g):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(runs[0][0], runs[2][0])


def test_switching_one_augmentation_off_leaves_the_others_alone(face):
    img, pts = face
    box = landmark_box(pts)
    full = get_augmentation("flmcore").replace(occlusion_p=1.0, color_p=1.0, blur_p=0.0)
    no_colour = full.replace(color_p=0.0)
    for seed in range(4):
        a = augmented_crop(img, pts, box, 64, scheme="ibug68", augmentation=full, rng=seed)
        b = augmented_crop(img, pts, box, 64, scheme="ibug68", augmentation=no_colour, rng=seed)
        np.testing.assert_array_equal(a[2], b[2])  # same geometry
        np.testing.assert_array_equal(a[1], b[1])
        # same occlusion rectangle: the pixels that equal the rectangle colour in a equal it in b
        ra = (a[0] == a[0][_occluded_pixel(a[0])]).all(-1)
        rb = (b[0] == b[0][_occluded_pixel(b[0])]).all(-1)
        assert (ra & rb).sum() >= 0.9 * min(ra.sum(), rb.sum())


def _occluded_pixel(c):
    """A pixel of the largest constant-colour axis-aligned block (the occlusion rectangle)."""
    flat = c.reshape(-1, 3)
    vals, counts = np.unique(flat, axis=0, return_counts=True)
    col = vals[np.argmax(counts)]
    i = np.flatnonzero((flat == col).all(-1))[0]
    return np.unravel_index(i, c.shape[:2])


@pytest.mark.parametrize("field, check", [
    ("gray_p", "gray"), ("blur_p", "blur"), ("occlusion_p", "occlusion"), ("color_p", "color")])
def test_each_photometric_augmentation_acts_and_switches_off(face, field, check):
    img, pts = face
    box = landmark_box(pts)
    none = PRESETS["none"]
    on = none.replace(**{field: 1.0}, **({"color": 0.3} if field == "color_p" else {}))
    plain = augmented_crop(img, pts, box, 80, scheme="ibug68", augmentation=none, rng=3)[0]
    for seed in (1, 3, 4):  # blur radii 2.7, 2.6, 2.4 px (seed 0 draws ~0)
        c, p, T = augmented_crop(img, pts, box, 80, scheme="ibug68", augmentation=on, rng=seed)
        np.testing.assert_array_equal(T, crop_transform(box, 80))  # photometric only
        if check == "gray":
            assert (c[..., 0] == c[..., 1]).all() and (c[..., 1] == c[..., 2]).all()
            np.testing.assert_array_equal(c, to_grayscale(plain))
        elif check == "blur":  # radius U(0, 5 * 80 / 256): never sharper, here always smoother
            assert np.abs(np.diff(c.astype(float), axis=1)).mean() < np.abs(np.diff(plain.astype(float), axis=1)).mean()
        elif check == "occlusion":
            changed = (c != plain).any(-1)
            if changed.any():
                ys, xs = np.nonzero(changed)
                rect = c[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
                assert (rect == rect[0, 0]).all()  # one constant-colour rectangle
                assert (xs.max() - xs.min() + 1) <= 0.4 * 80 + 1
        else:
            assert not np.array_equal(c, plain)
        off = on.replace(**{field: 0.0})
        np.testing.assert_array_equal(augmented_crop(img, pts, box, 80, scheme="ibug68", augmentation=off,
                                                     rng=seed)[0], plain)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_augmentation_moves_points_exactly_with_the_image(face, seed):
    img, pts = face
    box = landmark_box(pts)
    geo = PRESETS["none"].replace(rotate_p=1.0, rotate=30.0, shift_p=1.0, shift=0.1, scale_p=1.0, scale=0.1)
    for idx in (30, 36, 48):  # nose tip, an eye corner, a mouth corner
        p = np.round(pts[idx])
        shape = pts.copy()
        shape[idx] = p
        centroid, (crop, out, T) = _marker_centroid(img, p, points=shape, box=box, size=128, scheme="ibug68",
                                                    augmentation=geo, rng=seed)
        assert abs(np.degrees(np.arctan2(T[1, 0], T[0, 0]))) > 0.1  # really rotated
        np.testing.assert_allclose(centroid, out[idx], atol=0.3)


def test_flip_mirrors_image_and_relabels_points(face):
    img, pts = face
    box = landmark_box(pts)
    flip = PRESETS["none"].replace(flip=1.0)
    plain, pp, _ = augmented_crop(img, pts, box, 96, scheme="ibug68", augmentation="none", rng=0)
    crop, pf, T = augmented_crop(img, pts, box, 96, scheme="ibug68", augmentation=flip, rng=0)
    assert np.abs(crop.astype(int) - plain[:, ::-1].astype(int)).max() <= 1  # the mirror image
    np.testing.assert_allclose(pf, hflip_points(pp, 96, "ibug68"), atol=1e-9)
    # the face's image-left eye (36-41 before the flip) is on the image right of the mirrored crop,
    # where its points now carry the indices 42-47; 36-41 again name the eye on the image left
    assert transform_points(pts[36:42], T)[:, 0].mean() > 48 + 5
    np.testing.assert_allclose(np.sort(pf[42:48, 0]), np.sort(transform_points(pts[36:42], T)[:, 0]))
    assert pf[36:42, 0].mean() < 48 - 5 and pf[42:48, 0].mean() > 48 + 5
    assert pf[36, 0] < pf[39, 0] < pf[42, 0] < pf[45, 0]  # outer-left ... outer-right, as in any face
    # the marker drawn at the image-left outer eye corner (36) shows up at output point 45
    p = np.round(pts[36])
    shape = pts.copy()
    shape[36] = p
    centroid, (_, out, _) = _marker_centroid(img, p, points=shape, box=box, size=96, scheme="ibug68",
                                             augmentation=flip, rng=0)
    np.testing.assert_allclose(centroid, out[45], atol=0.3)


def test_nan_points_stay_nan_and_box_outside_the_image(face):
    img, pts = face
    p = pts.copy()
    p[5] = np.nan
    _, out, _ = augmented_crop(img, p, landmark_box(p), 64, scheme="ibug68", augmentation="pipnet", rng=1)
    assert np.isnan(out[5]).all() and np.isfinite(np.delete(out, 5, 0)).all()
    with pytest.raises(ValueError, match="outside the image"):
        augmented_crop(img, pts, [400, 400, 480, 470], 64, scheme="ibug68", rng=0)


# ----------------------------------------------------------------------------- helpers and presets
def test_photometric_helpers(face):
    img = face[0][:40, :50]
    y = 0.299 * img[..., 0] + 0.587 * img[..., 1] + 0.114 * img[..., 2]
    g = to_grayscale(img)
    assert np.abs(g[..., 0] - y).max() <= 0.51 and (g[..., 0] == g[..., 2]).all()
    np.testing.assert_array_equal(color_jitter(img, 1.0, 1.0, 1.0), img)
    dark = color_jitter(img, 0.5, 1.0, 1.0)
    assert np.abs(dark.astype(float) - img * 0.5).max() <= 1.0
    np.testing.assert_array_equal(gaussian_blur(img, 0.0), img)
    from scipy.ndimage import gaussian_filter
    bl = gaussian_blur(img, 2.0).astype(float)
    ref = np.stack([gaussian_filter(img[..., c].astype(float), 2.0, mode="nearest") for c in range(3)], -1)
    assert np.abs(bl - ref)[4:-4, 4:-4].mean() < 2.0
    o = occlude(img, (-5, 10, 20, 8), (1, 2, 3))
    assert (o[10:18, :15] == [1, 2, 3]).all() and (o[:10] == img[:10]).all() and (img[10, 0] != [1, 2, 3]).any()


def test_presets_and_options():
    assert PRESETS["pipnet"].rotate == 30.0 and PRESETS["pipnet"].flip == 0.5
    assert PRESETS["legacy"].flip == 0.0 and PRESETS["legacy"].occlusion_p == 0.0
    n = PRESETS["none"]
    assert n.flip == n.rotate_p == n.shift_p == n.scale_p == n.blur_p == n.occlusion_p == n.gray_p == n.color_p == 0
    assert get_augmentation({"preset": "pipnet", "rotate": 10.0}).rotate == 10.0
    with pytest.raises(ValueError, match="rotatee"):
        get_augmentation({"rotatee": 1.0})
    with pytest.raises(ValueError, match="preset"):
        get_augmentation("heavy")
    with pytest.raises(ValueError, match="flip"):
        Augmentation(flip=1.5)
    with pytest.raises(ValueError, match="scale"):
        Augmentation(scale=1.0)
    with pytest.raises(TypeError):
        get_augmentation(3)


def test_geometric_jitter_ranges_are_symmetric_and_bounded():
    """Recover rotation, zoom and shift from T over many seeds: inside the configured ranges, both signs."""
    from flmcore.augment import Augmentation, augmented_crop
    from flmcore.crop import crop_transform

    img = np.zeros((120, 100, 3), np.uint8)
    pts = np.full((68, 2), 50.0)
    box = [30.0, 30.0, 70.0, 80.0]
    base = crop_transform(box, 32)
    aug = Augmentation(flip=0.0, rotate_p=1.0, rotate=30.0, shift_p=1.0, shift=0.1, scale_p=1.0, scale=0.2,
                       blur_p=0.0, occlusion_p=0.0, gray_p=0.0)
    angles, zooms, shifts = [], [], []
    s0 = np.hypot(base[0, 0], base[1, 0])
    for seed in range(150):
        _, _, T = augmented_crop(img, pts, box, 32, scheme="ibug68", augmentation=aug, rng=seed)
        angles.append(np.degrees(np.arctan2(T[0, 1], T[0, 0])))
        zooms.append(np.hypot(T[0, 0], T[1, 0]) / s0)
        centre = np.linalg.solve(T[:2, :2], np.array([15.5, 15.5]) - T[:2, 2])  # image point at the crop centre
        shifts.append((centre - [50.0, 55.0]) / (1.25 * 50.0 / zooms[-1]))
    angles, zooms, shifts = np.array(angles), np.array(zooms), np.array(shifts)
    assert angles.min() < -20 and angles.max() > 20 and np.abs(angles).max() <= 30 + 1e-9
    assert zooms.min() < 0.9 and zooms.max() > 1.1 and zooms.min() >= 0.8 - 1e-9 and zooms.max() <= 1.2 + 1e-9
    assert shifts.min() < -0.06 and shifts.max() > 0.06 and np.abs(shifts).max() <= 0.1 + 1e-9


def test_photometric_helpers_match_their_formulas():
    """to_grayscale, color_jitter and occlude against float64 formulas written here."""
    from flmcore.augment import color_jitter, occlude, to_grayscale

    rs = np.random.default_rng(11)
    img = rs.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    w = np.array([0.299, 0.587, 0.114])
    y = np.clip(np.floor(img.astype(float) @ w + 0.5), 0, 255)
    g = to_grayscale(img)
    assert g.shape == img.shape and np.abs(g[..., 0].astype(int) - y).max() <= 1 and (g[..., 0] == g[..., 2]).all()
    b, c, s = 1.1, 0.8, 1.3
    x = img.astype(float) * b
    lum = x @ w
    x = (x - lum.mean()) * c + lum.mean()
    lum = x @ w
    x = (x - lum[..., None]) * s + lum[..., None]
    ref = np.clip(np.floor(x + 0.5), 0, 255)
    assert np.abs(color_jitter(img, b, c, s).astype(int) - ref).max() <= 1
    o = occlude(img, (0, 0, 3, 2), (1, 2, 3))
    assert (o[:2, :3] == [1, 2, 3]).all() and (o[2:] == img[2:]).all() and (o[:, 3:] == img[:, 3:]).all()


def test_presets_hold_the_documented_values():
    from flmcore.augment import PRESETS, Augmentation

    p = PRESETS["pipnet"]
    assert (p.flip, p.rotate_p, p.rotate, p.shift_p, p.shift) == (0.5, 0.5, 30.0, 0.5, 30.0 / 256.0)
    assert (p.blur_p, p.blur, p.occlusion_p, p.occlusion, p.gray_p, p.scale_p, p.color_p) == \
        (0.3, 5.0, 0.5, 0.4, 0.2, 0.0, 0.0)
    f = PRESETS["flmcore"]
    assert (f.scale_p, f.scale, f.color_p, f.color) == (0.5, 0.1, 0.5, 0.25)
    legacy = PRESETS["legacy"]
    assert (legacy.flip, legacy.rotate, legacy.shift, legacy.scale, legacy.color, legacy.occlusion_p) == \
        (0.0, 15.0, 0.06, 0.1, 0.2, 0.0)
    with pytest.raises(ValueError, match="occlusion"):
        Augmentation(occlusion=1.5)


def test_occlusion_rectangle_is_at_most_the_configured_size():
    from flmcore.augment import Augmentation, augmented_crop

    img = np.full((100, 100, 3), 128, np.uint8)
    aug = Augmentation(flip=0.0, rotate_p=0.0, shift_p=0.0, blur_p=0.0, gray_p=0.0, occlusion_p=1.0, occlusion=0.4)
    sizes = []
    for seed in range(40):
        crop, _, _ = augmented_crop(img, np.full((68, 2), 50.0), [20, 20, 80, 80], 64, scheme="ibug68",
                                    augmentation=aug, rng=seed)
        changed = (crop != 128).any(-1)
        sizes.append(changed.sum())
    assert max(sizes) <= (0.4 * 64) ** 2 and max(sizes) > 0.25 * (0.4 * 64) ** 2

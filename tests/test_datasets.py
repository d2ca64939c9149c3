"""flmcore.datasets: real images of any size and colour, folders of .pts, list formats, splits, boxes.

References are written here independently of flmcore: PIL decodes and NumPy rotations for
images, hand-written iBUG .pts / COCO / HRNet / WFLW files, zlib.crc32 for the name split.
The faces are the bundled HELEN sample (real photos), so this runs wherever the tests run.
"""
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flmcore.crop import check_box
from flmcore.datasets import LandmarkDataset, load_image


# ----------------------------------------------------------------------------- helpers
def write_pts(path, pts):
    """An iBUG .pts file (1-based coordinates), written without flmcore."""
    lines = ["version: 1", f"n_points: {len(pts)}", "{"]
    lines += [f"{x + 1:.6f} {y + 1:.6f}" for x, y in pts]
    lines.append("}")
    Path(path).write_text("\n".join(lines) + "\n")


def colour_face(sample, i):
    """A real RGB photo: three different real face crops as the R, G and B channels."""
    im = sample["images"]
    return np.stack([im[i], im[(i + 1) % len(im)], im[(i + 2) % len(im)]], -1)


@pytest.fixture
def face_folder(tmp_path, helen_pairs):
    """Six real faces at different sizes, as JPEG / PNG (gray, RGB, RGBA) + 1-based .pts, in two sub-folders."""
    root = tmp_path / "faces"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    specs = [("a/img01_1", 0, 128, ".jpg", "L"), ("a/img01_2", 1, 200, ".jpg", "RGB"),
             ("a/img07", 2, 96, ".png", "RGBA"), ("b/img10", 3, 160, ".png", "L"),
             ("b/img11", 4, 150, ".JPG", "RGB"), ("b/img12", 5, 128, ".png", "RGB")]
    truth = {}
    for name, i, side, ext, mode in specs:
        rgb = colour_face(helen_pairs, i)
        scale = side / 128.0
        im = Image.fromarray(rgb).resize((side, int(side * 1.25)), Image.BILINEAR)
        pts = helen_pairs["shapes68"][i] * [scale, 1.25 * scale] + [0.5 * scale - 0.5, 0.5 * 1.25 * scale - 0.5]
        if mode == "L":
            im = im.convert("L")
        elif mode == "RGBA":
            im = im.convert("RGBA")
        im.save(root / (name + ext))
        write_pts(root / (name + ".pts"), pts)
        truth[name] = (pts, (int(side * 1.25), side))
    return root, truth


# ----------------------------------------------------------------------------- load_image
def test_load_image_grayscale_jpeg_replicated(tmp_path, helen_pairs):
    f = tmp_path / "g.jpg"
    Image.fromarray(helen_pairs["images"][3]).save(f, quality=92)
    ref = np.asarray(Image.open(f).convert("L"))
    out = load_image(f)
    assert out.shape == ref.shape + (3,) and out.dtype == np.uint8
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], ref)
    assert np.abs(out[..., 0].astype(int) - helen_pairs["images"][3]).mean() < 3  # it is the photo


def test_load_image_rgba_png_composited_on_black(tmp_path, helen_pairs):
    rgb = colour_face(helen_pairs, 0)
    alpha = np.tile(np.linspace(0, 255, rgb.shape[1]).astype(np.uint8), (rgb.shape[0], 1))
    f = tmp_path / "a.png"
    Image.fromarray(np.dstack([rgb, alpha])).save(f)
    ref = rgb.astype(np.float64) * alpha[..., None] / 255.0
    out = load_image(f)
    assert out.shape == rgb.shape
    assert np.abs(out - ref).max() <= 1.0
    np.testing.assert_array_equal(out[:, 0], 0)            # alpha 0: black
    np.testing.assert_array_equal(out[:, -1], rgb[:, -1])  # alpha 255: the pixels


@pytest.mark.parametrize("orientation, k", [(6, -1), (8, 1), (3, 2)])
def test_load_image_exif_orientation(tmp_path, helen_pairs, orientation, k):
    rgb = colour_face(helen_pairs, 7)[:, 10:110]  # not square: a transpose bug changes the shape
    f = tmp_path / f"o{orientation}.jpg"
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(f, quality=95, subsampling=0, exif=exif.tobytes())
    with Image.open(f) as im:
        assert im.getexif().get(0x0112) == orientation
        stored = np.asarray(im.convert("RGB"))
    out = load_image(f)
    # orientation 6: the stored pixels are shown rotated 90 deg clockwise; 8: counter-clockwise; 3: 180
    np.testing.assert_array_equal(out, np.rot90(stored, k))
    err = np.abs(out.astype(int) - np.rot90(rgb, k)).mean()
    assert err < 3 and err < 0.2 * np.abs(out.astype(int) - np.rot90(rgb, k)[::-1]).mean()


def test_load_image_16bit_png(tmp_path, helen_pairs):
    g = helen_pairs["images"][5]
    f = tmp_path / "g16.png"
    Image.fromarray(g.astype(np.uint16) * 257).save(f)
    out = load_image(f)
    assert out.shape == g.shape + (3,)
    assert np.abs(out[..., 1].astype(int) - g).max() <= 1


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(bad)
    with pytest.raises(ValueError, match="missing.png"):
        load_image(tmp_path / "missing.png")


# ----------------------------------------------------------------------------- from_folder
def test_from_folder_real_faces(face_folder):
    root, truth = face_folder
    ds = LandmarkDataset.from_folder(root, "ibug68")
    assert len(ds) == 6 and ds.scheme.name == "ibug68"
    assert ds.names == sorted(truth)  # sorted by path, names relative without suffix
    for i, name in enumerate(ds.names):
        pts, hw = truth[name]
        np.testing.assert_allclose(ds.shapes[i], pts, atol=1e-5)  # 1-based file -> 0-based
        box = [pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()]
        np.testing.assert_allclose(ds.boxes[i], box, atol=1e-5)
        item = ds[i]
        assert item["image"].shape == hw + (3,) and item["image"].dtype == np.uint8
        assert item["name"] == name and Path(item["file"]).stem == Path(name).name
        # the landmarks lie on the face: the pixel statistics inside the box differ from an empty frame
        assert item["image"].std() > 10
    assert {ds[i]["image"].shape[:2] for i in range(len(ds))} == {hw for _, hw in truth.values()}
    ds_flat = LandmarkDataset.from_folder(root / "a", "ibug68", recursive=False)
    assert len(ds_flat) == 3


def test_from_folder_is_lazy(face_folder, helen_pairs):
    root, _ = face_folder
    ds = LandmarkDataset.from_folder(root)
    f = Path(ds.files[-1])
    Image.fromarray(np.full((40, 30, 3), 77, np.uint8)).save(f)  # replaced after construction
    assert ds[len(ds) - 1]["image"].shape == (40, 30, 3)


def test_from_folder_wrong_point_count_names_the_file(face_folder):
    root, truth = face_folder
    write_pts(root / "b" / "img10.pts", truth["b/img10"][0][:60])
    with pytest.raises(ValueError, match="img10.pts"):
        LandmarkDataset.from_folder(root, "ibug68")


def test_from_folder_unreadable_image_names_it(face_folder):
    root, _ = face_folder
    (root / "b" / "img12.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = LandmarkDataset.from_folder(root)
    i = ds.names.index("b/img12")
    with pytest.raises(ValueError, match="img12.png"):
        ds[i]


def test_from_folder_missing_image_and_bad_root(face_folder, tmp_path):
    root, truth = face_folder
    write_pts(root / "orphan.pts", truth["b/img10"][0])
    with pytest.raises(ValueError, match="orphan.pts"):
        LandmarkDataset.from_folder(root)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no .pts"):
        LandmarkDataset.from_folder(empty)
    with pytest.raises(ValueError, match="not a folder"):
        LandmarkDataset.from_folder(tmp_path / "nowhere")


def test_unknown_scheme(face_folder):
    root, _ = face_folder
    with pytest.raises(ValueError, match="ibug67"):
        LandmarkDataset.from_folder(root, "ibug67")
    with pytest.raises(ValueError, match="nope"):
        LandmarkDataset.from_arrays(["a.jpg"], np.zeros((1, 68, 2)), "nope")
    with pytest.raises(ValueError, match="shapes must have shape"):
        LandmarkDataset.from_arrays(["a.jpg"], np.zeros((1, 68, 2)), "wflw98")


# ----------------------------------------------------------------------------- boxes
def test_box_outside_the_image(face_folder):
    root, _ = face_folder
    ds = LandmarkDataset.from_folder(root)
    h, w = ds[0]["image"].shape[:2]
    with pytest.raises(ValueError, match="outside the image"):
        check_box([w + 5, 10, w + 50, 60], image_size=(h, w))
    with pytest.raises(ValueError, match="x1 > x0"):
        ds.with_boxes(np.tile([50.0, 10, 20, 60], (len(ds), 1)))
    far = ds.with_boxes(np.tile([5000.0, 5000, 5100, 5100], (len(ds), 1)))
    with pytest.raises(ValueError, match=os.path.basename(ds.files[0])):
        far[0]  # the box misses its image: the error names the file
    check_box([-10, -10, 0, 0], image_size=(h, w))  # touching the corner pixel is fine


def test_with_boxes_array_json_and_detector(face_folder):
    root, _ = face_folder
    ds = LandmarkDataset.from_folder(root)
    lb = ds.boxes
    shifted = lb + [3, -2, 5, 4]
    np.testing.assert_allclose(ds.with_boxes(shifted).boxes, shifted)
    js = {"images": [{"file": f, "faces": [{"box": [0, 0, 3, 3]}, {"box": b.tolist()}]}
                     for f, b in zip(ds.files, shifted)]}
    p = root / "boxes.json"
    p.write_text(json.dumps(js))
    np.testing.assert_allclose(ds.with_boxes(p).boxes, shifted)  # the overlapping box is chosen
    p.write_text(json.dumps({"images": js["images"][:-1]}))
    with pytest.raises(ValueError, match="no box for face"):
        ds.with_boxes(p)

    calls = []

    def detector(image):
        calls.append(image.shape)
        i = len(calls) - 1  # faces are visited in order
        return np.zeros((0, 4)) if i == 1 else np.array([[0, 0, 2, 2], lb[i] + [-4, 2, 6, 9]], float)

    out = ds.with_boxes(detector)
    assert len(calls) == len(ds) and all(len(s) == 3 for s in calls)
    assert out.missed == [1]
    np.testing.assert_allclose(out.boxes[1], lb[1])
    np.testing.assert_allclose(out.boxes[[0, 2, 5]], lb[[0, 2, 5]] + [-4, 2, 6, 9])


# ----------------------------------------------------------------------------- other formats
def test_from_coco(tmp_path, helen_pairs):
    shapes = helen_pairs["shapes68"][:3]
    for i in range(3):
        Image.fromarray(helen_pairs["images"][i]).save(tmp_path / f"p{i}.png")
    kp = []
    for s in shapes:
        flat = np.concatenate([s, np.full((68, 1), 2.0)], 1)
        flat[5, 2] = 0  # unlabelled point
        kp.append(flat.ravel().tolist())
    js = {"images": [{"id": 10 + i, "file_name": f"p{i}.png"} for i in range(3)],
          "annotations": [{"id": 100 + i, "image_id": 10 + i, "keypoints": kp[i], "bbox": [1, 2, 30, 40]}
                          for i in range(3)]}
    (tmp_path / "ann.json").write_text(json.dumps(js))
    ds = LandmarkDataset.from_coco(tmp_path / "ann.json", tmp_path, "ibug68")
    exp = shapes.copy()
    exp[:, 5] = np.nan
    np.testing.assert_allclose(ds.shapes, exp)
    np.testing.assert_allclose(ds.source_boxes, np.tile([1, 2, 31, 42], (3, 1)))
    np.testing.assert_array_equal(ds[2]["image"][..., 0], helen_pairs["images"][2])
    assert np.isfinite(ds.boxes).all()  # the landmark box ignores the missing point


def test_from_hrnet_csv(tmp_path, helen_pairs):
    shapes = helen_pairs["shapes68"][:2]
    rows = ["image_name,scale,center_w,center_h," + ",".join(f"original_{i}_x,original_{i}_y" for i in range(68))]
    for i, s in enumerate(shapes):
        Image.fromarray(helen_pairs["images"][i]).save(tmp_path / f"q{i}.jpg")
        rows.append(f"q{i}.jpg,1.0,64,64," + ",".join(f"{v:.6f}" for v in (s + 1).ravel()))
    (tmp_path / "face.csv").write_text("\n".join(rows) + "\n")
    ds = LandmarkDataset.from_hrnet_csv(tmp_path / "face.csv", tmp_path, "ibug68")
    np.testing.assert_allclose(ds.shapes, shapes, atol=1e-5)
    assert ds.names == ["q0", "q1"] and ds[1]["image"].shape == (128, 128, 3)


def test_from_wflw_list(tmp_path, rng):
    pts = rng.uniform(10, 90, (2, 98, 2))
    lines = []
    for i, p in enumerate(pts):
        Image.fromarray(rng.integers(0, 255, (100, 120, 3), dtype=np.uint8)).save(tmp_path / f"w{i}.jpg")
        lines.append(" ".join(f"{v:.4f}" for v in p.ravel()) + " 5 6 95 96 0 1 0 0 0 0 " + f"w{i}.jpg")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    ds = LandmarkDataset.from_wflw_list(tmp_path / "list.txt", tmp_path)
    assert ds.scheme.name == "wflw98" and len(ds) == 2
    np.testing.assert_allclose(ds.shapes, pts, atol=1e-4)
    np.testing.assert_allclose(ds.source_boxes, [[5, 6, 95, 96]] * 2)
    assert [os.path.basename(f) for f in ds.files] == ["w0.jpg", "w1.jpg"]
    assert ds[1]["image"].shape == (100, 120, 3)
    (tmp_path / "bad.txt").write_text(lines[0].rsplit(" ", 2)[0] + "\n")
    with pytest.raises(ValueError, match="bad.txt:1"):
        LandmarkDataset.from_wflw_list(tmp_path / "bad.txt", tmp_path)


# ----------------------------------------------------------------------------- splits
def _names_ds(names):
    return LandmarkDataset.from_arrays([f"/x/{n}.jpg" for n in names], np.ones((len(names), 5, 2)), "mtfl5",
                                       names=names)


def test_split_by_name_matches_crc32_and_keeps_photos_together(rng):
    names = [f"photo{i:03d}" for i in range(150)] + [f"photo{i:03d}_{k}" for i in range(20) for k in (1, 2, 11)]
    ds = _names_ds(names)
    tr, va = ds.split_by_name(0.2)
    assert len(tr) + len(va) == len(ds) and not set(tr.names) & set(va.names)

    def group(n):
        parts = n.rsplit("_", 1)
        return parts[0] if len(parts) == 2 and parts[1].isdigit() and len(parts[1]) <= 2 else n
    exp_val = {n for n in names if zlib.crc32(f"flmcore/{group(n)}".encode()) % 10000 < 2000}
    assert set(va.names) == exp_val
    for i in range(20):  # every face of a photo on the same side
        sides = {f"photo{i:03d}_{k}" in exp_val for k in (1, 2, 11)} | {f"photo{i:03d}" in exp_val}
        assert len(sides) == 1
    # independent of order and of the other files
    perm = rng.permutation(len(names))
    _, va2 = _names_ds([names[i] for i in perm]).split_by_name(0.2)
    assert set(va2.names) == exp_val
    _, va3 = _names_ds(names[:40]).split_by_name(0.2)
    assert set(va3.names) == exp_val & set(names[:40])
    assert 0.1 < len(va) / len(ds) < 0.3
    assert len(ds.split_by_name(0.0)[1]) == 0


def test_random_split_is_seeded_and_grouped():
    names = [f"im{i}_{k}" for i in range(40) for k in (1, 2)]
    ds = _names_ds(names)
    a = ds.split(0.25, rng=3)
    b = ds.split(0.25, rng=3)
    c = ds.split(0.25, rng=4)
    assert a[1].names == b[1].names and a[1].names != c[1].names
    assert len(a[1]) == 20 and len(a[0]) == 60
    val = set(a[1].names)
    assert all((f"im{i}_1" in val) == (f"im{i}_2" in val) for i in range(40))
    assert len(ds[:5]) == 5 and len(ds.subset(np.arange(80) % 2 == 0)) == 40
    with pytest.raises(ValueError, match="val_fraction"):
        ds.split(1.5)


def test_box_iou_matches_an_independent_formula():
    from flmcore.datasets import _iou

    rs = np.random.default_rng(3)
    a = np.sort(rs.uniform(0, 100, (30, 2, 2)), axis=1).transpose(0, 2, 1).reshape(30, 4)[:, [0, 2, 1, 3]]
    b = np.array([20.0, 30.0, 70.0, 90.0])
    ref = []
    for x0, y0, x1, y1 in a:
        iw = max(0.0, min(x1, b[2]) - max(x0, b[0]))
        ih = max(0.0, min(y1, b[3]) - max(y0, b[1]))
        inter = iw * ih
        ref.append(inter / ((x1 - x0) * (y1 - y0) + (b[2] - b[0]) * (b[3] - b[1]) - inter))
    np.testing.assert_allclose(_iou(a, b), ref, rtol=1e-12)


def test_read_boxes_file_validates_faces(tmp_path):
    import json

    from flmcore.datasets import read_boxes_file

    f = tmp_path / "b.json"
    good = {"images": [{"file": "x/a.jpg", "faces": [{"box": [0, 0, 10, 20]},
                                                    {"points": [[1, 2], [5, 9], [3, 4]]}]}, {"file": "b.jpg", "faces": []}]}
    f.write_text(json.dumps(good))
    out = read_boxes_file(f)
    np.testing.assert_allclose(out["x/a.jpg"], [[0, 0, 10, 20], [1, 2, 5, 9]])
    assert out["a.jpg"].shape == (2, 4) and out["b.jpg"].shape == (0, 4)
    for bad in ({"box": [0, 0, 0, 20]}, {"box": [0, 5, 10, 5]}, {"box": [0, 0, 10]}, {"box": [0, 0, np.inf, 3]},
                {"points": [[1, 2, 3]]}, {"points": [[1, np.nan]]}):
        f.write_text(json.dumps({"images": [{"file": "a.jpg", "faces": [bad]}]}).replace("Infinity", "1e999"))
        with pytest.raises(ValueError, match="b.json"):
            read_boxes_file(f)


def test_from_arrays_defaults_boxes_and_empty_sets():
    shapes = np.array([[[1.0, 2.0], [5.0, 9.0], [3.0, 3.0], [2.0, 7.0], [4.0, 8.0]]] * 2)
    ds = LandmarkDataset.from_arrays(["/a/x.jpg", "/b/y.png"], shapes, "mtfl5")
    assert ds.names == ["x", "y"]                                    # names default to the file stems
    np.testing.assert_allclose(ds.boxes, [[1, 2, 5, 9]] * 2)          # landmark boxes by default
    given = LandmarkDataset.from_arrays(["/a/x.jpg", "/b/y.png"], shapes, "mtfl5", boxes=[[0, 0, 9, 9], [1, 1, 8, 8]])
    np.testing.assert_allclose(given.boxes, [[0, 0, 9, 9], [1, 1, 8, 8]])
    with pytest.raises(ValueError, match="boxes"):
        LandmarkDataset.from_arrays(["/a/x.jpg", "/b/y.png"], shapes, "mtfl5", boxes=[[0, 0, 9, 9, 1]] * 2)
    empty = ds.subset(np.zeros(0, dtype=np.int64))
    assert empty.shapes.shape == (0, 5, 2) and empty.boxes.shape == (0, 4)
    assert len(empty.with_boxes(lambda img: np.zeros((0, 4)))) == 0


def test_random_split_default_fraction():
    ds = _names_ds([f"p{i}" for i in range(200)])
    tr, va = ds.split()
    assert len(va) == 20 and len(tr) == 180

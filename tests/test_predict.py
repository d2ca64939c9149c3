"""Landmarks on photos: flmcore.models.predict_* and the output format, with a model whose crop-frame
output is known, so image-pixel results are checked against the crop convention written out here."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SHARED_DATA, load_bundled_sample
from flmcore.models import Landmarker, predict_files, predict_image, read_boxes_file, load_model

SIZE = 64


class FixedNet(torch.nn.Module):
    """Predicts the same crop-frame points for every crop (a stand-in whose output is known)."""

    def __init__(self, pts):
        super().__init__()
        self.register_buffer("pts", torch.as_tensor(pts, dtype=torch.float64))

    def predict(self, x):
        return self.pts.expand(x.shape[0], -1, -1).clone()


def crop_to_image(u, box, size=SIZE, margin=1.25):
    """Independent inverse of the documented crop: x = c + (u - (size - 1) / 2) * side / size."""
    x0, y0, x1, y1 = box
    side = margin * max(x1 - x0, y1 - y0)
    c = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    return c + (np.asarray(u) - (size - 1) / 2) * side / size


@pytest.fixture(scope="module")
def fixed_lm():
    rs = np.random.default_rng(0)
    pts = rs.uniform(10, 54, (5, 2))
    return Landmarker(FixedNet(pts), {"input_size": SIZE, "backbone": "resnet18", "width": 0.125}, "mtfl5",
                      device="cpu"), pts


@pytest.fixture(scope="module")
def photo():
    """A real face (bundled HELEN crop) pasted twice, at two sizes, into a larger grey photo."""
    d = load_bundled_sample("helen_pairs")
    face = d["images"][0]
    canvas = np.full((300, 420, 3), 128, np.uint8)
    canvas[20:148, 30:158] = face[..., None]
    big = np.asarray(Image.fromarray(face).resize((192, 192), Image.LANCZOS))
    canvas[90:282, 200:392] = big[..., None]
    return canvas


def test_given_landmark_boxes_map_back_exactly(fixed_lm, photo):
    lm, pts = fixed_lm
    boxes = np.array([[40.0, 30.0, 140.0, 150.0], [210.0, 95.0, 380.0, 270.0]])
    out = predict_image(lm, photo, boxes)
    assert out["points"].shape == (2, 5, 2)
    for k in range(2):
        np.testing.assert_allclose(out["points"][k], crop_to_image(pts, boxes[k]), atol=1e-9)
        # the output box is the tight box of the predicted points
        p = out["points"][k]
        np.testing.assert_allclose(out["boxes"][k], [p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])
    assert np.isnan(out["scores"]).all()


def test_refinement_pass_crops_from_the_first_points(fixed_lm, photo):
    lm, pts = fixed_lm
    box = np.array([40.0, 30.0, 140.0, 150.0])
    first = crop_to_image(pts, box)
    lbox = [first[:, 0].min(), first[:, 1].min(), first[:, 0].max(), first[:, 1].max()]
    out = predict_image(lm, photo, box[None], refine=1)
    np.testing.assert_allclose(out["points"][0], crop_to_image(pts, lbox), atol=1e-9)


def test_no_boxes_gives_no_faces(fixed_lm, photo):
    lm, _ = fixed_lm
    out = predict_image(lm, photo, np.zeros((0, 4)))
    assert out["points"].shape == (0, 5, 2) and out["boxes"].shape == (0, 4)


def test_bad_boxes_are_named(fixed_lm, photo):
    lm, _ = fixed_lm
    with pytest.raises(ValueError, match="boxes"):
        predict_image(lm, photo, [[1, 2, 3]])
    with pytest.raises(ValueError, match="box"):
        predict_image(lm, photo, [[10, 10, 5, 50]])


def test_files_folder_boxes_roundtrip_overlay_and_bad_file(fixed_lm, photo, tmp_path):
    lm, pts = fixed_lm
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(photo).save(folder / "two.png")
    Image.fromarray(photo[:200, :260]).save(folder / "small.jpg", quality=95)
    (folder / "broken.jpg").write_bytes(b"not an image")
    boxes = {"images": [{"file": str(folder / "two.png"), "faces": [{"box": [40, 30, 140, 150]},
                                                                  {"box": [210, 95, 380, 270]}]},
                        {"file": str(folder / "small.jpg"), "faces": []}]}
    bfile = tmp_path / "boxes.json"
    bfile.write_text(json.dumps(boxes))
    res = predict_files(lm, [str(folder)], boxes=bfile, overlay_dir=tmp_path / "ov")
    by = {os.path.basename(e["file"]): e for e in res["images"]}
    assert set(by) == {"two.png", "small.jpg", "broken.jpg"}
    assert "error" in by["broken.jpg"] and by["broken.jpg"]["faces"] == []
    assert by["small.jpg"]["faces"] == [] and "error" not in by["small.jpg"]
    faces = by["two.png"]["faces"]
    assert len(faces) == 2 and faces[0]["score"] is None
    np.testing.assert_allclose(faces[1]["points"], crop_to_image(pts, [210, 95, 380, 270]), atol=1e-3)
    assert (tmp_path / "ov" / "two.png").is_file()
    # one run's output is the next run's boxes: faces with points use their landmark box
    out = tmp_path / "out.json"
    out.write_text(json.dumps(res))
    again = read_boxes_file(out)
    p = np.asarray(faces[0]["points"])
    np.testing.assert_allclose(again[str(folder / "two.png")][0],
                               [p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()])


def test_boxes_file_errors_name_the_file(tmp_path):
    f = tmp_path / "b.json"
    f.write_text(json.dumps({"images": [{"file": "a.jpg", "faces": [{"box": [0, 0, -1, 5]}]}]}))
    with pytest.raises(ValueError, match="b.json"):
        read_boxes_file(f)
    f.write_text("{}")
    with pytest.raises(ValueError, match="b.json"):
        read_boxes_file(f)


def test_load_model_unknown_name():
    with pytest.raises(ValueError, match="shipped model"):
        load_model("no-such-model")


def test_shipped_model_on_real_photos_with_several_faces():
    """The shipped model on the dlib example photos (small faces, several per photo), boxes from their XML."""
    root = SHARED_DATA / "dlib_examples_faces"
    if not root.is_dir():
        pytest.skip("../shared/data/dlib_examples_faces not present")
    from flmcore.io import read_dlib_xml

    lm = load_model("ibug68", device="cpu")
    errs = []
    for entry in read_dlib_xml(root / "testing_with_face_landmarks.xml"):
        name, shapes = entry["file"], entry["shapes"]
        boxes = np.stack([[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in shapes])
        out = predict_image(lm, str(root / name), boxes)
        # the reference points are dlib's model's, not human labels: agreement, not accuracy
        io = np.linalg.norm(shapes[:, 36] - shapes[:, 45], axis=-1)
        errs += list(np.linalg.norm(out["points"] - shapes, axis=-1).mean(-1) / io)
    assert np.median(errs) < 0.10


def test_detector_boxes_are_mapped_then_refined(fixed_lm, photo):
    """box_kind="<detector>": the box is mapped by the detector's fitted BoxMapper, then refined once."""
    from flmcore.detect import BoxMapper

    lm, pts = fixed_lm
    det = np.array([[50.0, 40.0, 150.0, 140.0]])
    mapped = BoxMapper.for_detector("opencv").predict(det)[0]
    first = crop_to_image(pts, mapped)
    lbox = [first[:, 0].min(), first[:, 1].min(), first[:, 0].max(), first[:, 1].max()]
    out = predict_image(lm, photo, det, box_kind="opencv")
    np.testing.assert_allclose(out["points"][0], crop_to_image(pts, lbox), atol=1e-9)
    with pytest.raises(ValueError, match="box_kind"):
        predict_image(lm, photo, det, box_kind="nosuch")


def test_find_faces_on_a_blank_photo_finds_none():
    from flmcore.detect import available_detectors
    from flmcore.train._predict import find_faces

    if not available_detectors():
        pytest.skip("no face detector installed")
    b, s = find_faces(np.full((240, 320, 3), 127, np.uint8))
    assert b.shape == (0, 4) and s.shape == (0,)


def test_find_faces_retries_upsampled_for_small_faces():
    """dlib's HOG window misses faces under ~80 px at 1x; the 'auto' cascade retries at 2x."""
    root = SHARED_DATA / "dlib_examples_faces"
    from flmcore.detect import available_detectors, detect_faces
    from flmcore.train._predict import find_faces
    from flmcore.datasets import load_image

    if "dlib" not in available_detectors() or not root.is_dir():
        pytest.skip("needs dlib and ../shared/data/dlib_examples_faces")
    img = load_image(root / "2008_002470.jpg")  # six faces of 40-60 px
    assert len(detect_faces(img, method="dlib")[0]) == 0
    b, _ = find_faces(img, "dlib")
    assert len(b) >= 5


def test_predict_dataset_box_sources_refinement_and_missed_faces(fixed_lm, photo, tmp_path, monkeypatch):
    """predict_dataset (the scoring path of flmcore evaluate): landmark boxes (no refinement),
    the dataset's boxes, and detector boxes (one refinement pass; a face the detector misses is a
    NaN row flagged in ``missing``), checked against the crop convention written out above."""
    import flmcore.train._predict as P
    from flmcore.datasets import LandmarkDataset
    from flmcore.models import predict_dataset

    lm, pts = fixed_lm
    path = tmp_path / "photo.png"
    Image.fromarray(photo).save(path)
    rs = np.random.default_rng(3)
    shapes = np.stack([rs.uniform([40, 30], [140, 150], (5, 2)), rs.uniform([210, 95], [380, 270], (5, 2))])
    given = np.array([[35.0, 25.0, 150.0, 160.0], [200.0, 90.0, 390.0, 280.0]])
    ds = LandmarkDataset.from_arrays([path, path], shapes, "mtfl5", boxes=given, names=["a", "b"])

    def lbox(s):
        return [s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()]

    def refined(box):
        return crop_to_image(pts, lbox(crop_to_image(pts, box)))

    p, miss = predict_dataset(lm, ds, batch_images=1)
    assert not miss.any()
    for i in range(2):
        np.testing.assert_allclose(p[i], crop_to_image(pts, lbox(shapes[i])), atol=1e-9)
    p, _ = predict_dataset(lm, ds, boxes="dataset")
    for i in range(2):
        np.testing.assert_allclose(p[i], crop_to_image(pts, given[i]), atol=1e-9)
    p, _ = predict_dataset(lm, ds, boxes="landmark", refine=1)
    np.testing.assert_allclose(p[1], refined(lbox(shapes[1])), atol=1e-9)

    # the "detector" finds only the second face (and a far-away false positive)
    found = np.array([[0.0, 280.0, 20.0, 299.0], [205.0, 100.0, 385.0, 275.0]])
    monkeypatch.setattr(P, "find_faces", lambda image, detector="auto": (found, np.ones(2)))
    p, miss = predict_dataset(lm, ds, boxes="detector")
    assert miss.tolist() == [True, False] and np.isnan(p[0]).all()
    np.testing.assert_allclose(p[1], refined(found[1]), atol=1e-9)
    p0, _ = predict_dataset(lm, ds, boxes="detector", refine=0)
    np.testing.assert_allclose(p0[1], crop_to_image(pts, found[1]), atol=1e-9)
    with pytest.raises(ValueError, match="boxes"):
        predict_dataset(lm, ds, boxes="gt")


def test_overlay_with_fewer_boxes_than_faces_and_batch_size_errors(fixed_lm, photo, tmp_path):
    from flmcore.models import predict_batch
    from flmcore.train._predict import draw_overlay

    lm, pts = fixed_lm
    two = np.stack([pts + 40, pts + 200])
    draw_overlay(photo, two, tmp_path / "o.png", boxes=np.array([[40.0, 40.0, 100.0, 100.0]]))
    im = np.asarray(Image.open(tmp_path / "o.png"))
    assert im.shape == photo.shape and (im != photo).any()
    for bad in (0, -1):
        with pytest.raises(ValueError, match="batch_size"):
            predict_batch(lm, [photo], [np.array([[40.0, 30.0, 140.0, 150.0]])], batch_size=bad)

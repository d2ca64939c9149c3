"""flmcore.evaluate against slow references written here from the formulas (loops), on real HELEN shapes.

The FR/AUC reference is PIPNet's official ``compute_fr_and_auc`` written out as loops:
``xs = arange(0, T + 1e-4, 1e-4)``, ``ys = [count(nme <= x) / N]``, ``fr = 1 - ys[-1]``,
``auc = simps(ys, xs) / T`` (composite Simpson).
"""
import json
import math
import os

import numpy as np
import pytest

from conftest import load_bundled_sample
from flmcore import evaluate as ev
from flmcore.datasets import LandmarkDataset


# ---------------------------------------------------------------------------------------------
# slow references
# ---------------------------------------------------------------------------------------------
def _dist(a, b):
    return math.sqrt((a[0] - b[0]) ** 2 + (a[1] - b[1]) ** 2)


def ref_nme(pred, gt, norm):
    """One face, loops: mean distance over annotated points / normaliser (iBUG-68 indices)."""
    P = gt.shape[0]
    if norm == "interocular":
        d = _dist(gt[36], gt[45])
    elif norm == "interpupil":
        le = [sum(gt[i][k] for i in range(36, 42)) / 6 for k in (0, 1)]
        re = [sum(gt[i][k] for i in range(42, 48)) / 6 for k in (0, 1)]
        d = _dist(le, re)
    elif norm == "bbox":
        xs = [gt[i][0] for i in range(P) if not math.isnan(gt[i][0])]
        ys = [gt[i][1] for i in range(P) if not math.isnan(gt[i][1])]
        d = math.sqrt((max(xs) - min(xs)) * (max(ys) - min(ys)))
    else:
        raise AssertionError(norm)
    tot, n = 0.0, 0
    for i in range(P):
        if math.isnan(gt[i][0]):
            continue
        tot += _dist(pred[i], gt[i])
        n += 1
    return tot / n / d


def ref_fr_auc(nmes, thres, step=1e-4, xs=None):
    """PIPNet's compute_fr_and_auc as loops (Simpson weights 1, 4, 2, ..., 4, 1)."""
    if xs is None:
        xs = np.arange(0, thres + step, step)
    N = len(nmes)
    ys = []
    for x in xs:
        c = 0
        for e in nmes:
            if e <= x:
                c += 1
        ys.append(c / N)
    m = len(xs) - 1
    assert m % 2 == 0
    h = xs[1] - xs[0]
    s = 0.0
    for k, y in enumerate(ys):
        w = 1 if k in (0, m) else (4 if k % 2 else 2)
        s += w * y
    return 1.0 - ys[-1], s * h / 3 / thres


def ref_row(pred, gt, missing, norms, thresholds):
    row = {"n": len(gt), "n_missing": int(sum(missing))}
    for nm in norms:
        vals = [ref_nme(pred[b], gt[b], nm) for b in range(len(gt)) if not missing[b]]
        row[f"nme_{nm}"] = 100 * sum(vals) / len(vals)
    io = [math.inf if missing[b] else ref_nme(pred[b], gt[b], "interocular") for b in range(len(gt))]
    for t in thresholds:
        fr, a = ref_fr_auc(io, t)
        row[f"fr@{t:g}"], row[f"auc@{t:g}"] = 100 * fr, a
    return row


def assert_row(got, want):
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k


# ---------------------------------------------------------------------------------------------
# data: real HELEN shapes, three fake subsets, noisy predictions with a heavy tail
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def helen():
    d = load_bundled_sample("helen68_shapes")
    gt = d["shapes"][:90].copy()
    gt[3, 60:68] = np.nan                                    # unannotated points are left out
    r = np.random.default_rng(7)
    io = np.linalg.norm(gt[:, 36] - gt[:, 45], axis=-1)
    scale = io[:, None, None] * r.choice([0.02, 0.05, 0.12], size=(90, 1, 1), p=[0.6, 0.3, 0.1])
    pred = np.nan_to_num(gt, nan=0.0) + r.normal(size=gt.shape) * scale
    subsets = np.array(["helen", "lfpw", "afw"])[np.arange(90) % 3]
    names = [f"{s}/{n[:-4]}" for s, n in zip(subsets, d["names"][:90])]
    files = [f"/images/{s}/{n}" for s, n in zip(subsets, d["names"][:90])]
    ds = LandmarkDataset.from_arrays(files, gt, "ibug68", names=names)
    return gt, pred, subsets, ds


NORMS = ("interocular", "interpupil", "bbox")
THS = (0.08, 0.1)


# ---------------------------------------------------------------------------------------------
# FR / AUC
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.08, 0.1])
def test_fr_auc_matches_pipnet_reference(t):
    r = np.random.default_rng(1)
    e = np.abs(r.normal(0.04, 0.03, 300))
    fr, a = ev.fr_and_auc(e, t)
    fr_r, a_r = ref_fr_auc(list(e), t)
    assert fr == pytest.approx(fr_r, abs=1e-12)
    assert a == pytest.approx(a_r, rel=1e-10)
    scipy_int = pytest.importorskip("scipy.integrate")
    xs = np.arange(0, t + 1e-4, 1e-4)
    ys = np.array([np.count_nonzero(e <= x) for x in xs]) / e.size
    assert a == pytest.approx(scipy_int.simpson(ys, x=xs) / t, rel=1e-10)


def test_fr_auc_other_thresholds_use_the_documented_grid():
    # PIPNet's arange(0, 0.05 + 1e-4, 1e-4) overshoots to 0.0501 (502 points); flmcore integrates
    # exactly to T on the smallest even number of intervals of at most 1e-4
    e = np.abs(np.random.default_rng(3).normal(0.03, 0.02, 200))
    for t, m in ((0.05, 500), (0.0333, 334)):
        fr, a = ev.fr_and_auc(e, t)
        fr_r, a_r = ref_fr_auc(list(e), t, xs=np.linspace(0, t, m + 1))
        assert (fr, a) == pytest.approx((fr_r, a_r), rel=1e-10)


def test_trapezoid_rule_and_exact_area():
    e = np.abs(np.random.default_rng(2).normal(0.04, 0.03, 200))
    exact = np.mean(np.maximum(0.0, 0.1 - e)) / 0.1           # area of the step CED
    _, a_tr = ev.fr_and_auc(e, 0.1, rule="trapezoid")
    _, a_si = ev.fr_and_auc(e, 0.1)
    assert abs(a_tr - exact) <= 1 / 2000 + 1e-12
    assert abs(a_si - exact) <= 2 / (3 * 1000) + 1e-12          # Simpson on a step: |error| <= 2h/3 per face
    # missing faces (inf) are failures and scale the CED
    fr, a = ev.fr_and_auc(np.r_[e, np.inf, np.inf], 0.1)
    fr_r, a_r = ref_fr_auc(list(e) + [math.inf, math.inf], 0.1)
    assert (fr, a) == pytest.approx((fr_r, a_r), rel=1e-10)
    assert ev.fr_and_auc([np.inf], 0.1) == (1.0, 0.0)


# ---------------------------------------------------------------------------------------------
# evaluate
# ---------------------------------------------------------------------------------------------
def test_evaluate_rows_against_reference(helen):
    gt, pred, subsets, ds = helen
    res = ev.evaluate(pred, ds, subsets="auto")
    assert list(res.subsets) == ["afw", "helen", "lfpw", "all"]
    miss = [False] * len(gt)
    for s in ("afw", "helen", "lfpw"):
        idx = np.flatnonzero(subsets == s)
        assert_row(res.subsets[s], ref_row(pred[idx], gt[idx], [False] * idx.size, NORMS, THS))
    assert_row(res.pooled, ref_row(pred, gt, miss, NORMS, THS))
    assert 0 < res.pooled["fr@0.08"] < 50                       # the heavy tail fails some faces
    # arrays + explicit labels give the same numbers; no subsets -> pooled row only
    res2 = ev.evaluate(pred, gt, scheme="ibug68", subsets=subsets)
    assert res2.subsets == res.subsets
    assert list(ev.evaluate(pred, ds).subsets) == ["all"]
    # trapezoid rule: the metrics.auc helper
    res3 = ev.evaluate(pred, ds, auc_rule="trapezoid", norms=("interocular",))
    assert abs(res3.pooled["auc@0.1"] - res.pooled["auc@0.1"]) < 1e-3


def test_missing_faces(helen):
    gt, pred, subsets, ds = helen
    missing = np.zeros(len(gt), bool)
    missing[[0, 5, 6, 40]] = True
    p = pred.copy()
    p[missing] = np.nan                                       # rows of missing faces are ignored
    res = ev.evaluate(p, ds, subsets="auto", missing=missing)
    assert_row(res.pooled, ref_row(pred, gt, missing, NORMS, THS))
    idx = np.flatnonzero(subsets == "helen")                  # faces 0, 6 (and not 5, 40)
    assert_row(res.subsets["helen"], ref_row(pred[idx], gt[idx], missing[idx], NORMS, THS))
    assert res.pooled["n_missing"] == 4 and res.subsets["helen"]["n_missing"] == 2
    assert np.isinf(res.errors["interocular"][missing]).all()
    full = ev.evaluate(pred, ds)
    assert res.pooled["fr@0.1"] >= full.pooled["fr@0.1"] + 100 * 4 / 90 - 100 * 4 / 90 * 0.5
    # a subset whose every face is missing: NaN NME, 100 % failures
    allmiss = ev.evaluate(p, ds, subsets=np.where(missing, "gone", "kept"), missing=missing)
    assert math.isnan(allmiss.subsets["gone"]["nme_interocular"])
    assert allmiss.subsets["gone"]["fr@0.08"] == 100.0 and allmiss.subsets["gone"]["auc@0.1"] == 0.0


def test_auto_subsets_on_300w_crops(shared_data):
    root = shared_data / "300w_train_crops"
    if not root.is_dir():
        pytest.skip("300w_train_crops not present")
    ds = LandmarkDataset.from_folder(root / "afw")
    res = ev.evaluate(ds.shapes + 0.5, ds, subsets="auto")      # names afw/..., relative to root/afw: none
    assert list(res.subsets) == ["all"]
    ds = LandmarkDataset.from_folder(root)
    res = ev.evaluate(ds.shapes + 0.5, ds, subsets="auto")
    assert {k: v["n"] for k, v in res.subsets.items()} == {"afw": 337, "helen": 870, "lfpw": 805, "all": 2012}
    assert res.pooled["fr@0.08"] == 0.0 and res.pooled["auc@0.1"] > 0.8


# ---------------------------------------------------------------------------------------------
# predictions files
# ---------------------------------------------------------------------------------------------
def _write(path, images):
    path.write_text(json.dumps({"images": images}))
    return path


def test_evaluate_predictions_matching(helen, tmp_path):
    gt, pred, subsets, _ = helen
    # two annotated faces per image (faces 2k and 2k+1 share a file), 0-based image pixels
    files = [f"/data/300w/img{b // 2}.jpg" for b in range(len(gt))]
    shifted = gt.copy()
    shifted[1::2] += 400.0                                      # the second face sits elsewhere in the image
    p = pred.copy()
    p[1::2] += 400.0
    ds = LandmarkDataset.from_arrays(files, shifted, "ibug68",
                                     names=[f"{s}/f{b}" for b, s in enumerate(subsets)])
    missing = np.zeros(len(gt), bool)
    missing[[3, 10]] = True
    images = {}
    for b in range(len(gt)):
        if missing[b]:
            continue
        key = os.path.basename(files[b]) if (b // 2) % 2 else files[b]   # base names and full paths
        images.setdefault(key, []).append({"box": [0, 0, 1, 1], "score": 0.9, "points": p[b].tolist()})
    for faces in images.values():
        faces.reverse()                                          # order does not matter
    images = [{"file": k, "faces": v} for k, v in images.items()]
    images[0]["faces"].append({"points": (shifted[0] + 2000.0).tolist()})   # a false detection
    images.append({"file": "elsewhere.jpg", "faces": [{"points": shifted[0].tolist()}]})
    f = _write(tmp_path / "pred.json", images)

    got = ev.evaluate_predictions(f, ds, subsets="auto")
    pp = p.copy()
    pp[missing] = np.nan
    want = ev.evaluate(pp, ds, subsets="auto", missing=missing)
    assert got.subsets == want.subsets
    assert got.meta["n_missing"] == 2 and got.meta["n_unmatched_predictions"] == 2
    assert_row(got.pooled, ref_row(p, shifted, missing, NORMS, THS))
    rp = ev.read_predictions(f)
    assert len(rp[files[0]]) == 3 and len(rp[files[5]]) == 2 and rp[files[5]][0].shape == (68, 2)


def test_evaluate_predictions_errors(helen, tmp_path):
    gt, pred, subsets, ds = helen
    base = [{"file": ds.files[0], "faces": [{"points": pred[0].tolist()}]}]
    bad = {
        "top": {"img": []},
        "file": {"images": [{"faces": []}]},
        "faces": {"images": [{"file": "a.jpg", "faces": {}}]},
        "points": {"images": [{"file": "a.jpg", "faces": [{"points": [[1, 2, 3]]}]}]},
        "box": {"images": [{"file": "a.jpg", "faces": [{"points": [[1, 2]], "box": [1, 2]}]}]},
    }
    for key, data in bad.items():
        f = tmp_path / f"bad_{key}.json"
        f.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=f"bad_{key}.json"):
            ev.read_predictions(f)
    f = tmp_path / "nan.json"
    f.write_text('{"images": [{"file": "a.jpg", "faces": [{"points": [[NaN, 1.0]]}]}]}')
    with pytest.raises(ValueError, match="nan.json.*NaN"):
        ev.read_predictions(f)
    f = tmp_path / "broken.json"
    f.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json"):
        ev.read_predictions(f)
    with pytest.raises(ValueError, match="does not exist"):
        ev.read_predictions(tmp_path / "absent.json")
    f = _write(tmp_path / "p5.json", [{"file": ds.files[0], "faces": [{"points": pred[0, :5].tolist()}]}])
    with pytest.raises(ValueError, match="p5.json.*5 points"):
        ev.evaluate_predictions(f, ds)
    f = _write(tmp_path / "amb.json", [{"file": "x/" + os.path.basename(ds.files[0]), "faces": []},
                                       {"file": "y/" + os.path.basename(ds.files[0]), "faces": []}])
    with pytest.raises(ValueError, match="amb.json.*several"):
        ev.evaluate_predictions(f, ds)
    f = _write(tmp_path / "ok.json", base)
    with pytest.raises(TypeError, match="dataset"):
        ev.evaluate_predictions(f, gt)
    with pytest.raises(ValueError, match="min_iou"):
        ev.evaluate_predictions(f, ds, min_iou=2.0)
    res = ev.evaluate_predictions(f, ds)                        # every other face missing
    assert res.pooled["n_missing"] == len(ds) - 1 and res.pooled["fr@0.1"] >= 100 * (len(ds) - 1) / len(ds)


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
def test_bad_input(helen):
    gt, pred, subsets, ds = helen
    with pytest.raises(ValueError, match="pred must have the shape"):
        ev.evaluate(pred[:, :60], ds)
    with pytest.raises(ValueError, match="pred must have the shape"):
        ev.evaluate(pred[:10], ds)
    with pytest.raises(ValueError, match="norms"):
        ev.evaluate(pred, ds, norms=("interocular", "eyes"))
    with pytest.raises(ValueError, match="norms"):
        ev.evaluate(pred, ds, norms=())
    with pytest.raises(ValueError, match="ced_norm"):
        ev.evaluate(pred, ds, ced_norm="pupils")
    p = pred.copy()
    p[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"pred contains NaN for face index \[4\]"):
        ev.evaluate(p, ds)
    with pytest.raises(ValueError, match="subsets"):
        ev.evaluate(pred, ds, subsets=["a"] * 3)
    with pytest.raises(ValueError, match="subsets"):
        ev.evaluate(pred, ds, subsets="folders")
    with pytest.raises(ValueError, match="subsets"):
        ev.evaluate(pred, gt, scheme="ibug68", subsets="auto")
    with pytest.raises(ValueError, match="thresholds"):
        ev.evaluate(pred, ds, thresholds=(0.08, 8))
    with pytest.raises(ValueError, match="scheme"):
        ev.evaluate(pred, gt)                                    # arrays need the scheme for the eyes
    with pytest.raises(ValueError, match="missing"):
        ev.evaluate(pred, ds, missing=[0, 1])
    with pytest.raises(ValueError, match="auc_rule"):
        ev.evaluate(pred, ds, auc_rule="riemann")


# ---------------------------------------------------------------------------------------------
# serialisation and figure
# ---------------------------------------------------------------------------------------------
def test_json_and_markdown_round_trip(helen, tmp_path):
    gt, pred, subsets, ds = helen
    missing = np.zeros(len(gt), bool)
    missing[1] = True
    res = ev.evaluate(pred, ds, subsets="auto", missing=missing)
    out = res.to_json(tmp_path / "sub" / "res.json")
    back = ev.EvaluationResult.from_json(out)
    assert back.subsets == res.subsets and back.norms == res.norms and back.thresholds == res.thresholds
    for k in res.errors:
        np.testing.assert_array_equal(back.errors[k], res.errors[k])   # inf (missing) survives as null
    assert back.names == res.names and back.face_subsets == res.face_subsets
    assert back.to_markdown() == res.to_markdown()
    json.loads(out.read_text())                                 # strict JSON (no NaN / Infinity literals)
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="bad.json"):
        ev.EvaluationResult.from_json(tmp_path / "bad.json")

    md = res.to_markdown().splitlines()
    assert md[0] == ("| subset | N | missing | NME io | NME ip | NME box | FR@8 | FR@10 | AUC@8 | AUC@10 |")
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]] for ln in md[2:] if ln.startswith("|")}
    assert list(rows) == ["afw", "helen", "lfpw", "all"]
    for name, cells in rows.items():
        r = res.subsets[name]
        assert int(cells[0]) == r["n"] and int(cells[1]) == r["n_missing"]
        vals = [float(c) for c in cells[2:]]
        want = [r[f"nme_{n}"] for n in NORMS] + [r["fr@0.08"], r["fr@0.1"], r["auc@0.08"], r["auc@0.1"]]
        np.testing.assert_allclose(vals[:5], want[:5], atol=0.005 + 1e-9)
        np.testing.assert_allclose(vals[5:], want[5:], atol=0.00005 + 1e-9)
    assert "inter-ocular" in res.to_markdown() and "simpson" in res.to_markdown()


def test_ced_png(helen, tmp_path):
    from PIL import Image

    gt, pred, subsets, ds = helen
    a = ev.evaluate(pred, ds, subsets="auto")
    missing = np.zeros(len(gt), bool)
    missing[:5] = True
    b = ev.evaluate(gt + 0.5, ds, subsets="auto", missing=missing)
    out = ev.plot_ced([a, b], tmp_path / "fig" / "ced.png", labels=["noisy", "good"], title="CED")
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 600 and im.size[1] > 400
        assert round(im.info["dpi"][0]) >= 150
    out2 = a.plot_ced(tmp_path / "one.png", labels="noisy", subset="helen")
    assert out2.is_file() and out2.stat().st_size > 10_000
    with pytest.raises(ValueError, match="labels"):
        ev.plot_ced([a, b], tmp_path / "x.png", labels=["one"])
    with pytest.raises(ValueError, match="subset"):
        ev.plot_ced(a, tmp_path / "x.png", subset="ibug")

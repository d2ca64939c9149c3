"""`flmcore train | evaluate | predict | export` end to end on a tiny folder of real faces (seconds)."""
import json

import numpy as np
import pytest
from PIL import Image

from conftest import load_bundled_sample
from flmcore.cli import main


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    """12 real HELEN crops (bundled sample) as JPEG + 1-based iBUG .pts files in two subsets."""
    d = load_bundled_sample("helen_pairs")
    root = tmp_path_factory.mktemp("faces")
    for i in range(12):
        sub = root / ("a" if i < 6 else "b")
        sub.mkdir(exist_ok=True)
        Image.fromarray(d["images"][i]).save(sub / f"face{i:02d}.jpg", quality=95)
        pts = d["shapes68"][i] + 1.0  # iBUG files are 1-based
        body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
        (sub / f"face{i:02d}.pts").write_text(f"version: 1\nn_points: 68\n{{\n{body}\n}}\n")
    return root


@pytest.fixture(scope="module")
def config(face_folder, tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    cfg.write_text(f"""
[data]
root = "{face_folder}"
split = "random"
val_fraction = 0.25
[model]
backbone = "resnet18"
width = 0.125
input_size = 64
n_neighbors = 4
[augment]
preset = "pipnet"
[schedule]
epochs = 2
milestones = [1]
[train]
batch_size = 4
threads = 1
""")
    return cfg


@pytest.fixture(scope="module")
def trained(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", str(config), "--out", str(out), "--max-epochs", "1", "--no-progress"]) == 0
    return out


def test_train_writes_log_and_checkpoints_and_resumes(trained, config):
    log = [json.loads(s) for s in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1] and np.isfinite(log[0]["val_nme_io"])
    assert (trained / "last.pt").is_file() and (trained / "best.pt").is_file()
    # a second call without --resume refuses to overwrite the run
    assert main(["train", str(config), "--out", str(trained), "--no-progress"]) == 1
    assert main(["train", str(config), "--out", str(trained), "--resume", "--no-progress"]) == 0
    log = [json.loads(s) for s in (trained / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_train_unknown_key_is_named(tmp_path, config, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace("[train]", "[train]\nbatchsize = 3"))
    assert main(["train", str(bad), "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "batchsize" in capsys.readouterr().err


def test_evaluate_model_and_predictions_file(trained, face_folder, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", str(trained / "best.pt"), str(face_folder), "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "ced.png").is_file() and "a" in json.dumps(res)
    # predictions of the same model written by `flmcore predict` and scored as a file give the same NME
    boxes = {"images": []}
    for p in sorted(face_folder.rglob("*.pts")):
        from flmcore.io import read_pts

        s = read_pts(p)
        boxes["images"].append({"file": str(p.with_suffix(".jpg")), "faces": [{"points": s.tolist()}]})
    bfile = tmp_path / "boxes.json"
    bfile.write_text(json.dumps(boxes))
    pred = tmp_path / "pred.json"
    assert main(["predict", str(face_folder / "a"), str(face_folder / "b"), "--model", str(trained / "best.pt"),
                 "--boxes", str(bfile), "--out", str(pred), "--no-progress"]) == 0
    data = json.loads(pred.read_text())
    assert len(data["images"]) == 12 and all(len(e["faces"]) == 1 for e in data["images"])
    assert main(["evaluate", str(pred), str(face_folder), "--out", str(tmp_path / "e2"), "--no-progress"]) == 0
    a = json.loads((out / "results.json").read_text())
    b = json.loads((tmp_path / "e2" / "results.json").read_text())
    ka = a["subsets"]["all"]["nme_interocular"] if "subsets" in a else None
    kb = b["subsets"]["all"]["nme_interocular"] if "subsets" in b else None
    assert ka is not None and abs(ka - kb) < 1e-3


def test_predict_reports_unreadable_file_and_goes_on(trained, face_folder, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\x00garbage")
    boxes = tmp_path / "b.json"
    boxes.write_text(json.dumps({"images": [{"file": str(face_folder / "a" / "face00.jpg"),
                                             "faces": [{"box": [30, 30, 100, 110]}]}]}))
    out = tmp_path / "p.json"
    rc = main(["predict", str(bad), str(face_folder / "a" / "face00.jpg"), "--model", str(trained / "best.pt"),
               "--boxes", str(boxes), "--out", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert "error" in data["images"][0] and len(data["images"][1]["faces"]) == 1
    assert "broken.jpg" in capsys.readouterr().err


def test_corrupted_checkpoint_is_a_clear_error(tmp_path, face_folder, capsys):
    ck = tmp_path / "bad.pt"
    ck.write_bytes(b"PK\x03\x04 truncated")
    assert main(["evaluate", str(ck), str(face_folder), "--out", str(tmp_path / "e"), "--no-progress"]) == 1
    assert "bad.pt" in capsys.readouterr().err


def test_export_onnx(trained, tmp_path):
    pytest.importorskip("onnx")
    out = tmp_path / "m.onnx"
    assert main(["export", str(trained / "best.pt"), str(out)]) == 0
    assert out.stat().st_size > 1000

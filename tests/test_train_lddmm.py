"""`flmcore train` with an LDDMM-Face network (model.type = "lddmm") and data.exclude."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.datasets import LandmarkDataset  # noqa: E402
from flmcore.schemes import get_scheme  # noqa: E402
from flmcore.models import Landmarker  # noqa: E402
from flmcore.train._landmarker import build_network  # noqa: E402
from flmcore.train._run import _loss_fn, check_config, exclude_faces, load_config, train  # noqa: E402

MODEL = {"type": "lddmm", "backbone": "resnet18", "width": 0.125, "input_size": 64, "pretrained": ""}


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, helen_pairs):
    from PIL import Image

    d = tmp_path_factory.mktemp("faces") / "helen"
    d.mkdir()
    for i in range(16):
        Image.fromarray(helen_pairs["images"][i]).save(d / f"face{i:02d}_1.png")
        pts = helen_pairs["shapes68"][i]
        lines = ["version: 1", "n_points: 68", "{"] + [f"{x + 1:.5f} {y + 1:.5f}" for x, y in pts] + ["}"]
        (d / f"face{i:02d}_1.pts").write_text("\n".join(lines) + "\n")
    return d.parent


def mean64(helen_pairs):
    return helen_pairs["shapes68"][:16].mean(0) * 0.5  # 128-px crops -> a 64-px mean face


# ----------------------------------------------------------------------------- data.exclude
def test_exclude_matches_full_names_and_last_components():
    ds = LandmarkDataset.from_arrays(["a.jpg", "b.jpg", "c.jpg"], np.ones((3, 5, 2)), "mtfl5",
                                     names=["helen/x_1", "lfpw/x_1", "afw/y_2"])
    assert exclude_faces(ds, ["x_1"]).names == ["afw/y_2"]            # a bare stem matches in every folder
    assert exclude_faces(ds, ["lfpw/x_1"]).names == ["helen/x_1", "afw/y_2"]
    assert exclude_faces(ds, []).names == ds.names
    with pytest.raises(ValueError, match="none of its 1 names"):
        exclude_faces(ds, ["y"])                                      # a prefix is not a name


def test_exclude_file_is_read_relative_to_the_config_and_stored_expanded(tmp_path, faces_dir):
    (tmp_path / "held.txt").write_text("# held-out faces\nface03_1\n\n  face07_1  # a comment\n")
    f = tmp_path / "run.toml"
    f.write_text(f'[data]\nroot = "{faces_dir.as_posix()}"\nexclude = "held.txt"\n')
    cfg = load_config(f)
    assert cfg["data"]["exclude"] == ["face03_1", "face07_1"]
    assert check_config(cfg) == cfg                                   # stored form is a valid config


@pytest.mark.parametrize("bad, match", [(3, "data.exclude"), ([""], "data.exclude"), (["a", 1], "data.exclude"),
                                        ("no_such_file.txt", "does not exist")])
def test_bad_exclude_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        check_config({"data": {"exclude": bad}})


@pytest.mark.parametrize("key, value", [("lddmm_preset", "official"), ("lddmm_steps", 0), ("type", "ldmm")])
def test_bad_lddmm_model_keys_are_named(key, value):
    with pytest.raises(ValueError, match=f"model.{key}"):
        check_config({"model": {key: value}})


# ----------------------------------------------------------------------------- the network
def test_zero_momenta_give_the_mean_face_and_an_affine_cross_annotation(helen_pairs):
    """With the momentum head at zero every flow is the identity: the 68 points are the mean face, and
    another scheme's points are its mean face under the least-squares affine map fitted on the points the
    two schemes share (LDDMM-Face section 4.3), computed here with numpy."""
    from flmcore.schemes import correspondences

    m68 = mean64(helen_pairs)
    net = build_network(MODEL, "ibug68", mean_shape=m68)
    for p in net.face.head.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(2, 3, 64, 64)
    assert np.allclose(net.predict(x).numpy(), m68, atol=1e-4)
    m29 = helen_pairs["shapes29"][:16].mean(0) * 0.5 + 3.0
    pairs = correspondences("helen_zhou29", "ibug68")
    assert len(pairs) >= 6
    X = np.c_[m29[pairs[:, 0]], np.ones(len(pairs))]
    A = np.linalg.lstsq(X, m68[pairs[:, 1]], rcond=None)[0]
    want = np.c_[m29, np.ones(29)] @ A
    got = net.predict(x, scheme="helen_zhou29", mean_shape=m29).numpy()
    assert got.shape == (2, 29, 2) and np.allclose(got, want, atol=1e-3)


def test_lddmm_network_needs_a_mean_face():
    with pytest.raises(ValueError, match="mean_shape"):
        build_network(MODEL, "ibug68")


@pytest.mark.parametrize("preset, squared", [("paper", False), ("flmcore", True)])
def test_training_loss_is_the_presets_landmark_term_with_beta_zero(helen_pairs, preset, squared):
    """beta = 0: the paper's loss is the mean Euclidean point error / outer-eye-corner distance; flmcore's
    the sum over curves of the per-curve mean squared error / eye-centre distance (curves of its layout,
    isolated points alone)."""
    from flmcore.schemes import lddmm_face_curves

    m68 = mean64(helen_pairs)
    cfg = check_config({"model": {**MODEL, "lddmm_preset": preset}, "loss": {"lddmm_beta": 0.0}})
    net = build_network(cfg["model"], "ibug68", mean_shape=m68)
    x = torch.rand(3, 3, 64, 64)
    y = torch.as_tensor(helen_pairs["shapes68"][16:19] * 0.5, dtype=torch.float32)
    with torch.no_grad():
        got = float(_loss_fn(net, cfg)(x, y))
        p = net(x).double().numpy()
    t = y.double().numpy()
    d = np.linalg.norm(p - t, axis=-1)
    if not squared:
        want = d.mean(1) / np.linalg.norm(t[:, 36] - t[:, 45], axis=1)
    else:
        groups = [list(c.indices) for c in lddmm_face_curves(get_scheme("ibug68"), "flmcore")]
        on = {i for g in groups for i in g}
        groups += [[i] for i in range(68) if i not in on]
        per = sum((d[:, g] ** 2).mean(1) for g in groups)
        ce = np.linalg.norm(t[:, 36:42].mean(1) - t[:, 42:48].mean(1), axis=1)
        want = per / ce
    assert got == pytest.approx(want.mean(), rel=1e-4)
    cfg1 = check_config({"model": {**MODEL, "lddmm_preset": preset}, "loss": {"lddmm_beta": 0.5}})
    with torch.no_grad():
        assert float(_loss_fn(net, cfg1)(x, y)) > got                  # the curve term is on


def test_train_an_lddmm_run_excluding_faces_then_reload_and_resume(tmp_path, faces_dir, helen_pairs):
    cfg = {"data": {"root": os.fspath(faces_dir), "val_fraction": 0.25, "exclude": ["face00_1", "face05_1"]},
           "model": {**MODEL, "lddmm_preset": "paper"}, "optim": {"lr": 1e-3},
           "schedule": {"epochs": 2, "milestones": [2]}, "train": {"batch_size": 4, "threads": 1}}
    out = tmp_path / "run"
    res = train(cfg, out, max_epochs=1, progress=False)
    assert res["epochs_done"] == 1 and np.isfinite(res["best_val_nme_io"])
    lm = Landmarker.load(out / "best.pt", device="cpu")
    assert lm.meta["train_faces"] + lm.meta["val_faces"] == 14          # 16 faces, 2 held out
    assert type(lm.network).__name__ == "LDDMMRegressor" and lm.network.preset == "paper"
    crops = (helen_pairs["images"][:2, ::2, ::2, None].repeat(3, -1)).astype(np.uint8)
    a = lm.predict_crops(crops)
    lm.save(tmp_path / "m.pt")
    b = Landmarker.load(tmp_path / "m.pt", device="cpu").predict_crops(crops)
    assert np.array_equal(a, b)                                         # the mean face travels with the weights
    res2 = train(cfg, out, resume=True, progress=False)
    assert res2["epochs_done"] == 1 and res2["stopped"] == "finished"
    assert [r["epoch"] for r in map(json.loads, Path(out / "log.jsonl").read_text().splitlines())] == [1, 2]

"""flmcore.train.train / check_config / load_config and Landmarker.load: tiny real runs (seconds).

20 real HELEN faces (the bundled sample written as PNG + 1-based .pts), a ResNet-18 of width
1/8 at 64 x 64, 1-2 epochs on one thread.  Checked: the files a run writes, resume continuing the
epoch count (and giving the same weights as an uninterrupted run), the time budget, seeded
reproducibility, config errors naming the key, corrupted / tampered checkpoints refused without
running their payload, and an existing run never overwritten.
"""
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.models import Landmarker  # noqa: E402
from flmcore.train._run import check_config, load_config, train  # noqa: E402

CONFIG = {
    "data": {"scheme": "ibug68", "split": "name", "val_fraction": 0.2},
    "model": {"type": "pipnet", "backbone": "resnet18", "width": 0.125, "input_size": 64, "pretrained": "",
              "n_neighbors": 4},
    "augment": {"preset": "flmcore"},
    "optim": {"lr": 1e-3},
    "schedule": {"epochs": 2, "milestones": [2]},
    "train": {"batch_size": 8, "workers": 0, "seed": 3, "threads": 1},
}


def write_pts(path, pts):
    lines = ["version: 1", f"n_points: {len(pts)}", "{"] + [f"{x + 1:.5f} {y + 1:.5f}" for x, y in pts] + ["}"]
    Path(path).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory, helen_pairs):
    from PIL import Image

    d = tmp_path_factory.mktemp("faces")
    for i in range(20):
        Image.fromarray(helen_pairs["images"][i]).save(d / f"face{i:02d}.png")
        write_pts(d / f"face{i:02d}.pts", helen_pairs["shapes68"][i])
    return d


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def config(faces_dir, **changes):
    cfg = json.loads(json.dumps(CONFIG))
    cfg["data"]["root"] = os.fspath(faces_dir)
    for sec, kv in changes.items():
        cfg[sec].update(kv)
    return cfg


def log_lines(run):
    return [json.loads(line) for line in (Path(run) / "log.jsonl").read_text().splitlines()]


def weights(path):
    st = torch.load(path, map_location="cpu", weights_only=True)
    return st["weights"] if "weights" in st else st["landmarker"]["weights"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory, faces_dir):
    """A pristine run after 1 of its 2 epochs (copy it before changing it)."""
    out = tmp_path_factory.mktemp("runs") / "one_epoch"
    res = train(config(faces_dir), out, max_epochs=1, progress=False)
    assert res["stopped"] == "max_epochs" and res["epochs_done"] == 1
    return out


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- runs
def test_run_writes_log_checkpoints_and_a_loadable_model(one_epoch, faces_dir, helen_pairs):
    names = sorted(p.name for p in one_epoch.iterdir())
    assert names == ["best.pt", "config.json", "last.pt", "log.jsonl"]
    (rec,) = log_lines(one_epoch)
    assert rec["epoch"] == 1 and np.isfinite(rec["loss"]) and rec["val_nme_io"] > 0 and rec["seconds"] >= 0
    cfg = json.loads((one_epoch / "config.json").read_text())
    assert cfg["model"]["width"] == 0.125 and cfg["train"]["seed"] == 3
    last = torch.load(one_epoch / "last.pt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and json.loads(last["config"]) == cfg
    lm = Landmarker.load(one_epoch / "best.pt", device="cpu")
    assert lm.size == 64 and lm.scheme.name == "ibug68" and lm.meta["train_faces"] + lm.meta["val_faces"] == 20
    pred = lm.predict(np.dstack([helen_pairs["images"][25]] * 3), [[20, 20, 110, 115]])
    assert pred.shape == (1, 68, 2) and np.isfinite(pred).all()


def test_resume_continues_and_equals_an_uninterrupted_run(one_epoch, tmp_path, faces_dir):
    run = copy_run(one_epoch, tmp_path / "resumed")
    res = train(config(faces_dir), run, resume=True, progress=False)
    assert res["epochs_done"] == 1 and res["stopped"] == "finished"
    assert [r["epoch"] for r in log_lines(run)] == [1, 2]
    assert torch.load(run / "last.pt", map_location="cpu", weights_only=True)["epoch"] == 2
    # nothing left to do: a second resume runs no epoch
    assert train(config(faces_dir), run, resume=True, progress=False)["epochs_done"] == 0
    straight = tmp_path / "straight"
    res2 = train(config(faces_dir), straight, progress=False)
    assert res2["epochs_done"] == 2 and [r["epoch"] for r in log_lines(straight)] == [1, 2]
    assert_same_weights(weights(run / "last.pt"), weights(straight / "last.pt"))
    assert log_lines(run)[1]["loss"] == log_lines(straight)[1]["loss"]
    # resuming with another config is refused, as a dict or as a file
    with pytest.raises(ValueError, match="config differs"):
        train(config(faces_dir, optim={"lr": 5e-4}), run, resume=True, progress=False)
    f = tmp_path / "changed.json"
    f.write_text(json.dumps(config(faces_dir, schedule={"epochs": 3})))
    with pytest.raises(ValueError, match="config differs"):
        train(f, run, resume=True, progress=False)
    f.write_text(json.dumps(config(faces_dir)))
    assert train(f, run, resume=True, progress=False)["epochs_done"] == 0  # the same config as a file


def test_same_seed_same_weights_other_seed_differs(one_epoch, tmp_path, faces_dir):
    again = tmp_path / "again"
    train(config(faces_dir), again, max_epochs=1, progress=False)
    assert_same_weights(weights(one_epoch / "last.pt"), weights(again / "last.pt"))
    other = tmp_path / "other"
    train(config(faces_dir, train={"seed": 4}), other, max_epochs=1, progress=False)
    w1, w2 = weights(one_epoch / "last.pt"), weights(other / "last.pt")
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)


def test_time_limit_stops_cleanly_keeping_the_last_full_epoch(one_epoch, tmp_path, faces_dir):
    run = copy_run(one_epoch, tmp_path / "budget")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix == ".pt"}
    res = train(config(faces_dir), run, resume=True, time_limit=0.0, progress=False)
    assert res["stopped"] == "time_limit" and res["epochs_done"] == 0
    assert [r["epoch"] for r in log_lines(run)] == [1]  # the partial epoch is not logged
    for name, data in before.items():
        assert (run / name).read_bytes() == data  # checkpoints untouched
    assert not list(run.glob("*.tmp"))
    # and the run can still be finished
    assert train(config(faces_dir), run, resume=True, progress=False)["epochs_done"] == 1
    # a budget hit in the very first epoch writes no checkpoint (and the run starts afresh later)
    fresh = tmp_path / "fresh"
    res = train(config(faces_dir), fresh, time_limit=0.0, progress=False)
    assert res["stopped"] == "time_limit" and not (fresh / "last.pt").exists()


def test_existing_run_without_resume_is_an_error_and_nothing_is_overwritten(one_epoch, tmp_path, faces_dir):
    run = copy_run(one_epoch, tmp_path / "exists")
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    with pytest.raises(ValueError, match="already holds a run"):
        train(config(faces_dir, optim={"lr": 1e-2}), run, progress=False)
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    assert after == before
    with pytest.raises(ValueError, match="nothing to resume"):
        train(config(faces_dir), tmp_path / "empty_run", resume=True, progress=False)


# ----------------------------------------------------------------------------- bad input
def test_unknown_config_key_is_named(tmp_path, faces_dir):
    with pytest.raises(ValueError, match="batchsize"):
        check_config({"train": {"batchsize": 4}})
    with pytest.raises(ValueError, match="optimizer"):
        check_config({"optimizer": {"lr": 1e-3}})
    with pytest.raises(ValueError, match="rotatee"):
        check_config({"augment": {"preset": "pipnet", "rotatee": 3.0}})
    with pytest.raises(ValueError, match="train.batch_size"):
        check_config({"train": {"batch_size": 0}})
    with pytest.raises(ValueError, match="scheme"):
        check_config({"data": {"scheme": "ibug67"}})
    f = tmp_path / "run.toml"
    f.write_text('[data]\nroot = "faces"\n\n[model]\nbackbone = "resnet18"\ninput_sise = 64\n')
    with pytest.raises(ValueError, match=r"run\.toml.*input_sise"):
        load_config(f)
    f.write_text('[data]\nroot = "faces"\n[schedule]\nepochs = 3\n')
    (tmp_path / "faces").mkdir()
    cfg = load_config(f)
    assert cfg["schedule"]["epochs"] == 3 and cfg["data"]["root"] == os.fspath(tmp_path / "faces")
    f.write_text("[data\nroot = 1\n")
    with pytest.raises(ValueError, match="cannot parse"):
        load_config(f)
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(ValueError, match="epochz"):
        train({"data": {"root": os.fspath(faces_dir)}, "schedule": {"epochz": 1}}, tmp_path / "never", progress=False)
    assert sorted(os.listdir(tmp_path)) == before  # nothing created for a bad config


def test_corrupted_checkpoint_gives_a_clear_error(one_epoch, tmp_path, faces_dir):
    run = copy_run(one_epoch, tmp_path / "corrupt")
    data = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match="last.pt"):
        train(config(faces_dir), run, resume=True, progress=False)
    (run / "last.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        train(config(faces_dir), run, resume=True, progress=False)
    torch.save({"weights": {}}, run / "last.pt")
    with pytest.raises(ValueError, match="not a flmcore training checkpoint"):
        train(config(faces_dir), run, resume=True, progress=False)
    best = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(best[:1000])
    with pytest.raises(ValueError, match="best.pt"):
        Landmarker.load(run / "best.pt")
    torch.save({"something": 1}, run / "other.pt")
    with pytest.raises(ValueError, match="not a flmcore model checkpoint"):
        Landmarker.load(run / "other.pt")
    with pytest.raises(ValueError, match="does not exist"):
        Landmarker.load(run / "missing.pt")


class _Payload:
    """Unpickling this would write a file (the attack weights_only=True must stop)."""

    def __init__(self, target):
        self.target = os.fspath(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle", "inside_training_checkpoint"])
def test_tampered_checkpoint_is_refused_and_its_payload_never_runs(one_epoch, tmp_path, container):
    marker = tmp_path / "payload_ran.txt"
    evil = tmp_path / "evil.pt"
    if container == "torch_zip":
        torch.save({"model_cfg": {"input_size": 64}, "weights": _Payload(marker)}, evil)
    elif container == "plain_pickle":
        evil.write_bytes(pickle.dumps({"model_cfg": {}, "weights": _Payload(marker)}, protocol=2))
    else:
        st = torch.load(one_epoch / "best.pt", map_location="cpu", weights_only=True)
        st["landmarker"]["meta"]["note"] = _Payload(marker)
        torch.save(st, evil)
    with pytest.raises(ValueError, match="evil.pt"):
        Landmarker.load(evil)
    assert not marker.exists()
    # the same file as a training checkpoint to resume from
    run = copy_run(one_epoch, tmp_path / "tampered_run")
    shutil.copy(evil, run / "last.pt")
    with pytest.raises(ValueError, match="last.pt"):
        train(config(Path(json.loads((run / "config.json").read_text())["data"]["root"])), run, resume=True,
              progress=False)
    assert not marker.exists()


# ----------------------------------------------------------------------------- fine-tuning (train.init)
def test_init_starts_from_a_models_weights(one_epoch, tmp_path, faces_dir):
    """train.init loads every parameter of the given model (lr ~ 0 keeps them), and refuses a model of
    another architecture or scheme, naming the difference."""
    start = weights(one_epoch / "best.pt")
    out = tmp_path / "ft"
    train(config(faces_dir, train={"init": os.fspath(one_epoch / "best.pt")}, optim={"lr": 1e-12}), out,
          max_epochs=1, progress=False)
    tuned = weights(out / "best.pt")
    net = Landmarker.load(out / "best.pt", device="cpu").network
    params = {k for k, _ in net.named_parameters()}
    assert params and params <= set(start)
    for k in params:
        assert torch.allclose(tuned[k], start[k], atol=1e-6), k
    with pytest.raises(ValueError, match=r"train.init: .*input_size \(64 vs 96\)"):
        train(config(faces_dir, train={"init": os.fspath(one_epoch / "best.pt")}, model={"input_size": 96}),
              tmp_path / "bad", progress=False)
    with pytest.raises(ValueError, match="train.init: file"):
        train(config(faces_dir, train={"init": os.fspath(tmp_path / "none.pt")}), tmp_path / "bad2", progress=False)
    with pytest.raises(ValueError, match="train.init must be a file path"):
        check_config({"train": {"init": 3}})

"""PIPNet model, training helper and self-training with curriculum (small, CPU)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.nn.backbones import MobileNetV2, ResNet18, load_weights  # noqa: E402
from flmcore.nn.functional import pip_decode  # noqa: E402
from flmcore.nn.models import PIPNet  # noqa: E402
from flmcore.pip import mean_face  # noqa: E402
from flmcore.train import predict_pipnet, self_train_curriculum, train_pipnet  # noqa: E402
from flmcore.train._stc import _augment, default_device  # noqa: E402


def _toy(n=6, size=64, p=5, seed=0):
    """Images with a bright blob at every landmark (learnable in a few steps)."""
    rs = np.random.default_rng(seed)
    pts = rs.uniform(6, size - 6, (n, p, 2))
    yy, xx = np.mgrid[:size, :size]
    imgs = np.zeros((n, size, size), np.float32)
    for i in range(n):
        for x, y in pts[i]:
            imgs[i] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0)
    return np.clip(imgs, 0, 1), pts


def test_model_outputs_targets_decode():
    net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2, stc_heads=2)
    assert net.neighbors is None
    with pytest.raises(ValueError, match="set_mean_face"):
        net.predict(torch.zeros(1, 1, 64, 64))
    imgs, pts = _toy(n=2)
    net.set_mean_face(mean_face(pts))
    out, extra = net.forward_stc(torch.as_tensor(imgs)[:, None])
    assert [tuple(o.shape) for o in out] == [(2, 5, 4, 4)] * 3 + [(2, 10, 4, 4)] * 2
    assert [tuple(e.shape) for e in extra] == [(2, 5, 2, 2), (2, 5, 1, 1)]
    tg = net.targets(pts, 64)
    np.testing.assert_allclose(net.decode(tg).numpy(), pts, atol=1e-4)
    np.testing.assert_allclose(pip_decode(tg, 16, net.neighbors).numpy(), pts, atol=1e-4)
    with pytest.raises(ValueError, match="must have 5 points"):
        net.targets(pts[:, :4], 64)
    with pytest.raises(ValueError, match="multiple of the stride 16"):
        net.targets(pts, 60)
    with pytest.raises(ValueError, match="mean_shape must have 5 points"):
        net.set_mean_face(np.zeros((4, 2)))


def test_model_scheme_argument_and_state_dict(tmp_path):
    schemes = pytest.importorskip("flmcore.schemes")
    net = PIPNet(MobileNetV2(width=0.25, stride=32, last_channels=32), "cofw29", n_neighbors=4)
    assert net.n_points == schemes.get_scheme("cofw29").n_points
    rs = np.random.default_rng(0)
    net.set_mean_face(rs.random((29, 2)))
    torch.save(net.state_dict(), tmp_path / "pip.pt")
    other = PIPNet(MobileNetV2(width=0.25, stride=32, last_channels=32), "cofw29", n_neighbors=4)
    load_weights(other, tmp_path / "pip.pt")  # weights_only=True; the neighbour table travels as a buffer
    np.testing.assert_array_equal(other.neighbors.indices, net.neighbors.indices)
    x = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(net.predict(x), other.predict(x))
    with pytest.raises(TypeError, match="scheme must be"):
        PIPNet(ResNet18(width=0.125), 2.5)
    with pytest.raises(TypeError, match="backbone must be"):
        PIPNet(torch.nn.Conv2d(1, 1, 1), 5)


def test_augment_moves_landmarks_with_the_image():
    size = 64
    pts = np.array([[[20.0, 30.0], [45.0, 12.0], [33.0, 50.0]]])
    yy, xx = np.mgrid[:size, :size]
    img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2.0) for x, y in pts[0]).astype(np.float32)
    x = torch.as_tensor(img)[None, None]
    g = torch.Generator().manual_seed(3)
    out, new = _augment(x, torch.as_tensor(pts, dtype=torch.float32), g, rotate=25, scale=0.15, shift=0.1,
                        intensity=0.0)
    warped = out[0, 0].numpy()
    for px, py in new[0].numpy():
        i, j = int(round(py)), int(round(px))
        win = warped[i - 3:i + 4, j - 3:j + 4]
        wy, wx = np.unravel_index(np.argmax(win), win.shape)
        # the blob peak sits within a pixel of the transformed landmark
        assert abs(i - 3 + wy - py) <= 1.0 and abs(j - 3 + wx - px) <= 1.0
        assert warped[i, j] > 0.5


def test_train_reduces_loss_and_predicts():
    imgs, pts = _toy(n=6)
    torch.manual_seed(0)
    net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2)
    threads = torch.get_num_threads()
    hist = train_pipnet(net, imgs, pts, epochs=12, batch_size=6, lr=3e-3, augment=False, device="cpu", rng=0,
                        num_threads=1)
    assert torch.get_num_threads() == threads  # restored
    assert hist["device"] == "cpu" and len(hist["loss"]) == 12
    assert hist["loss"][-1] < 0.6 * hist["loss"][0]
    np.testing.assert_allclose(net.mean_shape.numpy(), mean_face(pts))  # set from the training shapes
    pred, own, votes = predict_pipnet(net, imgs, device="cpu", return_votes=True)
    assert pred.shape == (6, 5, 2) and own.shape == (6, 5, 2) and votes.shape == (6, 5, 2, 2)
    assert pred.dtype == np.float64
    np.testing.assert_allclose(predict_pipnet(net, imgs, merge="none", device="cpu"), own, atol=1e-5)


def test_train_errors():
    imgs, pts = _toy(n=4)
    net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2)
    with pytest.raises(ValueError, match="same number of faces"):
        train_pipnet(net, imgs, pts[:3], epochs=1, device="cpu")
    with pytest.raises(ValueError, match="must have 5 points"):
        train_pipnet(net, imgs, pts[:, :4], epochs=1, device="cpu")
    with pytest.raises(ValueError, match=r"tasks must lie in \[1, 1\]"):
        train_pipnet(net, imgs, pts, tasks=[1, 1, 2, 1], epochs=1, device="cpu")
    with pytest.raises(ValueError, match="outside the 64x64 input"):
        train_pipnet(net, imgs, pts + 60, outside="raise", epochs=1, device="cpu")
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        train_pipnet(net, imgs, pts, epochs=1, device="cpu", num_threads=0)
    with pytest.raises(TypeError, match="model must be"):
        train_pipnet(torch.nn.Linear(1, 1), imgs, pts, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="tasks must be <= 1"):
        self_train_curriculum(net, (imgs, pts), imgs, epochs=1, device="cpu", progress=False)
    assert default_device("cpu").type == "cpu"
    assert default_device().type in ("cpu", "cuda")


def test_self_train_curriculum_tasks_and_callback():
    imgs, pts = _toy(n=4, seed=1)
    unl, _ = _toy(n=2, seed=2)
    net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2, stc_heads=2)
    seen = []
    out = self_train_curriculum(net, (imgs, pts), unl, tasks=(1, 2, 3), epochs=1, batch_size=6, device="cpu",
                                progress=False, callback=lambda r, m, p: seen.append((r, None if p is None else p.shape)))
    assert out["tasks"] == [1, 2, 3]
    assert seen == [(0, None), (1, (2, 5, 2)), (2, (2, 5, 2)), (3, (2, 5, 2))]
    assert len(out["loss"]) == 4 and all(np.isfinite(l).all() for l in out["loss"])
    for p in out["pseudo_labels"]:
        assert p.shape == (2, 5, 2) and np.isfinite(p).all()


def test_self_train_from_trained_model_without_initial_training():
    imgs, pts = _toy(n=4, seed=3)
    unl, _ = _toy(n=3, seed=4)
    net = PIPNet(ResNet18(width=0.125, stride=16), 5, n_neighbors=2, stc_heads=1)
    net.set_mean_face(mean_face(pts))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    first = []
    out = self_train_curriculum(net, (imgs, pts), unl, tasks=(1, 2), epochs=1, initial_epochs=0, reinit=True,
                                batch_size=4, device="cpu", progress=False,
                                callback=lambda r, m, p: first.append(p) if r == 1 else None)
    assert out["loss"][0] == [] and len(out["loss"]) == 3
    # round 1 pseudo-labels come from the untouched entry model
    np.testing.assert_allclose(first[0], predict_pipnet(_restore(net, before), unl, device="cpu"), atol=1e-6)


def _restore(net, state):
    import copy

    other = copy.deepcopy(net)
    other.load_state_dict(state)
    return other

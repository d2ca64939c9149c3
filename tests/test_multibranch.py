"""MultiBranch (ATF scenarios), CoordHead/HeatmapHead, heatmap coding, similar-landmark pairs."""
import numpy as np
import pytest
import torch
from torch import nn

from flmcore.nn import CoordHead, HeatmapHead
from flmcore.nn.models import MultiBranch
from flmcore.nn.functional import decode_heatmaps, heatmap_targets
from flmcore.schemes import correspondences
from flmcore.similar_points import fit_similarity, similar_landmark_pairs


def tiny_backbone():
    return nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
                         nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU())


def make_model(seed=0):
    torch.manual_seed(seed)
    return MultiBranch(tiny_backbone(), {"ibug68": CoordHead(8, 68, scale=10.0), "cofw29": CoordHead(8, 29),
                                         "hm": HeatmapHead(8, 5)})


X = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def test_forward_dict_single_and_detector():
    m = make_model().eval()
    out = m(X)
    assert set(out) == {"ibug68", "cofw29", "hm"}
    assert out["ibug68"].shape == (3, 68, 2) and out["hm"].shape == (3, 5, 8, 8)
    torch.testing.assert_close(m(X, "cofw29"), out["cofw29"], rtol=0, atol=0)
    torch.testing.assert_close(m.detector("ibug68")(X), out["ibug68"], rtol=0, atol=0)
    sub = m(X, ["hm", "cofw29"])
    assert list(sub) == ["hm", "cofw29"]


def test_prune_keeps_other_outputs_unchanged():
    m = make_model().eval()
    before = m(X)
    m.prune("ibug68")
    assert m.branch_names == ("ibug68",)
    assert not any(k.startswith("heads.cofw29") for k in m.state_dict())
    torch.testing.assert_close(m(X)["ibug68"], before["ibug68"], rtol=0, atol=0)
    m2 = make_model().eval().prune(["cofw29", "hm"])
    torch.testing.assert_close(m2(X)["hm"], before["hm"], rtol=0, atol=0)


def test_add_branch_on_frozen_backbone():
    m = make_model()
    m.eval()
    before = m(X)
    m.add_branch("novel", CoordHead(8, 19))
    assert m.backbone_frozen
    after = m(X)
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0)
    # training the novel branch: no gradient reaches the backbone, BN statistics stay
    m.train()
    assert not m.backbone.training
    bn = m.backbone[1]
    stats = bn.running_mean.clone()
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.1)
    bb_state = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    loss = m(X, "novel").pow(2).mean()
    loss.backward()
    assert all(p.grad is None for p in m.backbone.parameters())
    assert all(p.grad is not None for p in m.heads["novel"].parameters())
    opt.step()
    torch.testing.assert_close(bn.running_mean, stats, rtol=0, atol=0)
    for k, v in m.backbone.state_dict().items():
        torch.testing.assert_close(v, bb_state[k], rtol=0, atol=0)
    m.eval()
    after2 = m(X)
    for k in before:
        torch.testing.assert_close(after2[k], before[k], rtol=0, atol=0)
    # unfreezing restores training mode and gradients
    m.freeze_backbone(False)
    m.train()
    assert m.backbone.training and all(p.requires_grad for p in m.backbone.parameters())


def test_add_branch_without_freezing_trains_backbone():
    m = make_model()
    m.add_branch("novel", CoordHead(8, 19), freeze_backbone=False)
    m(X, "novel").sum().backward()
    assert all(p.grad is not None for p in m.backbone.parameters())


def test_per_branch_finetuning_only_changes_that_branch():
    m = make_model()
    m.set_trainable(backbone=False, branches="cofw29")
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("heads.cofw29") for n in names)
    m.eval()
    before = m(X)
    opt = torch.optim.SGD(m.trainable_parameters(), lr=0.5)
    m.train()
    out = m(X)
    (out["cofw29"].pow(2).mean() + out["ibug68"].pow(2).mean()).backward()
    opt.step()
    m.eval()
    after = m(X)
    torch.testing.assert_close(after["ibug68"], before["ibug68"], rtol=0, atol=0)
    torch.testing.assert_close(after["hm"], before["hm"], rtol=0, atol=0)
    assert (after["cofw29"] - before["cofw29"]).abs().max() > 1e-4
    m.set_trainable()
    assert all(p.requires_grad for p in m.parameters())


def test_coord_head_origin_and_scale():
    torch.manual_seed(0)
    origin = np.random.default_rng(0).normal(size=(4, 2))
    h = CoordHead(3, 4, origin=origin, scale=7.0)
    f = torch.rand(2, 3)
    lin = h.mlp[0]
    ref = torch.as_tensor(origin, dtype=torch.float32) + 7.0 * (f @ lin.weight.T + lin.bias).view(2, 4, 2)
    torch.testing.assert_close(h(f), ref)
    torch.testing.assert_close(h(f[:, :, None, None].expand(2, 3, 5, 5)), ref)
    h2 = CoordHead(3, 4, hidden=16).double()
    assert h2(torch.rand(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_heatmap_targets_and_decode_roundtrip():
    g = torch.Generator().manual_seed(3)
    pts = 20 + torch.rand(2, 6, 2, generator=g) * 24  # >= 3 sigma from the border
    hm = heatmap_targets(pts, (16, 16), stride=4.0, sigma=1.5)
    assert hm.shape == (2, 6, 16, 16)
    # reference: the Gaussian at one cell written out
    c = (pts[0, 0] - 1.5) / 4.0
    r, col = 5, 7
    ref = np.exp(-((col - c[0].item()) ** 2 + (r - c[1].item()) ** 2) / (2 * 1.5 ** 2))
    np.testing.assert_allclose(hm[0, 0, r, col].item(), ref, rtol=1e-5)
    hard = decode_heatmaps(hm, stride=4.0)
    assert (hard - pts).abs().max() <= 0.75 * 4.0 / 2 + 1e-5
    soft = decode_heatmaps(hm, stride=4.0, soft=True)
    assert (soft - pts).abs().max() < 0.05


def test_bad_input_raises():
    with pytest.raises(ValueError, match="non-empty"):
        MultiBranch(tiny_backbone(), {})
    with pytest.raises(TypeError, match="backbone"):
        MultiBranch("resnet", {"a": CoordHead(8, 3)})
    with pytest.raises(TypeError, match="head 'a'"):
        MultiBranch(tiny_backbone(), {"a": "fc"})
    m = make_model()
    with pytest.raises(ValueError, match="already exists"):
        m.add_branch("ibug68", CoordHead(8, 68))
    with pytest.raises(ValueError, match="unknown branch"):
        m(X, "wflw98")
    with pytest.raises(ValueError, match="unknown branch"):
        m.prune(["nope"])
    with pytest.raises(ValueError, match="n_points"):
        CoordHead(8, 0)
    with pytest.raises(ValueError, match="origin"):
        CoordHead(8, 3, origin=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="features"):
        CoordHead(8, 3)(torch.zeros(2, 8, 1))
    with pytest.raises(ValueError, match="heatmaps"):
        decode_heatmaps(torch.zeros(2, 3, 4))


# ------------------------------------------------------------------ similar landmark pairs
def test_fit_similarity_recovers_transform():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 2))
    th = 0.4
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    s, R2, t = fit_similarity(src, 1.7 * src @ R.T + [3.0, -2.0])
    np.testing.assert_allclose([s, *t], [1.7, 3.0, -2.0], atol=1e-12)
    np.testing.assert_allclose(R2, R, atol=1e-12)


def test_similar_pairs_recover_curated_correspondences():
    """A 29-point face made from a 68-point face (curated pairs), moved and scaled: recovered."""
    rng = np.random.default_rng(1)
    pairs = correspondences("ibug68", "helen_zhou29")
    a = rng.uniform(0, 100, size=(68, 2))
    # a plausible face layout is not needed: points are distinct; scheme b takes the paired points
    b = np.zeros((29, 2))
    b[pairs[:, 1]] = a[pairs[:, 0]]
    free = np.setdiff1d(np.arange(29), pairs[:, 1])
    b[free] = rng.uniform(0, 100, size=(len(free), 2)) + 300.0  # unpaired points far away
    th = 0.2
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    b_moved = 0.5 * b @ R.T + 20.0
    got = similar_landmark_pairs(a, b_moved, 0.02, anchors=pairs[:3])
    np.testing.assert_array_equal(got, pairs)
    got2 = similar_landmark_pairs(a, b, 0.02, align=False)
    np.testing.assert_array_equal(got2, pairs)


def test_similar_pairs_on_real_mean_faces(shared_data):
    """Procrustes means of the HELEN 68-point shapes and of the 29-point shapes of other faces."""
    scipy_io = pytest.importorskip("scipy.io")
    from flmcore.procrustes import generalized_procrustes

    pts_dir = shared_data / "300w_helen_trainset_68pt" / "pts"
    files = sorted(pts_dir.glob("*.pts"))[:300]
    s68 = np.stack([np.loadtxt(f) for f in files])
    mat = scipy_io.loadmat(str(shared_data / "helen_29pt_zhou" / "helen.mat"))
    s29 = np.stack([np.asarray(p, dtype=float).T for p in mat["Pts"][0]])
    m68 = generalized_procrustes(s68).mean
    m29 = generalized_procrustes(s29).mean
    found = similar_landmark_pairs(m68, m29, 0.06)
    curated = {tuple(p) for p in correspondences("ibug68", "helen_zhou29").tolist()}
    hits = sum(tuple(p) in curated for p in found.tolist())
    # most automatic pairs are curated pairs, and most curated pairs are found
    assert hits >= 0.8 * len(found)
    assert hits >= 0.6 * len(curated)


def test_similar_pairs_bad_input():
    a = np.random.default_rng(0).normal(size=(5, 2))
    with pytest.raises(ValueError, match="threshold"):
        similar_landmark_pairs(a, a, -1.0)
    with pytest.raises(ValueError, match="mean_b"):
        similar_landmark_pairs(a, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        similar_landmark_pairs(a, np.ones((4, 2)))
    with pytest.raises(ValueError, match="anchors"):
        similar_landmark_pairs(a, a, anchors=[[0, 9], [1, 1]])

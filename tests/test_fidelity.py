"""Issue 12: flmcore's paper / official-code presets against references written out here from the
papers' equations and the official implementations' formulas (plain loops, no flmcore helpers)."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore import anisotropic as an  # noqa: E402
from flmcore import metrics, schemes, ssr  # noqa: E402
from flmcore.nn import CurveLandmarkLoss, LDDMMDeformation  # noqa: E402
from flmcore.nn import functional as F  # noqa: E402
from flmcore.pose import pose_bins  # noqa: E402

# ---- the official LDDMM-Face tables, typed in from lib/utils/lddmm_params.py (300W, 68 points)
OFFICIAL_CURVES = [range(0, 9), range(9, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36),
                   range(36, 42), range(42, 48), range(48, 55), range(55, 60), range(60, 65), range(65, 68)]
OFFICIAL_SIGMA_V = [36.1889, 32.2242, 11.2157, 11.2157, 7.2351, 6.5614, 6.4939, 6.4939, 12.0834, 7.9841,
                    9.3308, 3.0845]
OFFICIAL_REGIONS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9, 10, 11]]  # idx_5 of compute_curve_dist


@pytest.fixture(scope="module")
def faces68():
    from flmcore.data import load_sample

    return load_sample("helen_pairs")["shapes68"].astype(np.float64)


def _official_sigma(mean):
    """sigma_V per curve: official table (256 crops) / 120 px inter-ocular * mean-face inter-ocular."""
    iod = math.dist(mean[36], mean[45])
    return [s / 120.0 * iod for s in OFFICIAL_SIGMA_V]


def _official_curve_term(pred, gt, sigma_w2):
    """R of the official curve_loss: sum_ij k(c_i, c_j) <tau_i, tau_j> over [pred segments, -gt segments]."""
    c = [(pred[i] + pred[i + 1]) / 2 for i in range(len(pred) - 1)] + \
        [(gt[i] + gt[i + 1]) / 2 for i in range(len(gt) - 1)]
    t = [pred[i + 1] - pred[i] for i in range(len(pred) - 1)] + \
        [-(gt[i + 1] - gt[i]) for i in range(len(gt) - 1)]
    r = 0.0
    for ci, ti in zip(c, t):
        for cj, tj in zip(c, t):
            r += math.exp(-float(((ci - cj) ** 2).sum()) / sigma_w2) * float(ti @ tj)
    return r


def test_lddmm_paper_loss_matches_official_formula(faces68, rng):
    mean = faces68.mean(0)
    gt = faces68[:3]
    pred = gt + rng.normal(size=gt.shape) * 3.0
    beta = 0.1
    sig_v = _official_sigma(mean)
    ref = []
    for b in range(len(gt)):
        iod = math.dist(gt[b, 36], gt[b, 45])
        lm = np.mean([math.dist(pred[b, i], gt[b, i]) for i in range(68)])
        cv = sum(_official_curve_term(pred[b, list(ix)], gt[b, list(ix)], (s / 2) ** 2)
                 for ix, s in zip(OFFICIAL_CURVES, sig_v))
        ref.append(lm / iod + beta * cv / (68 * iod))
    for backend in ("kernel", "torch"):
        loss = CurveLandmarkLoss("ibug68", mean, beta, preset="paper", backend=backend)
        got = loss(torch.as_tensor(pred), torch.as_tensor(gt), reduction="none").numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    # the official 0.8 L_l + 0.2 L_c is 0.8 x the paper preset with beta = 0.25
    off = CurveLandmarkLoss("ibug68", mean, 0.25, preset="paper")(torch.as_tensor(pred), torch.as_tensor(gt))
    lm_only = CurveLandmarkLoss("ibug68", mean, 0.0, preset="paper")(torch.as_tensor(pred), torch.as_tensor(gt))
    assert float(off) > float(lm_only) > 0


def test_lddmm_flmcore_loss_is_eq8_reading(faces68, rng):
    """flmcore preset: sum over curves of the per-curve mean squared distance + beta D_c, / eye-centre distance."""
    mean = faces68.mean(0)
    gt = faces68[3:5]
    pred = gt + rng.normal(size=gt.shape) * 2.0
    s = schemes.get_scheme("ibug68")
    loss = CurveLandmarkLoss(s, mean, 0.0)
    got = loss(torch.as_tensor(pred), torch.as_tensor(gt), reduction="none").numpy()
    for b in range(2):
        lm = sum(np.mean([((pred[b, i] - gt[b, i]) ** 2).sum() for i in c.indices]) for c in s.curves)
        ipd = np.linalg.norm(gt[b, 36:42].mean(0) - gt[b, 42:48].mean(0))
        assert got[b] == pytest.approx(lm / ipd, rel=1e-9)


def test_lddmm_paper_layout_and_widths(faces68):
    mean = faces68.mean(0)
    curves = schemes.lddmm_face_curves("ibug68", "paper")
    assert [list(c.indices) for c in curves] == [list(r) for r in OFFICIAL_CURVES]
    assert not any(c.closed for c in curves)
    sig = schemes.lddmm_face_sigma_v("ibug68", mean)
    np.testing.assert_allclose(sig, _official_sigma(mean), rtol=1e-12)
    iod = math.dist(mean[36], mean[45])
    assert sig[0] / iod == pytest.approx(0.3016, abs=1e-3)      # jaw half: 0.30 inter-ocular distances
    with pytest.raises(ValueError, match="preset"):
        schemes.lddmm_face_curves("cofw29", "paper")
    with pytest.raises(ValueError, match="preset"):
        schemes.lddmm_face_curves("ibug68", "official")


# ---- the official WFLW tables (lib/utils/lddmm_params.py, 'WFLW', 98 points)
OFFICIAL_WFLW_CURVES = [range(0, 17), range(17, 33), range(33, 42), range(42, 51), range(51, 55), range(55, 60),
                        range(60, 68), range(68, 76), range(76, 83), range(83, 88), range(88, 93), range(93, 96)]
OFFICIAL_WFLW_SIGMA_V = [55.9466, 52.0476, 14.7443, 14.8420, 11.2228, 10.1342, 10.3297, 10.3474, 18.0645, 14.4043,
                         15.5064, 8.6462]


def test_lddmm_paper_wflw98_layout_widths_and_layer(rng):
    """WFLW-98: the official 12 curves over points 0-95 (pupils 96, 97 on none: each moves with its own
    momentum), the official widths in units of a 119.1 px inter-ocular distance, the official layer."""
    curves = schemes.lddmm_face_curves("wflw98", "paper")
    assert [list(c.indices) for c in curves] == [list(r) for r in OFFICIAL_WFLW_CURVES]
    assert not any(c.closed for c in curves)
    mean = rng.uniform(0, 200, (98, 2))
    mean[60], mean[72] = (40.0, 80.0), (159.1, 80.0)                   # outer eye corners 119.1 px apart
    np.testing.assert_allclose(schemes.lddmm_face_sigma_v("wflw98", mean), OFFICIAL_WFLW_SIGMA_V, rtol=1e-12)
    mean[72] = (40.0 + 2 * 119.1, 80.0)                                  # twice the size: twice the widths
    sig = [2 * s for s in OFFICIAL_WFLW_SIGMA_V]
    np.testing.assert_allclose(schemes.lddmm_face_sigma_v("wflw98", mean), sig, rtol=1e-12)
    mom = rng.normal(size=(1, 98, 2)) * 3.0
    x = mean.copy()
    groups = [list(r) for r in OFFICIAL_WFLW_CURVES] + [[96], [97]]
    widths = sig + [1.0, 1.0]                                            # a singleton's width never matters
    for _ in range(2):
        v = np.zeros_like(x)
        for ix, s in zip(groups, widths):
            for i in ix:
                for j in ix:
                    v[i] += math.exp(-float(((x[i] - x[j]) ** 2).sum()) / s ** 2) * mom[0, j]
        x = x + 0.5 * v
    layer = LDDMMDeformation(mean, "wflw98", n_steps=2, preset="paper")
    got = layer(torch.as_tensor(mom), x0=torch.as_tensor(mean)[None])
    np.testing.assert_allclose(got[0].numpy(), x, rtol=1e-9, atol=1e-9)


def test_lddmm_paper_deformation_matches_official_layer(faces68, rng):
    """LandmarkDeformLayer: 2 Euler steps of 1/2, constant momenta, per-curve masked Gaussian exp(-d^2/sigma_V^2)."""
    mean = faces68.mean(0)
    mom = rng.normal(size=(2, 68, 2)) * 5.0
    sig = _official_sigma(mean)
    ref = np.empty_like(mom)
    for b in range(2):
        x = mean.copy()
        for _ in range(2):
            v = np.zeros_like(x)
            for ix, s in zip(OFFICIAL_CURVES, sig):
                for i in ix:
                    for j in ix:
                        v[i] += math.exp(-float(((x[i] - x[j]) ** 2).sum()) / s ** 2) * mom[b, j]
            x = x + 0.5 * v
        ref[b] = x
    layer = LDDMMDeformation(mean, "ibug68", n_steps=2, preset="paper")
    got = layer(torch.as_tensor(mom, dtype=torch.float64), x0=torch.as_tensor(mean)[None].expand(2, -1, -1))
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="preset"):
        LDDMMDeformation(mean, "ibug68", mode="global", preset="paper")


def _official_nme_c(pred, gt):
    """compute_curve_dist: per region both nearest-neighbour sets averaged / iod; mean over 5 regions."""
    iod = np.linalg.norm(gt[36] - gt[45])
    vals = []
    for region in OFFICIAL_REGIONS:
        idx = [i for c in region for i in OFFICIAL_CURVES[c]]
        P, G = pred[idx], gt[idx]
        d1 = [min(np.linalg.norm(p - g) for g in G) for p in P]
        d2 = [min(np.linalg.norm(g - p) for p in P) for g in G]
        vals.append(np.mean(d1 + d2) / iod)
    return np.mean(vals)


def test_nme_curve_official_matches_reimplementation(faces68, rng):
    gt = faces68[:6]
    pred = gt + rng.normal(size=gt.shape) * 2.5
    got = metrics.nme_curve(pred, gt, "ibug68", mode="lddmm_face")
    ref = [_official_nme_c(pred[b], gt[b]) for b in range(len(gt))]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    # the polyline default is the smaller (point-to-segment) distance
    assert np.all(metrics.nme_curve(pred, gt, "ibug68") < got)
    assert {k: v.tolist() for k, v in metrics.curve_regions("wflw98").items()}["eye"] == list(range(60, 76))


def _paper_weight(z, i, prev, nxt, a, b):
    t = z[nxt] - z[prev]
    t = t / np.linalg.norm(t)
    tt = np.outer(t, t)
    return tt / a ** 2 + (np.eye(2) - tt) / b ** 2


@pytest.mark.parametrize("use_torch", [False, True])
def test_anisotropic_ends_use_eq5_and_true_corners_identity(faces68, use_torch):
    z = faces68[7]
    a, b = 5.0, 3.0
    if use_torch:
        W = F.anisotropic_weights(torch.as_tensor(z[None]), "ibug68", a, b)[0].numpy()
    else:
        W = an.weight_matrices(z, "ibug68", a, b)
    # eq. 5 at the open-curve ends: jaw 0 / 16, brow ends, top of the nose bridge, nose-wing ends
    for i, (p, n) in {0: (0, 1), 16: (15, 16), 17: (17, 18), 21: (20, 21), 22: (22, 23), 26: (25, 26),
                      27: (27, 28), 31: (31, 32), 35: (34, 35)}.items():
        np.testing.assert_allclose(W[i], _paper_weight(z, i, p, n, a, b), rtol=1e-12)
    # eq. 4 inside a curve (jaw 5), and on a closed curve (eye 37)
    np.testing.assert_allclose(W[5], _paper_weight(z, 5, 4, 6, a, b), rtol=1e-12)
    np.testing.assert_allclose(W[37], _paper_weight(z, 37, 36, 38, a, b), rtol=1e-12)
    # "corners of the eyes or mouth ... unit covariance"
    for i in (36, 39, 42, 45, 48, 54, 60, 64):
        np.testing.assert_array_equal(W[i], np.eye(2))
    assert schemes.get_scheme("ibug68").corners == (36, 39, 42, 45, 48, 54, 60, 64)
    assert {15, 17} <= set(schemes.get_scheme("aflw19").corners)      # AFLW mouth corners


def test_pipnet_wflw68_matches_official_convert(rng):
    """convert_wflw of PIPNet's lib/preprocess*.py, transcribed coordinate by coordinate."""
    w = rng.uniform(0, 1, (98, 2))
    ref = []
    for i in range(17):
        ref.append(w[2 * i])
    for up, low in ((33, None), (34, 41), (35, 40), (36, 39), (37, 38),
                    (42, 50), (43, 49), (44, 48), (45, 47), (46, None)):
        ref.append(w[up] if low is None else np.array([w[up, 0], (w[up, 1] + w[low, 1]) / 2]))
    for i in range(51, 60):
        ref.append(w[i])
    for c in (60, 68):
        ref += [w[c], 0.666 * w[c + 1] + 0.333 * w[c + 2], 0.666 * w[c + 3] + 0.333 * w[c + 2], w[c + 4],
                0.666 * w[c + 5] + 0.333 * w[c + 6], 0.666 * w[c + 7] + 0.333 * w[c + 6]]
    for i in range(76, 96):
        ref.append(w[i])
    got = schemes.convert(w, "wflw98", "ibug68", conversion="pipnet")
    np.testing.assert_allclose(got, np.array(ref), rtol=1e-14, atol=1e-15)
    assert schemes.conversions("wflw98", "ibug68") == ("standard", "pipnet")
    wn = w.copy()
    wn[41] = np.nan
    assert np.isnan(schemes.convert(wn, "wflw98", "ibug68", conversion="pipnet")[18]).all()
    with pytest.raises(ValueError, match="conversion"):
        schemes.convert(w, "wflw98", "ibug68", conversion="nope")


def test_box_normalisers_one_definition(rng):
    gt = rng.uniform(0, 50, (4, 19, 2))
    pred = gt + 1.0
    wh = gt.max(1) - gt.min(1)
    np.testing.assert_allclose(metrics.normalising_distance(gt, "bbox"), np.sqrt(wh[:, 0] * wh[:, 1]))
    np.testing.assert_allclose(ssr.normalised_mean_error(pred, gt, "bbox"), metrics.nme(pred, gt, "bbox"))
    np.testing.assert_allclose(ssr.normalised_mean_error(pred, gt), metrics.nme(pred, gt, "diagonal"))
    boxes = np.array([[0, 0, 100, 144], [10, 10, 60, 60], [0, 0, 9, 4], [5, 5, 25, 30]], float)
    np.testing.assert_allclose(metrics.nme(pred, gt, "face_box", boxes=boxes),
                               np.sqrt(2) / np.sqrt([100 * 144, 50 * 50, 9 * 4, 20 * 25]))
    with pytest.raises(ValueError, match="boxes"):
        metrics.nme(pred, gt, "face_box")


def test_pose_origin_in_crop_frame_with_anisotropic_loss(faces68):
    """Rayhan §3.2: the origin is the mean of the pose-bin means of the training shapes (crop pixels)."""
    Y = faces68[:120]
    bins = pose_bins(Y, n_bins=5)
    ref = np.mean([Y[bins.labels == k].mean(0) for k in range(5) if (bins.labels == k).any()], axis=0)
    origin = bins.origin_in(Y)
    np.testing.assert_allclose(origin, ref, rtol=1e-12)
    assert np.abs(bins.origin).max() < 1.0 < np.abs(origin).max()       # Procrustes frame vs pixels
    # documented use: the network outputs delta = pred - origin; zero delta -> loss of the origin itself
    from flmcore.nn.heads import CoordHead
    from flmcore.nn.losses import AnisotropicLoss

    target = torch.as_tensor(Y[:4])
    loss = AnisotropicLoss("ibug68", origin=origin, reduction="none")
    plain = AnisotropicLoss("ibug68", reduction="none")
    o = torch.as_tensor(origin).expand(4, -1, -1)
    np.testing.assert_allclose(loss(torch.zeros_like(target), target).numpy(), plain(o, target).numpy())
    head = CoordHead(8, 68, origin=origin)
    for p in head.parameters():
        torch.nn.init.zeros_(p)
    out = head(torch.zeros(2, 8)).detach().double().numpy()
    np.testing.assert_allclose(out, np.broadcast_to(origin, (2, 68, 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="shapes"):
        bins.origin_in(Y[:10])


def test_stc_official_weighting_is_pooled_cell_mean():
    """compute_loss_pip (functions_gssl.py): one mean over every supervised cell of the score maps."""
    from flmcore.nn._pip import PIPLoss, pip_score_targets, pip_targets
    from flmcore.nn.backbones import ResNet18
    from flmcore.nn.models import PIPNet
    from flmcore.train._stc import _mixed_loss

    torch.manual_seed(0)
    net = PIPNet(ResNet18(width=0.125, stride=16), 4, n_neighbors=2, stc_heads=2,
                 mean_shape=[[10, 10], [50, 10], [30, 30], [30, 50]])
    x = torch.rand(4, 1, 64, 64)
    y = torch.tensor(np.random.default_rng(1).uniform(4, 60, (4, 4, 2)), dtype=torch.float32)
    tk = torch.tensor([3, 3, 1, 2])
    with torch.no_grad():
        out, extra = net.forward_stc(x)
    loss_fn = PIPLoss(0.1, 0.1)
    got = _mixed_loss(net, out, extra, y, tk, 3, (4, 4), net.neighbors, loss_fn, "official", "cpu")
    tgt = pip_targets(y, (4, 4), 16, net.neighbors)
    sq, n = 0.0, 0
    for b in (0, 1):                                      # labelled: the main 4x4 map
        d = (out[0][b] - tgt[0][b]) ** 2
        sq, n = sq + float(d.sum()), n + d.numel()
    for b, t in ((2, 1), (3, 2)):                         # task 1: coarsest head, task 2: the next
        lvl = net.stc_heads - t
        head = extra[lvl][b:b + 1]
        st = pip_score_targets(y[b:b + 1], tuple(head.shape[-2:]), 16 * 2 ** (lvl + 1))
        d = (head - st) ** 2
        sq, n = sq + float(d.sum()), n + d.numel()
    _, lo, ln = loss_fn.terms(out, tgt, mask=tk == 3)
    assert float(got) == pytest.approx(sq / n + 0.1 * float(lo) + 0.1 * float(ln), rel=1e-5)
    flm = _mixed_loss(net, out, extra, y, tk, 3, (4, 4), net.neighbors, loss_fn, "flmcore", "cpu")
    assert float(flm) != pytest.approx(float(got), rel=1e-3)


def test_drn_global_target_scale_is_eq15_unweighted():
    """target_scale='global': one common target scale, so the data term is eq. (15)'s plain squared error."""
    from flmcore.nn._drn import DRNCascade

    torch.manual_seed(0)
    m = DRNCascade(3, n_stages=1, hidden=(4,), face_sizes=(32,))
    X = torch.randn(20, 128 * 3, dtype=torch.float64)
    Y = torch.randn(20, 6, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1, 2.0, 3.0, 0.5], dtype=torch.float64)
    m.fit_stage(0, X, Y, max_iter=2, target_scale="global")
    st = m.stages[0]
    pooled = float(((Y - Y.mean(0)) ** 2).mean())           # one variance over every coordinate
    np.testing.assert_allclose(st.y_std.numpy(), np.full(6, math.sqrt(pooled)), rtol=1e-6)
    m.fit_stage(0, X, Y, max_iter=2)                          # flmcore default: per coordinate
    np.testing.assert_allclose(st.y_std.numpy(), Y.std(0, unbiased=False).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="target_scale"):
        m.fit_stage(0, X, Y, target_scale="paper")


def test_drn_ssr_stage0_fits_h_once(monkeypatch):
    from flmcore.data import load_sample
    from flmcore.train import _drn_ssr

    calls = []
    real = _drn_ssr._fit_H
    monkeypatch.setattr(_drn_ssr, "_fit_H", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = load_sample("helen_pairs")
    box = np.tile([0.0, 0.0, 128.0, 128.0], (12, 1))
    ds = [(d["images"][:12], d["shapes68"][:12], box), (d["images"][12:24], d["shapes29"][12:24], box)]
    _drn_ssr.fit_drn_ssr(ds, ["ibug68", "helen_zhou29"], n_stages=1, hidden=(4,), face_sizes=(32,),
                         n_alternations=2, n_perturbations=1, max_iter=2, rng=0, progress=False)
    # initialisation fits the 2 H_i once; of the 2 alternations only the second refits them (new F)
    assert len(calls) == 2 * 2

"""PIPNet: neighbour tables, label assignment, loss, decoding (against slow references)."""
from math import floor

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.pip import NeighborTable, load_meanface_txt, mean_face, neighbor_table  # noqa: E402
from flmcore.nn.functional import pip_decode, pip_merge, pip_score_targets, pip_targets  # noqa: E402
from flmcore.nn.heads import PIPHead  # noqa: E402
from flmcore.nn.losses import PIPLoss  # noqa: E402

OFFICIAL_FILES = {"ibug68": "data_300W", "wflw98": "WFLW", "cofw29": "COFW", "aflw19": "AFLW", "lapa106": "LaPa"}


# ----------------------------------------------------------------------------- references
def official_neighbors(meanface, k):
    """Independent re-statement of the official get_meanface neighbour ranking."""
    out = []
    for i in range(meanface.shape[0]):
        d = np.sum((meanface[i] - meanface) ** 2, axis=1)
        out.append(np.argsort(d)[1:1 + k])
    return np.array(out)


def official_padded(indices):
    """Official padded reverse index (lists repeated x11 then cut to max_len)."""
    p, k = indices.shape
    rev = {i: [[], []] for i in range(p)}
    for i in range(p):
        for j in range(k):
            rev[indices[i][j]][0].append(i)
            rev[indices[i][j]][1].append(j)
    max_len = max(len(rev[i][0]) for i in range(p))
    r1, r2 = [], []
    for i in range(p):
        a = (rev[i][0] + rev[i][0] * 10)[:max_len]
        b = (rev[i][1] + rev[i][1] * 10)[:max_len]
        r1.append(a)
        r2.append(b)
    return np.array(r1), np.array(r2), max_len


def slow_targets(shapes, mh, mw, stride, nb):
    """Per-landmark loop with the official gen_target_pip arithmetic (normalised coordinates)."""
    b_, n, _ = shapes.shape
    c = nb.shape[1]
    score = np.zeros((b_, n, mh, mw))
    ox, oy = np.zeros_like(score), np.zeros_like(score)
    nx, ny = np.zeros((b_, n * c, mh, mw)), np.zeros((b_, n * c, mh, mw))
    for b in range(b_):
        t = shapes[b] / np.array([mw * stride, mh * stride])  # official [0, 1] targets
        for i in range(n):
            mu_x = min(max(0, int(floor(t[i][0] * mw))), mw - 1)
            mu_y = min(max(0, int(floor(t[i][1] * mh))), mh - 1)
            score[b, i, mu_y, mu_x] = 1
            ox[b, i, mu_y, mu_x] = t[i][0] * mw - mu_x
            oy[b, i, mu_y, mu_x] = t[i][1] * mh - mu_y
            for j in range(c):
                nx[b, c * i + j, mu_y, mu_x] = t[nb[i][j]][0] * mw - mu_x
                ny[b, c * i + j, mu_y, mu_x] = t[nb[i][j]][1] * mh - mu_y
    return score, ox, oy, nx, ny


def slow_decode(outputs, stride, nb):
    """Per-image, per-landmark decode with the exact merge written as explicit loops."""
    s, ox, oy, nx, ny = (o.double().numpy() for o in outputs)
    b_, n, h, w = s.shape
    c = nb.shape[1]
    own = np.zeros((b_, n, 2))
    votes = {}
    for b in range(b_):
        for i in range(n):
            k = int(np.argmax(s[b, i].ravel()))
            cy, cx = divmod(k, w)
            own[b, i] = ((cx + ox[b, i, cy, cx]) * stride, (cy + oy[b, i, cy, cx]) * stride)
            for j in range(c):
                votes.setdefault((b, nb[i, j]), []).append(
                    ((cx + nx[b, i * c + j, cy, cx]) * stride, (cy + ny[b, i * c + j, cy, cx]) * stride))
    merged = own.copy()
    for b in range(b_):
        for j in range(n):
            v = votes.get((b, j), [])
            merged[b, j] = (own[b, j] + np.sum(v, axis=0)) / (1 + len(v)) if v else own[b, j]
    return merged, own


def helen_crops(shared_data, n=12, size=256):
    """Real 68-point shapes mapped into square crops of their bounding box (+10 %)."""
    files = sorted((shared_data / "300w_helen_trainset_68pt" / "pts").glob("*.pts"))[:n]
    out = []
    for f in files:
        p = np.loadtxt(f) - 1.0
        lo, hi = p.min(0), p.max(0)
        side = 1.1 * (hi - lo).max()
        c = (lo + hi) / 2
        out.append((p - c) / side * size + (size - 1) / 2)
    return np.array(out)


def random_maps(b, n, c, h, w, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, n, h, w, generator=g, dtype=dtype), torch.rand(b, n, h, w, generator=g, dtype=dtype),
            torch.rand(b, n, h, w, generator=g, dtype=dtype), torch.randn(b, n * c, h, w, generator=g, dtype=dtype),
            torch.randn(b, n * c, h, w, generator=g, dtype=dtype))


# ----------------------------------------------------------------------------- mean face / neighbour table
@pytest.mark.parametrize("scheme", sorted(OFFICIAL_FILES))
def test_neighbor_table_matches_official_meanfaces(shared_data, scheme):
    path = shared_data / "pipnet_meanfaces" / f"{OFFICIAL_FILES[scheme]}_meanface.txt"
    m = load_meanface_txt(path)
    from flmcore.schemes import get_scheme

    assert m.shape == (get_scheme(scheme).n_points, 2)
    t = neighbor_table(m, 10)
    np.testing.assert_array_equal(t.indices, official_neighbors(m, 10))
    # scale/translation invariance (pixel vs normalised mean face)
    np.testing.assert_array_equal(neighbor_table(m * 256 + 3.0, 10).indices, t.indices)
    # the padded reverse index reproduces the official lists
    i1, i2, max_len = t.padded_reverse_index()
    r1, r2, rl = official_padded(t.indices)
    assert max_len == rl
    np.testing.assert_array_equal(i1, r1)
    np.testing.assert_array_equal(i2, r2)


def test_neighbor_table_every_scheme():
    schemes = pytest.importorskip("flmcore.schemes")
    rs = np.random.default_rng(1)
    for name in schemes.list_schemes():
        p = schemes.get_scheme(name).n_points
        m = rs.random((p, 2))
        k = min(10, p - 1)
        t = neighbor_table(m, k)
        d = np.linalg.norm(m[:, None] - m[None], axis=-1)
        for i in range(p):  # brute force: the k smallest distances, self excluded, ascending
            others = [j for j in np.argsort(d[i], kind="stable") if j != i][:k]
            np.testing.assert_array_equal(t.indices[i], others, err_msg=name)
        assert t.counts.sum() == p * k
        for j in range(p):  # reverse index is consistent
            lm, sl = t.reverse(j)
            assert (t.indices[lm, sl] == j).all() and lm.size == t.counts[j]
        mm = t.merge_matrix()
        np.testing.assert_allclose(mm.sum(1), 1.0)


def test_neighbor_table_ties_and_errors():
    m = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 0.0]])  # tie and a duplicate point
    t = neighbor_table(m, 2)
    np.testing.assert_array_equal(t.indices[0], [3, 1])  # duplicate first (distance 0), then lower index
    np.testing.assert_array_equal(t.indices[3], [0, 1])
    with pytest.raises(ValueError, match="k must be <="):
        neighbor_table(m, 4)
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        neighbor_table(np.zeros((3, 3)), 1)
    with pytest.raises(ValueError, match="own neighbour"):
        NeighborTable.from_indices([[0], [0]])
    with pytest.raises(ValueError, match=r"lie in \[0, 1\]"):
        NeighborTable.from_indices([[1], [2]])
    assert neighbor_table(m, 0).indices.shape == (4, 0)


def test_mean_face(shared_data):
    s = helen_crops(shared_data, n=8)
    np.testing.assert_allclose(mean_face(s), s.mean(0))
    np.testing.assert_allclose(mean_face(s, image_size=256), s.mean(0) / 256)
    np.testing.assert_allclose(mean_face(s, image_size=(256, 128)), s.mean(0) / [256, 128])
    s2 = s.copy()
    s2[0, 5] = np.nan
    np.testing.assert_allclose(mean_face(s2)[5], s[1:, 5].mean(0))
    s2[:, 7] = np.nan
    with pytest.raises(ValueError, match=r"point\(s\) \[7\] missing"):
        mean_face(s2)
    with pytest.raises(ValueError, match="image_size"):
        mean_face(s, image_size=0)


# ----------------------------------------------------------------------------- head
@pytest.mark.parametrize("size,stride", [(256, 16), (256, 32), (256, 64), (256, 128), (128, 16)])
def test_head_shapes_every_stride(size, stride):
    from flmcore.nn.backbones import ResNet18

    bb = ResNet18(width=0.125, stride=stride)
    head = PIPHead(bb.out_channels, 29, n_neighbors=10)
    out = head(bb(torch.zeros(2, 1, size, size)))
    m = size // stride
    assert [tuple(o.shape) for o in out] == [(2, 29, m, m)] * 3 + [(2, 290, m, m)] * 2
    head0 = PIPHead(bb.out_channels, 29, n_neighbors=0)
    assert [o.shape[1] for o in head0(torch.zeros(1, bb.out_channels, m, m))] == [29, 29, 29, 0, 0]
    with pytest.raises(ValueError, match="features must have shape"):
        head(torch.zeros(1, 3, m, m))
    with pytest.raises(ValueError, match="n_neighbors must be <="):
        PIPHead(8, 5, n_neighbors=5)


# ----------------------------------------------------------------------------- targets
@pytest.mark.parametrize("size,stride", [(256, 32), (256, 16), (128, 16), (256, 64)])
def test_targets_match_slow_reference_real_shapes(shared_data, size, stride):
    s = helen_crops(shared_data, n=6, size=size)
    s[0, 3] = (-7.0, size + 4.0)  # one landmark outside the input: clipped cell, true offset
    tab = neighbor_table(mean_face(s), 10)
    m = size // stride
    got = pip_targets(torch.as_tensor(s), m, stride, tab)  # float64 in -> float64 out
    ref = slow_targets(s, m, m, stride, tab.indices)
    for g, r in zip(got, ref):
        assert g.dtype == torch.float64
        np.testing.assert_allclose(g.numpy(), r, atol=1e-9)
    assert ref[1][0, 3].min() < 0 and ref[2][0, 3].max() > 1  # the outside point has an offset outside [0, 1]
    # NumPy in -> float32 out, same values
    got32 = pip_targets(s, (m, m), stride, tab.indices)
    for g, r in zip(got32, ref):
        assert g.dtype == torch.float32
        np.testing.assert_allclose(g.numpy(), r, atol=1e-4)
    np.testing.assert_array_equal(pip_score_targets(s, m, stride).numpy(), ref[0])


def test_targets_rectangular_map_and_single_shape():
    s = np.array([[5.0, 40.0], [60.0, 3.0]])
    t = pip_targets(s, (4, 8), 8, None)
    ref = slow_targets(s[None], 4, 8, 8, np.zeros((2, 0), int))
    for g, r in zip(t, ref):
        np.testing.assert_allclose(g.numpy(), r, atol=1e-6)
    assert t[3].shape == (1, 0, 4, 8)


def test_round_trip(shared_data):
    s = helen_crops(shared_data, n=10, size=256)
    tab = neighbor_table(mean_face(s), 10)
    for stride in (16, 32, 64, 128):
        t = pip_targets(torch.as_tensor(s), 256 // stride, stride, tab)
        for merge in ("exact", "padded", "none"):
            np.testing.assert_allclose(pip_decode(t, stride, tab, merge=merge).numpy(), s, atol=1e-9)
        t32 = pip_targets(s, 256 // stride, stride, tab)  # float32: rounding only
        np.testing.assert_allclose(pip_decode(t32, stride, tab).numpy(), s, atol=1e-3)


def test_targets_bad_input():
    tab = neighbor_table(np.random.default_rng(0).random((5, 2)), 2)
    s = np.full((2, 5, 2), 10.0)
    with pytest.raises(ValueError, match="5 landmarks, but the input has 4"):
        pip_targets(s[:, :4], 4, 8, tab)
    with pytest.raises(ValueError, match="outside the 32x32 input"):
        pip_targets(s + [[30.0, 0.0]], 4, 8, tab, outside="raise")
    pip_targets(s - 0.4, 4, 8, tab, outside="raise")  # inside the first pixel: accepted
    with pytest.raises(ValueError, match="NaN"):
        pip_targets(np.where(np.eye(5, 2, dtype=bool), np.nan, s), 4, 8, tab)
    with pytest.raises(ValueError, match=r"\(B, P, 2\)"):
        pip_targets(np.zeros((2, 5, 3)), 4, 8, tab)
    with pytest.raises(ValueError, match="outside must be one of"):
        pip_targets(s, 4, 8, tab, outside="wrap")
    with pytest.raises(ValueError, match="stride must be > 0"):
        pip_targets(s, 4, 0, tab)
    with pytest.raises(ValueError, match="map_size"):
        pip_targets(s, (4, 4, 4), 8, tab)


# ----------------------------------------------------------------------------- loss
def test_loss_matches_hand_written_formula():
    rs = np.random.default_rng(3)
    b, n, c, h, w = 3, 7, 3, 4, 5
    s = rs.uniform(0, 40, (b, n, 2))
    tab = neighbor_table(rs.random((n, 2)), c)
    tgt = pip_targets(torch.as_tensor(s), (h, w), 8, tab)
    out = random_maps(b, n, c, h, w, seed=2, dtype=torch.float64)
    alpha, beta = 0.3, 0.7
    loss = PIPLoss(alpha, beta)
    ls, lo, ln = loss.terms(out, tgt)
    o = [x.numpy() for x in out]
    t = [x.numpy() for x in tgt]
    # eq. (2): mean square over every cell
    ls_ref = np.sum((t[0] - o[0]) ** 2) / (b * n * h * w)
    lo_ref = ln_ref = 0.0
    for bb in range(b):
        for i in range(n):
            cx = min(max(int(floor(s[bb, i, 0] / 8)), 0), w - 1)
            cy = min(max(int(floor(s[bb, i, 1] / 8)), 0), h - 1)
            lo_ref += abs(t[1][bb, i, cy, cx] - o[1][bb, i, cy, cx]) + abs(t[2][bb, i, cy, cx] - o[2][bb, i, cy, cx])
            for m in range(c):
                k = i * c + m
                ln_ref += abs(t[3][bb, k, cy, cx] - o[3][bb, k, cy, cx]) + abs(t[4][bb, k, cy, cx] - o[4][bb, k, cy, cx])
    lo_ref /= 2 * n * b  # eq. (3), averaged over the batch
    ln_ref /= 2 * c * n * b  # eq. (6)
    np.testing.assert_allclose([float(ls), float(lo), float(ln)], [ls_ref, lo_ref, ln_ref], rtol=1e-12)
    np.testing.assert_allclose(float(loss(out, tgt)), ls_ref + alpha * lo_ref + beta * ln_ref, rtol=1e-12)
    # official criterion: 10 * MSE + 1 * (L1 per channel, 4 terms) == 10 * L(alpha = beta = 0.2)
    official = 10 * ls_ref + 2 * lo_ref + 2 * ln_ref
    np.testing.assert_allclose(10 * float(PIPLoss(0.2, 0.2)(out, tgt)), official, rtol=1e-12)
    # mask: only the selected samples contribute
    mask = torch.tensor([True, False, True])
    sub = PIPLoss(alpha, beta)(tuple(x[mask] for x in out), tuple(x[mask] for x in tgt))
    np.testing.assert_allclose(float(loss(out, tgt, mask=mask)), float(sub), rtol=1e-12)
    assert float(loss(out, tgt, mask=torch.zeros(3, dtype=torch.bool))) == 0.0


def test_loss_gradient_and_errors():
    rs = np.random.default_rng(4)
    tab = neighbor_table(rs.random((4, 2)), 2)
    tgt = pip_targets(rs.uniform(0, 16, (2, 4, 2)), 2, 8, tab, dtype=torch.float64)
    out = tuple(x.clone().requires_grad_(True) for x in random_maps(2, 4, 2, 2, 2, seed=5, dtype=torch.float64))
    # smooth part (score) checked by finite differences; L1 parts away from kinks
    torch.autograd.gradcheck(lambda *o: PIPLoss(0.5, 0.5)(o, tgt), out, eps=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="targets must match outputs"):
        PIPLoss()(out, pip_targets(rs.uniform(0, 16, (2, 4, 2)), 4, 4, tab))
    with pytest.raises(TypeError, match="5-tuple"):
        PIPLoss()(out[:4], tgt)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        PIPLoss(alpha=-1)


# ----------------------------------------------------------------------------- decoding
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_decode_matches_per_image_loop(dtype):
    rs = np.random.default_rng(7)
    b, n, c, h, w = 4, 19, 10, 8, 8
    tab = neighbor_table(rs.random((n, 2)), c)
    out = random_maps(b, n, c, h, w, seed=1, dtype=dtype)
    merged, own, votes = pip_decode(out, 32, tab, return_votes=True)
    ref_merged, ref_own = slow_decode(out, 32, tab.indices)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert merged.dtype == dtype and merged.shape == (b, n, 2)
    np.testing.assert_allclose(own.double().numpy(), ref_own, atol=tol)
    np.testing.assert_allclose(merged.double().numpy(), ref_merged, atol=tol)
    np.testing.assert_allclose(pip_decode(out, 32, tab, merge="none").double().numpy(), ref_own, atol=tol)
    # dense averaging matrix gives the same merge
    cand = np.concatenate([own.double().numpy(), votes.double().numpy().reshape(b, n * c, 2)], axis=1)
    np.testing.assert_allclose(np.einsum("pk,bkd->bpd", tab.merge_matrix(), cand), ref_merged, atol=tol)


def test_padded_merge_matches_official_trick():
    rs = np.random.default_rng(8)
    n, c = 68, 10
    tab = neighbor_table(rs.random((n, 2)), c)
    out = random_maps(2, n, c, 8, 8, seed=3, dtype=torch.float64)
    merged, own, votes = pip_decode(out, 32, tab, merge="padded", return_votes=True)
    r1, r2, max_len = official_padded(tab.indices)
    for b in range(2):
        vx = votes[b, :, :, 0].numpy()[r1, r2]  # (N, max_len) as lms_pred_nb_x[reverse_index1, reverse_index2]
        vy = votes[b, :, :, 1].numpy()[r1, r2]
        ref = np.stack([np.concatenate([own[b, :, :1].numpy(), vx], 1).mean(1),
                        np.concatenate([own[b, :, 1:].numpy(), vy], 1).mean(1)], -1)
        np.testing.assert_allclose(merged[b].numpy(), ref, atol=1e-12)
    exact = pip_decode(out, 32, tab)
    assert not torch.allclose(exact, merged)  # the trick over-weights repeated votes


def test_pip_merge_no_voter_landmark():
    tab = neighbor_table(np.array([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]]), 1)  # nobody votes for landmark 2
    own = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 1.0]]])
    votes = torch.tensor([[[[2.0, 0.0]], [[0.0, 3.0]], [[3.0, 0.0]]]])
    np.testing.assert_allclose(pip_merge(own, votes, tab)[0, 2].numpy(), [5.0, 1.0])
    with pytest.raises(ValueError, match="at least one voter"):
        pip_merge(own, votes, tab, method="padded")


def test_decode_bad_input():
    tab = neighbor_table(np.random.default_rng(0).random((5, 2)), 2)
    out = random_maps(2, 5, 2, 4, 4)
    with pytest.raises(ValueError, match="neighbors is a table for 5 landmarks, but the input has 6"):
        pip_decode(random_maps(2, 6, 2, 4, 4), 8, tab)
    with pytest.raises(ValueError, match="C=2 neighbours per landmark, but the neighbour maps have 15"):
        pip_decode(random_maps(2, 5, 3, 4, 4), 8, tab)
    with pytest.raises(ValueError, match="score's shape"):
        pip_decode((out[0], out[1][..., :3], out[2], out[3], out[4]), 8, tab)
    with pytest.raises(ValueError, match=r"\(B, N \* C, H, W\)"):
        pip_decode(out[:3] + (out[3][:, :7], out[4][:, :7]), 8, tab)
    with pytest.raises(ValueError, match="neighbors .* is required"):
        pip_decode(out, 8, None)
    assert pip_decode(out, 8, None, merge="none").shape == (2, 5, 2)
    with pytest.raises(TypeError, match="5-tuple"):
        pip_decode(out[0], 8, tab)


def test_core_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, flmcore.pip; assert 'torch' not in sys.modules, 'flmcore.pip imported torch'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rs = np.random.default_rng(9)
    tab = neighbor_table(rs.random((20, 2)), 5)
    s = rs.uniform(0, 128, (3, 20, 2))
    for dev in ("cpu", "cuda"):
        t = pip_targets(torch.as_tensor(s, device=dev), 8, 16, tab)
        assert all(x.device.type == dev for x in t)
        out = pip_decode(t, 16, tab)
        assert out.device.type == dev
        np.testing.assert_allclose(out.cpu().numpy(), s, atol=1e-9)
    maps = random_maps(2, 20, 5, 8, 8, seed=4)
    cpu = pip_decode(maps, 16, tab)
    gpu = pip_decode(tuple(m.cuda() for m in maps), 16, tab)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), atol=1e-4)

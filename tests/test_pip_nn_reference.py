"""flmcore.nn PIPNet (label assignment, decoding, merge, the PIPNet module) against references written here.

The references are plain loops restating PIPNet (Jin et al., IJCV 2021): the positive cell is
``floor(position / stride)`` clamped to the map, decoding is ``(argmax cell + offset) * stride``
with the cell taken row-major from an ``(H, W)`` map (row = y, column = x), and the neighbour
merge averages a landmark's own prediction with every vote for it.  Maps are deliberately
NON-SQUARE so a row or column taken from the wrong dimension fails.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.nn.functional import pip_decode, pip_merge, pip_targets  # noqa: E402
from flmcore.nn.losses import PIPLoss  # noqa: E402
from flmcore.nn.models import PIPNet  # noqa: E402
from flmcore.nn._pip import PIP_LOSS_WEIGHTS  # noqa: E402
from flmcore.pip import NeighborTable  # noqa: E402


# ----------------------------------------------------------------------------- references
def ref_neighbors(mean, k):
    """k nearest other landmarks on the mean face, ties by the lower index."""
    out = []
    for i in range(len(mean)):
        d = [((mean[i][0] - mean[j][0]) ** 2 + (mean[i][1] - mean[j][1]) ** 2, j) for j in range(len(mean)) if j != i]
        out.append([j for _, j in sorted(d)[:k]])
    return np.array(out, dtype=np.int64).reshape(len(mean), k)


def ref_decode(outputs, stride, nb):
    """Loop decode: argmax over the row-major (H, W) map, own = (cell + offset) * stride, exact merge."""
    s, ox, oy, nx, ny = (o.detach().double().numpy() for o in outputs)
    B, N, H, W = s.shape
    C = nb.shape[1]
    own = np.zeros((B, N, 2))
    votes = np.zeros((B, N, C, 2))
    merged = np.zeros((B, N, 2))
    for b in range(B):
        for i in range(N):
            best, row, col = -np.inf, -1, -1
            for y in range(H):
                for x in range(W):
                    if s[b, i, y, x] > best:
                        best, row, col = s[b, i, y, x], y, x
            own[b, i] = ((col + ox[b, i, row, col]) * stride, (row + oy[b, i, row, col]) * stride)
            for c in range(C):
                votes[b, i, c] = ((col + nx[b, i * C + c, row, col]) * stride,
                                  (row + ny[b, i * C + c, row, col]) * stride)
        for j in range(N):
            cand = [own[b, j]] + [votes[b, i, c] for i in range(N) for c in range(C) if nb[i, c] == j]
            merged[b, j] = np.mean(cand, axis=0)
    return merged, own, votes


def ref_padded_merge(own, votes, nb):
    """Official trick: every landmark averages 1 + max_len entries, its voter list repeated then cut."""
    N, C = nb.shape
    voters = [[(i, c) for i in range(N) for c in range(C) if nb[i, c] == j] for j in range(N)]
    max_len = max(len(v) for v in voters)
    out = np.zeros_like(own)
    for b in range(own.shape[0]):
        for j in range(N):
            lst = (voters[j] * (max_len + 1))[:max_len]
            out[b, j] = (own[b, j] + sum(votes[b, i, c] for i, c in lst)) / (1 + max_len)
    return out


def ref_targets(shapes, H, W, stride, nb):
    """Loop label assignment: positive cell, offsets from its corner, neighbour offsets at it."""
    B, N, _ = shapes.shape
    C = nb.shape[1]
    score = np.zeros((B, N, H, W))
    ox, oy = np.zeros_like(score), np.zeros_like(score)
    nx, ny = np.zeros((B, N * C, H, W)), np.zeros((B, N * C, H, W))
    for b in range(B):
        for i in range(N):
            u, v = shapes[b, i, 0] / stride, shapes[b, i, 1] / stride
            col = min(max(int(math.floor(u)), 0), W - 1)
            row = min(max(int(math.floor(v)), 0), H - 1)
            score[b, i, row, col] = 1.0
            ox[b, i, row, col] = u - col
            oy[b, i, row, col] = v - row
            for c in range(C):
                j = nb[i, c]
                nx[b, i * C + c, row, col] = shapes[b, j, 0] / stride - col
                ny[b, i * C + c, row, col] = shapes[b, j, 1] / stride - row
    return score, ox, oy, nx, ny


def random_maps(B, N, C, H, W, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, N, H, W, generator=g, dtype=dtype), torch.rand(B, N, H, W, generator=g, dtype=dtype),
            torch.rand(B, N, H, W, generator=g, dtype=dtype), torch.randn(B, N * C, H, W, generator=g, dtype=dtype),
            torch.randn(B, N * C, H, W, generator=g, dtype=dtype))


class TinyBackbone(torch.nn.Module):
    """A stride-``stride`` patch convolution that records its input (to check the normalisation)."""

    def __init__(self, in_channels=1, out_channels=6, stride=4, declare_in_channels=True):
        super().__init__()
        if declare_in_channels:
            self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.conv = torch.nn.Conv2d(in_channels, out_channels, stride, stride=stride)
        self.seen = None

    def forward(self, x):
        self.seen = x.detach().clone()
        return self.conv(x)


# ----------------------------------------------------------------------------- decoding on non-square maps
@pytest.mark.parametrize("hwc", [(3, 5, 3), (6, 2, 1), (1, 7, 2)])
def test_decode_non_square_maps_against_loops(hwc):
    H, W, C = hwc
    rs = np.random.default_rng(11)
    N, B, S = 7, 3, 8
    nb = ref_neighbors(rs.random((N, 2)), C)
    tab = NeighborTable.from_indices(nb)
    out = random_maps(B, N, C, H, W, seed=H * 10 + W)
    merged, own, votes = pip_decode(out, S, tab, return_votes=True)
    r_merged, r_own, r_votes = ref_decode(out, S, nb)
    np.testing.assert_allclose(own.numpy(), r_own, atol=1e-12)
    np.testing.assert_allclose(votes.numpy(), r_votes, atol=1e-12)
    np.testing.assert_allclose(merged.numpy(), r_merged, atol=1e-12)
    np.testing.assert_allclose(pip_decode(out, S, tab).numpy(), r_merged, atol=1e-12)
    np.testing.assert_allclose(pip_decode(out, S, tab, merge="none").numpy(), r_own, atol=1e-12)
    np.testing.assert_allclose(pip_decode(out, S, None, merge="none").numpy(), r_own, atol=1e-12)
    if all((nb == j).any() for j in range(N)):
        np.testing.assert_allclose(pip_decode(out, S, tab, merge="padded").numpy(),
                                   ref_padded_merge(r_own, r_votes, nb), atol=1e-12)
    else:   # the official trick cannot handle a landmark nobody votes for
        with pytest.raises(ValueError, match="at least one voter"):
            pip_decode(out, S, tab, merge="padded")
    # merge="none" still returns the votes when asked for them
    m2, o2, v2 = pip_decode(out, S, tab, merge="none", return_votes=True)
    np.testing.assert_allclose(m2.numpy(), r_own, atol=1e-12)
    np.testing.assert_allclose(v2.numpy(), r_votes, atol=1e-12)
    # pip_merge on the loop's own / votes gives the loop's merge
    np.testing.assert_allclose(pip_merge(torch.as_tensor(r_own), torch.as_tensor(r_votes), nb).numpy(), r_merged,
                               atol=1e-12)


def test_decode_hand_placed_peak_row_and_column():
    """A single peak at row 1, column 4 of a 3 x 6 map: x from the column, y from the row."""
    s = torch.zeros(1, 2, 3, 6, dtype=torch.float64)
    s[0, 0, 1, 4] = 5.0
    s[0, 1, 2, 0] = 5.0
    ox = torch.full_like(s, 0.25)
    oy = torch.full_like(s, 0.75)
    ox[0, 1, 2, 0] = 0.5
    empty = torch.zeros(1, 0, 3, 6, dtype=torch.float64)
    got = pip_decode((s, ox, oy, empty, empty), 10, merge="none")
    np.testing.assert_allclose(got[0].numpy(), [[(4 + 0.25) * 10, (1 + 0.75) * 10], [(0 + 0.5) * 10, (2 + 0.75) * 10]])
    m, own, votes = pip_decode((s, ox, oy, empty, empty), 10, return_votes=True)   # C = 0: no table needed
    assert votes.shape == (1, 2, 0, 2)
    torch.testing.assert_close(m, got)
    torch.testing.assert_close(own, got)


def test_targets_non_square_maps_and_round_trip():
    rs = np.random.default_rng(12)
    N, C, B, S = 9, 4, 2, 8
    H, W = 3, 7                                   # input 24 x 56 pixels (rows x columns)
    shapes = np.stack([rs.uniform(-0.4, W * S - 0.6, (B, N)), rs.uniform(-0.4, H * S - 0.6, (B, N))], -1)
    shapes[0, 2] = (50.0, 3.0)                    # x beyond the height: a column only a wide map has
    shapes[1, 5] = (-6.0, 30.0)                   # outside (left, below): clipped cell, true offset
    nb = ref_neighbors(rs.random((N, 2)), C)
    got = pip_targets(torch.as_tensor(shapes), (H, W), S, nb)
    ref = ref_targets(shapes, H, W, S, nb)
    for g, r in zip(got, ref):
        assert tuple(g.shape) == r.shape and g.dtype == torch.float64
        np.testing.assert_allclose(g.numpy(), r, atol=1e-12)
    for merge in ("exact", "padded", "none"):
        np.testing.assert_allclose(pip_decode(got, S, nb, merge=merge).numpy(), shapes, atol=1e-9)
    # float32 by default for NumPy input, an explicit dtype otherwise
    assert pip_targets(shapes, (H, W), S, nb)[0].dtype == torch.float32
    assert pip_targets(shapes, [H, W], S, nb, dtype=torch.float64)[3].dtype == torch.float64
    assert pip_targets(shapes, np.array([H, W]), S)[0].shape == (B, N, H, W)
    # the input frame is [-0.5, W S - 0.5] x [-0.5, H S - 0.5]: its edges are accepted exactly
    edge = np.array([[[-0.5, -0.5], [W * S - 0.5, H * S - 0.5], [W * S - 0.5, 0.0]]])
    e = pip_targets(edge, (H, W), S, outside="raise")
    np.testing.assert_allclose(pip_decode(e, S, merge="none").numpy(), edge, atol=1e-12)
    for bad in ([-0.51, 3.0], [3.0, -0.51], [W * S - 0.49, 3.0], [3.0, H * S - 0.49]):
        with pytest.raises(ValueError, match=f"outside the {H * S}x{W * S} input"):
            pip_targets(np.array([bad]), (H, W), S, outside="raise")
    with pytest.raises(ValueError, match="map_size"):
        pip_targets(shapes, (H, 0), S)
    with pytest.raises(ValueError, match="map_size"):
        pip_targets(shapes, (H,), S)


def test_targets_input_types():
    s = np.array([[3.0, 9.0], [12.0, 1.0]])
    t = pip_targets(s.astype(np.int64), (2, 4), 4)      # integer coordinates are accepted
    np.testing.assert_allclose(t[1].numpy(), ref_targets(s[None], 2, 4, 4, np.zeros((2, 0), int))[1])
    ti = pip_targets(torch.as_tensor(s.astype(np.int64)), (2, 4), 4)
    assert ti[0].dtype == torch.float32
    with pytest.raises(TypeError, match="real-valued"):
        pip_targets(torch.ones(2, 2, dtype=torch.bool), 4, 4)
    with pytest.raises(TypeError, match="numeric"):
        pip_targets(np.array([["a", "b"]]), 4, 4)
    with pytest.raises(ValueError, match=r"\(B, P, 2\)"):
        pip_targets(np.zeros((0, 3, 2)), 4, 4)
    with pytest.raises(ValueError, match=r"\(B, P, 2\)"):
        pip_targets(np.zeros((2, 0, 2)), 4, 4)


def test_loss_non_square_against_formula():
    rs = np.random.default_rng(13)
    B, N, C, H, W, S = 2, 5, 2, 3, 6, 4
    shapes = np.stack([rs.uniform(0, W * S - 1, (B, N)), rs.uniform(0, H * S - 1, (B, N))], -1)
    nb = ref_neighbors(rs.random((N, 2)), C)
    tgt = pip_targets(torch.as_tensor(shapes), (H, W), S, nb)
    out = random_maps(B, N, C, H, W, seed=5)
    o = [x.numpy() for x in out]
    t = ref_targets(shapes, H, W, S, nb)
    ls = sum((t[0] - o[0]).ravel() ** 2) / (B * N * H * W)
    lo = ln = 0.0
    for b in range(B):
        for i in range(N):
            row, col = [int(v) for v in np.argwhere(t[0][b, i] == 1)[0]]
            lo += abs(t[1][b, i, row, col] - o[1][b, i, row, col]) + abs(t[2][b, i, row, col] - o[2][b, i, row, col])
            for c in range(C):
                k = i * C + c
                ln += abs(t[3][b, k, row, col] - o[3][b, k, row, col]) + abs(t[4][b, k, row, col] - o[4][b, k, row, col])
    lo /= 2 * B * N
    ln /= 2 * B * N * C
    got = PIPLoss(0.3, 0.6).terms(out, tgt)
    np.testing.assert_allclose([float(v) for v in got], [ls, lo, ln], rtol=1e-12)
    np.testing.assert_allclose(float(PIPLoss(0.3, 0.6)(out, tgt)), ls + 0.3 * lo + 0.6 * ln, rtol=1e-12)
    np.testing.assert_allclose(float(PIPLoss()(out, tgt)), ls + 0.1 * lo + 0.1 * ln, rtol=1e-12)   # defaults 0.1
    # C = 0: no neighbour term
    t0 = pip_targets(torch.as_tensor(shapes), (H, W), S)
    out0 = out[:3] + (out[3][:, :0], out[4][:, :0])
    l0 = PIPLoss(0.3, 0.6).terms(out0, t0)
    np.testing.assert_allclose([float(v) for v in l0], [ls, lo, 0.0], rtol=1e-12)


def test_loss_weights_are_the_papers():
    # PIPNet Sec. 4.1.2: alpha = beta = 0.02, 0.1, 0.125, 0.25 for net strides 16, 32, 64, 128
    assert PIP_LOSS_WEIGHTS == {16: 0.02, 32: 0.1, 64: 0.125, 128: 0.25}


# ----------------------------------------------------------------------------- the PIPNet module
def test_pipnet_input_normalisation_scalar_and_per_channel():
    x = torch.rand(2, 3, 8, 12, generator=torch.Generator().manual_seed(0))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    bb = TinyBackbone(in_channels=3)
    net = PIPNet(bb, 4, n_neighbors=0, input_mean=mean, input_std=std)
    assert net.input_mean == mean and net.input_std == std
    assert isinstance(net.input_mean, tuple)
    net(x)
    ref = x.clone()
    for c in range(3):
        ref[:, c] = (x[:, c] - mean[c]) / std[c]
    torch.testing.assert_close(bb.seen, ref)
    # one value for every channel: a float attribute, the same normalisation on all channels
    bb1 = TinyBackbone(in_channels=3)
    net1 = PIPNet(bb1, 4, n_neighbors=0, input_mean=0.3, input_std=0.2)
    assert net1.input_mean == 0.3 and net1.input_std == 0.2
    assert isinstance(net1.input_mean, float) and isinstance(net1.input_std, float)
    net1(x)
    torch.testing.assert_close(bb1.seen, (x - 0.3) / 0.2)
    # a one-element sequence is per-channel (expanded), not a scalar
    net2 = PIPNet(TinyBackbone(in_channels=3), 4, n_neighbors=0, input_mean=[0.3], input_std=np.array([0.2]))
    assert net2.input_mean == (0.3, 0.3, 0.3) and net2.input_std == (0.2, 0.2, 0.2)
    # defaults (grayscale): mean 0.5, std 0.25
    bbg = TinyBackbone(in_channels=1)
    netg = PIPNet(bbg, 4, n_neighbors=0)
    assert netg.input_mean == 0.5 and netg.input_std == 0.25
    xg = x[:, :1]
    netg(xg)
    torch.testing.assert_close(bbg.seen, (xg - 0.5) / 0.25)
    # the normalisation buffers are not saved in the state dict
    assert not any("_in_" in k for k in netg.state_dict())


def test_pipnet_input_normalisation_errors():
    with pytest.raises(ValueError, match=r"input_mean must be one finite value or one per input channel \(3\)"):
        PIPNet(TinyBackbone(in_channels=3), 4, n_neighbors=0, input_mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="input_mean"):
        PIPNet(TinyBackbone(in_channels=3), 4, n_neighbors=0, input_mean=(0.1, float("nan"), 0.2))
    with pytest.raises(ValueError, match=r"input_std must be one positive value or one per input channel \(3\)"):
        PIPNet(TinyBackbone(in_channels=3), 4, n_neighbors=0, input_std=(0.1, 0.2))
    with pytest.raises(ValueError, match="input_std"):
        PIPNet(TinyBackbone(in_channels=3), 4, n_neighbors=0, input_std=(0.1, 0.0, 0.2))
    with pytest.raises(ValueError, match="input_std"):
        PIPNet(TinyBackbone(in_channels=1), 4, n_neighbors=0, input_std=-0.25)
    with pytest.raises(ValueError, match="input_std"):
        PIPNet(TinyBackbone(in_channels=1), 4, n_neighbors=0, input_std=float("inf"))
    # a backbone without in_channels is taken as grayscale (1 channel)
    bb = TinyBackbone(in_channels=1, declare_in_channels=False)
    with pytest.raises(ValueError, match=r"one per input channel \(1\)"):
        PIPNet(bb, 4, n_neighbors=0, input_mean=(0.1, 0.2))
    net = PIPNet(bb, 4, n_neighbors=0, input_mean=0.1, input_std=0.5)
    x = torch.rand(1, 1, 8, 8)
    net(x)
    assert bb.seen.shape == (1, 1, 8, 8)
    torch.testing.assert_close(bb.seen, (x - 0.1) / 0.5)


def test_pipnet_scheme_argument():
    from flmcore.schemes import get_scheme

    for s in (7, np.int64(7)):
        net = PIPNet(TinyBackbone(), s, n_neighbors=2)
        assert net.n_points == 7 and net.scheme_name == "7pt"
        assert net.head.n_points == 7 and tuple(net.mean_shape.shape) == (7, 2)
    net = PIPNet(TinyBackbone(), "cofw29", n_neighbors=2)
    assert (net.n_points, net.scheme_name) == (29, "cofw29")
    net = PIPNet(TinyBackbone(), get_scheme("aflw19"), n_neighbors=2)
    assert (net.n_points, net.scheme_name) == (19, "aflw19")
    with pytest.raises(TypeError, match="scheme must be"):
        PIPNet(TinyBackbone(), True)
    with pytest.raises(ValueError, match="scheme"):
        PIPNet(TinyBackbone(), 0)
    with pytest.raises(ValueError, match="stc_heads"):
        PIPNet(TinyBackbone(), 5, n_neighbors=2, stc_heads=5)


def test_pipnet_neighbor_table_targets_decode_non_square():
    rs = np.random.default_rng(14)
    N, C, S = 6, 3, 4
    bb = TinyBackbone(stride=S)
    net = PIPNet(bb, N, n_neighbors=C)
    assert net.neighbors is None                   # not set yet
    with pytest.raises(ValueError, match="set_mean_face"):
        net.decode(random_maps(1, N, C, 2, 3, seed=0))
    with pytest.raises(ValueError, match="set_mean_face"):
        net.decode(random_maps(1, N, C, 2, 3, seed=0), merge="none", return_votes=True)
    with pytest.raises(ValueError, match="set_mean_face"):
        net.targets(rs.uniform(0, 8, (1, N, 2)), 8)
    # without the table the plain PIP decode works
    maps = random_maps(2, N, C, 2, 3, seed=1)
    _, r_own, _ = ref_decode(maps, S, np.zeros((N, C), int))
    np.testing.assert_allclose(net.decode(maps, merge="none").numpy(), r_own, atol=1e-12)

    mean1 = rs.random((N, 2))
    assert net.set_mean_face(mean1) is net
    np.testing.assert_array_equal(net.neighbors.indices, ref_neighbors(mean1, C))
    np.testing.assert_allclose(net.mean_shape.numpy(), mean1)
    mean2 = mean1[::-1].copy() * 3.0               # a different mean face: the cached table must follow
    net.set_mean_face(mean2)
    np.testing.assert_array_equal(net.neighbors.indices, ref_neighbors(mean2, C))
    assert net.neighbors is net.neighbors          # cached while unchanged
    # decode with the model's stride and table on non-square maps
    r_merged, r_own, r_votes = ref_decode(maps, S, ref_neighbors(mean2, C))
    np.testing.assert_allclose(net.decode(maps).numpy(), r_merged, atol=1e-12)
    m, own, votes = net.decode(maps, merge="none", return_votes=True)
    np.testing.assert_allclose(m.numpy(), r_own, atol=1e-12)
    np.testing.assert_allclose(votes.numpy(), r_votes, atol=1e-12)
    # targets for a non-square input (H, W) = (8, 20) pixels -> (2, 5) maps, and back
    shapes = np.stack([rs.uniform(0, 19, (2, N)), rs.uniform(0, 7, (2, N))], -1)
    tg = net.targets(shapes, (8, 20))
    assert tuple(tg[0].shape) == (2, N, 2, 5) and tuple(tg[3].shape) == (2, N * C, 2, 5)
    for g, r in zip(tg, ref_targets(shapes, 2, 5, S, ref_neighbors(mean2, C))):
        np.testing.assert_allclose(g.double().numpy(), r, atol=1e-5)
    np.testing.assert_allclose(net.decode(tg).numpy(), shapes, atol=1e-4)
    assert net.map_size((8, 20)) == (2, 5) and net.map_size(12) == (3, 3)
    with pytest.raises(ValueError, match=f"must have {N} points"):
        net.targets(shapes[:, :-1], (8, 20))
    with pytest.raises(ValueError, match="multiple of the stride 4"):
        net.map_size((8, 18))
    # a table restored into the buffer (as load_state_dict does) is picked up
    other = PIPNet(TinyBackbone(stride=S), N, n_neighbors=C, mean_shape=mean1)
    np.testing.assert_array_equal(other.neighbors.indices, ref_neighbors(mean1, C))   # cached now
    other.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(other.neighbors.indices, ref_neighbors(mean2, C))


def test_pipnet_without_neighbors_and_forward_outputs():
    N, S = 5, 4
    bb = TinyBackbone(stride=S, out_channels=5)
    net = PIPNet(bb, N, n_neighbors=0, stc_heads=1)
    assert net.neighbors is not None and net.neighbors.indices.shape == (N, 0)
    x = torch.rand(2, 1, 12, 16, generator=torch.Generator().manual_seed(3))
    out = net(x)
    assert [tuple(o.shape) for o in out] == [(2, N, 3, 4)] * 3 + [(2, 0, 3, 4)] * 2
    _, r_own, _ = ref_decode(out, S, np.zeros((N, 0), int))
    np.testing.assert_allclose(net.decode(out).detach().double().numpy(), r_own, atol=1e-4)
    net.train()
    pred = net.predict(x)
    assert net.training                             # predict restores the mode
    np.testing.assert_allclose(pred.double().numpy(), r_own, atol=1e-4)
    main, extra = net.forward_stc(x)
    for a, b_ in zip(main, out):
        torch.testing.assert_close(a, b_)
    f = bb.conv((x - 0.5) / 0.25)
    pooled = f[:, :, :2].reshape(2, 5, 1, 2, 2, 2).amax((3, 5))   # 2x2 max pooling written out (3 x 4 -> 1 x 2)
    assert len(extra) == 1
    torch.testing.assert_close(extra[0], net.head.score(pooled))


# ----------------------------------------------------------------------------- documented defaults, checks and messages
def test_head_defaults_initialisation_and_limits():
    from flmcore.nn.heads import PIPHead

    head = PIPHead(64, 20)
    assert head.n_neighbors == 10                          # C = 10 in the paper
    out = head(torch.zeros(1, 64, 2, 3))
    assert [tuple(o.shape) for o in out] == [(1, 20, 2, 3)] * 3 + [(1, 200, 2, 3)] * 2
    # official initialisation: normal weights with std 0.001, zero biases (20 x 64 = 1280 weights per map)
    w = torch.cat([m.weight.detach().ravel() for m in (head.score, head.offset_x, head.offset_y,
                                                          head.neighbor_x, head.neighbor_y)])
    assert abs(float(w.std()) - 0.001) < 0.0001
    assert all(float(m.bias.detach().abs().max()) == 0.0 for m in (head.score, head.neighbor_y))
    assert PIPHead(8, 5, n_neighbors=4).n_neighbors == 4  # C = N - 1 is the largest allowed
    one = PIPHead(1, 1, n_neighbors=0)                    # one channel, one landmark
    assert [o.shape[1] for o in one(torch.zeros(2, 1, 3, 2))] == [1, 1, 1, 0, 0]
    for kwargs, name in (({"in_channels": 0, "n_points": 5}, "in_channels"),
                         ({"in_channels": 4, "n_points": 0}, "n_points"),
                         ({"in_channels": 4, "n_points": 5, "n_neighbors": -1}, "n_neighbors")):
        with pytest.raises(ValueError, match=name):
            PIPHead(**kwargs)


def test_pipnet_defaults_and_backbone_check():
    net = PIPNet(TinyBackbone(out_channels=8), 12)
    assert net.n_neighbors == 10 and net.stc_heads == 0 and net.stride == 4
    assert net.forward_stc(torch.zeros(1, 1, 8, 8))[1] == []
    assert bool((net.neighbor_indices == -1).all())     # the "not set" marker saved with the weights
    assert bool(torch.isnan(net.mean_shape).all()) and tuple(net.mean_shape.shape) == (12, 2)
    assert PIPNet(TinyBackbone(), 1, n_neighbors=0).n_points == 1
    mh = net.map_size((8, 20))
    assert mh == (2, 5) and all(type(v) is int for v in mh)
    with pytest.raises(TypeError, match="backbone must be a torch.nn.Module with integer attributes"):
        PIPNet(torch.nn.Conv2d(1, 1, 1), 5)             # stride is a tuple there

    class NotAModule:
        out_channels, stride = 4, 4

    class NoOut(torch.nn.Module):
        stride = 4

    class FloatStride(torch.nn.Module):
        out_channels, stride = 4, 4.0

    for bad in (NotAModule(), NoOut(), FloatStride()):
        with pytest.raises(TypeError, match="backbone must be"):
            PIPNet(bad, 5)
    for bad in (True, 2.5, None):
        with pytest.raises(TypeError, match="scheme must be a scheme name, a Scheme or a number of points"):
            PIPNet(TinyBackbone(), bad)


def test_targets_map_size_forms_and_right_edge_clip():
    s = np.array([[[3.0, 2.0], [70.0, 5.0], [10.0, 1.0]]])   # x = 70 lies beyond a 5 x 8 = 40 px wide input
    ref = ref_targets(s, 1, 5, 8, np.zeros((3, 0), int))
    for map_size in ((1, 5), [1, 5]):
        got = pip_targets(s, map_size, 8)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g.numpy(), r, atol=1e-6)
    np.testing.assert_allclose(pip_decode(pip_targets(torch.as_tensor(s), (1, 5), 8), 8).numpy(), s, atol=1e-12)
    one = pip_targets(s[:, :1], 1, 8)                        # an int map size: square, here 1 x 1
    assert tuple(one[0].shape) == (1, 1, 1, 1) and float(one[1]) == pytest.approx(3.0 / 8)
    for bad in (0, -1, (0, 5), (5, 0), 2.5):
        with pytest.raises((ValueError, TypeError), match="map_size"):
            pip_targets(s, bad, 8)


def test_output_checks_name_the_tensor():
    out = random_maps(2, 3, 2, 4, 5, seed=9)
    with pytest.raises(ValueError, match=r"outputs\[1\] must have the score's shape"):
        pip_decode((out[0], out[1][:, :, :3], out[2], out[3], out[4]), 4, merge="none")
    with pytest.raises(ValueError, match=r"outputs\[2\] must have the score's shape"):
        pip_decode((out[0], out[1], out[2][:, :2], out[3], out[4]), 4, merge="none")
    with pytest.raises(ValueError, match=r"outputs\[3\] and outputs\[4\] must have the same shape"):
        pip_decode((out[0], out[1], out[2], out[3], out[4][:, :3]), 4, merge="none")
    with pytest.raises(ValueError, match=r"outputs\[0\] must have 4 dimensions"):
        pip_decode((out[0][0],) + out[1:], 4, merge="none")
    with pytest.raises(TypeError, match=r"outputs\[2\] must be a torch.Tensor"):
        pip_decode((out[0], out[1], out[2].numpy(), out[3], out[4]), 4, merge="none")
    with pytest.raises(TypeError, match="of length 4"):
        pip_decode(list(out[:4]), 4, merge="none")
    with pytest.raises(ValueError, match="own must be a tensor of shape"):
        pip_merge(torch.zeros(2, 3, 3), torch.zeros(2, 3, 2, 2), [[1, 2], [0, 2], [0, 1]])
    with pytest.raises(ValueError, match=r"votes must have shape \(B, N, C, 2\) = \(2, 3, 2, 2\)"):
        pip_merge(torch.zeros(2, 3, 2), torch.zeros(2, 3, 1, 2), [[1, 2], [0, 2], [0, 1]])


def test_loss_single_sample_and_mask_checks():
    rs = np.random.default_rng(15)
    H, W, S = 2, 3, 8
    shapes = np.stack([rs.uniform(0, W * S - 1, (1, 4)), rs.uniform(0, H * S - 1, (1, 4))], -1)
    tgt = pip_targets(torch.as_tensor(shapes), (H, W), S)
    out = random_maps(1, 4, 0, H, W, seed=6)
    o = [x.numpy() for x in out]
    t = ref_targets(shapes, H, W, S, np.zeros((4, 0), int))
    ls = ((t[0] - o[0]) ** 2).mean()
    lo = sum(abs(t[k][0, i][t[0][0, i] == 1][0] - o[k][0, i][t[0][0, i] == 1][0]) for k in (1, 2) for i in range(4)) / 8
    np.testing.assert_allclose([float(v) for v in PIPLoss().terms(out, tgt)], [ls, lo, 0.0], rtol=1e-12)
    np.testing.assert_allclose(float(PIPLoss(0.5, 0.5)(out, tgt, mask=torch.tensor([True]))), ls + 0.5 * lo, rtol=1e-12)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(1,\)"):
        PIPLoss()(out, tgt, mask=torch.tensor([1]))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(1,\)"):
        PIPLoss()(out, tgt, mask=torch.tensor([True, False]))

"""Paths no test ran before issue 13: PIPNet on non-square maps, ``outside="raise"`` at the first and
last pixel, full neighbour tables (C = P - 1), Cauchy kernel gradients of torch shooting."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.nn import functional as F  # noqa: E402
from flmcore.pip import neighbor_table  # noqa: E402


def _shapes(h_px, w_px, n=7, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(0, w_px - 1, n), rng.uniform(0, h_px - 1, n)], -1)


@pytest.mark.parametrize("hw", [(4, 8), (8, 4), (3, 5)])
def test_pip_round_trip_on_non_square_maps(hw):
    """targets -> decode gives back the landmarks: a row/column taken from the wrong dimension fails."""
    stride = 16
    h, w = hw
    s = _shapes(h * stride, w * stride)
    tab = neighbor_table(s, 3)
    t = F.pip_targets(torch.as_tensor(s)[None], hw, stride, tab, dtype=torch.float64)
    assert t[0].shape == (1, 7, h, w) and t[3].shape == (1, 21, h, w)
    for merge in ("none", "exact", "padded"):
        out = F.pip_decode(t, stride, tab, merge=merge)
        np.testing.assert_allclose(out[0].numpy(), s, atol=1e-9)
    # the argmax cell is (row = y // stride, column = x // stride)
    cy, cx = np.floor(s[:, 1] / stride).astype(int), np.floor(s[:, 0] / stride).astype(int)
    for i in range(7):
        assert t[0][0, i, cy[i], cx[i]] == 1 and t[0][0, i].sum() == 1


@pytest.mark.parametrize("hw", [(4, 8), (5, 3)])
def test_outside_raise_accepts_the_first_and_last_pixel(hw):
    stride = 8
    h, w = hw
    H, W = h * stride, w * stride
    ok = np.array([[0.0, 0.0], [W - 1.0, H - 1.0], [-0.5, -0.5], [W - 0.5, H - 0.5]])
    t = F.pip_targets(torch.as_tensor(ok)[None], hw, stride, outside="raise", dtype=torch.float64)
    out = F.pip_decode(t, stride, merge="none")[0].numpy()
    np.testing.assert_allclose(out[:2], ok[:2], atol=1e-9)
    for bad in ([[-0.51, 3.0]], [[3.0, -0.51]], [[W - 0.49, 3.0]], [[3.0, H - 0.49]]):
        with pytest.raises(ValueError, match="outside the"):
            F.pip_targets(torch.tensor([bad], dtype=torch.float64), hw, stride, outside="raise")


def test_full_neighbour_table():
    """C = P - 1: every landmark votes for every other one; the exact merge is the plain average."""
    s = _shapes(64, 64, n=5, seed=3)
    tab = neighbor_table(s, 4)
    assert tab.indices.shape == (5, 4) and (tab.counts == 4).all()
    t = F.pip_targets(torch.as_tensor(s)[None], 8, 8, tab, dtype=torch.float64)
    np.testing.assert_allclose(F.pip_decode(t, 8, tab)[0].numpy(), s, atol=1e-9)
    own = torch.as_tensor(s)[None]
    votes = torch.zeros(1, 5, 4, 2, dtype=torch.float64)
    votes[0, :, :, 0] = 1.0                       # every vote says x = 1, y = 0
    merged = F.pip_merge(own, votes, tab)[0].numpy()
    np.testing.assert_allclose(merged, (s + 4 * np.array([1.0, 0.0])) / 5, atol=1e-12)
    with pytest.raises(ValueError, match="k must be <= n_points - 1 = 4"):
        neighbor_table(s, 5)


@pytest.mark.parametrize("integrator", ["euler", "rk2"])
def test_cauchy_shooting_gradients_torch_vs_kernel_vs_finite_differences(integrator):
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(1, 5, 2, generator=g, dtype=torch.float64) * 4).requires_grad_()
    p = torch.randn(1, 5, 2, generator=g, dtype=torch.float64).requires_grad_()

    def f(xx, pp, backend):
        x1, p1 = F.lddmm_shoot(xx, pp, 1.5, n_steps=3, kernel="cauchy", integrator=integrator, backend=backend)
        return (x1 ** 2).sum() + (p1 * x1).sum()

    gt = torch.autograd.grad(f(x, p, "torch"), (x, p))
    gk = torch.autograd.grad(f(x, p, "kernel"), (x, p))
    for a, b in zip(gt, gk):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradcheck(lambda xx, pp: f(xx, pp, "torch"), (x, p), eps=1e-6, atol=1e-6)


def test_neighbor_table_from_indices_validation():
    from flmcore.pip import NeighborTable

    t = NeighborTable.from_indices(np.array([[1.0], [0.0], [1.0]]))       # integral floats are indices
    assert t.indices.dtype == np.int64 and t.counts.tolist() == [1, 2, 0]
    with pytest.raises(TypeError, match="indices must be integers, got dtype float64"):
        NeighborTable.from_indices([[1.5], [0.0]])
    with pytest.raises(ValueError, match="at least one landmark row"):
        NeighborTable.from_indices(np.zeros((0, 0), int))
    with pytest.raises(ValueError, match="must not list a landmark as its own neighbour"):
        NeighborTable.from_indices([[0], [0]])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 1\]"):
        NeighborTable.from_indices([[2], [0]])
    assert neighbor_table(np.random.default_rng(0).random((11, 2))).indices.shape == (11, 10)   # k = 10 default


def test_neighbor_table_size_bounds_and_mean_face_missing_message():
    from flmcore.pip import NeighborTable, mean_face

    with pytest.raises(ValueError, match="has 2 neighbours per landmark but only 2 landmarks"):
        NeighborTable.from_indices([[1, 1], [0, 0]])                 # C = P
    assert NeighborTable.from_indices([[1], [0]]).indices.shape == (2, 1)   # C = P - 1 is the largest
    s = np.full((2, 9, 2), np.nan)
    s[:, :2] = 1.0
    with pytest.raises(ValueError, match=r"point\(s\) \[2, 3, 4, 5, 6\] missing \(NaN\) in every shape"):
        mean_face(s)

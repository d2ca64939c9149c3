"""Issue 13, torch side: double backward through compiled kernels, LDDMMDeformation sigma_v,
NaN heatmaps, complex tensors, negative loss weights."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.nn import LDDMMDeformation  # noqa: E402
from flmcore.nn import functional as F  # noqa: E402

G = torch.Generator().manual_seed(0)


def _xp(P=5):
    x = (torch.rand(2, P, 2, generator=G, dtype=torch.float64) * 10).requires_grad_()
    p = torch.randn(2, P, 2, generator=G, dtype=torch.float64).requires_grad_()
    return x, p


CALLS = {
    "lddmm_flow": lambda x, p, backend: F.lddmm_flow(x, p, 4.0, n_steps=2, backend=backend),
    "lddmm_shoot": lambda x, p, backend: F.lddmm_shoot(x, p, 4.0, n_steps=2, backend=backend)[0],
    "currents_loss": lambda x, p, backend: F.currents_loss(x + p, x, 3.0, reduction="none", backend=backend),
    "varifold_loss": lambda x, p, backend: F.varifold_loss(x + p, x, 3.0, reduction="none", backend=backend),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_double_backward_through_compiled_kernel_raises_clearly(name):
    x, p = _xp()
    out = CALLS[name](x, p, "kernel")
    with pytest.raises(RuntimeError, match="backend='torch'"):
        torch.autograd.grad(out.sum(), p, create_graph=True)
    out = CALLS[name](x, p, "kernel")
    with pytest.raises(RuntimeError, match="backend='torch'"):   # was a silent None
        torch.autograd.grad(out.sum(), p, create_graph=True, allow_unused=True)
    # first derivatives still work and match the torch backend
    g_k, = torch.autograd.grad(CALLS[name](x, p, "kernel").sum(), p)
    g_t, = torch.autograd.grad(CALLS[name](x, p, "torch").sum(), p)
    torch.testing.assert_close(g_k, g_t, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["lddmm_flow", "lddmm_shoot", "currents_loss"])
def test_second_derivatives_with_torch_backend_match_finite_differences(name):
    x, p = _xp(4)

    def grad_norm(pp):
        g, = torch.autograd.grad(CALLS[name](x, pp, "torch").pow(2).sum(), pp, create_graph=True)
        return g.pow(2).sum()

    assert torch.autograd.gradcheck(grad_norm, (p,), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_lddmm_deformation_scalar_sigma_v_is_shared_by_curves():
    mean = np.random.default_rng(0).random((68, 2)) * 100
    d = LDDMMDeformation(mean, "ibug68", sigma_v=5.0)
    assert d.sigma == [5.0] * len(d.curves)
    out = d(torch.zeros(2, 2, 68, 2))          # raised "sigma must hold one value per curve" before
    torch.testing.assert_close(out, torch.as_tensor(mean, dtype=torch.float32).expand(2, -1, -1))
    for bad in (0.0, -1.0, float("nan"), 1e-300):
        with pytest.raises(ValueError, match="sigma_v must"):
            LDDMMDeformation(mean, "ibug68", sigma_v=bad)
    with pytest.raises(ValueError, match=r"sigma_v must be a number or hold one value per curve \(9\)"):
        LDDMMDeformation(mean, "ibug68", sigma_v=[1.0, 2.0])
    with pytest.raises(ValueError, match="sigma_v must be > 0"):
        LDDMMDeformation(mean, "ibug68", mode="global", sigma_v=-3.0)


@pytest.mark.parametrize("soft", [False, True])
def test_decode_heatmaps_rejects_nan_maps(soft):
    hm = torch.zeros(1, 2, 8, 8)
    hm[0, 1] = float("nan")
    with pytest.raises(ValueError, match=r"heatmaps contains 64 NaN or infinite"):
        F.decode_heatmaps(hm, soft=soft)
    hm[0, 1] = 0.0
    hm[0, 1, 3, 5] = 1.0
    assert torch.isfinite(F.decode_heatmaps(hm, soft=soft)).all()


def test_pip_targets_reject_complex_and_bool_tensors():
    s = torch.tensor([[[10.0, 20.0], [40.0, 8.0]]])
    with pytest.raises(TypeError, match="shapes must be a real-valued tensor, got dtype torch.complex64"):
        F.pip_targets(s.to(torch.complex64), 4, 16)
    with pytest.raises(TypeError, match="real-valued"):
        F.pip_targets(s > 0, 4, 16)
    assert F.pip_targets(s.to(torch.int64), 4, 16)[0].shape == (1, 2, 4, 4)


@pytest.mark.parametrize("loss", ["l1_loss", "l2_loss", "smooth_l1_loss", "wing_loss", "adaptive_wing_loss"])
@pytest.mark.parametrize("w", [-1.0, float("nan"), float("inf")])
def test_loss_weights_must_be_finite_and_nonnegative(loss, w):
    a, b = torch.rand(2, 3, 2), torch.rand(2, 3, 2)
    if loss == "adaptive_wing_loss":
        a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    weights = torch.tensor([1.0, w, 1.0])
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        getattr(F, loss)(a, b, weights=weights)
    assert torch.isfinite(getattr(F, loss)(a, b, weights=torch.tensor([1.0, 0.0, 2.0])))


def test_compiled_lddmm_overflow_in_float32_is_an_error():
    x = torch.rand(1, 5, 2) * 1e30
    with pytest.raises(ValueError, match="lddmm_shoot overflowed to non-finite values in float32"):
        F.lddmm_shoot(x, x, 1.0, n_steps=2, backend="kernel")
    with pytest.raises(ValueError, match="currents/varifold loss overflowed"):
        F.currents_loss(x, x * 0.5, 1.0, backend="kernel")
    with pytest.raises(ValueError, match="lddmm_flow overflowed"):
        F.lddmm_flow(torch.rand(1, 5, 2), torch.full((1, 5, 2), 3e38), 50.0, n_steps=2, backend="kernel")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_sift_layer_half_precision_and_extreme_images(dtype):
    from flmcore.nn import ShapeIndexedSIFT

    layer = ShapeIndexedSIFT(window=8.0)
    img = torch.rand(2, 32, 32, generator=G)
    pts = torch.rand(2, 3, 2, generator=G) * 20 + 5
    ref = layer(img, pts)
    out = layer(img.to(dtype), pts.to(dtype))         # bfloat16 raised "unsupported ScalarType" before
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.02 if dtype != torch.float32 else 1e-6, rtol=0.05)
    for scale in (1e30, 1e-30):                        # squared gradients overflowed / underflowed float32
        big = layer(img * scale, pts)
        assert torch.isfinite(big).all()
        torch.testing.assert_close(big, ref, atol=1e-5, rtol=1e-4)
    with pytest.raises(TypeError, match="real-valued"):
        layer(img.to(torch.complex64), pts)

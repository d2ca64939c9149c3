"""API consistency a newcomer expects (issue 14): curve indices index arrays, one name for point transport,
torch layers say what they expect."""
import numpy as np
import pytest

from flmcore.schemes import Curve, get_scheme


def test_curve_indices_index_arrays():
    s = get_scheme("ibug68")
    shape = np.random.default_rng(0).normal(size=(68, 2))
    jaw = s.curve("jaw")
    np.testing.assert_array_equal(shape[jaw.indices], shape[list(jaw.indices)])
    assert jaw.indices == tuple(range(17)) and hash(jaw.indices) == hash(tuple(range(17)))
    assert Curve("x", [1, 2], False) == Curve("x", (1, 2), False)
    torch = pytest.importorskip("torch")
    t = torch.as_tensor(shape)
    assert torch.equal(t[jaw.indices], t[list(jaw.indices)])


def test_lddmm_deformation_flow_points_and_transport_alias():
    torch = pytest.importorskip("torch")
    from flmcore.nn import LDDMMDeformation

    layer = LDDMMDeformation([[0.0, 0.0], [4.0, 0.0], [2.0, 3.0]], None, mode="global", n_steps=2)
    mom = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]])
    pts = torch.tensor([[1.0, 1.0], [3.0, 0.5]])
    a = layer.flow_points(mom, pts)
    assert a.shape == (1, 2, 2)
    assert torch.equal(a, layer.transport(mom, pts))


def test_numpy_input_to_torch_layer_says_expected_tensor():
    torch = pytest.importorskip("torch")
    from flmcore.nn import AnisotropicLoss, LDDMMDeformation

    layer = LDDMMDeformation([[0.0, 0.0], [4.0, 0.0]], None, mode="global", n_steps=2)
    with pytest.raises(TypeError, match=r"momenta expected a torch.Tensor, got numpy.ndarray"):
        layer(np.zeros((1, 2, 2)))
    with pytest.raises(TypeError, match=r"points expected a torch.Tensor, got numpy.ndarray"):
        layer.flow_points(torch.zeros(1, 2, 2), np.zeros((1, 2)))
    import inspect

    import flmcore.nn as fnn

    for obj in vars(fnn).values():  # every exported layer whose forward takes tensors is guarded
        if inspect.isclass(obj) and issubclass(obj, torch.nn.Module) and "forward" in obj.__dict__:
            takes_tensor = any("Tensor" in str(p.annotation)
                               for p in inspect.signature(obj.forward).parameters.values())
            assert not takes_tensor or getattr(obj.forward, "_flmcore_guarded", False), obj

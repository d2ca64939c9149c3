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

"""The shared argument checkers: every error names the argument, the expectation and what came."""
import numpy as np
import pytest

from flmcore import _validate as v


def test_check_array_converts_and_keeps_values():
    a = np.arange(6, dtype=np.int32).reshape(3, 2)
    out = v.check_array(a, "x", ndim=2)
    assert out.dtype == np.float64 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, a)
    assert v.check_array(2.5, "x", ndim=(0, 1)).shape == ()


@pytest.mark.parametrize("bad, err, words", [
    (np.array([1.0, np.nan]), ValueError, ["x", "NaN"]),
    (np.array([1.0, np.inf]), ValueError, ["x", "infinite"]),
    (np.array(["a", "b"]), TypeError, ["x", "numeric"]),
    (np.array([1 + 2j]), TypeError, ["x", "real"]),
    (np.zeros((0, 2)), ValueError, ["x", "empty"]),
    (None, TypeError, ["x", "None"]),
])
def test_check_array_errors(bad, err, words):
    with pytest.raises(err) as e:
        v.check_array(bad, "x")
    for w in words:
        assert w in str(e.value)


def test_check_array_shape_and_ndim_messages():
    with pytest.raises(ValueError, match=r"x must have 2 dimensions, got shape \(3,\)"):
        v.check_array(np.zeros(3), "x", ndim=2)
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., \*, 2\), got shape \(3, 3\)"):
        v.check_array(np.zeros((3, 3)), "x", shape=(None, 2))


def test_check_shapes():
    s = v.check_shapes(np.zeros((4, 5, 2)) + np.arange(5)[None, :, None], "shapes", n_points=5, batch=True,
                       check_degenerate=True)
    assert s.shape == (4, 5, 2)
    with pytest.raises(ValueError, match="shapes must have 68 points, got 5"):
        v.check_shapes(np.zeros((5, 2)), n_points=68)
    with pytest.raises(ValueError, match=r"\(x, y\) coordinates, got shape \(5, 3\)"):
        v.check_shapes(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="degenerate"):
        v.check_shapes(np.ones((2, 5, 2)), check_degenerate=True)
    with pytest.raises(ValueError, match="at least one shape"):
        v.check_shapes(np.zeros((0, 5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        v.check_shapes(np.full((3, 2), np.nan))
    assert np.isnan(v.check_shapes(np.full((3, 2), np.nan), allow_nan=True)).all()
    with pytest.raises(TypeError, match="torch.Tensor"):
        import torch
        v.check_shapes(torch.zeros(3, 2))


def test_check_images():
    img = v.check_images(np.full((4, 5), 255, np.uint8))
    assert img.dtype == np.float32 and img.max() == 1.0
    with pytest.raises(ValueError, match="grayscale"):
        v.check_images(np.zeros((8, 8, 3)))
    with pytest.raises(TypeError, match="uint8 or float"):
        v.check_images(np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        v.check_images(np.zeros((4, 4)), batch=True)
    with pytest.raises(ValueError, match="NaN"):
        v.check_images(np.full((4, 4), np.nan))


def test_scalar_checkers():
    assert v.check_positive(1, "s") == 1.0
    for bad, err in [(0, ValueError), (-1, ValueError), (float("nan"), ValueError), ("1", TypeError), (True, TypeError)]:
        with pytest.raises(err, match="s"):
            v.check_positive(bad, "s")
    assert v.check_nonnegative(0, "t") == 0.0 and v.check_nonnegative(np.inf, "t") == np.inf
    with pytest.raises(ValueError, match=r"k must be >= 1, got 0"):
        v.check_int(0, "k", min_value=1)
    with pytest.raises(TypeError, match="k must be an integer"):
        v.check_int(1.5, "k")
    with pytest.raises(ValueError, match="mode must be one of 'a', 'b'; got 'c'"):
        v.check_in("c", "mode", ("a", "b"))
    with pytest.raises(ValueError, match=r"p must be in \[0, 1\]"):
        v.check_probability(1.5, "p")
    assert v.check_num_threads(None) >= 1
    with pytest.raises(ValueError):
        v.check_num_threads(0)


def test_check_rng_reproducible():
    assert v.check_rng(3).integers(1000) == v.check_rng(3).integers(1000)
    g = np.random.default_rng(0)
    assert v.check_rng(g) is g
    with pytest.raises(TypeError, match="rng"):
        v.check_rng("seed")

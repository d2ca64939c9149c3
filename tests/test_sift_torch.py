"""flmcore.nn.ShapeIndexedSIFT: kernel path vs the pure-torch path, dtype/device, no gradient."""
import numpy as np
import pytest
import torch
from scipy import ndimage

from flmcore.nn import ShapeIndexedSIFT
from flmcore.nn._sift import shape_indexed_sift_torch
from flmcore.sift import shape_indexed_sift


@pytest.fixture
def data(rng):
    imgs = np.stack([ndimage.gaussian_filter(rng.random((36, 44)), 1.2) for _ in range(2)]).astype(np.float32)
    shapes = rng.uniform(-4, 46, (2, 5, 2))
    return imgs, shapes


@pytest.mark.parametrize("orientation", [0.0, 0.9])
def test_torch_path_matches_kernel(data, orientation):
    imgs, shapes = data
    want = shape_indexed_sift(imgs, shapes, window=14.0, orientation=orientation)
    got = shape_indexed_sift_torch(torch.from_numpy(imgs), torch.from_numpy(shapes), window=14.0,
                                   orientation=orientation)
    np.testing.assert_allclose(got.numpy(), want, atol=5e-6)


def test_torch_path_shape_frame(data):
    imgs, shapes = data
    ref = shapes[0] - shapes[0].mean(0)
    want = shape_indexed_sift(imgs, shapes, window=10.0, orientation="shape", reference=ref)
    got = shape_indexed_sift_torch(torch.from_numpy(imgs), torch.from_numpy(shapes), window=10.0,
                                   orientation="shape", reference=ref)
    np.testing.assert_allclose(got.numpy(), want, atol=5e-6)


def test_module_cpu(data):
    imgs, shapes = data
    layer = ShapeIndexedSIFT(window=14.0, flatten=False)
    s = torch.from_numpy(shapes).requires_grad_(True)
    out = layer(torch.from_numpy(imgs), s)
    assert out.dtype == torch.float64 and out.shape == (2, 5, 128) and not out.requires_grad
    np.testing.assert_array_equal(out.numpy().astype(np.float32), shape_indexed_sift(imgs, shapes, window=14.0))
    out32 = ShapeIndexedSIFT(window=14.0, flatten=True)(torch.from_numpy(imgs)[:, None], s.float())
    assert out32.dtype == torch.float32 and out32.shape == (2, 5 * 128)


def test_module_bad_input(data):
    imgs, shapes = data
    layer = ShapeIndexedSIFT()
    with pytest.raises(TypeError):
        layer(imgs, torch.from_numpy(shapes))
    with pytest.raises(ValueError, match="shapes"):
        layer(torch.from_numpy(imgs), torch.from_numpy(shapes[0]))
    with pytest.raises(ValueError, match="NaN"):
        bad = shapes.copy()
        bad[0, 0, 0] = np.nan
        layer(torch.from_numpy(imgs), torch.from_numpy(bad))

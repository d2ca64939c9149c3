"""Quick run of the ``lddmm`` demo part (sparse-to-dense on real HELEN shapes)."""
import numpy as np
import pytest

from flmcore.train.demos import DemoContext
from flmcore.train.demos import lddmm as demo


def test_sparse_indices_ibug68():
    kept = demo.sparse_indices("ibug68")
    assert set(range(36, 48)) <= set(kept)  # eyes whole
    assert {0, 16, 17, 21, 27, 30} <= set(kept)  # open-curve ends kept
    assert len(kept) == 43


def test_interpolation_baseline_exact_on_straight_curves():
    # on a mean face whose hidden points lie at their arc-length fraction, linear interpolation is exact
    from flmcore.schemes import get_scheme

    s = get_scheme("ibug68")
    rng = np.random.default_rng(0)
    shape = rng.normal(size=(68, 2)) * 30
    kept = demo.sparse_indices(s)
    jaw = np.c_[np.linspace(0, 160, 17), np.zeros(17)]
    shape[:17] = jaw
    out = demo._interp_along_curves(shape, shape[kept] * 2.0, kept, s)
    np.testing.assert_allclose(out[1:16:2], 2.0 * jaw[1:16:2], atol=1e-9)


def test_demo_runs_quick(tmp_path, require_sample):
    pytest.importorskip("matplotlib")
    require_sample("helen68_shapes")  # skips only in a wheel install; a broken sample fails
    shapes = demo.load_helen68()
    assert shapes.shape[1:] == (68, 2)
    md = demo.run(DemoContext(out_dir=tmp_path, quick=True))
    assert md.startswith("## LDDMM")
    assert (tmp_path / "lddmm_sparse_to_dense.png").is_file()
    assert "LDDMM (kept control points)" in md and "thin-plate spline" in md


def test_load_helen68_reads_npz_or_pts_folders(tmp_path):
    """``--data DIR``: helen68_shapes.npz first, else every .pts below DIR (1-based files)."""
    from flmcore.io import write_pts

    shapes = np.random.default_rng(0).uniform(5, 90, (3, 68, 2))
    for i, s in enumerate(shapes):
        (tmp_path / "sub").mkdir(exist_ok=True)
        write_pts(tmp_path / "sub" / f"f{i}.pts", s)
    np.testing.assert_allclose(demo.load_helen68(tmp_path), shapes, atol=1e-3)
    np.savez(tmp_path / "helen68_shapes.npz", shapes=shapes[:2])
    assert demo.load_helen68(tmp_path).shape == (2, 68, 2)
    with pytest.raises(FileNotFoundError, match="no helen68_shapes.npz and no .pts"):
        demo.load_helen68(tmp_path / "sub2" if (tmp_path / "sub2").mkdir() is None else None)

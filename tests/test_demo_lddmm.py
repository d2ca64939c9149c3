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
    assert "NME_c official" in md and "| `paper` | 12 |" in md


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


def test_preset_comparison_against_the_official_formulas(rng):
    """The ratio beta * D_c / D_l of the paper preset, recomputed here from the official code's formulas:
    D_l = mean point distance / outer-eye-corner distance; D_c = currents norm per curve (Gaussian kernel,
    sigma_W = half the official sigma_V) summed over the 12 curves, / 68, / the same distance."""
    import math

    torch = pytest.importorskip("torch")  # noqa: F841
    curves = [range(0, 9), range(9, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36),
              range(36, 42), range(42, 48), range(48, 55), range(55, 60), range(60, 65), range(65, 68)]
    table = [36.1889, 32.2242, 11.2157, 11.2157, 7.2351, 6.5614, 6.4939, 6.4939, 12.0834, 7.9841, 9.3308, 3.0845]
    from flmcore.data import load_sample

    y = load_sample("helen_pairs")["shapes68"][:6].astype(np.float64)
    cmp = demo.preset_comparison(y, noise_px=3.0, beta=0.1, rng=5)
    import torch as T

    pred = (T.as_tensor(y) + 3.0 * T.randn(y.shape, generator=T.Generator().manual_seed(5),
                                             dtype=T.float64)).numpy()
    mean = y.mean(0)
    iod_m = math.dist(mean[36], mean[45])
    ratios_l, ratios_c = [], []
    for p, g in zip(pred, y):
        d = np.linalg.norm(g[36] - g[45])
        dl = np.mean(np.linalg.norm(p - g, axis=1)) / d
        dc = 0.0
        for ix, s in zip(curves, table):
            sw2 = (0.5 * s / 120.0 * iod_m) ** 2
            P, G = p[list(ix)], g[list(ix)]
            c = np.r_[(P[1:] + P[:-1]) / 2, (G[1:] + G[:-1]) / 2]
            t = np.r_[P[1:] - P[:-1], -(G[1:] - G[:-1])]
            K = np.exp(-((c[:, None] - c[None]) ** 2).sum(-1) / sw2)
            dc += float((K * (t @ t.T)).sum())
        ratios_l.append(dl)
        ratios_c.append(0.1 * dc / 68 / d)
    want = np.mean(ratios_c) / np.mean(ratios_l)
    assert cmp["paper"]["curve_to_landmark"] == pytest.approx(want, rel=1e-6)
    assert cmp["paper"]["n_curves"] == 12 and cmp["flmcore"]["n_curves"] == 9
    assert cmp["paper"]["jaw_sigma_v_iod"] == pytest.approx(36.1889 / 120.0, rel=1e-9)
    assert "| `paper` | 12 |" in demo.preset_table(cmp)

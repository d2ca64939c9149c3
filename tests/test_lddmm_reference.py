"""flmcore.lddmm and flmcore.nn LDDMM layers: behaviour the mutation runs found untested, each against a
reference written here (the documented formula, plain numpy)."""
import numpy as np
import pytest

from flmcore import lddmm as L


def test_deformation_grid_default_bounds_are_the_box_enlarged_by_20_percent_per_side():
    pts = np.array([[10.0, 20.0], [50.0, 25.0], [30.0, 40.0]])          # box 40 x 20: pad 0.2 * 40 = 8
    traj = np.stack([pts, pts])
    rows, cols = L.deformation_grid(traj, np.zeros_like(pts), 5.0, n_lines=3, n_samples=4)
    np.testing.assert_allclose(rows[0, 0], [2.0, 12.0], atol=1e-6)
    np.testing.assert_allclose(rows[-1, -1], [58.0, 48.0], atol=1e-6)
    np.testing.assert_allclose(rows[1, :, 1], 30.0, atol=1e-6)          # the middle row line, undeformed
    np.testing.assert_allclose(cols[:, 0, 0], [2.0, 30.0, 58.0], atol=1e-6)

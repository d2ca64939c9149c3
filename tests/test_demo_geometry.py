"""Quick run of the geometry demo part on the bundled sample."""
import re

import numpy as np
import pytest

from flmcore.train.demos import DemoContext


def test_geometry_demo_quick(tmp_path, require_sample, recording_progress):
    pytest.importorskip("matplotlib")
    from flmcore.train.demos import geometry

    require_sample("aflw2000")
    progress = recording_progress
    md = geometry.run(DemoContext(out_dir=tmp_path, quick=True, seed=1, progress=progress))
    assert md.startswith("## Geometry")
    assert (tmp_path / "geometry.png").stat().st_size > 10_000
    assert "![geometry](geometry.png)" in md
    assert progress.seen == ["geometry"]
    # the table carries finite numbers for both baselines, the oracle similarity beating the box placement
    rows = [r for r in md.splitlines() if r.startswith("| mean shape")]
    assert len(rows) == 2
    vals = [[float(v) for v in re.findall(r"\| ([0-9.]+)", r)] for r in rows]
    assert all(np.isfinite(v).all() and len(v) == 5 for v in vals)
    assert vals[1][0] < vals[0][0]
    rho = float(re.search(r"rho\(\|PC1 - median\|, \|yaw\|\) = ([0-9.]+)", md).group(1))
    assert rho > 0.7

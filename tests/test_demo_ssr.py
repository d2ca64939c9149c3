"""Quick run of the ssr demo part on the bundled sample."""
import re

import pytest

from flmcore.train.demos import DemoContext


def test_ssr_demo_quick(tmp_path, require_sample, recording_progress):
    pytest.importorskip("matplotlib")
    from flmcore.train.demos import ssr

    require_sample("helen_pairs")
    progress = recording_progress
    md = ssr.run(DemoContext(out_dir=tmp_path, quick=True, seed=0, progress=progress))
    assert md.startswith("## Sparse shape regression")
    assert (tmp_path / "ssr.png").stat().st_size > 10_000
    assert "![ssr](ssr.png)" in md and progress.seen == ["ssr"]
    rows = {r.split("|")[1].strip(): [float(v) for v in re.findall(r"\| ([0-9.]+) \(nnz", r)]
            for r in md.splitlines() if r.startswith("| 68 -> 29") or r.startswith("| 29 -> 68")}
    assert set(rows) == {"68 -> 29", "29 -> 68"}
    # tau = 1, 1.4, inf: transfer errors are a few % of the inter-ocular distance; 68 -> 29 is easier
    assert all(len(v) == 3 and all(0.5 < x < 20 for x in v) for v in rows.values())
    assert min(rows["68 -> 29"]) < min(rows["29 -> 68"])
    n_union = int(re.search(r"helen_zhou29: (\d+) points", md).group(1))
    assert 68 < n_union < 68 + 29

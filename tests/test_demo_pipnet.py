"""Quick run of the pipnet demo part on the bundled sample."""
import re

import numpy as np
import pytest

from flmcore.train.demos import DemoContext


def test_pipnet_demo_quick(tmp_path, require_sample, recording_progress):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    from flmcore.train.demos import pipnet

    require_sample("helen_pairs")
    progress = recording_progress
    md = pipnet.run(DemoContext(out_dir=tmp_path, quick=True, seed=0, progress=progress))
    assert md.startswith("## PIPNet")
    assert progress.seen == ["PIPNet epochs"]
    assert (tmp_path / "pipnet_votes.png").stat().st_size > 10_000
    assert "![PIPNet predictions and neighbour votes](pipnet_votes.png)" in md
    rows = {r.split("|")[1].strip(): float(r.split("|")[2]) for r in md.splitlines()
            if re.match(r"\| (exact|padded|none) \|", r)}
    assert set(rows) == {"exact", "padded", "none"}
    assert all(np.isfinite(v) and v > 0 for v in rows.values())

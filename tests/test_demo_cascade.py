"""The cascade part of ``flmcore demo`` runs in quick mode and writes its figures."""
import re

import pytest


def test_demo_cascade_quick(tmp_path, helen_pairs):
    from flmcore.train.demos import DemoContext
    from flmcore.train.demos.cascade import run

    md = run(DemoContext(out_dir=tmp_path, quick=True, seed=0))
    assert md.startswith("## ")
    for name in ("cascade_ced.png", "cascade_pred.png"):
        assert (tmp_path / name).stat().st_size > 1000
    rows = re.findall(r"^\| (SDM|Deep|Deep\+Sparse|DRN-SSR) \| ([0-9.]+) \|", md, flags=re.M)
    assert [r[0] for r in rows] == ["SDM", "Deep", "Deep+Sparse", "DRN-SSR"]
    # every method beats the box-placed mean shape (its NME on these faces is about 18.5 %)
    assert all(float(r[1]) < 16.0 for r in rows), rows

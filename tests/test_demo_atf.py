"""The ``atf`` demo part runs with quick budgets and writes its figures and markdown."""
import pytest


def test_demo_atf_quick(tmp_path, helen_pairs):
    pytest.importorskip("matplotlib")
    from flmcore.train.demos import DemoContext, atf

    md = atf.run(DemoContext(out_dir=tmp_path, quick=True, seed=0))
    assert md.startswith("## ")
    for name in ("atf_losses.png", "atf_pose_bins.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in md
    assert "ATDP + L_MB" in md and "novel" in md
    assert "nan" not in md.lower()

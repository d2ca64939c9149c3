"""The ``atf`` demo part runs with quick budgets and writes its figures and markdown."""
import pytest


def test_demo_atf_quick(tmp_path):
    pytest.importorskip("matplotlib")
    from flmcore.data import sample_dir
    from flmcore.train.demos import DemoContext, atf

    if not (sample_dir() / "helen_pairs.npz").is_file():
        pytest.skip("bundled sample not present")
    md = atf.run(DemoContext(out_dir=tmp_path, quick=True, seed=0))
    assert md.startswith("## ")
    for name in ("atf_losses.png", "atf_pose_bins.png"):
        assert (tmp_path / name).stat().st_size > 1000
        assert f"]({name})" in md
    assert "ATDP + L_MB" in md and "novel" in md
    assert "nan" not in md.lower()

"""The pipnet demo part: a config run through flmcore.train.train, scored by flmcore.evaluate."""
import re

import numpy as np
import pytest

from flmcore.train.demos import DemoContext


def _merge_rows(md):
    return {r.split("|")[1].strip(): float(r.split("|")[2]) for r in md.splitlines()
            if re.match(r"\| (exact|padded|none) \|", r)}


def test_pipnet_demo_quick(tmp_path, require_sample):
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib

    from flmcore.train import check_config, load_config
    from flmcore.train.demos import pipnet

    require_sample("helen_pairs")
    md = pipnet.run(DemoContext(out_dir=tmp_path, quick=True, seed=0))
    assert md.startswith("## PIPNet")
    assert "bundled sample" in md  # the part names its data source
    # the sample was written as an iBUG folder and the run used the config shown in the report
    assert len(list((tmp_path / "pipnet_data").glob("*.pts"))) == 80
    assert len(list((tmp_path / "pipnet_data").glob("*.jpg"))) == 80
    toml_text = re.search(r"```toml\n(.*?)```", md, flags=re.S).group(1)
    shown = check_config(tomllib.loads(toml_text))
    assert shown == load_config(tmp_path / "pipnet_config.toml")
    assert shown == check_config(pipnet.demo_config(tmp_path / "pipnet_data", quick=True, seed=0))
    assert shown["model"]["backbone"] == "resnet18" and shown["model"]["width"] == 0.25
    assert (tmp_path / "pipnet_run" / "best.pt").is_file() and (tmp_path / "pipnet_run" / "log.jsonl").is_file()
    assert "flmcore train pipnet_config.toml --out my_run" in md and "flmcore evaluate my_run/best.pt" in md
    for name in ("pipnet_ced.png", "pipnet_votes.png"):
        assert (tmp_path / name).stat().st_size > 10_000
        assert f"]({name})" in md
    # the evaluation table is EvaluationResult.to_markdown() of the held-out split
    from flmcore.evaluate import EvaluationResult

    res = EvaluationResult.from_json(tmp_path / "pipnet_eval.json")
    assert res.to_markdown().splitlines()[2] in md
    assert 0 < res.pooled["nme_interocular"] < 60
    rows = _merge_rows(md)
    assert set(rows) == {"exact", "padded", "none"}
    assert all(np.isfinite(v) and v > 0 for v in rows.values())
    assert rows["exact"] == pytest.approx(res.pooled["nme_interocular"], abs=0.01)


def test_pipnet_demo_trains_on_an_ibug_folder(tmp_path, require_sample):
    """``--data DIR`` with .pts files: the part trains on DIR itself, not on the sample."""
    pytest.importorskip("matplotlib")
    pytest.importorskip("torch")
    from flmcore.train.demos import pipnet

    d = require_sample("helen_pairs")
    data = tmp_path / "faces"
    pipnet.write_ibug_folder(d["images"][:40], d["shapes68"][:40], data / "helen", names=d["names"][:40])
    out = tmp_path / "out"
    md = pipnet.run(DemoContext(out_dir=out, data_dir=data, quick=True, seed=0))
    assert f"the iBUG folder `{data}`" in md and "bundled sample" not in md
    assert not (out / "pipnet_data").exists()
    assert f'root = "{data}"' in md
    assert "| helen |" in md  # subsets="auto": the first folder of the face names
    assert "--time-limit" in md


def test_write_ibug_folder_round_trip(tmp_path):
    from flmcore.datasets import LandmarkDataset
    from flmcore.train.demos.pipnet import write_ibug_folder

    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (3, 40, 30), dtype=np.uint8)
    shapes = rng.uniform(2, 28, (3, 68, 2))
    write_ibug_folder(img, shapes, tmp_path, names=["a.jpg", "b.jpg", "c.jpg"])
    ds = LandmarkDataset.from_folder(tmp_path)
    assert ds.names == ["a", "b", "c"]
    np.testing.assert_allclose(ds.shapes, shapes, atol=1e-3)  # .pts written 1-based, read back 0-based
    assert ds[0]["image"].shape == (40, 30, 3)
    with pytest.raises(ValueError, match="unique"):
        write_ibug_folder(img, shapes, tmp_path / "x", names=["a", "a", "b"])

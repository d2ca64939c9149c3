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


def test_drn_ssr_init_matches_the_two_step_rows(helen_pairs):
    """``flmcore.train.drn_ssr_init`` (the public 'Deep+Sparse' H): identity rows for the own
    points, L1-bounded rows for the others, errors that name the argument."""
    import numpy as np

    from flmcore.ssr import SchemeUnion
    from flmcore.train import drn_ssr_init

    d = helen_pairs
    u = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"])
    n = 40
    guess = np.full((n, u.n_union_, 2), np.nan)
    guess[:, u.index_[1]] = d["shapes29"][:n]
    box = np.tile([0.0, 0.0, 128.0, 128.0], (n, 1))
    H = drn_ssr_init(d["shapes68"][:n], box, guess, ["ibug68", "helen_zhou29"], 0, tau=1.4)
    own = np.asarray(u.index_[0])
    np.testing.assert_array_equal(H[own], np.eye(68))
    other = np.setdiff1d(np.arange(u.n_union_), own)
    assert np.abs(H[other]).sum(axis=1).max() <= 1.4 + 1e-6
    # H reproduces the 29-only points of these faces from their 68 points (box units -> a few px)
    from flmcore.cascade import from_box_units, to_box_units

    rec = from_box_units(np.einsum("qp,npc->nqc", H, to_box_units(d["shapes68"][:n], box) + 0.5) - 0.5, box)
    assert np.abs(rec[:, other] - guess[:, other]).mean() < 3.0
    with pytest.raises(ValueError, match="predicted must have shape"):
        drn_ssr_init(d["shapes68"][:n], box, guess[:, :70], ["ibug68", "helen_zhou29"], 0)
    with pytest.raises(ValueError, match="finite"):
        drn_ssr_init(d["shapes68"][:n], box, np.full_like(guess, np.nan), ["ibug68", "helen_zhou29"], 0)
    with pytest.raises(ValueError, match="dataset"):
        drn_ssr_init(d["shapes68"][:n], box, guess, ["ibug68", "helen_zhou29"], 2)

"""DRNCascade and fit_drn_ssr: masked training (eq. 11), H rows (eq. 14), objectives, bad input."""
import numpy as np
import pytest
import torch

from flmcore.nn.models import DRNCascade
from flmcore.ssr import lars_lasso, shapes_to_design
from flmcore.train import fit_drn_ssr
from flmcore.train._drn_ssr import _fit_H


@pytest.fixture(scope="module")
def helen(helen_pairs):
    d = helen_pairs
    box = np.tile([0.0, 0.0, 128.0, 128.0], (d["images"].shape[0], 1))
    return d, box


@pytest.fixture(autouse=True)
def _one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


def test_fit_stage_mask_ignores_unobserved_targets():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(40, 256, generator=g)
    Y = torch.randn(40, 4, generator=g)
    M = torch.ones(40, 4, dtype=torch.bool)
    M[:, 3] = False
    Y2 = Y.clone()
    Y2[:, 3] = 1e6  # garbage where unobserved
    trained = []
    for targets in (Y, Y2):
        torch.manual_seed(0)
        net = DRNCascade(2, n_stages=1, hidden=(6,), face_sizes=(16,))
        net.fit_stage(0, X, targets, M, max_iter=5)
        trained.append(net)
    for p, q in zip(trained[0].parameters(), trained[1].parameters()):
        torch.testing.assert_close(p, q)
    with torch.no_grad():
        a, b = trained[0].stages[0](X), trained[1].stages[0](X)
    torch.testing.assert_close(a[:, :3], b[:, :3])


def test_fit_stage_fits_a_smooth_map_lbfgs_and_adam():
    torch.manual_seed(0)
    X = torch.randn(200, 128)
    W = torch.randn(128, 2) * 0.1
    Y = torch.tanh(X @ W)
    for opt, it in (("lbfgs", 60), ("adam", 60)):
        torch.manual_seed(0)
        net = DRNCascade(1, n_stages=1, hidden=(16,), face_sizes=(16,))
        log = net.fit_stage(0, X, Y, optimizer=opt, max_iter=it, weight_decay=1e-4, lr=1e-2,
                            generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            err = ((net.stages[0](X) - Y) ** 2).mean() / Y.var()
        assert log[-1] < log[0] and float(err) < 0.2, (opt, float(err))


def test_fit_H_rows_are_lars_lasso(rng):
    U = rng.normal(size=(30, 5, 2)) * 0.1
    pred = np.zeros((30, 7, 2))
    pred[:, 5] = U[:, :2].mean(1)
    pred[:, 6] = 0.7 * U[:, 3] + 0.3 * U[:, 4]
    own = np.arange(5)
    H = _fit_H(U, pred, own, 7, 1.4, None)
    np.testing.assert_array_equal(H[:5], np.eye(5))
    want = lars_lasso(shapes_to_design(U + 0.5), shapes_to_design(pred[:, 5:] + 0.5), 1.4)
    np.testing.assert_allclose(H[5:], want)
    assert np.abs(H[5:]).sum(1).max() <= 1.4 + 1e-9


def test_drn_cascade_deep_on_real_faces(helen):
    d, box = helen
    net = DRNCascade(29, n_stages=2, hidden=(32,), face_sizes=(64, 96))
    net.fit(d["images"][:60], d["shapes29"][:60], box[:60], n_perturbations=2, max_iter=25, rng=0)
    _, stages = net.predict(d["images"][200:220], box[200:220], return_stages=True)
    err = np.linalg.norm(stages - d["shapes29"][200:220], axis=-1).mean(axis=(1, 2))
    assert err[-1] < 0.8 * err[0], err


def test_fit_drn_ssr_history_and_union(helen):
    d, box = helen
    ds = [(d["images"][:30], d["shapes68"][:30], box[:30]), (d["images"][30:60], d["shapes29"][30:60], box[30:60])]
    res = fit_drn_ssr(ds, ["ibug68", "helen_zhou29"], n_stages=2, hidden=(16,), face_sizes=(48, 64),
                      n_alternations=2, n_perturbations=1, max_iter=10, rng=0, progress=False)
    assert res.union.n_union_ == 76
    assert [(h["stage"], h["iteration"]) for h in res.history] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert all(np.isfinite(h["objective_F"]) and np.isfinite(h["objective_H"]) for h in res.history)
    assert all(h["l1_max"] <= 1.4 + 1e-9 for h in res.history)
    for i, H in enumerate(res.H):
        own = np.asarray(res.union.index_[i])
        np.testing.assert_array_equal(H[own], np.eye(len(own)))
    pred = res.predict(d["images"][100:103], box[100:103])
    assert pred.shape == (3, 76, 2) and np.isfinite(pred).all()
    # two-step baseline keeps H fixed
    res2 = fit_drn_ssr(ds, ["ibug68", "helen_zhou29"], n_stages=1, hidden=(8,), face_sizes=(48,),
                       H_init=res.H, alternate=False, n_perturbations=1, max_iter=5, rng=0, progress=False)
    for a, b in zip(res.H, res2.H):
        np.testing.assert_array_equal(a, b)


def test_fit_drn_ssr_bad_input(helen):
    d, box = helen
    ds = [(d["images"][:5], d["shapes68"][:5], box[:5]), (d["images"][5:10], d["shapes29"][5:10], box[5:10])]
    with pytest.raises(ValueError, match="same length"):
        fit_drn_ssr(ds, ["ibug68"])
    with pytest.raises(ValueError, match="points"):
        fit_drn_ssr(ds, ["helen_zhou29", "ibug68"], progress=False)
    with pytest.raises(ValueError, match="H_init"):
        fit_drn_ssr(ds, ["ibug68", "helen_zhou29"], alternate=False, progress=False)
    with pytest.raises(ValueError, match="face_sizes"):
        DRNCascade(5, n_stages=2, face_sizes=(80,))

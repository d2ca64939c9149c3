"""SDM and the cascade helpers (flmcore.cascade): closed forms, real-data descent, bad input."""
import numpy as np
import pytest
from sklearn.linear_model import Ridge

from flmcore.cascade import (SDM, box_frames, from_box_units, normalise_faces, perturbation_model,
                             place_mean_shape, ridge_fit, to_box_units)


@pytest.fixture(scope="module")
def helen(helen_pairs):
    d = helen_pairs
    box = np.tile([0.0, 0.0, 128.0, 128.0], (d["images"].shape[0], 1))
    return d["images"], d["shapes29"], box


@pytest.mark.parametrize("n", [30, 200])  # dual (n < d) and primal systems
def test_ridge_fit_matches_sklearn(rng, n):
    X = rng.normal(size=(n, 60))
    Y = rng.normal(size=(n, 3))
    R, r = ridge_fit(X, Y, alpha=0.3)
    lam = 0.3 * ((X - X.mean(0)) ** 2).sum() / X.shape[1]
    sk = Ridge(alpha=lam, fit_intercept=True, solver="cholesky").fit(X, Y)
    np.testing.assert_allclose(R, sk.coef_.T, atol=1e-8)
    np.testing.assert_allclose(r, sk.intercept_, atol=1e-8)


def test_box_unit_round_trip(rng):
    boxes = np.array([[10.0, 20.0, 60.0, 90.0], [0.0, 0.0, 5.0, 5.0]])
    S = rng.uniform(0, 80, (2, 7, 2))
    np.testing.assert_allclose(from_box_units(to_box_units(S, boxes), boxes), S)
    c, s = box_frames(boxes)
    np.testing.assert_allclose(s, [np.sqrt(50 * 70), 5.0])
    np.testing.assert_allclose(place_mean_shape(np.zeros((3, 2)), boxes)[1], np.tile(c[1], (3, 1)))


def test_normalise_faces_identity_and_scale(rng):
    img = rng.random((1, 16, 16)).astype(np.float32)
    same = normalise_faces(img, [[0, 0, 16, 16]], 16)
    np.testing.assert_allclose(same, img, atol=1e-6)
    half = normalise_faces(img, [[0, 0, 16, 16]], 8)
    # face pixel j samples x = 2 j + 0.5: the mean of two neighbours (bilinear)
    np.testing.assert_allclose(half[0, 3, 2], img[0, 6:8, 4:6].mean(), atol=1e-6)


def test_perturbation_model_recovers_similarity(rng):
    mean = rng.normal(size=(10, 2)) * 0.2
    boxes = np.tile([0.0, 0.0, 100.0, 100.0], (50, 1))
    init = place_mean_shape(mean, boxes)
    ang = rng.normal(0.1, 0.02, 50)
    sc = np.exp(rng.normal(0.05, 0.01, 50))
    R = np.stack([np.stack([np.cos(ang), -np.sin(ang)], -1), np.stack([np.sin(ang), np.cos(ang)], -1)], -2)
    c = init.mean(1, keepdims=True)
    S = sc[:, None, None] * np.einsum("bij,bpj->bpi", R, init - c) + c + 3.0
    model = perturbation_model(mean, S, boxes)
    np.testing.assert_allclose(model[0], [0.05, 0.03, 0.03, 0.1], atol=0.01)
    np.testing.assert_allclose(model[1, [0, 3]], [0.01, 0.02], atol=0.006)


def test_sdm_descends_on_real_faces(helen):
    images, shapes, box = helen
    sdm = SDM(n_stages=3, n_perturbations=3, alpha=5.0, window=0.3, rng=0).fit(images[:100], shapes[:100], box[:100])
    pred, stages = sdm.predict(images[200:230], box[200:230], return_stages=True)
    err = np.linalg.norm(stages - shapes[200:230], axis=-1).mean(axis=(1, 2))
    assert stages.shape == (4, 30, 29, 2)
    assert err[-1] < 0.6 * err[0], err  # the cascade reduces the error of the mean shape a lot
    assert np.all(np.diff(sdm.train_error_) < 0)
    # same seed, same model
    sdm2 = SDM(n_stages=3, n_perturbations=3, alpha=5.0, window=0.3, rng=0).fit(images[:100], shapes[:100], box[:100])
    np.testing.assert_allclose(sdm2.predict(images[200:203], box[200:203]), pred[:3], rtol=1e-10)
    assert SDM(n_stages=2).get_params()["n_stages"] == 2


def test_sdm_bad_input(helen):
    images, shapes, box = helen
    with pytest.raises(ValueError, match="boxes"):
        SDM(n_stages=1).fit(images[:5], shapes[:5], box[:4])
    with pytest.raises(ValueError, match="x1 > x0"):
        SDM(n_stages=1).fit(images[:5], shapes[:5], np.tile([5.0, 0.0, 1.0, 9.0], (5, 1)))
    with pytest.raises(ValueError, match="same number"):
        SDM(n_stages=1).fit(images[:5], shapes[:4], box[:5])
    with pytest.raises(ValueError, match="NaN"):
        bad = shapes[:5].copy()
        bad[0, 0, 0] = np.nan
        SDM(n_stages=1).fit(images[:5], bad, box[:5])
    with pytest.raises(ValueError, match="grayscale"):
        SDM(n_stages=1).fit(np.zeros((5, 32, 32, 3), np.uint8), shapes[:5], box[:5])
    with pytest.raises(ValueError, match="n_stages"):
        SDM(n_stages=0).fit(images[:5], shapes[:5], box[:5])
    with pytest.raises(RuntimeError, match="not fitted"):
        SDM().predict(images[:2], box[:2])

"""register: defaults safe on real faces, a success/status that means something, a warning on folds (issue 14)."""
import inspect
import warnings

import numpy as np
import pytest

from flmcore import lddmm as L


def test_default_gamma_is_positive():
    assert inspect.signature(L.register).parameters["gamma"].default > 0


def test_easy_fit_converges_and_succeeds():
    tpl = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.FoldingWarning)
        res = L.register(tpl, tpl + [0.3, 0.1], sigma_v=2.0, beta=0.0, n_steps=4)
    assert res.status in ("converged", "plateau") and res.success
    assert res.min_det_jacobian > 0 and res.message


def test_iteration_limit_is_reported():
    t = np.linspace(0, 1, 10)
    tpl = np.c_[40 * t, 10 * np.sin(3 * t)]
    res = L.register(tpl, tpl * 1.2 + [3.0, -1.0], curves=[list(range(10))], max_iter=2)
    assert res.status == "max_iter" and not res.success


def test_real_face_pair_folds_at_gamma0_not_by_default(require_sample):
    """A HELEN pair (indices 695 -> 460 of helen68_shapes) that gamma=0 folds."""
    from flmcore.procrustes import align
    from flmcore.schemes import get_scheme

    S = require_sample("helen68_shapes")["shapes"]
    tgt = S[460]
    _, T = align(S[695], tgt)
    tpl = T.apply(S[695])
    sch = get_scheme("ibug68")
    with pytest.warns(L.FoldingWarning, match="raise gamma"):
        bad = L.register(tpl, tgt, curves=sch, gamma=0.0, num_threads=1)
    assert bad.min_det_jacobian <= 0 and not bad.success
    with warnings.catch_warnings():
        warnings.simplefilter("error", L.FoldingWarning)
        good = L.register(tpl, tgt, curves=sch, num_threads=1)
    assert good.min_det_jacobian > 0
    assert (good.jacobian_determinant(tpl) > 0).all()
    assert good.status in ("converged", "plateau", "max_iter")

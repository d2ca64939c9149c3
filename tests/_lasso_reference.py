"""scikit-learn's LARS-lasso path (``lars_path(method="lasso")``) as the reference of flmcore's LARS
kernels: the whole path, and the solution at an L1 budget interpolated on it."""
import warnings

import numpy as np
from sklearn.linear_model import lars_path


def sk_path(X, y, positive=False):
    """``(alphas, coefs)`` of the path; ``coefs`` has one row per knot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alphas, _, coefs = lars_path(X, y, method="lasso", positive=positive)
    return alphas, coefs.T


def sk_at(X, y, tau, positive=False):
    """The path interpolated at ``||h||_1 = tau`` (the last knot beyond its end)."""
    coefs = sk_path(X, y, positive)[1]
    l1 = np.abs(coefs).sum(axis=1)
    if tau >= l1[-1]:
        return coefs[-1]
    i = int(np.searchsorted(l1, tau, side="left"))
    if i == 0:
        return coefs[0]
    f = (tau - l1[i - 1]) / (l1[i] - l1[i - 1])
    return coefs[i - 1] + f * (coefs[i] - coefs[i - 1])

"""Benchmark: batched L1-budget LARS (flmcore.ssr) vs scikit-learn, at DRN-SSR sizes.

p_i = 68 source landmarks, p_j = 74 target landmarks, tau = 1.4, N faces (2N samples).
Faces: the 870 real HELEN iBUG-68 shapes (bundled sample) augmented with random
similarities and a small non-rigid jitter, in pixels (eq. 14 as written, no normalisation).
Targets: 74 points, each a sparse affine mix of 1-4 nearby source points (+ 0.5 % noise),
about half with a negative weight (the budget tau = 1.4 binds for 30-40 % of the targets).

Contenders (same G = X^T X and X^T Y for all):

* ``gram``            the Gram products alone (BLAS; the floor of any Gram-based method)
* ``flmcore``         :func:`flmcore.ssr.lars_lasso_gram` (all 74 paths, Numba, prange over targets)
* ``flmcore+gram``    :func:`flmcore.ssr.lars_lasso` end to end (products + paths)
* ``sk_lars_path``    scikit-learn ``lars_path_gram(method="lasso")`` per target with the precomputed
                      Gram, full path, then interpolation at ||h||_1 = tau (scikit-learn has no L1 stop)
* ``sk_LassoLars``    ``LassoLars(alpha=a_r, precompute=G)`` per target.  LassoLars is parametrised by
                      alpha, not by the L1 norm: a_r is read off flmcore's path at ||h_r||_1 = tau (alpha is
                      piecewise linear in the L1 norm), so it solves the same problem (max diff printed);
                      it still computes the path down to a_r each time.

1 and 2 threads for the Numba kernel (``thread_limits``); BLAS (the Gram products, and the small
products inside scikit-learn) is held at one thread with threadpoolctl unless
``--blas-threads-follow`` (on an oversubscribed machine two BLAS threads can be far slower than one).
The scikit-learn loops are single-threaded Python whatever the limit.

Run from the repository root::

    python -m bench.bench_ssr            # N in {500, 3478, 14360}
    python -m bench.bench_ssr --quick    # N = 500
"""
from __future__ import annotations

import argparse
import contextlib
import warnings

import numpy as np

from bench._common import median_times, print_table, thread_limits, write_json

P_I, P_J, TAU = 68, 74, 1.4


def make_data(n_faces: int, seed: int = 0):
    """Design X (2N, 68) and targets Y (2N, 74) in pixels, plus the true mix W (74, 68)."""
    from flmcore.data import load_sample

    rng = np.random.default_rng(seed)
    base = load_sample("helen68_shapes")["shapes"]
    idx = rng.integers(0, base.shape[0], n_faces)
    src = base[idx].copy()
    # augmentation: non-rigid jitter (2 % of face size), random similarity
    size = np.sqrt(((src - src.mean(axis=1, keepdims=True)) ** 2).sum(axis=2).mean(axis=1))
    src += 0.02 * size[:, None, None] * rng.normal(size=src.shape)
    th = rng.uniform(-0.4, 0.4, n_faces)
    s = rng.uniform(0.5, 2.0, n_faces)
    R = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], axis=1).reshape(-1, 2, 2)
    src = s[:, None, None] * np.einsum("nij,npj->npi", R, src) + rng.normal(size=(n_faces, 1, 2)) * 50
    # 74 targets: sparse affine mixes (weights sum to 1, so the map is translation-equivariant in raw
    # pixels as the paper's H is) of 1-4 nearby source points; about half have a negative weight, so
    # ||w||_1 ranges over [1, ~2.2]
    mean = base.mean(axis=0)
    W = np.zeros((P_J, P_I))
    for r in range(P_J):
        k = int(rng.integers(1, 5))
        centre = rng.integers(0, P_I)
        near = np.argsort(np.linalg.norm(mean - mean[centre], axis=1))[:6]
        pick = rng.choice(near, k, replace=False)
        w = rng.dirichlet(np.ones(k))
        if k > 1 and rng.random() < 0.5:
            neg = rng.uniform(0.1, 0.6)
            w[-1] = -neg
            w[:-1] *= (1 + neg) / w[:-1].sum()
        W[r, pick] = w
    dst = np.einsum("rk,nkd->nrd", W, src)
    dst += 0.005 * size[:, None, None] * s[:, None, None] * rng.normal(size=dst.shape)
    # eq. (14) as written: raw pixel coordinates (the design has full column rank, so the least-squares
    # end of a path is unique; centred designs have the null vector 1, see the guide)
    from flmcore.ssr import shapes_to_design

    src_n, dst_n = src, dst
    return shapes_to_design(src_n), shapes_to_design(dst_n), W


def sk_lars_path_loop(G, XtY, n_samples, tau):
    from sklearn.linear_model import lars_path_gram

    out = np.zeros((XtY.shape[1], G.shape[0]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(XtY.shape[1]):
            _, _, coefs = lars_path_gram(XtY[:, t], G, n_samples=n_samples, method="lasso")
            l1 = np.abs(coefs).sum(axis=0)
            i = int(np.searchsorted(l1, tau, side="left"))
            if i >= l1.size:
                out[t] = coefs[:, -1]
            elif i == 0:
                out[t] = coefs[:, 0]
            else:
                f = (tau - l1[i - 1]) / (l1[i] - l1[i - 1])
                out[t] = coefs[:, i - 1] + f * (coefs[:, i] - coefs[:, i - 1])
    return out


def sk_lassolars_loop(X, Y, G, alphas):
    from sklearn.linear_model import LassoLars

    out = np.zeros((Y.shape[1], X.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(Y.shape[1]):
            m = LassoLars(alpha=max(alphas[t], 0.0), fit_intercept=False, precompute=G, max_iter=500)
            out[t] = m.fit(X, Y[:, t]).coef_
    return out


def _blas_limits(n):
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=n, user_api="blas")
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn
        return contextlib.nullcontext()


def run_size(n_faces, threads, repeat, seed=0, args_blas1=True):
    from flmcore.ssr import lars_lasso, lars_lasso_gram, lars_lasso_path

    X, Y, W = make_data(n_faces, seed)
    n = X.shape[0]
    rows = []
    for nt in threads:
        with thread_limits(nt), _blas_limits(1 if args_blas1 else nt):
            G = X.T @ X
            XtY = np.ascontiguousarray(X.T @ Y)
            paths = lars_lasso_path(X, Y, TAU, num_threads=nt)
            # alpha at ||h||_1 = tau: the last knot of each path stopped on tau
            alphas = np.array([p.alphas[-1] for p in paths])
            H = lars_lasso_gram(G, XtY, TAU, num_threads=nt)
            H_sk = sk_lars_path_loop(G, XtY, n, TAU)
            H_ll = sk_lassolars_loop(X, Y, G, alphas)
            fns = {
                "gram": lambda: (X.T @ X, X.T @ Y),
                "flmcore": lambda: lars_lasso_gram(G, XtY, TAU, num_threads=nt),
                "flmcore+gram": lambda: lars_lasso(X, Y, TAU, num_threads=nt),
                "sk_lars_path": lambda: sk_lars_path_loop(G, XtY, n, TAU),
                "sk_LassoLars": lambda: sk_lassolars_loop(X, Y, G, alphas),
            }
            t = median_times(fns, repeat=repeat, warmup=1)
        scale = np.abs(H_sk).max()
        row = {"N": n_faces, "samples": n, "threads": nt, **{f"{k} [ms]": 1e3 * v for k, v in t.items()},
               "x vs sk_lars_path": t["sk_lars_path"] / t["flmcore"],
               "x (with gram)": (t["sk_lars_path"] + t["gram"]) / t["flmcore+gram"],
               "x vs sk_LassoLars": t["sk_LassoLars"] / t["flmcore"],
               "maxdiff sk_lars_path": float(np.abs(H - H_sk).max()),
               "maxdiff sk_LassoLars": float(np.abs(H - H_ll).max()),
               "coef scale": float(scale),
               "steps/target": float(np.mean([p.coefs.shape[0] - 1 for p in paths])),
               "tau binds": int(sum(p.status == "tau" for p in paths))}
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description="flmcore.ssr LARS vs scikit-learn")
    ap.add_argument("--quick", action="store_true", help="N = 500 only, 3 repeats")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--blas-threads-follow", action="store_true",
                    help="give BLAS the same thread count as the kernel (default: BLAS single-threaded)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    sizes = args.sizes or ([500] if args.quick else [500, 3478, 14360])
    repeat = args.repeat or (3 if args.quick else 5)
    rows = []
    for N in sizes:
        rows.extend(run_size(N, args.threads, repeat, args_blas1=not args.blas_threads_follow))
    cols = ["N", "threads", "gram [ms]", "flmcore [ms]", "flmcore+gram [ms]", "sk_lars_path [ms]",
            "sk_LassoLars [ms]", "x vs sk_lars_path", "x (with gram)", "x vs sk_LassoLars"]
    print(f"p_i={P_I}, p_j={P_J}, tau={TAU}: median times")
    print_table(rows, cols)
    print_table(rows, ["N", "threads", "maxdiff sk_lars_path", "maxdiff sk_LassoLars", "coef scale",
                       "steps/target", "tau binds"])
    out = {"rows": rows, "p_i": P_I, "p_j": P_J, "tau": TAU, "repeat": repeat,
           "blas_threads": "kernel" if args.blas_threads_follow else 1}
    path = write_json("bench_ssr", out, args.out)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()

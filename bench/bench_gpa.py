"""Benchmark: generalised Procrustes + PCA + 9 pose bins (flmcore.pose / flmcore.procrustes).

Data: the 21,080 real AFLW-21 shapes of 3DDFA's AFLW test protocol (NaN-masked
missing points) and 20,000 synthetic 68-point shapes (real HELEN shapes under
random similarities plus noise). Every method runs exactly 5 GPA iterations,
then the same PCA + 9 equal-width bins on the first component.

Anchors, run in the same process, alternating:
* ``loop``  — a per-shape NumPy SVD loop GPA (same normalisation convention,
  so the means must agree to rounding);
* ``menpo`` — ``menpo.transform.GeneralizedProcrustesAnalysis`` (complete
  shapes only; its mean is compared after normalisation and a rotation fit).

Run: ``python -m bench.bench_gpa [--quick]`` from the repository root.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# shared, oversubscribed CPUs: let idle OpenMP workers sleep instead of spinning (before libgomp loads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np

from bench._common import median_times, print_table, write_json

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
N_ITER = 5
N_BINS = 9


# ----------------------------------------------------------------------------- data
def load_aflw21(n=None):
    a = np.load(DATA / "aflw_3ddfa_multischeme" / "AFLW_GT_pts21.npy").astype(np.float64)
    a = np.ascontiguousarray(a.transpose(0, 2, 1))     # (N, 2, 21) -> (N, 21, 2)
    a[a < 0] = np.nan                                    # -1 marks a missing point
    return a if n is None else a[:n]


def synthetic68(n, rng):
    """Real HELEN 68-point shapes under random similarities, plus 1% noise."""
    try:
        from flmcore.data import load_sample
        base = np.asarray(load_sample("helen68_shapes")["shapes"], dtype=np.float64)
    except Exception:
        files = sorted((DATA / "300w_helen_trainset_68pt" / "pts").glob("*.pts"))
        base = np.array([np.loadtxt(f) for f in files]) - 1.0
    pick = base[rng.integers(0, len(base), n)]
    pick = pick - pick.mean(1, keepdims=True)
    th = rng.uniform(-0.5, 0.5, n)
    s = rng.uniform(0.3, 3.0, n)
    R = np.stack([np.cos(th), -np.sin(th), np.sin(th), np.cos(th)], -1).reshape(n, 2, 2)
    out = s[:, None, None] * np.einsum("bij,bpj->bpi", R, pick) + rng.uniform(0, 1000, (n, 1, 2))
    out += rng.normal(size=out.shape) * 0.01 * s[:, None, None] * pick.std()
    return np.ascontiguousarray(out)


# ----------------------------------------------------------------------------- anchors
def _svd_fit(x, y):
    mx, my = x.mean(0), y.mean(0)
    X, Y = x - mx, y - my
    U, S, Vt = np.linalg.svd(Y.T @ X)
    d = np.sign(np.linalg.det(U @ Vt))
    R = U @ np.diag([1.0, d]) @ Vt
    s = (S[0] + d * S[1]) / (X * X).sum()
    return s, R, my - s * R @ mx


def loop_gpa(shapes, n_iter=N_ITER):
    """Per-shape NumPy SVD loop with flmcore's normalisation convention."""
    B, P = shapes.shape[:2]
    mask = np.isfinite(shapes).all(-1)
    idx = [np.flatnonzero(m) for m in mask]
    normed = np.full_like(shapes, np.nan)
    for b in range(B):
        x = shapes[b, idx[b]]
        xc = x - x.mean(0)
        normed[b, idx[b]] = xc / np.sqrt((xc * xc).sum() / len(xc))
    ref = np.nanmean(normed, axis=0)
    ref -= ref.mean(0)
    ref /= np.linalg.norm(ref)

    def fit_all(mean):
        out = np.full_like(shapes, np.nan)
        for b in range(B):
            x = shapes[b, idx[b]]
            s, R, t = _svd_fit(x, mean[idx[b]])
            out[b, idx[b]] = s * x @ R.T + t
        return out

    mean = ref
    for _ in range(n_iter):
        new = np.nanmean(fit_all(mean), axis=0)
        new -= new.mean(0)
        new /= np.linalg.norm(new)
        _, R, _ = _svd_fit(new, ref)
        mean = new @ R.T
    return fit_all(mean), mean


def menpo_gpa(shapes, n_iter=N_ITER):
    from menpo.shape import PointCloud
    from menpo.transform import GeneralizedProcrustesAnalysis

    class _GPA(GeneralizedProcrustesAnalysis):
        def _recursive_procrustes(self):
            self.max_iterations = n_iter
            return super()._recursive_procrustes()

    # menpo stores (y, x) order internally by convention; the math is symmetric, keep (x, y)
    gpa = _GPA([PointCloud(s, copy=False) for s in shapes])
    aligned = np.array([t.aligned_source().points for t in gpa.transforms])
    return aligned, gpa.target.points, gpa.n_iterations


def pca_bins(aligned, mean, n_bins=N_BINS):
    """Shared PCA (scikit-learn) + equal-width bins for the anchors."""
    from sklearn.decomposition import PCA

    B = len(aligned)
    filled = np.where(np.isfinite(aligned), aligned, mean[None])
    proj = PCA(n_components=2, svd_solver="full").fit_transform(filled.reshape(B, -1))[:, 0]
    edges = np.linspace(proj.min(), proj.max(), n_bins + 1)
    return np.clip(np.searchsorted(edges[1:-1], proj, side="right"), 0, n_bins - 1)


def _normalise(m, ref):
    from flmcore.procrustes import align

    m = m - m.mean(0)
    m = m / np.linalg.norm(m)
    out, _ = align(m, ref, scale=False)
    return out


def _limited(n, fn):
    """Run ``fn`` with BLAS/OpenMP pools limited to ``n`` threads (PCA and the anchors' linear algebra)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return fn

    def run():
        with threadpool_limits(limits=n):
            return fn()
    return run


# ----------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_gpa", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 shapes per set, 1 repeat")
    ap.add_argument("--repeat", type=int, default=None, help="timed repeats (default 3, quick 1)")
    ap.add_argument("--no-menpo", action="store_true", help="skip the menpo anchor")
    ap.add_argument("--json", default=None, help="output JSON path (default bench/results/gpa.json)")
    args = ap.parse_args(argv)
    from flmcore import pose
    from flmcore.procrustes import _kernel

    rng = np.random.default_rng(0)
    n = 2000 if args.quick else None
    repeat = args.repeat or (1 if args.quick else 3)
    try:
        import menpo  # noqa: F401
        have_menpo = not args.no_menpo
        menpo_note = "" if have_menpo else "skipped (--no-menpo)"
    except ImportError:
        have_menpo, menpo_note = False, "skipped (menpo not installed)"
    sets = {"aflw21_real": load_aflw21(n), "synthetic68": synthetic68(n or 20000, rng)}
    print(f"compiled kernel: {'yes' if _kernel is not None else 'NO (NumPy fallback)'}; "
          f"{N_ITER} GPA iterations + PCA + {N_BINS} bins; BLAS limited to the method's thread count "
          "(1 for the anchors)")
    rows, payload = [], {"n_iter": N_ITER, "n_bins": N_BINS, "sets": {}}
    for name, X in sets.items():
        missing = float(np.isnan(X).any(-1).mean())
        fns = {
            "flmcore_1thr": _limited(1, lambda X=X: pose.pose_bins(X, N_BINS, max_iter=N_ITER, tol=0.0,
                                                                   num_threads=1)),
            "flmcore_2thr": _limited(2, lambda X=X: pose.pose_bins(X, N_BINS, max_iter=N_ITER, tol=0.0,
                                                                   num_threads=2)),
            "numpy_loop": _limited(1, lambda X=X: pca_bins(*loop_gpa(X))),
        }
        use_menpo = have_menpo and missing == 0.0
        if use_menpo:
            fns["menpo"] = _limited(1, lambda X=X: pca_bins(*menpo_gpa(X)[:2]))
        # results (also the warm-up round)
        res = pose.pose_bins(X, N_BINS, max_iter=N_ITER, tol=0.0, num_threads=1)
        res2 = pose.pose_bins(X, N_BINS, max_iter=N_ITER, tol=0.0, num_threads=2)
        al_loop, mean_loop = loop_gpa(X)
        lab_loop = pca_bins(al_loop, mean_loop)
        info = {"n_shapes": int(len(X)), "n_points": int(X.shape[1]), "missing_fraction": missing,
                "max_mean_diff_loop": float(np.abs(res.gpa.mean - mean_loop).max()),
                "max_mean_diff_threads": float(np.abs(res.gpa.mean - res2.gpa.mean).max()),
                "bin_label_agreement_loop": float(np.mean(res.labels == lab_loop)),
                "bin_counts": res.counts.tolist()}
        if use_menpo:
            _, mean_menpo, it_menpo = menpo_gpa(X)
            info["max_mean_diff_menpo"] = float(np.abs(_normalise(mean_menpo, res.gpa.mean) - res.gpa.mean).max())
            info["menpo_iterations"] = int(it_menpo)
        t0 = time.perf_counter()
        times = median_times(fns, repeat=repeat, warmup=0)
        info["bench_wall_s"] = time.perf_counter() - t0
        info["times_s"] = times
        payload["sets"][name] = info
        base = times["flmcore_1thr"]
        for k, v in times.items():
            rows.append({"set": name, "method": k, "median_s": v, "loop/this": times["numpy_loop"] / v,
                         "this/flmcore_1thr": v / base})
        if not use_menpo:
            rows.append({"set": name, "method": "menpo", "median_s": "skipped",
                         "loop/this": menpo_note or "skipped (NaN-masked points unsupported)",
                         "this/flmcore_1thr": ""})
        print(f"[{name}] {len(X)} x {X.shape[1]} points, missing {missing:.1%}: max |mean - loop mean| = "
              f"{info['max_mean_diff_loop']:.2e}, 1 vs 2 threads {info['max_mean_diff_threads']:.1e}, "
              f"bin labels equal to the loop's: {info['bin_label_agreement_loop']:.2%}"
              + (f", max |mean - menpo mean| (after normalising) = {info['max_mean_diff_menpo']:.2e}"
                 if use_menpo else ""))
    print_table(rows, ["set", "method", "median_s", "loop/this", "this/flmcore_1thr"])
    payload["rows"] = rows
    path = write_json("gpa", payload, args.json)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

"""Benchmark of LDDMM flows, shooting and curve losses: flmcore vs dense PyTorch (and KeOps).

Workloads (B faces, P points, T steps, forward and forward+backward):

* ``flow``     time-varying momenta ``(B, T, P, 2)``, T Euler steps, global Gaussian kernel;
* ``shoot``    Euler geodesic shooting from ``(x0, p0)``, T steps;
* ``currents`` currents loss between two open polylines of P points.

Anchors, run in the same process and alternating with flmcore:

* ``torch-gemm``: what a user would write, squared distances in GEMM form
  ``|x|^2 + |y|^2 - 2 x y^T``, ``exp``, ``bmm``, autograd (shooting: ``dp/dt`` from
  ``torch.autograd.grad(H, x, create_graph=True)``, so the backward is a double backward);
* ``torch-bcast``: the same with broadcast differences ``(x_i - x_j)``;
* ``keops``: ``pykeops.torch.LazyTensor`` reductions (skipped when pykeops is absent).

Peak memory (fwd+bwd, float32, 1 thread): peak of the torch CPU allocator during one call
(``torch.profiler`` memory events) plus the peak of NumPy buffers (``tracemalloc``); see
:func:`peak_memory_mb`.  KeOps' internal C++ buffers are not seen (its reductions need O(1)
extra memory besides their torch outputs).

Also runs the real-data experiments of ``docs/guide/lddmm.rst`` with ``--experiment``:
``sparse`` (sparse-to-dense on the 870 HELEN 68-point shapes) and ``train`` (a small
LDDMMFace trained on the bundled 128x128 crops, NME / NME_c, 68 -> 29 prediction).

Run ``python -m bench.bench_lddmm [--quick]`` from the repository root.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench._common import median_times, print_table, thread_limits, write_json

ROOT = Path(__file__).resolve().parents[1]


def _have_keops() -> bool:
    try:
        import pykeops  # noqa: F401
        from pykeops.torch import LazyTensor  # noqa: F401
        return True
    except Exception:
        return False


# ----------------------------------------------------------------------------- workloads
def make_impls(task: str, sigma: float, T: int, keops: bool):
    """Return {name: fn(x, a) -> scalar loss tensor} for one task."""
    import torch

    from flmcore.nn import functional as F

    s2 = sigma ** 2

    def gemm_K(x, y):
        sq = (x * x).sum(-1)[:, :, None] + (y * y).sum(-1)[:, None, :] - 2 * x @ y.transpose(1, 2)
        return torch.exp(-sq / s2)

    def bcast_K(x, y):
        return torch.exp(-((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1) / s2)

    def keops_K(x, y):
        from pykeops.torch import LazyTensor
        xi = LazyTensor(x[:, :, None, :])
        yj = LazyTensor(y[:, None, :, :])
        return (-((xi - yj) ** 2).sum(-1) / s2).exp()

    impls = {}
    if task == "flow":
        impls["flmcore"] = lambda x, a: F.lddmm_flow(x, a, sigma)

        def dense(K):
            def f(x, a):
                for t in range(T):
                    x = x + (K(x, x) @ a[:, t]) / T
                return x
            return f
        impls["torch-gemm"] = dense(gemm_K)
        impls["torch-bcast"] = dense(bcast_K)
        if keops:
            impls["keops"] = dense(keops_K)
    elif task == "shoot":
        impls["flmcore"] = lambda x, p: F.lddmm_shoot(x, p, sigma, T)[0]

        def dense(K):
            def f(x, p):
                for _ in range(T):
                    with torch.enable_grad():
                        xg = x if x.requires_grad else x.detach().requires_grad_(True)
                        Kp = K(xg, xg) @ p
                        H = 0.5 * (p * Kp).sum()
                        gx, = torch.autograd.grad(H, xg, create_graph=torch.is_grad_enabled() and p.requires_grad)
                    x, p = xg + Kp / T, p - gx / T
                return x
            return f
        impls["torch-gemm"] = dense(gemm_K)
        impls["torch-bcast"] = dense(bcast_K)
        if keops:
            impls["keops"] = dense(keops_K)
    elif task == "currents":
        impls["flmcore"] = lambda a, b: F.currents_loss(a, b, sigma, reduction="sum")

        def dense(K):
            def f(a, b):
                ca, ta = (a[:, 1:] + a[:, :-1]) / 2, a[:, 1:] - a[:, :-1]
                cb, tb = (b[:, 1:] + b[:, :-1]) / 2, b[:, 1:] - b[:, :-1]

                def e(c1, t1, c2, t2):
                    if K is keops_K:
                        from pykeops.torch import LazyTensor
                        w = (LazyTensor(t1[:, :, None, :]) * LazyTensor(t2[:, None, :, :])).sum(-1)
                        return (K(c1, c2) * w).sum(2).sum((1, 2))
                    return (K(c1, c2) * (t1 @ t2.transpose(1, 2))).sum((1, 2))
                return (e(ca, ta, ca, ta) + e(cb, tb, cb, tb) - 2 * e(ca, ta, cb, tb)).sum()
            return f
        impls["torch-gemm"] = dense(gemm_K)
        impls["torch-bcast"] = dense(bcast_K)
        if keops:
            impls["keops"] = dense(keops_K)
    return impls


def make_inputs(task, B, P, T, dtype, seed=0):
    import torch
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, P, 2, generator=g, dtype=torch.float64) * 100
    if task == "flow":
        a = torch.randn(B, T, P, 2, generator=g, dtype=torch.float64) * 5
    elif task == "shoot":
        a = torch.randn(B, P, 2, generator=g, dtype=torch.float64) * 5
    else:
        x = torch.cumsum(torch.rand(B, P, 2, generator=g, dtype=torch.float64) * 3, 1)
        a = x + torch.randn(B, P, 2, generator=g, dtype=torch.float64)
    return x.to(dtype), a.to(dtype)


def call(fn, x, a, backward):
    import torch
    if backward:
        xr = x.detach().requires_grad_(True)
        ar = a.detach().requires_grad_(True)
        out = fn(xr, ar)
        loss = out if out.dim() == 0 else out.square().sum()
        loss.backward()
        return loss
    with torch.no_grad():
        return fn(x, a)


# ----------------------------------------------------------------------------- memory
def peak_memory_mb(fn, x, a):
    """Peak extra memory (MB) of one forward+backward call: the peak of the torch CPU allocator
    (cumulated ``[memory]`` events of ``torch.profiler`` with ``profile_memory=True``) plus the peak
    of NumPy buffers (``tracemalloc``; the compiled-kernel path keeps its trajectory in NumPy
    arrays shared with torch), measured in two separate calls."""
    import tracemalloc

    from torch.profiler import ProfilerActivity, profile

    call(fn, x, a, True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call(fn, x, a, True)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    cur = peak_t = 0
    for _, nb in events:
        cur += nb
        peak_t = max(peak_t, cur)
    tracemalloc.start()
    call(fn, x, a, True)
    _, peak_np = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak_t + peak_np) / 2 ** 20


# ----------------------------------------------------------------------------- benchmark
def run_bench(args):
    import torch

    keops = _have_keops() and not args.no_keops
    Ps = args.P or ([98] if args.quick else [68, 98, 194])
    dtypes = [getattr(torch, d) for d in (args.dtypes or (["float32"] if args.quick else ["float32", "float64"]))]
    threads = args.threads or ([1] if args.quick else [1, 2])
    tasks = args.tasks or ["flow", "shoot", "currents"]
    B, T = args.batch, args.steps
    rows = []
    repeat = 3 if args.quick else 7
    for task in tasks:
        for P in Ps:
            sigma = 20.0 if task != "currents" else 10.0
            impls = make_impls(task, sigma, T, keops)
            for dt in dtypes:
                for nt in threads:
                    x, a = make_inputs(task, B, P, T, dt)
                    for backward in (False, True):
                        if keops and "keops" in impls:
                            t0 = time.perf_counter()
                            call(impls["keops"], x, a, backward)  # compilation (cached on disk afterwards)
                            kc = time.perf_counter() - t0
                        fns = {k: (lambda f=f: call(f, x, a, backward)) for k, f in impls.items()}
                        with thread_limits(nt):
                            times = median_times(fns, repeat=repeat, warmup=1)
                        row = {"task": task, "P": P, "dtype": str(dt).replace("torch.", ""), "threads": nt,
                               "pass": "fwd+bwd" if backward else "fwd"}
                        for k, v in times.items():
                            row[f"{k} ms"] = 1e3 * v
                        for k in times:
                            if k != "flmcore":
                                row[f"{k}/flmcore"] = times[k] / times["flmcore"]
                        if keops and "keops" in impls:
                            row["keops first call s"] = kc
                        rows.append(row)
                        print_table([row])
    mem_rows = []
    if not args.no_memory:
        for task in tasks:
            for P in ([98] if args.quick else Ps):
                sigma = 20.0 if task != "currents" else 10.0
                row = {"task": task, "P": P}
                impls = make_impls(task, sigma, T, keops)
                x, a = make_inputs(task, B, P, T, torch.float32)
                with thread_limits(1):
                    for k, f in impls.items():
                        row[f"{k} MB"] = peak_memory_mb(f, x, a)
                row["gemm/flmcore"] = row["torch-gemm MB"] / max(row["flmcore MB"], 1e-3)
                mem_rows.append(row)
        print("\npeak extra memory of one fwd+bwd call (float32, 1 thread, MB; torch allocator + NumPy):")
        print_table(mem_rows)
    print("\nsummary (ratio = anchor time / flmcore time; > 1 means flmcore is faster):")
    cols = ["task", "P", "dtype", "threads", "pass", "flmcore ms", "torch-gemm ms", "torch-gemm/flmcore",
            "torch-bcast/flmcore"] + (["keops/flmcore"] if keops else [])
    print_table(rows, cols)
    if not keops:
        print("keops: skipped (pykeops not installed)" if not _have_keops() else "keops: skipped (--no-keops)")
    return {"rows": rows, "memory": mem_rows, "B": B, "T": T, "keops": keops}


# ----------------------------------------------------------------------------- experiments
def experiment_sparse(args):
    from flmcore.train.demos import lddmm as demo

    shapes = demo.load_helen68()
    res = demo.sparse_to_dense(shapes, subset=args.subset, n_steps=10, mode="flow", max_iter=100, gamma=1e-3,
                               with_ssr=True, with_all_points=args.all_points)
    table = demo.sparse_table(res)
    print(f"sparse-to-dense on {res['n_faces']} HELEN faces, {len(res['kept'])} kept / {len(res['hidden'])} hidden")
    print(table)
    print(f"DetJ at the 68 mean-face points: min {res['detj_min']:.4f} mean {res['detj_mean']:.4f} "
          f"non-positive {res['detj_nonpos']} / {res['detj_count']}")
    if args.figures:
        out = ROOT / "docs" / "_static"
        out.mkdir(parents=True, exist_ok=True)
        demo.plot_sparse_example(res, out / "lddmm_sparse_to_dense.png")
    return {"table": table, "n_faces": res["n_faces"],
            "nme_hidden": {k: float(np.mean(v)) for k, v in res["nme_hidden"].items()},
            "nme_c": {k: float(np.mean(v)) for k, v in res["nme_c"].items()},
            "detj_min": float(res["detj_min"]), "detj_mean": float(res["detj_mean"]),
            "detj_nonpos": res["detj_nonpos"], "detj_count": res["detj_count"]}


def experiment_train(args):
    import torch

    from flmcore.data import load_sample
    from flmcore.train.demos import lddmm as demo
    from flmcore.metrics import nme, nme_curve

    torch.set_num_threads(2)
    d = load_sample("helen_pairs")
    imgs, y68, y29 = d["images"], d["shapes68"], d["shapes29"]
    n = len(imgs)
    perm = np.random.default_rng(0).permutation(n)
    test, train = perm[:54], perm[54:]
    t0 = time.perf_counter()
    model, mean, hist = demo.train_lddmm_face(imgs, y68, epochs=args.epochs, train_idx=train, log=print)
    train_s = time.perf_counter() - t0
    x = torch.as_tensor(imgs[test])
    pred68 = model.predict(x).numpy().astype(np.float64)
    # cross-scheme: the 29-point mean face of the training crops, mapped by the affine fitted between
    # the two mean faces on their corresponding points, flowed through the predicted diffeomorphisms
    mean29 = y29[train].mean(0)
    pred29 = model.predict(x, scheme="helen_zhou29", mean_shape=mean29).numpy().astype(np.float64)
    meanface = np.broadcast_to(mean, pred68.shape)
    res = {
        "train_seconds": train_s, "epochs": args.epochs, "n_train": len(train), "n_test": len(test),
        "nme68": float(np.mean(nme(pred68, y68[test], scheme="ibug68"))),
        "nme68_meanface": float(np.mean(nme(meanface, y68[test], scheme="ibug68"))),
        "nme_c68": float(np.mean(nme_curve(pred68, y68[test], "ibug68"))),
        "nme29_cross": float(np.mean(nme(pred29, y29[test], scheme="helen_zhou29"))),
        "nme29_meanface": float(np.mean(nme(np.broadcast_to(mean29, pred29.shape), y29[test],
                                            scheme="helen_zhou29"))),
        "nme_c29_cross": float(np.mean(nme_curve(pred29, y29[test], "helen_zhou29"))),
        "loss_first_last": [hist[0], hist[-1]],
    }
    print(json.dumps(res, indent=1))
    if args.figures:
        _plot_cross(imgs[test[:3]], pred68[:3], pred29[:3], y29[test[:3]],
                    ROOT / "docs" / "_static" / "lddmm_cross_scheme.png")
    return res


def _plot_cross(imgs, p68, p29, t29, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore._plotting import legend_outside, save_figure
    fig, axes = plt.subplots(1, len(imgs), figsize=(3 * len(imgs), 3.4))
    for ax, im, a, b, c in zip(np.atleast_1d(axes), imgs, p68, p29, t29):
        ax.imshow(im, cmap="gray")
        ax.scatter(a[:, 0], a[:, 1], s=6, c="lime", label="68 predicted (training scheme)")
        ax.scatter(c[:, 0], c[:, 1], s=18, facecolors="none", edgecolors="r", label="29 ground truth")
        ax.scatter(b[:, 0], b[:, 1], s=14, c="m", marker="*", label="29 flowed (cross-scheme)")
        ax.set_axis_off()
    fig.tight_layout()
    legend_outside(fig, "below")
    save_figure(fig, path, note="python -m bench.bench_lddmm --figures (held-out HELEN crops)")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_lddmm", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="P = 98, float32, 1 thread, fewer repeats")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-keops", action="store_true")
    ap.add_argument("--P", type=int, nargs="+", help="point counts (default 68 98 194; quick: 98)")
    ap.add_argument("--dtypes", nargs="+", choices=["float32", "float64"])
    ap.add_argument("--threads", type=int, nargs="+", help="thread counts (default 1 2; quick: 1)")
    ap.add_argument("--tasks", nargs="+", choices=["flow", "shoot", "currents"])
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--experiment", choices=["sparse", "train"], help="run a real-data experiment instead")
    ap.add_argument("--subset", type=int, default=None, help="sparse: number of faces (default all 870)")
    ap.add_argument("--all-points", action="store_true",
                    help="sparse: also the variant with momenta on all mean-face points (slower)")
    ap.add_argument("--epochs", type=int, default=40, help="train: epochs")
    ap.add_argument("--figures", action="store_true", help="write docs/_static/lddmm_*.png")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)
    if args.experiment == "sparse":
        res = experiment_sparse(args)
        write_json("lddmm_sparse", res, args.out)
        return res
    if args.experiment == "train":
        res = experiment_train(args)
        write_json("lddmm_train", res, args.out)
        return res
    res = run_bench(args)
    write_json("lddmm", res, args.out)
    return res


if __name__ == "__main__":
    main()

"""Demo: SDM, 'Deep', 'Deep+Sparse' and DRN-SSR on HELEN faces labelled in two schemes (§4.2.1).

Public calls only: :class:`flmcore.cascade.SDM`, :class:`flmcore.nn.models.DRNCascade`,
:func:`flmcore.train.drn_ssr_init` + :func:`flmcore.train.fit_drn_ssr` (two-step
'Deep+Sparse') and :func:`flmcore.train.fit_drn_ssr` (coupled DRN-SSR); :func:`experiment`
is the protocol, callable on any ``helen_pairs``-like data (images + both label sets).

The 234 bundled HELEN crops carry both iBUG-68 and Zhou's 29-point labels.  They are split
into a part that keeps only its 68-point labels, a part that keeps only its 29-point
labels and a test part with both; every method is scored on the union of the two schemes
(68 + 29 - 21 common = 76 points), NME normalised by the outer-eye-corner distance.
"""
from __future__ import annotations

import time
from typing import Dict, Optional

import numpy as np

__all__ = ["run", "experiment"]


def _union_truth(union, s68, s29):
    out = np.full((s68.shape[0], union.n_union_, 2), np.nan)
    out[:, union.index_[1]] = s29
    out[:, union.index_[0]] = s68
    return out


def experiment(data: Optional[Dict] = None, *, size: str = "full", seed: int = 0, progress=None,
               num_threads=None) -> Dict:
    """Run the §4.2.1 protocol on ``helen_pairs``-like data; returns errors and predictions.

    Parameters
    ----------
    data : dict, optional
        ``images`` (N, H, W) uint8 face crops, ``shapes68`` (N, 68, 2), ``shapes29``
        (N, 29, 2); default :func:`flmcore.data.load_sample` ``("helen_pairs")``.
        N must exceed the split sizes below.
    size : {"quick", "demo", "full"}
        ``"full"``: 90 / 90 / 54 faces, 4 stages (80, 80, 140, 140 px), hidden (128, 64),
        3 perturbations, 40 L-BFGS iterations (a few minutes on 2 cores; the docs table);
        ``"demo"``: 60 / 60 / 40 faces, hidden (64,), 2 perturbations, 25 iterations;
        ``"quick"``: 40 / 40 / 24 faces, 2 stages, hidden (32,) (the tests).
    seed : int
        Split and training seed.
    progress : callable, optional
        ``progress(iterable, desc=...)``.
    num_threads : int, optional
        Threads of the SIFT kernel.

    Returns
    -------
    dict
        ``errors`` {method: (n_test,) NME}, ``pred`` {method: (n_test, 76, 2)}, ``truth``,
        ``images`` (test faces), ``union``, ``history`` (DRN-SSR objectives), ``config``,
        ``seconds`` {method: training time}.
    """
    import torch

    torch.manual_seed(seed)
    saved_threads = torch.get_num_threads()
    # the networks here are small: one intra-op thread avoids wake-up latency on busy machines
    torch.set_num_threads(1)
    try:
        return _experiment(data, size, seed, progress, num_threads)
    finally:
        torch.set_num_threads(saved_threads)


def _experiment(d, size, seed, progress, num_threads):
    from flmcore.cascade import SDM
    from flmcore.data import load_sample
    from flmcore.metrics import nme
    from flmcore.nn.models import DRNCascade
    from flmcore.ssr import SchemeUnion
    from flmcore.train import drn_ssr_init, fit_drn_ssr

    if d is None:
        d = load_sample("helen_pairs")
    images, s68, s29 = d["images"], d["shapes68"], d["shapes29"]
    n = images.shape[0]
    perm = np.random.default_rng(seed).permutation(n)
    if size not in ("quick", "demo", "full"):
        raise ValueError(f"size must be 'quick', 'demo' or 'full', got {size!r}")
    if size == "demo":
        n_a, n_b, n_t = 60, 60, 40
        cfg = dict(n_stages=4, face_sizes=(80, 80, 140, 140), hidden=(64,), n_perturbations=2, max_iter=25,
                   sdm_stages=4)
    elif size == "quick":
        n_a, n_b, n_t = 40, 40, 24
        cfg = dict(n_stages=2, face_sizes=(64, 96), hidden=(32,), n_perturbations=2, max_iter=20, sdm_stages=2)
    else:
        n_a, n_b, n_t = 90, 90, 54
        cfg = dict(n_stages=4, face_sizes=(80, 80, 140, 140), hidden=(128, 64), n_perturbations=3, max_iter=40,
                   sdm_stages=4)
    if n < n_a + n_b + n_t:
        raise ValueError(f"size={size!r} needs {n_a + n_b + n_t} faces, the data has {n}")
    ia, ib, it = perm[:n_a], perm[n_a:n_a + n_b], perm[n - n_t:]
    box = np.tile([0.0, 0.0, float(images.shape[2]), float(images.shape[1])], (n, 1))
    union = SchemeUnion.from_schemes(["ibug68", "helen_zhou29"])
    truth = _union_truth(union, s68[it], s29[it])
    iod = np.linalg.norm(s68[it, 36] - s68[it, 45], axis=-1)
    common = dict(n_stages=cfg["n_stages"], face_sizes=cfg["face_sizes"], hidden=cfg["hidden"],
                  num_threads=num_threads)
    fit_kw = dict(n_perturbations=cfg["n_perturbations"], max_iter=cfg["max_iter"], rng=seed)
    pred, secs = {}, {}
    steps = ["SDM", "Deep", "Deep+Sparse", "DRN-SSR"]
    it_steps = steps if progress is None else progress(steps, desc="cascade methods")
    deep = {}
    for name in it_steps:
        t0 = time.perf_counter()
        if name == "SDM":
            a = SDM(n_stages=cfg["sdm_stages"], alpha=5.0, window=0.3, n_perturbations=cfg["n_perturbations"],
                    rng=seed, num_threads=num_threads).fit(images[ia], s68[ia], box[ia])
            b = SDM(n_stages=cfg["sdm_stages"], alpha=5.0, window=0.3, n_perturbations=cfg["n_perturbations"],
                    rng=seed, num_threads=num_threads).fit(images[ib], s29[ib], box[ib])
            pred[name] = _union_truth(union, a.predict(images[it], box[it]), b.predict(images[it], box[it]))
        elif name == "Deep":
            deep[0] = DRNCascade(68, **common).fit(images[ia], s68[ia], box[ia], **fit_kw)
            deep[1] = DRNCascade(29, **common).fit(images[ib], s29[ib], box[ib], **fit_kw)
            pred[name] = _union_truth(union, deep[0].predict(images[it], box[it]),
                                      deep[1].predict(images[it], box[it]))
        elif name == "Deep+Sparse":
            # undefined landmarks of each training part predicted by the other part's Deep model,
            # refined once by sparse shape regression, then one union model on these targets
            H0 = []
            for i, (idx, S, other) in enumerate([(ia, s68, 1), (ib, s29, 0)]):
                guess = np.full((len(idx), union.n_union_, 2), np.nan)
                guess[:, union.index_[other]] = deep[other].predict(images[idx], box[idx])
                H0.append(drn_ssr_init(S[idx], box[idx], guess, ["ibug68", "helen_zhou29"], i, tau=1.4,
                                       num_threads=num_threads))
            res = fit_drn_ssr([(images[ia], s68[ia], box[ia]), (images[ib], s29[ib], box[ib])],
                              ["ibug68", "helen_zhou29"], H_init=H0, alternate=False, progress=False,
                              **common, **fit_kw)
            pred[name] = res.predict(images[it], box[it])
        else:
            res = fit_drn_ssr([(images[ia], s68[ia], box[ia]), (images[ib], s29[ib], box[ib])],
                              ["ibug68", "helen_zhou29"], n_alternations=2, progress=False, **common, **fit_kw)
            pred[name] = res.predict(images[it], box[it])
            history = res.history
        secs[name] = time.perf_counter() - t0
    errors = {k: nme(v, truth, norm=iod) for k, v in pred.items()}
    return dict(errors=errors, pred=pred, truth=truth, images=images[it], union=union, history=history,
                config=dict(cfg, n_68_only=n_a, n_29_only=n_b, n_test=n_t), seconds=secs)


def _figure(res, path_ced, path_pred):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore._plotting import legend_outside, save_figure
    from flmcore.metrics import ced

    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    for k, e in res["errors"].items():
        t, f = ced(e, 0.15)
        ax.plot(t, f, label=k)
    ax.set_xlabel("NME (fraction of the inter-ocular distance)")
    ax.set_ylabel("fraction of test faces")
    ax.set_title("CED, 76-point union, HELEN test faces")
    legend_outside(ax, "right")
    ax.grid(alpha=0.3)
    save_figure(fig, path_ced, note=f"{len(next(iter(res['errors'].values())))} test faces")

    u = res["union"]
    only29 = np.setdiff1d(np.arange(u.n_union_), u.index_[0])
    fig, axes = plt.subplots(2, 3, figsize=(6.6, 4.6))
    for j, ax in enumerate(axes.ravel()):
        b, meth = j % 3, ("Deep", "DRN-SSR")[j // 3]
        p = res["pred"][meth][b]
        ax.imshow(res["images"][b], cmap="gray")
        ax.scatter(*res["truth"][b].T, s=5, c="lime", label="truth")
        ax.scatter(*p[u.index_[0]].T, s=5, c="red", label="68-scheme points")
        ax.scatter(*p[only29].T, s=9, c="cyan", marker="x", label="29-only points")
        ax.set_title(meth)
        ax.axis("off")
    fig.tight_layout()
    legend_outside(fig, "below")
    save_figure(fig, path_pred)


def run(ctx) -> str:
    """``flmcore demo`` part: the §4.2.1 comparison on the bundled HELEN pairs."""
    from flmcore.metrics import auc

    res = experiment(ctx.load("helen_pairs"), size="quick" if ctx.quick else "demo", seed=ctx.seed,
                     progress=ctx.progress)
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    _figure(res, ctx.out_dir / "cascade_ced.png", ctx.out_dir / "cascade_pred.png")
    c = res["config"]
    lines = ["## Cascaded regression on shape-indexed SIFT: SDM, Deep, Deep+Sparse, DRN-SSR", "",
             f"Data: {ctx.source('helen_pairs')}. `flmcore.train.demos.cascade.experiment` "
             f"(SDM, DRNCascade, drn_ssr_init, fit_drn_ssr). "
             f"HELEN crops: {c['n_68_only']} faces keep only 68-point labels, {c['n_29_only']} only 29-point "
             f"labels, {c['n_test']} test faces have both; scored on the 76-point union "
             f"({c['n_stages']} stages, hidden {c['hidden']}, faces {c['face_sizes']} px).", "",
             "| method | NME (%) | AUC@0.10 | train (s) |", "|---|---|---|---|"]
    for k, e in res["errors"].items():
        lines.append(f"| {k} | {100 * e.mean():.2f} | {auc(e, 0.1):.3f} | {res['seconds'][k]:.1f} |")
    h = res["history"]
    lines += ["", f"DRN-SSR objectives (stage 1): F {h[0]['objective_F']:.4g} -> "
                  f"{[r for r in h if r['stage'] == 0][-1]['objective_F']:.4g}", "",
              "![](cascade_ced.png)", "", "![](cascade_pred.png)", ""]
    return "\n".join(lines)

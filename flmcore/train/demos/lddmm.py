"""Demo part ``lddmm``: sparse-to-dense landmark prediction with LDDMM flows (LDDMM-Face 3.3, 4.2).

Half of the points of every facial curve are kept (eyes whole, as in the paper's
sparse setting); the Procrustes mean face, placed on the kept points by a
similarity, is registered onto them with per-curve LDDMM flows
(:func:`flmcore.lddmm.register`, currents + landmark matching) and the hidden
points of the mean face are carried by the same diffeomorphisms
(:func:`flmcore.lddmm.flow_points`).  Baselines: piecewise-linear interpolation
along each curve, a thin-plate spline from the placed mean face to the kept
points, and :class:`flmcore.ssr.SparseShapeRegression` when available.

The functions here are also used by ``bench/bench_lddmm.py --experiment`` for the
full real-data tables of ``docs/guide/lddmm.rst``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from flmcore import lddmm
from flmcore.schemes import get_scheme

__all__ = ["run", "sparse_indices", "load_helen68", "sparse_to_dense", "train_lddmm_face", "preset_comparison",
           "preset_table"]


def sparse_indices(scheme="ibug68", keep_whole: Sequence[str] = ("eye_left", "eye_right")) -> np.ndarray:
    """Kept points of the 50 % sparse setting: every other point of each curve
    (open curves keep both ends), curves in ``keep_whole`` entirely, isolated points kept.

    Examples
    --------
    >>> k = sparse_indices("ibug68")
    >>> len(k), k[:9].tolist()
    (43, [0, 2, 4, 6, 8, 10, 12, 14, 16])
    """
    s = get_scheme(scheme)
    keep = set(s.isolated)
    for c in s.curves:
        idx = list(c.indices)
        if c.name in keep_whole:
            keep.update(idx)
            continue
        sel = idx[::2]
        if not c.closed and idx[-1] not in sel:
            sel.append(idx[-1])
        keep.update(sel)
    return np.array(sorted(keep))


def load_helen68(data_dir: Optional[Path] = None) -> np.ndarray:
    """iBUG-68 shapes (0-based pixels): the bundled sample's 870 HELEN training shapes, else
    ``data_dir``'s ``helen68_shapes.npz``, else every ``.pts`` file below ``data_dir`` (a
    ``300w_helen_trainset_68pt`` folder or its parent, any iBUG folder; 1-based files)."""
    if data_dir is None:  # the bundled sample (or FLMCORE_DATA); a wheel install says how to get it
        from flmcore.data import load_sample
        return load_sample("helen68_shapes")["shapes"]
    d = Path(data_dir)
    if (d / "helen68_shapes.npz").is_file():
        from flmcore.train.demos import load_part

        return np.asarray(load_part("helen68_shapes", d)["shapes"], dtype=np.float64)
    if (d / "300w_helen_trainset_68pt").is_dir():
        d = d / "300w_helen_trainset_68pt"
    files = sorted(d.rglob("*.pts"))
    if not files:
        raise FileNotFoundError(f"no helen68_shapes.npz and no .pts files under {d}")
    from flmcore.io import read_pts

    return np.stack([read_pts(f, n_points=68) for f in files])


def _interp_along_curves(placed, target_kept, kept, scheme):
    """Piecewise-linear interpolation of hidden points between their kept neighbours, at the
    arc-length fraction they have on the placed mean face."""
    s = get_scheme(scheme)
    pos = {int(i): k for k, i in enumerate(kept)}
    out = placed.copy()
    out[kept] = target_kept
    for c in s.curves:
        idx = list(c.indices)
        n = len(idx)
        kpos = [j for j, i in enumerate(idx) if i in pos]
        if len(kpos) == n:
            continue
        for j, i in enumerate(idx):
            if i in pos:
                continue
            prev = [k for k in kpos if k < j]
            nxt = [k for k in kpos if k > j]
            if c.closed:
                a = prev[-1] if prev else kpos[-1]
                b = nxt[0] if nxt else kpos[0]
            else:
                a = prev[-1] if prev else None
                b = nxt[0] if nxt else None
                if a is None or b is None:  # beyond the last kept point: extrapolate the placed offset
                    k = b if a is None else a
                    out[i] = placed[i] + (target_kept[pos[idx[k]]] - placed[idx[k]])
                    continue
            path = [a]
            while path[-1] != b:
                path.append((path[-1] + 1) % n)
            seg = np.linalg.norm(np.diff(placed[[idx[p] for p in path]], axis=0), axis=1)
            cum = np.r_[0, np.cumsum(seg)]
            t = cum[path.index(j)] / max(cum[-1], 1e-12)
            out[i] = (1 - t) * target_kept[pos[idx[a]]] + t * target_kept[pos[idx[b]]]
    return out


def _tps(placed, target_kept, kept):
    from scipy.interpolate import RBFInterpolator

    f = RBFInterpolator(placed[kept], target_kept, kernel="thin_plate_spline", smoothing=0.0)
    out = f(placed)
    out[kept] = target_kept
    return out


def sparse_to_dense(shapes: np.ndarray, *, scheme="ibug68", n_folds: int = 2, subset: Optional[int] = None,
                    rng=0, n_steps: int = 10, mode: str = "flow", beta: float = 0.1, gamma: float = 0.0,
                    max_iter: int = 100, sigma_factor: float = 1.0,
                    with_ssr: bool = True, with_all_points: bool = True, progress=None) -> Dict[str, object]:
    """Sparse-to-dense evaluation on real shapes (the tables of docs/guide/lddmm.rst).

    Faces are split in ``n_folds`` folds; the GPA mean (and the SSR baseline) are fitted on
    the other folds.  For each test face the mean face is placed on the kept points by the
    least-squares similarity, then each method predicts the hidden points.

    Parameters
    ----------
    shapes : ndarray, shape (N, P, 2)
        Real shapes of ``scheme``.
    subset : int, optional
        Use only this many faces (random, seeded by ``rng``).
    n_steps, mode, beta, gamma, max_iter
        Passed to :func:`flmcore.lddmm.register` (docs: 10, ``"flow"``, 0.1, 1e-3, 100).
    sigma_factor : float
        sigma_V = ``sigma_factor`` x curve scale (paper: 1).
    with_ssr : bool
        Include the :class:`flmcore.ssr.SparseShapeRegression` baseline when importable.
    with_all_points : bool
        Also the variant with momenta on all mean-face points and a sparse target.
    progress : callable, optional
        ``progress(iterable, desc=...)`` wrapper.

    Returns
    -------
    dict
        ``nme_hidden`` / ``nme_c``: method -> per-face arrays (inter-ocular normalised);
        ``detj_min``, ``detj_mean``, ``detj_nonpos``: Jacobian determinants of the LDDMM
        flows at all 68 mean-face points; ``kept``, ``hidden``, ``test``; ``example``:
        data of the first face for figures; ``seconds`` per method.
    """
    from flmcore.metrics import nme, nme_curve
    from flmcore.procrustes import align, generalized_procrustes

    s = get_scheme(scheme)
    shapes = np.asarray(shapes, dtype=np.float64)
    gen = np.random.default_rng(rng)
    order = gen.permutation(len(shapes))
    if subset is not None:
        order = order[:subset]
    folds = np.array_split(order, n_folds)
    kept = sparse_indices(s)
    hidden = np.setdiff1d(np.arange(s.n_points), kept)
    labels = s.curve_labels()
    curves = s.curves
    kept_pos = {int(i): k for k, i in enumerate(kept)}
    sub_curves = [([kept_pos[i] for i in c.indices if i in kept_pos], c.closed) for c in curves]
    sub_curves = [(c, closed) for c, closed in sub_curves if len(c) > 0]
    curve_of_sub = [k for k, c in enumerate(curves) if any(i in kept_pos for i in c.indices)]
    methods = ["mean face (similarity)", "linear along curves", "thin-plate spline", "LDDMM (kept control points)",
               "LDDMM (all points, sparse target)"]
    ssr_cls = None
    if with_ssr:
        try:
            from flmcore.ssr import SparseShapeRegression as ssr_cls
        except Exception:
            ssr_cls = None
    if not with_all_points:
        methods.remove("LDDMM (all points, sparse target)")
    if ssr_cls is not None:
        methods.insert(3, "SSR (lasso, tau=1.4)")
    preds = {m: np.zeros((len(order), s.n_points, 2)) for m in methods}
    seconds = {m: 0.0 for m in methods}
    detj = []
    example = None
    truth = shapes[order]
    row = 0
    for f, test in enumerate(folds):
        train = np.concatenate([folds[g] for g in range(n_folds) if g != f]) if n_folds > 1 else test
        mean = generalized_procrustes(shapes[train]).mean
        ssr = None
        if ssr_cls is not None:
            t0 = time.perf_counter()
            ssr = ssr_cls(tau=1.4).fit(shapes[train][:, kept], shapes[train][:, hidden])
            seconds["SSR (lasso, tau=1.4)"] += time.perf_counter() - t0
        it = test if progress is None else progress(test, desc=f"LDDMM sparse-to-dense fold {f + 1}/{n_folds}")
        for b in it:
            tgt = shapes[b][kept]
            _, T = align(mean[kept], tgt)
            placed = T.apply(mean)
            t0 = time.perf_counter()
            preds[methods[0]][row] = placed
            preds[methods[0]][row, kept] = tgt
            seconds[methods[0]] += time.perf_counter() - t0
            t0 = time.perf_counter()
            preds["linear along curves"][row] = _interp_along_curves(placed, tgt, kept, s)
            seconds["linear along curves"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            preds["thin-plate spline"][row] = _tps(placed, tgt, kept)
            seconds["thin-plate spline"] += time.perf_counter() - t0
            if ssr is not None:
                t0 = time.perf_counter()
                p = placed.copy()
                p[kept] = tgt
                p[hidden] = ssr.predict(tgt[None])[0]
                preds["SSR (lasso, tau=1.4)"][row] = p
                seconds["SSR (lasso, tau=1.4)"] += time.perf_counter() - t0
            # LDDMM (a): momenta on the kept points, hidden points flowed (paper's sparse setting)
            t0 = time.perf_counter()
            sig = sigma_factor * lddmm.curve_sigmas(placed, curves)[curve_of_sub]
            res = lddmm.register(placed[kept], tgt, curves=sub_curves, sigma_v=sig, beta=beta, gamma=gamma,
                                 n_steps=n_steps, mode=mode, max_iter=max_iter, num_threads=1)
            sub_label = np.array([curve_of_sub.index(labels[i]) if labels[i] in curve_of_sub else -1
                                  for i in range(s.n_points)])
            moved, J = res.flow_points(placed, point_curves=sub_label, return_jacobian=True)
            p = moved.copy()
            p[kept] = tgt
            preds["LDDMM (kept control points)"][row] = p
            seconds["LDDMM (kept control points)"] += time.perf_counter() - t0
            det = J[:, 0, 0] * J[:, 1, 1] - J[:, 0, 1] * J[:, 1, 0]
            detj.append(det)
            if example is None:
                example = dict(truth=shapes[b], placed=placed, pred=p.copy(), result=res, sub_curves=sub_curves,
                               sub_label=sub_label)
            # LDDMM (b): momenta on all mean-face points, target defined on the kept ones
            if not with_all_points:
                row += 1
                continue
            t0 = time.perf_counter()
            res_b = lddmm.register(placed, tgt, curves=curves, target_indices=kept, beta=beta,
                                   sigma_v=sigma_factor * lddmm.curve_sigmas(placed, curves), gamma=gamma,
                                   n_steps=n_steps,
                                   mode=mode, max_iter=max_iter, num_threads=1)
            p = res_b.deformed.copy()
            p[kept] = tgt
            preds["LDDMM (all points, sparse target)"][row] = p
            seconds["LDDMM (all points, sparse target)"] += time.perf_counter() - t0
            row += 1
    detj = np.array(detj)
    nme_h = {m: nme(preds[m][:, hidden], truth[:, hidden], norm=_iod(truth, s)) for m in methods}
    nme_c = {m: nme_curve(preds[m], truth, s) for m in methods}
    nme_c_official = ({m: nme_curve(preds[m], truth, s, mode="lddmm_face") for m in methods}
                      if s.name == "ibug68" else None)
    return dict(methods=methods, nme_hidden=nme_h, nme_c=nme_c, nme_c_official=nme_c_official, detj_min=detj.min(), detj_mean=detj.mean(),
                detj_nonpos=int((detj <= 0).sum()), detj_count=int(detj.size), kept=kept, hidden=hidden,
                n_faces=len(order), seconds=seconds, example=example)


def _iod(truth, s):
    a, b = s.interocular
    return np.linalg.norm(truth[:, a] - truth[:, b], axis=-1)


def sparse_table(result: Dict[str, object]) -> str:
    """Markdown table of :func:`sparse_to_dense`'s result (NME_c: flmcore's polyline variant and, for
    iBUG-68, the official LDDMM-Face one)."""
    off = result.get("nme_c_official")
    lines = ["| method | NME hidden points (%) | NME_c polyline (%) |"
             + (" NME_c official (%) |" if off else "") + " s / face |",
             "|---|---|---|" + ("---|" if off else "") + "---|"]
    n = result["n_faces"]
    for m in result["methods"]:
        lines.append(f"| {m} | {100 * np.mean(result['nme_hidden'][m]):.2f} | "
                     f"{100 * np.mean(result['nme_c'][m]):.2f} | "
                     + (f"{100 * np.mean(off[m]):.2f} | " if off else "") + f"{result['seconds'][m] / n:.4f} |")
    return "\n".join(lines)


def preset_comparison(shapes: np.ndarray, *, noise_px: float = 3.0, beta: float = 0.1, rng=0) -> Dict[str, dict]:
    """What the two LDDMM-Face presets mean on real faces (requires torch).

    For ``preset="flmcore"`` and ``"paper"``: the number of curves, the jaw's
    sigma_V in inter-ocular distances (flmcore: RMS radius of the mean-face curve;
    paper: the official table), and the ratio of the weighted curve term
    ``beta * D_c`` to the landmark term ``D_l`` of :class:`flmcore.nn.CurveLandmarkLoss`
    when every point of every face is displaced by Gaussian noise of ``noise_px``
    pixels (so the same ``beta`` weighs the curve term differently per preset).

    Parameters
    ----------
    shapes : ndarray, shape (N, 68, 2)
        Real iBUG-68 shapes (pixels).
    noise_px, beta : float
    rng : int

    Returns
    -------
    dict
        preset -> ``{"n_curves", "jaw_sigma_v_iod", "curve_to_landmark"}``.
    """
    import torch

    from flmcore.nn import CurveLandmarkLoss
    from flmcore.nn._lddmm import LDDMMDeformation

    y = torch.as_tensor(np.asarray(shapes, np.float64))
    gen = torch.Generator().manual_seed(int(rng))
    pred = y + noise_px * torch.randn(y.shape, generator=gen, dtype=y.dtype)
    mean = y.mean(0).numpy()
    iod = float(np.linalg.norm(mean[36] - mean[45]))
    out = {}
    for preset in ("flmcore", "paper"):
        with_curves = CurveLandmarkLoss("ibug68", mean, beta=beta, preset=preset)
        landmarks_only = CurveLandmarkLoss("ibug68", mean, beta=0.0, preset=preset)
        with torch.no_grad():
            total, lm = float(with_curves(pred, y)), float(landmarks_only(pred, y))
        layer = LDDMMDeformation(mean, "ibug68", preset=preset)
        out[preset] = {"n_curves": len(layer.curves), "jaw_sigma_v_iod": layer.sigma[0] / iod,
                       "curve_to_landmark": (total - lm) / lm}
    return out


def preset_table(cmp: Dict[str, dict], noise_px: float = 3.0, beta: float = 0.1) -> str:
    """Markdown table of :func:`preset_comparison`."""
    lines = [f"| preset | curves | jaw sigma_V (inter-ocular) | beta D_c / D_l (beta = {beta}, {noise_px:g} px noise) |",
             "|---|---|---|---|"]
    for k, v in cmp.items():
        lines.append(f"| `{k}` | {v['n_curves']} | {v['jaw_sigma_v_iod']:.2f} | {v['curve_to_landmark']:.2f} |")
    return "\n".join(lines)


def plot_sparse_example(result: Dict[str, object], path: Path, scheme="ibug68") -> Path:
    """Figure: kept / hidden / flowed points and the deformation grid of the jaw flow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ex = result["example"]
    kept, hidden = result["kept"], result["hidden"]
    res = ex["result"]
    s = get_scheme(scheme)
    from flmcore._plotting import legend_outside, save_figure

    fig, ax = plt.subplots(figsize=(5.2, 5.6))
    truth, placed, pred = ex["truth"], ex["placed"], ex["pred"]
    lo, hi = truth.min(0), truth.max(0)
    pad = 0.08 * (hi - lo).max()
    bounds = (lo[0] - pad, hi[0] + pad, lo[1] - pad, hi[1] + pad)
    mom, sig = res._flow_args()
    k_jaw = 0
    rows, cols = lddmm.deformation_grid(res.trajectory, mom, sig, bounds=bounds, n_lines=17, n_samples=80,
                                        curves=res.curves, curve=k_jaw, kernel=res.kernel)
    for line in np.concatenate([rows, cols]):
        ax.plot(line[:, 0], line[:, 1], color="0.8", lw=0.6, zorder=0)
    for c in s.curves:
        idx = list(c.indices) + ([c.indices[0]] if c.closed else [])
        ax.plot(truth[idx, 0], truth[idx, 1], color="0.55", lw=0.8, zorder=1)
    ax.scatter(placed[hidden, 0], placed[hidden, 1], s=14, c="c", marker="*", label="hidden, mean face", zorder=2)
    ax.scatter(truth[kept, 0], truth[kept, 1], s=12, c="g", label="kept (target)", zorder=3)
    ax.scatter(truth[hidden, 0], truth[hidden, 1], s=22, facecolors="none", edgecolors="r",
               label="hidden, ground truth", zorder=3)
    ax.scatter(pred[hidden, 0], pred[hidden, 1], s=22, c="m", marker="*", label="hidden, LDDMM-flowed", zorder=4)
    for i in hidden:
        ax.plot([placed[i, 0], pred[i, 0]], [placed[i, 1], pred[i, 1]], color="b", lw=0.5, zorder=2)
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[3], bounds[2])
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    legend_outside(ax, "below", ncol=2)
    ax.set_title("sparse-to-dense: grid = jaw-curve diffeomorphism (image pixels)")
    save_figure(fig, path)
    return Path(path)


# ----------------------------------------------------------------------------- training
def train_lddmm_face(images, shapes68, *, epochs: int = 30, batch_size: int = 32, lr: float = 2e-3, rng=0,
                     n_steps: int = 2, beta: float = 0.1, train_idx=None, width: int = 16, progress=None,
                     log=None):
    """Train a small :class:`flmcore.nn.models.LDDMMFace` (tiny conv backbone) on 68-point crops.

    Returns ``(model, mean_shape, history)``.  Requires torch.
    """
    import torch
    from torch import nn

    from flmcore.nn import CurveLandmarkLoss
    from flmcore.nn.models import LDDMMFace

    torch.manual_seed(int(rng))
    gen = np.random.default_rng(rng)
    idx = np.arange(len(images)) if train_idx is None else np.asarray(train_idx)
    imgs = torch.as_tensor(np.asarray(images)[idx], dtype=torch.float32)[:, None] / 255.0
    ys = torch.as_tensor(shapes68[idx], dtype=torch.float32)
    mean = shapes68[idx].mean(0)
    c = width
    backbone = nn.Sequential(
        nn.AvgPool2d(2),  # the network sees the crop at half resolution (CPU budget)
        nn.Conv2d(1, c, 3, 2, 1), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
        nn.Conv2d(c, 2 * c, 3, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(inplace=True),
        nn.Conv2d(2 * c, 4 * c, 3, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(inplace=True),
        nn.Conv2d(4 * c, 8 * c, 3, 2, 1), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),
        nn.Conv2d(8 * c, 8 * c, 3, 2, 1), nn.BatchNorm2d(8 * c), nn.ReLU(inplace=True),
        nn.Flatten(), nn.Linear(8 * c * (images.shape[-1] // 64) ** 2, 128), nn.ReLU(inplace=True))
    model = LDDMMFace(backbone, "ibug68", mean, feature_dim=128, n_steps=n_steps)
    crit = CurveLandmarkLoss("ibug68", mean, beta=beta)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * int(np.ceil(len(idx) / batch_size)))
    history = []
    ep_iter = range(epochs) if progress is None else progress(range(epochs), desc="train LDDMMFace")
    for ep in ep_iter:
        perm = gen.permutation(len(idx))
        tot = 0.0
        model.train()
        for start in range(0, len(idx), batch_size):
            bi = perm[start:start + batch_size]
            x, y = imgs[bi], ys[bi]
            # augmentation: small random translation (shift image and landmarks together)
            shift = gen.integers(-4, 5, size=2)
            x = torch.roll(x, shifts=(int(shift[1]), int(shift[0])), dims=(2, 3))
            y = y + torch.as_tensor(shift, dtype=torch.float32)
            opt.zero_grad()
            loss = crit(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(bi)
        history.append(tot / len(idx))
        if log is not None:
            log(f"epoch {ep + 1}: loss {history[-1]:.4f}")
    model.eval()
    return model, mean, history


# ----------------------------------------------------------------------------- demo
def run(ctx) -> str:
    """Sparse-to-dense on real HELEN shapes (figure with kept / hidden / flowed points and a grid)."""
    shapes = load_helen68(ctx.data_dir)
    if ctx.data_dir is None:
        source = ctx.source("helen68_shapes")
    elif (Path(ctx.data_dir) / "helen68_shapes.npz").is_file():
        source = ctx.source("helen68_shapes")
    else:
        source = f"the .pts files of `{ctx.data_dir}` (--data, iBUG 68 points)"
    n = 10 if ctx.quick else 80
    res = sparse_to_dense(shapes, subset=n, rng=ctx.seed, n_steps=5 if ctx.quick else 10,
                          max_iter=30 if ctx.quick else 100, gamma=1e-3, with_ssr=True, with_all_points=False,
                          progress=ctx.progress)
    out = Path(ctx.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig = plot_sparse_example(res, out / "lddmm_sparse_to_dense.png")
    text = [
        "## LDDMM: sparse-to-dense landmarks",
        "",
        f"Data: {source}; `flmcore.train.demos.lddmm.sparse_to_dense` (`flmcore.lddmm.register`, "
        "`flow_points`, `flmcore.procrustes`, `flmcore.ssr.SparseShapeRegression`). "
        f"{res['n_faces']} real 68-point faces (2-fold: the GPA mean face and the SSR baseline are fitted "
        f"on the other fold). {len(res['kept'])} points kept (every other point of each curve, eyes whole), "
        f"{len(res['hidden'])} hidden points predicted; NME normalised by the inter-ocular distance.",
        "",
        sparse_table(res),
        "",
        f"Jacobian determinants of the LDDMM flows at all 68 mean-face points: min {res['detj_min']:.3f}, "
        f"mean {res['detj_mean']:.3f}, {res['detj_nonpos']} of {res['detj_count']} <= 0.",
        "",
        f"![]({fig.name})",
        "",
    ]
    try:
        import torch  # noqa: F401
    except ImportError:
        return "\n".join(text)
    cmp = preset_comparison(shapes[:200], rng=ctx.seed)
    text += [
        "### LDDMM-Face presets (`flmcore.nn.CurveLandmarkLoss`, `LDDMMDeformation`, `preset=`)",
        "",
        "`paper` is the paper's layout and loss as its official code computes them (12 open curves, the "
        "official sigma_V table, mean point distance + curve term / 68, outer-eye-corner normaliser); "
        "`flmcore` is flmcore's reading of eq. 8 (9 curves, sigma_V = RMS radius of each mean-face curve, "
        "squared distances per curve, eye-centre normaliser). The same beta weighs the curve term "
        f"differently, and the ratio grows with the face size in pixels (measured on {min(len(shapes), 200)} of "
        "these faces in their image pixels); see the Fidelity page.",
        "",
        preset_table(cmp),
        "",
    ]
    return "\n".join(text)

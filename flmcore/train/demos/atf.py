"""Demo part ``atf``: multi-dataset training (ATF), landmark losses and pose balancing on real faces.

Three small real-data experiments, shared by ``flmcore demo`` (short budgets) and the
documentation (``python -m flmcore.train.demos.atf --full --out docs/_static``):

1. **ATF on HELEN** — the 234 bundled HELEN crops carry both the iBUG 68-point and the
   29-point (Zhou et al.) labels.  The faces are split into a test part (both labels, held
   back), a part that keeps only its 68 labels and a part that keeps only its 29 labels: two
   'datasets' with different schemes.  Single-dataset baselines, ATDP (alternating batches with
   decreasing proportions, ATF eq. 2), ATDP + mixed branch loss (eq. 3/5, curated or automatic
   similar landmarks) and the novel-detector scenario (new 29-point head on the frozen backbone
   of the 68-point model) are compared by NME on the held-back faces of each scheme.
2. **Losses** — the same coordinate-regression network trained with L2, L1, Wing, anisotropic
   (Rayhan et al. eq. 2/6) and anisotropic-Wing losses for the same budget; test NME per epoch.
3. **Pose balancing** — AFLW2000 (68-point re-annotation): Procrustes -> PCA -> 9 pose bins,
   occupancy before and after under/over-sampling (:class:`flmcore.train.PoseBalancedSampler`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

__all__ = ["run", "prepare_helen", "run_atf_experiment", "run_loss_experiment", "run_pose_balance", "main"]


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def prepare_helen(data: dict, *, size: int = 64, n_test: int = 54, seed: int = 0) -> dict:
    """Downscale the HELEN pair crops and split them into test / 68-only / 29-only parts.

    Returns a dict of torch tensors: ``X`` (N, 1, size, size) float32, ``y68``, ``y29``
    (float32 pixels of the downscaled crops) and index arrays ``test``, ``part68``, ``part29``.
    """
    import torch
    import torch.nn.functional as Fnn

    imgs = torch.as_tensor(np.asarray(data["images"], dtype=np.float32) / 255.0)[:, None]
    H = imgs.shape[-1]
    X = Fnn.interpolate(imgs, size=(size, size), mode="area")
    s = size / H
    y68 = torch.as_tensor((np.asarray(data["shapes68"]) + 0.5) * s - 0.5, dtype=torch.float32)
    y29 = torch.as_tensor((np.asarray(data["shapes29"]) + 0.5) * s - 0.5, dtype=torch.float32)
    perm = np.random.default_rng(seed).permutation(len(X))
    rest = perm[n_test:]
    half = len(rest) // 2
    return {"X": X, "y68": y68, "y29": y29, "test": np.sort(perm[:n_test]), "part68": np.sort(rest[:half]),
            "part29": np.sort(rest[half:]), "size": size}


def make_backbone(width: int = 16):
    """Four stride-2 conv blocks (a tiny CPU backbone): (B, 1, S, S) -> (B, 4 width, S/16, S/16)."""
    from torch import nn

    def block(i, o):
        return [nn.Conv2d(i, o, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]

    return nn.Sequential(*block(1, width), *block(width, 2 * width), *block(2 * width, 4 * width),
                         *block(4 * width, 4 * width))


def _head(n_points: int, origin: np.ndarray, size: int, width: int = 16):
    from flmcore.nn import CoordHead

    cells = (size // 16) ** 2
    return CoordHead(4 * width * cells, n_points, origin=origin, scale=size / 8.0, pool="flatten")


def _augment_factory(size: int):
    """Random similarity (rotation ±10°, scale ±8 %, shift ±3 px) of images and landmarks."""
    import torch
    import torch.nn.functional as Fnn

    def augment(x, y, gen):
        B = x.shape[0]
        u = torch.rand(B, 4, generator=gen)
        ang = (u[:, 0] - 0.5) * (20.0 * np.pi / 180.0)
        sc = 1.0 + (u[:, 1] - 0.5) * 0.16
        sh = (u[:, 2:] - 0.5) * 6.0
        c, s_ = torch.cos(ang), torch.sin(ang)
        A = torch.stack([torch.stack([c, -s_], -1), torch.stack([s_, c], -1)], -2) * sc[:, None, None]
        ctr = torch.full((B, 2), (size - 1) / 2.0)
        t = ctr - (A @ ctr[..., None])[..., 0] + sh  # p_out = A p_in + t, rotating about the centre
        Ai = torch.linalg.inv(A)
        k = 2.0 / size
        cn = 1.0 / size - 1.0
        off = -(Ai @ torch.full((B, 2, 1), cn))[..., 0] - k * (Ai @ t[..., None])[..., 0] + cn
        theta = torch.cat([Ai, off[..., None]], -1).to(x.dtype)
        grid = Fnn.affine_grid(theta, list(x.shape), align_corners=False)
        x2 = Fnn.grid_sample(x, grid, align_corners=False, padding_mode="border")
        y2 = y @ A.transpose(1, 2).to(y.dtype) + t[:, None, :].to(y.dtype)
        return x2, y2

    return augment


def _nme(pred, gt, scheme: str) -> float:
    from flmcore.metrics import nme

    return float(np.mean(nme(np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64),
                             "interocular", scheme=scheme))) * 100.0


def _predict(model, X, name):
    import torch

    model.eval()
    with torch.no_grad():
        return model(X, name).numpy()


# ------------------------------------------------------------------------------------------------
# 1. ATF on HELEN 68 + 29
# ------------------------------------------------------------------------------------------------
S68, S29 = "ibug68", "helen_zhou29"


def _train(model, datasets: Dict[str, tuple], criterion, *, epochs: int, target: str, decay: float, seed: int,
           batch_size: int, lr: float, size: int, progress=None, callback=None, params=None):
    import torch

    from flmcore.train import ATDPSampler, fit_atf

    names = list(datasets)
    sampler = ATDPSampler([len(datasets[n][0]) for n in names], [1.0] * len(names), decay, batch_size, seed,
                          target=names.index(target))
    opt = torch.optim.Adam(params if params is not None else model.trainable_parameters(), lr=lr)
    t0 = time.perf_counter()
    hist = fit_atf(model, datasets, sampler, criterion, opt, epochs, augment=_augment_factory(size),
                   progress=progress, callback=callback)
    return hist, time.perf_counter() - t0


def run_atf_experiment(data: dict, *, epochs: int = 40, novel_epochs: int = 10, decay: float = 0.9,
                       alpha: float = 0.2, beta: float = 0.8, gamma: float = 0.1, seed: int = 0,
                       batch_size: int = 16, lr: float = 2e-3, auto_pairs: bool = True, joint: bool = True,
                       progress=None) -> dict:
    """Baselines, ATDP, ATDP + mixed branch loss and the novel detector on the HELEN split.

    Returns ``{"rows": [...], "pairs": {...}}``; each row has ``method``, ``nme68``, ``nme29``
    (percent of the inter-ocular distance on the held-back faces, NaN where the model has no
    such branch) and ``seconds``.
    """
    import torch

    from flmcore.nn import MixedBranchLoss
    from flmcore.nn.models import MultiBranch
    from flmcore.nn.losses import L1Loss
    from flmcore.procrustes import generalized_procrustes
    from flmcore.schemes import correspondences
    from flmcore.similar_points import similar_landmark_pairs
    from flmcore.train import BranchLoss

    size = data["size"]
    X, y68, y29 = data["X"], data["y68"], data["y29"]
    te, p68, p29 = data["test"], data["part68"], data["part29"]
    d68 = (X[p68], y68[p68])
    d29 = (X[p29], y29[p29])
    o68 = y68[p68].double().mean(0).numpy()
    o29 = y29[p29].double().mean(0).numpy()
    curated = correspondences(S68, S29)
    auto = (similar_landmark_pairs(generalized_procrustes(y68[p68].double().numpy()).mean,
                                   generalized_procrustes(y29[p29].double().numpy()).mean, 0.06)
            if auto_pairs else np.zeros((0, 2), np.int64))
    l1 = BranchLoss(L1Loss())

    def build(heads):
        torch.manual_seed(seed)
        bb = make_backbone()
        return MultiBranch(bb, {n: _head(P, o, size) for n, P, o in heads})

    def evaluate(model):
        out = {}
        for name, key, sch in ((S68, "nme68", S68), (S29, "nme29", S29)):
            if name in model.branch_names:
                gt = (y68 if name == S68 else y29)[te]
                out[key] = _nme(_predict(model, X[te], name), gt.numpy(), sch)
            else:
                out[key] = float("nan")
        return out

    rows = []
    kw = dict(epochs=epochs, decay=decay, seed=seed, batch_size=batch_size, lr=lr, size=size)

    m68 = build([(S68, 68, o68)])
    _, t = _train(m68, {S68: d68}, l1, target=S68, progress=progress, **kw)
    rows.append({"method": "single dataset (68 only)", **evaluate(m68), "seconds": t})

    m29 = build([(S29, 29, o29)])
    _, t = _train(m29, {S29: d29}, l1, target=S29, progress=progress, **kw)
    rows.append({"method": "single dataset (29 only)", **evaluate(m29), "seconds": t})

    both = {S68: d68, S29: d29}
    heads = [(S68, 68, o68), (S29, 29, o29)]
    m = build(heads)
    _, t = _train(m, both, l1, target=S68, progress=progress, **kw)
    rows.append({"method": "ATDP (target 68)", **evaluate(m), "seconds": t})

    variants = [("ATDP + L_MB, curated pairs", curated)]
    if auto_pairs:
        variants.append(("ATDP + L_MB, automatic pairs", auto))
    for label, pairs in variants:
        m = build(heads)
        crit = MixedBranchLoss(alpha, beta, gamma, {(S68, S29): pairs}, main=S68)
        _, t = _train(m, both, crit, target=S68, progress=progress, **kw)
        rows.append({"method": f"{label} ({len(pairs)})", **evaluate(m), "seconds": t})
        if joint and label.endswith("curated pairs"):
            # joint detector: fine-tune the auxiliary branch alone on the frozen backbone
            m.set_trainable(backbone=False, branches=S29)
            _, t2 = _train(m, {S29: d29}, l1, target=S29, progress=progress,
                           **{**kw, "epochs": novel_epochs})
            rows.append({"method": "  + joint: 29 branch fine-tuned, frozen backbone", **evaluate(m),
                         "seconds": t + t2})

    # novel detector: the 68-point model gets a 29-point branch on its frozen backbone
    torch.manual_seed(seed + 1)
    m68.add_branch(S29, _head(29, o29, size), freeze_backbone=True)
    _, t = _train(m68, {S29: d29}, l1, target=S29, progress=progress, **{**kw, "epochs": novel_epochs})
    rows.append({"method": f"novel: 29 head on frozen 68 backbone ({novel_epochs} ep.)", **evaluate(m68),
                 "seconds": t})
    cur = {tuple(p) for p in curated.tolist()}
    return {"rows": rows, "pairs": {"curated": len(curated), "automatic": len(auto),
                                    "automatic_in_curated": int(sum(tuple(p) in cur for p in auto.tolist()))}}


# ------------------------------------------------------------------------------------------------
# 2. losses
# ------------------------------------------------------------------------------------------------
def run_loss_experiment(data: dict, *, epochs: int = 30, seed: int = 0, batch_size: int = 16, lr: float = 2e-3,
                        losses=("L2", "L1", "Wing", "Anisotropic", "Anisotropic + bin-mean origin",
                                "Anisotropic Wing"), progress=None) -> dict:
    """Train the 68-point coordinate regressor with each loss for the same budget.

    Returns ``{"curves": {loss: [test NME per epoch]}, "final": {loss: NME}, "seconds": {...}}``.
    """
    import torch

    from flmcore.nn.models import MultiBranch
    from flmcore.nn.losses import AnisotropicLoss, AnisotropicWingLoss, L1Loss, L2Loss, WingLoss
    from flmcore.pose import pose_bins
    from flmcore.train import BranchLoss

    size = data["size"]
    X, y68 = data["X"], data["y68"]
    te = data["test"]
    tr = np.sort(np.concatenate([data["part68"], data["part29"]]))  # every training face, 68 labels
    Y = y68[tr].double().numpy()
    mean = Y.mean(0)
    bins = pose_bins(Y, n_bins=9)
    bin_mean_origin = bins.origin_in(Y)  # Rayhan's origin, in the crop pixels the head regresses
    factories = {
        "L2": lambda: L2Loss(), "L1": lambda: L1Loss(), "Wing": lambda: WingLoss(10.0, 2.0),
        "Anisotropic": lambda: AnisotropicLoss(S68, 5.0, 3.0),
        "Anisotropic + bin-mean origin": lambda: AnisotropicLoss(S68, 5.0, 3.0),
        "Anisotropic Wing": lambda: AnisotropicWingLoss(S68, 5.0, 3.0, scale=3.0),
    }
    curves, final, secs = {}, {}, {}
    for name in losses:
        torch.manual_seed(seed)
        origin = bin_mean_origin if "origin" in name else mean
        model = MultiBranch(make_backbone(), {S68: _head(68, origin, size)})
        curve: List[float] = []

        def cb(e, mdl, curve=curve):
            curve.append(_nme(_predict(mdl, X[te], S68), y68[te].numpy(), S68))
            return {"nme": curve[-1]}

        _, t = _train(model, {S68: (X[tr], y68[tr])}, BranchLoss(factories[name]()), epochs=epochs, target=S68,
                      decay=1.0, seed=seed, batch_size=batch_size, lr=lr, size=size, progress=progress, callback=cb)
        curves[name], final[name], secs[name] = curve, curve[-1], t
    return {"curves": curves, "final": final, "seconds": secs,
            "bin_counts": bins.counts.tolist()}


# ------------------------------------------------------------------------------------------------
# 3. pose balancing
# ------------------------------------------------------------------------------------------------
def run_pose_balance(aflw: dict, *, n_bins: int = 9, seed: int = 0) -> dict:
    """Bin occupancy of the AFLW2000 68-point shapes before / after pose balancing."""
    from flmcore.train import PoseBalancedSampler

    shapes = np.asarray(aflw["pts68"], dtype=np.float64)
    out = {}
    for mode in ("undersample", "oversample"):
        s = PoseBalancedSampler(shapes, n_bins=n_bins, mode=mode, seed=seed)
        out[mode] = s.bin_counts(np.fromiter(iter(s), dtype=np.int64)).tolist()
        out["before"] = s.bin_counts().tolist()
        yaw = np.asarray(aflw["yaw"], dtype=np.float64)
        out["mean_abs_yaw"] = [float(np.mean(yaw[s.labels == k])) if (s.labels == k).any() else float("nan")
                               for k in range(n_bins)]
    return out


# ------------------------------------------------------------------------------------------------
# figures and report
# ------------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    return "—" if v != v else f"{v:.2f}"


def atf_table(res: dict) -> str:
    lines = ["| method | NME 68 (%) | NME 29 (%) | train s |", "|---|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['method']} | {_fmt(r['nme68'])} | {_fmt(r['nme29'])} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def loss_table(res: dict) -> str:
    lines = ["| loss | final NME (%) | best NME (%) | train s |", "|---|---:|---:|---:|"]
    for k, c in res["curves"].items():
        lines.append(f"| {k} | {c[-1]:.2f} | {min(c):.2f} | {res['seconds'][k]:.1f} |")
    return "\n".join(lines)


def plot_losses(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    from flmcore._plotting import figure_style, legend_outside, plain_log_axis, save_figure

    with figure_style():
        fig, ax = plt.subplots(figsize=(6.0, 3.4))
        for k, c in res["curves"].items():
            ax.plot(np.arange(1, len(c) + 1), c, label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test NME (% of inter-ocular distance)")
        ax.set_yscale("log")
        plain_log_axis(ax, "y")
        ax.set_title("HELEN 68 points, 64x64 crops")
        legend_outside(ax, "right")
        ax.grid(alpha=0.3, which="both")
        save_figure(fig, path, note=f"{len(next(iter(res['curves'].values())))} epochs per loss")


def plot_pose(res: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    K = len(res["before"])
    x = np.arange(K)
    from flmcore._plotting import legend_outside, save_figure

    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(x - 0.27, res["before"], 0.27, label="before")
    ax.bar(x, res["undersample"], 0.27, label="undersample (Rayhan)")
    ax.bar(x + 0.27, res["oversample"], 0.27, label="oversample (Feng)")
    for k in range(K):
        ax.text(x[k], max(res["before"][k], res["oversample"][k]) + 8, f"{res['mean_abs_yaw'][k]:.0f}°",
                ha="center", fontsize=8)
    ax.set_ylim(0, 1.15 * max(max(res["before"]), max(res["oversample"])))
    ax.set_xlabel("pose bin (PC 1 of Procrustes-aligned shapes); above each bin: mean |yaw| (degrees)")
    ax.set_ylabel("faces (count)")
    ax.set_title("AFLW2000, 68 points, 9 bins")
    legend_outside(ax, "right")
    save_figure(fig, path)


def run(ctx) -> str:
    """Demo entry point: a short ATF run on HELEN 68 + 29, a loss comparison and pose balancing."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: extra threads only contend on a shared machine
    try:
        t0 = time.perf_counter()
        helen = prepare_helen(ctx.load("helen_pairs"), size=64, seed=ctx.seed)
        ep = 2 if ctx.quick else 10
        atf = run_atf_experiment(helen, epochs=ep, novel_epochs=max(1, ep // 3), seed=ctx.seed,
                                 auto_pairs=not ctx.quick, joint=not ctx.quick, progress=ctx.progress)
        losses = ("L2", "Anisotropic") if ctx.quick else ("L2", "L1", "Wing", "Anisotropic")
        lres = run_loss_experiment(helen, epochs=2 if ctx.quick else 6, seed=ctx.seed, losses=losses,
                                   progress=ctx.progress)
        out = Path(ctx.out_dir)
        plot_losses(lres, out / "atf_losses.png")
        pres = run_pose_balance(ctx.load("aflw2000"), seed=ctx.seed)
        plot_pose(pres, out / "atf_pose_bins.png")
    finally:
        torch.set_num_threads(threads)
    dt = time.perf_counter() - t0
    return "\n".join([
        "## Multi-dataset training (ATF), landmark losses, pose balancing",
        "",
        f"Data: {ctx.source('helen_pairs', 'aflw2000')}. Public calls: `flmcore.train.fit_atf`, "
        "`ATDPSampler`, `PoseBalancedSampler`, `flmcore.nn.models.MultiBranch`, `flmcore.nn.MixedBranchLoss` and "
        "the losses of `flmcore.nn`, through `flmcore.train.demos.atf.run_atf_experiment` / "
        "`run_loss_experiment` / `run_pose_balance`.",
        "",
        f"HELEN crops at 64x64: {len(helen['part68'])} faces keep only their 68 labels, "
        f"{len(helen['part29'])} only their 29 labels, {len(helen['test'])} are held back. "
        f"Tiny CNN, {ep} epochs (target passed once per epoch, decay 0.9); similar landmarks: "
        f"{atf['pairs']['curated']} curated"
        + (f", {atf['pairs']['automatic']} found automatically ({atf['pairs']['automatic_in_curated']} of them "
           "curated)." if atf['pairs']['automatic'] else "."),
        "",
        atf_table(atf),
        "",
        "Same network, 68-point labels of all training faces, different losses (test NME per epoch):",
        "",
        loss_table(lres),
        "",
        "![](atf_losses.png)",
        "",
        f"AFLW2000 pose bins (68 points, 9 bins): before {pres['before']}, undersampled {pres['undersample']}, "
        f"oversampled {pres['oversample']}.",
        "",
        "![](atf_pose_bins.png)",
        "",
        f"_(short budgets, {dt:.0f} s; the documented runs: `python -m flmcore.train.demos.atf --only atf --epochs 30 "
        "--seeds 0 1 2` and `--only losses --epochs 50 --seeds 0 1 2`)_",
    ])


def main(argv=None) -> dict:
    """Full-size experiments for the documentation: ``python -m flmcore.train.demos.atf --full --out docs/_static``."""
    import matplotlib

    matplotlib.use("Agg")
    import torch

    ap = argparse.ArgumentParser(prog="python -m flmcore.train.demos.atf", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="documentation budgets (a few minutes per experiment)")
    ap.add_argument("--out", default=".", help="folder for the PNG figures")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--only", choices=("atf", "losses", "pose"), nargs="+", default=["atf", "losses", "pose"])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for this tiny CNN)")
    from flmcore.train.demos import load_part

    ap.add_argument("--json", default=None, help="also write every result (curves included) to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    ep = args.epochs or (40 if args.full else 8)
    for seed in args.seeds:
        helen = prepare_helen(load_part("helen_pairs"), size=64, seed=seed)
        if "atf" in args.only:
            r = run_atf_experiment(helen, epochs=ep, novel_epochs=max(2, ep // 4), seed=seed)
            print(f"\n### ATF, seed {seed}, {ep} epochs, pairs {r['pairs']}\n")
            print(atf_table(r), flush=True)
            res.setdefault("atf", []).append(r)
        if "losses" in args.only:
            r = run_loss_experiment(helen, epochs=ep, seed=seed)
            print(f"\n### losses, seed {seed}, {ep} epochs\n")
            print(loss_table(r), flush=True)
            res.setdefault("losses", []).append(r)
            plot_losses(r, out / f"atf_losses{'' if seed == args.seeds[0] else f'_seed{seed}'}.png")
    if "pose" in args.only:
        r = run_pose_balance(load_part("aflw2000"))
        print("\n### pose bins (AFLW2000, 68 points)\n", r)
        plot_pose(r, out / "atf_pose_bins.png")
        res["pose"] = r
    if len(res.get("losses", [])) > 1:  # mean curve over seeds
        keys = list(res["losses"][0]["curves"])
        mean = {"curves": {k: list(np.mean([r["curves"][k] for r in res["losses"]], axis=0)) for k in keys},
                "seconds": {k: float(np.mean([r["seconds"][k] for r in res["losses"]])) for k in keys}}
        print(f"\n### losses, mean over seeds {args.seeds}\n")
        print(loss_table(mean), flush=True)
        plot_losses(mean, out / "atf_losses.png")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return res


if __name__ == "__main__":
    main()

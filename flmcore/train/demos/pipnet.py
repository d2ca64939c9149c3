"""Demo part ``pipnet``: a short PIPNet run on the bundled HELEN crops (Jin et al. 2021).

Uses the ``helen_pairs`` sample (234 grayscale 128x128 HELEN crops with the
iBUG-68 labels), or ``<data_dir>/helen_pairs.npz`` with the same keys.

1. A random 80 % trains a small PIPNet (ResNet-18 layout at a quarter of the
   width, stride 16 -> 8x8 maps, C = 10 neighbours from the mean face of the
   training shapes) for a few epochs on the CPU.
2. The held-out 20 % is decoded in one batch with :func:`flmcore.nn.functional.pip_decode`
   (exact neighbour merge, the official padded merge, and no merge) and
   scored with NME (inter-ocular), FR@10 % and AUC@10 %.
3. Figure: held-out crops with the merged predictions and, for a few
   landmarks, the votes their neighbours cast for them.

The budget is seconds, not the paper's 60 epochs: the numbers show the
pipeline working, not PIPNet's accuracy (see docs/guide/pipnet.rst).

Run alone: ``python -m flmcore.train.demos.pipnet --out DIR [--quick]``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["run", "main", "plot_votes"]


def _load(data_dir: Optional[Path]):
    if data_dir is not None and (Path(data_dir) / "helen_pairs.npz").is_file():
        with np.load(Path(data_dir) / "helen_pairs.npz") as z:
            return {k: z[k] for k in z.files}
    from flmcore.data import load_sample

    return load_sample("helen_pairs")


def plot_votes(ax, image, pred, own, votes, indices, truth=None, show=(8, 30, 36, 48, 57)) -> None:
    """Draw one face: merged predictions, and the neighbour votes for the landmarks in ``show``.

    Parameters
    ----------
    ax : matplotlib Axes
    image : (H, W) array
    pred, own : (N, 2) merged and unmerged predictions
    votes : (N, C, 2) ``votes[i, c]`` = landmark ``i``'s prediction of ``indices[i, c]``
    indices : (N, C) neighbour table
    truth : (N, 2), optional
    show : landmarks whose votes are drawn
    """
    ax.imshow(image, cmap="gray", vmin=0, vmax=255 if np.asarray(image).dtype == np.uint8 else 1)
    if truth is not None:
        ax.plot(truth[:, 0], truth[:, 1], "o", mfc="none", mec="lime", ms=3.5, mew=0.8, label="truth")
    colors = ["tab:orange", "tab:cyan", "tab:pink", "yellow", "tab:purple", "white"]
    for k, j in enumerate(s for s in show if s < len(pred)):
        voters, slots = np.nonzero(indices == j)
        v = votes[voters, slots]
        col = colors[k % len(colors)]
        for (vx, vy), (sx, sy) in zip(v, own[voters]):
            ax.plot([sx, vx], [sy, vy], "-", color=col, lw=0.4, alpha=0.6)
        ax.plot(v[:, 0], v[:, 1], "x", color=col, ms=3.5, mew=0.8)
        ax.plot(*own[j], "s", mfc="none", mec=col, ms=4, mew=0.8)
    ax.plot(pred[:, 0], pred[:, 1], "r.", ms=3, label="merged")
    ax.axis("off")


def run(ctx) -> str:
    """Train a small PIPNet for a few seconds, decode the held-out faces, draw the votes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from flmcore import metrics
    from flmcore.nn.backbones import ResNet18
    from flmcore.nn.models import PIPNet
    from flmcore.pip import mean_face
    from flmcore.train import train_pipnet

    data = _load(ctx.data_dir)
    images, shapes = np.asarray(data["images"]), np.asarray(data["shapes68"], dtype=np.float64)
    rng = ctx.rng()
    perm = rng.permutation(len(images))
    n_test = max(4, len(images) // 5)
    test, train = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    if ctx.quick:
        train, test = train[:48], test[:16]
    epochs = 2 if ctx.quick else 8
    torch.manual_seed(ctx.seed)
    net = PIPNet(ResNet18(in_channels=1, width=0.25, stride=16), "ibug68", n_neighbors=10,
                 mean_shape=mean_face(shapes[train]))
    t0 = time.perf_counter()
    hist = train_pipnet(net, images[train], shapes[train], epochs=epochs, batch_size=8, lr=3e-3, device="cpu",
                        rng=ctx.seed, num_threads=1,  # one thread: robust on a shared machine
                        progress=lambda it, desc, total: ctx.progress(it, desc="PIPNet epochs", total=total))
    t_train = time.perf_counter() - t0
    rows = []
    res = {}
    from flmcore._validate import check_images

    x = torch.from_numpy(check_images(images[test], "images", batch=True))[:, None]  # [0, 1] float32
    net.eval()
    with torch.no_grad():
        outputs = net(x)  # one forward pass; the three merges decode the same maps
        net.decode(outputs)  # warm-up (builds the cached index tensors of the neighbour table)
    for merge in ("exact", "padded", "none"):
        t0 = time.perf_counter()
        out = net.decode(outputs, merge=merge, return_votes=True)
        dt = time.perf_counter() - t0
        res[merge] = [o.double().numpy() for o in out]
        e = metrics.nme(res[merge][0], shapes[test], scheme="ibug68")
        rows.append(f"| {merge} | {100 * e.mean():.2f} | {100 * metrics.failure_rate(e, 0.1):.1f} | "
                    f"{metrics.auc(e, 0.1):.3f} | {dt * 1e3:.2f} |")
    diff = float(np.linalg.norm(res["exact"][0] - res["padded"][0], axis=-1).mean())

    pred, own, votes = res["exact"]
    idx = net.neighbors.indices
    show = test[:4]
    from flmcore._plotting import figure_style, legend_outside, save_figure

    with figure_style():
        fig, axes = plt.subplots(1, len(show), figsize=(2.8 * len(show), 3.2))
        for ax, k in zip(np.atleast_1d(axes), range(len(show))):
            plot_votes(ax, images[show[k]], pred[k], own[k], votes[k], idx, truth=shapes[show[k]])
        fig.suptitle("PIPNet (held-out faces): merged points (red), neighbours' votes (x) for 5 landmarks, "
                     "own prediction (square)")
        fig.tight_layout()
        legend_outside(fig, "below")
        out_dir = Path(ctx.out_dir)
        save_figure(fig, out_dir / "pipnet_votes.png")

    return "\n".join([
        "## PIPNet: pixel-in-pixel regression with neighbour votes",
        "",
        f"ResNet-18 layout at width 0.25, stride 16 (8x8 maps on the 128x128 crops), C = 10 neighbours; "
        f"trained {epochs} epochs on {len(train)} HELEN crops in {t_train:.1f} s on the CPU "
        f"(final loss {hist['loss'][-1]:.4f}); {len(test)} held-out crops decoded in one batch.",
        "A few epochs only: the numbers show the pipeline, not the method's accuracy.",
        "",
        "| merge | NME (%) | FR@10% (%) | AUC@10% | pip_decode (ms) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Exact vs official padded merge: mean difference {diff:.2f} px on these 128x128 crops.",
        "",
        "![PIPNet predictions and neighbour votes](pipnet_votes.png)",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flmcore.train.demos.pipnet", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo_out", help="folder for the figure and report")
    ap.add_argument("--data", default=None, help="folder holding helen_pairs.npz (default: bundled sample)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from flmcore.train.demos import DemoContext

    ctx = DemoContext(out_dir=Path(args.out), data_dir=Path(args.data) if args.data else None, quick=args.quick)
    text = run(ctx)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "pipnet.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

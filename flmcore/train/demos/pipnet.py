"""Demo part ``pipnet``: a small PIPNet training run and its evaluation, through the public API.

Everything here is what a user types (Jin et al. 2021, PIPNet):

1. Data: an iBUG folder (images with 1-based ``.pts`` beside them).  By default the
   ``helen_pairs`` sample (HELEN face crops with iBUG-68 labels, read by
   :func:`flmcore.data.load_sample`) is written as JPEG + ``.pts`` into
   ``OUT/pipnet_data/`` (:func:`write_ibug_folder`); with ``flmcore demo --data DIR``
   where ``DIR`` holds ``.pts`` files, the part trains on ``DIR`` itself.
2. Train: a config (written to ``OUT/pipnet_config.toml``, shown in the report) run by
   :func:`flmcore.train.train` -- the same as ``flmcore train OUT/pipnet_config.toml
   OUT/pipnet_run``.  A ResNet-18 layout at a quarter of the width, stride 16, a few
   epochs: seconds on one CPU core.
3. Evaluate: :func:`flmcore.models.load_model` of the run's ``best.pt``,
   :func:`flmcore.models.predict_dataset` and :func:`flmcore.evaluate.evaluate` on the
   config's validation split (``split = "name"``: the split ``flmcore train`` holds out),
   with the CED figure -- the same as ``flmcore evaluate OUT/pipnet_run/best.pt DATA
   --split val --val-fraction F``.
4. Figure: held-out crops (:meth:`flmcore.models.Landmarker.crop`) decoded by the
   network (``model.network.decode(..., return_votes=True)``): merged points and, for a
   few landmarks, the votes their neighbours cast for them.

The budget is seconds, not the paper's 60 epochs: the numbers show the pipeline
working, not PIPNet's accuracy (docs/guide/train_300w.rst has the real runs).

Run alone: ``python -m flmcore.train.demos.pipnet --out DIR [--data DIR] [--quick]``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

__all__ = ["run", "main", "plot_votes", "write_ibug_folder", "demo_config", "to_toml"]


def has_pts(folder) -> bool:
    from flmcore.train.demos import _has_pts

    return _has_pts(folder)


def write_ibug_folder(images, shapes, folder, names: Optional[Sequence[str]] = None, quality: int = 95) -> Path:
    """Write faces as ``<name>.jpg`` + 1-based iBUG ``<name>.pts`` (the layout of
    :meth:`flmcore.datasets.LandmarkDataset.from_folder`).

    Parameters
    ----------
    images : (N, H, W) or (N, H, W, 3) uint8
    shapes : (N, P, 2) float, 0-based pixels
    folder : path (created)
    names : sequence of str, optional
        File stems (an extension is dropped); default ``face_00000`` ...
    quality : int
        JPEG quality.

    Returns
    -------
    pathlib.Path
        ``folder``.
    """
    from PIL import Image

    from flmcore.io import write_pts

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    imgs = np.asarray(images)
    pts = np.asarray(shapes, dtype=np.float64)
    if imgs.dtype != np.uint8 or imgs.ndim not in (3, 4) or len(imgs) != len(pts):
        raise ValueError(f"images must be uint8 (N, H, W[, 3]) with one shape each, got {imgs.dtype} {imgs.shape} "
                         f"and {len(pts)} shapes")
    stems = [Path(str(n)).stem for n in names] if names is not None else [f"face_{i:05d}" for i in range(len(imgs))]
    if len(set(stems)) != len(stems):
        raise ValueError("names must be unique")
    for img, s, stem in zip(imgs, pts, stems):
        Image.fromarray(img).save(out / f"{stem}.jpg", quality=quality)
        write_pts(out / f"{stem}.pts", s)
    return out


def demo_config(root, *, quick: bool = False, seed: int = 0) -> Dict:
    """The demo's training config (tables of :func:`flmcore.train.train`)."""
    return {
        "data": {"root": os.fspath(root), "format": "folder", "scheme": "ibug68", "split": "name",
                 "val_fraction": 0.2},
        "model": {"type": "pipnet", "backbone": "resnet18", "width": 0.25, "input_size": 64,
                  "stride": 16, "n_neighbors": 10, "pretrained": ""},
        "augment": {"preset": "flmcore"},
        "optim": {"name": "adam", "lr": 3e-3},
        "schedule": {"epochs": 2 if quick else 10, "milestones": [1 if quick else 8], "gamma": 0.1},
        "loss": {"alpha": 0.1, "beta": 0.1},
        "train": {"batch_size": 8, "workers": 0, "seed": int(seed), "threads": 1, "device": "cpu"},
    }


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def to_toml(config: Dict) -> str:
    """A config of tables of plain values as TOML text (read back by :func:`flmcore.train.load_config`)."""
    lines = []
    for table, body in config.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
        lines.append("")
    return "\n".join(lines)


def plot_votes(ax, image, pred, own, votes, indices, truth=None, show=(8, 30, 36, 48, 57)) -> None:
    """Draw one face: merged predictions, and the neighbour votes for the landmarks in ``show``.

    Parameters
    ----------
    ax : matplotlib Axes
    image : (H, W) or (H, W, 3) array
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


def _dataset(ctx):
    """(root folder, source description): the --data iBUG folder, or the sample written as one."""
    data_dir = Path(ctx.data_dir) if ctx.data_dir is not None else None
    if has_pts(data_dir):
        return data_dir, f"the iBUG folder `{data_dir}` (--data: images + .pts)"
    d = ctx.load("helen_pairs")
    images, shapes, names = d["images"], d["shapes68"], d.get("names")
    if ctx.quick:  # a fixed, seeded subset keeps the test to seconds
        keep = np.sort(np.random.default_rng(ctx.seed).permutation(len(images))[:80])
        images, shapes, names = images[keep], shapes[keep], (None if names is None else names[keep])
    root = Path(ctx.out_dir) / "pipnet_data"
    if root.exists():  # a fresh copy: never mix faces of an earlier run
        import shutil

        shutil.rmtree(root)
    write_ibug_folder(images, shapes, root, names=names)
    return root, (f"{len(images)} faces of {ctx.source('helen_pairs')} written as JPEG + .pts to "
                  f"`{root.name}/` (`flmcore.train.demos.pipnet.write_ibug_folder`)")


def run(ctx) -> str:
    """Train a small PIPNet with :func:`flmcore.train.train`, evaluate it, draw the votes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from flmcore.crop import landmark_box, transform_points, uncrop_points
    from flmcore.datasets import LandmarkDataset
    from flmcore.evaluate import evaluate
    from flmcore.models import load_model, predict_dataset
    from flmcore.train import train

    out_dir = Path(ctx.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    root, source = _dataset(ctx)
    cfg = demo_config(root, quick=ctx.quick, seed=ctx.seed)
    ds = LandmarkDataset.from_folder(root, cfg["data"]["scheme"])
    train_ds, val = ds.split_by_name(cfg["data"]["val_fraction"])  # the split train() holds out
    if len(val) == 0 or len(train_ds) == 0:
        raise ValueError(f"{root}: {len(ds)} faces give {len(train_ds)} training / {len(val)} held-out faces "
                         f"(split by name, val_fraction {cfg['data']['val_fraction']}); use more faces")
    cfg_path = out_dir / "pipnet_config.toml"
    cfg_path.write_text(to_toml(cfg))
    run_dir = out_dir / "pipnet_run"
    if run_dir.exists():  # train() refuses to overwrite a run: the demo starts a fresh one
        import shutil

        shutil.rmtree(run_dir)
    epochs = cfg["schedule"]["epochs"]
    # a user's folder may be large: a wall-clock budget keeps the demo short (the run ends cleanly)
    time_limit = None if not has_pts(ctx.data_dir) else (60.0 if ctx.quick else 300.0)
    torch_threads = torch.get_num_threads()
    try:
        summary = train(cfg_path, run_dir, progress=False, time_limit=time_limit)
    finally:
        torch.set_num_threads(torch_threads)
    if not (run_dir / "best.pt").is_file():
        raise RuntimeError(f"the run wrote no best.pt ({summary['stopped']} after {summary['epochs_done']} epochs)")

    model = load_model(run_dir / "best.pt", device="cpu")
    t0 = time.perf_counter()
    pred, missing = predict_dataset(model, val)
    t_pred = time.perf_counter() - t0
    res = evaluate(pred, val, subsets="auto", missing=missing)
    res.to_json(out_dir / "pipnet_eval.json")
    res.plot_ced(out_dir / "pipnet_ced.png", title=f"PIPNet demo run: {len(val)} held-out faces",
                 labels=[f"PIPNet R18x0.25, {epochs} epochs"])

    # the network's decoding on the held-out crops: neighbour merges and votes
    items = [val[i] for i in range(len(val))]
    crops, Ts = zip(*(model.crop(it["image"], landmark_box(it["shape"])) for it in items))
    crops, Ts = np.stack(crops), np.stack(Ts)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0)
    net = model.network
    with torch.no_grad():
        outputs = net(x)
        net.decode(outputs)  # warm-up (builds the cached index tensors of the neighbour table)
        rows, dec = [], {}
        for merge in ("exact", "padded", "none"):
            t1 = time.perf_counter()
            o = net.decode(outputs, merge=merge, return_votes=True)
            dt = time.perf_counter() - t1
            dec[merge] = [v.double().numpy() for v in o]
            r = evaluate(uncrop_points(dec[merge][0], Ts), val).pooled
            rows.append(f"| {merge} | {r['nme_interocular']:.2f} | {r['fr@0.1']:.1f} | {r['auc@0.1']:.3f} | "
                        f"{dt * 1e3:.2f} |")
    diff = float(np.linalg.norm(dec["exact"][0] - dec["padded"][0], axis=-1).mean())
    p, own, votes = dec["exact"]
    idx = net.neighbors.indices
    show = range(min(4, len(val)))
    from flmcore._plotting import figure_style, legend_outside, save_figure

    with figure_style():
        fig, axes = plt.subplots(1, len(show), figsize=(2.8 * len(show), 3.2))
        for ax, k in zip(np.atleast_1d(axes), show):
            plot_votes(ax, crops[k], p[k], own[k], votes[k], idx, truth=transform_points(items[k]["shape"], Ts[k]))
        fig.suptitle("PIPNet (held-out crops): merged points (red), neighbours' votes (x) for 5 landmarks, "
                     "own prediction (square)")
        fig.tight_layout()
        legend_outside(fig, "below")
        save_figure(fig, out_dir / "pipnet_votes.png")

    size = cfg["model"]["input_size"]
    return "\n".join([
        "## PIPNet: a training run and its evaluation (flmcore.train.train, flmcore.evaluate)",
        "",
        f"Data: {source}; {len(ds)} faces, split by name: {len(train_ds)} train / {len(val)} held out.",
        f"Trained {summary['epochs_done']} epochs in {summary['seconds']:.1f} s on one CPU core "
        f"({summary['stopped']}; ResNet-18 layout at width 0.25, stride 16: {size // 16}x{size // 16} maps on {size}x{size} crops, "
        f"C = 10 neighbours; best epoch {summary['best_epoch']}); a few epochs only: the numbers show the "
        "pipeline, not the method's accuracy.",
        "",
        f"The config (`{cfg_path.name}`); the same run (same seed, one thread: the same model) and scores "
        "from the shell, in the output folder:",
        "",
        "```toml",
        to_toml(cfg).rstrip(),
        "```",
        "",
        "```",
        f"flmcore train {cfg_path.name} --out my_run" + (f" --time-limit {time_limit:g}" if time_limit else ""),
        f"flmcore evaluate my_run/best.pt {root} --split val --val-fraction {cfg['data']['val_fraction']}",
        "```",
        "",
        f"Held-out faces (`flmcore.models.predict_dataset`, landmark boxes, {t_pred:.1f} s; "
        "`flmcore.evaluate.evaluate`):",
        "",
        res.to_markdown().rstrip(),
        "",
        "![PIPNet CED on the held-out faces](pipnet_ced.png)",
        "",
        "Neighbour merges of the same network outputs (`model.network.decode(outputs, merge=...)`; "
        "NME in % of the inter-ocular distance, FR in %):",
        "",
        "| merge | NME io (%) | FR@10 (%) | AUC@10 | decode (ms) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Exact vs official padded merge: mean difference {diff:.2f} px on these {size}x{size} crops.",
        "",
        "![PIPNet predictions and neighbour votes](pipnet_votes.png)",
        "",
    ])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flmcore.train.demos.pipnet", description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="demo_out", help="folder for the figures, config, run and report")
    ap.add_argument("--data", default=None,
                    help="an iBUG folder (images + .pts) or a folder holding helen_pairs.npz (default: bundled sample)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    from flmcore.train.demos import DemoContext

    ctx = DemoContext(out_dir=Path(args.out), data_dir=Path(args.data) if args.data else None, quick=args.quick)
    text = run(ctx)
    (Path(args.out) / "pipnet.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

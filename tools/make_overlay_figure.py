"""Make docs/_static/predict_overlay.png: the shipped model on real photos with several small faces.

    python tools/make_overlay_figure.py [--data ../shared/data/dlib_examples_faces]

Runs the same calls as ``flmcore predict`` (detector -> mapped box -> PIPNet -> one refinement
pass) on two PASCAL VOC photos of dlib's examples and draws the points with matplotlib.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dlib_examples_faces"))
    ap.add_argument("--out", default=str(REPO / "docs" / "_static" / "predict_overlay.png"))
    ap.add_argument("--photos", nargs="+", default=["2008_002470.jpg", "2009_004587.jpg"])
    ap.add_argument("--model", default="ibug68")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore._plotting import figure_style, save_figure
    from flmcore.datasets import load_image
    from flmcore.detect import available_detectors
    from flmcore.models import load_model, predict_image

    model = load_model(args.model, device="cpu")
    det = "auto" if available_detectors() else None
    with figure_style():
        fig, axes = plt.subplots(1, len(args.photos), figsize=(6.2 * len(args.photos), 4.8))
        for ax, name in zip(np.atleast_1d(axes), args.photos):
            img = load_image(Path(args.data) / name)
            out = predict_image(model, img, detector=det)
            ax.imshow(img)
            for b, p in zip(out["boxes"], out["points"]):
                ax.add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, ec="#1f9bff", lw=0.8))
                ax.plot(p[:, 0], p[:, 1], "o", ms=1.6, mfc="#ff3030", mec="none")
            ax.set_title(f"{name}: {len(out['points'])} faces ({img.shape[1]} x {img.shape[0]} px)")
            ax.axis("off")
        fig.suptitle("flmcore predict (shipped ibug68 model): detector box -> landmark box -> PIPNet "
                     "-> 1 refinement pass; red: 68 points, blue: landmark box of the points")
        fig.tight_layout()
        save_figure(fig, args.out)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Build the small real-data sample carried in flmcore/data/sample/ from ../shared/data.

Usage (from the repository root)::

    python tools/make_sample.py [--data ../shared/data] [--out flmcore/data/sample] [--figures docs/_static]

Writes (np.savez_compressed; shapes float32; images uint8, stored losslessly
delta-coded as ``images_delta2d``, see :func:`delta_encode`):

helen_pairs.npz
    The 234 HELEN trainset faces that carry both the iBUG-68 (300-W) and the
    29-point (Zhou et al.) labels: 128x128 grayscale crops of the small
    images of helen_29pt_zhou, ``shapes68`` / ``shapes29`` in crop pixels
    (0-based), ``names``, ``boxes`` (crop square ``x0, y0, side`` in the small
    image) and ``scale68`` (small / original image size, x and y).
helen_unlabelled.npz
    The other 114 faces of helen_29pt_zhou, cropped the same way from a box
    predicted from the 29-point shape, with ``shapes29`` (hide them for
    self-training, use them to evaluate).
helen68_shapes.npz
    All 870 iBUG-68 shapes of 300w_helen_trainset_68pt in original image
    pixels (0-based), ``names``, ``sizes`` (width, height), ``has29``.
aflw2000.npz
    AFLW2000-3D: ``pts21`` (AFLW-21, NaN = missing), ``pts68`` (manual
    re-annotation), ``yaw`` (absolute yaw in
    degrees from the AFLW labels, 3DDFA's ``new.pose``), ``roi_box``
    (x1, y1, x2, y2) in the 450x450 image frame.

Crop procedure: the square box is centred on the bounding box of the 68-point
shape (mapped into the small image), side = 1.3 x its longer edge, rounded to
integer pixels; the image is zero-padded where the box leaves it, and the
square is resized to 128x128 with OpenCV's INTER_AREA.  A point ``x`` of the
small image maps to ``(x - x0 + 0.5) * 128 / side - 0.5`` (pixel centres).
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from flmcore import io  # noqa: E402

CROP = 128
ENLARGE = 1.3


def square_box(shape: np.ndarray, enlarge: float = ENLARGE):
    """Integer square ``(x0, y0, side)`` around ``shape`` (P, 2), enlarged."""
    lo, hi = np.nanmin(shape, axis=0), np.nanmax(shape, axis=0)
    centre = (lo + hi) / 2.0
    side = int(round(enlarge * float((hi - lo).max())))
    x0, y0 = (np.round(centre - side / 2.0)).astype(int)
    return int(x0), int(y0), side


def crop_square(gray: np.ndarray, box, size: int = CROP) -> np.ndarray:
    """Crop ``box`` = (x0, y0, side) from a uint8 image (zero padding), resize to size x size."""
    import cv2

    x0, y0, side = box
    h, w = gray.shape
    out = np.zeros((side, side), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = gray[sy0:sy1, sx0:sx1]
    return cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)


def to_crop(shape: np.ndarray, box, size: int = CROP) -> np.ndarray:
    x0, y0, side = box
    return (shape - np.array([x0, y0]) + 0.5) * (size / side) - 0.5


def delta_encode(images: np.ndarray) -> np.ndarray:
    """Lossless 2-D delta coding of uint8 images (B, H, W), modulo 256.

    Differences along x then along y compress about a third better with zlib
    than raw pixels; :func:`flmcore.data.load_sample` undoes it with two uint8
    cumulative sums.
    """
    d = np.diff(images.astype(np.int16), axis=2, prepend=0)
    d = np.diff(d, axis=1, prepend=0)
    return d.astype(np.uint8)  # two's complement wrap = modulo 256


def gray_uint8(path: Path) -> np.ndarray:
    g = io.read_image(path, gray=True)
    return np.clip(np.round(g * 255.0), 0, 255).astype(np.uint8)


def build(data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    zhou = io.read_helen_zhou_mat(data / "helen_29pt_zhou" / "helen.mat")
    sizes = {}
    with open(data / "300w_helen_trainset_68pt" / "image_sizes.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            sizes[r["image"]] = (int(r["width"]), int(r["height"]), r["has_29pt_zhou_annotation"] == "1")

    # -- helen68_shapes: all 870 shapes -------------------------------------------------
    pts_dir = data / "300w_helen_trainset_68pt" / "pts"
    names68 = sorted(p.name for p in pts_dir.glob("*.pts"))
    shapes68 = np.stack([io.read_pts(pts_dir / n, n_points=68) for n in names68])
    img_names = [n[:-4] + ".jpg" for n in names68]
    np.savez_compressed(
        out / "helen68_shapes.npz",
        shapes=shapes68.astype(np.float32),
        names=np.array(img_names),
        sizes=np.array([sizes[n][:2] for n in img_names], dtype=np.int32),
        has29=np.array([sizes[n][2] for n in img_names], dtype=bool),
    )
    by_name68 = dict(zip(img_names, shapes68))

    # -- helen_pairs ----------------------------------------------------------------------
    pair_imgs, pair68, pair29, pair_names, pair_boxes, pair_scale = [], [], [], [], [], []
    rest = []
    for name, s29 in zip(zhou["names"], zhou["shapes"]):
        gray = gray_uint8(data / "helen_29pt_zhou" / "img" / name)
        if name not in by_name68:
            rest.append((name, s29, gray))
            continue
        w, h, _ = sizes[name]
        scale = np.array([gray.shape[1] / w, gray.shape[0] / h])
        s68 = (by_name68[name] + 0.5) * scale - 0.5  # pixel-centre mapping into the small image
        box = square_box(s68)
        pair_imgs.append(crop_square(gray, box))
        pair68.append(to_crop(s68, box))
        pair29.append(to_crop(s29, box))
        pair_names.append(name)
        pair_boxes.append(box)
        pair_scale.append(scale)
    np.savez_compressed(
        out / "helen_pairs.npz",
        images_delta2d=delta_encode(np.stack(pair_imgs)),
        shapes68=np.stack(pair68).astype(np.float32),
        shapes29=np.stack(pair29).astype(np.float32),
        names=np.array(pair_names),
        boxes=np.array(pair_boxes, dtype=np.int32),
        scale68=np.array(pair_scale, dtype=np.float64),
    )

    # -- helen_unlabelled: box predicted from the 29-point shape ----------------------------
    # calibrate on the pairs: 68-box centre and size as a function of the 29-point box
    b68, b29 = [], []
    for name, box, s29 in zip(pair_names, pair_boxes, [z for n, z in zip(zhou["names"], zhou["shapes"])
                                                        if n in by_name68]):
        x0, y0, side = box
        b68.append([x0 + side / 2.0, y0 + side / 2.0, side])
        lo, hi = s29.min(0), s29.max(0)
        b29.append([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, (hi - lo).max()])
    b68, b29 = np.array(b68), np.array(b29)
    ratio = float(np.median(b68[:, 2] / b29[:, 2]))
    shift = np.median((b68[:, :2] - b29[:, :2]) / b29[:, 2:3], axis=0)
    un_imgs, un29, un_names, un_boxes = [], [], [], []
    for name, s29, gray in rest:
        lo, hi = s29.min(0), s29.max(0)
        ext = float((hi - lo).max())
        centre = (lo + hi) / 2 + shift * ext
        side = int(round(ratio * ext))
        x0, y0 = np.round(centre - side / 2.0).astype(int)
        box = (int(x0), int(y0), side)
        un_imgs.append(crop_square(gray, box))
        un29.append(to_crop(s29, box))
        un_names.append(name)
        un_boxes.append(box)
    np.savez_compressed(
        out / "helen_unlabelled.npz",
        images_delta2d=delta_encode(np.stack(un_imgs)),
        shapes29=np.stack(un29).astype(np.float32),
        names=np.array(un_names),
        boxes=np.array(un_boxes, dtype=np.int32),
    )

    # -- aflw2000 ---------------------------------------------------------------------------
    a = data / "aflw_3ddfa_multischeme"
    np.savez_compressed(
        out / "aflw2000.npz",
        pts21=io.read_3ddfa_npy(a / "AFLW2000-3D.pts21.npy", n_points=21).astype(np.float32),
        pts68=io.read_3ddfa_npy(a / "AFLW2000-3D-Reannotated.pts68.npy", n_points=68).astype(np.float32),
        yaw=np.load(a / "AFLW2000-3D-new.pose.npy").astype(np.float32),
        roi_box=np.load(a / "AFLW2000-3D_crop.roi_box.npy").astype(np.float32),
    )
    print(f"pairs {len(pair_names)}, unlabelled {len(un_names)} (box ratio {ratio:.3f}, shift {shift.round(3)}), "
          f"helen68 {len(names68)}")
    for f in sorted(out.glob("*.npz")):
        print(f"{f.name}: {f.stat().st_size / 1e6:.2f} MB")


def figures(data: Path, out_dir: Path) -> None:
    """Draw docs/_static/data_schemes.png (schemes on PIPNet mean faces) and data_sample.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flmcore import schemes
    from flmcore.data import load_sample

    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [("data_300W", "ibug68"), ("WFLW", "wflw98"), ("LaPa", "lapa106"), ("COFW", "cofw29"),
              ("AFLW", "aflw19")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.4))
    for ax, (fname, name) in zip(axes, panels):
        s = schemes.get_scheme(name)
        m = np.loadtxt(data / "pipnet_meanfaces" / f"{fname}_meanface.txt").reshape(-1, 2)
        for c in s.curves:
            ix = list(c.indices) + ([c.indices[0]] if c.closed else [])
            ax.plot(m[ix, 0], m[ix, 1], "-", lw=1)
        ax.plot(m[:, 0], m[:, 1], "k.", ms=2)
        cor = list(s.corners)
        ax.plot(m[cor, 0], m[cor, 1], "rs", ms=3, mfc="none", mew=0.8)
        eyes = s.eye_centres(m)
        ax.plot(eyes[:, 0], eyes[:, 1], "g+", ms=8, mew=1.2)
        io_pts = m[list(s.interocular)]
        ax.plot(io_pts[:, 0], io_pts[:, 1], "m--", lw=0.6)
        ax.set_title(f"{name} ({len(s.curves)} curves)", fontsize=9)
        ax.set_aspect("equal")
        ax.invert_yaxis()
        ax.axis("off")
    fig.suptitle("curves (lines), corners (red squares), eye centres (green +), inter-ocular (magenta)",
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "data_schemes.png", dpi=70)
    plt.close(fig)

    p, u = load_sample("helen_pairs"), load_sample("helen_unlabelled")
    fig, axes = plt.subplots(2, 6, figsize=(9, 3.3))
    for k, ax in enumerate(axes.flat):
        if k < 8:
            i = int(np.linspace(0, 233, 8)[k])
            ax.imshow(p["images"][i], cmap="gray", vmin=0, vmax=255)
            ax.plot(*p["shapes68"][i].T, "c.", ms=1.5)
            ax.plot(*p["shapes29"][i].T, "r.", ms=1.5)
        else:
            i = int(np.linspace(0, 113, 4)[k - 8])
            ax.imshow(u["images"][i], cmap="gray", vmin=0, vmax=255)
            ax.plot(*u["shapes29"][i].T, "r.", ms=1.5)
            ax.set_title("unlabelled", fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "data_sample.png", dpi=70)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=REPO / "flmcore" / "data" / "sample")
    ap.add_argument("--figures", type=Path, default=None,
                    help="also draw the documentation figures into this folder (e.g. docs/_static)")
    args = ap.parse_args(argv)
    build(args.data, args.out)
    if args.figures is not None:
        figures(args.data, args.figures)


if __name__ == "__main__":
    main()

"""Benchmark flmcore.sift.shape_indexed_sift against OpenCV's SIFT.compute at the same keypoints.

1000 real face crops (the bundled HELEN crops resized to 80, 140 and 256 px and tiled
to 1000) x 68 iBUG landmarks.  The descriptor window is 25 % of the face side; OpenCV
gets ``cv2.KeyPoint(x, y, size=window / 6, angle=0)`` (its cell is ``1.5 size``; see
flmcore.sift).  flmcore and OpenCV run alternately in one process, with 1 and 2 threads
(``cv2.setNumThreads``).  Times include everything each library needs from the uint8
image (OpenCV builds its octave-0 Gaussian layers; flmcore smooths and takes gradients).

scikit-image's ``SIFT`` cannot describe given points (it only has ``detect_and_extract``,
which runs its own scale-space detector); its time per image on the same crops is printed
for context only and is NOT comparable (different keypoints and counts).

Run: ``python -m bench.bench_sift [--quick]``.
"""
from __future__ import annotations

import argparse

import numpy as np

from bench._common import median_times, print_table, write_json


def _faces(n: int, side: int):
    from flmcore.data import load_sample

    d = load_sample("helen_pairs")
    imgs, shp = d["images"], d["shapes68"]
    scale = side / imgs.shape[1]
    try:
        import cv2

        res = np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in imgs])
    except ImportError:  # pragma: no cover
        from scipy import ndimage

        res = np.stack([ndimage.zoom(im, scale, order=1)[:side, :side] for im in imgs])
    pts = (shp + 0.5) * scale - 0.5
    reps = int(np.ceil(n / len(imgs)))
    return np.tile(res, (reps, 1, 1))[:n], np.tile(pts, (reps, 1, 1))[:n]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 images, fewer repeats")
    ap.add_argument("--n", type=int, default=None, help="number of images (default 1000)")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)
    from flmcore.sift import shape_indexed_sift

    n = args.n or (100 if args.quick else 1000)
    repeat = 3 if args.quick else 5
    try:
        import cv2
    except ImportError:
        cv2 = None
    rows = []
    for side in (80, 140, 256):
        imgs, pts = _faces(n, side)
        window = 0.25 * side
        if cv2 is not None:
            sift = cv2.SIFT_create()
            kps = [[cv2.KeyPoint(float(x), float(y), window / 6.0, 0.0) for x, y in p] for p in pts]

            def run_cv():
                for im, kp in zip(imgs, kps):
                    sift.compute(im, kp)
        for nt in (1, 2):
            fns = {"flmcore": lambda nt=nt: shape_indexed_sift(imgs, pts, window=window, num_threads=nt)}
            if cv2 is not None:
                prev = cv2.getNumThreads()
                cv2.setNumThreads(nt)
                fns["opencv"] = run_cv
            t = median_times(fns, repeat=repeat, warmup=1)
            if cv2 is not None:
                cv2.setNumThreads(prev)
            row = {"side": side, "threads": nt, "window_px": window,
                   "flmcore_img_per_s": n / t["flmcore"], "flmcore_ms_per_img": 1e3 * t["flmcore"] / n}
            if cv2 is not None:
                row.update(opencv_img_per_s=n / t["opencv"], opencv_ms_per_img=1e3 * t["opencv"] / n,
                           speedup_vs_opencv=t["opencv"] / t["flmcore"])
            else:
                row.update(opencv_img_per_s="skipped (cv2 not installed)")
            rows.append(row)
    # scikit-image: detect_and_extract only (context, not comparable)
    sk = {}
    try:
        from skimage.feature import SIFT as SkSIFT

        imgs, _ = _faces(20 if args.quick else 50, 140)
        ext = SkSIFT()

        def run_sk():
            for im in imgs:
                try:
                    ext.detect_and_extract(im)
                except RuntimeError:
                    pass
        t = median_times({"skimage": run_sk}, repeat=1, warmup=0)["skimage"]
        sk = {"skimage_detect_and_extract_ms_per_img_140": 1e3 * t / len(imgs),
              "note": "own detector and keypoints; cannot describe given points; not comparable"}
    except ImportError:
        sk = {"skimage": "skipped (scikit-image not installed)"}
    print_table(rows)
    print("scikit-image SIFT:", sk)
    payload = {"n_images": n, "n_points": 68, "rows": rows, "skimage": sk}
    path = write_json("sift", payload, args.out)
    print(f"wrote {path}")
    return payload


if __name__ == "__main__":
    main()

"""Face detectors on the 300-W validation crops: recall, box quality against the landmark box, time.

    python -m bench.bench_detect            # measure (validation faces), write bench/results/detect.json
    python -m bench.bench_detect --quick    # the first 40 validation faces
    python -m bench.bench_detect --fit --methods dlib                  # refit the BoxMappers on the
    python -m bench.bench_detect --fit --methods opencv --fit-stride 4 # training faces; prints
                                                                       # MAPPER_COEFS for flmcore/detect.py

Data: ``LandmarkDataset.from_folder(<shared>/data/300w_train_crops).split_by_name(0.1)`` (the
project's fixed split; 198 validation faces, 1,814 training faces).  These are 2x-margin crops of
the 300-W photos (at most 448 px), so each face is large (median landmark box 224 px) and centred:
recall here is an upper bound of what a detector finds on full photos.  The "small" rows shrink
each crop by ``--small-scale`` (default 0.25: median landmark box 56 px) to test upsampling.

A face is found when a detection matches its landmark box (IoU >= 0.3, or the detection's centre
inside it; :func:`flmcore.detect.match_box`).  For matched faces: IoU of the detector box (and of
the mapped box, ``landmark_boxes=True``) with the landmark box, the centre offset (distance between
centres / landmark box size, where size = sqrt(w h)) and the scale ratio sqrt(area_det / area_lm).
Time per image is the median over the faces of one detect_faces call (one thread): wall time and
the thread's CPU time (the honest number on a shared machine); a second
table times flmcore's call against the plain library call (dlib ``detector(img, 0)``, OpenCV
``CascadeClassifier.detectMultiScale`` frontal only) on the same images, alternating.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from bench._common import median_times, print_table, write_json

from flmcore.detect import BoxMapper, available_detectors, detect_faces, match_box

DATA = Path(os.environ.get("FLMCORE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

#: (name, method, keyword arguments) of the configurations measured.
CONFIGS = [
    ("dlib", "dlib", {}),
    ("dlib up1", "dlib", {"upsample": 1}),
    ("opencv", "opencv", {}),
    ("opencv frontal", "opencv", {"profile": False}),
]


def _single_thread():
    try:
        import cv2
        cv2.setNumThreads(1)
    except ImportError:
        pass


def load_split(root: Path):
    from flmcore.datasets import LandmarkDataset

    ds = LandmarkDataset.from_folder(root / "300w_train_crops")
    return ds.split_by_name(0.1)


def shrink(image: np.ndarray, box: np.ndarray, scale: float):
    """Resize ``image`` by ``scale`` (PIL box filter); the box follows the pixel-centre rule."""
    from PIL import Image

    h, w = image.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    im = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BOX))
    sx, sy = nw / w, nh / h
    b = np.array([(box[0] + 0.5) * sx - 0.5, (box[1] + 0.5) * sy - 0.5,
                  (box[2] + 0.5) * sx - 0.5, (box[3] + 0.5) * sy - 0.5])
    return im, b


def _quality(det: np.ndarray, lm: np.ndarray) -> Dict[str, float]:
    from flmcore.detect import box_iou

    size = np.sqrt((lm[2] - lm[0]) * (lm[3] - lm[1]))
    cd, cl = (det[:2] + det[2:]) / 2, (lm[:2] + lm[2:]) / 2
    return {"iou": float(box_iou(det, lm)[0, 0]),
            "centre": float(np.hypot(*(cd - cl)) / size),
            "scale": float(np.sqrt((det[2] - det[0]) * (det[3] - det[1])) / size)}


def evaluate(images: List[np.ndarray], boxes: np.ndarray, method: str, kwargs: dict) -> dict:
    """Recall, box quality (raw and mapped) and time per image of one configuration."""
    mapper = BoxMapper.for_detector(method)
    found, times, cpu, raw, mapped, n_det, matched = 0, [], [], [], [], [], []
    for k, (img, lm) in enumerate(zip(images, boxes)):
        t0, c0 = time.perf_counter(), time.thread_time()
        b, _ = detect_faces(img, method, **kwargs)
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
        n_det.append(len(b))
        j = match_box(b, lm)
        if j is None:
            continue
        found += 1
        matched.append([k] + b[j].tolist())
        raw.append(_quality(b[j], lm))
        mapped.append(_quality(mapper.predict(b[j]), lm))

    def med(rows, key):
        return float(np.median([r[key] for r in rows])) if rows else float("nan")

    def mean(rows, key):
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")

    return {"faces": len(images), "recall": found / max(1, len(images)),
            "false_pos_per_img": float(np.mean(n_det)) - found / max(1, len(images)),
            "iou_med": med(raw, "iou"), "centre_med": med(raw, "centre"), "scale_med": med(raw, "scale"),
            "scale_std": float(np.std([r["scale"] for r in raw])) if raw else float("nan"),
            "mapped_iou_med": med(mapped, "iou"), "mapped_iou_mean": mean(mapped, "iou"),
            "mapped_centre_med": med(mapped, "centre"), "mapped_scale_med": med(mapped, "scale"),
            "ms_per_img": 1e3 * float(np.median(times)), "cpu_ms_per_img": 1e3 * float(np.median(cpu)),
            "matched": matched}  # [face index, x0, y0, x1, y1] of each face found


def fit_mappers(train, methods: List[str], stride: int = 1) -> Dict[str, dict]:
    """Fit a BoxMapper per detector on every ``stride``-th training face (detector defaults, best match)."""
    out = {}
    idx = range(0, len(train), stride)
    n = len(idx)
    for method in methods:
        det, lms = [], []
        t0 = time.perf_counter()
        for i in idx:
            item = train[i]
            b, _ = detect_faces(item["image"], method)
            j = match_box(b, item["box"])
            if j is not None:
                det.append(b[j])
                lms.append(item["box"])
        m = BoxMapper().fit(np.array(det), np.array(lms))
        out[method] = {"coef": np.round(m.coef_, 5).tolist(), "n": m.n_samples_, "faces": n, "stride": stride,
                       "residual_std": np.round(m.residual_std_, 4).tolist(),
                       "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{method}: matched {m.n_samples_}/{n} training faces, residual std {out[method]['residual_std']}",
              flush=True)
    print("\nMAPPER_COEFS = {")
    for method, r in out.items():
        rows = ", ".join(str(tuple(row)) for row in r["coef"])
        print(f'    "{method}": {{"coef": ({rows},), "n": {r["n"]}}},')
    print("}")
    return out


def plain_timing(images: List[np.ndarray], methods: List[str], repeat: int) -> List[dict]:
    """flmcore's detect_faces vs the plain library call on the same images, alternating."""
    rows = []
    imgs = images[:5]
    if "dlib" in methods:
        import dlib

        det = dlib.get_frontal_face_detector()
        t = median_times({"flmcore": lambda: [detect_faces(im, "dlib") for im in imgs],
                          "plain": lambda: [det(im, 0) for im in imgs]}, repeat=repeat)
        rows.append({"detector": "dlib HOG", "flmcore_ms": 1e3 * t["flmcore"] / len(imgs),
                     "plain_ms": 1e3 * t["plain"] / len(imgs), "ratio": t["flmcore"] / t["plain"]})
    if "opencv" in methods:
        import cv2

        casc = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_alt2.xml")
        grays = [cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in imgs]
        t = median_times({"flmcore": lambda: [detect_faces(im, "opencv", profile=False) for im in imgs],
                          "plain": lambda: [casc.detectMultiScale(g, 1.1, 3, minSize=(20, 20)) for g in grays]},
                         repeat=repeat)
        rows.append({"detector": "OpenCV Haar frontal", "flmcore_ms": 1e3 * t["flmcore"] / len(imgs),
                     "plain_ms": 1e3 * t["plain"] / len(imgs), "ratio": t["flmcore"] / t["plain"]})
    return rows


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_detect", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="the first 40 validation faces, fewer repeats")
    ap.add_argument("--fit", action="store_true", help="refit the box mappers on the training faces")
    ap.add_argument("--fit-stride", type=int, default=1, help="fit on every N-th training face (default 1: all)")
    ap.add_argument("--methods", nargs="+", choices=("dlib", "opencv"), default=None,
                    help="detectors to run (default: every installed one)")
    ap.add_argument("--val-stride", type=int, default=1,
                    help="measure every N-th validation face (default 1: all 198)")
    ap.add_argument("--small-scale", type=float, default=0.25, help="shrink factor of the small-face rows")
    ap.add_argument("--data", default=str(DATA), help="folder holding 300w_train_crops")
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/detect.json)")
    args = ap.parse_args(argv)
    _single_thread()
    methods = [m for m in available_detectors() if args.methods is None or m in args.methods]
    skipped = [m for m in ("dlib", "opencv") if m not in available_detectors()]
    for m in skipped:
        print(f"skipped: {m} (not installed)")
    root = Path(args.data)
    if not (root / "300w_train_crops").is_dir():
        print(f"skipped: {root / '300w_train_crops'} not found (set --data or FLMCORE_SHARED_DATA)")
        return {"skipped": "no data"}
    train, val = load_split(root)
    result: dict = {"skipped": skipped}
    if args.fit:
        result["fit"] = fit_mappers(train, methods, args.fit_stride)
        write_json("detect_fit_" + "_".join(methods), result, args.out)
        return result
    idx = np.arange(0, 40) if args.quick else np.arange(0, len(val), args.val_stride)
    images = [val[int(i)]["image"] for i in idx]
    boxes = val.boxes[idx]
    rows = []
    for label, method, kw in CONFIGS:
        if method not in methods:
            continue
        r = evaluate(images, boxes, method, kw)
        rows.append({"config": label, "method": method, **r})
        print(f"{label}: {r['recall']:.3f} recall, {r['ms_per_img']:.1f} ms/img", flush=True)
    small = [shrink(im, b, args.small_scale) for im, b in zip(images, boxes)]
    sm_imgs, sm_boxes = [s[0] for s in small], np.array([s[1] for s in small])
    med_side = float(np.median(np.maximum(sm_boxes[:, 2] - sm_boxes[:, 0], sm_boxes[:, 3] - sm_boxes[:, 1])))
    for label, method, kw in [("dlib small", "dlib", {}), ("dlib small up1", "dlib", {"upsample": 1}),
                              ("dlib small up2", "dlib", {"upsample": 2}),
                              ("opencv small", "opencv", {}), ("opencv small up1", "opencv", {"upsample": 1})]:
        if method not in methods:
            continue
        r = evaluate(sm_imgs, sm_boxes, method, kw)
        rows.append({"config": label, "method": method, **r})
        print(f"{label}: {r['recall']:.3f} recall, {r['ms_per_img']:.1f} ms/img", flush=True)
    cols = ["config", "faces", "recall", "false_pos_per_img", "iou_med", "centre_med", "scale_med", "scale_std",
            "mapped_iou_med", "mapped_iou_mean", "mapped_centre_med", "mapped_scale_med", "ms_per_img",
            "cpu_ms_per_img"]
    print(f"\nvalidation faces (300w_train_crops, split_by_name(0.1)[1]); small rows shrunk x{args.small_scale} "
          f"(median landmark box {med_side:.0f} px)")
    print_table(rows, cols)
    timing = plain_timing(images, methods, repeat=3 if args.quick else 5)
    print("\nflmcore.detect_faces vs the plain library call (5 images, ms per image)")
    print_table(timing)
    result.update({"rows": rows, "small_scale": args.small_scale, "small_median_side": med_side,
                   "plain_timing": timing})
    path = write_json("detect", result, args.out)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()

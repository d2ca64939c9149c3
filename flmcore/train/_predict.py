"""Landmarks on photos: face boxes (detector, file or yours) -> crops -> model -> image pixels.

The output format (written by ``flmcore predict`` and :func:`write_predictions`)::

    {"images": [{"file": "<path as given>",
                 "faces": [{"box": [x0, y0, x1, y1], "score": s, "points": [[x, y], ...]}]}]}

``points`` and ``box`` are in image pixels, 0-based, the centre of the top-left
pixel at (0, 0) (EXIF orientation applied: the image as displayed).  ``box``
is the *landmark box* of the predicted points (their tight box; the 300-W
convention), so an output file can be passed back as ``boxes=`` and the next
run crops exactly where this one ended.  ``score`` is the detector's score
(``null`` for boxes given by the user).  An image with no face has
``"faces": []``; an image that cannot be read has ``"faces": []`` and an
``"error"`` message, and the other images go on.

Boxes given by the user (``boxes=``) are taken as landmark boxes
(``box_kind="landmark"``: the tight box of the 68 points, as in the 300-W
annotations); a file whose faces carry ``points`` uses the landmark box of
those points.  Boxes of a known detector can be passed with
``box_kind="opencv"`` / ``"dlib"``: they are mapped to landmark boxes first.

With boxes from a detector, the face is predicted twice by default
(``refine=1``): the second pass crops around the landmark box of the first
pass's points, which removes most of the detector's box error.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .._validate import check_array, check_int
from ..crop import crop_image, crop_transform, landmark_box, uncrop_points
from ..datasets import IMAGE_EXTENSIONS, load_image, read_boxes_file

__all__ = ["predict_image", "predict_batch", "predict_files", "predict_dataset", "write_predictions", "read_boxes_file", "draw_overlay",
           "expand_inputs"]

PathLike = Union[str, os.PathLike]


def _predict_boxes(lm, images: List[np.ndarray], boxes: List[np.ndarray], batch_size: int) -> List[np.ndarray]:
    """Predict every face of several images in shared batches; returns per-image (K, P, 2)."""
    crops, Ts, owner = [], [], []
    for i, (img, bx) in enumerate(zip(images, boxes)):
        for b in bx:
            T = crop_transform(b, lm.size, margin=lm.margin)
            crops.append(crop_image(img, T, lm.size))
            Ts.append(T)
            owner.append(i)
    out = [np.zeros((0, lm.scheme.n_points, 2)) for _ in images]
    if not crops:
        return out
    pts = uncrop_points(lm.predict_crops(np.stack(crops), batch_size), np.stack(Ts))
    owner = np.asarray(owner)
    for i in range(len(images)):
        out[i] = pts[owner == i]
    return out


def _landmark_boxes_of(points: np.ndarray) -> np.ndarray:
    return landmark_box(points) if len(points) else np.zeros((0, 4))


def find_faces(image: np.ndarray, detector: str = "auto", *, max_side_upsample: int = 1600):
    """Landmark boxes ``(K, 4)`` and scores ``(K,)`` of the faces in a photo, with fallbacks.

    ``detector="auto"`` is a cascade of the installed detectors: the default
    detector of :func:`flmcore.detect.detect_faces` first; if it finds no face,
    the same at 2x (``upsample=1``, for photos whose longer side is at most
    ``max_side_upsample`` px: dlib's HOG window misses faces under ~80 px);
    then every other installed detector.  A named detector runs alone (with
    the same upsampling retry).  Boxes are mapped to landmark boxes.
    """
    from ..detect import available_detectors, detect_faces

    def run(method, up):
        b, s = detect_faces(image, method=method, landmark_boxes=True, upsample=up)
        return np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(s, dtype=np.float64).reshape(-1)

    methods = [detector] if detector != "auto" else (["auto"] + [m for m in available_detectors()][1:])
    small = max(image.shape[:2]) <= max_side_upsample
    for m in methods:
        for up in ((0, 1) if small else (0,)):
            b, s = run(m, up)
            if len(b):
                return b, s
    return np.zeros((0, 4)), np.zeros(0)


def predict_image(model, image, boxes=None, *, detector: str = "auto", box_kind: str = "landmark",
                  refine: Optional[int] = None, batch_size: int = 32) -> Dict[str, np.ndarray]:
    """Landmarks of every face in one photo.

    Parameters
    ----------
    model : Landmarker
        E.g. ``flmcore.load_model("ibug68")``.
    image : array_like (H, W[, 3|4]) or path
        The photo (any size; a path is read with :func:`flmcore.datasets.load_image`).
    boxes : array_like (K, 4), optional
        Face boxes ``[x0, y0, x1, y1]`` in image pixels; ``None`` runs the detector.
    detector : str
        :func:`flmcore.detect.detect_faces` method when ``boxes`` is None;
        ``"auto"`` tries the installed detectors in turn (:func:`find_faces`).
    box_kind : str
        What ``boxes`` are: ``"landmark"`` (tight landmark boxes) or a detector
        name whose boxes are mapped to landmark boxes.
    refine : int, optional
        Extra passes cropped from the previous pass's points.  Default: 1 for
        detector boxes, 0 for landmark boxes.
    batch_size : int

    Returns
    -------
    dict
        ``boxes`` (K, 4) landmark boxes of the predicted points, ``scores``
        (K,) (NaN for user boxes), ``points`` (K, P, 2) image pixels.

    Examples
    --------
    >>> from flmcore.models import Landmarker, build_network
    >>> net = build_network({"backbone": "resnet18", "width": 0.125, "input_size": 64, "n_neighbors": 2}, "mtfl5",
    ...                     mean_shape=[[20, 20], [44, 20], [32, 32], [24, 44], [40, 44]])
    >>> lm = Landmarker(net, {"input_size": 64, "backbone": "resnet18", "width": 0.125, "n_neighbors": 2}, "mtfl5", device="cpu")
    >>> out = predict_image(lm, np.zeros((100, 80, 3), np.uint8), [[10, 10, 60, 70]])
    >>> out["points"].shape, out["scores"].shape
    ((1, 5, 2), (1,))
    """
    img = load_image(image) if isinstance(image, (str, os.PathLike)) else image
    res = predict_batch(model, [img], [boxes], detector=detector, box_kind=box_kind, refine=refine,
                        batch_size=batch_size)
    return res[0]


def predict_batch(model, images: Sequence[np.ndarray], boxes: Sequence[Optional[np.ndarray]], *,
                  detector: str = "auto", box_kind: str = "landmark", refine: Optional[int] = None,
                  batch_size: int = 32) -> List[Dict[str, np.ndarray]]:
    """:func:`predict_image` for several photos, with the faces of all of them in shared batches."""
    from ..crop import as_rgb

    batch_size = check_int(batch_size, "batch_size", min_value=1)
    imgs = [as_rgb(im, "image") for im in images]
    lboxes, scores, from_detector = [], [], []
    for img, bx in zip(imgs, boxes):
        if bx is None:
            b, s = find_faces(img, detector)
            lboxes.append(b)
            scores.append(s)
            from_detector.append(True)
        else:
            b = check_array(bx, "boxes", ndim=2, allow_empty=True)
            if b.shape[1:] != (4,):
                raise ValueError(f"boxes must have shape (K, 4) of [x0, y0, x1, y1], got {b.shape}")
            if box_kind != "landmark":
                from ..detect import BoxMapper, METHODS

                if box_kind not in METHODS or box_kind == "auto":
                    raise ValueError(f"box_kind must be 'landmark' or a detector name "
                                     f"({', '.join(m for m in METHODS if m != 'auto')}), got {box_kind!r}")
                if len(b):
                    b = BoxMapper.for_detector(box_kind).predict(b)
            lboxes.append(b)
            scores.append(np.full(len(b), np.nan))
            from_detector.append(box_kind != "landmark")
    pts = _predict_boxes(model, imgs, lboxes, batch_size)
    n_ref = [(1 if d else 0) if refine is None else check_int(refine, "refine", min_value=0) for d in from_detector]
    for r in range(max(n_ref, default=0)):
        todo = [i for i in range(len(imgs)) if n_ref[i] > r and len(pts[i])]
        if not todo:
            break
        new = _predict_boxes(model, [imgs[i] for i in todo], [_landmark_boxes_of(pts[i]) for i in todo], batch_size)
        for i, p in zip(todo, new):
            pts[i] = p
    return [{"boxes": _landmark_boxes_of(p).reshape(-1, 4), "scores": s, "points": p} for p, s in zip(pts, scores)]


def expand_inputs(inputs: Sequence[PathLike]) -> List[str]:
    """Image paths from files and folders (folders: their images, sorted, not recursive)."""
    out = []
    for x in inputs:
        p = Path(x)
        if p.is_dir():
            out += sorted(os.fspath(q) for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(os.fspath(x))
    return out


def draw_overlay(image: np.ndarray, points: np.ndarray, path: PathLike, boxes: Optional[np.ndarray] = None) -> None:
    """Write a PNG of ``image`` with the landmarks (and boxes) drawn, dot radius ~0.4 % of the image size."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(np.asarray(image, dtype=np.uint8)).convert("RGB")
    d = ImageDraw.Draw(im)
    r = max(1.5, 0.004 * max(im.size))
    for k, face in enumerate(np.asarray(points).reshape(-1, *np.shape(points)[-2:]) if np.size(points) else []):
        if boxes is not None and len(boxes) > k:
            d.rectangle([float(v) for v in boxes[k]], outline=(0, 160, 255), width=max(1, int(r / 2)))
        for x, y in face:
            d.ellipse([x - r, y - r, x + r, y + r], fill=(255, 40, 40), outline=(255, 255, 255))
    im.save(os.fspath(path))


def predict_files(model, inputs: Sequence[PathLike], *, boxes: Optional[PathLike] = None, detector: str = "auto",
                  box_kind: str = "landmark", refine: Optional[int] = None, overlay_dir: Optional[PathLike] = None,
                  batch_images: int = 8, batch_size: int = 32, progress: bool = False) -> Dict:
    """Predict landmarks on image files and folders; returns the output-format dict (see module docstring).

    Parameters
    ----------
    model : Landmarker
    inputs : sequence of path
        Image files and folders (a folder's images, not recursive).
    boxes : path, optional
        A predictions-format JSON giving the boxes (then no detector runs);
        an image absent from it gets ``"faces": []`` and an ``"error"``.
    detector, box_kind, refine, batch_size :
        As :func:`predict_image`.
    overlay_dir : path, optional
        Write ``<stem>.png`` overlays there.
    batch_images : int
        Photos read and predicted together.
    progress : bool
        tqdm progress bar over the photos.
    """
    files = expand_inputs(inputs)
    given = read_boxes_file(boxes) if boxes is not None else None
    if overlay_dir is not None:
        Path(overlay_dir).mkdir(parents=True, exist_ok=True)
    results: List[Dict] = []
    it = range(0, len(files), batch_images)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(files), desc="predict", unit="img", file=sys.stderr)
    for start in it:
        chunk = files[start:start + batch_images]
        entries, imgs, bxs = [], [], []
        for f in chunk:
            entry: Dict = {"file": f, "faces": []}
            entries.append(entry)
            try:
                img = load_image(f)
            except ValueError as exc:
                entry["error"] = str(exc)
                print(f"flmcore predict: {exc}", file=sys.stderr)
                continue
            if given is not None:
                b = given.get(f, given.get(os.path.normpath(f)))
                if b is None:
                    entry["error"] = f"no boxes for {f!r} in {os.fspath(boxes)}"
                    print(f"flmcore predict: {entry['error']}", file=sys.stderr)
                    continue
            else:
                b = None
            imgs.append((entry, img))
            bxs.append(b)
        if imgs:
            res = predict_batch(model, [im for _, im in imgs], bxs, detector=detector, box_kind=box_kind,
                                refine=refine, batch_size=batch_size)
            for (entry, img), r in zip(imgs, res):
                for k in range(len(r["points"])):
                    s = r["scores"][k]
                    entry["faces"].append({"box": [round(float(v), 3) for v in r["boxes"][k]],
                                           "score": None if not np.isfinite(s) else round(float(s), 4),
                                           "points": [[round(float(x), 3), round(float(y), 3)]
                                                      for x, y in r["points"][k]]})
                if overlay_dir is not None:
                    draw_overlay(img, r["points"], Path(overlay_dir) / (Path(entry["file"]).stem + ".png"), r["boxes"])
        results.extend(entries)
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return {"images": results}


def write_predictions(result: Dict, path: PathLike) -> None:
    """Write a predictions dict as JSON, atomically (temporary file + rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1), encoding="utf-8")
    os.replace(tmp, p)


def predict_dataset(model, dataset, *, boxes: str = "landmark", detector: str = "auto", refine: Optional[int] = None,
                    batch_images: int = 16, batch_size: int = 32, progress: bool = False):
    """Predict every annotated face of a :class:`~flmcore.datasets.LandmarkDataset` (for evaluation).

    Parameters
    ----------
    model : Landmarker
    dataset : LandmarkDataset
    boxes : {"landmark", "dataset", "detector"}
        Where each face's crop comes from: its landmark box (the 300-W
        protocol; default), the dataset's ``boxes`` (e.g. set by
        :meth:`~flmcore.datasets.LandmarkDataset.with_boxes`), or the detector
        (``detector``), whose detection overlapping the landmark box best is
        used (IoU >= 0.1); faces the detector misses are reported in ``missing``.
    refine : int, optional
        Extra passes (default: 1 with the detector, 0 otherwise).

    Returns
    -------
    points : numpy.ndarray (N, P, 2)
        Predictions in image pixels (NaN rows for missed faces).
    missing : numpy.ndarray of bool (N,)
    """
    n, P = len(dataset), dataset.scheme.n_points
    pred = np.full((n, P, 2), np.nan)
    missing = np.zeros(n, dtype=bool)
    if boxes not in ("landmark", "dataset", "detector"):
        raise ValueError(f"boxes must be 'landmark', 'dataset' or 'detector', got {boxes!r}")
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n, desc="predict", unit="face", file=sys.stderr)
    for start in range(0, n, batch_images):
        idx = list(range(start, min(n, start + batch_images)))
        items = [dataset[i] for i in idx]
        imgs = [it["image"] for it in items]
        if boxes == "detector":
            from ..datasets import _best_overlap
            bxs, keep = [], []
            for it, img in zip(items, imgs):
                det, _ = find_faces(img, detector)
                j = _best_overlap(det, landmark_box(it["shape"])) if len(det) else None
                keep.append(j is not None)
                bxs.append(det[j:j + 1] if j is not None else np.zeros((0, 4)))
            res = predict_batch(model, imgs, bxs, box_kind="landmark", refine=1 if refine is None else refine,
                                batch_size=batch_size)
            for i, k, r in zip(idx, keep, res):
                if k:
                    pred[i] = r["points"][0]
                else:
                    missing[i] = True
        else:
            bxs = [(landmark_box(it["shape"]) if boxes == "landmark" else it["box"])[None] for it in items]
            res = predict_batch(model, imgs, bxs, box_kind="landmark", refine=refine, batch_size=batch_size)
            for i, r in zip(idx, res):
                pred[i] = r["points"][0]
        if bar is not None:
            bar.update(len(idx))
    if bar is not None:
        bar.close()
    return pred, missing

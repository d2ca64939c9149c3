"""Readers for facial landmark annotation files and images.

Every reader returns float64 ``(x, y)`` pixel coordinates, **0-based** (the
centre of the top-left pixel is ``(0, 0)``), shaped ``(P, 2)`` for one face or
``(N, P, 2)`` for files that hold many faces.  Files written with 1-based
(Matlab / iBUG) coordinates are shifted by -1; readers of formats whose origin
is not fixed by the format take ``one_based=`` and document the default.
Missing points become NaN.  Boxes are always ``(x, y, w, h)`` float64 in the
same 0-based frame.

==============================  ==============================================  =============
reader                          format                                          origin
==============================  ==============================================  =============
:func:`read_pts`                iBUG ``.pts`` with or without header            1-based
:func:`write_pts`               iBUG ``.pts`` with header                       1-based
:func:`read_dlib_xml`           dlib imglab XML (boxes + ``<part>``)            0-based
:func:`read_coco_json`          COCO / mmpose keypoint JSON                     ``one_based``
:func:`read_hrnet_csv`          HRNet CSV (name, scale, centre, x0, y0, ...)    ``one_based``
:func:`read_pipnet_list`        PIPNet / STLD list (normalised crop coords)     [0, 1]
:func:`read_3ddfa_npy`          3DDFA ``(N, dims, K)`` ``.npy``, -1 = missing   as stored
:func:`read_cofw68_mat`         COFW-68 ``k_points.mat`` (Points + Occ)         1-based
:func:`read_cofw68_bboxes`      COFW-68 ``cofw68_test_bboxes.mat``              1-based
:func:`read_helen_zhou_mat`     ``helen.mat`` of Zhou et al. (29 points)        as stored
:func:`read_mtfl`               MTFL ``training.txt`` / ``testing.txt``         ``one_based``
==============================  ==============================================  =============

Nothing here imports torch.
"""
from __future__ import annotations

import csv
import functools
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ._validate import as_array, check_array, check_int

__all__ = [
    "AnnotationFileNotFoundError",
    "read_pts",
    "write_pts",
    "read_dlib_xml",
    "read_coco_json",
    "read_hrnet_csv",
    "write_hrnet_csv",
    "read_pipnet_list",
    "read_3ddfa_npy",
    "read_cofw68_mat",
    "read_cofw68_bboxes",
    "read_helen_zhou_mat",
    "read_mtfl",
    "read_image",
    "to_gray",
]

PathLike = Union[str, os.PathLike]

#: ITU-R BT.601 luma weights (R, G, B), as used by OpenCV and PIL.
BT601 = np.array([0.299, 0.587, 0.114])


class AnnotationFileNotFoundError(FileNotFoundError, ValueError):
    """Raised when an annotation or image file does not exist.

    It is both a :class:`FileNotFoundError` and a :class:`ValueError`.
    """


def _existing(path: PathLike, what: str = "file") -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise AnnotationFileNotFoundError(2, f"{what} not found", str(p))
    return p


#: Largest point index a reader accepts (the largest scheme has 106 points): a file naming
#: point 10**8 must not allocate gigabytes.
MAX_POINT_INDEX = 9999


def _reader(what: str):
    """Decorate a reader so that every failure is a ``ValueError`` naming the file.

    Errors the reader raised itself already name the file; anything else escaping a
    parser (``RecursionError`` from a deeply nested JSON, ``MemoryError``, ``EOFError``,
    ``UnicodeDecodeError``, SciPy's ``MatReadError``, PIL's ``DecompressionBombError`` ...)
    is wrapped with the file's path, the expected content and the original error.
    """
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(path, *args, **kwargs):
            try:
                return fn(path, *args, **kwargs)
            except AnnotationFileNotFoundError:
                raise
            except (ValueError, TypeError) as exc:
                if not isinstance(path, (str, os.PathLike)) or str(Path(path)) in str(exc) or " must " in str(exc):
                    raise
                raise ValueError(f"{Path(path)}: cannot read as {what} ({type(exc).__name__}: {exc})") from None
            except RecursionError:
                raise ValueError(f"{Path(path)}: cannot read as {what} (nested too deeply to parse)") from None
            except MemoryError:
                raise ValueError(f"{Path(path)}: cannot read as {what} (it declares more data than fits in "
                                 "memory)") from None
            except Exception as exc:  # parser-specific errors (EOFError, MatReadError, zlib.error, ...)
                raise ValueError(f"{Path(path)}: cannot read as {what} ({type(exc).__name__}: {exc})") from None
        return wrapper
    return deco


def _check_finite(arr: np.ndarray, path: Path, what: str = "coordinates") -> None:
    """Reject inf/NaN read from a file (missing points are masked *after* this check)."""
    if not np.isfinite(arr).all():
        bad = np.argwhere(~np.isfinite(arr))[0].tolist()
        raise ValueError(f"{path}: {what} must be finite numbers, found {arr[tuple(bad)]} at index {bad}")


def _check_count(arr: np.ndarray, n_points: Optional[int], path: Path) -> None:
    if n_points is not None:
        n_points = check_int(n_points, "n_points", min_value=1)
        if arr.shape[-2] != n_points:
            raise ValueError(f"{path}: expected {n_points} points, found {arr.shape[-2]}")


# ---------------------------------------------------------------------------------------
# iBUG .pts
# ---------------------------------------------------------------------------------------
@_reader("an iBUG .pts file")
def read_pts(path: PathLike, n_points: Optional[int] = None) -> np.ndarray:
    """Read an iBUG ``.pts`` file (with or without the ``version/n_points/{ }`` header).

    iBUG coordinates are 1-based; the result is shifted to 0-based.

    Parameters
    ----------
    path : str or PathLike
    n_points : int, optional
        Required number of points (``ValueError`` naming the file otherwise).

    Returns
    -------
    numpy.ndarray of float64, shape (P, 2)

    Raises
    ------
    AnnotationFileNotFoundError
        If the file does not exist (also a ``ValueError``).
    ValueError
        Malformed file, header count different from the lines read, or a
        count different from ``n_points``.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "a.pts")
    >>> _ = open(f, "w").write("version: 1\\nn_points: 2\\n{\\n1 1\\n3.5 2\\n}\\n")
    >>> read_pts(f).tolist()
    [[0.0, 0.0], [2.5, 1.0]]
    """
    p = _existing(path, ".pts file")
    declared = None
    rows: List[List[float]] = []
    in_body = None
    with open(p, "r", encoding="utf-8", errors="replace") as fh:
        for ln, raw in enumerate(fh, 1):
            line = raw.strip()
            if not line:
                continue
            low = line.lower()
            if low.startswith("version"):
                continue
            if low.startswith("n_points"):
                try:
                    declared = int(line.split(":", 1)[1])
                except (IndexError, ValueError):
                    raise ValueError(f"{p}: line {ln}: cannot parse {line!r}") from None
                continue
            if line == "{":
                in_body = True
                continue
            if line == "}":
                in_body = False
                continue
            if in_body is False:
                raise ValueError(f"{p}: line {ln}: unexpected text after the closing brace: {line!r}")
            parts = line.split()
            if len(parts) != 2:
                raise ValueError(f"{p}: line {ln}: expected 'x y', got {line!r}")
            try:
                rows.append([float(parts[0]), float(parts[1])])
            except ValueError:
                raise ValueError(f"{p}: line {ln}: expected two numbers, got {line!r}") from None
    if not rows:
        raise ValueError(f"{p}: no points found")
    arr = np.asarray(rows, dtype=np.float64) - 1.0
    if declared is not None and declared != len(arr):
        raise ValueError(f"{p}: header says n_points: {declared} but {len(arr)} points were read")
    if not np.isfinite(arr).all():
        raise ValueError(f"{p}: contains non-finite coordinates")
    _check_count(arr, n_points, p)
    return arr


def write_pts(path: PathLike, shape) -> None:
    """Write a 0-based ``(P, 2)`` shape as an iBUG ``.pts`` file (1-based, with header).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> f = os.path.join(tempfile.mkdtemp(), "b.pts")
    >>> write_pts(f, np.array([[0.0, 1.0], [2.0, 3.0]]))
    >>> read_pts(f).tolist()
    [[0.0, 1.0], [2.0, 3.0]]
    """
    arr = check_array(shape, "shape", ndim=2, shape=(None, 2))
    lines = ["version: 1", f"n_points: {len(arr)}", "{"]
    lines += [f"{x + 1.0:.6f} {y + 1.0:.6f}" for x, y in arr]
    lines.append("}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------
# dlib imglab XML
# ---------------------------------------------------------------------------------------
@_reader("a dlib XML file")
def read_dlib_xml(path: PathLike, n_points: Optional[int] = None) -> List[Dict[str, object]]:
    """Read a dlib imglab XML file (``<image><box><part/></box></image>``).

    dlib coordinates are 0-based integers; boxes ``top/left/width/height``
    become ``(x, y, w, h)``.  Parts are ordered by their integer ``name``;
    missing parts are NaN.

    Parameters
    ----------
    path : str or PathLike
    n_points : int, optional
        Number of parts per face; by default the largest part index + 1 seen
        in the file (0 for box-only files).

    Returns
    -------
    list of dict
        One entry per ``<image>``: ``file`` (str, as written in the XML),
        ``width``/``height`` (int or None), ``boxes`` (F, 4) float64,
        ``ignore`` (F,) bool and ``shapes`` (F, P, 2) float64.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "d.xml")
    >>> _ = open(f, "w").write("<dataset><images><image file='a.jpg'><box top='1' left='2' width='3' "
    ...                        "height='4'><part name='0' x='5' y='6'/></box></image></images></dataset>")
    >>> r = read_dlib_xml(f)[0]
    >>> r["boxes"].tolist(), r["shapes"].tolist()
    ([[2.0, 1.0, 3.0, 4.0]], [[[5.0, 6.0]]])
    """
    p = _existing(path, "dlib XML file")
    try:
        root = ET.parse(p).getroot()
    except ET.ParseError as exc:
        raise ValueError(f"{p}: not a valid XML file ({exc})") from None
    images = root.findall(".//images/image") or root.findall(".//image")
    parsed = []
    max_part = -1
    for im in images:
        faces = []
        for box in im.findall("box"):
            try:
                b = [float(box.get(k)) for k in ("left", "top", "width", "height")]
            except (TypeError, ValueError):
                raise ValueError(f"{p}: image {im.get('file')!r}: box without numeric left/top/width/height") from None
            if not (np.isfinite(b).all() and b[2] >= 0 and b[3] >= 0):
                raise ValueError(f"{p}: image {im.get('file')!r}: box must have finite left/top and finite "
                                 f"width/height >= 0, got left={b[0]}, top={b[1]}, width={b[2]}, height={b[3]}")
            parts = {}
            for part in box.findall("part"):
                try:
                    k = int(part.get("name"))
                    parts[k] = (float(part.get("x")), float(part.get("y")))
                except (TypeError, ValueError):
                    raise ValueError(f"{p}: image {im.get('file')!r}: malformed <part> {ET.tostring(part)!r}") from None
                if not 0 <= k <= MAX_POINT_INDEX:
                    raise ValueError(f"{p}: image {im.get('file')!r}: <part> name must be a point index in "
                                     f"[0, {MAX_POINT_INDEX}], got {part.get('name')!r}")
                if not np.isfinite(parts[k]).all():
                    raise ValueError(f"{p}: image {im.get('file')!r}: part {k} must have finite x, y, got "
                                     f"{parts[k]}")
                max_part = max(max_part, k)
            faces.append((b, box.get("ignore", "0") == "1", parts))
        parsed.append((im, faces))
    n = max_part + 1 if n_points is None else check_int(n_points, "n_points", min_value=0)
    if max_part + 1 > n:
        raise ValueError(f"{p}: expected {n} points, found part index {max_part}")
    out = []
    for im, faces in parsed:
        shapes = np.full((len(faces), n, 2), np.nan)
        for f, (_, _, parts) in enumerate(faces):
            for k, xy in parts.items():
                shapes[f, k] = xy
        w, h = im.get("width"), im.get("height")
        out.append({
            "file": im.get("file"),
            "width": int(w) if w is not None else None,
            "height": int(h) if h is not None else None,
            "boxes": np.asarray([f[0] for f in faces], dtype=np.float64).reshape(-1, 4),
            "ignore": np.asarray([f[1] for f in faces], dtype=bool),
            "shapes": shapes,
        })
    return out


# ---------------------------------------------------------------------------------------
# COCO / mmpose JSON
# ---------------------------------------------------------------------------------------
@_reader("a COCO keypoint JSON file")
def read_coco_json(path: PathLike, n_points: Optional[int] = None, *, one_based: bool = False) -> Dict[str, object]:
    """Read COCO-style keypoint annotations (as used by mmpose for faces).

    ``keypoints`` is a flat list ``[x, y, v] * K``; points with ``v == 0``
    (not labelled) become NaN.  ``bbox`` ``[x, y, w, h]`` is NaN where absent.

    Parameters
    ----------
    path : str or PathLike
    n_points : int, optional
        Required number of keypoints per annotation.
    one_based : bool
        COCO coordinates are 0-based (default).  mmpose's 300-W / 300-VW test
        JSONs copy the iBUG ``.pts`` values verbatim, i.e. they are 1-based:
        pass ``one_based=True`` for those.

    Returns
    -------
    dict
        ``shapes`` (N, K, 2) float64, ``visibility`` (N, K) int (COCO ``v``:
        0 unlabelled, 1 labelled but occluded, 2 visible; mmpose face sets use
        1 or 2 inconsistently), ``boxes`` (N, 4), ``image_ids`` (N,) int,
        ``files`` list of N file names (from ``images``), ``ids`` (N,) int.

    Examples
    --------
    >>> import tempfile, os, json
    >>> f = os.path.join(tempfile.mkdtemp(), "c.json")
    >>> json.dump({"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [
    ...     {"id": 7, "image_id": 1, "keypoints": [1, 2, 2, 0, 0, 0], "bbox": [0, 0, 5, 5]}]}, open(f, "w"))
    >>> r = read_coco_json(f)
    >>> r["shapes"].tolist(), r["files"]
    ([[[1.0, 2.0], [nan, nan]]], ['a.jpg'])
    """
    p = _existing(path, "JSON file")
    try:
        with open(p, "r", encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "annotations" not in data:
        raise ValueError(f"{p}: expected a COCO dict with an 'annotations' list")
    files = {im.get("id"): im.get("file_name") for im in data.get("images", [])}
    anns = data["annotations"]
    if not anns:
        raise ValueError(f"{p}: no annotations")
    kps = []
    for a in anns:
        try:
            k = np.asarray(a.get("keypoints", []), dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{p}: annotation id {a.get('id')}: keypoints must be a flat list of numbers") from None
        if k.ndim != 1 or k.size == 0 or k.size % 3:
            raise ValueError(f"{p}: annotation id {a.get('id')}: keypoints length {k.size} is not a multiple of 3")
        _check_finite(k, p, f"annotation id {a.get('id')}: keypoints")
        kps.append(k.reshape(-1, 3))
    sizes = {len(k) for k in kps}
    if len(sizes) != 1:
        raise ValueError(f"{p}: annotations have different keypoint counts {sorted(sizes)}")
    kp = np.stack(kps)
    vis = kp[..., 2].astype(np.int64)
    shapes = kp[..., :2].copy()
    if one_based:
        shapes -= 1.0
    shapes[vis == 0] = np.nan
    _check_count(shapes, n_points, p)
    boxes = np.array([a["bbox"] if a.get("bbox") is not None else [np.nan] * 4 for a in anns], dtype=np.float64)
    if np.isinf(boxes).any():
        raise ValueError(f"{p}: bbox values must be finite, found inf")
    if one_based:
        boxes[:, :2] -= 1.0
    image_ids = np.array([a.get("image_id", -1) for a in anns], dtype=np.int64)
    return {
        "shapes": shapes,
        "visibility": vis,
        "boxes": boxes.reshape(-1, 4),
        "image_ids": image_ids,
        "ids": np.array([a.get("id", -1) for a in anns], dtype=np.int64),
        "files": [files.get(int(i)) for i in image_ids],
    }


# ---------------------------------------------------------------------------------------
# HRNet CSV
# ---------------------------------------------------------------------------------------
@_reader("an HRNet CSV file")
def read_hrnet_csv(path: PathLike, n_points: Optional[int] = None, *, one_based: bool = True) -> Dict[str, object]:
    """Read an HRNet face-alignment CSV (``image_name, scale, center_w, center_h, x0, y0, ...``).

    A header row (first row whose ``scale`` field is not a number) is skipped.

    Parameters
    ----------
    path : str or PathLike
    n_points : int, optional
        Required number of points.
    one_based : bool
        HRNet's 300-W CSVs copy the iBUG ``.pts`` values, i.e. 1-based
        (default ``True``, shifted to 0-based); pass ``False`` for CSVs made
        from 0-based sources.

    Returns
    -------
    dict
        ``names`` (list of N str), ``scale`` (N,) float64 (box size / 200),
        ``center`` (N, 2) float64, ``shapes`` (N, P, 2) float64.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "h.csv")
    >>> _ = open(f, "w").write("image_name,scale,center_w,center_h,x0,y0\\na.jpg,1.5,10,20,3,4\\n")
    >>> read_hrnet_csv(f)["shapes"].tolist()
    [[[2.0, 3.0]]]
    """
    p = _existing(path, "CSV file")
    names, scale, center, pts = [], [], [], []
    with open(p, "r", encoding="utf-8", newline="") as fh:
        for ln, row in enumerate(csv.reader(fh), 1):
            if not row or all(not c.strip() for c in row):
                continue
            if ln == 1:
                try:
                    float(row[1])
                except (IndexError, ValueError):
                    continue  # header
            if len(row) < 6 or (len(row) - 4) % 2:
                raise ValueError(f"{p}: line {ln}: expected name, scale, center_w, center_h and x/y pairs, "
                                 f"got {len(row)} fields")
            try:
                vals = [float(c) for c in row[1:]]
            except ValueError:
                raise ValueError(f"{p}: line {ln}: non-numeric field") from None
            names.append(row[0])
            scale.append(vals[0])
            center.append(vals[1:3])
            pts.append(vals[3:])
    if not names:
        raise ValueError(f"{p}: no rows")
    if len({len(r) for r in pts}) != 1:
        raise ValueError(f"{p}: rows have different numbers of points")
    shapes = np.asarray(pts, dtype=np.float64).reshape(len(pts), -1, 2)
    center_a = np.asarray(center, dtype=np.float64)
    _check_finite(shapes, p)
    _check_finite(center_a, p, "centres")
    _check_finite(np.asarray(scale, dtype=np.float64), p, "scales")
    if one_based:
        shapes = shapes - 1.0
        center_a = center_a - 1.0
    _check_count(shapes, n_points, p)
    return {"names": names, "scale": np.asarray(scale, dtype=np.float64), "center": center_a, "shapes": shapes}


def write_hrnet_csv(path: PathLike, names, shapes, scale, center, *, one_based: bool = True) -> None:
    """Write shapes in HRNet's CSV layout (the inverse of :func:`read_hrnet_csv`).

    Parameters
    ----------
    path : str or PathLike
    names : sequence of str, length N
    shapes : array_like, shape (N, P, 2), 0-based
    scale : array_like, shape (N,)
    center : array_like, shape (N, 2), 0-based
    one_based : bool
        Write 1-based coordinates (HRNet's 300-W convention).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> f = os.path.join(tempfile.mkdtemp(), "w.csv")
    >>> write_hrnet_csv(f, ["a.jpg"], np.zeros((1, 3, 2)), [1.0], [[5.0, 5.0]])
    >>> read_hrnet_csv(f)["shapes"].shape
    (1, 3, 2)
    """
    sh = check_array(shapes, "shapes", ndim=3, shape=(None, 2))
    sc = check_array(scale, "scale", ndim=1)
    ce = check_array(center, "center", ndim=2, shape=(2,))
    names = [str(n) for n in names]
    if not (len(names) == len(sh) == len(sc) == len(ce)):
        raise ValueError(f"names, shapes, scale and center must have the same length, got "
                         f"{len(names)}, {len(sh)}, {len(sc)}, {len(ce)}")
    off = 1.0 if one_based else 0.0
    header = ["image_name", "scale", "center_w", "center_h"]
    for k in range(sh.shape[1]):
        header += [f"original_{k}_x", f"original_{k}_y"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for n, s, c, x in zip(names, sc, ce, sh):
            w.writerow([n, repr(float(s)), repr(float(c[0] + off)), repr(float(c[1] + off))]
                       + [repr(float(v)) for v in (x + off).ravel()])


# ---------------------------------------------------------------------------------------
# PIPNet / STLD list files
# ---------------------------------------------------------------------------------------
@_reader("a PIPNet list file")
def read_pipnet_list(path: PathLike, n_points: Optional[int] = None) -> Dict[str, object]:
    """Read a PIPNet / STLD list file: one face per line, ``name x0 y0 x1 y1 ...``.

    Coordinates are **normalised to [0, 1] inside PIPNet's preprocessed face
    crop** (not image pixels) and are returned unchanged.  Files of unlabelled
    faces (STLD ``train_semi_u_*.txt``) hold names only: ``shapes`` is then
    ``None``.

    Returns
    -------
    dict
        ``names`` (list of N str) and ``shapes`` ((N, P, 2) float64 or None).

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "l.txt")
    >>> _ = open(f, "w").write("a.jpg 0.1 0.2 0.3 0.4\\nb.jpg 0.5 0.6 0.7 0.8\\n")
    >>> read_pipnet_list(f)["shapes"].shape
    (2, 2, 2)
    """
    p = _existing(path, "list file")
    names, rows = [], []
    with open(p, "r", encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            names.append(parts[0])
            if len(parts) > 1 and len(parts) % 2 == 0:
                raise ValueError(f"{p}: line {ln}: odd number of coordinates ({len(parts) - 1})")
            try:
                rows.append([float(v) for v in parts[1:]])
            except ValueError:
                raise ValueError(f"{p}: line {ln}: non-numeric coordinate") from None
    if not names:
        raise ValueError(f"{p}: empty list file")
    lengths = {len(r) for r in rows}
    if lengths == {0}:
        if n_points is not None:
            raise ValueError(f"{p}: expected {n_points} points, the file holds names only")
        return {"names": names, "shapes": None}
    if len(lengths) != 1:
        raise ValueError(f"{p}: lines have different numbers of coordinates {sorted(lengths)}")
    shapes = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1, 2)
    _check_finite(shapes, p)
    _check_count(shapes, n_points, p)
    return {"names": names, "shapes": shapes}


# ---------------------------------------------------------------------------------------
# 3DDFA .npy
# ---------------------------------------------------------------------------------------
@_reader("a 3DDFA .npy array")
def read_3ddfa_npy(path: PathLike, n_points: Optional[int] = None, *, keep_z: bool = False,
                   missing: Optional[float] = -1.0) -> np.ndarray:
    """Read a 3DDFA landmark array stored ``(N, dims, K)`` and return ``(N, K, 2)``.

    A point with any coordinate equal to ``missing`` (-1 in AFLW-21: one
    coordinate is -1, the other may be garbage) becomes NaN in all its
    coordinates.  Coordinates are returned as stored (AFLW2000 450x450 frame).

    Parameters
    ----------
    path : str or PathLike
    n_points : int, optional
        Required number of points ``K``.
    keep_z : bool
        Return ``(N, K, 3)`` for 3-row files (depth kept).
    missing : float or None
        Sentinel for missing points; ``None`` disables masking.

    Returns
    -------
    numpy.ndarray of float64, shape (N, K, 2) (or (N, K, 3) with ``keep_z``)

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> f = os.path.join(tempfile.mkdtemp(), "p.npy")
    >>> np.save(f, np.array([[[1.0, -1.0], [2.0, 452.0]]]))
    >>> read_3ddfa_npy(f).tolist()
    [[[1.0, 2.0], [nan, nan]]]
    """
    p = _existing(path, ".npy file")
    _check_npy_header(p)
    try:
        raw = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{p}: cannot load as a plain .npy array ({exc})") from None
    if raw.ndim != 3 or raw.shape[1] not in (2, 3):
        raise ValueError(f"{p}: expected an array of shape (N, 2 or 3, K), got {raw.shape}")
    if raw.dtype.kind not in "fiu":
        raise ValueError(f"{p}: expected numeric data, got dtype {raw.dtype}")
    arr = np.ascontiguousarray(raw.transpose(0, 2, 1), dtype=np.float64)
    _check_finite(arr, p)
    if missing is not None:
        bad = (arr[..., :2] == missing).any(axis=-1)
        arr[bad] = np.nan
    if not keep_z:
        arr = np.ascontiguousarray(arr[..., :2])
    _check_count(arr, n_points, p)
    return arr


# ---------------------------------------------------------------------------------------
# Matlab files: COFW-68, HELEN 29 points (Zhou)
# ---------------------------------------------------------------------------------------
def _check_npy_header(p: Path) -> None:
    """Read the ``.npy`` header only and refuse a file whose declared array is larger than its
    data (a forged header must not allocate: memory stays bounded by the file size)."""
    fmt = np.lib.format
    with open(p, "rb") as fh:
        try:
            version = fmt.read_magic(fh)
            header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = header(fh, max_header_size=10_000)
        except (ValueError, EOFError, OSError, SyntaxError) as exc:
            raise ValueError(f"{p}: not a valid .npy file ({exc})") from None
        if dtype.hasobject:
            raise ValueError(f"{p}: holds Python objects (dtype {dtype}); only plain numeric arrays are read")
        need = int(np.prod([int(s) for s in shape], dtype=object)) * dtype.itemsize
        have = os.fstat(fh.fileno()).st_size - fh.tell()
    if need > have:
        raise ValueError(f"{p}: header declares an array of shape {tuple(shape)} and dtype {dtype} ({need} bytes) "
                         f"but the file holds {have} bytes of data")


def _loadmat(p: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(str(p))
    except (ValueError, TypeError, OSError) as exc:
        raise ValueError(f"{p}: cannot read as a Matlab v5 .mat file ({exc})") from None
    except NotImplementedError:
        raise ValueError(f"{p}: Matlab v7.3 (HDF5) files are not supported; re-save with -v7") from None


@_reader("a COFW-68 .mat file")
def read_cofw68_mat(path: PathLike) -> Dict[str, np.ndarray]:
    """Read one COFW-68 annotation (``k_points.mat``: ``Points`` 68x2, ``Occ`` 1x68).

    Returns
    -------
    dict
        ``shape`` (68, 2) float64, 0-based (Matlab 1-based on disk), and
        ``occluded`` (68,) bool.

    Examples
    --------
    >>> import tempfile, os, numpy as np, scipy.io
    >>> f = os.path.join(tempfile.mkdtemp(), "1_points.mat")
    >>> scipy.io.savemat(f, {"Points": np.ones((68, 2)), "Occ": np.zeros((1, 68), np.uint8)})
    >>> r = read_cofw68_mat(f)
    >>> r["shape"][0].tolist(), bool(r["occluded"].any())
    ([0.0, 0.0], False)
    """
    p = _existing(path, ".mat file")
    m = _loadmat(p)
    if "Points" not in m:
        raise ValueError(f"{p}: no 'Points' variable (found {sorted(k for k in m if not k.startswith('__'))})")
    pts = np.asarray(m["Points"], dtype=np.float64)
    if pts.shape != (68, 2):
        raise ValueError(f"{p}: expected 68 points of shape (68, 2), got {pts.shape}")
    _check_finite(pts, p, "Points")
    occ = np.asarray(m.get("Occ", np.zeros((1, 68))), dtype=bool).ravel()
    if occ.size != 68:
        raise ValueError(f"{p}: 'Occ' must hold 68 flags, got {occ.size}")
    return {"shape": pts - 1.0, "occluded": occ}


@_reader("a COFW-68 bboxes .mat file")
def read_cofw68_bboxes(path: PathLike) -> np.ndarray:
    """Read ``cofw68_test_bboxes.mat`` -> ``(N, 4)`` float64 ``(x, y, w, h)``, 0-based.

    Examples
    --------
    >>> import tempfile, os, numpy as np, scipy.io
    >>> f = os.path.join(tempfile.mkdtemp(), "b.mat")
    >>> scipy.io.savemat(f, {"bboxes": np.array([[11, 21, 50, 60]], np.int16)})
    >>> read_cofw68_bboxes(f).tolist()
    [[10.0, 20.0, 50.0, 60.0]]
    """
    p = _existing(path, ".mat file")
    m = _loadmat(p)
    if "bboxes" not in m:
        raise ValueError(f"{p}: no 'bboxes' variable")
    b = np.asarray(m["bboxes"], dtype=np.float64)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{p}: expected bboxes of shape (N, 4), got {b.shape}")
    _check_finite(b, p, "bboxes")
    b[:, :2] -= 1.0
    return b


@_reader("a HELEN (Zhou) .mat file")
def read_helen_zhou_mat(path: PathLike, *, one_based: bool = False) -> Dict[str, object]:
    """Read ``helen.mat`` of Zhou et al. (``imgs`` names, ``Pts`` cells of 2x29).

    Coordinates refer to the downscaled images shipped with the file.  They
    are returned as stored (``one_based=False``): on the 234 faces that also
    carry the iBUG-68 labels, eye/mouth corners and pupils read this way lie
    (+0.1, -0.2) px from the rescaled 0-based iBUG points on average, whereas a
    1-based reading would leave a (-0.9, -1.2) px offset.  Point order:
    ``helen_zhou29`` (see :mod:`flmcore.schemes`).

    Parameters
    ----------
    path : str or PathLike
    one_based : bool
        Subtract 1 from the stored values.

    Returns
    -------
    dict
        ``names`` (list of N str) and ``shapes`` (N, 29, 2) float64.

    Examples
    --------
    >>> import tempfile, os, numpy as np, scipy.io
    >>> f = os.path.join(tempfile.mkdtemp(), "helen.mat")
    >>> cells = np.empty((1, 1), object); cells[0, 0] = np.ones((2, 29))
    >>> names = np.empty((1, 1), object); names[0, 0] = "a.jpg"
    >>> scipy.io.savemat(f, {"Pts": cells, "imgs": names})
    >>> r = read_helen_zhou_mat(f)
    >>> r["names"], r["shapes"].shape, float(r["shapes"][0, 0, 0])
    (['a.jpg'], (1, 29, 2), 1.0)
    """
    p = _existing(path, ".mat file")
    m = _loadmat(p)
    if "Pts" not in m or "imgs" not in m:
        raise ValueError(f"{p}: expected variables 'Pts' and 'imgs'")
    cells, imgs = m["Pts"].ravel(), m["imgs"].ravel()
    if len(cells) != len(imgs):
        raise ValueError(f"{p}: {len(cells)} shapes but {len(imgs)} image names")
    shapes = []
    for i, c in enumerate(cells):
        a = np.asarray(c, dtype=np.float64)
        if a.shape != (2, 29):
            raise ValueError(f"{p}: shape {i} has size {a.shape}, expected (2, 29)")
        _check_finite(a, p, f"shape {i}")
        shapes.append(a.T)
    names = [str(np.asarray(n).ravel()[0]) for n in imgs]
    return {"names": names, "shapes": np.stack(shapes) - (1.0 if one_based else 0.0)}


# ---------------------------------------------------------------------------------------
# MTFL
# ---------------------------------------------------------------------------------------
@_reader("an MTFL list file")
def read_mtfl(path: PathLike, *, one_based: bool = False) -> Dict[str, object]:
    """Read an MTFL landmark list (``path x1..x5 y1..y5 gender smile glasses pose``).

    Windows back-slashes in paths become ``/``; leading spaces are ignored.
    The MTFL readme does not state the coordinate origin; values are returned
    as stored unless ``one_based=True``.  Points (``mtfl5``): left eye, right
    eye, nose, left and right mouth corner.

    Returns
    -------
    dict
        ``names`` (list of N str), ``shapes`` (N, 5, 2) float64, ``gender``,
        ``smile``, ``glasses``, ``pose`` (N,) int (MTFL codes: gender 1 male /
        2 female, smile and glasses 1 yes / 2 no, pose 1-5 from left profile to
        right profile).

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "m.txt")
    >>> _ = open(f, "w").write(" a\\\\b.jpg 1 2 3 4 5 6 7 8 9 10 1 2 2 3\\n")
    >>> r = read_mtfl(f)
    >>> r["names"], r["shapes"][0, 1].tolist(), int(r["pose"][0])
    (['a/b.jpg'], [2.0, 7.0], 3)
    """
    p = _existing(path, "MTFL file")
    names, rows, attrs = [], [], []
    with open(p, "r", encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 15:
                raise ValueError(f"{p}: line {ln}: expected 15 fields (path, 10 coordinates, 4 attributes), "
                                 f"got {len(parts)}")
            try:
                v = [float(x) for x in parts[1:11]]
                a = [int(x) for x in parts[11:]]
            except ValueError:
                raise ValueError(f"{p}: line {ln}: non-numeric field") from None
            names.append(parts[0].replace("\\", "/"))
            rows.append(v)
            attrs.append(a)
    if not names:
        raise ValueError(f"{p}: empty MTFL file")
    v = np.asarray(rows, dtype=np.float64)
    _check_finite(v, p)
    shapes = np.stack([v[:, :5], v[:, 5:]], axis=-1)
    if one_based:
        shapes -= 1.0
    a = np.asarray(attrs, dtype=np.int64)
    return {"names": names, "shapes": shapes, "gender": a[:, 0], "smile": a[:, 1], "glasses": a[:, 2],
            "pose": a[:, 3]}


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------
def to_gray(image) -> np.ndarray:
    """Convert an image to grayscale float32 in [0, 1] with ITU-R BT.601 weights.

    ``Y = 0.299 R + 0.587 G + 0.114 B`` (the weights of OpenCV's
    ``COLOR_RGB2GRAY`` and PIL's ``"L"`` mode).  uint8 input is scaled by
    1/255; float input is taken to be in [0, 1].  Grayscale input ``(H, W)``
    is only converted to float32; an alpha channel is dropped.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 3|4) or (B, H, W, 3|4)
        RGB channel order.

    Returns
    -------
    numpy.ndarray of float32, shape (H, W) or (B, H, W)

    Examples
    --------
    >>> import numpy as np
    >>> round(float(to_gray(np.array([[[255, 0, 0]]], np.uint8))[0, 0]), 3)
    0.299
    """
    arr = as_array(image, "image")
    if arr.dtype == object or arr.dtype.kind not in "uifb":
        raise TypeError(f"image must be a numeric array, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"image must not be empty, got shape {arr.shape}")
    scale = 1.0 / 255.0 if arr.dtype == np.uint8 else (1.0 / 65535.0 if arr.dtype == np.uint16 else 1.0)
    if arr.ndim == 2:
        out = arr.astype(np.float32) * np.float32(scale)
    elif arr.ndim in (3, 4) and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3].astype(np.float64)
        out = (rgb @ BT601 * scale).astype(np.float32)
    elif arr.ndim == 3 and arr.shape[-1] == 1:
        out = arr[..., 0].astype(np.float32) * np.float32(scale)
    else:
        raise ValueError(f"image must have shape (H, W), (H, W, 3), (H, W, 4) or (B, H, W, 3), got {arr.shape}")
    if not np.isfinite(out).all():
        raise ValueError("image contains NaN or infinite values")
    return out


@_reader("an image")
def read_image(path: PathLike, gray: bool = True) -> np.ndarray:
    """Read an image file (JPEG, PNG, PPM, ... via PIL).

    Parameters
    ----------
    path : str or PathLike
    gray : bool
        ``True``: return grayscale float32 ``(H, W)`` in [0, 1] (BT.601, see
        :func:`to_gray`).  ``False``: return the stored pixels as uint8,
        ``(H, W, 3)`` RGB or ``(H, W)`` for grayscale files.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from PIL import Image
    >>> f = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> Image.fromarray(np.full((4, 5, 3), 255, np.uint8)).save(f)
    >>> read_image(f).shape, float(read_image(f).max())
    ((4, 5), 1.0)
    """
    from PIL import Image, UnidentifiedImageError

    p = _existing(path, "image file")
    try:
        with Image.open(p) as im:
            if im.mode in ("L", "I;16", "I", "F"):
                arr = np.asarray(im.convert("L") if im.mode == "L" else im)
                if arr.dtype != np.uint8:
                    arr = np.asarray(im.convert("L"))
            else:
                arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{p}: cannot read image ({type(exc).__name__}: {exc})") from None
    return to_gray(arr) if gray else np.ascontiguousarray(arr, dtype=np.uint8)

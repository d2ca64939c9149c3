"""Annotated face datasets: real images of any size, their landmarks, scheme and face boxes.

A :class:`LandmarkDataset` is a list of faces (image file, landmarks, box) that
reads images lazily, one at a time, so memory stays flat on thousands of
photos.  Build one from

* a folder in the iBUG / 300-W layout (images with ``.pts`` files beside them,
  searched recursively): :meth:`LandmarkDataset.from_folder`;
* a COCO / mmpose keypoint JSON: :meth:`LandmarkDataset.from_coco`;
* an HRNet-style CSV (300-W, WFLW, COFW, AFLW lists of HRNet):
  :meth:`LandmarkDataset.from_hrnet_csv`;
* the official WFLW list (``list_98pt_rect_attr_*.txt``):
  :meth:`LandmarkDataset.from_wflw_list`;
* arrays you already hold: :meth:`LandmarkDataset.from_arrays`.

**Face boxes.**  By default the box of a face is its *landmark box*, the tight
box of its annotated points (the 300-W convention; :func:`flmcore.crop.landmark_box`).
:meth:`LandmarkDataset.with_boxes` replaces them by boxes from a JSON file
(``{"images": [{"file": ..., "faces": [{"box": [x0, y0, x1, y1]}]}]}``, the
format :mod:`flmcore.predict` writes) or by a detector callable.

**Splits.**  :meth:`LandmarkDataset.split_by_name` puts a face in the
validation part when a CRC-32 hash of its image name (without the ``_1``,
``_2`` face suffix (one or two digits), so all faces of a photo fall on the same side) falls in
the validation fraction: the split is fixed, independent of the order and
number of files, and reproducible anywhere.  :meth:`LandmarkDataset.split`
draws a seeded random split instead.

Nothing here imports torch.
"""
from __future__ import annotations

import json
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._validate import check_array, check_probability, check_rng
from .crop import check_box, landmark_box
from .schemes import get_scheme

__all__ = ["Face", "LandmarkDataset", "load_image", "read_boxes_file", "IMAGE_EXTENSIONS"]

#: Image file extensions recognised by :meth:`LandmarkDataset.from_folder` (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")

PathLike = Union[str, os.PathLike]


def load_image(path: PathLike) -> np.ndarray:
    """Read a photo as ``(H, W, 3)`` uint8 RGB, upright.

    The EXIF orientation tag is applied (a phone photo stored sideways comes
    out as it is displayed), grayscale is replicated to 3 channels (16-bit
    grayscale is scaled to 8 bits) and an alpha channel is composited on black.  Errors name the file.

    Examples
    --------
    >>> import tempfile, os
    >>> from PIL import Image
    >>> f = os.path.join(tempfile.mkdtemp(), "x.png")
    >>> Image.fromarray(np.zeros((4, 5, 4), np.uint8)).save(f)
    >>> load_image(f).shape
    (4, 5, 3)
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"image file {os.fspath(path)!r} does not exist")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit grayscale: scale, PIL would clip at 255
                g = np.asarray(im).astype(np.float64) / 257.0
                return np.repeat(np.clip(g + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im)
            arr = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{os.fspath(path)}: cannot read image ({type(exc).__name__}: {exc})") from None
    return np.ascontiguousarray(arr)


@dataclass(frozen=True)
class Face:
    """One annotated face: the image file, landmarks and face box (image pixels, 0-based)."""

    file: str
    shape: np.ndarray  # (P, 2), NaN = missing
    box: np.ndarray  # (4,) [x0, y0, x1, y1]
    name: str


_FACE_SUFFIX = re.compile(r"_\d{1,2}$")


class LandmarkDataset(Sequence):
    """Lazily loaded annotated faces of one scheme.

    ``ds[i]`` returns a dict ``{"image": (H, W, 3) uint8, "shape": (P, 2),
    "box": (4,), "file": str, "name": str}``; the image is read from disk at
    that moment (a face box that misses its image raises ``ValueError``
    naming the file).  ``ds.shapes`` ``(N, P, 2)`` and ``ds.boxes`` ``(N, 4)`` are in
    memory.

    Parameters
    ----------
    faces : sequence of Face
    scheme : str or Scheme
        Annotation scheme of every face (``"ibug68"``, ...).

    Examples
    --------
    >>> ds = LandmarkDataset.from_arrays(["a.jpg", "b.jpg"], np.ones((2, 5, 2)) * [[[1]], [[3]]], "mtfl5")
    >>> len(ds), ds.shapes.shape, ds.boxes[1].tolist()
    (2, (2, 5, 2), [3.0, 3.0, 3.0, 3.0])
    """

    def __init__(self, faces: Sequence[Face], scheme):
        self.scheme = get_scheme(scheme)
        self.faces: List[Face] = list(faces)
        for f in self.faces:
            if not isinstance(f, Face):
                raise TypeError(f"faces must hold Face objects, got {type(f).__name__}")
            if f.shape.shape != (self.scheme.n_points, 2):
                raise ValueError(f"{f.file}: expected {self.scheme.n_points} points of scheme {self.scheme.name}, "
                                 f"got an array of shape {f.shape.shape}")

    # -- sequence protocol --------------------------------------------------------
    def __len__(self) -> int:
        return len(self.faces)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return LandmarkDataset(self.faces[i], self.scheme)
        f = self.faces[int(i)]
        image = load_image(f.file)
        check_box(f.box, f"box of {f.file}", image_size=image.shape[:2])  # a box that misses its image
        return {"image": image, "shape": f.shape.copy(), "box": f.box.copy(), "file": f.file,
                "name": f.name}

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"LandmarkDataset({len(self)} faces, scheme={self.scheme.name!r})"

    @property
    def shapes(self) -> np.ndarray:
        """``(N, P, 2)`` landmarks in image pixels."""
        return np.stack([f.shape for f in self.faces]) if self.faces else np.zeros((0, self.scheme.n_points, 2))

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` face boxes ``[x0, y0, x1, y1]``."""
        return np.stack([f.box for f in self.faces]) if self.faces else np.zeros((0, 4))

    @property
    def names(self) -> List[str]:
        return [f.name for f in self.faces]

    @property
    def files(self) -> List[str]:
        return [f.file for f in self.faces]

    def subset(self, indices) -> "LandmarkDataset":
        """The faces at ``indices`` (int array or boolean mask)."""
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise ValueError(f"indices as a mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        return LandmarkDataset([self.faces[int(i)] for i in idx], self.scheme)

    def __add__(self, other: "LandmarkDataset") -> "LandmarkDataset":
        if not isinstance(other, LandmarkDataset) or other.scheme.name != self.scheme.name:
            raise ValueError("only datasets of the same scheme can be concatenated")
        return LandmarkDataset(self.faces + other.faces, self.scheme)

    # -- splits ---------------------------------------------------------------------
    @staticmethod
    def _group(name: str) -> str:
        return _FACE_SUFFIX.sub("", name)

    def split_by_name(self, val_fraction: float = 0.1, salt: str = "flmcore") -> Tuple["LandmarkDataset", "LandmarkDataset"]:
        """Fixed (train, validation) split by a hash of each image's name.

        A face goes to validation when ``crc32(salt + "/" + name) mod 10000 <
        val_fraction * 10000``; ``name`` is the face's name without a trailing
        ``_<digits>`` face index, so every face of one photo lands on the same
        side.  Independent of file order and count.

        Examples
        --------
        >>> ds = LandmarkDataset.from_arrays([f"{i}.jpg" for i in range(100)], np.ones((100, 5, 2)), "mtfl5")
        >>> tr, va = ds.split_by_name(0.2)
        >>> len(tr) + len(va), 10 < len(va) < 30
        (100, True)
        """
        val_fraction = check_probability(val_fraction, "val_fraction")
        h = np.array([zlib.crc32(f"{salt}/{self._group(f.name)}".encode()) % 10000 for f in self.faces])
        val = h < int(round(val_fraction * 10000))
        return self.subset(~val), self.subset(val)

    def split(self, val_fraction: float = 0.1, rng=0) -> Tuple["LandmarkDataset", "LandmarkDataset"]:
        """Seeded random (train, validation) split (faces of one photo kept together)."""
        val_fraction = check_probability(val_fraction, "val_fraction")
        groups = sorted({self._group(f.name) for f in self.faces})
        r = check_rng(rng)
        order = r.permutation(len(groups))
        n_val = int(round(val_fraction * len(groups)))
        val_groups = {groups[i] for i in order[:n_val]}
        val = np.array([self._group(f.name) in val_groups for f in self.faces], dtype=bool)
        return self.subset(~val), self.subset(val)

    # -- boxes ----------------------------------------------------------------------
    def with_boxes(self, boxes: Union[PathLike, np.ndarray, Callable]) -> "LandmarkDataset":
        """A copy whose face boxes come from ``boxes``.

        Parameters
        ----------
        boxes : path, array (N, 4) or callable
            A JSON file in :mod:`flmcore.predict`'s output format (faces
            matched to annotations by the largest overlap with the landmark
            box; a face without a matching box raises), an array of
            ``[x0, y0, x1, y1]`` per face, or ``detector(image) -> (K, 4)``
            boxes (the box with the largest overlap with the landmark box is
            used; images where the detector finds none keep their landmark box
            and are listed in ``self.missed``).
        """
        n = len(self)
        if callable(boxes):
            new, missed = [], []
            for i, f in enumerate(self.faces):
                det = np.asarray(boxes(load_image(f.file)), dtype=np.float64).reshape(-1, 4)
                j = _best_overlap(det, landmark_box(f.shape)) if len(det) else None
                if j is None:
                    missed.append(i)
                    new.append(f.box)
                else:
                    new.append(det[j])
            out = self._replace_boxes(np.stack(new) if new else np.zeros((0, 4)))
            out.missed = missed
            return out
        if isinstance(boxes, (str, os.PathLike)):
            return self._replace_boxes(_boxes_from_json(boxes, self))
        arr = check_array(boxes, "boxes", shape=(n, 4))
        return self._replace_boxes(arr)

    def _replace_boxes(self, boxes: np.ndarray) -> "LandmarkDataset":
        from .crop import check_box
        faces = [Face(f.file, f.shape, check_box(b, f"box of {f.file}"), f.name) for f, b in zip(self.faces, boxes)]
        return LandmarkDataset(faces, self.scheme)

    # -- constructors ---------------------------------------------------------------
    @classmethod
    def from_arrays(cls, files: Sequence[PathLike], shapes, scheme, boxes=None,
                    names: Optional[Sequence[str]] = None) -> "LandmarkDataset":
        """Faces from image paths and ``(N, P, 2)`` landmarks (image pixels, 0-based)."""
        sch = get_scheme(scheme)
        s = check_array(shapes, "shapes", ndim=3, allow_nan=True)
        if s.shape[1:] != (sch.n_points, 2) or s.shape[0] != len(files):
            raise ValueError(f"shapes must have shape ({len(files)}, {sch.n_points}, 2), got {s.shape}")
        b = landmark_box(s) if boxes is None else check_array(boxes, "boxes", shape=(len(files), 4))
        nm = [Path(f).stem for f in files] if names is None else list(names)
        return cls([Face(os.fspath(f), s[i], b[i], nm[i]) for i, f in enumerate(files)], sch)

    @classmethod
    def from_folder(cls, root: PathLike, scheme="ibug68", *, recursive: bool = True) -> "LandmarkDataset":
        """Images with an iBUG ``.pts`` file of the same stem beside them (the 300-W layout).

        ``.pts`` files are 1-based (iBUG); points are converted to 0-based. A
        ``.pts`` without an image, or with the wrong number of points, raises
        ``ValueError`` naming the file.  Faces are sorted by path.

        Parameters
        ----------
        root : path
            Folder searched (recursively by default).
        scheme : str or Scheme
            Scheme of every ``.pts`` (its point count is checked).
        """
        from .io import read_pts

        sch = get_scheme(scheme)
        r = Path(root)
        if not r.is_dir():
            raise ValueError(f"root {os.fspath(root)!r} is not a folder")
        pts_files = sorted(r.rglob("*.pts") if recursive else r.glob("*.pts"))
        if not pts_files:
            raise ValueError(f"root {os.fspath(root)!r} holds no .pts files")
        faces = []
        for pf in pts_files:
            img = None
            for ext in IMAGE_EXTENSIONS:
                for cand in (pf.with_suffix(ext), pf.with_suffix(ext.upper())):
                    if cand.is_file():
                        img = cand
                        break
                if img is not None:
                    break
            if img is None:
                raise ValueError(f"{pf}: no image with the same name beside it (looked for {', '.join(IMAGE_EXTENSIONS)})")
            shape = read_pts(pf, n_points=sch.n_points)
            rel = pf.relative_to(r).with_suffix("")
            faces.append(Face(os.fspath(img), shape, landmark_box(shape), rel.as_posix()))
        return cls(faces, sch)

    @classmethod
    def from_coco(cls, json_path: PathLike, image_root: PathLike, scheme, *, one_based: bool = False) -> "LandmarkDataset":
        """Faces of a COCO / mmpose keypoint JSON (``image_root`` holds the ``file_name`` images).

        Boxes are the landmark boxes (the JSON's ``bbox`` is kept in
        ``self.source_boxes`` as ``[x0, y0, x1, y1]``).
        """
        from .io import read_coco_json

        sch = get_scheme(scheme)
        d = read_coco_json(json_path, sch.n_points, one_based=one_based)
        files = [os.fspath(Path(image_root) / f) for f in d["files"]]
        names = [f"{Path(f).stem}_{int(i)}" for f, i in zip(d["files"], d["ids"])]
        ds = cls.from_arrays(files, d["shapes"], sch, names=names)
        xywh = np.asarray(d["boxes"], dtype=np.float64)
        ds.source_boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        return ds

    @classmethod
    def from_hrnet_csv(cls, csv_path: PathLike, image_root: PathLike, scheme, *, one_based: bool = True) -> "LandmarkDataset":
        """Faces of an HRNet-style annotation CSV (``image_name, scale, center_w, center_h, x0, y0, ...``)."""
        from .io import read_hrnet_csv

        sch = get_scheme(scheme)
        d = read_hrnet_csv(csv_path, sch.n_points, one_based=one_based)
        files = [os.fspath(Path(image_root) / f) for f in d["names"]]
        names = [Path(f).with_suffix("").as_posix() for f in d["names"]]
        return cls.from_arrays(files, d["shapes"], sch, names=names)

    @classmethod
    def from_wflw_list(cls, list_path: PathLike, image_root: PathLike) -> "LandmarkDataset":
        """Faces of the official WFLW list (196 coordinates, the face box, 6 attributes, the image path).

        Coordinates are taken as 0-based as stored; the list's box (the WFLW
        annotators' face rectangle) is kept in ``self.source_boxes``.
        """
        p = Path(list_path)
        if not p.is_file():
            raise ValueError(f"list_path {os.fspath(list_path)!r} does not exist")
        files, shapes, rects = [], [], []
        with open(p, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 196 + 4 + 6 + 1:
                    raise ValueError(f"{p}:{ln}: expected 207 fields (196 coordinates, 4 box, 6 attributes, "
                                     f"image), got {len(parts)}")
                try:
                    vals = np.array(parts[:200], dtype=np.float64)
                except ValueError:
                    raise ValueError(f"{p}:{ln}: non-numeric coordinate") from None
                if not np.isfinite(vals).all():
                    raise ValueError(f"{p}:{ln}: non-finite coordinate")
                shapes.append(vals[:196].reshape(98, 2))
                rects.append(vals[196:200])
                files.append(os.fspath(Path(image_root) / parts[-1]))
        if not files:
            raise ValueError(f"{p}: no faces")
        names = [f"{Path(f).stem}_{i}" for i, f in enumerate(files)]
        ds = cls.from_arrays(files, np.stack(shapes), "wflw98", names=names)
        ds.source_boxes = np.stack(rects)
        return ds


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes ``a`` (K, 4) with one box ``b`` (4,)."""
    ix = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = ix * iy
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / np.maximum(area, 1e-12)


def _best_overlap(det: np.ndarray, ref: np.ndarray, min_iou: float = 0.1) -> Optional[int]:
    iou = _iou(det, ref)
    j = int(np.argmax(iou))
    return j if iou[j] >= min_iou else None


def read_boxes_file(path: PathLike) -> Dict[str, np.ndarray]:
    """Boxes per image from a predictions-format JSON: ``{file: (K, 4) landmark boxes}``.

    The format is the one ``flmcore predict`` writes (:mod:`flmcore.models`):
    ``{"images": [{"file": ..., "faces": [{"box": [x0, y0, x1, y1], "points": [[x, y], ...]}]}]}``.
    Faces with ``points`` give the landmark box of their points; others their ``box``.
    Keys are the files as written, their normalised paths and their base names.
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"boxes file {os.fspath(path)!r} does not exist")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        out: Dict[str, np.ndarray] = {}
        for entry in data["images"]:
            bx = []
            for face in entry["faces"]:
                pts = face.get("points")
                if pts:
                    a = np.asarray(pts, dtype=np.float64)
                    if a.ndim != 2 or a.shape[1] != 2 or not np.isfinite(a).all():
                        raise ValueError(f"points of a face of {entry['file']!r} must be finite [[x, y], ...]")
                    bx.append(landmark_box(a))
                else:
                    b = np.asarray(face["box"], dtype=np.float64)
                    if b.shape != (4,) or not np.isfinite(b).all() or b[2] <= b[0] or b[3] <= b[1]:
                        raise ValueError(f"box of a face of {entry['file']!r} must be finite [x0, y0, x1, y1] with "
                                         f"x1 > x0 and y1 > y0, got {face['box']!r}")
                    bx.append(b)
            arr = np.stack(bx) if bx else np.zeros((0, 4))
            out[str(entry["file"])] = arr
            out[os.path.normpath(str(entry["file"]))] = arr
            out.setdefault(Path(str(entry["file"])).name, arr)
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{p}: expected {{\"images\": [{{\"file\": ..., \"faces\": [{{\"box\": [x0, y0, x1, y1]}}]}}]}}"
                         f" ({type(exc).__name__}: {exc})") from None
    except ValueError as exc:
        raise ValueError(f"{p}: {exc}") from None
    return out


def _boxes_from_json(path: PathLike, ds: LandmarkDataset) -> np.ndarray:
    boxes = read_boxes_file(path)
    out = []
    for f in ds.faces:
        det = boxes.get(os.path.normpath(f.file), boxes.get(Path(f.file).name))
        j = None if det is None or not len(det) else _best_overlap(det, landmark_box(f.shape))
        if j is None:
            raise ValueError(f"{os.fspath(path)}: no box for face {f.name!r} ({f.file})")
        out.append(det[j])
    return np.stack(out)

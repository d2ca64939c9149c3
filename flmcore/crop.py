"""Face boxes, square crops and the similarity transform back to image pixels.

One convention is used everywhere in flmcore (training, evaluation, prediction):

1. A **face box** ``[x0, y0, x1, y1]`` in image pixels.  The *landmark box* of
   a face is the tight box of its annotated points (:func:`landmark_box`;
   300-W's "ground-truth box" convention).  Detector boxes are mapped to
   landmark boxes before cropping (:mod:`flmcore.detect`).
2. The **crop** is the square of side ``margin * max(w, h)`` centred on the
   box centre (optionally rotated by ``angle`` about it, optionally mirrored),
   resampled to ``size x size`` pixels.  flmcore's default margin is 1.25.
3. The crop is described by a 3x3 **similarity matrix** ``T`` mapping image
   pixels to crop pixels (homogeneous ``(x, y, 1)``; 0-based coordinates with
   the centre of the top-left pixel at (0, 0) in both frames)::

       u = s R(angle) (x - c) + (size - 1) / 2,     s = size / (margin * max(w, h))

   so a crop pixel ``u`` covers the image square of side ``1 / s`` centred on
   ``T^-1 u``.  Predictions map back with :func:`uncrop_points` (``T^-1``),
   exactly.
4. Resampling is bilinear; when the crop shrinks the image by 2x or more the
   image region is first box-averaged by the integer factor ``floor(1 / s)``
   (anti-aliasing), and the transform accounts for it exactly.

Everything here is NumPy + PIL (no torch).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ._validate import as_array, check_array, check_int, check_positive

__all__ = [
    "DEFAULT_MARGIN",
    "landmark_box",
    "check_box",
    "crop_transform",
    "crop_image",
    "uncrop_points",
    "transform_points",
    "as_rgb",
]

#: Default crop margin: the crop side is 1.25 x the longer side of the landmark box.
DEFAULT_MARGIN = 1.25


def landmark_box(shape) -> np.ndarray:
    """Tight box ``[x0, y0, x1, y1]`` of a face's landmarks (NaN points ignored).

    This is the 300-W "ground-truth box" convention: the box of the annotated
    points, without margin.

    Parameters
    ----------
    shape : array_like, shape (P, 2) or (B, P, 2)
        Landmarks in pixels (NaN = missing).

    Returns
    -------
    numpy.ndarray, shape (4,) or (B, 4)

    Examples
    --------
    >>> landmark_box([[10, 20], [30, 5], [np.nan, np.nan]]).tolist()
    [10.0, 5.0, 30.0, 20.0]
    """
    a = check_array(shape, "shape", ndim=(2, 3), allow_nan=True)
    if a.shape[-1] != 2:
        raise ValueError(f"shape must have shape (P, 2) or (B, P, 2), got {a.shape}")
    ok = ~np.isnan(a).any(-1)
    if not ok.any(-1).all():
        raise ValueError("shape must have at least one annotated (non-NaN) point per face")
    big = np.where(ok[..., None], a, np.inf)
    small = np.where(ok[..., None], a, -np.inf)
    return np.concatenate([big.min(-2), small.max(-2)], -1)


def check_box(box, name: str = "box", image_size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Validate a box ``[x0, y0, x1, y1]`` (finite, ``x1 > x0``, ``y1 > y0``).

    With ``image_size = (H, W)`` the box must also overlap the image.

    Examples
    --------
    >>> check_box([0, 0, 10, 5]).tolist()
    [0.0, 0.0, 10.0, 5.0]
    >>> check_box([0, 0, -1, 5])
    Traceback (most recent call last):
    ...
    ValueError: box must satisfy x1 > x0 and y1 > y0, got [0.0, 0.0, -1.0, 5.0]
    """
    b = check_array(box, name, shape=(4,))
    if not (b[2] > b[0] and b[3] > b[1]):
        raise ValueError(f"{name} must satisfy x1 > x0 and y1 > y0, got {b.tolist()}")
    if image_size is not None:
        h, w = image_size
        if b[2] < -0.5 or b[3] < -0.5 or b[0] > w - 0.5 or b[1] > h - 0.5:
            raise ValueError(f"{name} {b.tolist()} lies outside the image of size {w}x{h} (W x H)")
    return b


def crop_transform(box, size: int, *, margin: float = DEFAULT_MARGIN, angle: float = 0.0,
                   scale: float = 1.0, shift: Sequence[float] = (0.0, 0.0), flip: bool = False) -> np.ndarray:
    """Similarity ``T`` (3x3) mapping image pixels to the pixels of a square crop.

    ``u = s R(angle) F (x - c') + (size - 1) / 2`` with ``c' = c + shift * side``,
    ``side = margin * max(w, h) / scale``, ``s = size / side`` and ``F`` the
    horizontal mirror when ``flip`` (about the box centre).

    Parameters
    ----------
    box : array_like (4,)
        ``[x0, y0, x1, y1]`` in image pixels.
    size : int
        Crop side in pixels.
    margin : float
        Crop side over the box's longer side (default 1.25).
    angle : float
        Rotation of the crop in degrees: the crop window turns clockwise in
        the image as displayed (y down), so the face appears turned
        counter-clockwise by ``angle`` in the crop (a point right of the
        centre moves up).
    scale : float
        Zoom factor (> 1 zooms in: the face looks larger).
    shift : (float, float)
        Translation of the crop centre, as a fraction of the crop side.
    flip : bool
        Mirror the crop horizontally (landmark indices must then be permuted
        with the scheme's flip permutation, see :func:`flmcore.augment.hflip_points`).

    Returns
    -------
    numpy.ndarray, shape (3, 3)

    Examples
    --------
    >>> T = crop_transform([10, 10, 50, 50], 64, margin=1.0)
    >>> np.round(T @ [30, 30, 1], 6).tolist()  # box centre -> crop centre
    [31.5, 31.5, 1.0]
    """
    b = check_box(box)
    size = check_int(size, "size", min_value=1)
    margin = check_positive(margin, "margin")
    scale = check_positive(scale, "scale")
    sh = check_array(shift, "shift", shape=(2,))
    ang = float(check_array(angle, "angle", ndim=0))
    side = margin * max(b[2] - b[0], b[3] - b[1]) / scale
    c = np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0]) + sh * side
    s = size / side
    t = math.radians(ang)
    rot = np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    if flip:
        rot = np.array([[-1.0, 0.0], [0.0, 1.0]]) @ rot
    a = s * rot
    out = np.eye(3)
    out[:2, :2] = a
    out[:2, 2] = (size - 1) / 2.0 - a @ c
    return out


def transform_points(points, T) -> np.ndarray:
    """Apply a 3x3 affine matrix (or a batch ``(B, 3, 3)``) to points ``(..., P, 2)``; NaN stays NaN.

    Examples
    --------
    >>> transform_points([[1.0, 2.0]], np.diag([2.0, 3.0, 1.0])).tolist()
    [[2.0, 6.0]]
    """
    p = check_array(points, "points", allow_nan=True, allow_empty=True)
    m = check_array(T, "T", ndim=(2, 3))
    if m.shape[-2:] != (3, 3) or p.shape[-1:] != (2,):
        raise ValueError(f"T must be (3, 3) or (B, 3, 3) and points (..., P, 2), got {m.shape} and {p.shape}")
    if m.ndim == 3:
        return np.einsum("bij,bpj->bpi", m[:, :2, :2], p) + m[:, None, :2, 2]
    return p @ m[:2, :2].T + m[:2, 2]


def uncrop_points(points, T) -> np.ndarray:
    """Map crop-pixel points back to image pixels with ``T^-1`` (``T`` from :func:`crop_transform`).

    Parameters
    ----------
    points : array_like, shape (P, 2) or (B, P, 2)
    T : array_like, shape (3, 3) or (B, 3, 3)

    Examples
    --------
    >>> T = crop_transform([10, 10, 50, 50], 64, angle=20.0)
    >>> x = np.array([[12.0, 40.0]])
    >>> np.allclose(uncrop_points(transform_points(x, T), T), x)
    True
    """
    m = check_array(T, "T", ndim=(2, 3))
    return transform_points(points, np.linalg.inv(m))


def as_rgb(image, name: str = "image") -> np.ndarray:
    """Image array -> ``(H, W, 3)`` uint8 RGB (grayscale replicated, alpha dropped, float in [0, 1] scaled).

    Examples
    --------
    >>> as_rgb(np.zeros((4, 5), np.uint8)).shape
    (4, 5, 3)
    """
    a = as_array(image, name)
    if a.dtype == object or a.dtype.kind not in "uifb":
        raise TypeError(f"{name} must be a numeric image array, got dtype {a.dtype}")
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    elif a.ndim == 3 and a.shape[-1] in (3, 4):
        a = a[..., :3]
    else:
        raise ValueError(f"{name} must have shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"{name} must not be empty, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.dtype.kind == "f":
            if not np.isfinite(a).all():
                raise ValueError(f"{name} contains NaN or infinite values")
            a = np.clip(a * 255.0 + 0.5, 0, 255)
        elif a.dtype == np.uint16:
            a = a / 257.0 + 0.5
        a = np.clip(a, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


def crop_image(image, T, size: int, *, fill: Union[int, Tuple[int, int, int]] = 0) -> np.ndarray:
    """Resample the crop described by ``T`` (image -> crop pixels) from ``image``.

    Bilinear sampling at the crop pixel centres; if ``T`` shrinks the image
    by 2x or more, the needed image region is first box-averaged by the
    integer factor ``k = floor(1 / s)`` (anti-aliasing; the reduced pixel
    ``j`` covers image pixels ``[k j, k j + k)``, and the transform is
    corrected exactly).  Pixels outside the image take ``fill``.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 3) or (H, W, 4)
        uint8 (or float in [0, 1]); returned as RGB.
    T : array_like, shape (3, 3)
        From :func:`crop_transform`.
    size : int
        Output side.
    fill : int or (int, int, int)
        Value of pixels outside the image.

    Returns
    -------
    numpy.ndarray of uint8, shape (size, size, 3)

    Examples
    --------
    >>> img = np.zeros((100, 80), np.uint8); img[40:60, 30:50] = 255
    >>> T = crop_transform([30, 40, 49, 59], 32, margin=2.0)
    >>> crop = crop_image(img, T, 32)
    >>> crop.shape, int(crop[16, 16, 0]), int(crop[1, 1, 0])
    ((32, 32, 3), 255, 0)
    """
    from PIL import Image

    rgb = as_rgb(image)
    m = check_array(T, "T", shape=(3, 3))
    size = check_int(size, "size", min_value=1)
    a = m[:2, :2]
    det = float(np.linalg.det(a))
    if not np.isfinite(det) or abs(det) < 1e-12:
        raise ValueError(f"T must be an invertible similarity, got determinant {det}")
    inv = np.linalg.inv(m)
    s = math.sqrt(abs(det))  # crop pixels per image pixel
    h, w = rgb.shape[:2]
    # image region that the crop needs (plus a 2-pixel border for the bilinear support)
    corners = np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]])
    pre = corners @ inv[:2, :2].T + inv[:2, 2]
    k = max(1, int(math.floor(1.0 / s))) if s < 0.5 else 1
    pad = 2 * k + 2
    x0 = int(max(0, math.floor(pre[:, 0].min()) - pad))
    y0 = int(max(0, math.floor(pre[:, 1].min()) - pad))
    x1 = int(min(w, math.ceil(pre[:, 0].max()) + pad + 1))
    y1 = int(min(h, math.ceil(pre[:, 1].max()) + pad + 1))
    fill_t = (fill,) * 3 if np.isscalar(fill) else tuple(int(v) for v in fill)
    if x1 <= x0 or y1 <= y0:  # the crop misses the image entirely
        return np.broadcast_to(np.asarray(fill_t, np.uint8), (size, size, 3)).copy()
    region = Image.fromarray(rgb[y0:y1, x0:x1])
    # source (region) coordinates of image point x: x - (x0, y0)
    if k > 1:
        region = region.reduce(k)  # reduced pixel j covers region pixels [k j, k j + k): centre k j + (k-1)/2
    # crop pixel u -> region-source coordinate r = (inv(u) - off - (k-1)/2) / k
    a_inv = inv[:2, :2] / k
    t_inv = (inv[:2, 2] - np.array([x0, y0]) - (k - 1) / 2.0) / k
    # PIL samples input at A (u + 0.5) + c - 0.5 for output pixel u (pixel-centre convention)
    c = t_inv + 0.5 - a_inv @ np.array([0.5, 0.5])
    coeffs = (a_inv[0, 0], a_inv[0, 1], c[0], a_inv[1, 0], a_inv[1, 1], c[1])
    # pixels mapping outside the image take the fill colour
    out = region.transform((size, size), Image.AFFINE, coeffs, resample=Image.BILINEAR, fillcolor=fill_t)
    return np.array(out, dtype=np.uint8, order="C")  # a writable copy

"""Shape-indexed SIFT: one SIFT descriptor per landmark of a shape.

The feature :math:`\\phi(I, S)` of the cascaded regressors (SDM, DRN-SSR eq. 4 and 10)
is the concatenation of 128-dimensional SIFT descriptors centred at the landmarks of the
current shape estimate ``S``.  Each descriptor follows Lowe (2004) and OpenCV's
``calcSIFTDescriptor``:

* the image is smoothed by a Gaussian of standard deviation ``smooth`` (OpenCV's
  octave-0 layer-0 image: :math:`\\sqrt{1.6^2 - 0.5^2} \\approx 1.52`), then gradients are
  central differences at the pixel centres (zero on the outer one-pixel ring and outside
  the image: *zero-padded sampling*, never an out-of-bounds read);
* every pixel whose frame coordinates :math:`(u, v)` (cell units, rotated by the frame
  angle) fall in :math:`(-2.5, 2.5)^2` adds its gradient magnitude, weighted by a Gaussian
  of :math:`\\sigma = 2` cells, to a 4 x 4 x 8 histogram with trilinear soft binning
  (bilinear in the cells, linear in the orientation);
* the 128-vector is L2-normalised, clipped at 0.2 and renormalised.

Gradients are computed once per image and shared by all (overlapping) windows.  For
upright frames (angle exactly 0) the spatial weights are separable: each image is split
once into 8 orientation channels (the linear orientation binning) and every window row
is reduced against the 4 column-cell kernels, then spread on its row cells; rotated
frames scatter each pixel into the histogram.  Both give the same descriptor up to
float32 rounding.

Correspondence with OpenCV (``cv2.SIFT_create().compute`` with
``cv2.KeyPoint(x, y, size, angle)``, ``octave = 0``): ``size = window / 6`` (OpenCV's
cell width is ``3 * size / 2``), ``angle = degrees(theta)``.  OpenCV rounds the
keypoint centre to the nearest pixel and quantises the descriptor to integers in
[0, 255]; this implementation keeps the sub-pixel centre and floats.

Nothing here imports torch; the torch adapter is :class:`flmcore.nn.ShapeIndexedSIFT`.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import numpy as np

from ._validate import as_array, check_array, check_images, check_num_threads, check_positive, check_shapes

__all__ = ["shape_indexed_sift", "similarity_frames", "OPENCV_SMOOTH", "DESCRIPTOR_SIZE"]

#: Gaussian pre-smoothing of OpenCV's octave-0 image: sqrt(1.6**2 - 0.5**2).
OPENCV_SMOOTH = math.sqrt(1.6 ** 2 - 0.5 ** 2)
#: Length of one descriptor (4 x 4 cells x 8 orientation bins).
DESCRIPTOR_SIZE = 128
#: Smallest descriptor side in pixels: the kernels use ``1 / cell width`` in float32.
MIN_WINDOW = 1e-3


def similarity_frames(shapes, reference) -> tuple:
    """Scale and rotation of the least-squares similarity mapping ``reference`` onto each shape.

    Parameters
    ----------
    shapes : array_like, shape (P, 2) or (B, P, 2)
        Landmarks in pixels.
    reference : array_like, shape (P, 2)
        Reference (e.g. mean) shape.

    Returns
    -------
    scale : numpy.ndarray, shape () or (B,)
        Similarity scale ``s`` (pixels per reference unit).
    angle : numpy.ndarray, shape () or (B,)
        Rotation ``theta`` in radians, in pixel coordinates (x right, y down): the
        reference x axis maps to the direction ``(cos theta, sin theta)``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([[0., 0.], [1., 0.], [0., 1.]])
    >>> s, t = similarity_frames(2 * ref @ np.array([[0., 1.], [-1., 0.]]), ref)
    >>> round(float(s), 6), round(float(np.degrees(t)), 6)
    (2.0, 90.0)
    """
    from .procrustes import align

    S = check_shapes(shapes, "shapes")
    ref = check_shapes(reference, "reference", batch=False, n_points=S.shape[-2], check_degenerate=True)
    _, T = align(ref, S)
    R = np.asarray(T.rotation)
    return np.asarray(T.scale, dtype=np.float64), np.arctan2(R[..., 1, 0], R[..., 0, 0])


def _broadcast_param(value, name: str, B: int, P: int, positive: bool) -> np.ndarray:
    arr = check_array(value, name, ndim=(0, 1, 2)).reshape(np.shape(value))
    if arr.ndim == 1:
        if arr.shape[0] != B:
            raise ValueError(f"{name} must be a scalar, shape ({B},) or ({B}, {P}), got shape {arr.shape}")
        arr = arr[:, None]
    elif arr.ndim == 2 and (arr.shape[0] not in (1, B) or arr.shape[1] not in (1, P)):
        raise ValueError(f"{name} must be a scalar, shape ({B},) or ({B}, {P}), got shape {arr.shape}")
    if positive and not (arr > 0).all():
        raise ValueError(f"{name} must be > 0, got minimum {arr.min()}")
    return np.broadcast_to(arr, (B, P))


def _gaussian_taps(sigma: float) -> np.ndarray:
    if sigma == 0:
        return np.ones(1, np.float32)
    radius = int(4.0 * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return (w / w.sum()).astype(np.float32)


def _prepare(images, shapes, window, orientation, reference, smooth, num_threads):
    """Validate the arguments of :func:`shape_indexed_sift`; return the kernel inputs.

    Returns ``(images (B, H, W) float32, keypoints (B, P, 4) float64 rows
    (x, y, cell width, angle), taps float32, num_threads, single)``.
    """
    S = check_shapes(shapes, "shapes")
    ishape = as_array(images, "images").shape
    if S.ndim == 2 and len(ishape) == 3 and ishape[-1] not in (3, 4):
        raise ValueError(f"shapes must have shape (B, P, 2) for a batch of images of shape {ishape}, "
                         f"got shape {S.shape}")
    # the shapes say whether images is one image or a batch: an (N, H, 3) array is then never
    # mistaken for a colour image (nor a colour image for a batch of width-3 images)
    imgs = check_images(images, "images", batch=S.ndim == 3)
    single = imgs.ndim == 2
    if single:
        imgs, S = imgs[None], S[None]
    elif S.shape[0] != imgs.shape[0]:
        raise ValueError(f"images and shapes must hold the same number of faces, got {imgs.shape[0]} images "
                         f"and {S.shape[0]} shapes")
    B, H, W = imgs.shape
    P = S.shape[1]
    # descriptors do not depend on the intensity scale (they are normalised), but float32 squared
    # gradients overflow above ~1e19 and underflow below ~1e-19: bring such images to max |I| = 1
    peak = np.abs(imgs).max(axis=(1, 2))
    odd = (peak > 1e6) | ((peak > 0) & (peak < 1e-6))
    if odd.any():  # a new array: never scale the caller's images in place
        imgs = imgs / np.where(odd, peak, 1.0).astype(np.float32)[:, None, None]
    if H < 3 or W < 3:
        raise ValueError(f"images must be at least 3x3 pixels, got {H}x{W}")
    smooth = check_positive(smooth, "smooth", strict=False)
    taps = _gaussian_taps(smooth)
    if (taps.size - 1) // 2 >= min(H, W):
        raise ValueError(f"smooth={smooth} needs a filter radius {(taps.size - 1) // 2} smaller than the image "
                         f"side {min(H, W)}")
    nt = check_num_threads(num_threads)

    side = _broadcast_param(window, "window", B, P, positive=True)
    if isinstance(orientation, str):
        if orientation != "shape":
            raise ValueError(f"orientation must be a number, an array or 'shape'; got {orientation!r}")
        if reference is None:
            raise ValueError("orientation='shape' needs a reference shape (reference=...)")
        theta = None
    else:
        theta = _broadcast_param(orientation, "orientation", B, P, positive=False)
    if reference is not None:
        scale, angle = similarity_frames(S, reference)
        side = side * scale[:, None]
        if theta is None:
            theta = np.broadcast_to(angle[:, None], (B, P))
    # reduce in float64: the kernel bins the angle in float32, where a huge angle becomes inf/NaN
    theta = np.where(np.abs(theta) > 2.0 * math.pi, np.mod(theta, 2.0 * math.pi), theta)
    cw = side / 4.0
    if not (cw <= 16.0 * max(H, W)).all():
        raise ValueError(f"window must be at most {64 * max(H, W)} pixels for {H}x{W} images, got {4 * cw.max()}")
    if not (side >= MIN_WINDOW).all():
        raise ValueError(f"window must be at least {MIN_WINDOW} pixels (after the reference frame's scale), "
                         f"got {float(side.min())!r}")
    # points whose support misses the image are moved to a spot just as far outside
    # (the descriptor stays zero) so that integer pixel bounds never overflow
    ext = 2.5 * cw * math.sqrt(2.0) + 2.0
    kp = np.empty((B, P, 4), np.float64)
    kp[..., 0] = np.clip(S[..., 0], -ext, W - 1 + ext)
    kp[..., 1] = np.clip(S[..., 1], -ext, H - 1 + ext)
    kp[..., 2] = cw
    kp[..., 3] = theta
    return imgs, kp, taps, nt, single


def shape_indexed_sift(
    images,
    shapes,
    *,
    window: Union[float, np.ndarray] = 32.0,
    orientation: Union[float, np.ndarray, str] = 0.0,
    reference=None,
    smooth: float = OPENCV_SMOOTH,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    """SIFT descriptors centred at every landmark: :math:`\\phi(I, S)` of DRN-SSR eq. (4).

    Parameters
    ----------
    images : array_like, shape (H, W) or (B, H, W)
        Grayscale images, uint8 or float (float32 in [0, 1] by convention); ``H, W >= 3``.
    shapes : array_like, shape (P, 2) or (B, P, 2)
        Landmarks ``(x, y)`` in pixels (0-based, pixel centres on integers); finite.
    window : float or array_like, shape (B,) or (B, P)
        Side of the descriptor square (4 x 4 cells) in pixels.  When ``reference`` is
        given, in reference-shape units instead: the pixel side is ``window * s_b``
        with ``s_b`` the similarity scale of shape ``b`` (scale-normalised features).
    orientation : float, array_like of shape (B,) or (B, P), or ``"shape"``
        Angle ``theta`` of the descriptor frame in radians, pixel coordinates (x right,
        y down; OpenCV's ``KeyPoint.angle`` in radians).  ``"shape"`` uses the rotation
        of each shape w.r.t. ``reference`` (rotation-normalised features; requires
        ``reference``).
    reference : array_like, shape (P, 2), optional
        Reference shape (e.g. the mean shape) defining the similarity frame of each
        shape, see :func:`similarity_frames`.
    smooth : float
        Standard deviation (pixels) of the Gaussian pre-smoothing, ``0`` for none.
        The default equals OpenCV's octave-0 image (``sqrt(1.6**2 - 0.5**2)``).
    num_threads : int, optional
        OpenMP threads (``None``: all cores); the result is identical for any count.

    Returns
    -------
    numpy.ndarray of float32, shape (P, 128) or (B, P, 128)
        Unit-norm descriptors (all zeros where the window holds no image gradient),
        index ``(row * 4 + col) * 8 + bin`` with rows along the frame's y axis and
        orientation bins counter-clockwise on screen from the frame's x axis.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    >>> d = shape_indexed_sift(img, [[20.0, 30.0], [40.5, 33.2]], window=16.0)
    >>> d.shape, bool(np.allclose(np.linalg.norm(d, axis=-1), 1.0))
    ((2, 128), True)
    """
    from ._ext.sift import sift_descriptors

    imgs, kp, taps, nt, single = _prepare(images, shapes, window, orientation, reference, smooth, num_threads)
    B, H, W = imgs.shape
    P = kp.shape[1]
    out = np.empty((B, P, DESCRIPTOR_SIZE), np.float32)
    budget = 64 * 2 ** 20 // max(1, 48 * H * W)  # smoothed image, gradients and 8 orientation channels
    chunk = int(max(1, min(B, max(4 * nt, 8), budget)))
    sift_descriptors(imgs, taps, kp, out, nt, chunk)
    return out[0] if single else out

"""Training augmentation applied to a face crop and its landmarks together.

Geometric jitter (mirror, rotation, scale, translation) is folded into the
crop's similarity transform (:func:`flmcore.crop.crop_transform`), so the image
is resampled once and the landmarks follow exactly; photometric changes
(grayscale, colour jitter, blur, occlusion rectangles) act on the crop.

Presets (:data:`PRESETS`, name -> :class:`Augmentation`):

``"pipnet"``
    The official PIPNet recipe (Jin, Liao & Shao, IJCV 2021; ``lib/data_utils.py``
    of its code): translation by up to +-30 px of a 256-px crop (p = 0.5),
    horizontal flip (p = 0.5), rotation uniform in +-30 deg (p = 0.5), Gaussian
    blur of radius U(0, 5) px (p = 0.3), one occlusion rectangle of up to 0.4 x
    0.4 of the crop in a random colour (p = 0.5) and grayscale conversion
    (p = 0.2).
``"flmcore"`` (the default of :mod:`flmcore.train`)
    ``"pipnet"`` plus a scale jitter of +-10 % (p = 0.5) and brightness /
    contrast / saturation jitter of +-25 % (p = 0.5): the 300-W training set
    is small and face boxes at test time come from a detector, whose box size
    varies more than the landmark box.
``"legacy"``
    flmcore 0.1's ``train_pipnet`` augmentation (rotation +-15 deg, zoom +-10 %,
    shift +-6 %, intensity +-20 %, no flip, no occlusion, no blur), kept for
    ablations.
``"none"``
    No augmentation.

Every draw comes from the ``rng`` passed in (a seed or a
``numpy.random.Generator``): the same seed gives the same crops.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple, Union

import numpy as np

from ._validate import check_array, check_int, check_positive, check_probability, check_rng
from .crop import DEFAULT_MARGIN, check_box, crop_image, crop_transform, transform_points
from .schemes import flip_permutation

__all__ = ["Augmentation", "PRESETS", "get_augmentation", "hflip_points", "augmented_crop",
           "gaussian_blur", "occlude", "color_jitter", "to_grayscale"]


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of every augmentation (``0`` switches one off).

    Attributes
    ----------
    flip : float
        Probability of a horizontal mirror (landmarks permuted per scheme).
    rotate_p, rotate : float
        Probability of a rotation, and its range (degrees, uniform in +-``rotate``).
    shift_p, shift : float
        Probability of a translation of the crop, and its range (fraction of
        the crop side, uniform in +-``shift`` per axis).
    scale_p, scale : float
        Probability of a zoom, and its range (uniform factor in ``1 +- scale``).
    blur_p, blur : float
        Probability of a Gaussian blur, and the largest radius (pixels of a
        256-px crop; scaled with the crop size).
    occlusion_p, occlusion : float
        Probability of one occlusion rectangle, and its largest side (fraction
        of the crop side).
    gray_p : float
        Probability of converting the crop to grayscale (kept as 3 channels).
    color_p, color : float
        Probability of brightness / contrast / saturation jitter, and its range.
    """

    flip: float = 0.5
    rotate_p: float = 0.5
    rotate: float = 30.0
    shift_p: float = 0.5
    shift: float = 30.0 / 256.0
    scale_p: float = 0.0
    scale: float = 0.0
    blur_p: float = 0.3
    blur: float = 5.0
    occlusion_p: float = 0.5
    occlusion: float = 0.4
    gray_p: float = 0.2
    color_p: float = 0.0
    color: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p") or f.name == "flip":
                check_probability(v, f.name)
            else:
                check_positive(v, f.name, strict=False)
        if self.scale >= 1:
            raise ValueError(f"scale must be < 1 (zoom factor 1 +- scale), got {self.scale}")
        if self.occlusion > 1:
            raise ValueError(f"occlusion must be a fraction of the crop side in [0, 1], got {self.occlusion}")

    def replace(self, **changes) -> "Augmentation":
        """A copy with some fields changed (unknown names raise ``ValueError``)."""
        names = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - names)
        if bad:
            raise ValueError(f"unknown augmentation option(s) {bad}; valid: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> Dict[str, float]:
        return dataclasses.asdict(self)


PRESETS: Dict[str, Augmentation] = {
    "pipnet": Augmentation(),
    "flmcore": Augmentation(scale_p=0.5, scale=0.1, color_p=0.5, color=0.25),
    "legacy": Augmentation(flip=0.0, rotate_p=1.0, rotate=15.0, shift_p=1.0, shift=0.06, scale_p=1.0, scale=0.1,
                           blur_p=0.0, occlusion_p=0.0, gray_p=0.0, color_p=1.0, color=0.2),
    "none": Augmentation(flip=0.0, rotate_p=0.0, shift_p=0.0, blur_p=0.0, occlusion_p=0.0, gray_p=0.0),
}


def get_augmentation(spec: Union[None, str, Augmentation, dict] = "flmcore") -> Augmentation:
    """An :class:`Augmentation` from a preset name, a dict (``{"preset": ..., overrides}``) or itself.

    Examples
    --------
    >>> get_augmentation({"preset": "pipnet", "flip": 0.0}).flip
    0.0
    """
    if spec is None:
        return PRESETS["none"]
    if isinstance(spec, Augmentation):
        return spec
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"augmentation preset must be one of {sorted(PRESETS)}, got {spec!r}")
        return PRESETS[spec]
    if isinstance(spec, dict):
        d = dict(spec)
        base = get_augmentation(d.pop("preset", "flmcore"))
        return base.replace(**d)
    raise TypeError(f"augmentation must be a preset name, a dict or an Augmentation, got {type(spec).__name__}")


def hflip_points(points, width: float, scheme) -> np.ndarray:
    """Landmarks of the horizontally mirrored image (``x -> width - 1 - x``), relabelled.

    Parameters
    ----------
    points : array_like, shape (P, 2) or (B, P, 2)
    width : float
        Image width in pixels.
    scheme : str or Scheme
        Gives the flip permutation (:func:`flmcore.schemes.flip_permutation`).

    Examples
    --------
    >>> pts = np.zeros((68, 2)); pts[36] = [10, 5]
    >>> hflip_points(pts, 100, "ibug68")[45].tolist()  # left outer eye corner becomes the right one
    [89.0, 5.0]
    """
    p = check_array(points, "points", ndim=(2, 3), allow_nan=True)
    perm = flip_permutation(scheme)
    if p.shape[-2] != perm.size or p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., {perm.size}, 2) for scheme {scheme!r}, got {p.shape}")
    out = p.copy()
    out[..., 0] = float(width) - 1.0 - out[..., 0]
    return out[..., perm, :]


def to_grayscale(img: np.ndarray) -> np.ndarray:
    """RGB uint8 -> the BT.601 luma repeated in 3 channels (uint8)."""
    y = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(np.clip(y + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def gaussian_blur(img: np.ndarray, radius: float) -> np.ndarray:
    """PIL's Gaussian blur of an RGB uint8 image (``radius`` = standard deviation in pixels)."""
    from PIL import Image, ImageFilter

    radius = check_positive(radius, "radius", strict=False)
    if radius == 0:
        return img.copy()
    return np.array(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)))


def occlude(img: np.ndarray, rect: Tuple[int, int, int, int], color: Tuple[int, int, int]) -> np.ndarray:
    """Fill ``rect = (x0, y0, w, h)`` of an RGB uint8 image with ``color`` (a copy)."""
    out = img.copy()
    x0, y0, w, h = (int(v) for v in rect)
    out[max(0, y0):max(0, y0 + h), max(0, x0):max(0, x0 + w)] = np.asarray(color, np.uint8)
    return out


def color_jitter(img: np.ndarray, brightness: float, contrast: float, saturation: float) -> np.ndarray:
    """Scale brightness, contrast (about the mean luma) and saturation (about the pixel's luma) of RGB uint8."""
    x = img.astype(np.float32) * np.float32(brightness)
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - luma.mean()) * np.float32(contrast) + luma.mean()
    luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
    x = (x - luma[..., None]) * np.float32(saturation) + luma[..., None]
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def augmented_crop(image, points, box, size: int, *, scheme, augmentation: Union[None, str, Augmentation] = "flmcore",
                   rng=None, margin: float = DEFAULT_MARGIN) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One randomly augmented square crop of a face and its landmarks in the crop.

    Parameters
    ----------
    image : array_like, shape (H, W), (H, W, 3) or (H, W, 4)
        The photo (uint8, any size).
    points : array_like, shape (P, 2)
        Landmarks in image pixels (NaN = missing; they stay NaN).
    box : array_like (4,)
        Face box ``[x0, y0, x1, y1]`` the crop is centred on (the landmark box
        in training, see :mod:`flmcore.crop`).
    size : int
        Crop side (pixels).
    scheme : str or Scheme
        Annotation scheme (flip permutation).
    augmentation : preset name, Augmentation or None
        What to apply (None = plain crop).
    rng : int or numpy.random.Generator
        Source of every random draw.
    margin : float
        Crop side over the box's longer side before the scale jitter.

    Returns
    -------
    crop : numpy.ndarray of uint8, shape (size, size, 3)
    points : numpy.ndarray, shape (P, 2)
        Landmarks in crop pixels, in the scheme's order (mirrored faces relabelled).
    T : numpy.ndarray, shape (3, 3)
        Image -> crop similarity (including the mirror), for :func:`flmcore.crop.uncrop_points`.

    Examples
    --------
    >>> img = np.zeros((200, 160, 3), np.uint8)
    >>> pts = np.random.default_rng(0).uniform(40, 120, (68, 2))
    >>> crop, p, T = augmented_crop(img, pts, [40, 40, 120, 120], 64, scheme="ibug68", rng=0)
    >>> crop.shape, p.shape
    ((64, 64, 3), (68, 2))
    """
    aug = get_augmentation(augmentation)
    r = check_rng(rng)
    size = check_int(size, "size", min_value=1)
    b = check_box(box, "box", image_size=np.shape(image)[:2])
    pts = check_array(points, "points", ndim=2, allow_nan=True)
    # a fixed number of draws per sample, so that switching one augmentation off leaves the others' draws alone
    u = r.random(20)
    flip = bool(u[0] < aug.flip)
    angle = (u[2] * 2 - 1) * aug.rotate if u[1] < aug.rotate_p else 0.0
    shift = ((u[4:6] * 2 - 1) * aug.shift) if u[3] < aug.shift_p else np.zeros(2)
    scale = 1.0 + (u[7] * 2 - 1) * aug.scale if u[6] < aug.scale_p else 1.0
    T = crop_transform(b, size, margin=margin, angle=angle, scale=scale, shift=shift, flip=flip)
    crop = crop_image(image, T, size)
    out = transform_points(pts, T)
    if flip:
        out = out[flip_permutation(scheme)]
    if u[8] < aug.gray_p:
        crop = to_grayscale(crop)
    if u[9] < aug.color_p:
        j = (u[16:19] * 2 - 1) * aug.color + 1.0
        crop = color_jitter(crop, *j)
    if u[10] < aug.blur_p:
        crop = gaussian_blur(crop, u[11] * aug.blur * size / 256.0)
    if u[12] < aug.occlusion_p:
        w = int(size * aug.occlusion * u[13])
        h = int(size * aug.occlusion * u[14])
        x0 = int((size - w) * u[19])
        y0 = int((size - h) * u[15])
        crop = occlude(crop, (x0, y0, w, h), tuple(int(v) for v in r.integers(0, 256, 3)))
    return crop, out, T

"""The small real-data sample carried in the source repository.

The sample (``flmcore/data/sample/*.npz``, about 4 MB) is derived from public
research datasets by ``tools/make_sample.py``; see
``flmcore/data/sample/PROVENANCE.md`` for sources, terms and attributions.
It is for research use only and is **not** shipped in wheels: it is found
next to this module in a source checkout or an editable install.  Elsewhere
(a wheel install), put the ``<name>.npz`` files in a folder of your own and
point the environment variable ``FLMCORE_DATA`` at it (``flmcore demo --data
DIR`` does the same for one run); :func:`sample_available` tells whether a
part can be loaded.

=====================  ====================================================================
name                   arrays
=====================  ====================================================================
``helen_pairs``        ``images`` (234, 128, 128) uint8 grayscale face crops,
                       ``shapes68`` (234, 68, 2) iBUG-68 and ``shapes29`` (234, 29, 2)
                       ``helen_zhou29`` points in crop pixels, ``names``, ``boxes``
                       (crop square ``x0, y0, side`` in the small HELEN image),
                       ``scale68`` (small / original image size, x and y)
``helen_unlabelled``   ``images`` (114, 128, 128) uint8, ``shapes29`` (114, 29, 2),
                       ``names``, ``boxes``
``helen68_shapes``     ``shapes`` (870, 68, 2) iBUG-68 in original image pixels,
                       ``names``, ``sizes`` (870, 2) width/height, ``has29`` (870,) bool
``aflw2000``           ``pts21`` (2000, 21, 2) AFLW-21 with NaN for missing points,
                       ``pts68`` (2000, 68, 2) manual re-annotation, ``yaw`` (2000,)
                       absolute yaw in degrees, ``roi_box`` (2000, 4) ``x1, y1, x2, y2``
=====================  ====================================================================

All coordinates are float64, 0-based ``(x, y)`` pixels.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np

__all__ = ["load_sample", "list_samples", "sample_dir", "sample_available", "use_data_dir",
           "SampleNotAvailableError"]

_SAMPLES: Tuple[str, ...] = ("helen_pairs", "helen_unlabelled", "helen68_shapes", "aflw2000")


class SampleNotAvailableError(FileNotFoundError):
    """The bundled sample is missing (e.g. flmcore was installed from a wheel)."""


_DATA_DIR: Optional[Path] = None  # set by use_data_dir (e.g. ``flmcore demo --data DIR``)


def sample_dir() -> Path:
    """Folder that holds the sample files (it may not exist in a wheel install).

    In order: the folder given to :func:`use_data_dir`, else ``$FLMCORE_DATA``,
    else ``flmcore/data/sample`` next to this module (source checkouts only).

    Examples
    --------
    >>> sample_dir().name  # doctest: +SKIP
    'sample'
    """
    if _DATA_DIR is not None:
        return _DATA_DIR
    env = os.environ.get("FLMCORE_DATA")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parent / "sample"


@contextlib.contextmanager
def use_data_dir(path: Union[str, os.PathLike]) -> Iterator[Path]:
    """Within the ``with`` block, :func:`load_sample` reads ``<path>/<name>.npz``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d, use_data_dir(d):
    ...     sample_available("helen_pairs")
    False
    """
    global _DATA_DIR
    saved = _DATA_DIR
    _DATA_DIR = Path(path).expanduser().resolve()
    try:
        yield _DATA_DIR
    finally:
        _DATA_DIR = saved


def sample_available(name: str) -> bool:
    """Whether ``load_sample(name)`` finds its file (False in a wheel install without data).

    Examples
    --------
    >>> sample_available("helen_pairs") in (True, False)
    True
    """
    if name not in _SAMPLES:
        raise ValueError(f"unknown sample {name!r}; available samples: {', '.join(_SAMPLES)}")
    return (sample_dir() / f"{name}.npz").is_file()


def list_samples() -> Tuple[str, ...]:
    """Names accepted by :func:`load_sample`.

    Examples
    --------
    >>> list_samples()
    ('helen_pairs', 'helen_unlabelled', 'helen68_shapes', 'aflw2000')
    """
    return _SAMPLES


def _delta_decode(d: np.ndarray) -> np.ndarray:
    """Undo ``tools/make_sample.py:delta_encode`` (uint8 sums wrap modulo 256)."""
    return np.cumsum(np.cumsum(d, axis=1, dtype=np.uint8), axis=2, dtype=np.uint8)


def load_sample(name: str) -> Dict[str, np.ndarray]:
    """Load one part of the bundled real-data sample.

    Parameters
    ----------
    name : str
        One of :func:`list_samples` (see the module docstring for contents).

    Returns
    -------
    dict of str -> numpy.ndarray
        Coordinates as float64 (NaN = missing), images as uint8, names as str
        arrays.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the available ones).
    SampleNotAvailableError
        The sample files are absent: they live only in the source repository
        (not in wheels).

    Examples
    --------
    >>> d = load_sample("helen_pairs")
    >>> d["images"].shape, d["shapes68"].shape, d["shapes68"].dtype
    ((234, 128, 128), (234, 68, 2), dtype('float64'))
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if name not in _SAMPLES:
        raise ValueError(f"unknown sample {name!r}; available samples: {', '.join(_SAMPLES)}")
    path = sample_dir() / f"{name}.npz"
    if not path.is_file():
        raise SampleNotAvailableError(
            f"sample file {path} not found. The real-data sample lives only in the flmcore source "
            "repository (flmcore/data/sample/, research use only) and is not part of wheels: use a source "
            "checkout (pip install -e .), or put <name>.npz files in a folder and set FLMCORE_DATA to it "
            "(flmcore demo --data DIR does the same for one run)."
        )
    out: Dict[str, np.ndarray] = {}
    with np.load(path, allow_pickle=False) as z:
        for key in z.files:
            arr = z[key]
            if key == "images_delta2d":
                out["images"] = _delta_decode(arr)
            elif arr.dtype.kind == "f":
                out[key] = arr.astype(np.float64)
            else:
                out[key] = arr
    return out

"""Mean face and neighbour tables for PIPNet's neighbour regression module (NumPy only).

PIPNet (Jin, Liao & Shao, IJCV 2021, Sec. 3.2) lets every landmark ``i`` predict,
besides its own offset, the positions of its ``C`` nearest neighbours *on the
mean face*.  At inference each landmark averages its own prediction with the
predictions that other landmarks make for it.  This module computes the
pieces that depend only on geometry:

* :func:`mean_face` -- the mean shape of training shapes in the crop frame
  (optionally normalised to ``[0, 1]`` as in PIPNet's ``meanface.txt`` files);
* :func:`neighbor_table` -- the ``(P, C)`` nearest-neighbour indices and the
  reverse index used to merge the votes exactly (:class:`NeighborTable`), plus
  the official padded reverse index for comparison.

Nothing here imports torch; the torch layers live in :mod:`flmcore.nn`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence, Tuple, Union

import numpy as np

from ._validate import check_array, check_int, check_positive, check_shapes

__all__ = ["mean_face", "neighbor_table", "NeighborTable", "load_meanface_txt"]


def mean_face(shapes, image_size: Union[None, float, Sequence[float]] = None) -> np.ndarray:
    """Mean landmark shape of training shapes in the crop frame.

    PIPNet builds its neighbour table on the mean of the training landmarks
    after cropping (``meanface.txt``, coordinates divided by the crop size).
    The mean is taken per point over the shapes; NaN marks a missing point and
    is ignored.

    Parameters
    ----------
    shapes : array_like, shape (B, P, 2) or (P, 2)
        Landmarks ``(x, y)`` in crop pixels.
    image_size : float or (width, height), optional
        When given, the mean is divided by it (PIPNet's normalised mean face in
        ``[0, 1]``); otherwise it stays in pixels.

    Returns
    -------
    numpy.ndarray, shape (P, 2), float64

    Raises
    ------
    ValueError
        If a point is missing (NaN) in every shape.

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[[0., 0.], [4., 2.]], [[2., 2.], [6., 2.]]])
    >>> mean_face(s)
    array([[1., 1.],
           [5., 2.]])
    >>> mean_face(s, image_size=8)
    array([[0.125, 0.125],
           [0.625, 0.25 ]])
    """
    arr = check_shapes(shapes, "shapes", allow_nan=True)
    if arr.ndim == 2:
        arr = arr[None]
    valid = ~np.isnan(arr).any(axis=-1)
    counts = valid.sum(axis=0)
    if (counts == 0).any():
        bad = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"shapes has point(s) {bad} missing (NaN) in every shape; cannot average them")
    total = np.where(valid[..., None], arr, 0.0).sum(axis=0)
    mean = total / counts[:, None]
    if image_size is not None:
        size = np.broadcast_to(np.asarray(image_size, dtype=np.float64), (2,))
        for v, nm in zip(size, ("width", "height")):
            check_positive(float(v), f"image_size ({nm})")
        mean = mean / size
    return mean


@dataclass(frozen=True)
class NeighborTable:
    """Nearest neighbours on the mean face and the reverse index used in merging.

    Attributes
    ----------
    indices : numpy.ndarray, shape (P, C), int64
        ``indices[i, c]`` is the ``c``-th nearest neighbour of landmark ``i``
        (self excluded, ascending distance); landmark ``i`` predicts it through
        channel ``i * C + c`` of the neighbour maps (official layout).
    counts : numpy.ndarray, shape (P,), int64
        Number of landmarks that vote for each landmark
        (``counts[j] = #{(i, c): indices[i, c] == j}``).
    voters : numpy.ndarray, shape (P * C,), int64
        Flat vote slots ``i * C + c`` sorted by the landmark they vote for
        (``np.argsort(indices.ravel(), kind="stable")``); ``offsets`` splits it.
    offsets : numpy.ndarray, shape (P + 1,), int64
        ``voters[offsets[j]:offsets[j + 1]]`` are the slots voting for ``j``.
    """

    indices: np.ndarray
    counts: np.ndarray
    voters: np.ndarray
    offsets: np.ndarray
    #: scratch space for derived arrays (e.g. device tensors cached by flmcore.nn); not compared
    cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n_points(self) -> int:
        """Number of landmarks ``P``."""
        return int(self.indices.shape[0])

    @property
    def n_neighbors(self) -> int:
        """Neighbours per landmark ``C``."""
        return int(self.indices.shape[1])

    def reverse(self, j: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(landmarks, slots)`` of the votes for landmark ``j``: ``indices[landmarks, slots] == j``.

        Examples
        --------
        >>> import numpy as np
        >>> t = neighbor_table(np.array([[0., 0.], [1., 0.], [3., 0.]]), 1)
        >>> t.reverse(1)
        (array([0, 2]), array([0, 0]))
        """
        j = check_int(j, "j", min_value=0, max_value=self.n_points - 1)
        flat = self.voters[self.offsets[j]:self.offsets[j + 1]]
        return flat // self.n_neighbors, flat % self.n_neighbors

    def merge_matrix(self) -> np.ndarray:
        """Dense ``(P, P + P * C)`` averaging matrix of the exact merge.

        Row ``j`` averages column ``j`` (the landmark's own prediction) and the
        columns ``P + i * C + c`` with ``indices[i, c] == j`` with equal weights
        ``1 / (1 + counts[j])``.  Useful as a reference; :func:`flmcore.nn.functional.pip_decode`
        uses a scatter-add instead.
        """
        p, c = self.indices.shape
        m = np.zeros((p, p + p * c))
        m[np.arange(p), np.arange(p)] = 1.0
        m[self.indices.ravel(), p + np.arange(p * c)] = 1.0
        return m / (1.0 + self.counts)[:, None]

    @classmethod
    def from_indices(cls, indices) -> "NeighborTable":
        """Build a table from given ``(P, C)`` neighbour indices (e.g. the official ones).

        Examples
        --------
        >>> NeighborTable.from_indices([[1], [0], [1]]).counts
        array([1, 2, 0])
        """
        arr = np.asarray(indices)
        if arr.ndim != 2:
            raise ValueError(f"indices must have shape (P, C), got shape {arr.shape}")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            if not np.array_equal(arr, np.round(arr)):
                raise TypeError(f"indices must be integers, got dtype {arr.dtype}")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
        p, k = arr.shape
        if p == 0:
            raise ValueError("indices must have at least one landmark row, got shape (0, C)")
        if k > p - 1:
            raise ValueError(f"indices has {k} neighbours per landmark but only {p} landmarks (at most {p - 1})")
        if arr.size and (arr.min() < 0 or arr.max() >= p):
            raise ValueError(f"indices must lie in [0, {p - 1}], got values in [{arr.min()}, {arr.max()}]")
        if k and (arr == np.arange(p)[:, None]).any():
            raise ValueError("indices must not list a landmark as its own neighbour")
        flat = arr.ravel()
        counts = np.bincount(flat, minlength=p).astype(np.int64)
        voters = np.argsort(flat, kind="stable").astype(np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(indices=arr, counts=counts, voters=voters, offsets=offsets)

    def padded_reverse_index(self) -> Tuple[np.ndarray, np.ndarray, int]:
        """The official PIPNet padded reverse index ``(index1, index2, max_len)``.

        The official code (``get_meanface``) gives every landmark the same
        number of votes ``max_len = counts.max()`` by repeating its voter list
        (``list * 11`` then truncating), so a landmark with fewer voters counts
        some of them twice and the average is *weighted*.  Landmarks with no
        voter at all make the official code fail; here they get an empty row
        and ``index1`` is filled with ``-1`` for them.  This is provided to
        compare with the exact merge (see :func:`flmcore.nn.functional.pip_decode`).

        Returns
        -------
        index1, index2 : numpy.ndarray, shape (P, max_len), int64
            Voting landmark and its neighbour slot, per landmark.
        max_len : int
        """
        if "padded" in self.cache:
            return self.cache["padded"]
        p = self.n_points
        max_len = int(self.counts.max()) if p else 0
        i1 = -np.ones((p, max_len), dtype=np.int64)
        i2 = -np.ones((p, max_len), dtype=np.int64)
        for j in range(p):
            lm, sl = self.reverse(j)
            if lm.size == 0:
                continue
            reps = -(-max_len // lm.size)
            i1[j] = np.tile(lm, reps)[:max_len]
            i2[j] = np.tile(sl, reps)[:max_len]
        i1.setflags(write=False)
        i2.setflags(write=False)
        self.cache["padded"] = (i1, i2, max_len)
        return i1, i2, max_len


def neighbor_table(mean_shape, k: int = 10) -> NeighborTable:
    """Nearest neighbours of every landmark on a mean face (PIPNet, Sec. 3.2).

    Neighbours are ranked by Euclidean distance on the mean face, self
    excluded; ties are broken by the lower landmark index (a stable sort).  On
    the official PIPNet mean faces (no ties) this reproduces the indices of the
    official ``get_meanface``.  The table is invariant to translating and
    scaling the mean face, so pixel and ``[0, 1]`` coordinates give the same
    result.

    Parameters
    ----------
    mean_shape : array_like, shape (P, 2)
        Mean face (see :func:`mean_face`), any units.
    k : int
        Neighbours per landmark ``C``; ``1 <= k <= P - 1`` (``k = 0`` gives an
        empty table, i.e. no neighbour regression).

    Returns
    -------
    NeighborTable

    Examples
    --------
    >>> import numpy as np
    >>> t = neighbor_table(np.array([[0., 0.], [1., 0.], [3., 0.], [7., 0.]]), k=2)
    >>> t.indices
    array([[1, 2],
           [0, 2],
           [1, 0],
           [2, 1]])
    >>> t.counts
    array([2, 3, 3, 0])
    """
    m = check_shapes(mean_shape, "mean_shape", batch=False)
    p = m.shape[0]
    k = check_int(k, "k", min_value=0)
    if k > p - 1:
        raise ValueError(f"k must be <= n_points - 1 = {p - 1} (neighbours exclude the landmark itself), got {k}")
    d2 = ((m[:, None, :] - m[None, :, :]) ** 2).sum(-1)
    d2[np.arange(p), np.arange(p)] = np.inf  # exclude self even when points coincide
    order = np.argsort(d2, axis=1, kind="stable")
    return NeighborTable.from_indices(order[:, :k])


def load_meanface_txt(path) -> np.ndarray:
    """Read a PIPNet ``meanface.txt`` (one line ``x0 y0 x1 y1 ...``) as ``(P, 2)``.

    Examples
    --------
    >>> import io
    >>> load_meanface_txt(io.StringIO("0.1 0.2 0.3 0.4\\n"))
    array([[0.1, 0.2],
           [0.3, 0.4]])
    """
    if hasattr(path, "read"):
        text = path.read()
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str, os.PathLike or a text file object, got {type(path).__name__}")
        with open(path) as f:
            text = f.read()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"mean-face file {path!r} is empty")
    vals = np.array([float(v) for v in lines[0].split()])
    if vals.size % 2:
        raise ValueError(f"mean-face file {path!r} has an odd number of values ({vals.size})")
    return check_array(vals.reshape(-1, 2), "mean face", ndim=2)

"""Facial landmark annotation schemes and the correspondences between them.

A :class:`Scheme` describes one annotation protocol (iBUG-68, WFLW-98, ...):
its number of points, the named boundary curves (ordered point indices, open
or closed), the *corner* points (where the anisotropic weight of Rayhan et al.
is the identity), the outer eye corners that define the inter-ocular distance
and the indices whose mean is each eye centre (the pupil point itself where a
scheme has one) that define the inter-pupil distance.

**Conventions.**

* Indices are 0-based.
* **Left and right are image left and right** (the viewer's left), i.e. the
  iBUG points 36-41 form ``eye_left`` although they outline the *subject's*
  right eye.  Every scheme here follows the same convention, so that
  ``left_eye`` of one scheme is ``left_eye`` of every other one.
* ``corners`` are the points where the anisotropic cost of Rayhan et al.
  uses the identity weight ("landmarks such as those at the corners of the
  eyes or mouth ... are given unit covariance matrices", §3.1): the explicit
  per-scheme list ``_TRUE_CORNERS`` below (eye corners, mouth corners, the
  tips of closed brow outlines), plus every isolated point (pupils, nose tip
  of sparse schemes, chin, ears: they lie on no curve) and every point shared
  by two curves (e.g. the mouth corners of ``cofw29`` close both lips).
  **Ends of open curves are not corners**: they take the one-sided end
  tangent of the paper's eq. (5) (jaw ends, brow ends of iBUG-68, the top of
  the nose bridge, the nose-wing ends).  Every point that is not a corner lies
  on exactly one curve and has a well-defined tangent.

Cross-scheme data live in this module only: every point of every scheme
carries a *semantic label* (an iBUG-68 index for the points that coincide
with an iBUG point, or a name such as ``"left_pupil"`` for the others).
:func:`correspondences` pairs points with the same label;
:func:`correspondence_matrix` also expresses derived points as averages
(e.g. an eye centre as the mean of the iBUG eye ring, the standard 68 -> 5
reduction); :func:`convert` applies it (e.g. the standard WFLW-98 -> iBUG-68
index map).  WFLW-98 and LaPa-106 share their layout, so all 98 WFLW points
have a LaPa twin.  The pairs were checked on real data (``tests/test_schemes.py``):
HELEN 68/29-point pairs, AFLW2000 21/68-point pairs and PIPNet's mean faces.

**Point orders.**

ibug68
    Multi-PIE / 300-W order: jaw 0-16, brows 17-21 and 22-26, nose bridge
    27-30, nose base 31-35, eyes 36-41 and 42-47, outer lips 48-59, inner
    lips 60-67.
wflw98
    jaw 0-32, brows 33-41 and 42-50 (closed loops: upper edge outer->inner
    then lower edge back), nose bridge 51-54, nose base 55-59, eyes 60-67 and
    68-75 (60 and 72 outer corners), outer lips 76-87, inner lips 88-95,
    pupils 96 and 97.
cofw29, helen_zhou29
    The LFPW/COFW 29 fiducials (verified for ``helen_zhou29`` on the 234 HELEN
    faces that also carry the iBUG-68 labels, see ``tests/test_schemes.py``):
    0/1 left/right brow outer end, 2/3 left/right brow inner end, 4/5 left
    brow top/bottom middle, 6/7 right brow top/bottom middle, 8/9 left/right
    eye outer corner, 10/11 left/right eye inner corner, 12/13 left eye top /
    bottom lid, 14/15 right eye top/bottom lid, 16/17 left/right pupil,
    18/19 left/right nose wing, 20 nose tip, 21 subnasale, 22/23 left/right
    mouth corner, 24/25 upper lip top/bottom, 26/27 lower lip top/bottom,
    28 chin.
aflw21
    The original AFLW points: 0-2 left brow (outer, middle, inner), 3-5
    right brow (inner, middle, outer), 6-8 left eye (outer corner, centre,
    inner corner), 9-11 right eye (inner, centre, outer), 12 left ear lobe,
    13 nose left, 14 nose tip, 15 nose right, 16 right ear lobe, 17 mouth
    left, 18 mouth centre, 19 mouth right, 20 chin.
aflw19
    aflw21 without the two ear lobes (the HRNet / mmpose / PIPNet protocol).
lapa106
    jaw 0-32, brows 33-41 and 42-50 (closed loops as in WFLW), nose bridge
    51-54, nose outline 55-65 (wing to wing through the columella, 60),
    left eye 66-73 (66 outer corner, 70 inner corner), 74 left eye centre,
    right eye 75-82 (75 inner, 79 outer corner), 83 right eye centre, outer
    lips 84-95, inner lips 96-103, pupils 104 and 105.
mtfl5
    0 left eye centre, 1 right eye centre, 2 nose tip, 3 left mouth corner,
    4 right mouth corner.  There are no eye corners, so ``interocular`` is
    the eye-centre pair.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Dict, Tuple, Union

import numpy as np

from ._validate import check_array

__all__ = [
    "Curve",
    "Scheme",
    "get_scheme",
    "list_schemes",
    "correspondences",
    "correspondence_matrix",
    "convert",
    "flip_permutation",
    "semantic_labels",
    "conversions",
    "lddmm_face_curves",
    "lddmm_face_sigma_v",
]


class CurveIndices(Sequence):
    """The point indices of a :class:`Curve`: an immutable tuple that also indexes arrays.

    It compares and hashes like the tuple of its values, prints like one, and
    ``shape[curve.indices]`` selects the curve's points of a NumPy array or a torch
    tensor (a plain tuple would be read as one index per axis).

    Examples
    --------
    >>> idx = CurveIndices((2, 0))
    >>> np.arange(10, 15)[idx], idx == (2, 0), idx
    (array([12, 10]), True, (2, 0))
    """

    __slots__ = ("_t",)

    def __init__(self, values):
        self._t = tuple(int(v) for v in values)

    def __len__(self):
        return len(self._t)

    def __getitem__(self, i):
        return self._t[i]

    def __iter__(self):
        return iter(self._t)

    def __array__(self, dtype=None, copy=None):
        return np.array(self._t, dtype=np.intp if dtype is None else dtype)

    def __eq__(self, other):
        if isinstance(other, CurveIndices):
            return self._t == other._t
        if isinstance(other, (tuple, list)):
            return self._t == tuple(other)
        return NotImplemented

    def __hash__(self):
        return hash(self._t)

    def __add__(self, other):
        return self._t + tuple(other)

    def __radd__(self, other):
        return tuple(other) + self._t

    def __repr__(self):
        return repr(self._t)


@dataclass(frozen=True)
class Curve:
    """An ordered run of landmark indices forming one facial boundary.

    Attributes
    ----------
    name : str
        Curve name (``"jaw"``, ``"eye_left"``, ...).
    indices : CurveIndices
        Point indices in order along the curve: a tuple of int that also indexes
        arrays (``shape[curve.indices]`` is the ``(n_points, 2)`` curve).
    closed : bool
        Whether the last point connects back to the first.

    Examples
    --------
    >>> c = Curve("eye_left", (36, 37, 38, 39, 40, 41), True)
    >>> c.n_points, np.zeros((68, 2))[c.indices].shape
    (6, (6, 2))
    """

    name: str
    indices: CurveIndices
    closed: bool

    def __post_init__(self):
        if not isinstance(self.indices, CurveIndices):
            object.__setattr__(self, "indices", CurveIndices(self.indices))

    @property
    def n_points(self) -> int:
        """Number of points on the curve."""
        return len(self.indices)

    @property
    def ends(self) -> Tuple[int, ...]:
        """The two end indices of an open curve, ``()`` for a closed one."""
        return () if self.closed else (self.indices[0], self.indices[-1])


@dataclass(frozen=True)
class Scheme:
    """A landmark annotation scheme (see the module docstring for point orders).

    Attributes
    ----------
    name : str
        Scheme name, e.g. ``"ibug68"``.
    n_points : int
        Number of landmarks ``P``.
    curves : tuple of Curve
        Named boundary curves; together with ``corners`` they cover every point.
    corners : tuple of int
        Points with an isotropic (identity) anisotropic weight: the scheme's
        true corners (eye and mouth corners, brow-outline tips; see
        ``_TRUE_CORNERS``), all isolated points and points shared by two
        curves.  Open-curve ends are *not* corners (Rayhan et al. eq. 5).
    interocular : tuple of (int, int)
        Outer eye corners (left, right) defining the inter-ocular distance.
    left_eye, right_eye : tuple of int
        Indices whose mean is the eye centre (a single pupil index when the
        scheme has one).
    description : str
        One-line description and source of the scheme.

    Examples
    --------
    >>> s = get_scheme("ibug68")
    >>> s.n_points, s.curve("jaw").indices[:3], s.interocular
    (68, (0, 1, 2), (36, 45))
    """

    name: str
    n_points: int
    curves: Tuple[Curve, ...]
    corners: Tuple[int, ...]
    interocular: Tuple[int, int]
    left_eye: Tuple[int, ...]
    right_eye: Tuple[int, ...]
    description: str = field(default="", compare=False)

    def __post_init__(self):
        if isinstance(self.n_points, bool) or not isinstance(self.n_points, (int, np.integer)) or self.n_points < 1:
            raise ValueError(f"Scheme {self.name!r}: n_points must be an integer >= 1, got {self.n_points!r}")
        groups = [(f"curves[{k}] ({c.name})", tuple(c.indices)) for k, c in enumerate(self.curves)]
        groups += [("corners", tuple(self.corners)), ("interocular", tuple(self.interocular)),
                   ("left_eye", tuple(self.left_eye)), ("right_eye", tuple(self.right_eye))]
        for what, idx in groups:
            bad = [i for i in idx if isinstance(i, bool) or not isinstance(i, (int, np.integer))
                   or not 0 <= i < self.n_points]
            if bad:
                raise ValueError(f"Scheme {self.name!r}: {what} must hold point indices in [0, {self.n_points}), "
                                 f"got {bad[:5]}")
        if len(tuple(self.interocular)) != 2:
            raise ValueError(f"Scheme {self.name!r}: interocular must be 2 indices, got {self.interocular!r}")

    # -- structure -----------------------------------------------------------------
    @property
    def curve_names(self) -> Tuple[str, ...]:
        """Names of the curves in order."""
        return tuple(c.name for c in self.curves)

    def curve(self, name: str) -> Curve:
        """Return the curve called ``name`` (``ValueError`` listing the names otherwise).

        Examples
        --------
        >>> get_scheme("wflw98").curve("eye_left").closed
        True
        """
        for c in self.curves:
            if c.name == name:
                return c
        raise ValueError(f"name must be one of the curves of {self.name}: "
                         f"{', '.join(self.curve_names)}; got {name!r}")

    @property
    def isolated(self) -> Tuple[int, ...]:
        """Points on no curve (pupils, nose tip of sparse schemes, chin, ...)."""
        on = {i for c in self.curves for i in c.indices}
        return tuple(i for i in range(self.n_points) if i not in on)

    def curve_labels(self) -> np.ndarray:
        """Curve number of every point (``-1`` for isolated points).

        A point shared by two curves (always a corner) gets the first one.

        Returns
        -------
        numpy.ndarray of int, shape (P,)

        Examples
        --------
        >>> get_scheme("ibug68").curve_labels()[[0, 17, 36]].tolist()
        [0, 1, 5]
        """
        out = np.full(self.n_points, -1, dtype=np.int64)
        for k, c in reversed(list(enumerate(self.curves))):
            out[list(c.indices)] = k
        return out

    # -- distances -------------------------------------------------------------------
    def _check(self, shapes, name: str = "shapes") -> np.ndarray:
        arr = check_array(shapes, name, allow_nan=True)
        if arr.ndim < 2 or arr.shape[-1] != 2 or arr.shape[-2] != self.n_points:
            raise ValueError(f"{name} must have shape (..., {self.n_points}, 2) for scheme {self.name}, "
                             f"got shape {arr.shape}")
        return arr

    def eye_centres(self, shapes) -> np.ndarray:
        """Eye centres ``[left, right]`` (mean of ``left_eye`` / ``right_eye``).

        Parameters
        ----------
        shapes : array_like, shape (..., P, 2)

        Returns
        -------
        numpy.ndarray, shape (..., 2, 2)
            ``out[..., 0, :]`` is the (image-)left eye centre.

        Examples
        --------
        >>> import numpy as np
        >>> s = get_scheme("mtfl5")
        >>> s.eye_centres(np.array([[0., 0], [4, 0], [2, 2], [1, 4], [3, 4]])).tolist()
        [[0.0, 0.0], [4.0, 0.0]]
        """
        arr = self._check(shapes)
        left = arr[..., list(self.left_eye), :].mean(axis=-2)
        right = arr[..., list(self.right_eye), :].mean(axis=-2)
        return np.stack([left, right], axis=-2)

    def interocular_distance(self, shapes) -> np.ndarray:
        """Distance between the outer eye corners ``interocular``.

        Parameters
        ----------
        shapes : array_like, shape (..., P, 2)

        Returns
        -------
        numpy.ndarray, shape (...)

        Examples
        --------
        >>> import numpy as np
        >>> x = np.zeros((68, 2)); x[45] = (3.0, 4.0)
        >>> float(get_scheme("ibug68").interocular_distance(x))
        5.0
        """
        arr = self._check(shapes)
        i, j = self.interocular
        return np.linalg.norm(arr[..., i, :] - arr[..., j, :], axis=-1)

    def interpupil_distance(self, shapes) -> np.ndarray:
        """Distance between the eye centres (see :meth:`eye_centres`).

        Parameters
        ----------
        shapes : array_like, shape (..., P, 2)

        Returns
        -------
        numpy.ndarray, shape (...)

        Examples
        --------
        >>> import numpy as np
        >>> x = np.zeros((98, 2)); x[97] = (6.0, 8.0)
        >>> float(get_scheme("wflw98").interpupil_distance(x))
        10.0
        """
        c = self.eye_centres(shapes)
        return np.linalg.norm(c[..., 0, :] - c[..., 1, :], axis=-1)


# ---------------------------------------------------------------------------------------
# scheme definitions
# ---------------------------------------------------------------------------------------
def _r(a: int, b: int) -> Tuple[int, ...]:
    """Inclusive range ``a..b`` as a tuple."""
    return tuple(range(a, b + 1))


def _make(name, n, curves, true_corners, interocular, left_eye, right_eye, description) -> Scheme:
    cs = tuple(Curve(cn, tuple(ix), closed) for cn, ix, closed in curves)
    corners = set(true_corners)
    count = np.zeros(n, dtype=np.int64)
    for c in cs:
        count[list(c.indices)] += 1
    corners.update(int(i) for i in np.flatnonzero(count != 1))  # isolated (0) and shared (> 1) points
    return Scheme(name, n, cs, tuple(sorted(corners)), tuple(interocular), tuple(left_eye), tuple(right_eye),
                  description)


_LFPW29_CURVES = [
    ("brow_left", (0, 4, 2, 5), True),
    ("brow_right", (3, 6, 1, 7), True),
    ("eye_left", (8, 12, 10, 13), True),
    ("eye_right", (11, 14, 9, 15), True),
    ("nose_base", (18, 21, 19), False),
    ("lip_outer", (22, 24, 23, 27), True),
    ("lip_inner", (22, 25, 23, 26), True),
]
_LFPW29_CORNERS = (0, 1, 2, 3, 8, 9, 10, 11, 22, 23)

#: The true corners of every scheme (identity weight of the anisotropic cost, Rayhan et al.
#: §3.1: "landmarks such as those at the corners of the eyes or mouth ... are given unit
#: covariance matrices"; eq. 4-6 elsewhere).  Isolated points and points shared by two curves
#: are added by ``_make``; ends of open curves are deliberately absent (they use eq. 5).
#: ibug68: eye corners 36/39/42/45, outer and inner mouth corners 48/54/60/64.
#: wflw98, lapa106: brow-outline tips (closed brow loops), eye corners, mouth corners.
#: cofw29 / helen_zhou29: brow-outline tips, eye corners, mouth corners (22/23 are also shared).
#: aflw19 / aflw21: eye corners and mouth corners (the brows and nose are open 3-point curves).
_TRUE_CORNERS: Dict[str, Tuple[int, ...]] = {
    "ibug68": (36, 39, 42, 45, 48, 54, 60, 64),
    "wflw98": (33, 37, 42, 46, 60, 64, 68, 72, 76, 82, 88, 92),
    "cofw29": _LFPW29_CORNERS,
    "helen_zhou29": _LFPW29_CORNERS,
    "aflw21": (6, 8, 9, 11, 17, 19),
    "aflw19": (6, 8, 9, 11, 15, 17),
    "lapa106": (33, 37, 42, 46, 66, 70, 75, 79, 84, 90, 96, 100),
    "mtfl5": (),
}

_AFLW19_CURVES = [
    ("brow_left", (0, 1, 2), False),
    ("brow_right", (3, 4, 5), False),
    ("nose_base", (12, 13, 14), False),
    ("mouth", (15, 16, 17), False),
]
_AFLW21_CURVES = [
    ("brow_left", (0, 1, 2), False),
    ("brow_right", (3, 4, 5), False),
    ("nose_base", (13, 14, 15), False),
    ("mouth", (17, 18, 19), False),
]

_SCHEMES: Dict[str, Scheme] = {
    s.name: s
    for s in [
        _make("ibug68", 68,
              [("jaw", _r(0, 16), False), ("brow_left", _r(17, 21), False), ("brow_right", _r(22, 26), False),
               ("nose_bridge", _r(27, 30), False), ("nose_base", _r(31, 35), False),
               ("eye_left", _r(36, 41), True), ("eye_right", _r(42, 47), True),
               ("lip_outer", _r(48, 59), True), ("lip_inner", _r(60, 67), True)],
              _TRUE_CORNERS["ibug68"], (36, 45), _r(36, 41), _r(42, 47),
              "iBUG 300-W / Multi-PIE 68 points (Sagonas et al. 2013)"),
        _make("wflw98", 98,
              [("jaw", _r(0, 32), False), ("brow_left", _r(33, 41), True), ("brow_right", _r(42, 50), True),
               ("nose_bridge", _r(51, 54), False), ("nose_base", _r(55, 59), False),
               ("eye_left", _r(60, 67), True), ("eye_right", _r(68, 75), True),
               ("lip_outer", _r(76, 87), True), ("lip_inner", _r(88, 95), True)],
              _TRUE_CORNERS["wflw98"], (60, 72), (96,), (97,),
              "WFLW 98 points (Wu et al. 2018)"),
        _make("cofw29", 29, _LFPW29_CURVES, _TRUE_CORNERS["cofw29"], (8, 9), (16,), (17,),
              "COFW / LFPW 29 points (Burgos-Artizzu et al. 2013)"),
        _make("helen_zhou29", 29, _LFPW29_CURVES, _TRUE_CORNERS["helen_zhou29"], (8, 9), (16,), (17,),
              "HELEN faces re-labelled with the LFPW/COFW 29 points (Zhou et al. 2013), same order as cofw29"),
        _make("aflw21", 21, _AFLW21_CURVES, _TRUE_CORNERS["aflw21"], (6, 11), (7,), (10,),
              "AFLW 21 points (Koestinger et al. 2011), with ear lobes"),
        _make("aflw19", 19, _AFLW19_CURVES, _TRUE_CORNERS["aflw19"], (6, 11), (7,), (10,),
              "AFLW 19 points (HRNet / mmpose / PIPNet protocol: AFLW-21 without the ear lobes)"),
        _make("lapa106", 106,
              [("jaw", _r(0, 32), False), ("brow_left", _r(33, 41), True), ("brow_right", _r(42, 50), True),
               ("nose_bridge", _r(51, 54), False), ("nose_base", _r(55, 65), False),
               ("eye_left", _r(66, 73), True), ("eye_right", _r(75, 82), True),
               ("lip_outer", _r(84, 95), True), ("lip_inner", _r(96, 103), True)],
              _TRUE_CORNERS["lapa106"], (66, 79), (104,), (105,),
              "LaPa 106 points (Liu et al. 2020)"),
        _make("mtfl5", 5, [], _TRUE_CORNERS["mtfl5"], (0, 1), (0,), (1,),
              "MTFL 5 points: eye centres, nose tip, mouth corners (Zhang et al. 2014)"),
    ]
}


def list_schemes() -> Tuple[str, ...]:
    """Names of the known schemes.

    Examples
    --------
    >>> "ibug68" in list_schemes()
    True
    """
    return tuple(_SCHEMES)


def get_scheme(name: Union[str, Scheme]) -> Scheme:
    """Return the :class:`Scheme` called ``name`` (a Scheme is returned as is).

    Raises
    ------
    ValueError
        For an unknown name; the message lists the known ones.

    Examples
    --------
    >>> get_scheme("cofw29").n_points
    29
    """
    if isinstance(name, Scheme):
        return name
    if not isinstance(name, str):
        raise TypeError(f"scheme name must be a str, got {type(name).__name__}")
    key = name.lower()
    if key not in _SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; known schemes: {', '.join(_SCHEMES)}")
    return _SCHEMES[key]


# ---------------------------------------------------------------------------------------
# semantic labels and correspondences
# ---------------------------------------------------------------------------------------
# A label is an int (the iBUG-68 index of the same point) or a str naming a point
# that iBUG-68 does not carry.  _DERIVED gives the standard iBUG-68 definition of
# some of the str labels as the mean of iBUG points.
Label = Union[int, str]

_DERIVED: Dict[str, Tuple[int, ...]] = {
    "left_pupil": _r(36, 41),
    "right_pupil": _r(42, 47),
    "left_eye_top": (37, 38),
    "left_eye_bottom": (40, 41),
    "right_eye_top": (43, 44),
    "right_eye_bottom": (46, 47),
    "mouth_centre": (62, 66),
}

# WFLW-98 -> iBUG-68: the standard index map (jaw every second point, upper brow
# edge, nose, eye corners and the 1/4-3/4 lid points, all lip points).
_WFLW98_TO_IBUG68: Tuple[int, ...] = (
    tuple(range(0, 33, 2)) + _r(33, 37) + _r(42, 46) + _r(51, 59)
    + (60, 61, 63, 64, 65, 67) + (68, 69, 71, 72, 73, 75) + _r(76, 95)
)
# LaPa-106 -> iBUG-68 (same construction: jaw every second point, upper brow
# edge, bridge, the five central nose-base points, eye corners and 1/4-3/4 lid
# points, lips).
_LAPA106_TO_IBUG68: Tuple[int, ...] = (
    tuple(range(0, 33, 2)) + _r(33, 37) + _r(42, 46) + _r(51, 54) + _r(58, 62)
    + (66, 67, 69, 70, 71, 73) + (75, 76, 78, 79, 80, 82) + _r(84, 103)
)

_LFPW29_LABELS: Dict[int, Label] = {
    0: 17, 1: 26, 2: 21, 3: 22, 4: 19, 5: "left_brow_bottom", 6: 24, 7: "right_brow_bottom",
    8: 36, 9: 45, 10: 39, 11: 42, 12: "left_eye_top", 13: "left_eye_bottom",
    14: "right_eye_top", 15: "right_eye_bottom", 16: "left_pupil", 17: "right_pupil",
    18: 31, 19: 35, 20: 30, 21: 33, 22: 48, 23: 54, 24: 51, 25: 62, 26: 66, 27: 57, 28: 8,
}
_AFLW19_LABELS: Dict[int, Label] = {
    0: 17, 1: 19, 2: 21, 3: 22, 4: 24, 5: 26, 6: 36, 7: "left_pupil", 8: 39, 9: 42, 10: "right_pupil",
    11: 45, 12: 31, 13: 30, 14: 35, 15: 48, 16: "mouth_centre", 17: 54, 18: 8,
}
_AFLW21_LABELS: Dict[int, Label] = {
    **{i: _AFLW19_LABELS[i] for i in range(12)}, 12: "left_ear",
    **{i + 1: _AFLW19_LABELS[i] for i in range(12, 15)}, 16: "right_ear",
    **{i + 2: _AFLW19_LABELS[i] for i in range(15, 19)},
}


def _labels_from_map(n: int, to_ibug: Tuple[int, ...], extra: Dict[int, Label]) -> Dict[int, Label]:
    lab: Dict[int, Label] = {src: k for k, src in enumerate(to_ibug)}
    lab.update(extra)
    assert len(lab) <= n
    return lab


# WFLW-98 and LaPa-106 share their layout: the points of WFLW that iBUG-68 lacks
# (odd jaw points, lower brow edges, eyelid points) are labelled "wflw98:<index>"
# and given to the same LaPa points.
_WFLW98_TO_LAPA106: Dict[int, int] = {
    **{k: k for k in range(55)},                      # jaw, brows, nose bridge
    **{55 + k: 58 + k for k in range(5)},             # nose base
    **{60 + k: 66 + k for k in range(8)},             # left eye
    **{68 + k: 75 + k for k in range(8)},             # right eye
    **{76 + k: 84 + k for k in range(20)},            # lips
    96: 104, 97: 105,                                 # pupils
}


def _add_shared_wflw_labels(wflw: Dict[int, Label], lapa: Dict[int, Label]) -> None:
    for w, la in _WFLW98_TO_LAPA106.items():
        if w not in wflw:
            wflw[w] = f"wflw98:{w}"
        lab = wflw[w]
        if la in lapa and lapa[la] != lab:
            raise AssertionError(f"inconsistent WFLW/LaPa labels at {w}/{la}: {lab} vs {lapa[la]}")
        lapa[la] = lab


_LABELS: Dict[str, Dict[int, Label]] = {
    "ibug68": {k: k for k in range(68)},
    "wflw98": _labels_from_map(98, _WFLW98_TO_IBUG68, {62: "left_eye_top", 66: "left_eye_bottom", 70: "right_eye_top",
                                                        74: "right_eye_bottom", 96: "left_pupil", 97: "right_pupil"}),
    "lapa106": _labels_from_map(106, _LAPA106_TO_IBUG68, {68: "left_eye_top", 72: "left_eye_bottom", 77: "right_eye_top",
                                                          81: "right_eye_bottom", 104: "left_pupil", 105: "right_pupil"}),
    "cofw29": dict(_LFPW29_LABELS),
    "helen_zhou29": dict(_LFPW29_LABELS),
    "aflw19": _AFLW19_LABELS,
    "aflw21": _AFLW21_LABELS,
    "mtfl5": {0: "left_pupil", 1: "right_pupil", 2: 30, 3: 48, 4: 54},
}
_add_shared_wflw_labels(_LABELS["wflw98"], _LABELS["lapa106"])


def semantic_labels(scheme: Union[str, Scheme]) -> Tuple[Union[int, str, None], ...]:
    """Semantic label of every point: the iBUG-68 index, a name, or ``None``.

    Examples
    --------
    >>> semantic_labels("mtfl5")
    ('left_pupil', 'right_pupil', 30, 48, 54)
    """
    s = get_scheme(scheme)
    lab = _LABELS[s.name]
    return tuple(lab.get(i) for i in range(s.n_points))


def correspondences(a: Union[str, Scheme], b: Union[str, Scheme]) -> np.ndarray:
    """Pairs of points of schemes ``a`` and ``b`` that denote the same facial point.

    Only exact pairs (same semantic label) are listed; derived points (an eye
    centre as the mean of an eye ring) are in :func:`correspondence_matrix`.
    The lookup is symmetric: ``correspondences(b, a)`` is this array with its
    columns swapped.

    Parameters
    ----------
    a, b : str or Scheme

    Returns
    -------
    numpy.ndarray of int64, shape (K, 2)
        Column 0 indexes ``a``, column 1 indexes ``b``; sorted by column 0.

    Examples
    --------
    >>> correspondences("ibug68", "mtfl5").tolist()
    [[30, 2], [48, 3], [54, 4]]
    >>> correspondences("wflw98", "ibug68")[:3].tolist()
    [[0, 0], [2, 1], [4, 2]]
    """
    sa, sb = get_scheme(a), get_scheme(b)
    if sa.name == sb.name:
        return np.stack([np.arange(sa.n_points)] * 2, axis=1).astype(np.int64)
    la, lb = _LABELS[sa.name], _LABELS[sb.name]
    inv_b = {lab: j for j, lab in lb.items()}
    pairs = sorted((i, inv_b[lab]) for i, lab in la.items() if lab in inv_b)
    return np.asarray(pairs, dtype=np.int64).reshape(-1, 2)


def correspondence_matrix(a: Union[str, Scheme], b: Union[str, Scheme]) -> np.ndarray:
    """Matrix ``M`` (P_b, P_a) with ``M @ shape_a`` = the points of scheme ``b``.

    Row ``j`` is one-hot where ``a`` has the same point, the standard average
    of ``a`` points where ``b``'s point is defined that way (eye centres as
    the mean of the six iBUG eye points, eyelid mid-points as the mean of the
    two lid points, the AFLW mouth centre as the mean of iBUG 62 and 66), and
    all-NaN where ``a`` does not define the point, so that ``M @ shape``
    yields NaN-masked (missing) points.

    Returns
    -------
    numpy.ndarray of float64, shape (P_b, P_a)

    Examples
    --------
    >>> M = correspondence_matrix("ibug68", "mtfl5")
    >>> M.shape, float(M[0, 36]), float(M[2, 30])
    ((5, 68), 0.16666666666666666, 1.0)
    """
    sa, sb = get_scheme(a), get_scheme(b)
    if sa.name == sb.name:
        return np.eye(sa.n_points)
    la, lb = _LABELS[sa.name], _LABELS[sb.name]
    inv_a = {lab: i for i, lab in la.items()}
    m = np.full((sb.n_points, sa.n_points), np.nan)
    for j in range(sb.n_points):
        lab = lb.get(j)
        if lab is None:
            continue
        if lab in inv_a:
            m[j] = 0.0
            m[j, inv_a[lab]] = 1.0
        elif isinstance(lab, str) and lab in _DERIVED and all(k in inv_a for k in _DERIVED[lab]):
            src = [inv_a[k] for k in _DERIVED[lab]]
            m[j] = 0.0
            m[j, src] = 1.0 / len(src)
    return m


def convert(shapes, src: Union[str, Scheme], dst: Union[str, Scheme], *, allow_missing: bool = False,
            conversion: str = "standard") -> np.ndarray:
    """Convert shapes from scheme ``src`` to scheme ``dst``.

    ``conversion="standard"`` uses :func:`correspondence_matrix`; for
    ``wflw98 -> ibug68`` this is the standard WFLW-98 -> iBUG-68 index map, for
    ``ibug68 -> mtfl5`` the standard 68 -> 5 reduction (eye centres = mean of
    each eye ring).  ``conversion="pipnet"`` (``wflw98 -> ibug68`` only) is
    PIPNet's WFLW-68 (Jin, Liao & Shao, IJCV 2021, official
    ``convert_wflw``): brow points get the x of the upper edge and the mean y
    of the upper and lower edges, the lid points are interpolated
    0.666 / 0.333 between the WFLW lid points; use it to reproduce PIPNet's
    cross-domain WFLW-68 numbers.  :func:`conversions` lists the names.

    Parameters
    ----------
    shapes : array_like, shape (..., P_src, 2)
    src, dst : str or Scheme
    allow_missing : bool
        If ``False`` (default) a ``dst`` point that ``src`` does not define
        raises ``ValueError``; if ``True`` it is NaN in the output.

    Returns
    -------
    numpy.ndarray of float64, shape (..., P_dst, 2)

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(98 * 2, dtype=float).reshape(98, 2)
    >>> y = convert(x, "wflw98", "ibug68")
    >>> y.shape, y[36].tolist() == x[60].tolist()
    ((68, 2), True)
    >>> z = convert(x, "wflw98", "ibug68", conversion="pipnet")
    >>> z[18].tolist() == [x[34, 0], (x[34, 1] + x[41, 1]) / 2]
    True
    """
    sa, sb = get_scheme(src), get_scheme(dst)
    arr = sa._check(shapes)
    if not isinstance(conversion, str):
        raise TypeError(f"conversion must be a str, got {type(conversion).__name__}")
    if conversion != "standard":
        key = (sa.name, sb.name, conversion)
        if key not in _NAMED_CONVERSIONS:
            raise ValueError(f"conversion must be one of {conversions(sa, sb)} for {sa.name} -> {sb.name}; "
                             f"got {conversion!r}")
        mx, my = _NAMED_CONVERSIONS[key]
        # a converted point is NaN when a point it is built from is NaN (NaN * 0 would hide it)
        nan_pt = np.isnan(arr).any(axis=-1)
        miss = np.einsum("jp,...p->...j", ((mx != 0) | (my != 0)).astype(np.float64), nan_pt.astype(np.float64)) > 0
        a0 = np.where(nan_pt[..., None], 0.0, arr)
        out = np.stack([np.einsum("jp,...p->...j", mx, a0[..., 0]), np.einsum("jp,...p->...j", my, a0[..., 1])], -1)
        out[miss] = np.nan
        return out
    m = correspondence_matrix(sa, sb)
    undefined = np.isnan(m).any(axis=1)
    if undefined.any() and not allow_missing:
        raise ValueError(f"cannot convert {sa.name} -> {sb.name}: {sb.name} points "
                         f"{np.flatnonzero(undefined).tolist()} are not defined by {sa.name}; "
                         "pass allow_missing=True to get NaN for them")
    out = np.full(arr.shape[:-2] + (sb.n_points, 2), np.nan)
    ok = ~undefined
    w = m[ok]
    nan_pt = np.isnan(arr).any(axis=-1)
    vals = np.einsum("jp,...pc->...jc", w, np.where(nan_pt[..., None], 0.0, arr))
    # a converted point is missing when any point it is built from is missing
    missing = np.einsum("jp,...p->...j", (w != 0).astype(np.float64), nan_pt.astype(np.float64)) > 0
    vals[missing] = np.nan
    out[..., ok, :] = vals
    return out


# ---------------------------------------------------------------------------------------
# LDDMM-Face curve layouts and kernel widths (Yang et al., ICLR 2022 submission)
# ---------------------------------------------------------------------------------------
#: The curve layout of the LDDMM-Face paper ("N is chosen to be 12", §4) as its official code
#: defines it (``lib/utils/lddmm_params.py``, ``get_curve2landmark``): the jaw split in halves,
#: open eyes, the outer and inner lips split into an upper and a lower open arc.  Every point
#: lies on exactly one curve (the mouth corners belong to the upper arcs).
_LDDMM_FACE_CURVES: Dict[str, Tuple[Curve, ...]] = {
    "ibug68": tuple(Curve(n, ix, False) for n, ix in (
        ("jaw_left", _r(0, 8)), ("jaw_right", _r(9, 16)), ("brow_left", _r(17, 21)),
        ("brow_right", _r(22, 26)), ("nose_bridge", _r(27, 30)), ("nose_base", _r(31, 35)),
        ("eye_left", _r(36, 41)), ("eye_right", _r(42, 47)), ("lip_outer_upper", _r(48, 54)),
        ("lip_outer_lower", _r(55, 59)), ("lip_inner_upper", _r(60, 64)), ("lip_inner_lower", _r(65, 67)))),
    # WFLW: the same 12 curves over points 0-95 (jaw halves 0-16 / 17-32, brow loops 33-41 / 42-50
    # and eye rings 60-67 / 68-75 taken as open curves, as the official code does); the pupils
    # 96 and 97 lie on no curve.
    "wflw98": tuple(Curve(n, ix, False) for n, ix in (
        ("jaw_left", _r(0, 16)), ("jaw_right", _r(17, 32)), ("brow_left", _r(33, 41)),
        ("brow_right", _r(42, 50)), ("nose_bridge", _r(51, 54)), ("nose_base", _r(55, 59)),
        ("eye_left", _r(60, 67)), ("eye_right", _r(68, 75)), ("lip_outer_upper", _r(76, 82)),
        ("lip_outer_lower", _r(83, 87)), ("lip_inner_upper", _r(88, 92)), ("lip_inner_lower", _r(93, 95)))),
}

#: The official sigma_V of every curve of ``_LDDMM_FACE_CURVES`` (``get_sigmaV2``), in pixels of
#: the official 256 x 256 crops.  The paper: "sigma_V and sigma_W are respectively chosen to be
#: the scale and half the scale of the coordinates of each curve of the mean face".
_LDDMM_FACE_SIGMA_V_PX: Dict[str, Tuple[float, ...]] = {
    "ibug68": (36.1889, 32.2242, 11.2157, 11.2157, 7.2351, 6.5614, 6.4939, 6.4939, 12.0834, 7.9841,
               9.3308, 3.0845),
    "wflw98": (55.9466, 52.0476, 14.7443, 14.8420, 11.2228, 10.1342, 10.3297, 10.3474, 18.0645, 14.4043,
               15.5064, 8.6462),
}

#: Inter-ocular distance (outer eye corners) of a 300-W face in the official 256 x 256 crops
#: (HRNet cropping: 1.25 x the face box mapped to 256 px).  Measured on the 2,012 300-W training
#: faces of ``shared/data/300w_train_crops`` with the face box = the box of the 68 points: mean
#: 119.7 px, median 120.5 px.  Dividing the table above by it expresses the official widths in
#: units of the inter-ocular distance, which is what :func:`lddmm_face_sigma_v` scales by.
#: WFLW (outer eye corners 60 / 72) is cropped the same way (HRNet's WFLW crops: 1.25 x the box of
#: the 98 points); no WFLW images are at hand, so its value is the 300-W one times the ratio of the
#: (inter-ocular distance / landmark-box side) of PIPNet's WFLW and 300-W mean faces
#: (0.6057 / 0.6101, ``shared/data/pipnet_meanfaces``): 119.1 px.
_LDDMM_FACE_CROP_IOD_PX: Dict[str, float] = {"ibug68": 120.0, "wflw98": 119.1}

_LDDMM_PRESETS = ("flmcore", "paper")


def lddmm_face_curves(scheme: Union[str, Scheme], preset: str = "flmcore") -> Tuple[Curve, ...]:
    """The curves LDDMM-Face deforms and compares, per preset.

    Parameters
    ----------
    scheme : str or Scheme
    preset : {"flmcore", "paper"}
        ``"flmcore"``: the scheme's own curves (:attr:`Scheme.curves`; for
        ``ibug68`` 9 curves: one jaw, closed eyes and lips).  ``"paper"``: the
        12 curves of the paper and its official code (``ibug68``: jaw halves
        0-8 / 9-16, open eyes, upper and lower lip arcs 48-54 / 55-59 / 60-64 /
        65-67; ``wflw98``: jaw halves 0-16 / 17-32, open brow loops and eye
        rings, lip arcs 76-82 / 83-87 / 88-92 / 93-95, pupils on no curve);
        only these two schemes have one.

    Returns
    -------
    tuple of Curve

    Examples
    --------
    >>> [c.name for c in lddmm_face_curves("ibug68", "paper")][:3]
    ['jaw_left', 'jaw_right', 'brow_left']
    >>> len(lddmm_face_curves("ibug68")), len(lddmm_face_curves("ibug68", "paper"))
    (9, 12)
    """
    s = get_scheme(scheme)
    if preset not in _LDDMM_PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, _LDDMM_PRESETS))}; got {preset!r}")
    if preset == "flmcore":
        return s.curves
    if s.name not in _LDDMM_FACE_CURVES:
        raise ValueError(f"preset='paper' (the official LDDMM-Face layout) exists for schemes "
                         f"{', '.join(_LDDMM_FACE_CURVES)}; got scheme {s.name!r}: use preset='flmcore'")
    return _LDDMM_FACE_CURVES[s.name]


def lddmm_face_sigma_v(scheme: Union[str, Scheme], mean_shape) -> np.ndarray:
    """The official LDDMM-Face sigma_V of every ``preset="paper"`` curve, in ``mean_shape`` pixels.

    ``sigma_V[k] = table[k] / 120 * d_io(mean_shape)``: the official per-curve
    widths (``lib/utils/lddmm_params.py``, pixels of 256 x 256 crops) divided by
    the inter-ocular distance of a face in those crops (120 px, see
    ``_LDDMM_FACE_CROP_IOD_PX``) and multiplied by the inter-ocular distance of
    the given mean face, so that the widths keep their size relative to the
    face whatever the crop size.  For the jaw halves this is 0.30 and 0.27
    inter-ocular distances.  sigma_W is half of it (paper §4).

    Parameters
    ----------
    scheme : str or Scheme
        ``ibug68`` or ``wflw98`` (the official code's 300W and WFLW tables; the
        WFLW crop's inter-ocular distance is derived in ``_LDDMM_FACE_CROP_IOD_PX``).
    mean_shape : array_like, shape (P, 2)
        The mean face in the pixel frame of the model.

    Returns
    -------
    numpy.ndarray, shape (12,)

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((68, 2)); m[45] = (120.0, 0.0)     # a face of the official crop size
    >>> lddmm_face_sigma_v("ibug68", m)[:2].tolist()
    [36.1889, 32.2242]
    """
    s = get_scheme(scheme)
    lddmm_face_curves(s, "paper")
    m = s._check(mean_shape, "mean_shape")
    if m.ndim != 2:
        raise ValueError(f"mean_shape must have shape ({s.n_points}, 2), got {m.shape}")
    iod = float(s.interocular_distance(m))
    if not (np.isfinite(iod) and iod > 0):
        raise ValueError(f"mean_shape must have distinct, finite outer eye corners {s.interocular}; "
                         f"got an inter-ocular distance of {iod}")
    return np.asarray(_LDDMM_FACE_SIGMA_V_PX[s.name]) / _LDDMM_FACE_CROP_IOD_PX[s.name] * iod


# ---------------------------------------------------------------------------------------
# named conversions that are not a single index map
# ---------------------------------------------------------------------------------------
def _pipnet_wflw68() -> Tuple[np.ndarray, np.ndarray]:
    """(Mx, My) (68, 98) of PIPNet's WFLW -> 68 conversion (``lib/preprocess*.py``, ``convert_wflw``).

    Jaw: every second point; brows: x of the upper-edge point, y the mean of the upper and the
    facing lower-edge point (ends unchanged); nose 51-59; eye corners kept, lid points
    0.666 * corner-side lid point + 0.333 * lid middle (the official coefficients, which sum to
    0.999); lips 76-95.
    """
    mx = np.zeros((68, 98))
    my = np.zeros((68, 98))

    def both(j, src, w=1.0):
        mx[j, src] += w
        my[j, src] += w

    for k in range(17):
        both(k, 2 * k)
    brows = [(17, 33, None), (18, 34, 41), (19, 35, 40), (20, 36, 39), (21, 37, 38),
             (22, 42, 50), (23, 43, 49), (24, 44, 48), (25, 45, 47), (26, 46, None)]
    for j, up, low in brows:
        mx[j, up] = 1.0
        if low is None:
            my[j, up] = 1.0
        else:
            my[j, up] = my[j, low] = 0.5
    for k, i in enumerate(range(51, 60)):
        both(27 + k, i)
    for base, w in ((36, 60), (42, 68)):
        both(base, w)
        both(base + 1, w + 1, 0.666)
        both(base + 1, w + 2, 0.333)
        both(base + 2, w + 3, 0.666)
        both(base + 2, w + 2, 0.333)
        both(base + 3, w + 4)
        both(base + 4, w + 5, 0.666)
        both(base + 4, w + 6, 0.333)
        both(base + 5, w + 7, 0.666)
        both(base + 5, w + 6, 0.333)
    for k, i in enumerate(range(76, 96)):
        both(48 + k, i)
    return mx, my


#: Named conversions ``(src, dst, name) -> (Mx, My)`` with separate matrices for x and y.
_NAMED_CONVERSIONS: Dict[Tuple[str, str, str], Tuple[np.ndarray, np.ndarray]] = {
    ("wflw98", "ibug68", "pipnet"): _pipnet_wflw68(),
}


def conversions(src: Union[str, Scheme], dst: Union[str, Scheme]) -> Tuple[str, ...]:
    """Names of the conversions available from ``src`` to ``dst`` for :func:`convert`.

    ``"standard"`` (the correspondence matrix) always exists; ``wflw98 -> ibug68``
    also has ``"pipnet"``, PIPNet's WFLW-68 (its cross-domain test set).

    Examples
    --------
    >>> conversions("wflw98", "ibug68")
    ('standard', 'pipnet')
    """
    a, b = get_scheme(src).name, get_scheme(dst).name
    return ("standard",) + tuple(n for (s, d, n) in _NAMED_CONVERSIONS if (s, d) == (a, b))


# ---------------------------------------------------------------------------------------
# horizontal-flip permutations (data)
# ---------------------------------------------------------------------------------------
#: ``_FLIP[name][i]`` is the index that point ``i`` becomes after a horizontal mirror of the
#: image (left eye <-> right eye, ...).  Derived once from each scheme's mean face (PIPNet's
#: mean faces for ibug68 / wflw98 / cofw29 / aflw19 / lapa106; the box-normalised mean of the
#: shared AFLW-21, HELEN-29 and MTFL shapes for the others) by matching the mirrored mean face
#: to itself (Hungarian assignment; largest residual 3 % of the face width), then frozen here.
#: Each is an involution; ibug68's equals the standard 300-W table (checked in the tests).
_FLIP: Dict[str, Tuple[int, ...]] = {
    "ibug68": (16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
            27, 28, 29, 30, 35, 34, 33, 32, 31, 45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40, 54, 53, 52, 51,
            50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65),
    "wflw98": (32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
            6, 5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52,
            53, 54, 59, 58, 57, 56, 55, 72, 71, 70, 69, 68, 75, 74, 73, 64, 63, 62, 61, 60, 67, 66, 65, 82, 81,
            80, 79, 78, 77, 76, 87, 86, 85, 84, 83, 92, 91, 90, 89, 88, 95, 94, 93, 97, 96),
    "cofw29": (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26,
            27, 28),
    "aflw19": (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 14, 13, 12, 17, 16, 15, 18),
    "lapa106": (32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7,
            6, 5, 4, 3, 2, 1, 0, 46, 45, 44, 43, 42, 50, 49, 48, 47, 37, 36, 35, 34, 33, 41, 40, 39, 38, 51, 52,
            53, 54, 65, 64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 79, 78, 77, 76, 75, 82, 81, 80, 83, 70, 69, 68,
            67, 66, 73, 72, 71, 74, 90, 89, 88, 87, 86, 85, 84, 95, 94, 93, 92, 91, 100, 99, 98, 97, 96, 103,
            102, 101, 105, 104),
    "aflw21": (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 16, 15, 14, 13, 12, 19, 18, 17, 20),
    "helen_zhou29": (1, 0, 3, 2, 6, 7, 4, 5, 9, 8, 11, 10, 14, 15, 12, 13, 17, 16, 19, 18, 20, 21, 23, 22, 24, 25, 26,
            27, 28),
    "mtfl5": (1, 0, 2, 4, 3),
}


def flip_permutation(scheme: Union[str, "Scheme"]) -> np.ndarray:
    """Index permutation that relabels a horizontally mirrored face of ``scheme``.

    After mirroring an image (``x -> W - 1 - x``), the point stored at index ``i``
    plays the role of point ``perm[i]`` (the viewer's left eye becomes the right
    one), so the mirrored shape is ``mirrored[perm]``.  ``perm[perm]`` is the
    identity.

    Parameters
    ----------
    scheme : str or Scheme
        A registered scheme (see :func:`list_schemes`).

    Returns
    -------
    numpy.ndarray of int64, shape (P,)

    Examples
    --------
    >>> perm = flip_permutation("ibug68")
    >>> int(perm[36]), int(perm[45]), int(perm[30])  # outer eye corners swap, nose tip stays
    (45, 36, 30)
    """
    s = get_scheme(scheme)
    if s.name not in _FLIP:
        raise ValueError(f"scheme {s.name!r} has no flip permutation; known: {', '.join(sorted(_FLIP))}")
    return np.asarray(_FLIP[s.name], dtype=np.int64)

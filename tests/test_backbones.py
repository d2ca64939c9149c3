"""Backbones: output strides, widths, state-dict round trip with weights_only=True, bad input."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from flmcore.nn.backbones import MobileNetV2, ResNet18, load_weights  # noqa: E402


def _count_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("stride", [16, 32, 64, 128])
@pytest.mark.parametrize("kind", ["resnet", "mobilenet"])
def test_output_stride_and_channels(kind, stride):
    if kind == "resnet":
        net = ResNet18(in_channels=1, width=0.125, stride=stride)
    else:
        net = MobileNetV2(in_channels=1, width=0.25, stride=stride, last_channels=64)
    net.eval()
    x = torch.rand(2, 1, 128, 128)
    y = net(x)
    assert tuple(y.shape) == (2, net.out_channels, 128 // stride, 128 // stride)
    assert net.stride == stride
    if kind == "resnet" and stride == 32:  # float64 works and keeps the dtype
        assert net.double()(x.double()[:1]).dtype == torch.float64


def test_full_width_resnet18_matches_reference_layout():
    # ResNet-18 at width 1 has the published 11.18 M parameters without the fc layer (11,176,512)
    net = ResNet18(in_channels=3, width=1.0, stride=32)
    assert net.out_channels == 512
    assert _count_params(net) == 11_176_512
    mb = MobileNetV2(in_channels=3, width=1.0, stride=32)
    assert mb.out_channels == 1280
    # torchvision MobileNetV2 features: 2,223,872 parameters
    assert _count_params(mb.features) == 2_223_872


def test_width_scales_channels():
    assert ResNet18(width=0.5).out_channels == 256
    assert ResNet18(width=0.25).out_channels == 128
    assert MobileNetV2(width=0.5).out_channels == 1280
    assert MobileNetV2(width=0.5, last_channels=320).out_channels == 320
    assert _count_params(ResNet18(width=0.5)) < _count_params(ResNet18(width=1.0)) / 3


@pytest.mark.parametrize("cls", [ResNet18, MobileNetV2])
def test_state_dict_round_trip_weights_only(tmp_path, cls):
    kw = {"last_channels": 64} if cls is MobileNetV2 else {}
    torch.manual_seed(0)
    a = cls(width=0.25, stride=64, **kw)
    a.train()
    a(torch.rand(2, 1, 128, 128))  # move the BatchNorm running statistics away from the defaults
    a.eval()
    path = tmp_path / "w.pt"
    torch.save(a.state_dict(), path)
    torch.manual_seed(1)
    b = cls(width=0.25, stride=64, **kw)
    b.eval()
    x = torch.rand(1, 1, 128, 128)
    assert not torch.allclose(a(x), b(x))
    assert load_weights(b, path) is b
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    # wrapped checkpoints and in-memory state dicts
    c = cls(width=0.25, stride=64, **kw).eval()
    torch.save({"state_dict": a.state_dict()}, tmp_path / "wrapped.pt")
    load_weights(c, tmp_path / "wrapped.pt")
    torch.testing.assert_close(a(x), c(x), rtol=0, atol=0)
    load_weights(c, a.state_dict())


def test_load_weights_refuses_pickled_objects(tmp_path):
    from fractions import Fraction  # a picklable global that weights_only loading must refuse

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": Fraction(1, 3)}}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_weights(ResNet18(width=0.125), path)


def test_load_weights_errors(tmp_path):
    net = ResNet18(width=0.125)
    with pytest.raises(ValueError, match="does not exist"):
        load_weights(net, tmp_path / "missing.pt")
    with pytest.raises(RuntimeError, match="(?i)size mismatch|missing|unexpected"):
        load_weights(net, ResNet18(width=0.25).state_dict())
    with pytest.raises(TypeError, match="module must be"):
        load_weights("not a module", {})
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(TypeError, match="state dict"):
        load_weights(net, tmp_path / "list.pt")


def test_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="stride must be one of"):
        ResNet18(stride=8)
    with pytest.raises(ValueError, match="width must be > 0"):
        MobileNetV2(width=0)
    with pytest.raises(TypeError, match="in_channels must be an integer"):
        ResNet18(in_channels=1.5)
    net = ResNet18(width=0.125, stride=32)
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\)"):
        net(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of the output stride 32"):
        net(torch.zeros(1, 1, 80, 64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        net(np.zeros((1, 1, 64, 64)))

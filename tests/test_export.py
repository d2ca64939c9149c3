"""ONNX export (issue 11, item 4): the exported file, run with onnxruntime, matches torch."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from flmcore.models import Landmarker, build_network, decode_onnx_outputs, export_onnx, onnx_metadata  # noqa: E402
from flmcore.train._export import _DenseDecoder, merge_weights  # noqa: E402
from flmcore.nn.functional import pip_decode  # noqa: E402
from flmcore.pip import neighbor_table  # noqa: E402

SIZE = 64
TOL = 1e-4  # px


def _mean_shape():
    rng = np.random.default_rng(1)
    return rng.uniform(6, SIZE - 6, (68, 2))


def _net(kind="pipnet", seed=0):
    torch.manual_seed(seed)
    cfg = {"type": kind, "backbone": "resnet18", "width": 0.125, "input_size": SIZE, "stride": 16,
           "channels_last": False}
    net = build_network(cfg, "ibug68", mean_shape=_mean_shape(), load_pretrained=False)
    if kind == "pipnet":  # the official init (std 0.001) gives near-ties in the score maps
        for m in net.head.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.normal_(m.weight, std=0.3)
                torch.nn.init.normal_(m.bias, std=0.3)
    return net.eval(), cfg


def _session(path):
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _images(b, seed=0):
    return torch.rand(b, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _check_margin(net, x):
    """The torch score maps have a clear argmax (else a 1e-7 difference could pick another cell)."""
    with torch.no_grad():
        s = net(x)[0].flatten(2)
    top = s.topk(2, dim=-1).values
    assert float((top[..., 0] - top[..., 1]).min()) > 1e-4


@pytest.fixture(scope="module")
def pipnet():
    return _net("pipnet")


def test_dense_decoder_equals_pip_decode():
    g = torch.Generator().manual_seed(3)
    b, n, c, h, w, stride = 4, 68, 10, 4, 5, 16
    table = neighbor_table(_mean_shape(), c)
    maps = (torch.randn(b, n, h, w, generator=g), torch.rand(b, n, h, w, generator=g),
            torch.rand(b, n, h, w, generator=g), torch.randn(b, n * c, h, w, generator=g),
            torch.randn(b, n * c, h, w, generator=g))
    for merge in ("exact", "padded", "none"):
        ref = pip_decode(maps, stride, table, merge=merge)
        got = _DenseDecoder(n, (h, w), stride, table, merge)(*maps)
        assert got.shape == (b, n, 2)
        assert float((got - ref).abs().max()) < 1e-5, merge
        got_np = decode_onnx_outputs([m.numpy() for m in maps], stride, table.indices, merge=merge)
        assert np.abs(got_np - ref.double().numpy()).max() < 1e-5, merge


def test_merge_weights_rows_average():
    table = neighbor_table(_mean_shape(), 10)
    a, scale = merge_weights(table)
    np.testing.assert_array_equal(a.sum(0), table.counts)
    np.testing.assert_allclose((1 + a.sum(0)) * scale, 1.0)
    a, scale = merge_weights(table, "padded")
    np.testing.assert_allclose((1 + a.sum(0)) * scale, 1.0)


def test_pipnet_decoded_matches_torch_dynamic_batch(pipnet, tmp_path):
    net, _ = pipnet
    path = export_onnx(net, tmp_path / "pip.onnx", input_size=SIZE)
    assert path == str(tmp_path / "pip.onnx") and not os.path.exists(path + ".tmp")
    sess = _session(path)
    assert [o.name for o in sess.get_outputs()] == ["landmarks"]
    assert sess.get_inputs()[0].shape[1:] == [3, SIZE, SIZE] and isinstance(sess.get_inputs()[0].shape[0], str)
    for b in (1, 3):
        x = _images(b, seed=b)
        _check_margin(net, x)
        got = sess.run(None, {"images": x.numpy()})[0]
        ref = net.predict(x).numpy()
        assert got.shape == (b, 68, 2) and got.dtype == np.float32
        assert np.abs(got - ref).max() < TOL
    meta = onnx_metadata(path)
    assert meta["format"] == "flmcore-landmarks-onnx-1" and meta["model_type"] == "pipnet"
    assert meta["scheme"] == "ibug68" and meta["input_size"] == SIZE and meta["stride"] == 16
    assert meta["decode"] is True and meta["merge"] == "exact" and meta["flip_test"] is False
    np.testing.assert_array_equal(meta["neighbor_indices"], net.neighbor_indices.numpy())
    assert onnx_metadata(sess)["map_size"] == (4, 4)
    import onnx

    proto = onnx.load(path)
    onnx.checker.check_model(proto)
    ops = {n.op_type for n in proto.graph.node}  # the decoder is gather/scatter-free (plain operators)
    assert {"ArgMax", "MatMul"} <= ops and not ops & {"GatherElements", "GatherND", "ScatterND", "ScatterElements"}


def test_pipnet_raw_maps_and_numpy_decode(pipnet, tmp_path):
    net, _ = pipnet
    path = export_onnx(net, str(tmp_path / "raw.onnx"), decode=False, input_size=SIZE)
    sess = _session(path)
    meta = onnx_metadata(path)
    assert [o.name for o in sess.get_outputs()] == meta["outputs"] == \
        ["score", "offset_x", "offset_y", "neighbor_x", "neighbor_y"]
    for b in (1, 3):
        x = _images(b, seed=10 + b)
        _check_margin(net, x)
        outs = sess.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref_maps = net(x)
        for o, r in zip(outs, ref_maps):
            assert o.shape == tuple(r.shape) and np.abs(o - r.numpy()).max() < 1e-5
        got = decode_onnx_outputs(outs, meta["stride"], meta["neighbor_indices"], merge=meta["merge"])
        assert got.shape == (b, 68, 2) and got.dtype == np.float64
        assert np.abs(got - net.predict(x).numpy()).max() < TOL


def test_coord_regressor_and_fixed_batch(tmp_path):
    net, _ = _net("coord")
    sess = _session(export_onnx(net, tmp_path / "coord.onnx", input_size=SIZE))
    for b in (1, 3):
        x = _images(b, seed=20 + b)
        got = sess.run(None, {"images": x.numpy()})[0]
        assert got.shape == (b, 68, 2) and np.abs(got - net.predict(x).numpy()).max() < TOL
    fixed = _session(export_onnx(net, tmp_path / "coord2.onnx", input_size=SIZE, batch_size=2))
    assert fixed.get_inputs()[0].shape == [2, 3, SIZE, SIZE]
    assert onnx_metadata(tmp_path / "coord2.onnx")["model_type"] == "coord"


def test_landmarker_uint8_input_with_flip_test(pipnet, tmp_path):
    net, cfg = pipnet
    lm = Landmarker(net, {**cfg, "margin": 1.3}, "ibug68", flip_test=True, device="cpu")
    path = export_onnx(lm, tmp_path / "lm.onnx", input_format="uint8", metadata={"note": "test"})
    sess = _session(path)
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    crops = np.random.default_rng(4).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    got = sess.run(None, {"images": crops})[0]
    assert np.abs(got - lm.predict_crops(crops)).max() < TOL
    meta = onnx_metadata(path)
    assert meta["flip_test"] is True and meta["margin"] == 1.3 and meta["input_format"] == "uint8"
    assert meta["backbone"] == "resnet18" and meta["note"] == "test" and "crop_transform" in meta["crop_convention"]


def test_export_does_not_change_the_model(pipnet, tmp_path):
    net, _ = pipnet
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    export_onnx(net, tmp_path / "m.onnx", input_size=SIZE, decode=False)
    assert net.training
    net.eval()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_bad_input_errors(pipnet, tmp_path):
    net, _ = pipnet
    with pytest.raises(TypeError, match="model must be a flmcore Landmarker, PIPNet or CoordRegressor"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx", input_size=SIZE)
    with pytest.raises(ValueError, match="input_size is required"):
        export_onnx(net, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="multiple of the stride"):
        export_onnx(net, tmp_path / "x.onnx", input_size=60)
    with pytest.raises(ValueError, match="path .* does not exist"):
        export_onnx(net, tmp_path / "missing" / "x.onnx", input_size=SIZE)
    with pytest.raises(ValueError, match="path .* is a directory"):
        export_onnx(net, tmp_path, input_size=SIZE)
    with pytest.raises(TypeError, match="path must be"):
        export_onnx(net, 3, input_size=SIZE)
    with pytest.raises(ValueError, match="input_format"):
        export_onnx(net, tmp_path / "x.onnx", input_size=SIZE, input_format="rgb")
    with pytest.raises(ValueError, match="flip_test=True needs decode=True"):
        export_onnx(net, tmp_path / "x.onnx", input_size=SIZE, decode=False, flip_test=True)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(net, tmp_path / "x.onnx", input_size=SIZE, opset=9)
    with pytest.raises(ValueError, match="metadata must not redefine"):
        export_onnx(net, tmp_path / "x.onnx", input_size=SIZE, metadata={"scheme": "wflw98"})
    coord, _ = _net("coord")
    with pytest.raises(ValueError, match="decode=False exports the PIPNet head maps"):
        export_onnx(coord, tmp_path / "x.onnx", input_size=SIZE, decode=False)
    with pytest.raises(TypeError, match="outputs must be the 5 arrays"):
        decode_onnx_outputs([np.zeros((1, 2, 2, 2))], 16)
    with pytest.raises(ValueError, match="neighbors .* is required"):
        z = np.zeros((1, 2, 2, 2))
        decode_onnx_outputs([z, z, z, z, z], 16)
    with pytest.raises(ValueError, match="model file .* does not exist"):
        onnx_metadata(tmp_path / "nothing.onnx")
    assert not list(tmp_path.glob("*.onnx*"))

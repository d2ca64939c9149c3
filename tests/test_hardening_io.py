"""Issue 13, readers: every bad file gives a ValueError naming the file, with bounded memory;
plus property tests (hypothesis) of the readers against independent writers/parsers."""
import numpy as np
import pytest
import scipy.io

from flmcore import io

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _dlib(tmp_path, box="left='2' top='1' width='3' height='4'", part="name='0' x='5' y='6'"):
    f = tmp_path / "d.xml"
    f.write_text(f"<dataset><images><image file='a.jpg'><box {box}><part {part}/></box></image></images></dataset>")
    return f


@pytest.mark.parametrize("part,msg", [
    ("name='-1' x='5' y='6'", r"<part> name must be a point index in \[0, 9999\], got '-1'"),
    ("name='100000000' x='5' y='6'", r"<part> name must be a point index in \[0, 9999\], got '100000000'"),
    ("name='0' x='inf' y='6'", "part 0 must have finite x, y"),
    ("name='0' x='nan' y='6'", "part 0 must have finite x, y"),
])
def test_dlib_bad_parts(tmp_path, part, msg):
    f = _dlib(tmp_path, part=part)
    with pytest.raises(ValueError, match=msg) as e:
        io.read_dlib_xml(f)
    assert str(f) in str(e.value)


@pytest.mark.parametrize("box", [
    "left='inf' top='1' width='3' height='4'", "left='2' top='nan' width='3' height='4'",
    "left='2' top='1' width='-3' height='4'", "left='2' top='1' width='3' height='-0.5'",
    "left='2' top='1' width='3' height='inf'"])
def test_dlib_bad_boxes(tmp_path, box):
    f = _dlib(tmp_path, box=box)
    with pytest.raises(ValueError, match=r"box must have finite left/top and finite width/height >= 0") as e:
        io.read_dlib_xml(f)
    assert str(f) in str(e.value)
    # a box partly outside the image (negative left/top) is a normal dlib box
    assert io.read_dlib_xml(_dlib(tmp_path, box="left='-2' top='-1' width='3' height='4'"))[0]["boxes"][0, 0] == -2


def _write(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    return f


@pytest.mark.parametrize("bad", ["inf", "-inf", "nan", "1e999"])
def test_text_readers_reject_non_finite_coordinates(tmp_path, bad):
    cases = [
        (io.read_hrnet_csv, _write(tmp_path, "h.csv", f"name,scale,cw,ch,x0,y0\na.jpg,1.5,10,20,{bad},4\n")),
        (io.read_pipnet_list, _write(tmp_path, "l.txt", f"a.jpg 0.1 {bad} 0.3 0.4\n")),
        (io.read_mtfl, _write(tmp_path, "m.txt", f"a.jpg 1 2 3 4 {bad} 6 7 8 9 10 1 2 2 3\n")),
        (io.read_pts, _write(tmp_path, "a.pts", f"version: 1\nn_points: 1\n{{\n{bad} 2\n}}\n")),
    ]
    for reader, f in cases:
        with pytest.raises(ValueError, match="finite|non-finite") as e:
            reader(f)
        assert str(f) in str(e.value), reader.__name__


def test_coco_rejects_inf_keypoints_and_boxes(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"annotations": [{"id": 1, "image_id": 1, "keypoints": [1, Infinity, 2], "bbox": [0, 0, 5, 5]}]}')
    with pytest.raises(ValueError, match=r"annotation id 1: keypoints must be finite") as e:
        io.read_coco_json(f)
    assert str(f) in str(e.value)
    f.write_text('{"annotations": [{"id": 1, "image_id": 1, "keypoints": [1, 2, 2], "bbox": [0, 0, Infinity, 5]}]}')
    with pytest.raises(ValueError, match="bbox values must be finite"):
        io.read_coco_json(f)
    f.write_text("[" * 100000 + "]" * 100000)      # RecursionError inside json
    with pytest.raises(ValueError, match=r"cannot read as a COCO keypoint JSON file") as e:
        io.read_coco_json(f)
    assert str(f) in str(e.value)


def test_3ddfa_inf_and_forged_header(tmp_path):
    f = tmp_path / "p.npy"
    np.save(f, np.array([[[1.0, np.inf], [2.0, 3.0]]]))
    with pytest.raises(ValueError, match="coordinates must be finite"):
        io.read_3ddfa_npy(f)
    # a header that declares 149 GiB: refused from the header, nothing allocated
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 2, 100000), }"
    header += " " * (118 - len(header)) + "\n"
    f.write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 64)
    msg = r"header declares an array of shape \(100000, 2, 100000\).* file holds 64 bytes"
    with pytest.raises(ValueError, match=msg) as e:
        io.read_3ddfa_npy(f)
    assert str(f) in str(e.value)
    f.write_bytes(b"\x93NUMPY\x01\x00\x05\x00{'de")  # truncated header: EOF
    with pytest.raises(ValueError, match="not a valid .npy file"):
        io.read_3ddfa_npy(f)


def test_mat_readers_wrap_parser_errors(tmp_path):
    f = tmp_path / "k.mat"
    scipy.io.savemat(f, {"Points": np.ones((68, 2)), "Occ": np.zeros((1, 68))})
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])            # truncated: MatReadError / EOFError inside SciPy
    with pytest.raises(ValueError) as e:
        io.read_cofw68_mat(f)
    assert str(f) in str(e.value)
    pts = np.ones((68, 2))
    pts[3, 1] = np.inf
    scipy.io.savemat(f, {"Points": pts})
    with pytest.raises(ValueError, match="Points must be finite"):
        io.read_cofw68_mat(f)
    scipy.io.savemat(f, {"bboxes": np.array([[1.0, 2.0, np.nan, 4.0]])})
    with pytest.raises(ValueError, match="bboxes must be finite"):
        io.read_cofw68_bboxes(f)


def test_image_decompression_bomb_and_garbage_named(tmp_path, monkeypatch):
    from PIL import Image

    f = tmp_path / "x.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(f)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 px > 2 x 100: DecompressionBombError
    with pytest.raises(ValueError, match="DecompressionBombError") as e:
        io.read_image(f)
    assert str(f) in str(e.value)
    g = tmp_path / "bad.pts"
    g.write_bytes(b"\xff\xfe\x00garbage\x00\n{\n1 2\n")
    with pytest.raises(ValueError) as e:
        io.read_pts(g)
    assert str(g) in str(e.value)


# ----------------------------------------------------------------------------- property tests
coords = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)


@FUZZ
@given(pts=st.lists(st.tuples(coords, coords), min_size=1, max_size=30))
def test_pts_round_trip(tmp_path, pts):
    f = tmp_path / "r.pts"
    # an independent writer: the iBUG layout, 1-based, repr() keeps every bit
    f.write_text("version: 1\nn_points: %d\n{\n" % len(pts)
                 + "".join(f"{x + 1.0!r} {y + 1.0!r}\n" for x, y in pts) + "}\n")
    got = io.read_pts(f)
    np.testing.assert_array_equal(got, np.array(pts) + 1.0 - 1.0)


@FUZZ
@given(rows=st.lists(st.lists(coords, min_size=4, max_size=4), min_size=1, max_size=8))
def test_pipnet_list_round_trip(tmp_path, rows):
    f = tmp_path / "l.txt"
    f.write_text("".join(f"img{i}.jpg " + " ".join(repr(v) for v in r) + "\n" for i, r in enumerate(rows)))
    got = io.read_pipnet_list(f)
    assert got["names"] == [f"img{i}.jpg" for i in range(len(rows))]
    np.testing.assert_array_equal(got["shapes"], np.array(rows).reshape(len(rows), 2, 2))


@FUZZ
@given(blob=st.binary(min_size=0, max_size=300))
def test_readers_never_raise_anything_but_a_named_value_error(tmp_path, blob):
    readers = [(io.read_pts, "a.pts"), (io.read_dlib_xml, "d.xml"), (io.read_coco_json, "c.json"),
               (io.read_hrnet_csv, "h.csv"), (io.read_pipnet_list, "l.txt"), (io.read_3ddfa_npy, "p.npy"),
               (io.read_cofw68_mat, "k.mat"), (io.read_mtfl, "m.txt"), (io.read_image, "i.png")]
    for reader, name in readers:
        f = tmp_path / name
        f.write_bytes(blob)
        try:
            reader(f)
        except ValueError as e:
            assert str(f) in str(e), (reader.__name__, str(e))


@FUZZ
@given(text=st.text(alphabet=st.sampled_from(list("0123456789 .-+eE\n{}:abinfINFNa,")), max_size=200))
def test_text_readers_on_number_soup(tmp_path, text):
    for reader, name in [(io.read_pts, "a.pts"), (io.read_pipnet_list, "l.txt"), (io.read_hrnet_csv, "h.csv"),
                         (io.read_mtfl, "m.txt")]:
        f = tmp_path / name
        f.write_text(text)
        try:
            out = reader(f)
        except ValueError as e:
            assert str(f) in str(e)
            continue
        arr = out if isinstance(out, np.ndarray) else out.get("shapes")
        if arr is not None:
            assert np.isfinite(arr).all()

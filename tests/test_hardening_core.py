"""Issue 13: crashes, silent NaN/inf and unclear errors found by fuzzing, each pinned by a test.

Every test here failed (crash, NaN, wrong acceptance or an error without the argument's name)
on the code before the fix.
"""
import numpy as np
import pytest

from flmcore import lddmm
from flmcore._validate import check_images, check_num_threads, check_shapes, max_num_threads
from flmcore.procrustes import align, generalized_procrustes
from flmcore.sift import shape_indexed_sift

RNG = np.random.default_rng(0)
IMG = RNG.random((40, 40)).astype(np.float32)
X5 = RNG.random((5, 2)) * 10


# ----------------------------------------------------------------------------- SIFT crashes
@pytest.mark.parametrize("reference", [None, "ref"])
def test_sift_tiny_window_is_an_error_not_a_crash(reference):
    ref = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]) if reference else None
    pts = [[10.0, 10.0], [20.0, 10.0], [10.0, 20.0]]
    with pytest.raises(ValueError, match=r"window must be at least 0.001 pixels .* got (9.99999|1e-40)"):
        shape_indexed_sift(IMG, pts, window=1e-40, reference=ref)
    with pytest.raises(ValueError, match="window must be at least"):  # rotated path (was all NaN)
        shape_indexed_sift(IMG, pts, window=1e-40, orientation=0.3, reference=ref)


@pytest.mark.parametrize("theta", [1e39, -1e39, 1e10, 2 * np.pi + 0.25, -7.0])
def test_sift_huge_orientation_is_reduced_modulo_2pi(theta):
    pts = [[10.0, 10.0], [22.5, 17.25]]
    d = shape_indexed_sift(IMG, pts, window=12.0, orientation=theta)
    assert np.isfinite(d).all()
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, rtol=1e-5)
    ref = shape_indexed_sift(IMG, pts, window=12.0, orientation=float(np.mod(theta, 2 * np.pi)))
    np.testing.assert_array_equal(d, ref)


# ----------------------------------------------------------------------------- threads
def test_num_threads_bounded_in_one_place():
    assert check_num_threads(None) >= 1
    assert check_num_threads(max_num_threads()) == max_num_threads()
    for bad in (max_num_threads() + 1, 100000, 10 ** 12, 10 ** 30):
        with pytest.raises(ValueError, match=r"num_threads must be <= \d+"):
            check_num_threads(bad)


@pytest.mark.parametrize("call", [
    lambda nt: align(np.stack([X5, X5 + 1]), X5, num_threads=nt),
    lambda nt: generalized_procrustes(np.stack([X5, X5 * 2, X5 + 1]), num_threads=nt),
    lambda nt: shape_indexed_sift(IMG, [[10.0, 10.0]], num_threads=nt),
    lambda nt: lddmm.flow(X5, X5, 5.0, n_steps=2, num_threads=nt),
    lambda nt: lddmm.shoot(X5, X5, 5.0, n_steps=2, num_threads=nt),
    lambda nt: lddmm.currents_distance(X5, X5 + 1, 3.0, num_threads=nt),
], ids=["align", "gpa", "sift", "flow", "shoot", "currents"])
@pytest.mark.parametrize("nt", [100000, 10 ** 12])
def test_every_kernel_caller_rejects_huge_num_threads(call, nt):
    with pytest.raises(ValueError, match="num_threads must be <="):
        call(nt)


def test_ssr_rejects_huge_num_threads():
    from flmcore.ssr import lars_lasso

    X = RNG.random((20, 4))
    with pytest.raises(ValueError, match="num_threads must be <="):
        lars_lasso(X, X[:, :1], 0.1, num_threads=100000)


# ----------------------------------------------------------------------------- silent NaN / inf
def test_lddmm_tiny_sigma_is_rejected_not_nan():
    with pytest.raises(ValueError, match=r"sigma must be in \[1e-12, 1e\+12\].*got 1e-160"):
        lddmm.shoot(X5, X5, 1e-160, n_steps=2)
    with pytest.raises(ValueError, match="sigma must be in"):
        lddmm.flow(X5, X5, [1.0, 1e-200], n_steps=2, curves=[[0, 1], [2, 3, 4]])
    with pytest.raises(ValueError, match="sigma_w must be in"):
        lddmm.currents_distance(X5, X5 + 1, 1e-300)


def test_lddmm_overflow_is_an_error_naming_the_momenta():
    with pytest.raises(ValueError, match="shoot overflowed.*p0"):
        lddmm.shoot(X5, X5 * 1e300, 1.0, n_steps=2)
    with pytest.raises(ValueError, match="flow overflowed.*momenta"):
        lddmm.flow(X5, np.full((5, 2), 1.5e308), 50.0, n_steps=2)


def test_align_huge_weights_is_stable():
    src = np.stack([X5 * 2 + 3, X5 @ np.array([[0.0, 1.0], [-1.0, 0.0]])])
    w = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    a_ref, T_ref = align(src, X5, weights=w)
    a, T = align(src, X5, weights=w * 1e300)
    assert np.isfinite(a).all() and np.isfinite(T.scale).all()
    np.testing.assert_allclose(a, a_ref, atol=1e-9)
    np.testing.assert_allclose(T.scale, T_ref.scale, rtol=1e-12)
    m_ref = generalized_procrustes(np.stack([X5, X5 * 2, X5 + 1]), weights=w)
    m = generalized_procrustes(np.stack([X5, X5 * 2, X5 + 1]), weights=w * 1e300)
    np.testing.assert_allclose(m.mean, m_ref.mean, atol=1e-9)


def test_align_overflowing_coordinates_named():
    with pytest.raises(ValueError, match="src and dst coordinates must be below 1e150"):
        align(X5 * 1e200, X5)


# ----------------------------------------------------------------------------- read-only input
def _ro(a):
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def test_lddmm_accepts_read_only_and_broadcast_arrays():
    x, p = _ro(X5), _ro(RNG.normal(size=(5, 2)))
    ref_flow = lddmm.flow(X5.copy(), p.copy(), 5.0, n_steps=3)
    np.testing.assert_array_equal(lddmm.flow(x, p, 5.0, n_steps=3), ref_flow)
    xb = np.broadcast_to(X5, (2, 5, 2))  # read-only view, a normal input
    assert lddmm.flow(xb, np.broadcast_to(p, (2, 5, 2)), 5.0, n_steps=3).shape == (2, 4, 5, 2)
    x1, p1 = lddmm.shoot(x, p, 5.0, n_steps=3)
    np.testing.assert_array_equal(x1, lddmm.shoot(X5.copy(), p.copy(), 5.0, n_steps=3)[0])
    np.testing.assert_array_equal(lddmm.kernel_matvec(x, p, 5.0), lddmm.kernel_matvec(X5.copy(), p.copy(), 5.0))
    traj = _ro(ref_flow)
    y = lddmm.flow_points(traj, p, _ro([[1.0, 2.0]]), 5.0)
    np.testing.assert_array_equal(y, lddmm.flow_points(ref_flow, p.copy(), [[1.0, 2.0]], 5.0))
    assert np.isfinite(lddmm.currents_distance(x, _ro(X5 + 1), 3.0))


def test_point_curves_below_minus_one_rejected():
    curves = [[0, 1, 2], [3, 4]]
    traj = lddmm.flow(X5, X5 * 0.1, [2.0, 3.0], n_steps=2, curves=curves)
    with pytest.raises(ValueError, match=r"point_curves must be -1 .* got point_curves\[0\] = -2"):
        lddmm.flow_points(traj, X5 * 0.1, [[1.0, 1.0]], [2.0, 3.0], curves=curves, point_curves=[-2])
    # -1 keeps the point still (documented), 0 moves it with the first curve
    y = lddmm.flow_points(traj, X5 * 0.1, [[1.0, 1.0]], [2.0, 3.0], curves=curves, point_curves=[-1])
    np.testing.assert_array_equal(y, [[1.0, 1.0]])


# ----------------------------------------------------------------------------- ragged lists, images
RAGGED = [[1.0, 2.0], [3.0]]


@pytest.mark.parametrize("call,name", [
    (lambda: check_shapes(RAGGED, "shapes"), "shapes"),
    (lambda: align(RAGGED, X5), "src"),
    (lambda: align(X5, RAGGED), "dst"),
    (lambda: generalized_procrustes([X5.tolist(), RAGGED]), "shapes"),
    (lambda: shape_indexed_sift(IMG, RAGGED), "shapes"),
    (lambda: shape_indexed_sift([[0.0, 1.0], [1.0]], [[1.0, 1.0]]), "images"),
    (lambda: lddmm.flow(RAGGED, X5, 1.0, n_steps=1), "x0"),
    (lambda: lddmm.flow(X5, [[1.0, 2.0]] * 4 + [[1.0]], 1.0, n_steps=1), "momenta"),
    (lambda: lddmm.shoot(X5, [[1.0, 2.0]] * 4 + [[1.0]], 1.0), "p0"),
    (lambda: lddmm.currents_distance(RAGGED, X5, 1.0), "curve_a"),
], ids=["check_shapes", "align-src", "align-dst", "gpa", "sift-shapes", "sift-images", "flow-x0",
        "flow-momenta", "shoot-p0", "currents"])
def test_ragged_lists_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a rectangular array, got a ragged nested sequence"):
        call()


def test_grayscale_width_3_batch_is_not_taken_for_colour():
    imgs = RNG.random((2, 30, 3)).astype(np.float32)       # two grayscale images 3 pixels wide
    d = shape_indexed_sift(imgs, np.ones((2, 1, 2)), window=2.0, smooth=0.0)
    assert d.shape == (2, 1, 128)
    colour = RNG.random((30, 30, 3)).astype(np.float32)    # one colour image with single shapes
    with pytest.raises(ValueError, match="to_gray"):
        shape_indexed_sift(colour, [[5.0, 5.0]])
    with pytest.raises(ValueError, match=r"ambiguous: a colour \(H, W, 3\) image or a batch of 2 grayscale"):
        check_images(imgs)
    assert check_images(imgs, batch=True).shape == (2, 30, 3)


# ----------------------------------------------------------------------------- schemes
def test_scheme_rejects_out_of_range_indices_and_no_points():
    from flmcore.schemes import Curve, Scheme

    base = dict(name="x", n_points=3, curves=(Curve("a", (0, 1, 2), False),), corners=(0,), interocular=(0, 2),
                left_eye=(0,), right_eye=(2,))
    assert Scheme(**base).n_points == 3
    for change, msg in [(dict(n_points=0), "n_points must be an integer >= 1, got 0"),
                        (dict(curves=(Curve("a", (0, 5), False),)), r"curves\[0\] \(a\) must hold point indices in "
                                                                    r"\[0, 3\), got \[5\]"),
                        (dict(corners=(-1,)), r"corners must hold point indices in \[0, 3\), got \[-1\]"),
                        (dict(interocular=(0, 3)), "interocular must hold point indices"),
                        (dict(left_eye=(7,)), "left_eye must hold point indices")]:
        with pytest.raises(ValueError, match=msg):
            Scheme(**dict(base, **change))


@pytest.mark.parametrize("call,name", [
    (lambda: lddmm.kernel_matvec(X5, X5, [[1.0, 2.0], [3.0]]), "sigma"),
    (lambda: lddmm.shoot(X5, X5, [[1.0], [2.0, 3.0]]), "sigma"),
    (lambda: __import__("flmcore.ssr").ssr.lars_lasso(RNG.random((6, 3)), RNG.random((6, 2)), [[1.0], [2.0, 3.0]]),
     "tau"),
    (lambda: __import__("flmcore.io").io.to_gray([[0.0, 1.0], [1.0]]), "image"),
])
def test_ragged_parameters_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name} must be a rectangular array"):
        call()


def test_paths_must_be_path_like():
    from flmcore.io import write_pts
    from flmcore.pip import load_meanface_txt

    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got list"):
        write_pts(["a.pts"], X5)
    with pytest.raises(TypeError, match="path must be a str, os.PathLike or a text file object, got list"):
        load_meanface_txt(["m.txt"])


def test_register_default_sigma_w_is_half_sigma_v():
    curves = [[0, 1, 2], [3, 4]]
    tpl = X5.copy()
    tgt = tpl + [0.4, -0.2] + 0.05 * RNG.normal(size=tpl.shape)
    kw = dict(curves=curves, n_steps=3, max_iter=15)
    default = lddmm.register(tpl, tgt, sigma_v=[4.0, 6.0], **kw)
    half = lddmm.register(tpl, tgt, sigma_v=[4.0, 6.0], sigma_w=[2.0, 3.0], **kw)
    other = lddmm.register(tpl, tgt, sigma_v=[4.0, 6.0], sigma_w=[4.0, 6.0], **kw)
    np.testing.assert_array_equal(default.momenta, half.momenta)
    assert default.loss == half.loss != other.loss


def test_negative_or_nan_tau_per_target_rejected():
    from flmcore.ssr import lars_lasso

    X, Y = RNG.random((8, 3)), RNG.random((8, 2))
    for tau in ([1.0, -0.5], [np.nan, 1.0]):
        with pytest.raises(ValueError, match="tau must be >= 0"):
            lars_lasso(X, Y, tau)
    with pytest.raises(ValueError, match=r"tau must be a number or have shape \(2,\)"):
        lars_lasso(X, Y, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(lars_lasso(X, Y, [0.0, 0.0]), 0.0)


def test_broken_bundled_sample_fails_instead_of_skipping(monkeypatch):
    import flmcore.data
    from conftest import load_bundled_sample

    def corrupt(name):
        raise ValueError("corrupt npz")

    monkeypatch.setattr(flmcore.data, "load_sample", corrupt)
    with pytest.raises(ValueError, match="corrupt npz"):        # an error, never a skip
        load_bundled_sample("helen_pairs")

    def missing(name):
        raise flmcore.data.SampleNotAvailableError("not there")

    monkeypatch.setattr(flmcore.data, "load_sample", missing)
    monkeypatch.delenv("FLMCORE_DATA", raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing from the source checkout"):
        load_bundled_sample("helen_pairs")


def test_assign_to_curves_single_point_curve_and_curve_distance_return_types():
    shape = np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 8.0]])
    # curve 0: the segment (0,0)-(10,0); curve 1: the single point (5, 8)
    got = lddmm.assign_to_curves([[5.0, 6.0], [5.0, 1.0], [-4.0, -7.5]], shape, [[0, 1], [2]])
    np.testing.assert_array_equal(got, [1, 0, 0])
    a, b = X5, X5 + 1
    assert isinstance(lddmm.currents_distance(a, b, 3.0), float)
    batch = lddmm.currents_distance(np.stack([a, a]), np.stack([b, a]), 3.0)
    assert isinstance(batch, np.ndarray) and batch.shape == (2,) and batch[1] == 0.0
    one = lddmm.varifold_distance(a[None], b[None], 3.0)
    assert isinstance(one, np.ndarray) and one.shape == (1,)


def test_register_default_beta():
    curves = [[0, 1, 2], [3, 4]]
    tgt = X5 + [0.4, -0.2]
    kw = dict(curves=curves, sigma_v=[4.0, 6.0], n_steps=3, max_iter=10)
    assert lddmm.register(X5, tgt, **kw).loss == lddmm.register(X5, tgt, beta=0.1, **kw).loss
    assert lddmm.register(X5, tgt, **kw).loss != lddmm.register(X5, tgt, beta=0.15, **kw).loss


def test_landmark_distance_single_and_batch():
    a, b = X5, X5 + [3.0, 4.0]
    assert lddmm.landmark_distance(a, b) == 25.0 and isinstance(lddmm.landmark_distance(a, b), float)
    out = lddmm.landmark_distance(np.stack([a, a]), np.stack([b, a]), squared=False)
    assert isinstance(out, np.ndarray) and out.tolist() == [5.0, 0.0]

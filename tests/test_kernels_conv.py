"""Convolutional NNGP/NTK: values against the brute-force reference and Monte-Carlo CNNs, the
band-only computation against the full one, and the hand-written VJPs against finite
differences (``docs/math/conv.md``)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import kernelkip as kk
from kernelkip import _deps
from kernelkip.kernels import conv

from . import conv_reference as ref
from .gradcheck import check_vjp, check_vjp_coordinates
from .strategies import activations

pytestmark = pytest.mark.skipif(not _deps.numba_available(),
                                reason="the convolutional kernels need Numba")

W, B = 1.3, 0.2


def _pair(layers):
    """``(kk.serial(...), reference list)`` from one spec: ``("conv", f, padding)``,
    ``("relu",)``, ``("erf",)``, ``("pool",)``, ``("flatten",)``, ``("gap",)``, ``("dense",)``."""
    ours, theirs = [], []
    for spec in layers:
        kind = spec[0]
        if kind == "conv":
            ours.append(kk.Conv(spec[1], spec[2], W, B))
            theirs.append(("conv", spec[1], spec[2], W, B))
        elif kind == "dense":
            ours.append(kk.Dense(W, B))
            theirs.append(("dense", W, B))
        else:
            ours.append({"relu": kk.Relu(), "erf": kk.Erf(), "pool": kk.AvgPool(2),
                         "flatten": kk.Flatten(), "gap": kk.GlobalAvgPool()}[kind])
            theirs.append((kind,))
    return kk.serial(*ours), theirs


REFERENCE_ARCHS = {
    "convnet2-flatten": [("conv", 3, "SAME"), ("relu",), ("pool",), ("conv", 3, "SAME"),
                         ("relu",), ("pool",), ("flatten",), ("dense",)],
    "convnet2-gap": [("conv", 3, "SAME"), ("relu",), ("pool",), ("conv", 3, "SAME"), ("relu",),
                     ("pool",), ("gap",), ("dense",)],
    "valid-erf-flatten": [("conv", 3, "VALID"), ("erf",), ("conv", 3, "SAME"), ("erf",),
                          ("flatten",), ("dense",)],
    "no-pool-diagonal-only": [("conv", 3, "SAME"), ("relu",), ("conv", 3, "SAME"), ("relu",),
                              ("flatten",), ("dense",)],
    "pool-first-5x5": [("pool",), ("conv", 5, "SAME"), ("relu",), ("flatten",), ("dense",)],
    "conv-only-gap": [("conv", 1, "VALID"), ("gap",), ("dense",)],
}


@pytest.mark.parametrize("name", sorted(REFERENCE_ARCHS))
@pytest.mark.parametrize("self_kernel", [False, True], ids=["cross", "self"])
def test_values_equal_the_brute_force_reference(name, self_kernel):
    arch, ref_arch = _pair(REFERENCE_ARCHS[name])
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(3, 6, 5, 2))
    x2 = None if self_kernel else rng.normal(size=(2, 6, 5, 2))
    nngp, ntk = kk.kernel(x1, x2, arch)
    want_nngp, want_ntk = ref.kernel_matrices(x1, x1 if x2 is None else x2, ref_arch)
    np.testing.assert_allclose(nngp, want_nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ntk, want_ntk, rtol=1e-12, atol=1e-14)
    if self_kernel:
        assert np.array_equal(nngp, nngp.T) and np.array_equal(ntk, ntk.T)


def test_convnet_preset_equals_the_reference_with_extra_conv():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 8, 8, 3))
    arch = kk.ConvNet(depth=2, W_std=W, b_std=B, extra_conv=True)
    spec = [("conv", 3, "SAME"), ("relu",)] + [("conv", 3, "SAME"), ("relu",), ("pool",)] * 2 \
        + [("flatten",), ("dense",)]
    _, ref_arch = _pair(spec)
    got = kk.kernel(x[:1], x[1:], arch)
    want = ref.kernel_matrices(x[:1], x[1:], ref_arch)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_float32_agrees_with_float64(readout):
    rng = np.random.default_rng(2)
    x1, x2 = rng.normal(size=(3, 12, 12, 3)), rng.normal(size=(4, 12, 12, 3))
    arch = kk.ConvNet(depth=2, readout=readout)
    k64 = kk.kernel(x1, x2, arch)
    k32 = kk.kernel(x1.astype(np.float32), x2.astype(np.float32), arch)
    for a, b in zip(k32, k64):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=2e-5)


@pytest.mark.parametrize("name", ["conv-relu-pool-flatten", "conv-erf-gap"])
def test_nngp_equals_monte_carlo_of_random_cnns(name):
    """E[f(x_i) f(x_j)] over 3000 random CNNs of 64 channels against kk.nngp (5 SE + 3%:
    finite width biases by O(1/width))."""
    spec = {"conv-relu-pool-flatten": [("conv", 3, "SAME"), ("relu",), ("pool",),
                                       ("conv", 3, "SAME"), ("relu",), ("flatten",),
                                       ("dense",)],
            "conv-erf-gap": [("conv", 3, "VALID"), ("erf",), ("gap",), ("dense",)]}[name]
    arch, ref_arch = _pair(spec)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 4, 4, 2))
    exact = kk.nngp(x, None, arch)
    samples = np.array([np.outer(*(2 * [ref.finite_cnn_outputs(x, ref_arch, 64, rng)]))
                        for _ in range(3000)])
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
    assert np.all(np.abs(mean - exact) <= 5 * se + 0.03 * np.abs(exact)), (mean, exact, se)


# ============================================================================ band vs full

@st.composite
def conv_archs(draw):
    """A small spatial architecture (1-2 blocks of conv, activation, maybe a pool), a readout
    and a Dense head, with an image shape ``(H, W, C)`` it fits."""
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    lo = 5 if padding == "VALID" else 3
    h, w = draw(st.integers(lo, 7)), draw(st.integers(lo, 7))
    shape = (h, w, draw(st.integers(1, 3)))
    layers = []
    for pool in draw(st.lists(st.booleans(), min_size=1, max_size=2)):
        f = draw(st.sampled_from([1, 3]))
        pad = padding if min(h, w) >= f + 2 else "SAME"
        # One channel through a bias-free 1x1 first conv makes every pair of patches collinear:
        # the arc-cosine kernels sit on their kink there, where a float evaluation carries
        # sqrt(eps) noise that finite differences cannot see through (that case has its own
        # closed-form test below).
        collinear = not layers and f == 1 and shape[2] == 1
        b_std = draw(st.floats(0.1, 0.5) if collinear else st.floats(0.0, 0.5))
        layers.append(kk.Conv(f, pad, draw(st.floats(0.6, 1.6)), b_std))
        if pad == "VALID":
            h, w = h - f + 1, w - f + 1
        layers.append(draw(activations(("relu", "abrelu", "erf", "gelu"))))
        if pool and min(h, w) >= 2:
            layers.append(kk.AvgPool(2))
            h, w = h // 2, w // 2
    layers.append(draw(st.sampled_from([kk.Flatten(), kk.GlobalAvgPool()])))
    layers.append(kk.Dense(draw(st.floats(0.6, 1.6)), draw(st.floats(0.0, 0.5))))
    return kk.serial(*layers), shape


@st.composite
def conv_problems(draw):
    """``(arch, x1, x2)`` with images of a drawn shape; ``x2`` may be ``None``."""
    arch, shape = draw(conv_archs())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n1, n2 = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    x1 = rng.normal(size=(n1,) + shape)
    x2 = None if draw(st.booleans()) else rng.normal(size=(n2,) + shape)
    return arch, x1, x2


def _fits(arch, x):
    try:
        conv.plan(conv.split(arch)[0], x.shape[1:])
    except ValueError:
        return False
    return True


@given(problem=conv_problems())
def test_band_only_equals_the_full_computation(problem):
    arch, x1, x2 = problem
    if not _fits(arch, x1):
        return
    spatial, _ = conv.split(arch)
    band, _ = conv.conv_input_fwd(x1, x2, spatial, track_ntk=True, save=False)
    full, _ = conv.conv_input_fwd(x1, x2, spatial, track_ntk=True, save=False, band=False)
    for name in ("cov1", "nngp", "cov2", "ntk"):
        a, b = getattr(band, name), getattr(full, name)
        if a is None:
            assert b is None
            continue
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_band_keeps_only_the_needed_offsets():
    """ConvNet3 on 32x32 with Flatten: radius 7 at 32x32, 3 at 16x16, 1 at 8x8, 0 at the top;
    GlobalAvgPool needs every offset."""
    prog = conv.plan(conv.split(kk.ConvNet(3))[0], (32, 32, 3))
    assert [tuple(g) for g in prog.geo[[0, 3, 6, 9]]] == [
        (32, 32, 7, 7), (16, 16, 3, 3), (8, 8, 1, 1), (4, 4, 0, 0)]
    gap = conv.plan(conv.split(kk.ConvNet(3, readout="gap"))[0], (32, 32, 3))
    assert [tuple(g) for g in gap.geo[[0, 3, 6, 9]]] == [
        (32, 32, 31, 31), (16, 16, 15, 15), (8, 8, 7, 7), (4, 4, 3, 3)]
    flat = conv.plan(conv.split(kk.serial(kk.Conv(), kk.Relu(), kk.Conv(), kk.Flatten(),
                                          kk.Dense()))[0], (9, 9, 1))
    assert np.all(flat.geo[:, 2:] == 0)


# ============================================================================ VJPs

def _dot_test(x1, x2, arch, get, rng, wrt=(True, True)):
    _, pullback = kk.kernel_pullback(x1, x2, arch, get=get)
    if x2 is None:
        return check_vjp(lambda a: kk.kernel(a, None, arch, get=get),
                         lambda *c: pullback(*c)[:1], (x1,), rng)
    return check_vjp(lambda a, b: kk.kernel(a, b, arch, get=get),
                     lambda *c: pullback(*c, wrt=wrt), (x1, x2), rng)


@given(problem=conv_problems(), get=st.sampled_from(["nngp", "ntk", ("nngp", "ntk")]),
       wrt=st.sampled_from([(True, True), (True, False), (False, True)]),
       seed=st.integers(0, 2**32 - 1))
def test_vjp_passes_the_dot_test_against_finite_differences(problem, get, wrt, seed):
    """Every layer's VJP (conv SAME/VALID, pooling, activations with their variance terms,
    Flatten/GlobalAvgPool, the self-kernel's total derivative) through <c, dK> = <K̄, dx>."""
    arch, x1, x2 = problem
    if not _fits(arch, x1):
        return
    _dot_test(x1, x2, arch, get, np.random.default_rng(seed), wrt)


@pytest.mark.parametrize("readout", ["flatten", "gap"])
@pytest.mark.parametrize("self_kernel", [False, True], ids=["cross", "self"])
def test_vjp_equals_finite_differences_coordinate_by_coordinate(readout, self_kernel):
    rng = np.random.default_rng(4)
    arch = kk.ConvNet(depth=1, W_std=W, b_std=B, readout=readout, extra_conv=True)
    x1 = rng.normal(size=(2, 4, 3, 2))
    x2 = None if self_kernel else rng.normal(size=(2, 4, 3, 2))
    _, pullback = kk.kernel_pullback(x1, x2, arch)
    xs = (x1,) if self_kernel else (x1, x2)
    check_vjp_coordinates(lambda *a: kk.kernel(a[0], a[1] if len(a) > 1 else None, arch),
                          lambda *c: pullback(*c)[:len(xs)], xs, rng)


def test_vjp_at_coincident_patches_is_finite():
    """Images with constant regions have equal patches (coincident points of the ReLU kernel
    at different positions): the gradient stays finite and matches finite differences."""
    rng = np.random.default_rng(5)
    x = np.zeros((3, 6, 6, 1))
    x[:, 2:4, 2:4, 0] = rng.normal(size=(3, 2, 2))
    arch = kk.ConvNet(depth=1)
    g, _ = kk.ntk_vjp(x, None, arch, rng.normal(size=(3, 3)))
    assert np.all(np.isfinite(g))
    _dot_test(x[:2], x[2:], arch, "nngp", rng)


def test_vjp_at_collinear_patches_equals_the_closed_form():
    """One channel, a bias-free 1x1 conv and ReLU: every pair of patches is collinear (angle 0
    or pi), where the kernel is W_d^2 W^2 mean_p max(x1_p x2_p, 0) / 2 and its gradient the
    one-sided derivative along the collinear manifold; the singular terms must drop out."""
    rng = np.random.default_rng(6)
    w, w_d = 1.3, 0.8
    arch = kk.serial(kk.Conv(1, "SAME", w, 0.0), kk.Relu(), kk.Flatten(), kk.Dense(w_d, 0.0))
    x1, x2 = rng.normal(size=(2, 3, 4, 1)), rng.normal(size=(3, 3, 4, 1))
    p1, p2 = x1.reshape(2, -1), x2.reshape(3, -1)
    prod = p1[:, None, :] * p2[None, :, :]
    scale = w_d ** 2 * w ** 2 / 2 / p1.shape[1]
    values, pullback = kk.kernel_pullback(x1, x2, arch, get="nngp")
    np.testing.assert_allclose(values, scale * np.sum(np.maximum(prod, 0), -1),
                               rtol=1e-13, atol=1e-15)
    c = rng.normal(size=values.shape)
    g1, g2 = pullback(c)
    on = prod > 0
    np.testing.assert_allclose(g1.reshape(2, -1), scale * np.einsum("ij,ijp,jp->ip", c, on, p2),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g2.reshape(3, -1), scale * np.einsum("ij,ijp,ip->jp", c, on, p1),
                               rtol=1e-12, atol=1e-15)


# ============================================================================ errors and API

@pytest.mark.parametrize("arch, x, match", [
    (kk.ConvNet(1), np.ones((2, 16)), "images of shape"),
    (kk.serial(kk.Conv(), kk.Relu(), kk.Dense()), np.ones((2, 4, 4, 1)), "needs Flatten"),
    (kk.serial(kk.Conv(), kk.Dense(), kk.Flatten(), kk.Dense()), np.ones((2, 4, 4, 1)),
     "cannot act on images"),
    (kk.serial(kk.Conv(), kk.Flatten(), kk.Dense(), kk.AvgPool()), np.ones((2, 4, 4, 1)),
     "after the readout"),
    (kk.serial(kk.Conv(5, "VALID"), kk.Flatten(), kk.Dense()), np.ones((2, 4, 4, 1)),
     "does not fit"),
    (kk.ConvNet(3), np.ones((2, 4, 4, 1)), "does not fit"),
])
def test_bad_architecture_or_input_raises_a_clear_error(arch, x, match):
    with pytest.raises(ValueError, match=match):
        kk.nngp(x, None, arch)


def test_nan_images_and_numpy_engine_raise():
    x = np.ones((2, 4, 4, 1))
    x[0, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kk.nngp(x, None, kk.ConvNet(1))
    with pytest.raises(ValueError, match="engine='numba'"):
        kk.nngp(np.ones((2, 4, 4, 1)), None, kk.ConvNet(1), engine="numpy")


def test_progress_bar_counts_image_pairs():
    import io
    import contextlib
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf):
        kk.nngp(np.ones((3, 4, 4, 1)), np.ones((2, 4, 4, 1)), kk.ConvNet(1), progress=True)
    assert "11/11" in buf.getvalue()  # 3 + 2 own pairs, 6 cross pairs


def test_kip_loss_and_gradient_run_on_a_convnet():
    """kk.kip_loss works unchanged on a ConvNet, and its image gradient passes the dot test."""
    rng = np.random.default_rng(6)
    xs, xt = rng.normal(size=(4, 6, 6, 1)), rng.normal(size=(5, 6, 6, 1))
    ys, yt = rng.normal(size=(4, 3)), rng.normal(size=(5, 3))
    arch = kk.ConvNet(depth=1)
    loss, g_x, g_y = kk.kip_loss(xs, ys, xt, yt, arch)
    assert np.isfinite(loss) and g_x.shape == xs.shape and g_y.shape == ys.shape
    check_vjp(lambda a, b: np.array(kk.kip_loss(a, b, xt, yt, arch)[0]),
              lambda c: (g_x * c, g_y * c), (xs, ys), rng, cots=(np.array(1.0),))


@pytest.mark.parametrize("get", ["nngp", "ntk"])
def test_streamed_rows_equal_the_pullback(get):
    """kernel_rows_pullback (pair buffers kept, one row per block here) gives the gradients of
    kernel_pullback (pairs recomputed), and hands cot_fn the kernel's rows."""
    from kernelkip.kernels.recursion import kernel_rows_pullback
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(5, 6, 6, 2)), rng.normal(size=(3, 6, 6, 2))
    arch = kk.ConvNet(depth=1, readout="gap", extra_conv=True)
    values, pullback = kk.kernel_pullback(x1, x2, arch, get=get)
    cot = rng.normal(size=values.shape)
    seen = np.full(values.shape, np.nan)

    def cot_fn(rows, block):
        seen[rows] = block
        return cot[rows]

    got = kernel_rows_pullback(x1, x2, arch, cot_fn, get=get, max_bytes=1)
    want = pullback(cot)
    np.testing.assert_array_equal(seen, values)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)
    only2 = kernel_rows_pullback(x1, x2, arch, cot_fn, get=get, wrt=(False, True))
    assert only2[0] is None
    np.testing.assert_allclose(only2[1], want[1], rtol=1e-12, atol=1e-15)

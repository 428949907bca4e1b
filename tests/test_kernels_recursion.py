"""Kernel values and VJPs: finite differences, Monte-Carlo networks, engines, properties."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import kernelkip as kk
from kernelkip._deps import numba_available

from . import reference

ENGINES = ["numpy"] + (["numba"] if numba_available() else [])
ACTS = {"relu": kk.Relu(), "erf": kk.Erf(), "leaky": kk.LeakyRelu(0.2),
        "abrelu": kk.ABRelu(-0.5, 1.5), "erf_abc": kk.Erf(0.8, 1.3, 0.1), "gelu": kk.Gelu()}


@st.composite
def fc_archs(draw):
    return kk.FC(draw(st.integers(0, 3)), draw(st.floats(0.5, 2.0)), draw(st.floats(0.0, 0.5)),
                 ACTS[draw(st.sampled_from(sorted(ACTS)))])


def directional_check(x1, x2, arch, get, engine, rng, eps=1e-5):
    """(analytic, central finite difference) of <c, K> along a random direction of both inputs."""
    value, pullback = kk.kernel_pullback(x1, x2, arch, get=get, engine=engine)
    cot = rng.normal(size=value.shape)
    g1, g2 = pullback(cot)
    v1 = rng.normal(size=x1.shape)
    v2 = None if x2 is None else rng.normal(size=x2.shape)

    def f(t):
        return np.sum(cot * kk.kernel(x1 + t * v1, None if x2 is None else x2 + t * v2, arch,
                                      get=get, engine=engine))

    analytic = np.sum(g1 * v1) + (0.0 if x2 is None else np.sum(g2 * v2))
    return analytic, (f(eps) - f(-eps)) / (2 * eps)


@pytest.mark.parametrize("engine", ENGINES)
@given(arch=fc_archs(), n1=st.integers(1, 5), n2=st.integers(1, 4), d=st.integers(2, 6),
       self_kernel=st.booleans(), get=st.sampled_from(["nngp", "ntk"]),
       seed=st.integers(0, 2**31))
def test_vjp_equals_finite_differences(engine, arch, n1, n2, d, self_kernel, get, seed):
    # d >= 2: with d = 1 and no bias every pair is collinear (c = +-1, a kink of ReLU-like
    # kernels), which the coincident-point tests below cover with eps-convergence instead
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n1, d))
    x2 = None if self_kernel else rng.normal(size=(n2, d))
    analytic, fd = directional_check(x1, x2, arch, get, engine, rng)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("act", sorted(ACTS))
def test_vjp_near_coincident_points(engine, act):
    """Rows of x2 within 1e-3 of rows of x1: the gradient stays finite and correct."""
    rng = np.random.default_rng(1)
    x1 = rng.normal(size=(4, 6))
    x2 = np.concatenate([x1[:2] + 1e-3 * rng.normal(size=(2, 6)), rng.normal(size=(1, 6))])
    arch = kk.FC(2, 1.4, 0.1, ACTS[act])
    for get in ("nngp", "ntk"):
        analytic, fd = directional_check(x1, x2, arch, get, engine, rng, eps=1e-7)
        assert analytic == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("engine", ENGINES)
def test_self_kernel_with_duplicate_rows_has_exact_gradient(engine):
    """x2=None with two identical rows: the c = 1 diagonal formulas keep gradients exact."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 5))
    x[3] = x[1]
    for get in ("nngp", "ntk"):
        analytic, fd = directional_check(x, None, kk.FC(3), get, engine, rng)
        assert np.isfinite(analytic)
        # x[1] and x[3] coincide off the diagonal: a kink, so only O(eps) agreement there
        assert analytic == pytest.approx(fd, rel=1e-4)


@pytest.mark.parametrize("engine", ENGINES)
def test_exactly_coincident_cross_rows_converge_at_the_kink(engine):
    """x2[0] == x1[1] exactly: the ReLU NTK has a kink, central differences converge at O(eps)
    to the symmetric derivative, which the VJP returns."""
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    x2[0] = x1[1]
    errors = []
    for eps in (1e-3, 1e-4, 1e-5):
        analytic, fd = directional_check(x1, x2, kk.FC(2), "ntk", engine,
                                         np.random.default_rng(4), eps=eps)
        assert np.isfinite(analytic)
        errors.append(abs(analytic - fd))
    assert errors[2] < errors[1] < errors[0]
    assert errors[2] < 1e-4 * abs(analytic)


@pytest.mark.skipif(len(ENGINES) < 2, reason="needs Numba")
@given(arch=fc_archs(), n1=st.integers(1, 6), n2=st.integers(1, 6), d=st.integers(1, 8),
       self_kernel=st.booleans(), seed=st.integers(0, 2**31))
def test_numba_equals_numpy(arch, n1, n2, d, self_kernel, seed):
    rng = np.random.default_rng(seed)
    x1 = rng.normal(size=(n1, d))
    x2 = None if self_kernel else rng.normal(size=(n2, d))
    (a_nngp, a_ntk), pa = kk.kernel_pullback(x1, x2, arch, engine="numpy")
    (b_nngp, b_ntk), pb = kk.kernel_pullback(x1, x2, arch, engine="numba")
    np.testing.assert_allclose(b_nngp, a_nngp, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(b_ntk, a_ntk, rtol=1e-12, atol=1e-14)
    c1, c2 = rng.normal(size=a_nngp.shape), rng.normal(size=a_nngp.shape)
    for ga, gb in zip(pa(c1, c2), pb(c1, c2)):
        if ga is not None:
            np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-12)


@pytest.mark.skipif(len(ENGINES) < 2, reason="needs Numba")
def test_float32_engines_agree_and_keep_the_dtype():
    rng = np.random.default_rng(5)
    x1 = rng.normal(size=(20, 30)).astype(np.float32)
    x2 = rng.normal(size=(7, 30)).astype(np.float32)
    for act in ("relu", "erf", "gelu"):
        a = kk.kernel(x1, x2, kk.FC(3, activation=act), engine="numpy")
        b = kk.kernel(x1, x2, kk.FC(3, activation=act), engine="numba")
        ref = kk.kernel(x1.astype(np.float64), x2.astype(np.float64), kk.FC(3, activation=act))
        for u, v, r in zip(a, b, ref):
            assert u.dtype == v.dtype == np.float32
            np.testing.assert_allclose(v, u, rtol=1e-5)
            np.testing.assert_allclose(v, r, rtol=1e-5)


@pytest.mark.parametrize("engine", ENGINES)
@given(arch=fc_archs(), n=st.integers(2, 12), d=st.integers(2, 8), seed=st.integers(0, 2**31))
def test_self_kernel_symmetric_psd_and_equal_to_cross_kernel(engine, arch, n, d, seed):
    """d >= 2 keeps pairs off the collinear set, where sqrt(v1 v2 - k^2) turns round-off of
    1e-16 into errors of 1e-8. A cross kernel K(x, copy of x) meets exactly that on its
    diagonal (c = 1 up to round-off), which is why self-kernels use the c = 1 formulas there:
    off the diagonal the two agree to 1e-9, on it only to ~1e-6."""
    x = np.random.default_rng(seed).normal(size=(n, d))
    off = ~np.eye(n, dtype=bool)
    for get in ("nngp", "ntk"):
        k = kk.kernel(x, None, arch, get=get, engine=engine)
        np.testing.assert_array_equal(k, k.T)
        assert np.linalg.eigvalsh(k).min() >= -1e-10 * np.trace(k)
        cross = kk.kernel(x, x.copy(), arch, get=get, engine=engine)
        np.testing.assert_allclose(cross[off], k[off], rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.diag(cross), np.diag(k), rtol=1e-6)


@pytest.mark.parametrize("engine", ENGINES)
def test_permutation_equivariance_and_block_consistency(engine):
    rng = np.random.default_rng(6)
    x1, x2 = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    arch = kk.FC(2, activation="erf")
    k = kk.ntk(x1, x2, arch, engine=engine)
    p = rng.permutation(6)
    np.testing.assert_allclose(kk.ntk(x1[p], x2, arch, engine=engine), k[p], rtol=1e-13)
    np.testing.assert_allclose(kk.ntk(x1[2:4], x2[1:3], arch, engine=engine), k[2:4, 1:3],
                               rtol=1e-13)


def test_bias_free_relu_nngp_is_homogeneous_of_degree_one():
    """Without biases every layer is positively homogeneous: K(t x1, x2) = sqrt(t^2) ... = t K
    for the nngp with one input scaled, since each ReLU layer maps sqrt(v1 v2) J(c) and c is
    scale-free."""
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(size=(3, 5)), rng.normal(size=(4, 5))
    arch = kk.FC(3, W_std=1.3, b_std=0.0)
    np.testing.assert_allclose(kk.nngp(2.5 * x1, x2, arch), 2.5 * kk.nngp(x1, x2, arch),
                               rtol=1e-12)


def test_one_hidden_relu_layer_on_orthogonal_inputs_by_hand():
    """FC(1, W_std=1, b_std=0), x1 = sqrt(d) e_1, x2 = sqrt(d) e_2: input kernel k = 0, v = 1,
    theta = pi/2. Relu: T = sqrt(v1 v2)(sin theta + (pi - theta) cos theta) / (2 pi) = 1/(2 pi),
    Tdot = (pi - theta)/(2 pi) = 1/4. Readout: nngp = 1/(2 pi); ntk = 1/(2 pi) + 0 * 1/4 = 1/(2 pi)
    (the input-layer NTK is k = 0). Diagonal: nngp = 1/2, ntk = 1/2 + 1 * 1/2 = 1."""
    d = 3
    x = np.sqrt(d) * np.eye(d)[:2]
    nngp, ntk = kk.kernel(x, None, kk.FC(1, W_std=1.0, b_std=0.0))
    np.testing.assert_allclose(nngp, [[0.5, 1 / (2 * np.pi)], [1 / (2 * np.pi), 0.5]], rtol=1e-14)
    np.testing.assert_allclose(ntk, [[1.0, 1 / (2 * np.pi)], [1 / (2 * np.pi), 1.0]], rtol=1e-14)


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
def test_nngp_equals_monte_carlo_over_hidden_units(activation):
    """Depth 1: the hidden units are i.i.d., so their mean product is unbiased for the NNGP;
    the analytic value lies within 5 standard errors."""
    rng = np.random.default_rng(8)
    x1, x2 = rng.normal(size=(3, 5)), rng.normal(size=(2, 5))
    samples = reference.hidden_unit_products(x1, x2, 1.5, 0.3, activation, 200_000, rng)
    mean = samples.mean(axis=-1)
    se = samples.std(axis=-1) / np.sqrt(samples.shape[-1])
    exact = kk.nngp(x1, x2, kk.FC(1, 1.5, 0.3, activation))
    assert np.all(np.abs(mean - exact) <= 5 * se), (mean - exact) / se


@pytest.mark.parametrize("activation", ["relu", "erf", "gelu"])
def test_empirical_ntk_of_wide_networks_converges(activation):
    """The empirical NTK of a finite network concentrates on the analytic one as width grows.
    Fluctuations scale as 1/sqrt(width): from width 32 to 2048 the mean error over 8 networks
    should shrink about sqrt(64) = 8x (3x required), and at 2048 it is about 6% of the
    kernel's scale."""
    rng = np.random.default_rng(9)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    arch = kk.FC(2, 1.4, 0.2, activation)
    exact = kk.ntk(x1, x2, arch)
    errors = []
    for width in (32, 2048):
        errs = [np.abs(reference.finite_fc(x1, x2, 2, 1.4, 0.2, activation, width, rng)[1]
                       - exact).max() for _ in range(8)]
        errors.append(np.mean(errs))
    assert errors[1] < errors[0] / 3
    assert errors[1] < 0.12 * np.abs(exact).max()


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["relu", "erf"])
def test_empirical_ntk_error_falls_like_one_over_sqrt_width(activation):
    rng = np.random.default_rng(10)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    exact = kk.ntk(x1, x2, kk.FC(3, 1.4, 0.2, activation))
    rms = []
    for width in (128, 512, 2048):
        errs = [reference.finite_fc(x1, x2, 3, 1.4, 0.2, activation, width, rng)[1] - exact
                for _ in range(8)]
        rms.append(np.sqrt(np.mean(np.square(errs))))
    ratios = [rms[i] / rms[i + 1] for i in range(2)]  # about 2 for a 4x wider net
    assert all(1.3 < r < 3.2 for r in ratios), ratios


@pytest.mark.parametrize("call, match", [
    (lambda: kk.ntk(np.ones((2, 3)), np.ones((2, 4)), kk.FC(1)), "trailing"),
    (lambda: kk.ntk(np.array([[np.nan, 1.0]]), None, kk.FC(1)), "NaN"),
    (lambda: kk.ntk(np.ones((2, 3)), None, kk.FC(1), engine="fortran"), "engine"),
    (lambda: kk.kernel(np.ones((2, 3)), None, kk.FC(1), get="rbf"), "get"),
    (lambda: kk.ntk(np.ones(3), None, kk.FC(1)), "dimensions"),
    (lambda: kk.ntk_vjp(np.ones((2, 3)), None, kk.FC(1), np.ones((3, 3))), "cotangent"),
    (lambda: kk.ntk(np.array([["a"]]), None, kk.FC(1)), "dtype"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_architecture_of_the_wrong_type_raises():
    with pytest.raises(TypeError, match="architecture"):
        kk.ntk(np.ones((2, 3)), None, [kk.Dense()])

"""Kernel values and VJPs of whole architectures: the public ``kernel`` / ``kernel_pullback``.

Values: hand-computed examples, finite random networks (Monte Carlo), engine agreement, and
structural properties (symmetry, PSD, equivariance, blocks, homogeneity). VJPs: the dot test
against finite differences over random architectures and inputs, per-coordinate checks on tiny
inputs, and the singular configurations (near-coincident and coincident points).
"""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import kernelkip as kk

from . import reference
from .gradcheck import (check_value_consistency, check_vjp, check_vjp_coordinates,
                        directional_derivative, kernel_on, pullback_on)
from .strategies import cotangents, fc_archs, input_pairs, spread_rows

GETS = st.sampled_from(["nngp", "ntk", ("nngp", "ntk")])
EXAMPLES = {"relu": kk.Relu(), "leaky": kk.LeakyRelu(0.2), "abrelu": kk.ABRelu(-0.5, 1.5),
            "erf": kk.Erf(), "erf_abc": kk.Erf(0.8, 1.3, 0.1)}
if hasattr(kk, "Gelu"):
    EXAMPLES["gelu"] = kk.Gelu()
MC_LAYERS = {name: EXAMPLES[name] for name in ("relu", "abrelu", "erf", "gelu") if name in EXAMPLES}


def _dot_test(engine, x1, x2, arch, get, rng, *, wrt=(True, True), eps=1e-4, rtol=1e-6,
              cots=None):
    """``check_vjp`` of ``kernel(x1, x2)`` against ``kernel_pullback`` on ``engine``."""
    _, pullback = pullback_on(engine, x1, x2, arch, get=get)
    if x2 is None:
        return check_vjp(lambda a: kernel_on(engine, a, None, arch, get=get),
                         lambda *c: pullback(*c)[:1], (x1,), rng, rtol, eps=eps, cots=cots)
    return check_vjp(lambda a, b: kernel_on(engine, a, b, arch, get=get),
                     lambda *c: pullback(*c, wrt=wrt), (x1, x2), rng, rtol, eps=eps, cots=cots)


# ============================================================================ values by hand

def test_one_hidden_relu_layer_on_orthogonal_unit_inputs_by_hand():
    """FC(1, W_std=1, b_std=0), x1 = e1, x2 = e2 in d = 2 dimensions.

    Input layer: k = <e1, e2>/d = 0, v1 = v2 = |e|^2/d = 1/2; NTK 0. Dense (W=1, b=0) keeps
    them; the NTK becomes the NNGP: ntk_12 = 0, ntk_11 = 1/2.
    ReLU (kappa = 1/(2 pi), h = 1/2), c = 0 so theta = pi/2:
      T_12 = sqrt(v1 v2) (sin theta + (pi - theta) cos theta) / (2 pi) = (1/2)(1 + 0)/(2 pi)
           = 1/(4 pi);
      Tdot_12 = (pi - theta)/(2 pi) = 1/4;  T_11 = v/2 = 1/4;  Tdot_11 = 1/2.
      ntk_12 = 0 * 1/4 = 0;  ntk_11 = 1/2 * 1/2 = 1/4.
    Readout Dense (W=1, b=0): nngp = T, so nngp_12 = 1/(2 pi) * 1/2 = 1/(4 pi), nngp_11 = 1/4;
    ntk' = ntk + nngp: ntk_12 = 0 + 1/(4 pi), ntk_11 = 1/4 + 1/4 = 1/2.
    """
    x = np.eye(2)
    nngp, ntk = kk.kernel(x, None, kk.FC(1, W_std=1.0, b_std=0.0))
    off = 1 / (4 * np.pi)
    np.testing.assert_allclose(nngp, [[0.25, off], [off, 0.25]], rtol=1e-15)
    np.testing.assert_allclose(ntk, [[0.5, off], [off, 0.5]], rtol=1e-15)


def test_gradient_of_the_hand_computed_relu_entry_by_hand():
    """Same net, d/dx1 of nngp(x1, x2) at x1 = e1, x2 = e2 (d = 2).

    dT/dk = Tdot = 1/4 and dk/dx1 = x2/d = e2/2 give e2/8. dT/dv1 at k = 0:
    T = kappa sqrt(v1 v2 - k^2) + ... so dT/dv1 = kappa v2 / (2 sqrt(v1 v2)) = 1/(4 pi), and
    dv1/dx1 = 2 x1 / d = e1. Total: e1/(4 pi) + e2/8.
    """
    e1, e2 = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    g1, g2 = kk.nngp_vjp(e1, e2, kk.FC(1, W_std=1.0, b_std=0.0), np.ones((1, 1)))
    np.testing.assert_allclose(g1, [[1 / (4 * np.pi), 1 / 8]], rtol=1e-15)
    np.testing.assert_allclose(g2, [[1 / 8, 1 / (4 * np.pi)]], rtol=1e-15)


@given(xs=input_pairs(), w=st.floats(0.5, 2.0), b=st.floats(0.0, 0.5))
def test_depth_zero_is_the_affine_input_kernel(xs, w, b):
    """FC(0) is one Dense layer: nngp = ntk = W^2 <x1, x2>/d + b^2."""
    x1, x2 = xs
    other = x1 if x2 is None else x2
    flat1, flat2 = x1.reshape(len(x1), -1), other.reshape(len(other), -1)
    expected = w ** 2 * (flat1 @ flat2.T) / flat1.shape[1] + b ** 2
    nngp, ntk = kk.kernel(x1, x2, kk.FC(0, w, b))
    np.testing.assert_allclose(nngp, expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(ntk, nngp)


def test_two_dense_layers_compose_the_affine_rule():
    """nngp = W2^2 (W1^2 k + b1^2) + b2^2 and ntk = W2^2 nngp_1 + nngp_2 (NTK starts at 0)."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    k = x1 @ x2.T / 4
    nngp1 = 1.3 ** 2 * k + 0.2 ** 2
    nngp2 = 0.7 ** 2 * nngp1 + 0.4 ** 2
    nngp, ntk = kk.kernel(x1, x2, kk.serial(kk.Dense(1.3, 0.2), kk.Dense(0.7, 0.4)))
    np.testing.assert_allclose(nngp, nngp2, rtol=1e-14)
    np.testing.assert_allclose(ntk, 0.7 ** 2 * nngp1 + nngp2, rtol=1e-14)


# ============================================================================ Monte Carlo

def _mc_inputs():
    rng = np.random.default_rng(11)
    rows = spread_rows(rng, 5, (4,))
    return rows[:3], rows[3:]


@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_one_hidden_layer_nngp_within_4_standard_errors_of_monte_carlo(name):
    """Depth 1: 100k i.i.d. hidden units of one network; their mean product is unbiased for the
    NNGP, and the analytic value lies within 4 standard errors of it."""
    x1, x2 = _mc_inputs()
    samples, _ = reference.one_hidden_layer_unit_samples(x1, x2, 1.4, 0.3, MC_LAYERS[name],
                                                         100_000, np.random.default_rng(1))
    exact = kk.nngp(x1, x2, kk.FC(1, 1.4, 0.3, MC_LAYERS[name]))
    z = (samples.mean(-1) - exact) / (samples.std(-1) / np.sqrt(samples.shape[-1]))
    assert np.all(np.abs(z) <= 4), z


@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_one_hidden_layer_ntk_within_4_standard_errors_of_monte_carlo(name):
    """Depth 1: per-unit terms of the empirical NTK (reference.one_hidden_layer_unit_samples)
    are i.i.d.; the analytic NTK lies within 4 standard errors of their mean."""
    x1, x2 = _mc_inputs()
    _, samples = reference.one_hidden_layer_unit_samples(x1, x2, 1.4, 0.3, MC_LAYERS[name],
                                                         100_000, np.random.default_rng(2))
    exact = kk.ntk(x1, x2, kk.FC(1, 1.4, 0.3, MC_LAYERS[name]))
    z = (samples.mean(-1) - exact) / (samples.std(-1) / np.sqrt(samples.shape[-1]))
    assert np.all(np.abs(z) <= 4), z


@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_depth_two_kernels_within_4_standard_errors_of_16_networks(name):
    """Depth 2, width 512: the finite-width bias is O(1/512), small against the standard error
    O(1/sqrt(512 * 16)); nngp and ntk lie within 4 standard errors of the 16-network mean."""
    x1, x2 = _mc_inputs()
    layer = MC_LAYERS[name]
    nngp_mean, nngp_se, ntk_mean, ntk_se = reference.mc_kernels(
        x1, x2, 2, 1.4, 0.2, layer, 512, 16, np.random.default_rng(3))
    nngp, ntk = kk.kernel(x1, x2, kk.FC(2, 1.4, 0.2, layer))
    assert np.all(np.abs(nngp_mean - nngp) <= 4 * nngp_se), (nngp_mean - nngp) / nngp_se
    assert np.all(np.abs(ntk_mean - ntk) <= 4 * ntk_se), (ntk_mean - ntk) / ntk_se


@pytest.mark.parametrize("name", ["relu", "erf"])
def test_finite_network_error_shrinks_with_width(name):
    """One network's deviation from the analytic kernel scales as 1/sqrt(width): from width 64
    to 1024 the RMS error over 8 networks should drop ~4x; at least 2x is required."""
    x1, x2 = _mc_inputs()
    layer = MC_LAYERS[name]
    exact = np.array(kk.kernel(x1, x2, kk.FC(2, 1.4, 0.2, layer)))
    rng = np.random.default_rng(4)
    rms = []
    for width in (64, 1024):
        errs = [np.array(reference.fc_kernels(x1, x2, reference.init_fc(4, 2, width, rng), 1.4,
                                              0.2, layer)) - exact for _ in range(8)]
        rms.append(np.sqrt(np.mean(np.square(errs), axis=(0, 2, 3))))  # per (nngp, ntk)
    assert np.all(rms[1] < rms[0] / 2), rms


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_wide_deep_networks_match_within_4_standard_errors(name):
    """Depth 3, width 4096, 16 networks: bias O(1/4096) against a standard error
    O(1/sqrt(4096 * 16))."""
    x1, x2 = _mc_inputs()
    layer = MC_LAYERS[name]
    nngp_mean, nngp_se, ntk_mean, ntk_se = reference.mc_kernels(
        x1, x2, 3, 1.4, 0.2, layer, 4096, 16, np.random.default_rng(5))
    nngp, ntk = kk.kernel(x1, x2, kk.FC(3, 1.4, 0.2, layer))
    assert np.all(np.abs(nngp_mean - nngp) <= 4 * nngp_se), (nngp_mean - nngp) / nngp_se
    assert np.all(np.abs(ntk_mean - ntk) <= 4 * ntk_se), (ntk_mean - ntk) / ntk_se


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_finite_network_error_falls_like_one_over_sqrt_width(name):
    """RMS error over 16 depth-3 networks at widths 256, 1024, 4096: each 4x wider net halves
    it (ratios in [1.4, 2.9])."""
    x1, x2 = _mc_inputs()
    layer = MC_LAYERS[name]
    exact = np.array(kk.kernel(x1, x2, kk.FC(3, 1.4, 0.2, layer)))
    rng = np.random.default_rng(6)
    rms = []
    for width in (256, 1024, 4096):
        errs = [np.array(reference.fc_kernels(x1, x2, reference.init_fc(4, 3, width, rng), 1.4,
                                              0.2, layer)) - exact for _ in range(16)]
        rms.append(np.sqrt(np.mean(np.square(errs))))
    ratios = [rms[i] / rms[i + 1] for i in range(2)]
    assert all(1.4 < r < 2.9 for r in ratios), ratios


@pytest.mark.parametrize("name", sorted(MC_LAYERS))
def test_reference_network_backward_matches_finite_differences(name):
    """The oracle's own hand backward: parameter gradients equal central differences of its
    forward, and its factored empirical NTK equals the inner product of those gradients."""
    rng = np.random.default_rng(7)
    layer = MC_LAYERS[name]
    x = rng.normal(size=(3, 2))
    params = reference.init_fc(2, 2, 3, rng)
    out, cache = reference.fc_forward(params, x, 1.3, 0.4, layer)
    grads = reference.fc_param_grads(params, cache, 1.3, 0.4, layer)
    eps = 1e-6
    for (w, b), (grad_w, grad_b) in zip(params, grads):
        for p, g in ((w, grad_w), (b, grad_b)):
            for idx in np.ndindex(*p.shape):
                old = p[idx]
                p[idx] = old + eps
                up = reference.fc_forward(params, x, 1.3, 0.4, layer)[0]
                p[idx] = old - eps
                down = reference.fc_forward(params, x, 1.3, 0.4, layer)[0]
                p[idx] = old
                np.testing.assert_allclose(g[(slice(None),) + idx], (up - down) / (2 * eps),
                                           rtol=1e-6, atol=1e-8)
    flat = np.concatenate([np.concatenate([gw.reshape(3, -1), gb], axis=1) for gw, gb in grads],
                          axis=1)
    _, ntk = reference.fc_kernels(x[:2], x[2:], params, 1.3, 0.4, layer)
    np.testing.assert_allclose(ntk, flat[:2] @ flat[2:].T, rtol=1e-12)


# ============================================================================ VJPs

@given(arch=fc_archs(), xs=input_pairs(), get=GETS,
       wrt=st.sampled_from([(True, True), (True, False), (False, True)]),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_vjp_passes_the_dot_test_against_finite_differences(engine, arch, xs, get, wrt, seed,
                                                            data):
    """<c, dK(x; v)> == <pullback(c), v> to 1e-6 for nngp, ntk and both together, x2 given or
    None (then the total derivative), and each ``wrt`` selection."""
    x1, x2 = xs
    shape = (len(x1), len(x1) if x2 is None else len(x2))
    cots = tuple(data.draw(cotangents(shape), label=f"cotangent {name}")
                 for name in ((get,) if isinstance(get, str) else get))
    _dot_test(engine, x1, x2, arch, get, np.random.default_rng(seed), wrt=wrt, cots=cots)


@pytest.mark.parametrize("name", ["relu", "abrelu", "erf_abc", "gelu"])
@pytest.mark.parametrize("self_kernel", [False, True], ids=["cross", "self"])
def test_vjp_equals_finite_differences_coordinate_by_coordinate(engine, name, self_kernel):
    if name not in EXAMPLES:
        pytest.skip(f"{name} is not in this version")
    rng = np.random.default_rng(8)
    rows = spread_rows(rng, 4, (3,))
    x1, x2 = rows[:2], (None if self_kernel else rows[2:])
    arch = kk.FC(2, 1.3, 0.2, EXAMPLES[name])
    _, pullback = pullback_on(engine, x1, x2, arch)
    xs = (x1,) if self_kernel else (x1, x2)
    check_vjp_coordinates(lambda *a: kernel_on(engine, a[0], a[1] if len(a) > 1 else None, arch),
                          lambda *c: pullback(*c)[:len(xs)], xs, rng)


@pytest.mark.parametrize("wrt", [(True, False), (False, True), (False, False)])
def test_pullback_wrt_skips_exactly_the_unwanted_gradient(engine, wrt):
    rng = np.random.default_rng(9)
    x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    _, pullback = pullback_on(engine, x1, x2, kk.FC(2, activation="erf"))
    cots = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    full = pullback(*cots)
    part = pullback(*cots, wrt=wrt)
    for want, g_full, g_part in zip(wrt, full, part):
        if want:
            np.testing.assert_array_equal(g_part, g_full)
        else:
            assert g_part is None


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_self_kernel_pullback_returns_the_total_gradient_and_none(engine, name):
    """x2=None: (d/dx of <c, K(x, x)>, None); equal to the sum of the two cross gradients of
    K(x, x') at x' = x for smooth activations (ReLU-like ones have a kink on the diagonal)."""
    rng = np.random.default_rng(10)
    x = spread_rows(rng, 4, (3,))
    arch = kk.FC(2, 1.2, 0.1, EXAMPLES[name])
    cot = rng.normal(size=(4, 4))
    _, pullback = pullback_on(engine, x, None, arch, get="nngp")
    g, none = pullback(cot)
    assert none is None and g.shape == x.shape
    if name.startswith("erf") or name == "gelu":
        _, cross_pullback = pullback_on(engine, x, x.copy(), arch, get="nngp")
        g1, g2 = cross_pullback(cot)
        np.testing.assert_allclose(g, g1 + g2, rtol=1e-10, atol=1e-12 * np.abs(g).max())


def test_public_vjp_functions_equal_the_pullback():
    rng = np.random.default_rng(11)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    arch = kk.FC(2, activation="erf")
    cot = rng.normal(size=(3, 2))
    for name, vjp in (("nngp", kk.nngp_vjp), ("ntk", kk.ntk_vjp)):
        _, pullback = kk.kernel_pullback(x1, x2, arch, get=name)
        for a, b in zip(vjp(x1, x2, arch, cot), pullback(cot)):
            np.testing.assert_array_equal(a, b)


@given(arch=fc_archs(), xs=input_pairs(self_kernel=False), seed=st.integers(0, 2**32 - 1))
def test_pullback_is_linear_in_the_cotangents(arch, xs, seed):
    """pullback(c_nngp, c_ntk) = pullback(c_nngp, None) + pullback(None, c_ntk)."""
    x1, x2 = xs
    rng = np.random.default_rng(seed)
    _, pullback = kk.kernel_pullback(x1, x2, arch, engine="numpy")
    c1, c2 = rng.normal(size=(len(x1), len(x2))), rng.normal(size=(len(x1), len(x2)))
    both = pullback(c1, c2)
    for g, a, b in zip(both, pullback(c1, None), pullback(None, c2)):
        np.testing.assert_allclose(g, a + b, rtol=1e-12, atol=1e-12 * np.abs(g).max())


# ---------------------------------------------------------------------------- singular points

@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_vjp_at_near_coincident_cross_points(engine, name):
    """x2[j] = x1[i] + 1e-3 * noise: sin(theta) ~ 1e-3 and ReLU's dTdot/dk ~ 1e3; the dot test
    still holds with a step of 1e-6 (well below the 1e-3 separation)."""
    rng = np.random.default_rng(12)
    x1 = spread_rows(rng, 4, (6,))
    x2 = np.concatenate([x1[:2] + 1e-3 * rng.normal(size=(2, 6)), spread_rows(rng, 1, (6,))])
    arch = kk.FC(2, 1.4, 0.1, EXAMPLES[name])
    for get in ("nngp", "ntk"):
        _dot_test(engine, x1, x2, arch, get, rng, eps=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_vjp_with_near_duplicate_rows_in_the_self_kernel(engine, name):
    rng = np.random.default_rng(13)
    x = spread_rows(rng, 4, (5,))
    x[3] = x[1] + 1e-3 * rng.normal(size=5)
    arch = kk.FC(2, 1.4, 0.1, EXAMPLES[name])
    for get in ("nngp", "ntk"):
        _dot_test(engine, x, None, arch, get, rng, eps=1e-6, rtol=1e-6)


def _kink_errors(engine, x1, x2, arch, get, seed):
    """|central difference(eps) - analytic| along one random direction, eps = 1e-2, 1e-3, 1e-4.

    Not smaller: near the kink the angle comes from sqrt(v1 v2 - k^2), whose round-off (~1e-16)
    perturbs a central difference of step eps by ~1e-16 / eps^2, which overtakes the O(eps)
    truncation error below eps ~ 1e-5."""
    rng = np.random.default_rng(seed)
    _, pullback = pullback_on(engine, x1, x2, arch, get=get)
    xs = (x1,) if x2 is None else (x1, x2)
    cot = rng.normal(size=(len(x1), len(x1) if x2 is None else len(x2)))
    grads = pullback(cot)[:len(xs)]
    assert all(np.all(np.isfinite(g)) for g in grads)
    vs = tuple(rng.normal(size=x.shape) for x in xs)
    analytic = sum(float(np.sum(g * v)) for g, v in zip(grads, vs))

    def f(*a):
        return kernel_on(engine, a[0], a[1] if len(a) > 1 else None, arch, get=get)

    errors = []
    for eps in (1e-2, 1e-3, 1e-4):
        (dk,) = directional_derivative(f, xs, vs, eps, richardson=False)
        errors.append(abs(float(np.sum(cot * dk)) - analytic))
    return analytic, errors


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("name", ["relu", "abrelu"])
def test_exactly_coincident_cross_rows_are_a_kink_with_a_finite_symmetric_derivative(
        engine, get, name):
    """x2[0] == x1[1] exactly. The ReLU-like NTK is not differentiable there (the angle grows like
    |t| along any direction that separates the two points; the NNGP stays differentiable, since
    s_perp - theta k = s theta^3 / 3 + ...), so central differences converge
    only at O(eps), to the symmetric derivative, which the VJP returns (finite). The error must
    shrink at least 3x per decade of eps and end below 2e-5 of the derivative."""
    rng = np.random.default_rng(14)
    x1, x2 = spread_rows(rng, 3, (5,)), spread_rows(rng, 2, (5,))
    x2[0] = x1[1]
    analytic, errors = _kink_errors(engine, x1, x2, kk.FC(2, 1.3, 0.1, EXAMPLES[name]), get, 15)
    assert errors[1] < errors[0] / 3 or errors[1] < 1e-9 * abs(analytic), errors
    assert errors[2] < errors[1] / 3 or errors[2] < 1e-9 * abs(analytic), errors
    assert errors[2] < 2e-5 * abs(analytic), (errors, analytic)


@pytest.mark.parametrize("get", ["nngp", "ntk"])
@pytest.mark.parametrize("name", ["relu", "abrelu"])
def test_exactly_duplicate_rows_in_the_self_kernel_are_a_kink_with_a_finite_derivative(
        engine, get, name):
    """x[3] == x[1] with x2=None: entry (1, 3) sits on the kink above; same convergence."""
    rng = np.random.default_rng(16)
    x = spread_rows(rng, 4, (5,))
    x[3] = x[1]
    analytic, errors = _kink_errors(engine, x, None, kk.FC(2, 1.3, 0.1, EXAMPLES[name]), get, 17)
    assert errors[1] < errors[0] / 3 or errors[1] < 1e-9 * abs(analytic), errors
    assert errors[2] < errors[1] / 3 or errors[2] < 1e-9 * abs(analytic), errors
    assert errors[2] < 2e-5 * abs(analytic), (errors, analytic)


@pytest.mark.parametrize("b_std", [0.0, 0.1])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_a_zero_input_row_gives_finite_values_and_gradients(engine, name, b_std):
    """x = 0 has zero variance when b_std = 0 (theta = atan2(0, 0), r(v) = 1/(2v)); the guards
    keep values and gradients finite, in self- and cross-kernels."""
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 0.5], [-0.3, 0.2, 1.0]])
    arch = kk.FC(2, 1.3, b_std, EXAMPLES[name])
    for x2 in (None, x[::-1].copy()):
        values, pullback = pullback_on(engine, x, x2, arch)
        grads = pullback(*(np.ones_like(v) for v in values))
        assert all(np.all(np.isfinite(a)) for a in (*values, *grads) if a is not None)


@pytest.mark.parametrize("name", ["erf_abc", "gelu"])
def test_exactly_coincident_cross_rows_are_smooth_for_smooth_activations(engine, name):
    """Erf and GELU have no kink at c = 1: the ordinary dot test holds there."""
    if name not in EXAMPLES:
        pytest.skip(f"{name} is not in this version")
    rng = np.random.default_rng(18)
    x1, x2 = spread_rows(rng, 3, (5,)), spread_rows(rng, 2, (5,))
    x2[0] = x1[1]
    for get in ("nngp", "ntk"):
        _dot_test(engine, x1, x2, kk.FC(2, 1.3, 0.1, EXAMPLES[name]), get, rng)


# ============================================================================ engines, dtypes

@given(arch=fc_archs(), xs=input_pairs(), seed=st.integers(0, 2**32 - 1))
def test_engine_equals_numpy_engine_in_float64(engine, arch, xs, seed):
    """Values agree to 1e-12 relative per entry; gradients to 1e-12 relative in norm (their row
    and column sums are accumulated in different orders)."""
    if engine == "numpy":
        pytest.skip("the reference engine itself")
    x1, x2 = xs
    rng = np.random.default_rng(seed)
    (a_nngp, a_ntk), pull_a = pullback_on("numpy", x1, x2, arch)
    (b_nngp, b_ntk), pull_b = pullback_on(engine, x1, x2, arch)
    np.testing.assert_allclose(b_nngp, a_nngp, rtol=1e-12, atol=1e-14 * np.abs(a_nngp).max())
    np.testing.assert_allclose(b_ntk, a_ntk, rtol=1e-12, atol=1e-14 * np.abs(a_ntk).max())
    cots = rng.normal(size=a_nngp.shape), rng.normal(size=a_nngp.shape)
    for ga, gb in zip(pull_a(*cots), pull_b(*cots)):
        if ga is not None:
            assert np.linalg.norm(gb - ga) <= 1e-12 * np.linalg.norm(ga)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_engine_equals_numpy_engine_in_float32(engine, name):
    """float32 through each engine agrees with float32 NumPy to ~1e-5 of the kernel's scale,
    and both with float64 to ~1e-4."""
    if engine == "numpy":
        pytest.skip("the reference engine itself")
    rng = np.random.default_rng(19)
    x1, x2 = rng.normal(size=(20, 30)), rng.normal(size=(7, 30))
    arch = kk.FC(3, activation=EXAMPLES[name])
    exact = kk.kernel(x1, x2, arch, engine="numpy")
    x1, x2 = x1.astype(np.float32), x2.astype(np.float32)
    (a_nngp, a_ntk), pull_a = pullback_on("numpy", x1, x2, arch)
    (b_nngp, b_ntk), pull_b = pullback_on(engine, x1, x2, arch)
    for a, b, e in ((a_nngp, b_nngp, exact[0]), (a_ntk, b_ntk, exact[1])):
        assert np.abs(b - a).max() <= 1e-5 * np.abs(a).max()
        assert np.abs(b - e).max() <= 1e-4 * np.abs(e).max()
    cots = (rng.normal(size=a_nngp.shape).astype(np.float32),) * 2
    for ga, gb in zip(pull_a(*cots), pull_b(*cots)):
        assert np.linalg.norm(gb - ga) <= 1e-5 * np.linalg.norm(ga)


@pytest.mark.parametrize("self_kernel", [False, True], ids=["cross", "self"])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_float32_inputs_give_float32_values_and_gradients(engine, name, self_kernel):
    rng = np.random.default_rng(20)
    x1 = rng.normal(size=(4, 3)).astype(np.float32)
    x2 = None if self_kernel else rng.normal(size=(2, 3)).astype(np.float32)
    values, pullback = pullback_on(engine, x1, x2, kk.FC(2, activation=EXAMPLES[name]))
    assert all(v.dtype == np.float32 for v in values)
    grads = pullback(*(np.ones_like(v) for v in values))
    assert all(g.dtype == np.float32 for g in grads if g is not None)


def test_mixed_float32_and_float64_inputs_compute_in_float64():
    rng = np.random.default_rng(21)
    x1, x2 = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(2, 4))
    assert kk.ntk(x1, x2, kk.FC(1)).dtype == np.float64


@pytest.mark.parametrize("self_kernel", [False, True], ids=["cross", "self"])
def test_pullback_values_equal_the_forward_values_exactly(engine, self_kernel):
    rng = np.random.default_rng(22)
    x1 = rng.normal(size=(5, 3))
    x2 = None if self_kernel else rng.normal(size=(4, 3))
    for arch in (kk.FC(3), kk.FC(2, activation="erf"), kk.FC(1, activation=kk.ABRelu(-1, 2))):
        for get in ("nngp", "ntk", ("nngp", "ntk")):
            values, _ = pullback_on(engine, x1, x2, arch, get=get)
            check_value_consistency(values, kernel_on(engine, x1, x2, arch, get=get))


def test_single_kernel_functions_equal_kernel_with_get():
    rng = np.random.default_rng(23)
    x1, x2 = rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
    arch = kk.FC(2)
    nngp, ntk = kk.kernel(x1, x2, arch)
    np.testing.assert_array_equal(kk.nngp(x1, x2, arch), nngp)
    np.testing.assert_array_equal(kk.ntk(x1, x2, arch), ntk)
    np.testing.assert_array_equal(kk.kernel(x1, x2, arch, get="ntk"), ntk)


# ============================================================================ properties

@given(arch=fc_archs(), xs=input_pairs(self_kernel=True, max_n1=9))
def test_self_kernel_is_exactly_symmetric(engine, arch, xs):
    x, _ = xs
    for k in kernel_on(engine, x, None, arch):
        np.testing.assert_array_equal(k, k.T)


@given(arch=fc_archs(), xs=input_pairs(self_kernel=True, max_n1=9))
def test_self_kernel_is_positive_semidefinite(engine, arch, xs):
    x, _ = xs
    for k in kernel_on(engine, x, None, arch):
        assert np.linalg.eigvalsh(k).min() >= -1e-10 * np.trace(k)


@given(arch=fc_archs(), xs=input_pairs(self_kernel=True, max_n1=9))
def test_self_kernel_equals_the_cross_kernel_with_a_copy_off_the_diagonal(engine, arch, xs):
    """K(x) == K(x, x.copy()) to 1e-12 off the diagonal. (On it the cross kernel meets c = 1 up
    to round-off; see test_kernels_activations for the sqrt(eps) accuracy there.)"""
    x, _ = xs
    off = ~np.eye(len(x), dtype=bool)
    for k_self, k_cross in zip(kernel_on(engine, x, None, arch),
                               kernel_on(engine, x, x.copy(), arch)):
        np.testing.assert_allclose(k_cross[off], k_self[off], rtol=1e-12,
                                   atol=1e-14 * np.abs(k_self).max())


@given(arch=fc_archs(), xs=input_pairs(self_kernel=True, max_n1=9))
def test_self_kernel_diagonal_equals_one_point_self_kernels(engine, arch, xs):
    x, _ = xs
    for i, (nngp_i, ntk_i) in enumerate(kernel_on(engine, x[i:i + 1], None, arch)
                                        for i in range(len(x))):
        nngp, ntk = kernel_on(engine, x, None, arch)
        np.testing.assert_allclose([nngp[i, i], ntk[i, i]], [nngp_i[0, 0], ntk_i[0, 0]],
                                   rtol=1e-13)


@given(arch=fc_archs(), xs=input_pairs(self_kernel=False), seed=st.integers(0, 2**32 - 1))
def test_permuting_rows_permutes_the_kernel(engine, arch, xs, seed):
    x1, x2 = xs
    rng = np.random.default_rng(seed)
    p1, p2 = rng.permutation(len(x1)), rng.permutation(len(x2))
    for k, k_perm in zip(kernel_on(engine, x1, x2, arch),
                         kernel_on(engine, x1[p1], x2[p2], arch)):
        np.testing.assert_allclose(k_perm, k[p1][:, p2], rtol=1e-12, atol=1e-14 * np.abs(k).max())
    for k, k_perm in zip(kernel_on(engine, x1, None, arch), kernel_on(engine, x1[p1], None, arch)):
        np.testing.assert_allclose(k_perm, k[p1][:, p1], rtol=1e-12, atol=1e-14 * np.abs(k).max())


@given(arch=fc_archs(), xs=input_pairs(self_kernel=False), data=st.data())
def test_blocks_of_the_kernel_are_kernels_of_the_blocks(engine, arch, xs, data):
    x1, x2 = xs
    a = data.draw(st.lists(st.integers(0, len(x1) - 1), min_size=1, max_size=4), label="rows")
    b = data.draw(st.lists(st.integers(0, len(x2) - 1), min_size=1, max_size=4), label="cols")
    for k, k_block in zip(kernel_on(engine, x1, x2, arch), kernel_on(engine, x1[a], x2[b], arch)):
        np.testing.assert_allclose(k_block, k[np.ix_(a, b)], rtol=1e-12,
                                   atol=1e-14 * np.abs(k).max())


@given(arch=fc_archs(families=("relu", "leaky_relu", "abrelu")), xs=input_pairs(),
       t=st.floats(0.1, 10.0))
def test_bias_free_piecewise_linear_nets_are_homogeneous_of_degree_one(arch, xs, t):
    """With b_std = 0 and phi(t x) = t phi(x) for t > 0 (any ABRelu), one input scaled by t
    scales (k, v1, v2) by (t, t^2, 1): the angle is unchanged, T = sqrt(v1 v2) J(theta) scales
    by t, v1' = h v1 by t^2, Tdot not at all, and Dense is linear. So K(t x1, x2) = t K(x1, x2)
    for nngp and ntk, whatever W_std, and K(t x) = t^2 K(x) for a self-kernel."""
    arch = kk.serial(*(kk.Dense(layer.W_std, 0.0) if isinstance(layer, kk.Dense) else layer
                       for layer in arch))
    x1, x2 = xs
    base = kk.kernel(x1, x2, arch, engine="numpy")
    scaled = kk.kernel(t * x1, x2, arch, engine="numpy")
    power = 2 if x2 is None else 1
    for k, k_t in zip(base, scaled):
        np.testing.assert_allclose(k_t, t ** power * k, rtol=1e-12,
                                   atol=1e-14 * t ** power * np.abs(k).max())


# ============================================================================ bad inputs

X = np.ones((2, 3))


@pytest.mark.parametrize("call, match", [
    (lambda: kk.ntk(X, np.ones((2, 4)), kk.FC(1)), "trailing"),
    (lambda: kk.ntk(np.array([[np.nan, 1.0]]), None, kk.FC(1)), "NaN"),
    (lambda: kk.nngp(X, np.array([[1.0, np.inf, 0.0]]), kk.FC(1)), "x2 contains 1 NaN"),
    (lambda: kk.ntk(X, None, kk.FC(1), engine="fortran"), "unknown engine 'fortran'"),
    (lambda: kk.kernel(X, None, kk.FC(1), get="rbf"), "unknown get 'rbf'"),
    (lambda: kk.kernel(X, None, kk.FC(1), get=()), "get is empty"),
    (lambda: kk.ntk(np.ones(3), None, kk.FC(1)), "dimensions"),
    (lambda: kk.ntk(np.ones((0, 3)), None, kk.FC(1)), "empty"),
    (lambda: kk.ntk(np.array([["a"]]), None, kk.FC(1)), "dtype"),
    (lambda: kk.ntk_vjp(X, None, kk.FC(1), np.ones((3, 3))), r"cotangent .* shape \(3, 3\)"),
    (lambda: kk.nngp_vjp(X, np.ones((4, 3)), kk.FC(1), np.ones((4, 2))), "cotangent"),
    (lambda: kk.kernel_pullback(X, None, kk.FC(1))[1](np.ones((2, 2))), "2 cotangent"),
    (lambda: kk.FC(1, activation="tanh"), "unknown activation 'tanh'"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_architecture_of_the_wrong_type_raises_type_error():
    with pytest.raises(TypeError, match="architecture"):
        kk.ntk(X, None, [kk.Dense()])

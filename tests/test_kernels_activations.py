"""Activation rules: closed-form dual kernels against quadrature, their partials against finite
differences, and the layer's VJP against finite differences of its forward rule."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import kernelkip as kk
from kernelkip.kernels import activations
from kernelkip.kernels.state import KernelState

from . import reference
from .gradcheck import check_vjp, directional_derivative, to_engine, to_host
from .strategies import activations as activation_layers, covariances

EXAMPLES = [kk.Relu(), kk.LeakyRelu(0.1), kk.ABRelu(-0.7, 1.3), kk.Erf(), kk.Erf(1.2, 2.0, 0.3)]
EXAMPLES += [kk.Gelu()] if hasattr(kk, "Gelu") else []


def family(layer):
    """The rule table's entry for ``layer``: ``dual, partials, var_scale, diag, diag_grad``."""
    _, dual, partials, var_scale, diag, diag_grad, _ = activations._FAMILIES[type(layer)]
    return dual, partials, var_scale, diag, diag_grad


def dual(layer, k, v1, v2):
    """``(T, Tdot, aux)`` as float64 scalars."""
    t, tdot, aux = family(layer)[0](np.float64(k), np.float64(v1), np.float64(v2), layer)
    return float(t), float(tdot), float(aux)


def scales(layer, v1, v2):
    """Cauchy-Schwarz bounds ``sqrt(E phi(u)^2 E phi(v)^2)`` and the same for ``phi'``, by
    quadrature: the size against which errors of ``T`` and ``Tdot`` are measured (``T`` itself
    can vanish, e.g. ReLU's at c = -1)."""
    t1, tdot1 = reference.dual_by_quadrature(layer, v1, v1, v1)
    t2, tdot2 = reference.dual_by_quadrature(layer, v2, v2, v2)
    return np.sqrt(t1 * t2), np.sqrt(tdot1 * tdot2)


# ----------------------------------------------------------------------------- the oracle itself

@pytest.mark.parametrize("k, v1, v2", [(0.3, 1.0, 2.0), (-1.2, 0.9, 1.7), (0.0, 3.0, 0.2),
                                       (1.5, 1.5, 1.5)])
def test_quadrature_reproduces_gaussian_moments(k, v1, v2):
    """Isserlis: E[uv] = k, E[u^2 v^2] = v1 v2 + 2 k^2, E[u^3 v] = 3 v1 k; the oracle is exact on
    polynomials."""
    expect = reference.gaussian_pair_expectation
    assert expect(lambda u, v: u * v, k, v1, v2) == pytest.approx(k, abs=1e-14)
    assert expect(lambda u, v: u * u * v * v, k, v1, v2) == pytest.approx(
        v1 * v2 + 2 * k * k, rel=1e-13)
    assert expect(lambda u, v: u ** 3 * v, k, v1, v2) == pytest.approx(3 * v1 * k, abs=1e-13)


def test_quadrature_of_independent_relus_is_the_product_of_half_normal_means():
    """k = 0: E[relu(u) relu(v)] = E[relu(u)] E[relu(v)] = sqrt(v1 v2) / (2 pi)."""
    t, tdot = reference.dual_by_quadrature(kk.Relu(), 0.0, 0.7, 2.3)
    assert t == pytest.approx(np.sqrt(0.7 * 2.3) / (2 * np.pi), rel=1e-14)
    assert tdot == pytest.approx(0.25, rel=1e-14)


@pytest.mark.parametrize("layer", [kk.Erf(1.0, 0.5, 0.2)] + EXAMPLES[5:], ids=repr)
@pytest.mark.parametrize("c", [-0.99, -0.3, 0.5, 0.999])
def test_polar_quadrature_agrees_with_tensor_gauss_hermite_for_smooth_activations(layer, c):
    v1, v2 = 1.3, 0.6
    k = c * np.sqrt(v1 * v2)
    phi, dphi, _ = reference.activation_functions(layer)
    for g in (lambda u, v: phi(u) * phi(v), lambda u, v: dphi(u) * dphi(v)):
        polar = reference.gaussian_pair_expectation(g, k, v1, v2, kinks=False)
        hermite = reference.gauss_hermite_pair_expectation(g, k, v1, v2)
        assert polar == pytest.approx(hermite, rel=1e-12, abs=1e-14)


# ----------------------------------------------------------------------------- closed forms

@given(layer=activation_layers(), kv=covariances())
def test_dual_T_equals_quadrature(layer, kv):
    """T(k, v1, v2) = E[phi(u) phi(v)] to 1e-8 of sqrt(E phi(u)^2 E phi(v)^2), c near +-1
    included (down to 1 - c = 1e-12)."""
    k, v1, v2 = kv
    t_quad, _ = reference.dual_by_quadrature(layer, k, v1, v2)
    scale, _ = scales(layer, v1, v2)
    assert abs(dual(layer, k, v1, v2)[0] - t_quad) <= 1e-8 * scale


@given(layer=activation_layers(), kv=covariances())
def test_dual_Tdot_equals_quadrature(layer, kv):
    """Tdot(k, v1, v2) = E[phi'(u) phi'(v)] to 1e-8 of sqrt(E phi'(u)^2 E phi'(v)^2)."""
    k, v1, v2 = kv
    _, tdot_quad = reference.dual_by_quadrature(layer, k, v1, v2)
    _, scale = scales(layer, v1, v2)
    assert abs(dual(layer, k, v1, v2)[1] - tdot_quad) <= 1e-8 * scale


@pytest.mark.parametrize("layer", EXAMPLES, ids=repr)
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_dual_at_exactly_collinear_inputs_is_accurate_to_sqrt_round_off(layer, sign):
    """At c = +-1 the generic formulas see v1 v2 - k^2 = round-off, so ReLU's angle is about
    sqrt(eps) = 1e-8 instead of 0 and Tdot = h - kappa theta is off by ~1e-8 relative (T by
    O(theta^3), nothing). This is why self-kernels use the c = 1 formulas on their diagonal."""
    v1, v2 = 0.8, 2.9
    k = sign * np.sqrt(v1 * v2)
    t_quad, tdot_quad = reference.dual_by_quadrature(layer, k, v1, v2)
    t_scale, tdot_scale = scales(layer, v1, v2)
    t, tdot, _ = dual(layer, k, v1, v2)
    assert abs(t - t_quad) <= 1e-12 * t_scale
    assert abs(tdot - tdot_quad) <= 4 * np.sqrt(np.finfo(float).eps) * tdot_scale


@given(layer=activation_layers(), v=st.floats(0.01, 10.0))
def test_coincident_point_formulas_equal_quadrature(layer, v):
    """diag(v) = (T, Tdot) at k = v1 = v2 = v, the formulas for variances and self-kernel
    diagonals, to 1e-10."""
    t_d, tdot_d = family(layer)[3](np.float64(v), layer)
    t_quad, tdot_quad = reference.dual_by_quadrature(layer, v, v, v)
    t_scale, tdot_scale = scales(layer, v, v)
    assert abs(t_d - t_quad) <= 1e-10 * t_scale
    assert abs(tdot_d - tdot_quad) <= 1e-10 * tdot_scale


# ----------------------------------------------------------------------------- partials

def _fd(fun, x, h):
    """Richardson-extrapolated central difference of a scalar function."""
    return directional_derivative(lambda y: np.float64(fun(y)), (np.float64(x),), (1.0,), h)[0]


@given(layer=activation_layers(), kv=covariances(c_extremes=False).filter(
    lambda kv: abs(kv[0]) <= 0.99 * np.sqrt(kv[1] * kv[2])))
def test_partials_equal_finite_differences_of_the_dual(layer, kv):
    """Price's theorem dT/dk = Tdot, and every entry of ``*_partials``:
    dTdot/dk, dT/dv1 = A1_T r(v1), dTdot/dv1 = A1_Tdot r(v1), and the same for v2 with A2."""
    k, v1, v2 = kv
    dual_fn, partials, var_scale, _, _ = family(layer)
    t, tdot, aux = dual_fn(np.float64(k), np.float64(v1), np.float64(v2), layer)
    dtdot_dk, a1_t, a1_tdot, a2_t, a2_tdot = partials(
        np.float64(k), np.float64(v1), np.float64(v2), tdot, aux, layer,
        activations.coincidence_tol(np.float64))
    r1, r2 = var_scale(np.float64(v1), layer), var_scale(np.float64(v2), layer)
    t_scale, tdot_scale = scales(layer, v1, v2)
    # steps well inside the distance to the collinear boundary |k| = sqrt(v1 v2)
    room = np.sqrt(v1 * v2) - abs(k)
    h_k, h_1, h_2 = 1e-3 * room, 1e-3 * min(v1, room), 1e-3 * min(v2, room)

    def T(kk_, a, b):
        return dual_fn(np.float64(kk_), np.float64(a), np.float64(b), layer)[0]

    def Tdot(kk_, a, b):
        return dual_fn(np.float64(kk_), np.float64(a), np.float64(b), layer)[1]

    checks = [  # (analytic, finite difference, scale of this derivative)
        (tdot, _fd(lambda x: T(x, v1, v2), k, h_k), tdot_scale),
        (dtdot_dk, _fd(lambda x: Tdot(x, v1, v2), k, h_k), tdot_scale / room),
        (a1_t * r1, _fd(lambda x: T(k, x, v2), v1, h_1), t_scale / v1),
        (a1_tdot * r1, _fd(lambda x: Tdot(k, x, v2), v1, h_1), tdot_scale / min(v1, room)),
        (a2_t * r2, _fd(lambda x: T(k, v1, x), v2, h_2), t_scale / v2),
        (a2_tdot * r2, _fd(lambda x: Tdot(k, v1, x), v2, h_2), tdot_scale / min(v2, room)),
    ]
    for i, (analytic, numeric, scale) in enumerate(checks):
        assert abs(float(analytic) - numeric) <= 1e-7 * (abs(numeric) + scale), (
            i, analytic, numeric)


@pytest.mark.parametrize("layer", EXAMPLES, ids=repr)
@pytest.mark.parametrize("c", [1.0, -1.0, 1 - 1e-17, 0.0])
def test_partials_are_finite_at_collinear_inputs(layer, c):
    """ReLU's dTdot/dk = kappa / sin_s diverges at c = +-1; the guard returns the symmetric
    derivative (0) there instead of inf or NaN."""
    v1, v2 = 0.5, 1.7
    k = np.float64(c * np.sqrt(v1 * v2))
    dual_fn, partials, _, _, _ = family(layer)
    t, tdot, aux = dual_fn(k, np.float64(v1), np.float64(v2), layer)
    out = partials(k, np.float64(v1), np.float64(v2), tdot, aux, layer,
                   activations.coincidence_tol(np.float64))
    assert np.all(np.isfinite([t, tdot, aux, *out]))


@given(layer=activation_layers(), v=st.floats(0.05, 10.0))
def test_coincident_point_derivatives_equal_finite_differences(layer, v):
    """diag_grad(v) = d/dv of diag(v) for T and Tdot."""
    _, _, _, diag, diag_grad = family(layer)
    d_t, d_tdot = diag_grad(np.float64(v), layer)
    t_scale, tdot_scale = scales(layer, v, v)
    h = 1e-3 * v
    assert abs(d_t - _fd(lambda x: diag(np.float64(x), layer)[0], v, h)) <= 1e-8 * t_scale / v
    assert abs(d_tdot - _fd(lambda x: diag(np.float64(x), layer)[1], v, h)) <= (
        1e-8 * tdot_scale / v)


# ----------------------------------------------------------------------------- the layer rule

def _random_state(rng, n1, n2, is_self):
    """Variances in [0.3, 3] and correlations in [-0.9, 0.9]: away from the collinear kink."""
    cov1 = rng.uniform(0.3, 3.0, n1)
    cov2 = cov1 if is_self else rng.uniform(0.3, 3.0, n2)
    corr = rng.uniform(-0.9, 0.9, (n1, n1 if is_self else n2))
    k = corr * np.sqrt(cov1[:, None] * cov2[None, :])
    if is_self:
        k = (k + k.T) / 2
        k[np.diag_indices(n1)] = cov1
    ntk = rng.uniform(0.5, 2.0, k.shape)
    return k, cov1, (None if is_self else cov2), ntk


@pytest.mark.parametrize("is_self", [False, True], ids=["cross", "self"])
@pytest.mark.parametrize("track_ntk", [True, False], ids=["ntk", "nngp-only"])
@given(layer=activation_layers(), seed=st.integers(0, 2**32 - 1))
def test_activation_vjp_passes_the_dot_test_against_its_forward(engine, is_self, track_ntk,
                                                                layer, seed):
    """activation_vjp is the adjoint of activation_fwd in every input (nngp, cov1, cov2, ntk)
    and for every output cotangent, self-kernel diagonals included."""
    rng = np.random.default_rng(seed)
    n1, n2 = 4, 3
    k, cov1, cov2, ntk = _random_state(rng, n1, n2, is_self)
    ntk = ntk if track_ntk else None

    def state(k_, c1, c2, t):
        put = lambda a: None if a is None else to_engine(np.array(a), engine)  # noqa: E731
        return KernelState(put(c1), put(k_), put(c2), put(t), is_self)

    def forward(k_, c1, c2, t):
        out, _ = activations.activation_fwd(layer, state(k_, c1, c2, t), engine=engine,
                                            save=False)
        return tuple(to_host(a) for a in (out.nngp, out.cov1, out.cov2, out.ntk) if a is not None)

    xs = (k, cov1, cov2, ntk)
    _, saved = activations.activation_fwd(layer, state(*xs), engine=engine, save=True)

    def pullback(c_k, c_cov1, *rest):
        rest = list(rest)
        c_cov2 = None if is_self else rest.pop(0)
        c_ntk = rest.pop(0) if track_ntk else None
        cot = state(c_k, c_cov1, c_cov2, c_ntk)
        back = activations.activation_vjp(layer, saved, cot, engine=engine)
        return tuple(to_host(a) for a in (back.nngp, back.cov1, back.cov2, back.ntk))

    check_vjp(lambda *a: forward(*a), pullback, xs, rng, rtol=1e-7)

"""Activation rules: closed-form dual kernels, their partial derivatives, forward and VJP.

For an activation ``phi`` and centred Gaussian pre-activations ``(u, v)`` with variances
``v1, v2`` and covariance ``k`` (the NNGP entry), a layer maps

    nngp' = T(k, v1, v2) = E[phi(u) phi(v)],     ntk' = ntk * Tdot(k, v1, v2),
    Tdot  = E[phi'(u) phi'(v)]  (= dT/dk, Price's theorem).

(The next Dense layer adds ``nngp'`` to the NTK, as in neural-tangents' ``stax``.)

Every family supplies, in scalar-broadcast form (``docs/math/fc.md`` derives each line):

* ``dual``       -> ``(T, Tdot, aux)``; ``aux`` is what the partials need besides ``Tdot``
* ``partials``   -> ``(dTdot/dk, A1_T, A1_Tdot, A2_T, A2_Tdot)`` (``dT/dk = Tdot``); the variance
  partials factor as ``dT/dv1 = A1_T * r(v1)``, ``dT/dv2 = A2_T * r(v2)`` (same for ``Tdot``), so
  the VJP reduces ``A1`` over rows and ``A2`` over columns and scales by ``r``. For ABRelu and
  Erf ``A2 is A1`` (the same array: one matrix, eq. (fc.6)); GELU needs both;
* ``var_scale``  -> ``r(v)``;
* ``diag`` / ``diag_grad`` -> ``T`` and ``Tdot`` at coincident points (``k = v1 = v2 = v``) and
  their derivatives in ``v``. They give the variances (``cov1, cov2``) and the diagonal of a
  self-kernel. There the generic formulas lose accuracy for ReLU-like activations (the angle
  comes from sqrt(v1 v2 - k^2) of round-off size), and two of their partials diverge.

The NumPy functions here are the readable reference (they also run on CuPy through ``xp``);
``_activations_numba`` fuses the same formulas into parallel loops.
"""
import math

import numpy as np

from ..arch import ABRelu, Erf, Gelu
from ..backend import array_namespace
from . import _activations_numba
from .state import KernelState

__all__ = ["abrelu_dual", "abrelu_partials", "erf_dual", "erf_partials", "gelu_dual",
           "gelu_partials", "activation_fwd", "activation_vjp", "coincidence_tol", "loop_params"]

_TWO_PI = 2 * math.pi


def coincidence_tol(dtype):
    """``sin(theta)**2`` below which two inputs count as coincident (singular derivatives -> 0).

    Round-off in ``v1 * v2 - k**2`` is a few ulps of ``v1 * v2``; the threshold sits well above it
    (neural-tangents' guard, relative rather than absolute).
    """
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-5


# ----------------------------------------------------------------------------- ABRelu
# phi(x) = a min(x, 0) + b max(x, 0); kappa = (a - b)^2 / (2 pi), half = (a^2 + b^2) / 2.
# With sin_s = sqrt(v1 v2 - k^2) = sqrt(v1 v2) sin(theta), theta = atan2(sin_s, k):
#   T    = kappa (sin_s - theta k) + half k                              eq. (fc.7)
#   Tdot = half - kappa theta                                            eq. (fc.8)
# aux = sin_s: with it the partials need no transcendental function.

def _abrelu_consts(layer):
    return (layer.a - layer.b) ** 2 / _TWO_PI, (layer.a ** 2 + layer.b ** 2) / 2


def abrelu_dual(k, v1, v2, layer):
    """``(T, Tdot, sin_s)`` of :class:`ABRelu`, broadcasting over ``k, v1, v2``."""
    xp = array_namespace(k)
    kappa, half = _abrelu_consts(layer)
    sin_s = xp.sqrt(xp.maximum(v1 * v2 - k * k, 0))
    theta = xp.arctan2(sin_s, k)
    return kappa * (sin_s - theta * k) + half * k, half - kappa * theta, sin_s


def abrelu_partials(k, v1, v2, tdot, sin_s, layer, tol):
    """``(dTdot/dk, A_T, A_Tdot, A_T, A_Tdot)`` of :class:`ABRelu`; eq. (fc.9)-(fc.11).

    ``dTdot/dk = kappa / sin_s`` and ``A_Tdot = -kappa k / sin_s`` are singular at coincident
    points; they are set to 0 where ``sin_s**2 <= tol * v1 v2`` (the symmetric derivative).
    """
    xp = array_namespace(k)
    kappa, _ = _abrelu_consts(layer)
    ok = sin_s * sin_s > tol * (v1 * v2)
    inv = xp.where(ok, 1 / xp.where(ok, sin_s, 1), 0)
    a_t, a_tdot = kappa * sin_s, -kappa * k * inv
    return kappa * inv, a_t, a_tdot, a_t, a_tdot


def _abrelu_var_scale(v, layer):
    xp = array_namespace(v)
    return xp.where(v > 0, 0.5 / xp.where(v > 0, v, 1), 0)


def _abrelu_diag(v, layer):
    _, half = _abrelu_consts(layer)
    return half * v, half + 0 * v


def _abrelu_diag_grad(v, layer):
    _, half = _abrelu_consts(layer)
    return half + 0 * v, 0 * v


# ----------------------------------------------------------------------------- Erf
# phi(x) = a erf(b x) + c; D_i = 1 + 2 b^2 v_i, q = 2 b^2 k, R = D1 D2, W = sqrt(R - q^2):
#   T    = a^2 (2/pi) atan2(q, W) + c^2                                  eq. (fc.12)
#   Tdot = a^2 (4 b^2 / pi) / W                                          eq. (fc.13)
# aux = W.

def erf_dual(k, v1, v2, layer):
    """``(T, Tdot, W)`` of :class:`Erf`, broadcasting over ``k, v1, v2``."""
    xp = array_namespace(k)
    a2, b2 = layer.a ** 2, layer.b ** 2
    q = 2 * b2 * k
    w = xp.sqrt((1 + 2 * b2 * v1) * (1 + 2 * b2 * v2) - q * q)
    return (a2 * (2 / math.pi) * xp.arctan2(q, w) + layer.c ** 2,
            a2 * (4 * b2 / math.pi) / w, w)


def erf_partials(k, v1, v2, tdot, w, layer, tol):
    """``(dTdot/dk, A_T, A_Tdot, A_T, A_Tdot)`` of :class:`Erf`; eq. (fc.14)-(fc.16). Never
    singular."""
    a2, b2 = layer.a ** 2, layer.b ** 2
    q = 2 * b2 * k
    r = (1 + 2 * b2 * v1) * (1 + 2 * b2 * v2)
    w2 = w * w
    a_t, a_tdot = -a2 * (2 / math.pi) * q / w, -tdot * r / w2
    return tdot * 2 * b2 * q / w2, a_t, a_tdot, a_t, a_tdot


def _erf_var_scale(v, layer):
    b2 = layer.b ** 2
    return b2 / (1 + 2 * b2 * v)


def _erf_diag(v, layer):
    xp = array_namespace(v)
    a2, b2 = layer.a ** 2, layer.b ** 2
    t = 2 * b2 * v
    return (a2 * (2 / math.pi) * xp.arcsin(t / (1 + t)) + layer.c ** 2,
            a2 * (4 * b2 / math.pi) / xp.sqrt(1 + 2 * t))


def _erf_diag_grad(v, layer):
    xp = array_namespace(v)
    a2, b2 = layer.a ** 2, layer.b ** 2
    t = 2 * b2 * v
    root = xp.sqrt(1 + 2 * t)
    return (a2 * (4 * b2 / math.pi) / ((1 + t) * root),
            -a2 * (8 * b2 * b2 / math.pi) / (root * root * root))


# ----------------------------------------------------------------------------- Gelu
# phi(x) = x Phi(x); a_i = v_i + 1, D = a1 a2 - k^2 (>= v1 + v2 + 1), theta = atan2(k, sqrt D):
#   T    = k/4 + k theta/(2 pi) + (k^2 + v1 v2 D) / (2 pi a1 a2 sqrt D)               eq. (fc.23)
#   Tdot = 1/4 + theta/(2 pi) + k (1 + 1/D + (1 - v1 v2)/(a1 a2)) / (2 pi sqrt D)     eq. (fc.24)
# aux = sqrt(D). Smooth everywhere; the variance partials do not factor (r = 1, A1 != A2).

def gelu_dual(k, v1, v2, layer):
    """``(T, Tdot, sqrt(D))`` of :class:`Gelu`, broadcasting over ``k, v1, v2``."""
    xp = array_namespace(k)
    prod = (v1 + 1) * (v2 + 1)
    d = prod - k * k
    root = xp.sqrt(d)
    theta = xp.arctan2(k, root)
    s12 = v1 * v2
    t = k / 4 + k * theta / _TWO_PI + (k * k + s12 * d) / (_TWO_PI * prod * root)
    tdot = 0.25 + theta / _TWO_PI + k * (1 + 1 / d + (1 - s12) / prod) / (_TWO_PI * root)
    return t, tdot, root


def _gelu_side(a_self, a_other, d, root, k):
    # eq. (fc.25): dT/dv and dTdot/dv for the side whose a = v + 1 is a_self
    a2 = a_self * a_self
    den = 2 * _TWO_PI * a2 * d * root
    dd = d * d
    cross = d * a_self * (a_self + a_other)
    return ((dd * (a_self + 2) - cross - a2 * a_other) / den,
            -k * (dd * (a_self + 2) + cross + 3 * a2 * a_other) / (den * d))


def gelu_partials(k, v1, v2, tdot, root, layer, tol):
    """``(dTdot/dk, dT/dv1, dTdot/dv1, dT/dv2, dTdot/dv2)`` of :class:`Gelu`; eq. (fc.25)."""
    a1, a2 = v1 + 1, v2 + 1
    d = root * root
    dtdot = (d * d + d * (a1 + a2 - 2) + 3 * a1 * a2) / (_TWO_PI * d * d * root)
    t1, tdot1 = _gelu_side(a1, a2, d, root, k)
    t2, tdot2 = _gelu_side(a2, a1, d, root, k)
    return dtdot, t1, tdot1, t2, tdot2


def _gelu_var_scale(v, layer):
    return 1 + 0 * v


def _gelu_diag(v, layer):
    t, tdot, _ = gelu_dual(v, v, v, layer)
    return t, tdot


def _gelu_diag_grad(v, layer):
    # along k = v1 = v2 = v: d/dv = d/dk + d/dv1 + d/dv2 (fc.17 for smooth activations)
    t, tdot, root = gelu_dual(v, v, v, layer)
    dtdot, t1, tdot1, t2, tdot2 = gelu_partials(v, v, v, tdot, root, layer, 0.0)
    return tdot + t1 + t2, dtdot + tdot1 + tdot2


# family table: layer type -> (numba id, dual, partials, var_scale, diag, diag_grad, numba params)
_FAMILIES = {
    ABRelu: (_activations_numba.ABRELU, abrelu_dual, abrelu_partials, _abrelu_var_scale,
             _abrelu_diag, _abrelu_diag_grad, lambda lay: (*_abrelu_consts(lay), 0.0)),
    Erf: (_activations_numba.ERF, erf_dual, erf_partials, _erf_var_scale, _erf_diag,
          _erf_diag_grad, lambda lay: (lay.a ** 2, lay.b ** 2, lay.c ** 2)),
    Gelu: (_activations_numba.GELU, gelu_dual, gelu_partials, _gelu_var_scale, _gelu_diag,
           _gelu_diag_grad, lambda lay: ()),
}


def loop_params(layer):
    """``(family id, parameter tuple)`` of an activation layer for the Numba loops (the
    convolutional kernels call the same scalar dual kernels)."""
    fam = _FAMILIES[type(layer)]
    return fam[0], fam[6](layer)


def _diag_indices(xp, n):
    idx = xp.arange(n)
    return idx, idx


def activation_fwd(layer, state, *, engine, save=True):
    """Forward rule of an activation layer.

    ``saved = (nngp, cov1, cov2, ntk, tdot, aux)``: the layer's inputs, ``Tdot`` and the
    family's auxiliary (``sin_s`` or ``W``), so the VJP evaluates no transcendental function.
    ``save=False`` (plain kernel evaluation) keeps nothing.
    """
    fam_id, dual, _, _, diag, _, params = _FAMILIES[type(layer)]
    xp = array_namespace(state.nngp)
    k, cov1, cov2, ntk = state.nngp, state.cov1, state.cov2, state.ntk
    v2 = cov1 if state.is_self else cov2
    if engine == "numba":
        new_k, new_ntk, tdot, aux = _activations_numba.activation_fwd(
            fam_id, params(layer), k, cov1, v2, ntk, save)
    else:
        new_k, tdot, aux = dual(k, cov1[:, None], v2[None, :], layer)
        new_ntk = None if ntk is None else ntk * tdot
    new_cov1 = diag(cov1, layer)[0]
    new_cov2 = None if state.is_self else diag(cov2, layer)[0]
    if state.is_self:  # coincident points: c = 1 formulas, eq. (fc.18)
        ii = _diag_indices(xp, k.shape[0])
        new_k[ii] = new_cov1
        if ntk is not None:
            new_ntk[ii] = ntk[ii] * diag(cov1, layer)[1]
    new = KernelState(new_cov1, new_k, new_cov2, new_ntk, state.is_self)
    return new, ((k, cov1, cov2, ntk, tdot, aux) if save else None)


def activation_vjp(layer, saved, cot, *, engine):
    """Adjoint of :func:`activation_fwd` (eq. (fc.19)-(fc.22) of ``docs/math/fc.md``)."""
    k, cov1, cov2, ntk, tdot, aux = saved
    fam_id, _, partials, var_scale, diag, diag_grad, params = _FAMILIES[type(layer)]
    xp = array_namespace(k)
    v2 = cov1 if cot.is_self else cov2
    g = cot.nngp if cot.nngp is not None else xp.zeros_like(k)
    h = None
    if ntk is not None:
        h = cot.ntk if cot.ntk is not None else xp.zeros_like(k)
    tol = coincidence_tol(k.dtype)
    if engine == "numba":
        c_k, c_ntk, row, col = _activations_numba.activation_vjp(
            fam_id, params(layer), k, cov1, v2, ntk, tdot, aux, g, h, cot.is_self, tol)
    else:
        dtdot, a1_t, a1_tdot, a2_t, a2_tdot = partials(k, cov1[:, None], v2[None, :], tdot, aux,
                                                       layer, tol)
        hn = None if h is None else h * ntk

        def side(a_t, a_tdot):
            return g * a_t if h is None else g * a_t + hn * a_tdot

        if h is None:
            c_k, c_ntk = g * tdot, None
        else:
            c_k, c_ntk = g * tdot + hn * dtdot, h * tdot
        a1 = side(a1_t, a1_tdot)
        a2 = a1 if (a2_t is a1_t and a2_tdot is a1_tdot) else side(a2_t, a2_tdot)
        if cot.is_self:  # the diagonal is handled below by the c = 1 formulas
            ii = _diag_indices(xp, k.shape[0])
            for m in (c_k, a1, a2) + ((c_ntk,) if c_ntk is not None else ()):
                m[ii] = 0
        row, col = a1.sum(axis=1), a2.sum(axis=0)
    c_cov1 = row * var_scale(cov1, layer)
    c_cov2 = col * var_scale(v2, layer)
    dT1, dTdot1 = diag_grad(cov1, layer)
    if cot.cov1 is not None:
        c_cov1 = c_cov1 + cot.cov1 * dT1
    if cot.is_self:  # eq. (fc.22): diagonal entries depend on cov1 alone
        c_cov1 = c_cov1 + c_cov2
        c_cov2 = None
        ii = _diag_indices(xp, k.shape[0])
        c_cov1 = c_cov1 + g[ii] * dT1
        if h is not None:
            c_cov1 = c_cov1 + h[ii] * ntk[ii] * dTdot1
            c_ntk[ii] = h[ii] * diag(cov1, layer)[1]
    elif cot.cov2 is not None:
        c_cov2 = c_cov2 + cot.cov2 * diag_grad(cov2, layer)[0]
    return KernelState(c_cov1, c_k, c_cov2, c_ntk, cot.is_self)

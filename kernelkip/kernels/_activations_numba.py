"""Fused Numba loops for the activation rules (no policy: callers choose the engine).

Each loop evaluates, per entry ``(i, j)``, the closed forms written out in
``kernelkip.kernels.activations`` (the NumPy reference) and ``docs/math/fc.md``, reading
``k[i, j], v1[i], v2[j]`` once. Parameters arrive pre-cast to the arrays' dtype so that float32
inputs are computed in float32 (Numba promotes float32 with Python literals to float64, so the
constants 1 and 2/pi travel in ``p`` too).

Family ids and their parameter vectors ``p``:

* ``ABRELU``: ``p = (kappa, half, 0, 1, 2/pi, ...)``, ``kappa = (a-b)^2/(2 pi)``,
  ``half = (a^2+b^2)/2``
* ``ERF``:    ``p = (a^2, b^2, c^2, 1, 2/pi, ...)``, then the arctangent constants
* ``GELU``:   ``p = (0, 0, 0, 1, 2/pi, ...)``; ``p[20] = 2 pi``, ``p[21] = 1/4``
"""
import math

import numpy as np

from .._deps import get_numba

__all__ = ["ABRELU", "ERF", "GELU", "atan2", "activation_fwd", "activation_vjp", "param_vector"]

ABRELU, ERF, GELU = 0, 1, 2

# atan(u) = u + u z P(z), z = u^2, |u| <= tan(pi/8): P of degree 10, a least-squares fit on 400
# Chebyshev nodes to the exactly summed Taylor series of (atan(u)/u - 1)/z: within 1 ulp on the
# reduced range, and within 3 ulps for the whole atan2 after the octant reduction, in float64
# and float32 (docs/math/fc.md, "Arctangent"). libm's atan2 is a scalar call that no loop can
# vectorize; this polynomial is, and it made the forward loop ~50x cheaper per entry.
_ATAN_COEF = (-0.3333333333333337, 0.20000000000009102, -0.14285714286420775,
              0.11111111119988702, -0.09090908033497994, 0.07692251987746104,
              -0.06665372400241308, 0.05864963834927395, -0.05118547095713363,
              0.04013120040891325, -0.02022394759899407)

_numba = get_numba()


def _no_numba(*args, **kwargs):
    raise RuntimeError("Numba is not available (not installed, or KERNELKIP_NO_NUMBA is set); "
                       "use engine='numpy'")


if _numba is None:
    fwd = vjp = atan2_array = _no_numba
else:
    # Module-level definitions, so that the loops refer to each other as module globals: Numba
    # then finds them in its disk cache in later processes (closures over jitted functions hash
    # differently in every process and were recompiled each time). ``njit`` compiles lazily, on
    # the first call: importing this module compiles nothing.
    njit, prange = _numba.njit, _numba.prange
    # error_model="numpy": IEEE division (no ZeroDivisionError branch), so loops can vectorize
    opts = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")

    # Vectorization rule for these helpers: no array load inside a conditional. LLVM turns a
    # branch into a select only when both sides are safe to execute; a load from ``p`` is not
    # provably safe, so a conditional ``p[m]`` kept whole loops scalar (~15 ns per entry
    # instead of ~2). All parameters are read unconditionally first, and the family ``fam``
    # reaches these helpers as a constant (see ``fwd``), so its branches fold away.

    @njit(inline="always", **opts)
    def _atan2(y, x, p):
        # atan2 by octant reduction to |u| <= tan(pi/8) and the polynomial _ATAN_COEF;
        # branch-free (selects), so loops calling it vectorize. p[5:9] = (pi/4, pi/2, pi,
        # tan(pi/8)), p[9:] = the coefficients, p[3] = 1. Signed zeros are not told apart
        # (atan2(-0.0, -1) = +pi); callers pass y = sin_s >= 0, or x = W > 0.
        one, quarter, half, full, t8 = p[3], p[5], p[6], p[7], p[8]
        c0, c1, c2, c3, c4, c5 = p[9], p[10], p[11], p[12], p[13], p[14]
        c6, c7, c8, c9, c10 = p[15], p[16], p[17], p[18], p[19]
        ay, ax = abs(y), abs(x)
        hi, lo = max(ay, ax), min(ay, ax)
        zero = one - one
        t = lo / hi if hi > zero else zero
        big = t > t8
        ub = (t - one) / (t + one)
        u = ub if big else t
        z = u * u
        q = c10 * z + c9
        q = ((((q * z + c8) * z + c7) * z + c6) * z + c5) * z + c4
        q = (((q * z + c3) * z + c2) * z + c1) * z + c0
        a = u + u * z * q
        a2 = a + quarter
        a = a2 if big else a
        a3 = half - a
        a = a3 if ay > ax else a
        a4 = full - a
        a = a4 if x < zero else a
        return -a if y < zero else a

    @njit(inline="always", **opts)
    def point(fam, p, k, v1, v2):
        # (T, Tdot, aux) of eq. (fc.7)-(fc.8) and (fc.12)-(fc.13)
        p0, p1, p2, one, two_pi_inv, two_pi, quarter = p[0], p[1], p[2], p[3], p[4], p[20], p[21]
        if fam == ABRELU:
            sin_s = math.sqrt(max(v1 * v2 - k * k, k - k))  # max(): a conditional stayed scalar
            theta = _atan2(sin_s, k, p)
            return p0 * (sin_s - theta * k) + p1 * k, p1 - p0 * theta, sin_s
        if fam == GELU:  # eq. (fc.23)-(fc.24)
            prod = (v1 + one) * (v2 + one)
            d = prod - k * k
            root = math.sqrt(d)
            theta = _atan2(k, root, p)
            s12 = v1 * v2
            return (k * quarter + k * theta / two_pi + (k * k + s12 * d) / (two_pi * prod * root),
                    quarter + theta / two_pi + k * (one + one / d + (one - s12) / prod)
                    / (two_pi * root), root)
        two_b2 = p1 + p1
        q = two_b2 * k
        w = math.sqrt((one + two_b2 * v1) * (one + two_b2 * v2) - q * q)
        return p0 * two_pi_inv * _atan2(q, w, p) + p2, p0 * p1 * (two_pi_inv + two_pi_inv) / w, w

    @njit(inline="always", **opts)
    def gelu_side(p, a_self, a_other, d, root, k):
        # eq. (fc.25): dT/dv and dTdot/dv for the side whose a = v + 1 is a_self
        one, two_pi = p[3], p[20]
        two = one + one
        a2 = a_self * a_self
        den = two * two_pi * a2 * d * root
        dd = d * d
        cross = d * a_self * (a_self + a_other)
        return ((dd * (a_self + two) - cross - a2 * a_other) / den,
                -k * (dd * (a_self + two) + cross + (two + one) * a2 * a_other) / (den * d))

    @njit(inline="always", **opts)
    def partials(fam, p, k, v1, v2, tdot, aux, tol):
        # (dTdot/dk, A1_T, A1_Tdot, A2_T, A2_Tdot) of eq. (fc.9)-(fc.11), (fc.14)-(fc.16), (fc.25)
        p0, p1, one, two_pi_inv, two_pi = p[0], p[1], p[3], p[4], p[20]
        if fam == ABRELU:
            zero = k - k
            inv_s = one / aux
            inv = inv_s if aux * aux > tol * (v1 * v2) else zero
            a_t, a_tdot = p0 * aux, -p0 * k * inv
            return p0 * inv, a_t, a_tdot, a_t, a_tdot
        if fam == GELU:
            a1, a2 = v1 + one, v2 + one
            d = aux * aux
            two = one + one
            dtdot = (d * d + d * (a1 + a2 - two) + (two + one) * a1 * a2) / (two_pi * d * d * aux)
            t1, tdot1 = gelu_side(p, a1, a2, d, aux, k)
            t2, tdot2 = gelu_side(p, a2, a1, d, aux, k)
            return dtdot, t1, tdot1, t2, tdot2
        two_b2 = p1 + p1
        q = two_b2 * k
        r = (one + two_b2 * v1) * (one + two_b2 * v2)
        w2 = aux * aux
        a_t, a_tdot = -p0 * two_pi_inv * q / aux, -tdot * r / w2
        return tdot * two_b2 * q / w2, a_t, a_tdot, a_t, a_tdot

    @njit(parallel=True, **opts)
    def fwd(fam, p, k, v1, v2, ntk, track, save, out_k, out_ntk, out_tdot, out_aux):
        n1, n2 = k.shape
        for i in prange(n1):
            for j in range(n2):
                t, tdot, aux = point(fam, p, k[i, j], v1[i], v2[j])
                out_k[i, j] = t
                if track:
                    out_ntk[i, j] = ntk[i, j] * tdot
                if save:
                    out_tdot[i, j] = tdot
                    out_aux[i, j] = aux

    @njit(parallel=True, **opts)
    def vjp(fam, p, k, v1, v2, ntk, tdots, auxs, g, h, track, is_self, tol, out_k, out_ntk,
            row, col_parts):
        n1, n2 = k.shape
        nchunks = col_parts.shape[0]
        for c in prange(nchunks):
            for i in range(c * n1 // nchunks, (c + 1) * n1 // nchunks):
                acc = 0.0
                for j in range(n2):
                    if is_self and i == j:  # coincident points: handled by the caller
                        out_k[i, j] = 0
                        if track:
                            out_ntk[i, j] = 0
                        continue
                    tdot = tdots[i, j]
                    dtdot, a1_t, a1_tdot, a2_t, a2_tdot = partials(
                        fam, p, k[i, j], v1[i], v2[j], tdot, auxs[i, j], tol)
                    gg = g[i, j]
                    if track:
                        hh = h[i, j]
                        hn = hh * ntk[i, j]
                        out_ntk[i, j] = hh * tdot
                        out_k[i, j] = gg * tdot + hn * dtdot
                        a1 = gg * a1_t + hn * a1_tdot
                        a2 = gg * a2_t + hn * a2_tdot
                    else:
                        out_k[i, j] = gg * tdot
                        a1 = gg * a1_t
                        a2 = gg * a2_t
                    acc += a1
                    col_parts[c, j] += a2
                row[i] = acc

    @njit(parallel=True, **opts)
    def atan2_array(y, x, p, out):
        for i in prange(y.shape[0]):
            out[i] = _atan2(y[i], x[i], p)


def _kernels():
    """The loops (each compiles on its first call, or loads from Numba's disk cache)."""
    return {"fwd": fwd, "vjp": vjp, "atan2": atan2_array}


def param_vector(params, dtype):
    """``p[0:3]`` family parameters, ``p[3] = 1``, ``p[4] = 2/pi``, ``p[5:9]`` arctangent
    constants, ``p[9:20]`` arctangent coefficients, ``p[20] = 2 pi``, ``p[21] = 1/4``; all in
    the arrays' dtype."""
    p = np.zeros(22, dtype=dtype)
    p[:len(params)] = params
    p[3] = 1
    p[4] = 2 / math.pi
    p[5:9] = (math.pi / 4, math.pi / 2, math.pi, math.tan(math.pi / 8))
    p[9:20] = _ATAN_COEF
    p[20], p[21] = 2 * math.pi, 0.25
    return p


def atan2(y, x):
    r"""Elementwise ``arctan2(y, x)`` of 1-D arrays by the loops' vectorizable polynomial (tests).

    .. math:: \operatorname{atan}(u) = u + u z P(z),\quad z = u^2,\ |u| \le \tan(\pi/8)
    """
    out = np.empty_like(y)
    _kernels()["atan2"](y, x, param_vector((), y.dtype), out)
    return out


def activation_fwd(fam, params, k, v1, v2, ntk, save):
    """Fused ``T`` and ``ntk * Tdot``; returns ``(new_k, new_ntk, tdot, aux)``.

    .. math:: K'_{ij} = T(K_{ij}, v_{1,i}, v_{2,j}),\\quad
              \\Theta'_{ij} = \\Theta_{ij} \\dot T(K_{ij}, v_{1,i}, v_{2,j})

    ``tdot`` and ``aux`` are ``None`` unless ``save``.
    """
    kern = _kernels()
    track = ntk is not None
    out_k = np.empty_like(k)
    out_ntk = np.empty_like(k) if track else out_k
    out_tdot = np.empty_like(k) if save else out_k
    out_aux = np.empty_like(k) if save else out_k
    kern["fwd"](fam, param_vector(params, k.dtype), k, v1, v2, ntk if track else k, track, save,
                out_k, out_ntk, out_tdot, out_aux)
    return (out_k, out_ntk if track else None, out_tdot if save else None,
            out_aux if save else None)


def activation_vjp(fam, params, k, v1, v2, ntk, tdot, aux, g, h, is_self, tol):
    """Fused adjoint: ``(c_k, c_ntk, row_sums(A1), col_sums(A2))`` of eq. (fc.19)-(fc.22).

    .. math:: \\bar K = \\bar K' \\dot T + \\bar\\Theta' \\Theta\\,
              \\partial_k \\dot T,\\quad
              A_s = \\bar K' A_{s,T} + \\bar\\Theta' \\Theta A_{s,\\dot T}

    Coincident entries of a self-kernel (``i == j``) are left at zero for the caller. Row and
    column sums accumulate in float64.
    """
    kern = _kernels()
    track = ntk is not None
    n1, n2 = k.shape
    out_k = np.empty_like(k)
    out_ntk = np.empty_like(k) if track else out_k
    row = np.empty(n1, dtype=np.float64)
    nchunks = max(1, min(n1, 4 * get_numba().config.NUMBA_NUM_THREADS))
    col_parts = np.zeros((nchunks, n2), dtype=np.float64)
    kern["vjp"](fam, param_vector(params, k.dtype), k, v1, v2, ntk if track else k, tdot, aux, g,
                h if track else g, track, bool(is_self), k.dtype.type(tol), out_k, out_ntk,
                row, col_parts)
    col = col_parts.sum(axis=0)
    return out_k, (out_ntk if track else None), row.astype(k.dtype), col.astype(k.dtype)

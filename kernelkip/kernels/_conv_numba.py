"""Numba loops for the convolutional kernels on the band layout (no policy: callers choose).

The exact NNGP/NTK of a convolutional network is computed one pair of images at a time. For a
pair ``(a, b)`` each *stage* (the output of a layer) holds the covariance ``K[p, q]`` between
position ``p`` of image ``a`` and position ``q`` of image ``b`` only for the offsets
``q - p = (dh, dw)`` with ``|dh| <= rh, |dw| <= rw`` that the readout needs
(``docs/math/conv.md``, "Which entries are needed"). A stage is stored as planes, one per
offset, each an ``H x W`` image over ``p``::

    buf[off + ((dh + rh) * (2 rw + 1) + (dw + rw)) * H * W + h * W + w] = K[(h, w), (h+dh, w+dw)]

Entries whose ``q`` falls outside the image are never written and stay 0; every loop writes
exactly the entries with ``p`` and ``q`` inside, so the zeros are an invariant the next layer
relies on (a zero-padded tap adds 0). The NTK ``Θ`` uses the same layout in a second buffer,
and the backward pass the same layout again for the cotangents.

A network is a small program: ``ops[n] = (kind, a, b, c)`` with the stage geometry
``geo[n] = (H, W, rh, rw)`` of its input (``geo[n + 1]`` of its output) and float parameters
``fpar[n]`` in the arrays' dtype:

* ``CONV``: ``a`` = filter, ``b`` = pad offset (``filter // 2`` for SAME, 0 for VALID);
  ``fpar = (W_std^2 / filter^2, b_std^2)``
* ``ACT``:  ``a`` = activation family (``_activations_numba``), ``b`` = index of this
  activation's variances in ``voff``; ``fpar`` = the family's parameter vector
* ``POOL``: ``a`` = window; ``fpar = (1 / window^4,)``
* ``READ``: the last op; ``a`` = 0 for Flatten (mean of same-position entries), 1 for
  GlobalAvgPool (mean of all entries); ``fpar = (1 / (H W),)`` or ``(1 / (H W)^2,)``

Each forward op sits next to its adjoint. The ``pair_fwd``/``pair_bwd`` interpreters run a
program on one pair; the parallel drivers at the end run many pairs, each thread with its own
scratch buffers, so memory does not grow with the number of pairs.
"""
import numpy as np

from .._deps import get_numba
from . import _activations_numba as _act

__all__ = ["CONV", "ACT", "POOL", "READ", "cross_fwd", "self_fwd", "cross_bwd", "self_bwd",
           "cross_fwd_keep"]

CONV, ACT, POOL, READ = 0, 1, 2, 3

_numba = get_numba()


def _no_numba(*args, **kwargs):
    raise RuntimeError("Numba is not available (not installed, or KERNELKIP_NO_NUMBA is set); "
                       "the convolutional kernels need it")


if _numba is None:
    cross_fwd = self_fwd = cross_bwd = self_bwd = cross_fwd_keep = _no_numba
else:
    njit, prange = _numba.njit, _numba.prange
    opts = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")
    _point, _partials = _act.point, _act.partials

    @njit(inline="always", **opts)
    def _plane(dh, dw, rh, rw):
        return (dh + rh) * (2 * rw + 1) + dw + rw

    @njit(inline="always", **opts)
    def _var_scale(fam, p, v):
        # r(v) with dT/dv_s = A_s r(v_s) (kernels.activations, "var_scale")
        zero = p[3] - p[3]
        if fam == _act.ABRELU:
            return p[3] / (v + v) if v > zero else zero
        if fam == _act.ERF:
            return p[1] / (p[3] + (p[1] + p[1]) * v)
        return p[3]

    # Indices in the inner loops are cast to unsigned: Numba then drops its negative-index
    # wraparound test, which otherwise keeps LLVM from vectorizing them (2.4x on a row sum).

    # ------------------------------------------------------------------------- input
    @njit(**opts)
    def input_fwd(xa, xb, k, o, h_, w_, rh, rw, inv_c):
        # K[p, p+d] = sum_c xa[c, p] xb[c, p+d] / C                          eq. (conv.1)
        hw = h_ * w_
        nc = xa.shape[0] // hw
        for dh in range(-rh, rh + 1):
            for dw in range(-rw, rw + 1):
                base = o + _plane(dh, dw, rh, rw) * hw
                w0, w1 = max(0, -dw), min(w_, w_ - dw)
                for h in range(max(0, -dh), min(h_, h_ - dh)):
                    row = base + h * w_
                    for w in range(w0, w1):
                        k[np.uint64(row + w)] = 0
                    for c in range(nc):
                        ra = (c * h_ + h) * w_
                        rb = (c * h_ + h + dh) * w_ + dw
                        for w in range(w0, w1):
                            k[np.uint64(row + w)] += xa[np.uint64(ra + w)] * xb[np.uint64(rb + w)]
                    for w in range(w0, w1):
                        k[np.uint64(row + w)] *= inv_c

    @njit(**opts)
    def input_bwd(ck, o, h_, w_, rh, rw, xa, xb, ga, gb, inv_c, want_a, want_b):
        # adjoint of (conv.1): ga[c, p] += ck[p, p+d] xb[c, p+d] / C, gb[c, p+d] += ck xa[c, p]
        hw = h_ * w_
        nc = xa.shape[0] // hw
        for dh in range(-rh, rh + 1):
            for dw in range(-rw, rw + 1):
                base = o + _plane(dh, dw, rh, rw) * hw
                w0, w1 = max(0, -dw), min(w_, w_ - dw)
                for h in range(max(0, -dh), min(h_, h_ - dh)):
                    row = base + h * w_
                    for c in range(nc):
                        ra = (c * h_ + h) * w_
                        rb = (c * h_ + h + dh) * w_ + dw
                        if want_a:
                            for w in range(w0, w1):
                                ga[np.uint64(ra + w)] += ck[np.uint64(row + w)] \
                                    * xb[np.uint64(rb + w)] * inv_c
                        if want_b:
                            for w in range(w0, w1):
                                gb[np.uint64(rb + w)] += ck[np.uint64(row + w)] \
                                    * xa[np.uint64(ra + w)] * inv_c

    # ------------------------------------------------------------------------- conv
    @njit(**opts)
    def conv_fwd(k, t, oi, oo, gi, go, f, s, w2f, b2, track, tz, rows, rowt):
        # K'[p, p+d] = W^2/f^2 sum_a K[p+a-s, p+d+a-s] + b^2;  Θ' = W^2/f^2 sum_a Θ[..] + K'
        # (eq. (conv.2)); taps outside the image read nothing (zero padding). The window sum is
        # separable: first along w into ``rows`` (one row per input row), then along h.
        hi_, wi_, rhi, rwi = gi[0], gi[1], gi[2], gi[3]
        ho_, wo_, rho, rwo = go[0], go[1], go[2], go[3]
        both = track and not tz
        for dh in range(-rho, rho + 1):
            for dw in range(-rwo, rwo + 1):
                bi = oi + _plane(dh, dw, rhi, rwi) * hi_ * wi_
                bo = oo + _plane(dh, dw, rho, rwo) * ho_ * wo_
                w0, w1 = max(0, -dw), min(wo_, wo_ - dw)
                r0, r1 = max(0, -dh), min(hi_, hi_ - dh)  # input rows that hold entries
                for hh in range(r0, r1):
                    rr = hh * wo_
                    for w in range(w0, w1):
                        rows[np.uint64(rr + w)] = 0
                        rowt[np.uint64(rr + w)] = 0
                    for b in range(f):
                        src = bi + hh * wi_ + b - s
                        lo, hi = max(w0, s - b), min(w1, wi_ + s - b)
                        for w in range(lo, hi):
                            rows[np.uint64(rr + w)] += k[np.uint64(src + w)]
                        if both:
                            for w in range(lo, hi):
                                rowt[np.uint64(rr + w)] += t[np.uint64(src + w)]
                for h in range(max(0, -dh), min(ho_, ho_ - dh)):
                    dst = bo + h * wo_
                    for w in range(w0, w1):
                        k[np.uint64(dst + w)] = 0
                        t[np.uint64(dst + w)] = 0
                    for a in range(f):
                        hh = h + a - s
                        if hh < r0 or hh >= r1:
                            continue
                        rr = hh * wo_
                        for w in range(w0, w1):
                            k[np.uint64(dst + w)] += rows[np.uint64(rr + w)]
                        if both:
                            for w in range(w0, w1):
                                t[np.uint64(dst + w)] += rowt[np.uint64(rr + w)]
                    for w in range(w0, w1):
                        kk = w2f * k[np.uint64(dst + w)] + b2
                        k[np.uint64(dst + w)] = kk
                        t[np.uint64(dst + w)] = w2f * t[np.uint64(dst + w)] + kk

    @njit(**opts)
    def conv_bwd(ck, ct, oi, oo, gi, go, f, s, w2f, track, tz, rows, rowt):
        # adjoint of (conv.2): ck_in = W^2/f^2 sum_a (ck' + ct')[p-a+s, ...], ct_in likewise
        # from ct' alone; gathered (each valid input entry written once), separable as forward.
        hi_, wi_, rhi, rwi = gi[0], gi[1], gi[2], gi[3]
        ho_, wo_, rho, rwo = go[0], go[1], go[2], go[3]
        both = track and not tz
        for dh in range(-rhi, rhi + 1):
            for dw in range(-rwi, rwi + 1):
                bi = oi + _plane(dh, dw, rhi, rwi) * hi_ * wi_
                w0, w1 = max(0, -dw), min(wi_, wi_ - dw)
                h0, h1 = max(0, -dh), min(hi_, hi_ - dh)
                if abs(dh) > rho or abs(dw) > rwo:
                    for h in range(h0, h1):
                        dst = bi + h * wi_
                        for w in range(w0, w1):
                            ck[np.uint64(dst + w)] = 0
                            if both:
                                ct[np.uint64(dst + w)] = 0
                    continue
                bo = oo + _plane(dh, dw, rho, rwo) * ho_ * wo_
                r0, r1 = max(0, -dh), min(ho_, ho_ - dh)  # output rows that hold entries
                for hh in range(r0, r1):
                    rr = hh * wi_
                    for w in range(w0, w1):
                        rows[np.uint64(rr + w)] = 0
                        rowt[np.uint64(rr + w)] = 0
                    for b in range(f):
                        src = bo + hh * wo_ - b + s
                        lo, hi = max(w0, b - s), min(w1, wo_ + b - s)
                        if track:
                            for w in range(lo, hi):
                                rows[np.uint64(rr + w)] += ck[np.uint64(src + w)] \
                                    + ct[np.uint64(src + w)]
                                rowt[np.uint64(rr + w)] += ct[np.uint64(src + w)]
                        else:
                            for w in range(lo, hi):
                                rows[np.uint64(rr + w)] += ck[np.uint64(src + w)]
                for h in range(h0, h1):
                    dst = bi + h * wi_
                    for w in range(w0, w1):
                        ck[np.uint64(dst + w)] = 0
                        if both:
                            ct[np.uint64(dst + w)] = 0
                    for a in range(f):
                        hh = h - a + s
                        if hh < r0 or hh >= r1:
                            continue
                        rr = hh * wi_
                        for w in range(w0, w1):
                            ck[np.uint64(dst + w)] += rows[np.uint64(rr + w)]
                        if both:
                            for w in range(w0, w1):
                                ct[np.uint64(dst + w)] += rowt[np.uint64(rr + w)]
                    for w in range(w0, w1):
                        ck[np.uint64(dst + w)] *= w2f
                    if both:
                        for w in range(w0, w1):
                            ct[np.uint64(dst + w)] *= w2f

    # ------------------------------------------------------------------------- activation
    @njit(inline="always", **opts)
    def _act_row_fwd(fam, p, k, t, ri, ro, va, vb, v1, v2, w0, w1):
        for w in range(w0, w1):
            tt, tdot, aux = _point(fam, p, k[np.uint64(ri + w)], va[np.uint64(v1 + w)],
                                   vb[np.uint64(v2 + w)])
            k[np.uint64(ro + w)] = tt
            t[np.uint64(ro + w)] = tdot

    @njit(**opts)
    def act_fwd(k, t, oi, oo, g, fam, p, va, vb, vo, track, tz):
        # K' = T(K[p, q], v_a[p], v_b[q]),  Θ' = Tdot Θ                          eq. (conv.3)
        h_, w_, rh, rw = g[0], g[1], g[2], g[3]
        hw = h_ * w_
        for dh in range(-rh, rh + 1):
            for dw in range(-rw, rw + 1):
                pl = _plane(dh, dw, rh, rw) * hw
                w0, w1 = max(0, -dw), min(w_, w_ - dw)
                for h in range(max(0, -dh), min(h_, h_ - dh)):
                    ri, ro = oi + pl + h * w_, oo + pl + h * w_
                    v1 = vo + h * w_
                    v2 = vo + (h + dh) * w_ + dw
                    # the family as a constant, so that its branches fold and the row vectorizes
                    if fam == _act.ABRELU:
                        _act_row_fwd(_act.ABRELU, p, k, t, ri, ro, va, vb, v1, v2, w0, w1)
                    elif fam == _act.ERF:
                        _act_row_fwd(_act.ERF, p, k, t, ri, ro, va, vb, v1, v2, w0, w1)
                    else:
                        _act_row_fwd(_act.GELU, p, k, t, ri, ro, va, vb, v1, v2, w0, w1)
                    if track:
                        if tz:
                            for w in range(w0, w1):
                                t[np.uint64(ro + w)] = 0
                        else:
                            for w in range(w0, w1):
                                t[np.uint64(ro + w)] *= t[np.uint64(ri + w)]

    @njit(inline="always", **opts)
    def _act_row_bwd(fam, theta, p, k, t, ck, ct, ri, ro, va, vb, v1, v2, n, tol, rb):
        # One output array (four values per entry, interleaved): with several, LLVM would need
        # more run-time alias checks than it allows and would leave the loop scalar (~4x).
        for w in range(n):
            kk, x1, x2 = k[np.uint64(ri + w)], va[np.uint64(v1 + w)], vb[np.uint64(v2 + w)]
            tt, tdot, aux = _point(fam, p, kk, x1, x2)
            dtdot, a1t, a1d, a2t, a2d = _partials(fam, p, kk, x1, x2, tdot, aux, tol)
            gg = ck[np.uint64(ro + w)]
            e = np.uint64(4 * w)
            if theta:
                hh = ct[np.uint64(ro + w)]
                hn = hh * t[np.uint64(ri + w)]
                rb[e] = gg * tdot + hn * dtdot
                rb[e + 1] = hh * tdot
                rb[e + 2] = gg * a1t + hn * a1d
                rb[e + 3] = gg * a2t + hn * a2d
            else:
                rb[e] = gg * tdot
                rb[e + 1] = tdot - tdot
                rb[e + 2] = gg * a1t
                rb[e + 3] = gg * a2t

    @njit(**opts)
    def act_bwd(k, t, ck, ct, oi, oo, g, fam, p, va, vb, vo, track, tz, tol, sa, sb, rb):
        # adjoint of (conv.3), eq. (conv.6): writes ck_in (and ct_in); sa[p], sb[q] receive the
        # raw variance sums A_1, A_2 (the caller scales them by r(v)). ``rb``: 4 W scratch.
        h_, w_, rh, rw = g[0], g[1], g[2], g[3]
        hw = h_ * w_
        for q in range(hw):
            sa[q] = 0
            sb[q] = 0
        theta = track and not tz
        for dh in range(-rh, rh + 1):
            for dw in range(-rw, rw + 1):
                pl = _plane(dh, dw, rh, rw) * hw
                w0, w1 = max(0, -dw), min(w_, w_ - dw)
                n = w1 - w0
                for h in range(max(0, -dh), min(h_, h_ - dh)):
                    ri, ro = oi + pl + h * w_ + w0, oo + pl + h * w_ + w0
                    r1 = h * w_ + w0
                    r2 = (h + dh) * w_ + dw + w0
                    # family and NTK flag as constants, so that their branches fold
                    if fam == _act.ABRELU:
                        if theta:
                            _act_row_bwd(_act.ABRELU, True, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                        else:
                            _act_row_bwd(_act.ABRELU, False, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                    elif fam == _act.ERF:
                        if theta:
                            _act_row_bwd(_act.ERF, True, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                        else:
                            _act_row_bwd(_act.ERF, False, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                    else:
                        if theta:
                            _act_row_bwd(_act.GELU, True, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                        else:
                            _act_row_bwd(_act.GELU, False, p, k, t, ck, ct, ri, ro, va, vb,
                                         vo + r1, vo + r2, n, tol, rb)
                    for w in range(n):
                        ck[np.uint64(ri + w)] = rb[np.uint64(4 * w)]
                    if theta:
                        for w in range(n):
                            ct[np.uint64(ri + w)] = rb[np.uint64(4 * w + 1)]
                    for w in range(n):
                        sa[np.uint64(r1 + w)] += rb[np.uint64(4 * w + 2)]
                    for w in range(n):
                        sb[np.uint64(r2 + w)] += rb[np.uint64(4 * w + 3)]

    # ------------------------------------------------------------------------- average pool
    @njit(**opts)
    def pool_walk(k, t, oi, oo, gi, go, win, scale, track, acc, acct, adjoint):
        # K'[P, P+D] = 1/win^4 sum_{a, a'} K[win P + a, win (P+D) + a']              eq. (conv.4)
        # Forward: gathered per output row into ``acc``. Adjoint (``k``, ``t`` then hold the
        # cotangents): each output entry's cotangent / win^4 is scattered to the win^4 input
        # entries it averages; every input entry belongs to at most one output entry, and those
        # no output reads (rows cut by the pooling, offsets beyond the band) stay 0.
        hi_, wi_, rhi, rwi = gi[0], gi[1], gi[2], gi[3]
        ho_, wo_, rho, rwo = go[0], go[1], go[2], go[3]
        for dh in range(-rho, rho + 1):
            for dw in range(-rwo, rwo + 1):
                bo = oo + _plane(dh, dw, rho, rwo) * ho_ * wo_
                q0, q1 = max(0, -dw), min(wo_, wo_ - dw)
                for ph in range(max(0, -dh), min(ho_, ho_ - dh)):
                    dst = bo + ph * wo_
                    for q in range(q0, q1):
                        acc[q] = 0
                        acct[q] = 0
                    for a in range(win):
                        for a2 in range(win):
                            eh = win * dh + a2 - a
                            if abs(eh) > rhi:
                                continue
                            hin = win * ph + a
                            for b in range(win):
                                for b2 in range(win):
                                    ew = win * dw + b2 - b
                                    if abs(ew) > rwi:
                                        continue
                                    src = oi + _plane(eh, ew, rhi, rwi) * hi_ * wi_ \
                                        + hin * wi_ + b
                                    if adjoint:
                                        for q in range(q0, q1):
                                            k[np.uint64(src + win * q)] = \
                                                k[np.uint64(dst + q)] * scale
                                        if track:
                                            for q in range(q0, q1):
                                                t[np.uint64(src + win * q)] = \
                                                    t[np.uint64(dst + q)] * scale
                                    else:
                                        for q in range(q0, q1):
                                            acc[np.uint64(q)] += k[np.uint64(src + win * q)]
                                        if track:
                                            for q in range(q0, q1):
                                                acct[np.uint64(q)] += \
                                                    t[np.uint64(src + win * q)]
                    if not adjoint:
                        for q in range(q0, q1):
                            k[np.uint64(dst + q)] = acc[np.uint64(q)] * scale
                            if track:
                                t[np.uint64(dst + q)] = acct[np.uint64(q)] * scale

    # ------------------------------------------------------------------------- readout
    @njit(**opts)
    def read_fwd(k, o, g, gap):
        # Flatten: mean_p K[p, p]; GlobalAvgPool: mean_{p, q} K[p, q]                 eq. (conv.5)
        h_, w_, rh, rw = g[0], g[1], g[2], g[3]
        hw = h_ * w_
        total = 0.0
        if gap:
            for e in range((2 * rh + 1) * (2 * rw + 1) * hw):
                total += k[o + e]
            return total / (hw * hw)
        c = o + _plane(0, 0, rh, rw) * hw
        for e in range(hw):
            total += k[c + e]
        return total / hw

    @njit(**opts)
    def read_bwd(ck, o, g, gap, cot):
        h_, w_, rh, rw = g[0], g[1], g[2], g[3]
        hw = h_ * w_
        if gap:
            v = cot / (hw * hw)
            for dh in range(-rh, rh + 1):
                for dw in range(-rw, rw + 1):
                    base = o + _plane(dh, dw, rh, rw) * hw
                    for h in range(max(0, -dh), min(h_, h_ - dh)):
                        for w in range(max(0, -dw), min(w_, w_ - dw)):
                            ck[base + h * w_ + w] = v
        else:
            c = o + _plane(0, 0, rh, rw) * hw
            for e in range(hw):
                ck[c + e] = cot / hw

    # ------------------------------------------------------------------------- one pair
    @njit(**opts)
    def pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, xa, xb, va, vb, selfpair, track, k, t,
                 acc, acct):
        """Run the program on one pair; returns ``(nngp, ntk)`` of the readout. With
        ``selfpair`` (``xb is xa``) the variances are read off the centre plane and written
        into ``va``."""
        g0 = geo[0]
        input_fwd(xa, xb, k, off[0], g0[0], g0[1], g0[2], g0[3], inv_c)
        nops = ops.shape[0]
        for n in range(nops - 1):
            kind = ops[n, 0]
            if kind == CONV:
                conv_fwd(k, t, off[n], off[n + 1], geo[n], geo[n + 1], ops[n, 1], ops[n, 2],
                         fpar[n, 0], fpar[n, 1], track, tz[n], acc, acct)
            elif kind == ACT:
                g = geo[n]
                vo = voff[ops[n, 2]]
                if selfpair:
                    c = off[n] + _plane(0, 0, g[2], g[3]) * g[0] * g[1]
                    for e in range(g[0] * g[1]):
                        va[vo + e] = k[c + e]
                    act_fwd(k, t, off[n], off[n + 1], g, ops[n, 1], fpar[n], va, va, vo, track,
                            tz[n])
                else:
                    act_fwd(k, t, off[n], off[n + 1], g, ops[n, 1], fpar[n], va, vb, vo, track,
                            tz[n])
            else:
                pool_walk(k, t, off[n], off[n + 1], geo[n], geo[n + 1], ops[n, 1], fpar[n, 0],
                          track, acc, acct, False)
        last = nops - 1
        gap = ops[last, 1] == 1
        kv = read_fwd(k, off[last], geo[last], gap)
        tv = read_fwd(t, off[last], geo[last], gap) if track else 0.0
        return kv, tv

    @njit(**opts)
    def pair_bwd(ops, geo, fpar, off, voff, tz, inv_c, xa, xb, va, vb, selfpair, track, k, t,
                 ck, ct, acc, acct, sa, sb, g_k, g_t, cva, cvb, ga, gb, want_a, want_b, tol):
        """Adjoint of :func:`pair_fwd` (which must have run on the same buffers). Cross pairs
        add the variance cotangents to ``cva``/``cvb``; a self pair reads the cotangent of its
        variances from ``cva`` and folds them into its centre planes (eq. (conv.7))."""
        nops = ops.shape[0]
        last = nops - 1
        gap = ops[last, 1] == 1
        read_bwd(ck, off[last], geo[last], gap, g_k)
        if track:
            read_bwd(ct, off[last], geo[last], gap, g_t)
        for n in range(nops - 2, -1, -1):
            kind = ops[n, 0]
            if kind == CONV:
                conv_bwd(ck, ct, off[n], off[n + 1], geo[n], geo[n + 1], ops[n, 1], ops[n, 2],
                         fpar[n, 0], track, tz[n], acc, acct)
            elif kind == ACT:
                g = geo[n]
                hw = g[0] * g[1]
                vo = voff[ops[n, 2]]
                fam, p = ops[n, 1], fpar[n]
                if selfpair:
                    act_bwd(k, t, ck, ct, off[n], off[n + 1], g, fam, p, va, va, vo, track, tz[n],
                            tol, sa, sb, acc)
                    c = off[n] + _plane(0, 0, g[2], g[3]) * hw
                    for e in range(hw):
                        ck[c + e] += (sa[e] + sb[e]) * _var_scale(fam, p, va[vo + e]) \
                            + cva[vo + e]
                else:
                    act_bwd(k, t, ck, ct, off[n], off[n + 1], g, fam, p, va, vb, vo, track, tz[n],
                            tol, sa, sb, acc)
                    if want_a:
                        for e in range(hw):
                            cva[vo + e] += sa[e] * _var_scale(fam, p, va[vo + e])
                    if want_b:
                        for e in range(hw):
                            cvb[vo + e] += sb[e] * _var_scale(fam, p, vb[vo + e])
            else:
                pool_walk(ck, ct, off[n], off[n + 1], geo[n], geo[n + 1], ops[n, 1], fpar[n, 0],
                          track, acc, acct, True)
        g0 = geo[0]
        if selfpair:
            input_bwd(ck, off[0], g0[0], g0[1], g0[2], g0[3], xa, xa, ga, ga, inv_c, True, True)
        else:
            input_bwd(ck, off[0], g0[0], g0[1], g0[2], g0[3], xa, xb, ga, gb, inv_c, want_a,
                      want_b)

    # ------------------------------------------------------------------------- drivers
    @njit(inline="always", **opts)
    def _scratch(off, geo, x, track, grad):
        total = off[off.shape[0] - 1]
        hwmax = 1
        for n in range(geo.shape[0]):
            hwmax = max(hwmax, geo[n, 0] * geo[n, 1], 4 * geo[n, 1])  # rows; act_bwd's 4 W
        k = np.zeros(total, x.dtype)
        t = np.zeros(total, x.dtype)  # the activations park Tdot here even for the NNGP
        ck = np.zeros(total if grad else 1, x.dtype)
        ct = np.zeros(total if grad and track else 1, x.dtype)
        return (k, t, ck, ct, np.zeros(hwmax, x.dtype), np.zeros(hwmax, x.dtype),
                np.zeros(hwmax, x.dtype), np.zeros(hwmax, x.dtype))

    @njit(parallel=True, **opts)
    def cross_fwd(ops, geo, fpar, off, voff, tz, inv_c, x1, x2, v1, v2, pi, pj, track, nchunks,
                  out_k, out_t):
        """``out[m] = readout(pair (pi[m], pj[m]))`` with the variances ``v1, v2``."""
        npairs = pi.shape[0]
        for c in prange(nchunks):
            k, t, _, _, acc, acct, _, _ = _scratch(off, geo, x1, track, False)
            for m in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
                i, j = pi[m], pj[m]
                kv, tv = pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, x1[i], x2[j], v1[i], v2[j],
                                  False, track, k, t, acc, acct)
                out_k[m] = kv
                out_t[m] = tv

    @njit(parallel=True, **opts)
    def self_fwd(ops, geo, fpar, off, voff, tz, inv_c, x, v, track, nchunks, out_k, out_t):
        """Self pairs ``(i, i)``: their readout and, into ``v[i]``, their variances."""
        n = x.shape[0]
        for c in prange(nchunks):
            k, t, _, _, acc, acct, _, _ = _scratch(off, geo, x, track, False)
            for i in range(c * n // nchunks, (c + 1) * n // nchunks):
                kv, tv = pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, x[i], x[i], v[i], v[i],
                                  True, track, k, t, acc, acct)
                out_k[i] = kv
                out_t[i] = tv

    @njit(parallel=True, **opts)
    def cross_bwd(ops, geo, fpar, off, voff, tz, inv_c, x1, x2, v1, v2, pi, pj, g_k, g_t, track,
                  want1, want2, tol, nchunks, kept, kbuf, tbuf, cv1, cv2, gx1, gx2):
        """Pull the cotangents ``g_k[m], g_t[m]`` of cross pairs back; chunk ``c`` adds into
        ``cv1[c], cv2[c]`` (variances) and ``gx1[c], gx2[c]`` (images) — the caller sums them.
        An unwanted side gets arrays with one image, which are not touched. With ``kept`` the
        forward buffers of pair ``m`` are ``kbuf[m], tbuf[m]`` (:func:`cross_fwd_keep`);
        otherwise each pair's forward is recomputed first."""
        npairs = pi.shape[0]
        for c in prange(nchunks):
            k, t, ck, ct, acc, acct, sa, sb = _scratch(off, geo, x1, track, True)
            for m in range(c * npairs // nchunks, (c + 1) * npairs // nchunks):
                if g_k[m] == 0 and g_t[m] == 0:
                    continue
                i, j = pi[m], pj[m]
                ia = i if want1 else 0
                jb = j if want2 else 0
                if kept:
                    km, tm = kbuf[m], tbuf[m]
                else:
                    km, tm = k, t
                    pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, x1[i], x2[j], v1[i], v2[j],
                             False, track, km, tm, acc, acct)
                pair_bwd(ops, geo, fpar, off, voff, tz, inv_c, x1[i], x2[j], v1[i], v2[j], False,
                         track, km, tm, ck, ct, acc, acct, sa, sb, g_k[m], g_t[m], cv1[c, ia],
                         cv2[c, jb], gx1[c, ia], gx2[c, jb], want1, want2, tol)

    @njit(parallel=True, **opts)
    def self_bwd(ops, geo, fpar, off, voff, tz, inv_c, x, v, g_k, g_t, cv, track, tol, nchunks, gx):
        """Self pairs: cotangents ``g_k[i], g_t[i]`` of their readout and ``cv[i]`` of their
        variances, pulled back into ``gx[i]``."""
        n = x.shape[0]
        for c in prange(nchunks):
            k, t, ck, ct, acc, acct, sa, sb = _scratch(off, geo, x, track, True)
            vi = np.empty(v.shape[1], x.dtype)
            for i in range(c * n // nchunks, (c + 1) * n // nchunks):
                pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, x[i], x[i], vi, vi, True, track,
                         k, t, acc, acct)
                pair_bwd(ops, geo, fpar, off, voff, tz, inv_c, x[i], x[i], vi, vi, True, track,
                         k, t, ck, ct, acc, acct, sa, sb, g_k[i], g_t[i], cv[i], cv[i], gx[i],
                         gx[i], True, True, tol)

    @njit(parallel=True, **opts)
    def cross_fwd_keep(ops, geo, fpar, off, voff, tz, inv_c, x1, x2, v1, v2, pi, pj, track,
                       kbuf, tbuf, out_k, out_t):
        """:func:`cross_fwd` with pair ``m``'s stage buffers kept in ``kbuf[m], tbuf[m]``
        (zeros where never written, as the layout requires)."""
        npairs = pi.shape[0]
        for m in prange(npairs):
            _, _, _, _, acc, acct, _, _ = _scratch(off[:1], geo, x1, False, False)
            kv, tv = pair_fwd(ops, geo, fpar, off, voff, tz, inv_c, x1[pi[m]], x2[pj[m]],
                              v1[pi[m]], v2[pj[m]], False, track, kbuf[m], tbuf[m], acc, acct)
            out_k[m] = kv
            out_t[m] = tv

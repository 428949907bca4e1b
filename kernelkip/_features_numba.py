"""Numba loops for the random-feature ConvNets (no policy: ``features`` chooses and checks).

``im2col``/``col2im`` move patches between an image batch ``(n, H, W, C)`` and the GEMM operand
``(n * H' * W', f * f * C)`` (window-major, then channel), in parallel over output rows; taps
that fall on the zero padding are written as 0 (im2col) or dropped (col2im). ``relu_pool``
fuses ``a min(z, 0) + b max(z, 0)``, the slope mask and a ``w x w`` average pool. The NumPy
versions in ``kernelkip.features`` are the reference these are tested against.
"""
import numpy as np

from ._deps import get_numba

__all__ = ["im2col", "col2im", "act_pool", "wino_in", "wino_out", "conv_direct",
           "pool_act_vjp", "available"]

_numba = get_numba()
available = _numba is not None

if _numba is None:
    im2col = col2im = act_pool = wino_in = wino_out = conv_direct = pool_act_vjp = None
else:
    njit, prange = _numba.njit, _numba.prange
    opts = dict(cache=True, nogil=True, fastmath=False, error_model="numpy")

    @njit(parallel=True, **opts)
    def im2col(x, f, pad, out):
        # out: (n, ho, wo, f * f, c)
        n, h, w, c = x.shape
        ho, wo = out.shape[1], out.shape[2]
        for r in prange(n * ho):
            i, y = r // ho, r % ho
            for xo in range(wo):
                for dy in range(f):
                    sy = y + dy - pad
                    for dx in range(f):
                        sx = xo + dx - pad
                        t = dy * f + dx
                        if 0 <= sy < h and 0 <= sx < w:
                            for ch in range(c):
                                out[i, y, xo, t, ch] = x[i, sy, sx, ch]
                        else:
                            for ch in range(c):
                                out[i, y, xo, t, ch] = 0

    @njit(parallel=True, **opts)
    def col2im(cols, f, pad, g):
        # cols: (n, ho, wo, f * f, c); g: (n, h, w, c), overwritten; parallel over images, so
        # the scatter-adds of one image stay in one thread
        n, h, w, c = g.shape
        ho, wo = cols.shape[1], cols.shape[2]
        for i in prange(n):
            g[i] = 0
            for y in range(ho):
                for xo in range(wo):
                    for dy in range(f):
                        sy = y + dy - pad
                        if sy < 0 or sy >= h:
                            continue
                        for dx in range(f):
                            sx = xo + dx - pad
                            if sx < 0 or sx >= w:
                                continue
                            t = dy * f + dx
                            for ch in range(c):
                                g[i, sy, sx, ch] += cols[i, y, xo, t, ch]

    @njit(parallel=True, **opts)
    def act_pool(z, a, b, window, out, mask):
        # out[i, y, x, ch] = mean over the window of phi(z); mask = z > 0 (all of z's rows)
        n, h, w, c = z.shape
        ho, wo = out.shape[1], out.shape[2]
        scale = 1.0 / (window * window)
        for r in prange(n * h):
            i, y = r // h, r % h
            for xx in range(w):
                for ch in range(c):
                    mask[i, y, xx, ch] = z[i, y, xx, ch] > 0
        for r in prange(n * ho):
            i, y = r // ho, r % ho
            for xo in range(wo):
                for ch in range(c):
                    out[i, y, xo, ch] = 0
                for py in range(window):
                    for px in range(window):
                        for ch in range(c):
                            v = z[i, y * window + py, xo * window + px, ch]
                            out[i, y, xo, ch] += b * v if v > 0 else a * v
                for ch in range(c):
                    out[i, y, xo, ch] *= scale

    # ------------------------------------------------------------------ Winograd F(2x2, 3x3)
    # docs/math/rfad.md, eq. (rf.10): a 3x3 SAME conv as 16 GEMMs over 2x2 output tiles.
    # xp is the input padded by 1 on top/left and enough at the bottom/right that every 4x4
    # input tile exists; v[k, tile, c] = (B^T d B)[k] per channel; m[k, tile, o] the GEMM
    # products; the output transform A^T m A adds the bias and writes the valid positions.

    @njit(parallel=True, **opts)
    def wino_in(xp, th, tw, v):
        n, hp, wp, c = xp.shape
        nt = n * th * tw
        xf, vf = xp.ravel(), v.reshape(-1)
        u = np.uint64
        for r in prange(n * th):
            i, ty = r // th, r % th
            for tx in range(tw):
                t = (i * th + ty) * tw + tx
                s0 = ((i * hp + 2 * ty) * wp + 2 * tx) * c
                s1, s2, s3 = s0 + wp * c, s0 + 2 * wp * c, s0 + 3 * wp * c
                for ch in range(c):
                    d00, d01 = xf[u(s0 + ch)], xf[u(s0 + c + ch)]
                    d02, d03 = xf[u(s0 + 2 * c + ch)], xf[u(s0 + 3 * c + ch)]
                    d10, d11 = xf[u(s1 + ch)], xf[u(s1 + c + ch)]
                    d12, d13 = xf[u(s1 + 2 * c + ch)], xf[u(s1 + 3 * c + ch)]
                    d20, d21 = xf[u(s2 + ch)], xf[u(s2 + c + ch)]
                    d22, d23 = xf[u(s2 + 2 * c + ch)], xf[u(s2 + 3 * c + ch)]
                    d30, d31 = xf[u(s3 + ch)], xf[u(s3 + c + ch)]
                    d32, d33 = xf[u(s3 + 2 * c + ch)], xf[u(s3 + 3 * c + ch)]
                    # rows: B^T d  (B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]])
                    a0, a1, a2, a3 = d00 - d20, d01 - d21, d02 - d22, d03 - d23
                    b0, b1, b2, b3 = d10 + d20, d11 + d21, d12 + d22, d13 + d23
                    c0, c1, c2, c3 = d20 - d10, d21 - d11, d22 - d12, d23 - d13
                    e0, e1, e2, e3 = d10 - d30, d11 - d31, d12 - d32, d13 - d33
                    # columns: (B^T d) B; v[k, t, ch] at (k nt + t) c + ch
                    o = t * c + ch
                    step = nt * c
                    vf[u(o)], vf[u(o + step)] = a0 - a2, a1 + a2
                    vf[u(o + 2 * step)], vf[u(o + 3 * step)] = a2 - a1, a1 - a3
                    vf[u(o + 4 * step)], vf[u(o + 5 * step)] = b0 - b2, b1 + b2
                    vf[u(o + 6 * step)], vf[u(o + 7 * step)] = b2 - b1, b1 - b3
                    vf[u(o + 8 * step)], vf[u(o + 9 * step)] = c0 - c2, c1 + c2
                    vf[u(o + 10 * step)], vf[u(o + 11 * step)] = c2 - c1, c1 - c3
                    vf[u(o + 12 * step)], vf[u(o + 13 * step)] = e0 - e2, e1 + e2
                    vf[u(o + 14 * step)], vf[u(o + 15 * step)] = e2 - e1, e1 - e3

    @njit(parallel=True, **opts)
    def wino_out(m, bias, th, tw, out):
        n, h, w, c = out.shape
        nt = n * th * tw
        mf, of = m.reshape(-1), out.reshape(-1)
        u = np.uint64
        step = nt * c
        for r in prange(n * th):
            i, ty = r // th, r % th
            y0 = 2 * ty
            for tx in range(tw):
                t = (i * th + ty) * tw + tx
                x0 = 2 * tx
                right, below = x0 + 1 < w, y0 + 1 < h
                d00 = ((i * h + y0) * w + x0) * c
                d01, d10 = d00 + c, d00 + w * c
                d11 = d10 + c
                for ch in range(c):
                    # A^T m A with A^T = [[1,1,1,0],[0,1,-1,-1]]
                    o = t * c + ch
                    m0, m1, m2, m3 = mf[u(o)], mf[u(o + step)], mf[u(o + 2 * step)], \
                        mf[u(o + 3 * step)]
                    m4, m5, m6, m7 = mf[u(o + 4 * step)], mf[u(o + 5 * step)], \
                        mf[u(o + 6 * step)], mf[u(o + 7 * step)]
                    m8, m9, m10, m11 = mf[u(o + 8 * step)], mf[u(o + 9 * step)], \
                        mf[u(o + 10 * step)], mf[u(o + 11 * step)]
                    m12, m13, m14, m15 = mf[u(o + 12 * step)], mf[u(o + 13 * step)], \
                        mf[u(o + 14 * step)], mf[u(o + 15 * step)]
                    s0, s1, s2, s3 = m0 + m4 + m8, m1 + m5 + m9, m2 + m6 + m10, m3 + m7 + m11
                    q0, q1 = m4 - m8 - m12, m5 - m9 - m13
                    q2, q3 = m6 - m10 - m14, m7 - m11 - m15
                    b = bias[u(ch)]
                    of[u(d00 + ch)] = s0 + s1 + s2 + b
                    if right:
                        of[u(d01 + ch)] = s1 - s2 - s3 + b
                    if below:
                        of[u(d10 + ch)] = q0 + q1 + q2 + b
                    if right and below:
                        of[u(d11 + ch)] = q1 - q2 - q3 + b

    @njit(parallel=True, **opts)
    def conv_direct(xp, wm, bias, f, out):
        # out[i, y, x, o] = bias[o] + sum_{dy, dx, c} xp[i, y + dy, x + dx, c] wm[t c, o]:
        # for few input channels, where a GEMM's inner dimension f*f*c is too short for BLAS.
        # Flat arrays and unsigned indices let LLVM vectorize the loop over o; four output
        # positions share each load of a weight row.
        n, h, w, co = out.shape
        hp, wp, c = xp.shape[1], xp.shape[2], xp.shape[3]
        xf, wf, of = xp.ravel(), wm.ravel(), out.reshape(-1)
        u = np.uint64
        for r in prange(n * h):
            i, y = r // h, r % h
            acc = np.empty(4 * co, dtype=out.dtype)
            for x0 in range(0, w, 4):
                nx = min(4, w - x0)
                for j in range(4):
                    for o in range(co):
                        acc[u(j * co + o)] = bias[u(o)]
                for dy in range(f):
                    for dx in range(f):
                        src = ((i * hp + y + dy) * wp + x0 + dx) * c
                        for ch in range(c):
                            base = ((dy * f + dx) * c + ch) * co
                            # positions past the row's end read padding or the next row: their
                            # sums are computed but never stored
                            x_0 = xf[u(src + ch)]
                            x_1 = xf[u(src + min(1, nx - 1) * c + ch)]
                            x_2 = xf[u(src + min(2, nx - 1) * c + ch)]
                            x_3 = xf[u(src + min(3, nx - 1) * c + ch)]
                            for o in range(co):
                                wv = wf[u(base + o)]
                                acc[u(o)] += x_0 * wv
                                acc[u(co + o)] += x_1 * wv
                                acc[u(2 * co + o)] += x_2 * wv
                                acc[u(3 * co + o)] += x_3 * wv
                for j in range(nx):
                    dst = ((i * h + y) * w + x0 + j) * co
                    for o in range(co):
                        of[u(dst + o)] = acc[u(j * co + o)]

    @njit(parallel=True, **opts)
    def pool_act_vjp(gp, mask, a, b, window, gz):
        # adjoint of act_pool: gz[p] = slope(p) * gp[block(p)] / window^2, 0 outside the blocks
        n, h, w, c = gz.shape
        ho, wo = gp.shape[1], gp.shape[2]
        gpf, mf, gzf = gp.reshape(-1), mask.reshape(-1), gz.reshape(-1)
        u = np.uint64
        scale = 1.0 / (window * window)
        sa, sb = a * scale, b * scale
        for r in prange(n * h):
            i, y = r // h, r % h
            yo = y // window
            row = (i * h + y) * w * c
            for x in range(w):
                xo = x // window
                dst = row + x * c
                if yo < ho and xo < wo:
                    src = ((i * ho + yo) * wo + xo) * c
                    for ch in range(c):
                        g = gpf[u(src + ch)]
                        gzf[u(dst + ch)] = sb * g if mf[u(dst + ch)] else sa * g
                else:
                    for ch in range(c):
                        gzf[u(dst + ch)] = 0

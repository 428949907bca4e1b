"""Numba loops for the random-feature ConvNets (no policy: ``features`` chooses and checks).

``im2col``/``col2im`` move patches between an image batch ``(n, H, W, C)`` and the GEMM operand
``(n * H' * W', f * f * C)`` (window-major, then channel), in parallel over output rows; taps
that fall on the zero padding are written as 0 (im2col) or dropped (col2im). ``relu_pool``
fuses ``a min(z, 0) + b max(z, 0)``, the slope mask and a ``w x w`` average pool. The NumPy
versions in ``kernelkip.features`` are the reference these are tested against.
"""
from ._deps import get_numba

__all__ = ["im2col", "col2im", "act_pool", "available"]

_numba = get_numba()
available = _numba is not None

if _numba is None:
    im2col = col2im = act_pool = None
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

"""Convolutional kernels: the spatial part of an architecture, from NHWC images to the
fully-connected state after ``Flatten``/``GlobalAvgPool``, and its pullback.

The spatial layers (``Conv``, activations, ``AvgPool``, then ``Flatten`` or ``GlobalAvgPool``)
compile into a small program that ``_conv_numba`` runs pair by pair of images, keeping for each
layer only the band of spatial offsets the readout needs (:func:`plan`, ``docs/math/conv.md``).
The result is the :class:`KernelState` a ``Dense`` readout expects; the layers after the
readout use the fully-connected rules. Peak memory is a few stage buffers per thread plus the
``(n1, n2)`` outputs: it does not grow with the number of pairs or with ``(H W)^2``.
"""
from dataclasses import dataclass

import numpy as np

from ..arch import ABRelu, AvgPool, Conv, Erf, Flatten, Gelu, GlobalAvgPool
from . import _activations_numba, _conv_numba
from .activations import coincidence_tol, loop_params
from .state import KernelState

__all__ = ["SPATIAL", "READOUT", "Program", "plan", "split", "conv_input_fwd", "conv_input_vjp",
           "RowStream"]

READOUT = (Flatten, GlobalAvgPool)
SPATIAL = (Conv, AvgPool) + READOUT
_ACTIVATIONS = (ABRelu, Erf, Gelu)

DEFAULT_BLOCK = 4096  # pairs per call into the loops: the progress bar's granularity


def split(arch):
    """``(spatial, rest)``: the layers up to and including the readout, and those after it.
    ``spatial`` is empty for a fully-connected architecture."""
    layers = tuple(arch)
    if not any(isinstance(layer, SPATIAL) for layer in layers):
        return (), layers
    for n, layer in enumerate(layers):
        if isinstance(layer, READOUT):
            spatial, rest = layers[:n + 1], layers[n + 1:]
            break
    else:
        raise ValueError("a convolutional architecture needs Flatten() or GlobalAvgPool() "
                         "before its Dense readout")
    for layer in spatial:
        if not isinstance(layer, SPATIAL + _ACTIVATIONS):
            raise ValueError(f"{type(layer).__name__} cannot act on images; put Flatten() or "
                             f"GlobalAvgPool() before it")
    for layer in rest:
        if isinstance(layer, SPATIAL):
            raise ValueError(f"{type(layer).__name__} after the readout "
                             f"({type(spatial[-1]).__name__}) has no images to act on")
    return spatial, rest


@dataclass(frozen=True)
class Program:
    """A compiled spatial architecture for one image shape (see ``_conv_numba``).

    Attributes
    ----------
    ops, geo, off, voff, tz : int arrays
        Op codes, stage geometry ``(H, W, rh, rw)``, stage offsets in the band buffer,
        offsets of each activation's variances, whether a stage's NTK is identically zero.
    layers : tuple
        The spatial layers.
    image_shape : tuple
        ``(H, W, C)``.
    """

    ops: np.ndarray
    geo: np.ndarray
    off: np.ndarray
    voff: np.ndarray
    tz: np.ndarray
    layers: tuple
    image_shape: tuple

    @property
    def band_size(self):
        """Entries of one band buffer (all stages of one pair)."""
        return int(self.off[-1])

    @property
    def n_var(self):
        """Variances kept per image (one per position at every activation)."""
        return int(self.voff[-1])

    def fpar(self, dtype):
        """Float parameters of each op in ``dtype``."""
        p = np.zeros((len(self.ops), 22), dtype=dtype)
        for n, layer in enumerate(self.layers):
            h, w = self.geo[n, :2]
            if isinstance(layer, Conv):
                p[n, :2] = layer.W_std ** 2 / layer.filter ** 2, layer.b_std ** 2
            elif isinstance(layer, AvgPool):
                p[n, 0] = 1 / layer.window ** 4
            elif isinstance(layer, Flatten):
                p[n, 0] = 1 / (h * w)
            elif isinstance(layer, GlobalAvgPool):
                p[n, 0] = 1 / (h * w) ** 2
            else:
                p[n] = _activations_numba.param_vector(loop_params(layer)[1], dtype)
        return p


def plan(layers, image_shape, band=True):
    """Compile the spatial ``layers`` for images of shape ``(H, W, C)``.

    The geometry runs forward; the radii run backward from the readout: Flatten needs offset 0
    at the top and GlobalAvgPool all offsets; a convolution or activation needs at its input
    the offsets it gives at its output; a ``w x w`` pool needs ``w r + w - 1`` for ``r``
    (``docs/math/conv.md``, eq. (conv.8)). ``band=False`` keeps all offsets everywhere (the
    full computation, for tests).
    """
    h, w, _ = image_shape
    sizes = [(h, w)]
    ops = []
    n_act = 0
    for layer in layers:
        if isinstance(layer, Conv):
            f = layer.filter
            if layer.padding == "VALID":
                h, w = h - f + 1, w - f + 1
                if min(h, w) < 1:
                    raise ValueError(f"a {f}x{f} VALID convolution does not fit the "
                                     f"{sizes[-1][0]}x{sizes[-1][1]} images it receives")
            ops.append((_conv_numba.CONV, f, f // 2 if layer.padding == "SAME" else 0, 0))
        elif isinstance(layer, AvgPool):
            if min(h, w) < layer.window:
                raise ValueError(f"AvgPool({layer.window}) does not fit the {h}x{w} images it "
                                 f"receives")
            h, w = h // layer.window, w // layer.window
            ops.append((_conv_numba.POOL, layer.window, 0, 0))
        elif isinstance(layer, READOUT):
            ops.append((_conv_numba.READ, int(isinstance(layer, GlobalAvgPool)), 0, 0))
            break
        else:
            ops.append((_conv_numba.ACT, loop_params(layer)[0], n_act, 0))
            n_act += 1
        sizes.append((h, w))
    radii = [None] * len(sizes)
    top_h, top_w = sizes[-1]
    radii[-1] = (0, 0) if ops[-1][1] == 0 else (top_h - 1, top_w - 1)
    for n in range(len(ops) - 2, -1, -1):
        (hi, wi), (ro_h, ro_w) = sizes[n], radii[n + 1]
        if ops[n][0] == _conv_numba.POOL:
            win = ops[n][1]
            radii[n] = (min(win * ro_h + win - 1, hi - 1), min(win * ro_w + win - 1, wi - 1))
        else:
            radii[n] = (ro_h, ro_w)
    if not band:
        radii = [(hh - 1, ww - 1) for hh, ww in sizes]
    geo = np.array([(hh, ww, rh, rw) for (hh, ww), (rh, rw) in zip(sizes, radii)],
                   dtype=np.int64)
    stage = [(2 * rh + 1) * (2 * rw + 1) * hh * ww for hh, ww, rh, rw in geo]
    off = np.concatenate([[0], np.cumsum(stage)]).astype(np.int64)
    var_sizes = [int(geo[n, 0] * geo[n, 1]) for n, op in enumerate(ops)
                 if op[0] == _conv_numba.ACT]
    voff = np.concatenate([[0], np.cumsum(var_sizes)]).astype(np.int64)
    tz = np.zeros(len(sizes), dtype=np.bool_)
    zero = True
    for n, op in enumerate(ops):
        tz[n] = zero
        if op[0] == _conv_numba.CONV:
            zero = False
    return Program(np.array(ops, dtype=np.int64), geo, off, voff, tz, tuple(layers),
                   tuple(image_shape))


def _threads():
    from .._deps import get_numba
    return get_numba().get_num_threads()


def _to_nchw(x):
    """NHWC -> ``(n, C*H*W)``, channel-major, as the loops read it."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)).reshape(x.shape[0], -1)


def _check_images(x1, x2):
    for name, x in (("x1", x1), ("x2", x2)):
        if x is not None and x.ndim != 4:
            raise ValueError(f"{name} has shape {x.shape}; a convolutional architecture takes "
                             f"images of shape (n, H, W, C)")


def _pairs(n1, n2, is_self, block):
    """Blocks of pair indices ``(pi, pj)``, rows first; ``i < j`` for a self-kernel."""
    rows_per = max(1, block // max(n2, 1))
    for r0 in range(0, n1, rows_per):
        rows = np.arange(r0, min(n1, r0 + rows_per))
        if is_self:
            pi = np.concatenate([np.full(n2 - i - 1, i) for i in rows]) if len(rows) else rows
            pj = np.concatenate([np.arange(i + 1, n2) for i in rows]) if len(rows) else rows
        else:
            pi, pj = np.repeat(rows, n2), np.tile(np.arange(n2), len(rows))
        if len(pi):
            yield pi.astype(np.int64), pj.astype(np.int64)


@dataclass
class _Saved:
    prog: Program
    fpar: np.ndarray
    inv_c: object
    x1: np.ndarray
    x2: np.ndarray
    v1: np.ndarray
    v2: np.ndarray
    track: bool
    block: int
    shape1: tuple
    shape2: tuple


def _args(s):
    return (s.prog.ops, s.prog.geo, s.fpar, s.prog.off, s.prog.voff, s.prog.tz, s.inv_c)


def _self_pass(s, x, track):
    n = x.shape[0]
    v = np.zeros((n, max(s.prog.n_var, 1)), dtype=x.dtype)
    out_k = np.empty(n, dtype=np.float64)
    out_t = np.empty(n, dtype=np.float64)
    _conv_numba.self_fwd(*_args(s), x, v, track, min(n, 4 * _threads()), out_k, out_t)
    return v, out_k, out_t


def _prepare(x1, x2, layers, track_ntk, block, band=True):
    """Compile the program and run each image's own pair (variances, ``cov``)."""
    _check_images(x1, x2)
    prog = plan(layers, x1.shape[1:], band=band)
    is_self = x2 is None
    dtype = x1.dtype
    x1c = _to_nchw(x1)
    x2c = x1c if is_self else _to_nchw(x2)
    s = _Saved(prog, prog.fpar(dtype), dtype.type(1 / x1.shape[-1]), x1c, x2c, None, None,
               track_ntk, int(block), x1.shape, None if is_self else x2.shape)
    s.v1, c1, t1 = _self_pass(s, x1c, track_ntk and is_self)
    if is_self:
        s.v2, c2 = s.v1, None
    else:
        s.v2, c2, _ = _self_pass(s, x2c, False)
    return s, c1, t1, c2


def conv_input_fwd(x1, x2, layers, *, track_ntk, save=True, block=DEFAULT_BLOCK, progress=None,
                   band=True):
    """Run the spatial ``layers`` on NHWC images; returns the fully-connected
    :class:`KernelState` after the readout and what :func:`conv_input_vjp` needs.

    Parameters
    ----------
    x1, x2 : ndarray of shape (n, H, W, C)
        ``x2=None`` gives a self-kernel.
    layers : tuple
        From :func:`split`.
    track_ntk : bool
    save : bool
        Keep what the pullback needs (the images and their variances).
    block : int
        Pairs per call into the loops (the progress bar advances per block).
    progress : tqdm, optional
        Advanced by the number of pairs done.
    band : bool
        ``False`` computes every offset (tests).
    """
    s, c1, t1, c2 = _prepare(x1, x2, layers, track_ntk, block, band)
    is_self = x2 is None
    dtype = x1.dtype
    n1, n2 = s.x1.shape[0], s.x2.shape[0]
    nngp = np.empty((n1, n2), dtype=dtype)
    ntk = np.empty((n1, n2), dtype=dtype) if track_ntk else None
    if is_self:
        idx = np.arange(n1)
        nngp[idx, idx] = c1
        if track_ntk:
            ntk[idx, idx] = t1
    if progress is not None:
        progress.update(n1 if is_self else n1 + n2)
    for pi, pj in _pairs(n1, n2, is_self, s.block):
        out_k = np.empty(len(pi), dtype=np.float64)
        out_t = np.empty(len(pi), dtype=np.float64)
        _conv_numba.cross_fwd(*_args(s), s.x1, s.x2, s.v1, s.v2, pi, pj, track_ntk,
                              min(len(pi), 4 * _threads()), out_k, out_t)
        nngp[pi, pj] = out_k
        if track_ntk:
            ntk[pi, pj] = out_t
        if is_self:
            nngp[pj, pi] = out_k
            if track_ntk:
                ntk[pj, pi] = out_t
        if progress is not None:
            progress.update(len(pi))
    cov1 = c1.astype(dtype)
    cov2 = None if is_self else c2.astype(dtype)
    state = KernelState(cov1, nngp, cov2, ntk, is_self)
    return state, (s if save else None)


@dataclass
class _Acc:
    """Per-chunk accumulators of the cross pairs' pullback: variance and image cotangents, and
    the readout's ``cov`` cotangents."""
    want1: bool
    want2: bool
    cv1: np.ndarray
    gx1: np.ndarray
    cv2: np.ndarray
    gx2: np.ndarray
    c_cov1: np.ndarray
    c_cov2: np.ndarray
    diag_k: np.ndarray = None   # self-kernel: cotangent of the diagonal (own pairs)
    diag_t: np.ndarray = None


def _accumulators(s, is_self, wrt):
    dtype = s.x1.dtype
    n1, n2 = s.x1.shape[0], s.x2.shape[0]
    want1, want2 = (True, False) if is_self else (bool(wrt[0]), bool(wrt[1]))
    chunks = _threads()
    nv, img = s.v1.shape[1], s.x1.shape[1:]

    def acc(n, want):
        return (np.zeros((chunks, n if want else 1, nv), dtype=dtype),
                np.zeros((chunks, n if want else 1) + img, dtype=dtype))

    cv1, gx1 = acc(n1, want1)
    cv2, gx2 = (cv1, gx1) if is_self else acc(n2, want2)
    return _Acc(want1, want2, cv1, gx1, cv2, gx2, np.zeros(n1, dtype=dtype),
                np.zeros(n2, dtype=dtype))


def _finish(s, a, is_self):
    """Each image's own pair, pulled back with its readout cotangent and the accumulated
    variance cotangents (eq. (conv.7)); returns the image gradients (NHWC)."""
    dtype = s.x1.dtype
    tol = dtype.type(coincidence_tol(dtype))
    h, w, c = s.shape1[1:]
    grads = []
    sides = ((s.x1, s.v1, a.cv1, a.gx1, a.c_cov1, a.want1),) if is_self else \
        ((s.x1, s.v1, a.cv1, a.gx1, a.c_cov1, a.want1),
         (s.x2, s.v2, a.cv2, a.gx2, a.c_cov2, a.want2))
    for x, v, cv, gx, c_cov, want in sides:
        if not want:
            grads.append(None)
            continue
        n = x.shape[0]
        g_self = np.array(c_cov, dtype=dtype)
        h_self = np.zeros(n, dtype=dtype)
        if is_self:
            g_self = g_self + a.diag_k
            h_self = h_self + a.diag_t
        g = gx.sum(axis=0)
        _conv_numba.self_bwd(*_args(s), x, v, g_self, h_self, cv.sum(axis=0),
                             s.track and is_self, tol, min(n, 4 * _threads()), g)
        grads.append(np.moveaxis(g.reshape(n, c, h, w), 1, -1))
    return grads[0], (None if is_self else grads[1])


def _cots(s, cot, n1, n2):
    dtype = s.x1.dtype
    zeros = np.zeros((n1, n2), dtype=dtype)
    c_k = cot.nngp if cot.nngp is not None else zeros
    c_t = cot.ntk if (cot.ntk is not None and s.track) else zeros
    return c_k, c_t


def conv_input_vjp(saved, cot, *, wrt=(True, True)):
    """Gradients w.r.t. the images from the cotangent of the state :func:`conv_input_fwd`
    returned (``docs/math/conv.md``, "Reverse walk"): cross pairs first (each recomputed into
    its thread's buffers), which also yield the cotangents of each image's variances, then
    each image's own pair."""
    s = saved
    is_self = cot.is_self
    n1, n2 = s.x1.shape[0], s.x2.shape[0]
    dtype = s.x1.dtype
    tol = dtype.type(coincidence_tol(dtype))
    c_k, c_t = _cots(s, cot, n1, n2)
    a = _accumulators(s, is_self, wrt)
    no_buf = np.zeros((1, 1), dtype=dtype)  # no kept pair buffers
    if cot.cov1 is not None:
        a.c_cov1 += cot.cov1
    if cot.cov2 is not None:
        a.c_cov2 += cot.cov2
    if is_self:
        idx = np.arange(n1)
        a.diag_k, a.diag_t = c_k[idx, idx], c_t[idx, idx]
    for pi, pj in _pairs(n1, n2, is_self, s.block):
        g_k, g_t = c_k[pi, pj], c_t[pi, pj]
        if is_self:
            g_k, g_t = g_k + c_k[pj, pi], g_t + c_t[pj, pi]
        _conv_numba.cross_bwd(*_args(s), s.x1, s.x2, s.v1, s.v2, pi, pj,
                              np.ascontiguousarray(g_k), np.ascontiguousarray(g_t), s.track,
                              a.want1 or is_self, a.want2 or is_self, tol,
                              min(len(pi), a.cv1.shape[0]), False, no_buf, no_buf, a.cv1,
                              a.cv2, a.gx1, a.gx2)
    return _finish(s, a, is_self)


class RowStream:
    """Row blocks of a cross kernel whose pair buffers are kept from the forward to the
    pullback, so that no pair is computed twice (what a KIP step needs: the cotangent of a
    row of ``K_ts`` is known as soon as that row is).

    ``rows_fwd(rows)`` gives the fully-connected state of those rows; ``rows_vjp(cot)`` pulls
    the cotangent of that state back into accumulators; ``finish()`` returns the gradients.
    Memory: ``rows x n2`` pair buffers of ``band_size`` entries (two per pair), reused.
    """

    def __init__(self, x1, x2, layers, *, track_ntk, wrt=(True, True)):
        self.s, self.c1, _, self.c2 = _prepare(x1, x2, layers, track_ntk, DEFAULT_BLOCK)
        self.acc = _accumulators(self.s, False, wrt)
        self._buf = None
        self._keep = None

    @property
    def pair_bytes(self):
        """Bytes kept per pair."""
        return 2 * self.s.prog.band_size * self.s.x1.dtype.itemsize

    def rows_fwd(self, rows):
        s = self.s
        rows = np.asarray(rows, dtype=np.int64)
        n2 = s.x2.shape[0]
        pi, pj = np.repeat(rows, n2), np.tile(np.arange(n2, dtype=np.int64), len(rows))
        total = s.prog.band_size
        if self._buf is None or self._buf[0].shape[0] < len(pi):
            self._buf = (np.zeros((len(pi), total), dtype=s.x1.dtype),
                         np.zeros((len(pi), total), dtype=s.x1.dtype))
        out_k = np.empty(len(pi), dtype=np.float64)
        out_t = np.empty(len(pi), dtype=np.float64)
        _conv_numba.cross_fwd_keep(*_args(s), s.x1, s.x2, s.v1, s.v2, pi, pj, s.track,
                                   self._buf[0], self._buf[1], out_k, out_t)
        self._keep = (rows, pi, pj)
        dtype = s.x1.dtype
        shape = (len(rows), n2)
        ntk = out_t.reshape(shape).astype(dtype) if s.track else None
        return KernelState(self.c1[rows].astype(dtype), out_k.reshape(shape).astype(dtype),
                           self.c2.astype(dtype), ntk, False)

    def rows_vjp(self, cot):
        s, a = self.s, self.acc
        rows, pi, pj = self._keep
        c_k, c_t = _cots(s, cot, len(rows), s.x2.shape[0])
        if cot.cov1 is not None:
            a.c_cov1[rows] += cot.cov1
        if cot.cov2 is not None:
            a.c_cov2 += cot.cov2
        dtype = s.x1.dtype
        _conv_numba.cross_bwd(*_args(s), s.x1, s.x2, s.v1, s.v2, pi, pj,
                              np.ascontiguousarray(c_k.reshape(-1), dtype=dtype),
                              np.ascontiguousarray(c_t.reshape(-1), dtype=dtype), s.track,
                              a.want1, a.want2, dtype.type(coincidence_tol(dtype)),
                              min(len(pi), a.cv1.shape[0]), True, self._buf[0], self._buf[1],
                              a.cv1, a.cv2, a.gx1, a.gx2)

    def finish(self):
        return _finish(self.s, self.acc, False)


def band_entries(prog):
    """Entries per pair that the band keeps and that the full layout would hold (docs)."""
    kept = full = 0
    for hh, ww, rh, rw in prog.geo:
        kept += sum((hh - abs(dh)) * (ww - abs(dw)) for dh in range(-rh, rh + 1)
                    for dw in range(-rw, rw + 1))
        full += (hh * ww) ** 2
    return int(kept), int(full)

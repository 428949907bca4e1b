"""Random-feature NNGP of finite ConvNets (RFAD), with the backward pass written by hand.

A :class:`RandomFeatures` value takes the same architecture values as the exact kernels
(``kk.ConvNet(3)`` and friends: ``Conv`` SAME/VALID, ``ABRelu``/``Relu``, ``AvgPool``,
``Flatten`` or ``GlobalAvgPool``, then one ``Dense`` readout) and gives it ``width`` channels
per conv layer. ``models`` such networks are drawn with weights ``N(0, W_std**2 / fan_in)`` and
biases ``N(0, b_std**2)`` (``fan_in = filter**2 * channels_in``). With ``phi_m(x)`` the readout
input of network ``m`` (``F`` numbers),

    K(x, x') = W_d**2 / (M F) * sum_m phi_m(x) . phi_m(x') + b_d**2          (rf.1)

is an unbiased estimate of the NNGP of the readout, the exact kernel of ``kk.nngp(.., arch)``
(``docs/math/rfad.md``). :func:`features` returns the scaled, concatenated features ``Phi``
with ``K = Phi Phi^T + b_d**2``; :func:`features_vjp` pulls a cotangent of ``Phi`` back to the
images (pooling, activation and convolution adjoints, eq. rf.4-rf.6).

Convolutions are im2col + one BLAS GEMM per layer; images go through in chunks whose largest
buffer is about ``chunk_bytes``, so memory stays bounded for any number of images.
"""
from dataclasses import dataclass, fields

import numpy as np

from . import _features_numba as _loops
from . import _validation
from .arch import ABRelu, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Serial

__all__ = ["RandomFeatures", "Weights", "sample_weights", "check_weights", "features",
           "features_vjp", "rf_kernel", "FeatureTape"]


# ----------------------------------------------------------------------------- the network

@dataclass(frozen=True)
class RandomFeatures:
    """``models`` random finite versions of ``arch`` with ``width`` channels per conv layer.

    Examples
    --------
    >>> import kernelkip as kk
    >>> rf = kk.RandomFeatures(kk.ConvNet(3), width=16, models=2)
    >>> rf.feature_count((32, 32, 3))
    256
    """

    arch: Serial
    width: int = 128
    models: int = 8

    def __post_init__(self):
        for name in ("width", "models"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
            object.__setattr__(self, name, int(v))
        layers = tuple(self.arch)
        if not layers or not isinstance(layers[-1], Dense):
            raise ValueError("random features need an architecture that ends in a Dense "
                             f"readout, got {self.arch!r}")
        readouts = [i for i, layer in enumerate(layers)
                    if isinstance(layer, (Flatten, GlobalAvgPool))]
        if readouts != [len(layers) - 2]:
            raise ValueError("random features need exactly one Flatten or GlobalAvgPool, right "
                             f"before the Dense readout; got {self.arch!r}")
        for layer in layers[:-2]:
            if not isinstance(layer, (Conv, ABRelu, AvgPool)):
                raise ValueError(f"random features support Conv, ABRelu/Relu and AvgPool "
                                 f"before the readout; got {layer!r}")

    @property
    def body(self):
        return tuple(self.arch)[:-2]

    @property
    def readout(self):
        return tuple(self.arch)[-2]

    @property
    def head(self):
        return tuple(self.arch)[-1]

    def shapes(self, image_shape):
        """``(H, W, C)`` after each layer of the body, starting with the input's."""
        h, w, c = (int(s) for s in image_shape)
        out = [(h, w, c)]
        for layer in self.body:
            if isinstance(layer, Conv):
                if layer.padding == "VALID":
                    h, w = h - layer.filter + 1, w - layer.filter + 1
                c = self.width
            elif isinstance(layer, AvgPool):
                h, w = h // layer.window, w // layer.window
            if h < 1 or w < 1:
                raise ValueError(f"images of shape {tuple(image_shape)} are too small for "
                                 f"{self.arch!r}")
            out.append((h, w, c))
        return out

    def feature_count(self, image_shape):
        """``F``: the readout's input size for one network."""
        h, w, c = self.shapes(image_shape)[-1]
        return c if isinstance(self.readout, GlobalAvgPool) else h * w * c

    def to_dict(self):
        return {"arch": self.arch.to_dict(), "width": self.width, "models": self.models}


@dataclass(frozen=True)
class Weights:
    """The drawn weights of ``models`` networks, and what they were drawn for.

    Attributes
    ----------
    convs : tuple
        ``convs[m][l] = (W, b)`` for conv layer ``l`` of network ``m``: ``W`` of shape
        ``(filter**2 * C_in, width)`` already scaled by ``W_std / sqrt(fan_in)``, ``b`` of
        shape ``(width,)`` scaled by ``b_std``.
    image_shape : tuple of int
        ``(H, W, C)`` of the images the networks take.
    dtype : numpy.dtype
        float32 or float64: the dtype of every array, and of the features.
    rf : RandomFeatures or None
        The value they were drawn for (:func:`sample_weights` sets it). Every consumer refuses
        weights drawn for another one (:func:`check_weights`): ``W_std`` and ``b_std`` are baked
        into the arrays, where no shape check can see them. ``None`` (weights put together by
        hand) leaves the shape and dtype checks only.
    """

    convs: tuple
    image_shape: tuple
    dtype: np.dtype
    rf: "RandomFeatures" = None


def _check_image_shape(image_shape):
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(f"image_shape must be (H, W, C), got {image_shape!r}")
    return shape


def sample_weights(rf, image_shape, rng, dtype=np.float32):
    """Draw ``rf.models`` networks for images of ``image_shape = (H, W, C)`` from ``rng``.

    Parameters
    ----------
    rf : RandomFeatures
    image_shape : tuple of int
        ``(H, W, C)``.
    rng : numpy.random.Generator
    dtype : {float32, float64}
        Of the weights, and so of the features computed with them.

    Returns
    -------
    weights : Weights
        Records ``rf`` and ``image_shape``; :func:`features`, :func:`rf_kernel` and
        ``kk.rfad_loss`` refuse them for any other.

    Raises
    ------
    ValueError
        ``dtype`` other than float32/float64 (integer weights would truncate to 0, and the
        compiled loops have no float16), or a bad ``image_shape``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=3)
    >>> w = kk.sample_weights(rf, (8, 8, 1), np.random.default_rng(0))
    >>> len(w.convs), w.convs[0][1][0].shape
    (3, (72, 8))
    """
    if not isinstance(rf, RandomFeatures):
        raise TypeError(f"rf must be a kk.RandomFeatures, got {type(rf).__name__}")
    dtype = _validation.check_float_dtype(dtype, "weights")
    image_shape = _check_image_shape(image_shape)
    shapes = rf.shapes(image_shape)
    convs = []
    for _ in range(rf.models):
        layers = []
        for layer, (_, _, c_in) in zip(rf.body, shapes):
            if isinstance(layer, Conv):
                fan_in = layer.filter ** 2 * c_in
                w = rng.standard_normal((fan_in, rf.width)) * (layer.W_std / np.sqrt(fan_in))
                b = rng.standard_normal(rf.width) * layer.b_std
                layers.append((w.astype(dtype), b.astype(dtype)))
        convs.append(tuple(layers))
    return Weights(tuple(convs), image_shape, dtype, rf)


def _spec_difference(drawn, called):
    """``RandomFeatures(...)`` of only the fields in which two values differ, for messages."""
    a, b = [], []
    for name in ("models", "width"):
        if getattr(drawn, name) != getattr(called, name):
            a.append(f"{name}={getattr(drawn, name)}")
            b.append(f"{name}={getattr(called, name)}")
    la, lb = tuple(drawn.arch), tuple(called.arch)
    if len(la) != len(lb):
        for layers, out in ((la, a), (lb, b)):
            convs = sum(isinstance(layer, Conv) for layer in layers)
            out.append(f"arch of {len(layers)} layers ({convs} Conv)")
    else:
        for i, (p, q) in enumerate(zip(la, lb)):
            if p != q:
                if type(p) is type(q):   # name the differing fields only (W_std, say)
                    names = [f.name for f in fields(p) if getattr(p, f.name) != getattr(q, f.name)]
                    p, q = (f"{type(v).__name__}(" + ", ".join(
                        f"{n}={getattr(v, n)!r}" for n in names) + ")" for v in (p, q))
                a.append(f"layer {i}: {p}")
                b.append(f"layer {i}: {q}")
                break
    return f"RandomFeatures({', '.join(a)})", f"RandomFeatures({', '.join(b)})"


def check_weights(weights, rf, image_shape=None):
    """Raise unless ``weights`` were drawn for ``rf`` (and for images of ``image_shape``).

    The compiled loops index the arrays by the shapes that ``rf`` implies, so weights of another
    spec would be read past their ends (uninitialised memory) instead of failing; this check
    runs before any of them.

    Parameters
    ----------
    weights : Weights
    rf : RandomFeatures
    image_shape : tuple of int, optional
        ``(H, W, C)`` of the images they will be applied to.

    Raises
    ------
    TypeError
        ``weights`` is not a :class:`Weights` or ``rf`` not a :class:`RandomFeatures`.
    ValueError
        The recorded ``weights.rf`` differs from ``rf`` (models, width, depth, filters,
        ``W_std``/``b_std``, activation, pooling or readout), the image shape differs, the dtype
        is not float32/float64, or an array's shape or dtype does not fit ``rf``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    >>> w = kk.sample_weights(rf, (8, 8, 1), np.random.default_rng(0))
    >>> kk.features.check_weights(w, rf, (8, 8, 1))
    """
    if not isinstance(rf, RandomFeatures):
        raise TypeError(f"rf must be a kk.RandomFeatures, got {type(rf).__name__}")
    if not isinstance(weights, Weights):
        raise TypeError("weights must come from kk.sample_weights(rf, image_shape, rng), got "
                        f"{type(weights).__name__}")
    hint = "draw them with kk.sample_weights(rf, image_shape, rng)"
    if weights.rf is not None and weights.rf is not rf and weights.rf != rf:
        drawn, called = _spec_difference(weights.rf, rf)
        raise ValueError(f"weights were drawn for {drawn} but called with {called}; {hint}")
    dtype = _validation.check_float_dtype(weights.dtype, "weights")
    drawn_shape = _check_image_shape(weights.image_shape)
    if image_shape is not None and tuple(image_shape) != drawn_shape:
        raise ValueError(f"weights were drawn for images of shape {drawn_shape} but the images "
                         f"have shape {tuple(image_shape)}; {hint}")
    if len(weights.convs) != rf.models:
        raise ValueError(f"weights hold {len(weights.convs)} networks but rf has "
                         f"models={rf.models}; {hint}")
    # hand-built weights have no record: their arrays must still have the shapes rf implies
    convs = [(layer.filter ** 2 * c_in, rf.width)
             for layer, (_, _, c_in) in zip(rf.body, rf.shapes(drawn_shape))
             if isinstance(layer, Conv)]
    for m, net in enumerate(weights.convs):
        if len(net) != len(convs):
            raise ValueError(f"weights of network {m} hold {len(net)} conv layers but rf has "
                             f"{len(convs)}; {hint}")
        for k, (pair, w_shape) in enumerate(zip(net, convs)):
            try:
                w, b = pair
            except (TypeError, ValueError):
                w, b = pair, None
            for arr, want, what in ((w, w_shape, "W"), (b, (rf.width,), "b")):
                if (not isinstance(arr, np.ndarray) or arr.shape != want
                        or arr.dtype != dtype):
                    raise ValueError(
                        f"weights: {what} of conv layer {k} of network {m} has shape "
                        f"{getattr(arr, 'shape', None)} and dtype {getattr(arr, 'dtype', None)}; "
                        f"expected {want} and {dtype} for width={rf.width} on images of "
                        f"{drawn_shape}; {hint}")


# ----------------------------------------------------------------------------- layer ops
# Each op has its forward and its adjoint side by side (eq. rf.4-rf.6 of docs/math/rfad.md).

def _pad_amount(layer):
    return (layer.filter - 1) // 2 if layer.padding == "SAME" else 0


def im2col(x, f, pad):
    """Patches of ``x (n, H, W, C)``: ``(n * H' * W', f * f * C)``, window-major then channel,
    matching the weight layout ``(f, f, C_in, C_out).reshape(f * f * C_in, C_out)``.

    Numba's parallel loop when it is available, else :func:`im2col_numpy`."""
    if not _loops.available:
        return im2col_numpy(x, f, pad)
    n, h, w, c = x.shape
    ho, wo = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    out = np.empty((n, ho, wo, f * f, c), dtype=x.dtype)
    _loops.im2col(np.ascontiguousarray(x), f, pad, out)
    return out.reshape(n * ho * wo, f * f * c)


def col2im(cols, shape, f, pad):
    """Adjoint of :func:`im2col`: sums the patch cotangents back onto ``x``'s ``shape``."""
    if not _loops.available:
        return col2im_numpy(cols, shape, f, pad)
    n, h, w, c = shape
    ho, wo = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    g = np.empty(shape, dtype=cols.dtype)
    _loops.col2im(np.ascontiguousarray(cols).reshape(n, ho, wo, f * f, c), f, pad, g)
    return g


def im2col_numpy(x, f, pad):
    """:func:`im2col` by ``f * f`` slice copies (the reference for the Numba loop)."""
    n, h, w, c = x.shape
    ho, wo = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    out = np.empty((n, ho, wo, f * f, c), dtype=x.dtype)
    for dy in range(f):
        for dx in range(f):
            t = dy * f + dx
            # the output rows whose tap (dy, dx) lands inside the image; the rest see padding
            y0, y1 = max(0, pad - dy), min(ho, h + pad - dy)
            x0, x1 = max(0, pad - dx), min(wo, w + pad - dx)
            if y0 > 0:
                out[:, :y0, :, t] = 0
            if y1 < ho:
                out[:, y1:, :, t] = 0
            if x0 > 0:
                out[:, :, :x0, t] = 0
            if x1 < wo:
                out[:, :, x1:, t] = 0
            out[:, y0:y1, x0:x1, t] = x[:, y0 + dy - pad:y1 + dy - pad,
                                        x0 + dx - pad:x1 + dx - pad]
    return out.reshape(n * ho * wo, f * f * c)


def col2im_numpy(cols, shape, f, pad):
    """:func:`col2im` by ``f * f`` slice additions (the reference for the Numba loop)."""
    n, h, w, c = shape
    ho, wo = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    cols = cols.reshape(n, ho, wo, f * f, c)
    g = np.zeros(shape, dtype=cols.dtype)
    for dy in range(f):
        for dx in range(f):
            t = dy * f + dx
            y0, y1 = max(0, pad - dy), min(ho, h + pad - dy)
            x0, x1 = max(0, pad - dx), min(wo, w + pad - dx)
            g[:, y0 + dy - pad:y1 + dy - pad, x0 + dx - pad:x1 + dx - pad] += \
                cols[:, y0:y1, x0:x1, t]
    return g


def _buffer(work, key, shape, dtype, zero=False):
    """A scratch array: fresh without ``work``, else kept in the dict ``work`` under ``key``
    and reused while the shape matches (large fresh arrays cost page faults on every call).
    ``zero`` zeroes it when it is made; callers write only what they change."""
    shape, dtype = tuple(int(d) for d in shape), np.dtype(dtype)
    if work is not None:
        buf = work.get(key)
        if buf is not None and buf.shape == shape and buf.dtype == dtype:
            return buf
    buf = np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    if work is not None:
        work[key] = buf
    return buf


# Winograd F(2x2, 3x3) transforms (eq. rf.10): U = G g G^T per filter; B^T, A^T in the loops
_WINO_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
# a conv runs as Winograd when it is 3x3 SAME with at least this many input channels, and as a
# direct loop when its patches have at most _DIRECT_MAX numbers (a GEMM that short is slow)
_WINO_MIN_CHANNELS = 16
_DIRECT_MAX = 32


def conv_method(f, pad, c_in):
    """Which algorithm :func:`conv_fwd` uses: ``"winograd"``, ``"direct"`` or ``"im2col"``."""
    if not _loops.available:
        return "im2col"
    if f == 3 and pad == 1 and c_in >= _WINO_MIN_CHANNELS:
        return "winograd"
    if f * f * c_in <= _DIRECT_MAX:
        return "direct"
    return "im2col"


def _conv_winograd(x, w, b, z, work, key):
    n, h, wd, c = x.shape
    th, tw = (h + 1) // 2, (wd + 1) // 2
    xp = _buffer(work, key + ("xp",), (n, 2 * th + 2, 2 * tw + 2, c), x.dtype, zero=True)
    xp[:, 1:h + 1, 1:wd + 1] = x
    # transformed once per filter and call (the work dict lives for one call); the entry keeps
    # the filter itself, so a freed temporary whose id is reused cannot match
    cached = None if work is None else work.get(("U", id(w)))
    if cached is not None and cached[0] is w:
        u = cached[1]
    else:
        u = np.einsum("ak,klco,bl->abco", _WINO_G, w.reshape(3, 3, c, -1).astype(np.float64),
                      _WINO_G).reshape(16, c, -1).astype(x.dtype)
        if work is not None:
            work[("U", id(w))] = (w, u)
    v = _buffer(work, key + ("v",), (16, n * th * tw, c), x.dtype)
    _loops.wino_in(xp, th, tw, v)
    m = _buffer(work, key + ("m",), (16, n * th * tw, w.shape[1]), x.dtype)
    for k in range(16):
        np.matmul(v[k], u[k], out=m[k])
    _loops.wino_out(m, np.ascontiguousarray(b, dtype=x.dtype), th, tw, z)
    return z


def conv(x, w, b, f, pad, method=None, work=None, key=()):
    """Stride-1 convolution ``z[p] = sum_d x[p + d - pad] W[d] + b`` of ``x (n, H, W, C)`` with
    ``W (f * f * C, C_out)`` (eq. rf.2), by im2col + GEMM, a direct loop or Winograd F(2x2, 3x3)
    (``conv_method``); all three agree to round-off."""
    method = conv_method(f, pad, x.shape[3]) if method is None else method
    n, h, wd, c = x.shape
    ho, wo = h + 2 * pad - f + 1, wd + 2 * pad - f + 1
    z = _buffer(work, key + ("z",), (n, ho, wo, w.shape[1]), x.dtype)
    if method == "winograd":
        return _conv_winograd(x, w, b, z, work, key)
    if method == "direct":
        xp = _buffer(work, key + ("xp",), (n, h + 2 * pad, wd + 2 * pad, c), x.dtype, zero=True)
        xp[:, pad:pad + h, pad:pad + wd] = x
        _loops.conv_direct(xp, np.ascontiguousarray(w), np.ascontiguousarray(b, dtype=x.dtype),
                           f, z)
        return z
    zf = z.reshape(n * ho * wo, w.shape[1])
    np.matmul(im2col(x, f, pad), w, out=zf)
    zf += b
    return z


def conv_fwd(x, w, b, layer, work=None, key=()):
    """The layer's convolution, eq. (rf.2)."""
    return conv(x, w, b, layer.filter, _pad_amount(layer), work=work, key=key)


def conv_vjp(g, w, x_shape, layer, work=None, key=()):
    """``dx`` of :func:`conv_fwd` (eq. rf.6). SAME with wide inputs: the convolution of ``g``
    with the filter turned by 180 degrees and its channel axes swapped; otherwise
    ``col2im(dz @ W^T)``."""
    f, pad = layer.filter, _pad_amount(layer)
    c_in, c_out = x_shape[3], w.shape[1]
    if layer.padding == "SAME" and conv_method(f, pad, c_out) == "winograd" \
            and f * f * c_in > _DIRECT_MAX:
        turned = w.reshape(f, f, c_in, c_out)[::-1, ::-1].transpose(0, 1, 3, 2)
        return conv(np.ascontiguousarray(g), np.ascontiguousarray(turned).reshape(-1, c_in),
                    np.zeros(c_in, dtype=g.dtype), f, pad, work=work, key=key)
    cols = np.ascontiguousarray(g).reshape(-1, c_out) @ w.T
    return col2im(cols, x_shape, f, pad)


def act_fwd(z, layer):
    """``a min(z, 0) + b max(z, 0)`` and the slope mask for the adjoint."""
    pos = z > 0
    if layer.a == 0.0:
        out = np.maximum(z, 0, out=z)
        if layer.b != 1.0:
            out *= z.dtype.type(layer.b)
    else:
        out = np.where(pos, z.dtype.type(layer.b) * z, z.dtype.type(layer.a) * z)
    return out, pos


def act_vjp(g, pos, layer):
    """``g * (b if z > 0 else a)`` (eq. rf.5)."""
    if layer.a == 0.0:
        out = np.where(pos, g, 0)
        return out * g.dtype.type(layer.b) if layer.b != 1.0 else out
    return np.where(pos, g.dtype.type(layer.b) * g, g.dtype.type(layer.a) * g)


def pool_fwd(x, window):
    """Mean over ``window x window`` blocks, stride ``window``, VALID (trailing rows dropped)."""
    n, h, w, c = x.shape
    ho, wo = h // window, w // window
    x = x[:, :ho * window, :wo * window]
    return x.reshape(n, ho, window, wo, window, c).mean(axis=(2, 4), dtype=x.dtype)


def pool_vjp(g, x_shape, window):
    """Adjoint of :func:`pool_fwd` (eq. rf.4): each block gets ``g / window**2``."""
    n, h, w, c = x_shape
    ho, wo = g.shape[1], g.shape[2]
    out = np.zeros(x_shape, dtype=g.dtype)
    block = np.broadcast_to((g / g.dtype.type(window * window))[:, :, None, :, None, :],
                            (n, ho, window, wo, window, c))
    out[:, :ho * window, :wo * window] = block.reshape(n, ho * window, wo * window, c)
    return out


# ----------------------------------------------------------------------------- features

@dataclass
class FeatureTape:
    """What :func:`features` keeps for :func:`features_vjp`: the slope masks of each activation
    per network (``tape[m]``) and the input shapes of each layer."""

    rf: RandomFeatures
    weights: Weights
    shapes: list
    masks: list
    n: int


def _scale(rf, image_shape):
    # Phi = W_d / sqrt(M F) * [phi_1, ..., phi_M]                          eq. (rf.1)
    return rf.head.W_std / np.sqrt(rf.models * rf.feature_count(image_shape))


def _check_input(x, weights, name, finite=True):
    # images are cast to the weights' dtype, which sets the precision: integer pixels (uint8)
    # and float16 are converted here, explicitly, so that only float32/float64 reach the loops
    if x is not None:
        kind = np.dtype(x.dtype).kind if hasattr(x, "dtype") else np.asarray(x).dtype.kind
        if kind not in "biuf":
            raise ValueError(f"{name} has dtype {getattr(x, 'dtype', np.asarray(x).dtype)}; "
                             f"expected real numbers (they are cast to the weights' "
                             f"{weights.dtype})")
    x = _validation.check_array(x, name, min_ndim=4, dtype=weights.dtype, finite=finite)
    if x.ndim != 4 or x.shape[1:] != weights.image_shape:
        raise ValueError(f"{name} must hold images of shape {weights.image_shape} (NHWC), "
                         f"got an array of shape {x.shape}")
    return x


def act_pool_fwd(z, act, window, work=None, key=(), keep_mask=True):
    """``pool_fwd(act_fwd(z))`` in one pass (Numba), with the slope mask."""
    n, h, w, c = z.shape
    out = _buffer(work, key + ("pool",), (n, h // window, w // window, c), z.dtype)
    mask = _buffer(None if keep_mask else work, key + ("mask",), z.shape, np.bool_)
    _loops.act_pool(np.ascontiguousarray(z), z.dtype.type(act.a), z.dtype.type(act.b), window,
                    out, mask)
    return out, mask


def _one_network(x, convs, rf, masks, work):
    # intermediate arrays live in ``work`` (reused over chunks and networks); masks that are
    # kept for the backward pass are fresh arrays
    h = x
    it = iter(convs)
    body = rf.body
    fused = False
    for k, layer in enumerate(body):
        if fused:  # this pool ran with the activation before it
            fused = False
        elif isinstance(layer, Conv):
            w, b = next(it)
            h = conv_fwd(h, w, b, layer, work, (k,))
        elif isinstance(layer, ABRelu):
            fused = (_loops.available and k + 1 < len(body)
                     and isinstance(body[k + 1], AvgPool))
            if fused:
                h, pos = act_pool_fwd(h, layer, body[k + 1].window, work, (k,),
                                      keep_mask=masks is not None)
            else:
                h, pos = act_fwd(h, layer)
            if masks is not None:
                masks.append(pos)
        else:
            h = pool_fwd(h, layer.window)
    if isinstance(rf.readout, GlobalAvgPool):
        return h.mean(axis=(1, 2), dtype=h.dtype)
    return h.reshape(len(h), -1)


def _chunk_rows(rf, image_shape, itemsize, chunk_bytes):
    # the scratch of the widest conv layer per image: its output and the operands of its
    # algorithm (im2col: the patch matrix; Winograd: the transformed input and products)
    per_image = 0
    for layer, (h, w, c) in zip(rf.body, rf.shapes(image_shape)):
        if isinstance(layer, Conv):
            f, pad = layer.filter, _pad_amount(layer)
            method = conv_method(f, pad, c)
            extra = {"im2col": f * f * c, "winograd": 4 * (c + rf.width), "direct": c}[method]
            per_image = max(per_image, h * w * (rf.width + extra))
    return max(1, int(chunk_bytes // (per_image * itemsize)))


def features(x, weights, rf, *, save=False, chunk_bytes=2 ** 28, check_finite=True):
    """The scaled random features ``Phi`` of ``x``: ``K = Phi Phi^T + b_d**2`` (eq. rf.1).

    Parameters
    ----------
    x : ndarray of shape (n, H, W, C)
        Images (NHWC) of ``weights.image_shape``. They are cast to ``weights.dtype``: integer
        images (``uint8`` pixels, say) and float16 are converted, not refused.
    weights : Weights
        From :func:`sample_weights` for this ``rf`` (:func:`check_weights`).
    rf : RandomFeatures
    save : bool
        Also return a :class:`FeatureTape` for :func:`features_vjp` (keeps the activation masks:
        about one byte per activation entry and network).
    chunk_bytes : int
        Images go through in chunks whose largest temporary is about this size.

    Returns
    -------
    phi : ndarray of shape (n, models * F), ``weights.dtype``
    tape : FeatureTape, only with ``save=True``

    Raises
    ------
    ValueError
        ``weights`` drawn for another ``rf`` or image shape, or of a dtype other than
        float32/float64 (:func:`check_weights`); images of another shape, of a non-real dtype
        or with NaN/inf.
    """
    check_weights(weights, rf)
    x = _check_input(x, weights, "x", check_finite)
    n = len(x)
    f_count = rf.feature_count(weights.image_shape)
    scale = x.dtype.type(_scale(rf, weights.image_shape))
    phi = np.empty((n, rf.models * f_count), dtype=x.dtype)
    masks = [[] for _ in range(rf.models)] if save else None
    rows = n if save else _chunk_rows(rf, weights.image_shape, x.dtype.itemsize, chunk_bytes)
    work = {}
    for start in range(0, n, rows):
        xb = x[start:start + rows]
        for m, convs in enumerate(weights.convs):
            out = _one_network(xb, convs, rf, masks[m] if save else None, work)
            np.multiply(out, scale, out=phi[start:start + rows, m * f_count:(m + 1) * f_count])
    if not save:
        return phi
    return phi, FeatureTape(rf, weights, rf.shapes(weights.image_shape), masks, n)


def features_vjp(tape, g_phi):
    """Pull a cotangent of ``Phi`` (shape ``(n, models * F)``) back to the images.

    Returns
    -------
    g_x : ndarray of shape (n, H, W, C)
    """
    rf, weights = tape.rf, tape.weights
    g_phi = np.asarray(g_phi)
    f_count = rf.feature_count(weights.image_shape)
    if g_phi.shape != (tape.n, rf.models * f_count):
        raise ValueError(f"the cotangent has shape {g_phi.shape}; expected "
                         f"{(tape.n, rf.models * f_count)}")
    g_phi = g_phi.astype(weights.dtype, copy=False) * weights.dtype.type(
        _scale(rf, weights.image_shape))
    h, w, c = tape.shapes[-1]
    g_x = np.zeros((tape.n,) + tuple(weights.image_shape), dtype=weights.dtype)
    work = {}
    for m, convs in enumerate(weights.convs):
        g = g_phi[:, m * f_count:(m + 1) * f_count]
        if isinstance(rf.readout, GlobalAvgPool):
            g = np.broadcast_to((g / g.dtype.type(h * w))[:, None, None, :], (tape.n, h, w, c))
        else:
            g = g.reshape(tape.n, h, w, c)
        masks = list(tape.masks[m])
        conv_it = reversed(convs)
        body = rf.body
        k = len(body) - 1
        while k >= 0:
            layer, in_shape = body[k], (tape.n,) + tuple(tape.shapes[k])
            if isinstance(layer, Conv):
                wm, _ = next(conv_it)
                g = conv_vjp(g, wm, in_shape, layer, work, (k,))
            elif isinstance(layer, ABRelu):
                g = act_vjp(g, masks.pop(), layer)
            elif _loops.available and k > 0 and isinstance(body[k - 1], ABRelu):
                # eq. (rf.4)-(rf.5) in one pass, the adjoint of act_pool_fwd
                k -= 1
                act, z_shape = body[k], (tape.n,) + tuple(tape.shapes[k])
                gz = _buffer(work, (k, "gz"), z_shape, g.dtype)
                _loops.pool_act_vjp(np.ascontiguousarray(g), masks.pop(), g.dtype.type(act.a),
                                    g.dtype.type(act.b), layer.window, gz)
                g = gz
            else:
                g = pool_vjp(g, in_shape, layer.window)
            k -= 1
        g_x += g
    return g_x


def rf_kernel(x1, x2, rf, rng, *, dtype=None, weights=None):
    """The random-feature kernel (eq. rf.1) between ``x1`` and ``x2`` (``None``: ``x1``).

    Draws ``rf.models`` networks from ``rng`` unless ``weights`` are given. Returns float64.

    Parameters
    ----------
    x1 : ndarray of shape (n1, H, W, C)
    x2 : ndarray of shape (n2, H, W, C), optional
    rf : RandomFeatures
    rng : numpy.random.Generator
        Used only when ``weights`` is ``None``.
    dtype : {None, float32, float64}
        Cast the images to it first (``None``: keep float32/float64; integers become float64).
    weights : Weights, optional
        Drawn with :func:`sample_weights` for this ``rf`` and image shape.

    Raises
    ------
    ValueError
        ``weights`` drawn for another ``rf`` or image shape (:func:`check_weights`), or a
        ``dtype`` other than float32/float64.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> x = np.random.default_rng(0).normal(size=(3, 8, 8, 1))
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    >>> kk.rf_kernel(x, None, rf, np.random.default_rng(1)).shape
    (3, 3)
    """
    if dtype is not None:
        dtype = _validation.check_float_dtype(dtype, "dtype")
    x1 = _validation.check_array(x1, "x1", min_ndim=4, dtype=dtype)
    if weights is None:
        weights = sample_weights(rf, x1.shape[1:], rng, x1.dtype)
    p1 = features(x1, weights, rf).astype(np.float64)
    p2 = p1 if x2 is None else features(
        _validation.check_array(x2, "x2", min_ndim=4, dtype=x1.dtype), weights,
        rf).astype(np.float64)
    return p1 @ p2.T + rf.head.b_std ** 2

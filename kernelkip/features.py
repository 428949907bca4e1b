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
from dataclasses import dataclass

import numpy as np

from . import _features_numba as _loops
from . import _validation
from .arch import ABRelu, AvgPool, Conv, Dense, Flatten, GlobalAvgPool, Serial

__all__ = ["RandomFeatures", "Weights", "sample_weights", "features", "features_vjp",
           "rf_kernel", "FeatureTape"]


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
    """The drawn weights: ``convs[m][l] = (W (filter**2 * C_in, C_out), b (C_out,))``, already
    scaled by ``W_std / sqrt(fan_in)`` and ``b_std``."""

    convs: tuple
    image_shape: tuple
    dtype: np.dtype


def sample_weights(rf, image_shape, rng, dtype=np.float32):
    """Draw ``rf.models`` networks for images of ``image_shape = (H, W, C)`` from ``rng``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=3)
    >>> w = kk.sample_weights(rf, (8, 8, 1), np.random.default_rng(0))
    >>> len(w.convs), w.convs[0][1][0].shape
    (3, (72, 8))
    """
    dtype = np.dtype(dtype)
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
    return Weights(tuple(convs), tuple(int(s) for s in image_shape), dtype)


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


def conv_fwd(x, w, b, layer):
    """``z = im2col(x) @ W + b`` (eq. rf.2)."""
    n = x.shape[0]
    f, pad = layer.filter, _pad_amount(layer)
    cols = im2col(x, f, pad)
    z = cols @ w
    z += b
    ho, wo = x.shape[1] + 2 * pad - f + 1, x.shape[2] + 2 * pad - f + 1
    return z.reshape(n, ho, wo, w.shape[1])


def conv_vjp(g, w, x_shape, layer):
    """``dx = col2im(dz @ W^T)`` (eq. rf.6)."""
    cols = g.reshape(-1, w.shape[1]) @ w.T
    return col2im(cols, x_shape, layer.filter, _pad_amount(layer))


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
    x = _validation.check_array(x, name, min_ndim=4, dtype=weights.dtype, finite=finite)
    if x.ndim != 4 or x.shape[1:] != weights.image_shape:
        raise ValueError(f"{name} must hold images of shape {weights.image_shape} (NHWC), "
                         f"got an array of shape {x.shape}")
    return x


def act_pool_fwd(z, act, window):
    """``pool_fwd(act_fwd(z))`` in one pass (Numba), with the slope mask."""
    n, h, w, c = z.shape
    out = np.empty((n, h // window, w // window, c), dtype=z.dtype)
    mask = np.empty(z.shape, dtype=np.bool_)
    _loops.act_pool(np.ascontiguousarray(z), z.dtype.type(act.a), z.dtype.type(act.b), window,
                    out, mask)
    return out, mask


def _one_network(x, convs, rf, masks):
    h = x
    it = iter(convs)
    body = rf.body
    fused = False
    for k, layer in enumerate(body):
        if fused:  # this pool ran with the activation before it
            fused = False
        elif isinstance(layer, Conv):
            w, b = next(it)
            h = conv_fwd(h, w, b, layer)
        elif isinstance(layer, ABRelu):
            fused = (_loops.available and k + 1 < len(body)
                     and isinstance(body[k + 1], AvgPool))
            if fused:
                h, pos = act_pool_fwd(h, layer, body[k + 1].window)
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
    # the largest per-image buffer: an im2col matrix or a conv output
    per_image = 0
    for layer, (h, w, c) in zip(rf.body, rf.shapes(image_shape)):
        if isinstance(layer, Conv):
            per_image = max(per_image, h * w * max(layer.filter ** 2 * c, rf.width))
    return max(1, int(chunk_bytes // (3 * per_image * itemsize)))


def features(x, weights, rf, *, save=False, chunk_bytes=2 ** 27, check_finite=True):
    """The scaled random features ``Phi`` of ``x``: ``K = Phi Phi^T + b_d**2`` (eq. rf.1).

    Parameters
    ----------
    x : ndarray of shape (n, H, W, C)
        Images (NHWC) of ``weights.image_shape`` and ``weights.dtype``.
    weights : Weights
        From :func:`sample_weights`.
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
    """
    x = _check_input(x, weights, "x", check_finite)
    n = len(x)
    f_count = rf.feature_count(weights.image_shape)
    scale = x.dtype.type(_scale(rf, weights.image_shape))
    phi = np.empty((n, rf.models * f_count), dtype=x.dtype)
    masks = [[] for _ in range(rf.models)] if save else None
    rows = n if save else _chunk_rows(rf, weights.image_shape, x.dtype.itemsize, chunk_bytes)
    for start in range(0, n, rows):
        xb = x[start:start + rows]
        for m, convs in enumerate(weights.convs):
            out = _one_network(xb, convs, rf, masks[m] if save else None)
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
    for m, convs in enumerate(weights.convs):
        g = g_phi[:, m * f_count:(m + 1) * f_count]
        if isinstance(rf.readout, GlobalAvgPool):
            g = np.broadcast_to((g / g.dtype.type(h * w))[:, None, None, :], (tape.n, h, w, c))
        else:
            g = g.reshape(tape.n, h, w, c)
        masks = list(tape.masks[m])
        conv_it = reversed(convs)
        for layer, shape in zip(reversed(rf.body), reversed(tape.shapes[:-1])):
            in_shape = (tape.n,) + tuple(shape)
            if isinstance(layer, Conv):
                wm, _ = next(conv_it)
                g = conv_vjp(g, wm, in_shape, layer)
            elif isinstance(layer, ABRelu):
                g = act_vjp(g, masks.pop(), layer)
            else:
                g = pool_vjp(g, in_shape, layer.window)
        g_x += g
    return g_x


def rf_kernel(x1, x2, rf, rng, *, dtype=None, weights=None):
    """The random-feature kernel (eq. rf.1) between ``x1`` and ``x2`` (``None``: ``x1``).

    Draws ``rf.models`` networks from ``rng`` unless ``weights`` are given. Returns float64.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> x = np.random.default_rng(0).normal(size=(3, 8, 8, 1))
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    >>> kk.rf_kernel(x, None, rf, np.random.default_rng(1)).shape
    (3, 3)
    """
    x1 = _validation.check_array(x1, "x1", min_ndim=4, dtype=dtype)
    if weights is None:
        weights = sample_weights(rf, x1.shape[1:], rng, x1.dtype)
    p1 = features(x1, weights, rf).astype(np.float64)
    p2 = p1 if x2 is None else features(
        _validation.check_array(x2, "x2", min_ndim=4, dtype=x1.dtype), weights,
        rf).astype(np.float64)
    return p1 @ p2.T + rf.head.b_std ** 2

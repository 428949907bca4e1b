"""Brute-force convolutional NNGP/NTK for tiny images, for testing the conv kernels.

Written independently of kernelkip, with explicit loops over image pairs and positions and full
4-index covariances ``K[p, q]`` (p, q pixel positions). It follows neural-tangents' stax
conventions (images NHWC; NTK parameterization):

* input:   ``K[p, q] = sum_c x1[p, c] x2[q, c] / C``
* Conv(f, padding, W_std, b_std), stride 1: ``K'[p, q] = W^2/f^2 sum_d K[p+d, q+d] + b^2``,
  where positions outside the image contribute 0 but still count in ``f^2`` (SAME pads with
  zeros; VALID keeps only fully-inside windows); ``Theta' = W^2/f^2 sum_d Theta[p+d, q+d] + K'``
* activation: entrywise on ``(K[p, q], K11[p, p], K22[q, q])``, the same dual kernels as FC
* AvgPool(2): ``K'[P, Q] = mean over a in window(P), b in window(Q) of K[a, b]`` (also Theta)
* GlobalAvgPool: mean over all ``(p, q)``; Flatten: mean over ``p`` of ``K[p, p]``
* Dense readout: ``nngp = W^2 K + b^2``, ``ntk = W^2 Theta + nngp``

Architectures are lists of tuples, e.g. ``[("conv", 3, "SAME", W, b), ("relu",), ("pool",),
("flatten",), ("dense", W, b)]``.
"""
import itertools

import numpy as np
from scipy.special import erf

# dual kernels (T, Tdot) at one entry, written out independently of kernelkip


def _relu_dual(k, v1, v2):
    s = np.sqrt(v1 * v2)
    c = np.clip(k / s, -1.0, 1.0) if s > 0 else 0.0
    theta = np.arccos(c)
    return s * (np.sin(theta) + (np.pi - theta) * c) / (2 * np.pi), (np.pi - theta) / (2 * np.pi)


def _erf_dual(k, v1, v2):
    d1, d2 = 1 + 2 * v1, 1 + 2 * v2
    return (2 / np.pi) * np.arcsin(2 * k / np.sqrt(d1 * d2)), \
        (4 / np.pi) / np.sqrt(d1 * d2 - 4 * k * k)


DUALS = {"relu": _relu_dual, "erf": _erf_dual}


def _positions(h, w):
    return list(itertools.product(range(h), range(w)))


def _conv(k, f, padding):
    """One conv step on a full covariance ``k`` of shape (H, W, H, W)."""
    h, w = k.shape[:2]
    r = f // 2
    if padding == "SAME":
        out_pos, (ho, wo) = _positions(h, w), (h, w)
        shift = 0
    else:  # VALID
        ho, wo = h - f + 1, w - f + 1
        out_pos, shift = _positions(ho, wo), r
    out = np.zeros((ho, wo, ho, wo))
    for (p0, p1), (q0, q1) in itertools.product(out_pos, out_pos):
        total = 0.0
        for d0, d1 in itertools.product(range(-r, r + 1), repeat=2):
            a0, a1 = p0 + shift + d0, p1 + shift + d1
            b0, b1 = q0 + shift + d0, q1 + shift + d1
            if 0 <= a0 < h and 0 <= a1 < w and 0 <= b0 < h and 0 <= b1 < w:
                total += k[a0, a1, b0, b1]
        out[p0, p1, q0, q1] = total / f ** 2
    return out


def _pool(k):
    h, w = k.shape[:2]
    ho, wo = h // 2, w // 2
    out = np.zeros((ho, wo, ho, wo))
    for (p0, p1), (q0, q1) in itertools.product(_positions(ho, wo), repeat=2):
        out[p0, p1, q0, q1] = np.mean([k[2 * p0 + a0, 2 * p1 + a1, 2 * q0 + b0, 2 * q1 + b1]
                                       for a0, a1, b0, b1 in itertools.product(range(2),
                                                                               repeat=4)])
    return out


def pair_kernel(x1, x2, arch):
    """``(nngp, ntk)`` of one image pair (each (H, W, C)) by brute force: two floats."""
    c = x1.shape[-1]
    k12 = np.einsum("pqc,rsc->pqrs", x1, x2) / c
    k11 = np.einsum("pqc,rsc->pqrs", x1, x1) / c
    k22 = np.einsum("pqc,rsc->pqrs", x2, x2) / c
    t12 = np.zeros_like(k12)
    for layer in arch:
        kind = layer[0]
        if kind == "conv":
            _, f, padding, w_std, b_std = layer
            k11, k22, k12 = (w_std ** 2 * _conv(k, f, padding) + b_std ** 2
                             for k in (k11, k22, k12))
            t12 = w_std ** 2 * _conv(t12, f, padding) + k12
        elif kind in DUALS:
            dual = DUALS[kind]
            new = []
            for k, (da, db) in ((k11, (k11, k11)), (k22, (k22, k22)), (k12, (k11, k22))):
                out, tdot = np.zeros_like(k), np.zeros_like(k)
                h, w = k.shape[:2]
                for (p0, p1), (q0, q1) in itertools.product(_positions(h, w), repeat=2):
                    out[p0, p1, q0, q1], tdot[p0, p1, q0, q1] = dual(
                        k[p0, p1, q0, q1], da[p0, p1, p0, p1], db[q0, q1, q0, q1])
                new.append((out, tdot))
            (k11, _), (k22, _), (k12, tdot12) = new
            t12 = t12 * tdot12
        elif kind == "pool":
            k11, k22, k12, t12 = (_pool(k) for k in (k11, k22, k12, t12))
        elif kind == "gap":
            k12, t12 = k12.mean(), t12.mean()
        elif kind == "flatten":
            h, w = k12.shape[:2]
            k12 = np.mean([k12[p0, p1, p0, p1] for p0, p1 in _positions(h, w)])
            t12 = np.mean([t12[p0, p1, p0, p1] for p0, p1 in _positions(h, w)])
        elif kind == "dense":
            _, w_std, b_std = layer
            k12 = w_std ** 2 * k12 + b_std ** 2
            t12 = w_std ** 2 * t12 + k12
        else:
            raise ValueError(f"unknown layer {layer!r}")
    return float(k12), float(t12)


def kernel_matrices(x1, x2, arch):
    """``(nngp, ntk)`` matrices over all image pairs of two batches (NHWC)."""
    out = np.array([[pair_kernel(a, b, arch) for b in x2] for a in x1])
    return out[..., 0], out[..., 1]


# ---------------------------------------------------------------- finite random CNN (Monte Carlo)

ACTIVATIONS = {"relu": lambda h: np.maximum(h, 0), "erf": erf}


def _conv_forward(x, weight, bias, w_std, padding):
    """NHWC conv, stride 1, NTK parameterization: ``W_std / sqrt(f^2 C) sum w x + b``."""
    n, h, w, c = x.shape
    f = weight.shape[0]
    r = f // 2
    if padding == "SAME":
        x = np.pad(x, ((0, 0), (r, r), (r, r), (0, 0)))
    ho, wo = x.shape[1] - f + 1, x.shape[2] - f + 1
    out = np.zeros((n, ho, wo, weight.shape[-1]))
    for d0, d1 in itertools.product(range(f), repeat=2):
        out += x[:, d0:d0 + ho, d1:d1 + wo, :] @ weight[d0, d1]
    return w_std / np.sqrt(f * f * c) * out + bias


def finite_cnn_outputs(x, arch, width, rng):
    """Scalar outputs of one random finite CNN with ``width`` channels per conv layer."""
    h = x
    for layer in arch:
        kind = layer[0]
        if kind == "conv":
            _, f, padding, w_std, b_std = layer
            weight = rng.standard_normal((f, f, h.shape[-1], width))
            h = _conv_forward(h, weight, b_std * rng.standard_normal(width), w_std, padding)
        elif kind in ACTIVATIONS:
            h = ACTIVATIONS[kind](h)
        elif kind == "pool":
            n, hh, ww, c = h.shape
            h = h[:, :hh // 2 * 2, :ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).mean((2, 4))
        elif kind == "gap":
            h = h.mean(axis=(1, 2))
        elif kind == "flatten":
            h = h.reshape(len(h), -1)
        elif kind == "dense":
            _, w_std, b_std = layer
            h = w_std / np.sqrt(h.shape[-1]) * h @ rng.standard_normal(h.shape[-1]) \
                + b_std * rng.standard_normal()
    return h

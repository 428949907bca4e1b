"""Independent computations for the kernel tests: finite random networks with a hand backprop.

Nothing here uses kernelkip's kernel code. A network of the architecture ``FC(depth, W_std,
b_std, activation)`` in the NTK parameterization,

    h_1 = W_std / sqrt(d) W_1 x + b_std b_1,
    h_{l+1} = W_std / sqrt(n) W_{l+1} phi(h_l) + b_std b_{l+1},

with standard normal weights, converges as its width n grows to the NNGP (output covariance
over the random weights) and to the NTK (inner product of parameter gradients).
"""
import numpy as np
from scipy.special import erf, ndtr

ACTIVATIONS = {
    "relu": (lambda h: np.maximum(h, 0), lambda h: (h > 0).astype(h.dtype)),
    "erf": (erf, lambda h: 2 / np.sqrt(np.pi) * np.exp(-h * h)),
    "gelu": (lambda h: h * ndtr(h),
             lambda h: ndtr(h) + h * np.exp(-h * h / 2) / np.sqrt(2 * np.pi)),
}


def finite_fc(x1, x2, depth, W_std, b_std, activation, width, rng):
    """``(nngp_hidden, ntk)`` of one random finite network between the rows of x1 and x2.

    ``nngp_hidden`` is the readout's NNGP given the last hidden layer,
    ``W_std^2 mean_i phi(h_i(x1)) phi(h_i(x2)) + b_std^2``: an unbiased Monte-Carlo estimate of
    the depth-1 NNGP (the hidden units are i.i.d.). ``ntk`` is the empirical NTK of the scalar
    readout, summed over every weight and bias by backpropagation.
    """
    phi, dphi = ACTIVATIONS[activation]
    x = np.concatenate([x1, x2]).reshape(len(x1) + len(x2), -1)
    acts, pre, mats = [x], [], []
    fan_in = x.shape[1]
    for _ in range(depth):
        w = rng.standard_normal((fan_in, width))
        b = rng.standard_normal(width)
        h = W_std / np.sqrt(fan_in) * acts[-1] @ w + b_std * b
        pre.append(h)
        mats.append(w)
        acts.append(phi(h))
        fan_in = width
    w_out = rng.standard_normal(fan_in)
    n1 = len(x1)
    last = acts[-1]
    nngp = W_std ** 2 * (last[:n1] @ last[n1:].T) / fan_in + b_std ** 2
    # backprop of the scalar readout f = W_std/sqrt(n) w_out . a_L + b_std b_out
    ntk = W_std ** 2 * (last[:n1] @ last[n1:].T) / fan_in + b_std ** 2
    delta = np.broadcast_to(W_std / np.sqrt(fan_in) * w_out, last.shape)  # df/da_L
    for layer in range(depth - 1, -1, -1):
        d_h = delta * dphi(pre[layer])                                       # df/dh_layer
        a_in = acts[layer]
        f_in = a_in.shape[1]
        dd = d_h[:n1] @ d_h[n1:].T
        ntk = ntk + W_std ** 2 / f_in * dd * (a_in[:n1] @ a_in[n1:].T) + b_std ** 2 * dd
        delta = W_std / np.sqrt(f_in) * d_h @ mats[layer].T
    return nngp, ntk


def hidden_unit_products(x1, x2, W_std, b_std, activation, width, rng):
    """Samples ``W_std^2 phi(h(x1)) phi(h(x2)) + b_std^2`` for ``width`` i.i.d. hidden units
    of a depth-1 network: their mean estimates the NNGP, their spread gives its standard error."""
    phi, _ = ACTIVATIONS[activation]
    x1, x2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    d = x1.shape[1]
    w = rng.standard_normal((d, width))
    b = rng.standard_normal(width)
    h1 = W_std / np.sqrt(d) * x1 @ w + b_std * b
    h2 = W_std / np.sqrt(d) * x2 @ w + b_std * b
    return W_std ** 2 * phi(h1)[:, None, :] * phi(h2)[None, :, :] + b_std ** 2

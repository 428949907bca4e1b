"""Independent computations for the kernel tests. Nothing here calls kernelkip's kernel code.

1. **Finite random networks** (NumPy, hand-written backward). A network of the architecture
   ``FC(depth, W_std, b_std, phi)`` in the NTK parameterization,

       h_1 = W_std / sqrt(d) W_1 x + b_std b_1,
       h_{l+1} = W_std / sqrt(n_l) W_{l+1} phi(h_l) + b_std b_{l+1},

   with standard normal weights and a scalar readout ``f = h_{depth+1}``. As its width grows,
   the covariance of ``f`` over the random weights tends to the NNGP, and the inner product of
   its parameter gradients (the empirical NTK) tends to the NTK.

2. **Quadrature of the dual kernels**: ``E[g(u, v)]`` for a centred Gaussian pair ``(u, v)``
   with variances ``v1, v2`` and covariance ``k``, by a two-dimensional product rule that does
   not use any closed form. See :func:`gaussian_pair_expectation`.
"""
import numpy as np
from scipy.special import erf, ndtr

import kernelkip as kk

__all__ = ["activation_functions", "init_fc", "fc_forward", "fc_param_grads", "fc_kernels",
           "mc_kernels", "one_hidden_layer_unit_samples", "gaussian_pair_expectation",
           "gauss_hermite_pair_expectation", "dual_by_quadrature"]


# ----------------------------------------------------------------------------- activations

def activation_functions(layer):
    """``(phi, dphi, kink_at_zero)`` for an activation layer value (its parameters only)."""
    if isinstance(layer, kk.ABRelu):
        a, b = layer.a, layer.b
        return (lambda h: a * np.minimum(h, 0) + b * np.maximum(h, 0),
                lambda h: np.where(h > 0, b, a) + 0.0 * h, True)
    if isinstance(layer, kk.Erf):
        a, b, c = layer.a, layer.b, layer.c
        return (lambda h: a * erf(b * h) + c,
                lambda h: a * b * 2 / np.sqrt(np.pi) * np.exp(-(b * h) ** 2), False)
    if hasattr(kk, "Gelu") and isinstance(layer, kk.Gelu):
        return (lambda h: h * ndtr(h),
                lambda h: ndtr(h) + h * np.exp(-h * h / 2) / np.sqrt(2 * np.pi), False)
    raise TypeError(f"no reference activation for {layer!r}")


# ----------------------------------------------------------------------------- finite networks

def init_fc(d, depth, width, rng):
    """Standard normal ``[(W_1, b_1), ..., (W_out, b_out)]``; ``W_l`` is (fan_in, fan_out)."""
    sizes = [d] + [width] * depth + [1]
    return [(rng.standard_normal((fan_in, fan_out)), rng.standard_normal(fan_out))
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:])]


def fc_forward(params, x, W_std, b_std, layer):
    """Outputs ``f`` of shape (n,) and the cache ``(inputs to each Dense, pre-activations)``."""
    phi, _, _ = activation_functions(layer)
    a = x.reshape(len(x), -1)
    inputs, pre = [], []
    for i, (w, b) in enumerate(params):
        inputs.append(a)
        h = W_std / np.sqrt(w.shape[0]) * (a @ w) + b_std * b
        pre.append(h)
        a = phi(h) if i < len(params) - 1 else h
    return a[:, 0], (inputs, pre)


def _deltas(params, cache, W_std, layer):
    """``df/dh_l`` per example for every Dense output ``h_l`` (hand-written backward)."""
    _, dphi, _ = activation_functions(layer)
    inputs, pre = cache
    n = inputs[0].shape[0]
    delta = np.ones((n, 1))  # df/dh at the readout
    deltas = [delta]
    for layer_index in range(len(params) - 1, 0, -1):
        w = params[layer_index][0]
        da = W_std / np.sqrt(w.shape[0]) * delta @ w.T  # df/d(input of this Dense)
        delta = da * dphi(pre[layer_index - 1])
        deltas.append(delta)
    return deltas[::-1]


def fc_param_grads(params, cache, W_std, b_std, layer):
    """Per-example gradients ``[(df/dW_l of shape (n, fan_in, fan_out), df/db_l (n, fan_out))]``.

    Explicit arrays: tiny sizes only (the tests compare them with finite differences).
    """
    inputs, _ = cache
    grads = []
    for (w, _), a, delta in zip(params, inputs, _deltas(params, cache, W_std, layer)):
        dw = W_std / np.sqrt(w.shape[0]) * a[:, :, None] * delta[:, None, :]
        grads.append((dw, b_std * delta))
    return grads


def fc_kernels(x1, x2, params, W_std, b_std, layer):
    """``(nngp, ntk)`` of one finite network between the rows of ``x1`` and ``x2``.

    ``nngp`` is the covariance of ``f(x1), f(x2)`` over the readout's weight and bias with the
    hidden layers fixed, ``W_std^2 / n <a_L(x1), a_L(x2)> + b_std^2``: averaged over networks it
    is the output covariance (the readout is independent of the rest). ``ntk`` is the empirical
    NTK, ``sum over parameters of df(x1)/dp df(x2)/dp``, by layer as
    ``<delta_l(x1), delta_l(x2)> (W_std^2 / fan_in <a(x1), a(x2)> + b_std^2)`` -- the inner
    product of the gradients of :func:`fc_param_grads` without forming them.
    """
    n1 = len(x1)
    x = np.concatenate([x1.reshape(n1, -1), x2.reshape(len(x2), -1)])
    _, cache = fc_forward(params, x, W_std, b_std, layer)
    inputs, _ = cache
    last = inputs[-1]
    nngp = W_std ** 2 / last.shape[1] * (last[:n1] @ last[n1:].T) + b_std ** 2
    ntk = np.zeros_like(nngp)
    for (w, _), a, delta in zip(params, inputs, _deltas(params, cache, W_std, layer)):
        dd = delta[:n1] @ delta[n1:].T
        ntk += dd * (W_std ** 2 / w.shape[0] * (a[:n1] @ a[n1:].T) + b_std ** 2)
    return nngp, ntk


def mc_kernels(x1, x2, depth, W_std, b_std, layer, width, n_nets, rng):
    """Monte-Carlo NNGP and NTK over ``n_nets`` independent networks of width ``width``.

    Returns ``(nngp_mean, nngp_se, ntk_mean, ntk_se)``; ``*_se`` is the standard error of the
    mean across networks. For depth >= 2 the finite-width bias is O(1/width); the standard
    error is O(1/sqrt(width * n_nets)).
    """
    d = int(np.prod(x1.shape[1:]))
    samples = [fc_kernels(x1, x2, init_fc(d, depth, width, rng), W_std, b_std, layer)
               for _ in range(n_nets)]
    nngp, ntk = (np.array(s) for s in zip(*samples))
    se = lambda a: a.std(axis=0, ddof=1) / np.sqrt(len(a))  # noqa: E731
    return nngp.mean(axis=0), se(nngp), ntk.mean(axis=0), se(ntk)


def one_hidden_layer_unit_samples(x1, x2, W_std, b_std, layer, width, rng):
    """Per-hidden-unit terms of one wide depth-1 network, shape (n1, n2, width) each.

    With ``h_i`` the i-th pre-activation and ``w_i`` its readout weight, unit ``i`` contributes
    ``W^2 phi(h_i(x1)) phi(h_i(x2)) + b^2`` to the NNGP and that plus
    ``W^2 w_i^2 phi'(h_i(x1)) phi'(h_i(x2)) (W^2 <x1, x2> / d + b^2)`` to the empirical NTK. The
    means over units are :func:`fc_kernels` of the network; the units are i.i.d., so the means
    are unbiased for the infinite-width kernels and their spread gives the standard error.
    """
    phi, dphi, _ = activation_functions(layer)
    x1, x2 = x1.reshape(len(x1), -1), x2.reshape(len(x2), -1)
    d = x1.shape[1]
    w = rng.standard_normal((d, width))
    b = rng.standard_normal(width)
    w_out = rng.standard_normal(width)
    h1 = W_std / np.sqrt(d) * x1 @ w + b_std * b
    h2 = W_std / np.sqrt(d) * x2 @ w + b_std * b
    nngp = W_std ** 2 * phi(h1)[:, None, :] * phi(h2)[None, :, :] + b_std ** 2
    first = W_std ** 2 * (x1 @ x2.T) / d + b_std ** 2
    ntk = nngp + (W_std ** 2 * w_out ** 2 * dphi(h1)[:, None, :] * dphi(h2)[None, :, :]
                  * first[:, :, None])
    return nngp, ntk


# ----------------------------------------------------------------------------- quadrature

def _gauss_legendre_panels(breaks, order):
    """Nodes and weights of Gauss-Legendre rules of ``order`` on each panel between ``breaks``."""
    t, w = np.polynomial.legendre.leggauss(order)
    lo, hi = breaks[:-1, None], breaks[1:, None]
    half = (hi - lo) / 2
    return ((lo + hi) / 2 + half * t).ravel(), (half * w).ravel()


def gaussian_pair_expectation(g, k, v1, v2, *, kinks=True, order=20, radius=12.0):
    """``E[g(u, v)]`` for ``(u, v) ~ N(0, [[v1, k], [k, v2]])`` by a polar product rule.

    Write ``u = sqrt(v1) z1``, ``v = sqrt(v2) (c z1 + s z2)`` with ``c = k / sqrt(v1 v2)``,
    ``s = sqrt(1 - c^2)`` and ``(z1, z2) = r (cos psi, sin psi)``:

        E[g] = 1/(2 pi) int_0^{2 pi} dpsi int_0^inf r exp(-r^2/2) g(...) dr.

    Plain Gauss-Hermite converges only algebraically across the kinks and jumps of ReLU-like
    functions along ``u = 0`` and ``v = 0``. In polar coordinates those lines are the four rays
    ``psi = +-pi/2`` and ``psi = theta +- pi/2`` (``theta = atan2(s, c)``), so the angle is cut
    there (``kinks=True``) and on a uniform grid of 16 panels, the radius into unit panels up to
    ``radius`` (the tail beyond 12 weighs exp(-72)); each panel gets Gauss-Legendre of
    ``order``. Within a panel the integrand is smooth, and the rule converges geometrically.
    """
    c = float(np.clip(k / np.sqrt(v1 * v2), -1.0, 1.0))
    s = np.sqrt(max(1.0 - c * c, 0.0))
    theta = np.arctan2(s, c)
    cuts = [0.0, 2 * np.pi] + list(np.linspace(0, 2 * np.pi, 17))
    if kinks:
        cuts += [(a % (2 * np.pi)) for a in (np.pi / 2, 3 * np.pi / 2, theta + np.pi / 2,
                                             theta + 3 * np.pi / 2)]
    cuts = np.unique(np.array(cuts))
    cuts = cuts[np.concatenate([[True], np.diff(cuts) > 1e-15])]
    psi, w_psi = _gauss_legendre_panels(cuts, order)
    r, w_r = _gauss_legendre_panels(np.arange(0.0, radius + 0.5), order)
    z1 = r[:, None] * np.cos(psi)[None, :]
    z2 = r[:, None] * np.sin(psi)[None, :]
    u = np.sqrt(v1) * z1
    v = np.sqrt(v2) * (c * z1 + s * z2)
    weight = (w_r * r * np.exp(-r * r / 2))[:, None] * w_psi[None, :] / (2 * np.pi)
    return float(np.sum(weight * g(u, v)))


def gauss_hermite_pair_expectation(g, k, v1, v2, *, order=120):
    """``E[g(u, v)]`` by a tensor Gauss-Hermite rule in ``(z1, z2)``: for smooth ``g`` only."""
    z, w = np.polynomial.hermite_e.hermegauss(order)  # weight exp(-z^2/2)
    w = w / np.sqrt(2 * np.pi)
    c = k / np.sqrt(v1 * v2)
    s = np.sqrt(max(1.0 - c * c, 0.0))
    z1, z2 = z[:, None], z[None, :]
    u = np.sqrt(v1) * z1 + 0 * z2
    v = np.sqrt(v2) * (c * z1 + s * z2)
    return float(np.sum(w[:, None] * w[None, :] * g(u, v)))


def dual_by_quadrature(layer, k, v1, v2, **kwargs):
    """``(T, Tdot) = (E[phi(u) phi(v)], E[phi'(u) phi'(v)])`` by the polar rule above."""
    phi, dphi, kink = activation_functions(layer)
    t = gaussian_pair_expectation(lambda u, v: phi(u) * phi(v), k, v1, v2, kinks=kink, **kwargs)
    tdot = gaussian_pair_expectation(lambda u, v: dphi(u) * dphi(v), k, v1, v2, kinks=kink,
                                     **kwargs)
    return t, tdot

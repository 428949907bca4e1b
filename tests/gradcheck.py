"""Gradient checks for hand-written VJPs, and moving test arrays to an engine's device.

``check_vjp`` is the dot test (PyLops) with a finite-difference right-hand side (umap): for a
random direction ``v`` and cotangent ``c``,

    <c, (f(x + eps v) - f(x - eps v)) / 2 eps>  ==  <pullback(c), v>,

one directional difference per check instead of one per coordinate. ``check_vjp_coordinates``
backs it up coordinate by coordinate, for tiny inputs only.

Tolerance. A sum ``<c, dK>`` can cancel, so its error is measured against the size of its terms,
``sum |c * dK|``, not against its value; on top of that the round-off of the difference quotient,
about ``eps_machine * sum |c * f(x)| / eps``, is allowed. Differences use Richardson extrapolation
(``(4 D(eps/2) - D(eps)) / 3``, error O(eps^4)) unless ``richardson=False``.
"""
import numpy as np

import kernelkip as kk
from kernelkip import _deps, backend

__all__ = ["directional_derivative", "check_vjp", "check_vjp_coordinates",
           "check_value_consistency", "to_engine", "to_host", "kernel_on", "pullback_on"]


# ----------------------------------------------------------------------------- device helpers

def to_engine(a, engine):
    """``a`` on the device that ``engine`` runs on (a CuPy array for ``"cupy"``)."""
    if a is None or engine != "cupy":
        return a
    return backend.to_device(a, _deps.get_cupy())


def to_host(a):
    """A NumPy array (``None`` and tuples pass through element-wise)."""
    if a is None:
        return None
    if isinstance(a, tuple):
        return tuple(to_host(b) for b in a)
    return backend.to_numpy(a)


def kernel_on(engine, x1, x2, arch, **kwargs):
    """``kk.kernel`` on ``engine``'s device with NumPy arrays in and out."""
    return to_host(kk.kernel(to_engine(x1, engine), to_engine(x2, engine), arch,
                             engine=engine, **kwargs))


def pullback_on(engine, x1, x2, arch, **kwargs):
    """``kk.kernel_pullback`` on ``engine``'s device with NumPy arrays in and out."""
    values, pullback = kk.kernel_pullback(to_engine(x1, engine), to_engine(x2, engine), arch,
                                          engine=engine, **kwargs)

    def host_pullback(*cots, **kw):
        return to_host(tuple(pullback(*(to_engine(c, engine) for c in cots), **kw)))

    return to_host(values), host_pullback


# ----------------------------------------------------------------------------- finite differences

def _as_tuple(out):
    return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def _shift(xs, vs, t):
    return tuple(None if x is None else (x if v is None else x + t * v) for x, v in zip(xs, vs))


def directional_derivative(f, xs, vs, eps, *, richardson=True):
    """Central difference of ``f`` at ``xs`` along ``vs``; a tuple with one array per output.

    ``f(*xs)`` returns an array or a tuple of arrays; ``None`` entries of ``vs`` hold that
    argument fixed.
    """
    def central(h):
        plus = _as_tuple(f(*_shift(xs, vs, h)))
        minus = _as_tuple(f(*_shift(xs, vs, -h)))
        return tuple((np.asarray(p, dtype=np.float64) - np.asarray(m, dtype=np.float64)) / (2 * h)
                     for p, m in zip(plus, minus))

    coarse = central(eps)
    if not richardson:
        return coarse
    fine = central(eps / 2)
    return tuple((4 * b - a) / 3 for a, b in zip(coarse, fine))


def _rms(x):
    r = float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
    return r if r > 0 else 1.0


def check_vjp(f, pullback, xs, rng, rtol=1e-6, *, eps=1e-4, cots=None, richardson=True):
    """Assert the dot test ``<c, J v> == <J^T c, v>`` with ``J v`` from finite differences.

    Parameters
    ----------
    f : callable
        ``f(*xs)`` -> array or tuple of arrays (one per cotangent), float64.
    pullback : callable
        ``pullback(*cots)`` -> one gradient per entry of ``xs``; ``None`` where that gradient
        was not asked for (the argument is then held fixed).
    xs : tuple of ndarray or None
        The point. ``None`` entries are passed through unchanged.
    rng : numpy.random.Generator
        Draws the direction (scaled to each argument's RMS) and, unless given, the cotangents.
    rtol : float
        Relative tolerance against ``sum |c * J v|``.
    eps : float
        Finite-difference step along the scaled direction.
    cots : tuple of ndarray, optional
        Cotangents; standard normal of each output's shape by default.

    Returns
    -------
    (analytic, numeric, tolerance) : floats, for messages and further checks.
    """
    xs = tuple(xs)
    base = _as_tuple(f(*xs))
    if cots is None:
        cots = tuple(rng.standard_normal(np.shape(b)) for b in base)
    cots = _as_tuple(cots)
    grads = _as_tuple(pullback(*cots))
    assert len(grads) == len(xs), (len(grads), len(xs))
    vs = tuple(None if (x is None or g is None) else rng.standard_normal(np.shape(x)) * _rms(x)
               for x, g in zip(xs, grads))
    for g, x in zip(grads, xs):
        if g is not None:
            assert np.shape(g) == np.shape(x), (np.shape(g), np.shape(x))
            assert np.all(np.isfinite(g)), "non-finite gradient"
    analytic = sum(float(np.sum(np.asarray(g, dtype=np.float64) * v))
                   for g, v in zip(grads, vs) if v is not None)
    derivs = directional_derivative(f, xs, vs, eps, richardson=richardson)
    numeric = sum(float(np.sum(c * d)) for c, d in zip(cots, derivs))
    size = sum(float(np.sum(np.abs(c * d))) for c, d in zip(cots, derivs))
    roundoff = sum(float(np.sum(np.abs(c * np.asarray(b, dtype=np.float64)))) for c, b in
                   zip(cots, base)) * 100 * np.finfo(np.float64).eps / eps
    tol = rtol * size + roundoff
    assert abs(analytic - numeric) <= tol, (
        f"dot test failed: <pullback(c), v> = {analytic!r}, <c, FD(v)> = {numeric!r}, "
        f"|difference| = {abs(analytic - numeric):.3e} > tolerance {tol:.3e}")
    return analytic, numeric, tol


def check_vjp_coordinates(f, pullback, xs, rng, rtol=1e-6, *, eps=1e-5, cots=None):
    """Assert every coordinate of ``pullback(c)`` against a central difference of ``<c, f>``.

    For tiny inputs only: it costs four evaluations of ``f`` per coordinate. Each coordinate
    gets the tolerance of :func:`check_vjp` for the direction along that coordinate.
    """
    xs = tuple(xs)
    base = _as_tuple(f(*xs))
    if cots is None:
        cots = tuple(rng.standard_normal(np.shape(b)) for b in base)
    cots = _as_tuple(cots)
    grads = _as_tuple(pullback(*cots))
    roundoff_scale = sum(float(np.sum(np.abs(c * np.asarray(b, dtype=np.float64))))
                         for c, b in zip(cots, base)) * 100 * np.finfo(np.float64).eps
    for which, (x, g) in enumerate(zip(xs, grads)):
        if x is None or g is None:
            continue
        step = eps * _rms(x)
        for idx in np.ndindex(*np.shape(x)):
            v = np.zeros_like(x, dtype=np.float64)
            v[idx] = 1.0
            vs = tuple(v if i == which else None for i in range(len(xs)))
            derivs = directional_derivative(f, xs, vs, step)
            numeric = sum(float(np.sum(c * d)) for c, d in zip(cots, derivs))
            size = sum(float(np.sum(np.abs(c * d))) for c, d in zip(cots, derivs))
            tol = rtol * size + roundoff_scale / step
            assert abs(float(g[idx]) - numeric) <= tol, (
                f"argument {which}, coordinate {idx}: pullback {float(g[idx])!r}, "
                f"finite difference {numeric!r}, tolerance {tol:.3e}")


def check_value_consistency(value_from_pullback, value_from_forward):
    """The value a ``*_pullback`` returns equals the plain forward's value, bit for bit."""
    for a, b in zip(_as_tuple(value_from_pullback), _as_tuple(value_from_forward)):
        np.testing.assert_array_equal(a, b)

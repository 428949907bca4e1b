"""Hypothesis strategies for kernel tests: architectures, input batches, cotangents.

Inputs are built from a drawn seed rather than element by element: the kernels are smooth only
away from collinear rows (``sin(theta) -> 0``, a kink for ReLU-like activations), so the batches
drawn here keep every two rows at least ``arccos(MAX_COS)`` apart (as lines: ``x`` and ``-x``
are collinear too) and every row's ``|x|^2 / d`` in ``[0.25, 4]``. Points that do meet are the
subject of dedicated tests, not of random draws.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import kernelkip as kk

__all__ = ["MAX_COS", "activations", "fc_archs", "spread_rows", "input_pairs", "cotangents",
           "covariances"]

MAX_COS = 0.95


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)


def _slope():
    """A slope of a piecewise-linear activation: 0, or of magnitude in [0.05, 1.5] (not 1e-137,
    whose square underflows and says nothing about the kernel)."""
    return st.one_of(st.just(0.0), _floats(0.05, 1.5), _floats(-1.5, -0.05))


@st.composite
def activations(draw, families=("relu", "leaky_relu", "abrelu", "erf", "gelu")):
    """An activation layer value: ``Relu()``, ``LeakyRelu(alpha)``, ``ABRelu(a, b)``,
    ``Erf(a, b, c)`` or ``Gelu()`` (when this version of kernelkip has it)."""
    families = [f for f in families if f != "gelu" or hasattr(kk, "Gelu")]
    family = draw(st.sampled_from(families))
    if family == "relu":
        return kk.Relu()
    if family == "leaky_relu":
        return kk.LeakyRelu(draw(st.one_of(st.just(0.0), _floats(0.01, 0.5))))
    if family == "abrelu":
        return kk.ABRelu(draw(_slope()), draw(_slope()))
    if family == "erf":
        return kk.Erf(draw(_floats(0.5, 2.0)), draw(_floats(0.3, 2.0)), draw(_floats(-1.0, 1.0)))
    return kk.Gelu()


@st.composite
def fc_archs(draw, depth=st.integers(0, 3),
             families=("relu", "leaky_relu", "abrelu", "erf", "gelu")):
    """``kk.FC(depth, W_std, b_std, activation)``: depth 0-3, W_std in [0.5, 2], b_std in
    [0, 0.5], activation from :func:`activations`."""
    return kk.FC(draw(depth), draw(_floats(0.5, 2.0)), draw(_floats(0.0, 0.5)),
                 draw(activations(families)))


def spread_rows(rng, n, feature_shape, max_cos=MAX_COS, sq_norm=(0.25, 4.0)):
    """``n`` random rows of shape ``feature_shape`` with pairwise ``|cos| <= max_cos`` and
    ``|x|^2 / d`` uniform in ``sq_norm``. Raises ``RuntimeError`` if the directions do not fit."""
    d = int(np.prod(feature_shape))
    rows = []
    for _ in range(100 * n + 1000):
        if len(rows) == n:
            break
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        if all(abs(u @ r) <= max_cos for r in rows):
            rows.append(u)
    if len(rows) < n:
        raise RuntimeError(f"could not place {n} directions in {d} dimensions")
    scale = np.sqrt(d * rng.uniform(*sq_norm, size=n))
    return (np.array(rows) * scale[:, None]).reshape((n, *feature_shape))


@st.composite
def input_pairs(draw, self_kernel=None, max_n1=5, max_n2=4, dtype=np.float64):
    """``(x1, x2)`` with well-separated rows (module docstring); ``x2`` is ``None`` for a
    self-kernel. ``self_kernel=None`` draws both cases. Feature shapes are ``(d,)`` with
    ``d`` in 2..6 or, now and then, ``(2, 3)`` (flattened by the kernel)."""
    shape = draw(st.one_of(st.integers(2, 6).map(lambda d: (d,)), st.just((2, 3))))
    is_self = draw(st.booleans()) if self_kernel is None else self_kernel
    cap = 4 if shape == (2,) else max_n1 + max_n2  # few lines fit 18 degrees apart in a plane
    n1 = draw(st.integers(1, min(max_n1, cap - (0 if is_self else 1))))
    n2 = 0 if is_self else draw(st.integers(1, min(max_n2, cap - n1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows = spread_rows(rng, n1 + n2, shape).astype(dtype)
    return rows[:n1], (None if is_self else rows[n1:])


def cotangents(shape):
    """A cotangent array of ``shape``, entries in [-2, 2] (zeros included: they mean "unused")."""
    return hnp.arrays(np.float64, shape, elements=_floats(-2.0, 2.0))


@st.composite
def covariances(draw, c_extremes=True):
    """``(k, v1, v2)`` of a valid 2x2 covariance: v in [0.05, 5], correlation c in [-1, 1],
    drawn near +-1 (``1 - 10**-j``) a quarter of the time when ``c_extremes``."""
    v1, v2 = draw(_floats(0.05, 5.0)), draw(_floats(0.05, 5.0))
    c = draw(_floats(-1.0, 1.0))
    if c_extremes and draw(st.integers(0, 3)) == 0:
        c = draw(st.sampled_from([-1.0, 1.0])) * (1 - 10.0 ** -draw(st.integers(1, 12)))
    return c * np.sqrt(v1 * v2), v1, v2

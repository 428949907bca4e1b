"""KRR solve, ridge and the adjoint of the solve."""
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from kernelkip import krr


def _spd(rng, n, cond=10.0):
    q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    return (q * np.geomspace(1, 1 / cond, n)) @ q.T


@given(n=st.integers(1, 12), k=st.integers(1, 4), reg=st.floats(0, 1),
       scale=st.sampled_from(krr.RIDGE_SCALES), seed=st.integers(0, 2**31))
def test_solve_equals_dense_solve(n, k, reg, scale, seed):
    rng = np.random.default_rng(seed)
    k_ss, y = _spd(rng, n), rng.normal(size=(n, k))
    alpha, fac = krr.solve(k_ss, y, reg, scale)
    ridge = reg * np.trace(k_ss) / n if scale == "trace" else reg
    assert fac.ridge == pytest.approx(ridge)
    np.testing.assert_allclose(alpha, np.linalg.solve(k_ss + ridge * np.eye(n), y), rtol=1e-9,
                               atol=1e-12)


@given(n=st.integers(1, 10), k=st.integers(1, 3), reg=st.floats(1e-4, 1),
       scale=st.sampled_from(krr.RIDGE_SCALES), seed=st.integers(0, 2**31))
def test_solve_vjp_equals_finite_differences(n, k, reg, scale, seed):
    """<grad_alpha, d alpha> == <grad_K, dK> + <grad_y, dy> along a random direction."""
    rng = np.random.default_rng(seed)
    k_ss, y = _spd(rng, n), rng.normal(size=(n, k))
    d_k = rng.normal(size=(n, n))
    d_k = d_k + d_k.T  # symmetric directions keep K symmetric, as the kernel does
    d_y, grad_alpha = rng.normal(size=(n, k)), rng.normal(size=(n, k))
    alpha, fac = krr.solve(k_ss, y, reg, scale)
    grad_k, grad_y = krr.solve_vjp(fac, alpha, grad_alpha)
    eps = 1e-6

    def f(t):
        return np.sum(grad_alpha * krr.solve(k_ss + t * d_k, y + t * d_y, reg, scale)[0])

    fd = (f(eps) - f(-eps)) / (2 * eps)
    analytic = np.sum(grad_k * d_k) + np.sum(grad_y * d_y)
    assert analytic == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_trace_term_of_relative_ridge_matters():
    """Dropping the d trace(K) term gives a wrong gradient: the test above can fail."""
    rng = np.random.default_rng(0)
    k_ss, y, g = _spd(rng, 5), rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    alpha, fac = krr.solve(k_ss, y, 0.5, "trace")
    grad_k, _ = krr.solve_vjp(fac, alpha, g)
    alpha_abs, fac_abs = krr.solve(k_ss, y, fac.ridge, "absolute")
    grad_k_abs, _ = krr.solve_vjp(fac_abs, alpha_abs, g)
    np.testing.assert_allclose(alpha, alpha_abs)
    diff = grad_k - grad_k_abs
    np.testing.assert_allclose(diff, np.trace(diff) / 5 * np.eye(5), atol=1e-12)
    assert abs(np.trace(diff)) > 1e-3


def test_non_positive_definite_kernel_warns_and_stays_finite():
    k_ss = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    with pytest.warns(RuntimeWarning, match="not numerically positive definite"):
        alpha, fac = krr.solve(k_ss, np.ones((2, 1)), reg=0.0)
    assert fac.kind == "eigh"
    assert np.all(np.isfinite(alpha))


def test_positive_definite_kernel_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, fac = krr.solve(np.eye(3), np.ones(3), reg=1e-6)
    assert fac.kind == "cholesky"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_kernel_raises(bad):
    k_ss = np.eye(3)
    k_ss[0, 1] = bad
    with pytest.raises(np.linalg.LinAlgError, match="NaN or inf"):
        krr.factor(k_ss)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="square"):
        krr.factor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="ridge_scale"):
        krr.factor(np.eye(2), ridge_scale="relative")
    with pytest.raises(ValueError, match="reg"):
        krr.factor(np.eye(2), reg=-1.0)
    with pytest.raises(ValueError, match="rows"):
        krr.solve(np.eye(2), np.ones((3, 1)))

"""Kernel ridge regression with an explicit adjoint of the solve.

The ridge is relative by default: ``ridge = reg * trace(K_ss) / n`` (``ridge_scale="trace"``).
This is neural-tangents' ``diag_reg`` with ``diag_reg_absolute_scale=False``, the KIP code's
``reg`` and RFAD's ``jit``. ``ridge_scale="absolute"`` uses ``ridge = reg``.

Solves are done in float64 by Cholesky. If ``K_ss + ridge I`` is not numerically positive
definite, the solve falls back to a symmetric eigendecomposition with the eigenvalues clipped
at a floor, and says so with a ``RuntimeWarning``; a matrix with NaN/inf raises. Derivations
(eq. numbers cited in the code): ``docs/math/krr.md``.
"""
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import _validation
from .backend import to_numpy

__all__ = ["RIDGE_SCALES", "KRRFactor", "ridge_value", "factor", "solve", "predict",
           "solve_vjp"]

RIDGE_SCALES = ("trace", "absolute")


def ridge_value(k_ss, reg, ridge_scale="trace"):
    """The ridge added to the diagonal: ``reg * trace(k_ss) / n`` or ``reg`` (eq. krr.2)."""
    _validation.check_choice(ridge_scale, "ridge_scale", RIDGE_SCALES)
    reg = _validation.check_positive(reg, "reg")
    if ridge_scale == "trace":
        return reg * float(np.trace(k_ss)) / k_ss.shape[0]
    return reg


@dataclass(frozen=True)
class KRRFactor:
    """A factorization of ``A = K_ss + ridge I`` (float64).

    Attributes
    ----------
    kind : {"cholesky", "eigh"}
        ``"eigh"`` only after the Cholesky factorization failed.
    data : tuple
        ``(L,)`` lower Cholesky factor, or ``(eigenvalues, eigenvectors)`` (clipped).
    ridge : float
        The ridge that was added.
    reg, ridge_scale
        As given; ``solve_vjp`` needs them for the derivative of a relative ridge.
    """

    kind: str
    data: tuple
    ridge: float
    reg: float
    ridge_scale: str

    @property
    def n(self):
        return self.data[0].shape[0]

    def solve(self, b):
        """``A^{-1} b`` in float64 (``A`` is symmetric, so this is also ``A^{-T} b``)."""
        b = np.asarray(b, dtype=np.float64)
        if self.kind == "cholesky":
            return scipy.linalg.cho_solve((self.data[0], True), b, check_finite=False)
        w, v = self.data
        return v @ ((v.T @ b) / (w[:, None] if b.ndim == 2 else w))


def factor(k_ss, reg=1e-6, ridge_scale="trace"):
    """Factor ``K_ss + ridge I`` in float64.

    Parameters
    ----------
    k_ss : ndarray of shape (n, n)
        Symmetric support-support kernel.
    reg : float
        Ridge; relative to ``trace(k_ss) / n`` unless ``ridge_scale="absolute"``.
    ridge_scale : {"trace", "absolute"}

    Returns
    -------
    KRRFactor

    Raises
    ------
    numpy.linalg.LinAlgError
        ``k_ss`` holds NaN/inf, is zero with a zero ridge, or even the eigendecomposition
        fallback fails.

    Warns
    -----
    RuntimeWarning
        When Cholesky fails and the clipped eigendecomposition is used instead.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelkip import krr
    >>> f = krr.factor(np.eye(3), reg=0.5)
    >>> f.kind, f.ridge
    ('cholesky', 0.5)
    """
    k = np.asarray(to_numpy(k_ss), dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"k_ss has shape {k.shape}; expected a square (n, n) matrix")
    if not np.all(np.isfinite(k)):
        raise np.linalg.LinAlgError("k_ss contains NaN or inf; the kernel inputs are not finite "
                                    "or the kernel overflowed")
    ridge = ridge_value(k, reg, ridge_scale)
    if ridge == 0 and not np.any(k):
        raise np.linalg.LinAlgError("k_ss is identically zero, so a ridge relative to its trace "
                                    "is zero too and the solve is undefined (every support "
                                    "feature vanished?); use ridge_scale='absolute' or other "
                                    "inputs")
    a = k + ridge * np.eye(k.shape[0])
    try:
        low, _ = scipy.linalg.cho_factor(a, lower=True, check_finite=False)
        if np.all(np.isfinite(low)):
            return KRRFactor("cholesky", (low,), ridge, float(reg), ridge_scale)
    except np.linalg.LinAlgError:
        pass
    try:
        w, v = np.linalg.eigh((a + a.T) / 2)
    except np.linalg.LinAlgError as err:
        raise np.linalg.LinAlgError(f"K_ss + ridge I could not be factored (ridge={ridge:.3g}); "
                                    f"increase reg") from err
    floor = max(ridge, np.finfo(np.float64).eps * k.shape[0] * max(abs(w).max(), 1e-300))
    warnings.warn(f"K_ss + ridge I is not numerically positive definite (ridge={ridge:.3g}, "
                  f"smallest eigenvalue {w.min():.3g}); solving by eigendecomposition with "
                  f"eigenvalues clipped at {floor:.3g}. Increase reg to avoid this.",
                  RuntimeWarning, stacklevel=2)
    return KRRFactor("eigh", (np.maximum(w, floor), v), ridge, float(reg), ridge_scale)


def solve(k_ss, y_support, reg=1e-6, ridge_scale="trace"):
    """Dual coefficients ``alpha = (K_ss + ridge I)^{-1} y_support`` (eq. krr.1).

    Returns
    -------
    alpha : ndarray of shape (n, k), float64
    fac : KRRFactor
        Reusable for :func:`solve_vjp`.

    Examples
    --------
    >>> import numpy as np
    >>> from kernelkip import krr
    >>> alpha, fac = krr.solve(2 * np.eye(2), np.ones((2, 1)), reg=0.0)
    >>> alpha.ravel().tolist()
    [0.5, 0.5]
    """
    fac = factor(k_ss, reg, ridge_scale)
    y = _validation.check_labels(to_numpy(y_support), fac.n, "y_support")
    return fac.solve(y), fac


def predict(k_ts, alpha):
    """``K_ts @ alpha`` in float64."""
    return np.asarray(to_numpy(k_ts), dtype=np.float64) @ alpha


def solve_vjp(fac, alpha, grad_alpha):
    """Adjoint of ``alpha = (K_ss + ridge(K_ss) I)^{-1} y``.

    Parameters
    ----------
    fac : KRRFactor
    alpha : ndarray of shape (n, k)
    grad_alpha : ndarray of shape (n, k)
        Gradient of the loss with respect to ``alpha``.

    Returns
    -------
    grad_k_ss : ndarray of shape (n, n)
        ``-B alphaᵀ + (reg / n) trace(-B alphaᵀ) I`` with ``B = A^{-1} grad_alpha`` (eq. krr.5);
        the second term is the derivative of the relative ridge (absent for an absolute one).
    grad_y : ndarray of shape (n, k)
        ``B`` (eq. krr.4).
    """
    b = fac.solve(grad_alpha)
    grad_a = -b @ alpha.T
    if fac.ridge_scale == "trace":
        # eq. (krr.5): ridge = reg tr(K)/n, so dL/dK gains (reg/n) tr(dL/dA) I
        grad_a[np.diag_indices_from(grad_a)] += fac.reg / fac.n * np.trace(grad_a)
    return grad_a, b

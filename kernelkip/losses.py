"""Outer losses, each with its gradient next to it (value and gradient in one call)."""
import numpy as np

from . import _validation

__all__ = ["REDUCTIONS", "mse", "mse_grad", "accuracy"]

REDUCTIONS = ("mean", "sum")


def mse_grad(pred, y, reduction="mean"):
    """``0.5 * mean((pred - y)**2)`` (or ``0.5 * sum``) and its gradient w.r.t. ``pred``.

    ``"mean"`` averages over every entry (``n * k``), as the KIP code does.

    Returns
    -------
    loss : float
    grad_pred : ndarray, shaped like ``pred``

    Examples
    --------
    >>> import numpy as np
    >>> mse_grad(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]), reduction="sum")
    (2.5, array([[1., 2.]]))
    """
    _validation.check_choice(reduction, "reduction", REDUCTIONS)
    if pred.shape != y.shape:
        raise ValueError(f"predictions have shape {pred.shape} but targets have shape {y.shape}")
    resid = pred - y
    scale = 1.0 / resid.size if reduction == "mean" else 1.0
    return float(0.5 * scale * np.sum(resid * resid)), scale * resid


def mse(pred, y, reduction="mean"):
    """The value of :func:`mse_grad` alone."""
    return mse_grad(pred, y, reduction)[0]


def accuracy(pred, y):
    """Fraction of rows whose argmax agrees (``y`` one-hot/centred, or integer labels)."""
    labels = y if y.ndim == 1 else np.argmax(y, axis=1)
    return float(np.mean(np.argmax(pred, axis=1) == labels))

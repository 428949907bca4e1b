"""Outer losses, each with its gradient next to it (value and gradient in one call)."""
import numpy as np

from . import _validation

__all__ = ["REDUCTIONS", "LOSSES", "mse", "mse_grad", "platt_xent", "platt_xent_grad", "accuracy"]

REDUCTIONS = ("mean", "sum")
LOSSES = ("mse", "platt")


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


def _class_labels(y, n, k):
    labels = np.asarray(y)
    if labels.ndim == 2:
        labels = np.argmax(labels, axis=1)
    if labels.shape != (n,):
        raise ValueError(f"targets of shape {np.shape(y)} do not fit predictions of shape "
                         f"{(n, k)}")
    labels = labels.astype(np.int64, copy=False)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"class labels must lie in [0, {k}), got {labels.min()}..{labels.max()}")
    return labels


def platt_xent_grad(pred, y, log_temp, reduction="mean"):
    """Platt-scaled cross-entropy ``-log softmax(tau * pred)[label]``, ``tau = exp(log_temp)``,
    with its gradients w.r.t. ``pred`` and ``log_temp`` (RFAD's outer loss; ``docs/math/rfad.md``,
    eq. rf.8).

    ``y`` holds integer labels, or one-hot/centred rows (their argmax is the label). ``"mean"``
    averages over the rows.

    Returns
    -------
    loss : float
    grad_pred : ndarray, shaped like ``pred``
    grad_log_temp : float

    Raises
    ------
    ValueError
        Fewer than 2 classes (``pred`` with one column): the softmax over one class is 1
        whatever the input, so the loss would be 0 with zero gradients. Labels that do not fit.

    Examples
    --------
    >>> import numpy as np
    >>> loss, g, gt = platt_xent_grad(np.zeros((2, 4)), np.array([0, 3]), 0.0)
    >>> round(loss, 6) == round(float(np.log(4)), 6), g.shape
    (True, (2, 4))
    """
    _validation.check_choice(reduction, "reduction", REDUCTIONS)
    pred = np.asarray(pred, dtype=np.float64)
    if pred.ndim != 2:
        raise ValueError(f"predictions have shape {pred.shape}; expected (n, num_classes)")
    n, k = pred.shape
    if k < 2:
        raise ValueError(f"Platt cross-entropy needs at least 2 classes, got predictions of shape "
                         f"{pred.shape}; one-hot encode class labels, or use MSE for one "
                         f"regression target")
    labels = _class_labels(y, n, k)
    tau = float(np.exp(log_temp))
    logits = tau * pred
    logits = logits - logits.max(axis=1, keepdims=True)
    log_z = np.log(np.sum(np.exp(logits), axis=1))
    rows = np.arange(n)
    scale = 1.0 / n if reduction == "mean" else 1.0
    loss = scale * float(np.sum(log_z - logits[rows, labels]))
    resid = np.exp(logits - log_z[:, None])                  # softmax - one-hot, eq. (rf.9)
    resid[rows, labels] -= 1.0
    grad_logits = scale * resid
    return loss, tau * grad_logits, float(np.sum(grad_logits * tau * pred))


def platt_xent(pred, y, log_temp, reduction="mean"):
    """The value of :func:`platt_xent_grad` alone."""
    return platt_xent_grad(pred, y, log_temp, reduction)[0]


def accuracy(pred, y):
    """Fraction of rows whose argmax agrees (``y`` one-hot/centred, or integer labels)."""
    labels = y if y.ndim == 1 else np.argmax(y, axis=1)
    return float(np.mean(np.argmax(pred, axis=1) == labels))

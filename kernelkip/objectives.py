"""Meta-model matching objectives: the KIP loss with exact gradients, and Label Solve.

An objective is a callable ``objective(params, batch) -> (loss, grads, info)`` where ``params``
is a dict of arrays (``x_support``, ``y_support``), ``batch = (x_target, y_target)``, ``grads``
has the keys of ``params`` and ``info`` holds scalars for the log. ``kernelkip.distill`` runs
any of them.
"""
from dataclasses import dataclass

import numpy as np

from . import _validation, krr, losses
from .arch import Serial
from .kernels import kernel_pullback
from .kernels.recursion import kernel_rows_pullback
from .kernels.recursion import GETS

__all__ = ["kip_loss", "kip_value_and_grad", "KIP", "kip", "label_solve"]


def _check_problem(x_support, y_support, x_target, y_target, check_finite):
    x_support = _validation.check_array(x_support, "x_support", finite=check_finite)
    x_target = _validation.check_array(x_target, "x_target", dtype=x_support.dtype,
                                       finite=check_finite)
    if x_support.shape[1:] != x_target.shape[1:]:
        raise ValueError(f"x_support has shape {x_support.shape} and x_target has shape "
                         f"{x_target.shape}; their trailing (feature) shapes must match")
    y_support = _validation.check_labels(y_support, x_support.shape[0], "y_support",
                                         finite=check_finite)
    y_target = _validation.check_labels(y_target, x_target.shape[0], "y_target",
                                        num_classes=y_support.shape[1], finite=check_finite)
    return x_support, y_support, x_target, y_target


def kip_value_and_grad(x_support, y_support, x_target, y_target, arch, *, kernel="ntk",
                       reg=1e-6, ridge_scale="trace", reduction="mean", engine="auto",
                       check_finite=True):
    """KIP loss, its gradients and the target predictions (the work behind :func:`kip_loss`).

    Returns
    -------
    dict with keys ``loss``, ``grad_x_support``, ``grad_y_support``, ``pred`` (float64
    predictions on the targets) and ``ridge``.
    """
    _validation.check_choice(kernel, "kernel", GETS)
    x_s, y_s, x_t, y_t = _check_problem(x_support, y_support, x_target, y_target, check_finite)
    opts = dict(get=kernel, engine=engine, check_finite=False)
    k_ss, pull_ss = kernel_pullback(x_s, None, arch, **opts)
    alpha, fac = krr.solve(k_ss, y_s, reg, ridge_scale)                     # eq. (krr.1)
    dtype = x_s.dtype
    y_t64 = np.asarray(y_t, dtype=np.float64)
    n_t = len(y_t64)
    pred = np.empty((n_t, alpha.shape[1]))
    sums = {"loss": 0.0, "k_ts_t_grad": np.zeros((len(x_s), alpha.shape[1]))}

    def cot_k_ts(rows, k_block):
        # the rows' share of the loss; their cotangent, eq. (krr.3); K_tsᵀ ∂L/∂pred for (krr.4)
        k64 = np.asarray(k_block, dtype=np.float64)
        pred[rows] = k64 @ alpha
        loss, grad_pred = losses.mse_grad(pred[rows], y_t64[rows], reduction)
        share = len(k64) / n_t if reduction == "mean" else 1.0
        sums["loss"] += share * loss
        grad_pred *= share
        sums["k_ts_t_grad"] += k64.T @ grad_pred
        return (grad_pred @ alpha.T).astype(dtype)

    # rows of K_ts are pulled back as soon as they are known (conv nets keep their buffers)
    _, g_from_ts = kernel_rows_pullback(x_t, x_s, arch, cot_k_ts, wrt=(False, True), **opts)
    loss = sums["loss"]
    grad_k_ss, grad_y_s = krr.solve_vjp(fac, alpha, sums["k_ts_t_grad"])    # eq. (krr.4-5)
    g_from_ss, _ = pull_ss(grad_k_ss.astype(dtype))
    return {"loss": loss, "grad_x_support": g_from_ts + g_from_ss,
            "grad_y_support": grad_y_s.astype(y_s.dtype), "pred": pred, "ridge": fac.ridge}


def kip_loss(x_support, y_support, x_target, y_target, arch, *, kernel="ntk", reg=1e-6,
             ridge_scale="trace", reduction="mean", engine="auto", check_finite=True):
    """Kernel Inducing Points loss and its exact gradients.

    .. math:: L = \\tfrac12 \\sum (K_{ts} (K_{ss} + \\lambda I)^{-1} y_s - y_t)^2,
              \\qquad \\lambda = \\mathrm{reg}\\cdot\\mathrm{tr}(K_{ss}) / n_s

    Parameters
    ----------
    x_support : ndarray of shape (n_s, ...)
    y_support : ndarray of shape (n_s, k) or (n_s,)
    x_target : ndarray of shape (n_t, ...)
    y_target : ndarray of shape (n_t, k) or (n_t,)
    arch : Serial
    kernel : {"ntk", "nngp"}
    reg : float
        Ridge, relative to ``trace(K_ss) / n_s`` by default (see ``kernelkip.krr``).
    ridge_scale : {"trace", "absolute"}
    reduction : {"mean", "sum"}
        ``"mean"`` is the KIP code's ``0.5 * mean`` over all entries of the residual.
    engine : {"auto", "numpy", "numba", "cupy"}
    check_finite : bool

    Returns
    -------
    loss : float
    grad_x_support : ndarray shaped like ``x_support``
    grad_y_support : ndarray of shape (n_s, k)

    Raises
    ------
    ValueError
        Mismatched shapes, label widths or row counts; NaN/inf inputs; unknown options.
    numpy.linalg.LinAlgError
        Non-finite kernel.

    Notes
    -----
    The KRR adjoint (``docs/math/krr.md``) gives the cotangents of ``K_ts`` and ``K_ss``; the
    kernel pullbacks carry them to the support inputs. The trace in the ridge is
    differentiated. Nguyen et al. (2021a).

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> xs, xt = rng.normal(size=(4, 5)), rng.normal(size=(10, 5))
    >>> ys, yt = np.eye(2)[[0, 1, 0, 1]], np.eye(2)[rng.integers(0, 2, 10)]
    >>> loss, g_xs, g_ys = kk.kip_loss(xs, ys, xt, yt, kk.FC(depth=1))
    >>> g_xs.shape, g_ys.shape
    ((4, 5), (4, 2))
    """
    out = kip_value_and_grad(x_support, y_support, x_target, y_target, arch, kernel=kernel,
                             reg=reg, ridge_scale=ridge_scale, reduction=reduction,
                             engine=engine, check_finite=check_finite)
    return out["loss"], out["grad_x_support"], out["grad_y_support"]


@dataclass(frozen=True)
class KIP:
    """The KIP objective for :func:`kernelkip.distill` (build it with :func:`kip`)."""

    arch: Serial
    kernel: str = "ntk"
    reg: float = 1e-6
    ridge_scale: str = "trace"
    reduction: str = "mean"
    engine: str = "auto"

    def __post_init__(self):
        _validation.check_choice(self.kernel, "kernel", GETS)
        _validation.check_choice(self.ridge_scale, "ridge_scale", krr.RIDGE_SCALES)
        _validation.check_choice(self.reduction, "reduction", losses.REDUCTIONS)
        _validation.check_positive(self.reg, "reg")

    param_names = ("x_support", "y_support")

    def __call__(self, params, batch):
        x_target, y_target = batch
        out = kip_value_and_grad(params["x_support"], params["y_support"], x_target, y_target,
                                 self.arch, kernel=self.kernel, reg=self.reg,
                                 ridge_scale=self.ridge_scale, reduction=self.reduction,
                                 engine=self.engine)
        grads = {"x_support": out["grad_x_support"], "y_support": out["grad_y_support"]}
        info = {"target_acc": losses.accuracy(out["pred"], np.asarray(y_target))}
        return out["loss"], grads, info

    def to_dict(self):
        return {"method": "kip", "arch": self.arch.to_dict(), "kernel": self.kernel,
                "reg": self.reg, "ridge_scale": self.ridge_scale, "reduction": self.reduction}


def kip(arch, *, kernel="ntk", reg=1e-6, ridge_scale="trace", reduction="mean", engine="auto"):
    """Build the KIP objective: ``objective(params, batch) -> (loss, grads, info)``.

    Examples
    --------
    >>> import kernelkip as kk
    >>> obj = kk.objectives.kip(kk.FC(depth=1), reg=1e-6)
    >>> obj.kernel
    'ntk'
    """
    return KIP(arch, kernel, reg, ridge_scale, reduction, engine)


def label_solve(x_support, x_target, y_target, arch, *, kernel="ntk", reg=1e-6,
                ridge_scale="trace", engine="auto"):
    """Label Solve: the support labels that minimise the KRR loss on the targets, in closed form.

    .. math:: y_s^* = \\arg\\min_{y} \\| K_{ts} (K_{ss} + \\lambda I)^{-1} y - y_t \\|^2
              = (K_{ts} A^{-1})^{+} y_t

    Returns
    -------
    y_support : ndarray of shape (n_s, k), float64
        The minimum-norm least-squares solution (``scipy.linalg.lstsq``).

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> xs, xt, yt = rng.normal(size=(3, 4)), rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    >>> kk.label_solve(xs, xt, yt, kk.FC(depth=1)).shape
    (3, 2)
    """
    import scipy.linalg

    _validation.check_choice(kernel, "kernel", GETS)
    x_s = _validation.check_array(x_support, "x_support")
    x_t = _validation.check_array(x_target, "x_target", dtype=x_s.dtype)
    y_t = _validation.check_labels(y_target, x_t.shape[0], "y_target")
    from .kernels import kernel as kernel_fn
    k_ss = kernel_fn(x_s, None, arch, get=kernel, engine=engine)
    k_ts = np.asarray(kernel_fn(x_t, x_s, arch, get=kernel, engine=engine), dtype=np.float64)
    fac = krr.factor(k_ss, reg, ridge_scale)
    m = fac.solve(k_ts.T).T                       # K_ts A^{-1} (A symmetric)
    return scipy.linalg.lstsq(m, np.asarray(y_t, dtype=np.float64))[0]

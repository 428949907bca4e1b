"""Meta-model matching objectives: KIP and RFAD losses with exact gradients, and Label Solve.

An objective is a callable ``objective(params, batch) -> (loss, grads, info)`` where ``params``
is a dict of arrays (``x_support``, ``y_support``), ``batch = (x_target, y_target)``, ``grads``
has the keys of ``params`` and ``info`` holds scalars for the log. An objective whose
``needs_rng`` is true is called as ``objective(params, batch, rng=rng)`` with the run's
generator (RFAD draws its random networks from it). ``kernelkip.distill`` runs any of them.
"""
from dataclasses import dataclass

import numpy as np

from . import _validation, krr, losses
from .arch import Serial
from .features import RandomFeatures, check_weights, features, features_vjp, sample_weights
from .kernels import kernel_pullback
from .kernels.recursion import kernel_rows_pullback
from .kernels.recursion import GETS

__all__ = ["kip_loss", "kip_value_and_grad", "KIP", "kip", "rfad_value_and_grad", "rfad_loss",
           "RFAD", "rfad", "label_solve"]


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


def _outer_loss(loss, pred, y_t, log_temp, reduction):
    """``(value, dL/dpred, dL/dlog_temp)`` of the MSE or Platt outer loss."""
    if loss == "mse":
        value, grad_pred = losses.mse_grad(pred, y_t, reduction)
        return value, grad_pred, 0.0
    return losses.platt_xent_grad(pred, y_t, log_temp, reduction)


def rfad_value_and_grad(x_support, y_support, x_target, y_target, rf, weights, *,
                        loss="platt", log_temp=0.0, reg=5e-3, ridge_scale="trace",
                        reduction="mean", check_finite=True):
    """RFAD loss and its gradients for one draw of random networks (``docs/math/rfad.md``).

    ``K = Phi Phi^T + b_d**2`` with ``Phi`` the random features (eq. rf.1); the targets' features
    need no gradient, the support's are pulled back through the networks by hand.

    Returns
    -------
    dict with ``loss``, ``grad_x_support``, ``grad_y_support``, ``grad_log_temp`` (0 for MSE),
    ``pred`` (float64 target predictions) and ``ridge``.

    Raises
    ------
    ValueError
        ``weights`` drawn for another ``rf`` or image shape (``features.check_weights``);
        ``loss="platt"`` with one label column; mismatched shapes; NaN/inf; unknown options.
    """
    _validation.check_choice(loss, "loss", losses.LOSSES)
    x_s, y_s, x_t, y_t = _check_problem(x_support, y_support, x_target, y_target, check_finite)
    if loss == "platt" and y_s.shape[1] < 2:
        # a softmax over one class is 1: loss 0 and zero gradients, so nothing would be learned
        raise ValueError(f"loss='platt' needs at least 2 classes, but y_support has shape "
                         f"{np.shape(y_support)} (one label column); one-hot encode class labels "
                         f"(kernelkip.data.one_hot_centered), or use loss='mse' for one "
                         f"regression target")
    if not np.isfinite(log_temp):
        raise ValueError(f"log_temp must be finite, got {log_temp!r}")
    check_weights(weights, rf, x_s.shape[1:])
    b2 = rf.head.b_std ** 2
    phi_s, tape = features(x_s, weights, rf, save=True, check_finite=False)
    phi_t = features(x_t, weights, rf, check_finite=False)
    p_s = phi_s.astype(np.float64)
    k_ss = p_s @ p_s.T + b2                                                 # eq. (rf.1)
    alpha, fac = krr.solve(k_ss, y_s, reg, ridge_scale)                     # eq. (krr.1)
    k_ts = (phi_t @ phi_s.T).astype(np.float64) + b2
    pred = k_ts @ alpha
    value, grad_pred, grad_log_temp = _outer_loss(loss, pred, np.asarray(y_t, np.float64),
                                                  log_temp, reduction)
    grad_k_ts = grad_pred @ alpha.T                                          # eq. (krr.3)
    grad_k_ss, grad_y_s = krr.solve_vjp(fac, alpha, k_ts.T @ grad_pred)      # eq. (krr.4-5)
    # K_ss = Phi_s Phi_s^T + b^2, K_ts = Phi_t Phi_s^T + b^2                eq. (rf.3)
    grad_phi_s = (grad_k_ss + grad_k_ss.T) @ p_s + grad_k_ts.T @ phi_t.astype(np.float64)
    grad_x = features_vjp(tape, grad_phi_s)
    return {"loss": value, "grad_x_support": grad_x.astype(x_s.dtype, copy=False),
            "grad_y_support": grad_y_s.astype(y_s.dtype), "grad_log_temp": grad_log_temp,
            "pred": pred, "ridge": fac.ridge}


def rfad_loss(x_support, y_support, x_target, y_target, rf, weights, **kwargs):
    """``(loss, grad_x_support, grad_y_support, grad_log_temp)`` of RFAD for one network draw.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    >>> w = kk.sample_weights(rf, (8, 8, 1), rng)
    >>> xs, xt = rng.normal(size=(4, 8, 8, 1)), rng.normal(size=(6, 8, 8, 1))
    >>> ys, yt = np.eye(2)[[0, 1, 0, 1]], np.eye(2)[[0, 1, 1, 0, 0, 1]]
    >>> loss, g_x, g_y, g_t = kk.rfad_loss(xs.astype(np.float32), ys, xt, yt, rf, w)
    >>> g_x.shape, g_y.shape
    ((4, 8, 8, 1), (4, 2))
    """
    out = rfad_value_and_grad(x_support, y_support, x_target, y_target, rf, weights, **kwargs)
    return out["loss"], out["grad_x_support"], out["grad_y_support"], out["grad_log_temp"]


@dataclass(frozen=True)
class RFAD:
    """The RFAD objective for :func:`kernelkip.distill` (build it with :func:`rfad`).

    Each call draws ``rf.models`` fresh networks from the run's generator. With
    ``loss="platt"`` the parameters include ``log_temp`` (shape ``(1,)``), the log of the
    softmax temperature.
    """

    rf: RandomFeatures
    loss: str = "platt"
    reg: float = 5e-3
    ridge_scale: str = "trace"
    reduction: str = "mean"

    def __post_init__(self):
        _validation.check_choice(self.loss, "loss", losses.LOSSES)
        _validation.check_choice(self.ridge_scale, "ridge_scale", krr.RIDGE_SCALES)
        _validation.check_choice(self.reduction, "reduction", losses.REDUCTIONS)
        _validation.check_positive(self.reg, "reg")

    needs_rng = True

    @property
    def param_names(self):
        return ("x_support", "y_support") + (("log_temp",) if self.loss == "platt" else ())

    def __call__(self, params, batch, rng):
        x_target, y_target = batch
        # validated before the draw: the weights take x_support's dtype, and integer weights
        # would all truncate to 0 (integer images become float64 here, float16 is refused)
        x_s = _validation.check_array(params["x_support"], "x_support", min_ndim=4,
                                      finite=False)
        weights = sample_weights(self.rf, x_s.shape[1:], rng, x_s.dtype)
        log_temp = float(np.ravel(params["log_temp"])[0]) if self.loss == "platt" else 0.0
        out = rfad_value_and_grad(x_s, params["y_support"], x_target, y_target, self.rf, weights,
                                  loss=self.loss, log_temp=log_temp, reg=self.reg,
                                  ridge_scale=self.ridge_scale, reduction=self.reduction)
        grads = {"x_support": out["grad_x_support"], "y_support": out["grad_y_support"]}
        info = {"target_acc": losses.accuracy(out["pred"], np.asarray(y_target))}
        if self.loss == "platt":
            grads["log_temp"] = np.full(np.shape(params["log_temp"]), out["grad_log_temp"])
            info["temperature"] = float(np.exp(log_temp))
        return out["loss"], grads, info

    def to_dict(self):
        return {"method": "rfad", "rf": self.rf.to_dict(), "loss": self.loss, "reg": self.reg,
                "ridge_scale": self.ridge_scale, "reduction": self.reduction}


def rfad(arch, *, width=128, models=8, loss="platt", reg=5e-3, ridge_scale="trace",
         reduction="mean"):
    """Build the RFAD objective (Loo et al. 2022): random-feature NNGP of ``models`` random
    finite versions of ``arch`` (``width`` channels), KRR, and a Platt or MSE outer loss.

    Examples
    --------
    >>> import kernelkip as kk
    >>> obj = kk.objectives.rfad(kk.ConvNet(3))
    >>> obj.param_names
    ('x_support', 'y_support', 'log_temp')
    """
    return RFAD(RandomFeatures(arch, width, models), loss, reg, ridge_scale, reduction)


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

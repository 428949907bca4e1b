"""Optimizers as ``(init, update)`` pairs over dicts of NumPy arrays.

``opt.init(params) -> state`` and ``opt.update(grads, state, params) -> (params, state)``.
States are plain dataclasses that convert to and from flat dicts of arrays
(:func:`state_to_arrays`, :func:`state_from_arrays`), so a checkpoint can hold them and a resumed
run continues bit for bit.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Optimizer", "AdamState", "SGDState", "adam", "sgd", "get_optimizer",
           "state_to_arrays", "state_from_arrays", "OPTIMIZERS"]


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: ``init(params) -> state`` and
    ``update(grads, state, params) -> (params, state)``."""

    name: str
    init: Callable
    update: Callable
    hyper: dict


@dataclass
class AdamState:
    step: int
    mu: dict
    nu: dict


@dataclass
class SGDState:
    step: int
    velocity: dict


def _lr_for(lr, name):
    if isinstance(lr, dict):
        if name not in lr:
            raise KeyError(f"no learning rate for parameter {name!r}; the lr dict has "
                           f"{sorted(lr)}")
        return float(lr[name])
    return float(lr)


def _check_grads(grads, params):
    if set(grads) != set(params):
        raise ValueError(f"gradients for {sorted(grads)} but parameters {sorted(params)}")
    for name, g in grads.items():
        if g.shape != params[name].shape:
            raise ValueError(f"gradient of {name!r} has shape {g.shape}; the parameter has "
                             f"{params[name].shape}")
        if not np.all(np.isfinite(g)):
            raise FloatingPointError(f"the gradient of {name!r} holds NaN or inf")


def adam(lr, b1=0.9, b2=0.999, eps=1e-8):
    """Adam (Kingma & Ba), with optax.adam's bias-corrected update.

    .. math:: m \\leftarrow b_1 m + (1-b_1) g,\\quad v \\leftarrow b_2 v + (1-b_2) g^2,\\quad
              p \\leftarrow p - \\mathrm{lr}\\, \\hat m / (\\sqrt{\\hat v} + \\epsilon)

    Parameters
    ----------
    lr : float or dict
        Step size, or one per parameter name (0 freezes a parameter).
    b1, b2, eps : float

    Returns
    -------
    Optimizer

    Examples
    --------
    >>> import numpy as np
    >>> opt = adam(0.1)
    >>> p = {"w": np.zeros(2)}
    >>> p, s = opt.update({"w": np.ones(2)}, opt.init(p), p)
    >>> p["w"].round(6).tolist()
    [-0.1, -0.1]
    """
    def init(params):
        return AdamState(0, {k: np.zeros_like(v) for k, v in params.items()},
                         {k: np.zeros_like(v) for k, v in params.items()})

    def update(grads, state, params):
        _check_grads(grads, params)
        t = state.step + 1
        mu, nu, new = {}, {}, {}
        for name, p in params.items():
            g = np.asarray(grads[name], dtype=p.dtype)
            mu[name] = b1 * state.mu[name] + (1 - b1) * g
            nu[name] = b2 * state.nu[name] + (1 - b2) * g * g
            m_hat = mu[name] / (1 - b1 ** t)
            v_hat = nu[name] / (1 - b2 ** t)
            new[name] = (p - _lr_for(lr, name) * m_hat / (np.sqrt(v_hat) + eps)).astype(p.dtype)
        return new, AdamState(t, mu, nu)

    return Optimizer("adam", init, update, {"lr": lr, "b1": b1, "b2": b2, "eps": eps})


def sgd(lr, momentum=0.0, nesterov=False):
    """SGD with optional (Nesterov) momentum: ``v = momentum v + g; p -= lr v``.

    Examples
    --------
    >>> import numpy as np
    >>> opt = sgd(0.5)
    >>> p = {"w": np.ones(1)}
    >>> opt.update({"w": np.ones(1)}, opt.init(p), p)[0]["w"].tolist()
    [0.5]
    """
    def init(params):
        return SGDState(0, {k: np.zeros_like(v) for k, v in params.items()})

    def update(grads, state, params):
        _check_grads(grads, params)
        vel, new = {}, {}
        for name, p in params.items():
            g = np.asarray(grads[name], dtype=p.dtype)
            vel[name] = momentum * state.velocity[name] + g
            step = g + momentum * vel[name] if nesterov else vel[name]
            new[name] = (p - _lr_for(lr, name) * step).astype(p.dtype)
        return new, SGDState(state.step + 1, vel)

    return Optimizer("sgd", init, update, {"lr": lr, "momentum": momentum,
                                           "nesterov": nesterov})


OPTIMIZERS = {"adam": adam, "sgd": sgd}


def get_optimizer(name, lr, **kwargs):
    """An optimizer by name (``"adam"`` or ``"sgd"``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(OPTIMIZERS)}")
    return OPTIMIZERS[name](lr, **kwargs)


def state_to_arrays(state):
    """A flat ``{str: ndarray}`` view of an optimizer state (for ``.npz`` checkpoints)."""
    out = {"kind": np.array(type(state).__name__), "step": np.array(state.step)}
    for field_name in ("mu", "nu", "velocity"):
        for name, value in getattr(state, field_name, {}).items():
            out[f"{field_name}/{name}"] = value
    return out


def state_from_arrays(arrays):
    """Inverse of :func:`state_to_arrays`."""
    kind, step = str(arrays["kind"]), int(arrays["step"])

    def group(prefix):
        return {k[len(prefix) + 1:]: np.array(v) for k, v in arrays.items()
                if k.startswith(prefix + "/")}

    if kind == "AdamState":
        return AdamState(step, group("mu"), group("nu"))
    if kind == "SGDState":
        return SGDState(step, group("velocity"))
    raise ValueError(f"unknown optimizer state kind {kind!r}")

"""Architecture values in the style of neural-tangents' ``stax``.

Layers are frozen dataclasses: hashable (usable as cache keys), with a ``repr`` that is valid
Python, and JSON-serialisable through :meth:`Serial.to_dict` / :func:`from_dict`. They carry no
maths: ``kernelkip.kernels.recursion.RULES`` maps each layer type to its forward rule and VJP.
"""
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = ["Dense", "ABRelu", "Relu", "LeakyRelu", "Erf", "Gelu", "Serial", "serial", "FC",
           "from_dict", "ACTIVATIONS"]

PARAMETERIZATIONS = ("ntk",)


def _check_number(name, value, *, positive=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (positive and v < 0):
        raise ValueError(f"{name} must be a finite{' non-negative' if positive else ''} "
                         f"number, got {value!r}")
    return v


@dataclass(frozen=True)
class Dense:
    """Fully-connected layer of infinite width, NTK parameterization.

    Kernel rule (neural-tangents' ``stax.Dense``):
    ``nngp' = W_std**2 * nngp + b_std**2`` and ``ntk' = W_std**2 * ntk + nngp'``.
    """

    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def __post_init__(self):
        object.__setattr__(self, "W_std", _check_number("W_std", self.W_std, positive=True))
        object.__setattr__(self, "b_std", _check_number("b_std", self.b_std, positive=True))
        if self.parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {self.parameterization!r}; "
                             f"supported: {PARAMETERIZATIONS}")


@dataclass(frozen=True)
class ABRelu:
    """Piecewise-linear activation ``a * min(x, 0) + b * max(x, 0)`` (neural-tangents' ABRelu)."""

    a: float = 0.0
    b: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "a", _check_number("a", self.a))
        object.__setattr__(self, "b", _check_number("b", self.b))


def Relu():
    """``max(x, 0)``: ``ABRelu(a=0, b=1)``."""
    return ABRelu(0.0, 1.0)


def LeakyRelu(alpha=0.01):
    """``max(x, alpha * x)``: ``ABRelu(a=alpha, b=1)``."""
    return ABRelu(alpha, 1.0)


@dataclass(frozen=True)
class Erf:
    """``a * erf(b * x) + c`` (neural-tangents' ``stax.Erf``)."""

    a: float = 1.0
    b: float = 1.0
    c: float = 0.0

    def __post_init__(self):
        for f in fields(self):
            object.__setattr__(self, f.name, _check_number(f.name, getattr(self, f.name)))


@dataclass(frozen=True)
class Gelu:
    """``x * Phi(x)`` with the exact normal CDF (neural-tangents' ``stax.Gelu`` kernel)."""


LAYER_TYPES = {cls.__name__: cls for cls in (Dense, ABRelu, Erf, Gelu)}


@dataclass(frozen=True)
class Serial:
    """A sequence of layers applied in order (``kk.serial(...)``)."""

    layers: tuple

    def __post_init__(self):
        layers = tuple(self.layers)
        for layer in layers:
            if type(layer) not in LAYER_TYPES.values():
                raise TypeError(f"{layer!r} is not a kernelkip layer; expected one of "
                                f"{sorted(LAYER_TYPES)}")
        object.__setattr__(self, "layers", layers)

    def __repr__(self):
        return "serial(" + ", ".join(map(repr, self.layers)) + ")"

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def to_dict(self):
        """JSON-ready description: ``{"layers": [{"type": "Dense", "W_std": ...}, ...]}``."""
        return {"layers": [{"type": type(layer).__name__, **asdict(layer)}
                           for layer in self.layers]}


def serial(*layers):
    """Compose layers (nested ``Serial`` values are flattened).

    Examples
    --------
    >>> import kernelkip as kk
    >>> kk.serial(kk.Dense(), kk.Relu())
    serial(Dense(W_std=1.0, b_std=0.0, parameterization='ntk'), ABRelu(a=0.0, b=1.0))
    """
    flat = []
    for layer in layers:
        flat.extend(layer.layers if isinstance(layer, Serial) else [layer])
    return Serial(tuple(flat))


def from_dict(d):
    """Inverse of :meth:`Serial.to_dict`."""
    layers = []
    for spec in d["layers"]:
        spec = dict(spec)
        name = spec.pop("type")
        if name not in LAYER_TYPES:
            raise ValueError(f"unknown layer type {name!r}; expected one of {sorted(LAYER_TYPES)}")
        layers.append(LAYER_TYPES[name](**spec))
    return Serial(tuple(layers))


ACTIVATIONS = {"relu": Relu, "leaky_relu": LeakyRelu, "erf": Erf, "gelu": Gelu}


def _activation(activation):
    if isinstance(activation, (ABRelu, Erf, Gelu)):
        return activation
    if isinstance(activation, str):
        name, _, arg = activation.partition(":")
        if name not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{sorted(ACTIVATIONS)} (leaky_relu takes 'leaky_relu:ALPHA') "
                             f"or a layer value such as kk.ABRelu(a, b)")
        if arg and name != "leaky_relu":
            raise ValueError(f"activation {name!r} takes no argument, got {activation!r}")
        return ACTIVATIONS[name](float(arg)) if arg else ACTIVATIONS[name]()
    raise ValueError(f"activation must be a name or a layer value, got {activation!r}")


def FC(depth=1, W_std=2**0.5, b_std=0.1, activation="relu", parameterization="ntk"):
    """Fully-connected preset: ``[Dense, activation] * depth + [Dense]`` (the readout).

    Parameters
    ----------
    depth : int
        Number of hidden layers (>= 0).
    W_std, b_std : float
        Weight and bias standard deviations of every Dense layer.
    activation : str or layer
        ``"relu"``, ``"erf"``, ``"gelu"``, ``"leaky_relu"`` or ``"leaky_relu:ALPHA"``, or a
        layer value.
    parameterization : {"ntk"}

    Returns
    -------
    Serial

    Examples
    --------
    >>> import kernelkip as kk
    >>> len(kk.FC(depth=2))
    5
    """
    if not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    act = _activation(activation)
    dense = Dense(W_std, b_std, parameterization)
    return serial(*([dense, act] * int(depth)), dense)

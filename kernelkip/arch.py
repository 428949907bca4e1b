"""Architecture values in the style of neural-tangents' ``stax``.

Layers are frozen dataclasses: hashable (usable as cache keys), with a ``repr`` that is valid
Python, and JSON-serialisable through :meth:`Serial.to_dict` / :func:`from_dict`. They carry no
maths: ``kernelkip.kernels.recursion.RULES`` maps each layer type to its forward rule and VJP.
"""
from dataclasses import asdict, dataclass, fields

import numpy as np

__all__ = ["Dense", "ABRelu", "Relu", "LeakyRelu", "Erf", "Gelu", "Conv", "AvgPool",
           "GlobalAvgPool", "Flatten", "ConvNet", "Serial", "serial", "FC",
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


def _check_affine(layer):
    """Validate (and store as floats) ``W_std``, ``b_std`` and ``parameterization``."""
    object.__setattr__(layer, "W_std", _check_number("W_std", layer.W_std, positive=True))
    object.__setattr__(layer, "b_std", _check_number("b_std", layer.b_std, positive=True))
    if layer.parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization {layer.parameterization!r}; "
                         f"supported: {PARAMETERIZATIONS}")


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
        _check_affine(self)


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


PADDINGS = ("SAME", "VALID")


@dataclass(frozen=True)
class Conv:
    """2-D convolution of infinite channel count, stride 1, NTK parameterization (images NHWC).

    Kernel rule (neural-tangents' ``stax.Conv``): the kernel is averaged over the
    ``filter x filter`` window, ``K'[p, q] = W_std**2 / filter**2 * sum_d K[p+d, q+d] +
    b_std**2``; zero-padded positions add 0 but still count in ``filter**2``.
    """

    filter: int = 3
    padding: str = "SAME"
    W_std: float = 1.0
    b_std: float = 0.0
    parameterization: str = "ntk"

    def __post_init__(self):
        if not isinstance(self.filter, (int, np.integer)) or self.filter < 1 or \
                self.filter % 2 == 0:
            raise ValueError(f"filter must be a positive odd integer, got {self.filter!r}")
        if self.padding not in PADDINGS:
            raise ValueError(f"unknown padding {self.padding!r}; expected one of {PADDINGS}")
        object.__setattr__(self, "filter", int(self.filter))
        _check_affine(self)


@dataclass(frozen=True)
class AvgPool:
    """Average pooling over ``window x window`` blocks, stride ``window``, VALID."""

    window: int = 2

    def __post_init__(self):
        if not isinstance(self.window, (int, np.integer)) or self.window < 1:
            raise ValueError(f"window must be a positive integer, got {self.window!r}")
        object.__setattr__(self, "window", int(self.window))


@dataclass(frozen=True)
class GlobalAvgPool:
    """Mean over all positions: the kernel becomes the mean over all position pairs."""


@dataclass(frozen=True)
class Flatten:
    """Flatten before a Dense readout; the kernel is the mean over same-position entries
    (neural-tangents' ``stax.Flatten``)."""


SPATIAL_LAYERS = (Conv, AvgPool, GlobalAvgPool, Flatten)

LAYER_TYPES = {cls.__name__: cls for cls in (Dense, ABRelu, Erf, Gelu, Conv, AvgPool,
                                             GlobalAvgPool, Flatten)}


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


READOUTS = ("flatten", "gap")


def ConvNet(depth=3, W_std=2**0.5, b_std=0.1, readout="flatten", extra_conv=False,
            activation="relu", filter=3, padding="SAME"):
    """Convolutional preset: ``[Conv, act, AvgPool(2)] * depth``, then Flatten (or
    GlobalAvgPool) and a Dense readout.

    ``extra_conv=True`` puts one more ``[Conv, act]`` first: the KIP paper's "ConvNet";
    ``False`` is its "ConvNet3" (for ``depth=3``).

    Examples
    --------
    >>> import kernelkip as kk
    >>> len(kk.ConvNet(depth=3))
    11
    """
    if not isinstance(depth, (int, np.integer)) or depth < 0:
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r}; expected one of {READOUTS}")
    act = _activation(activation)
    conv = Conv(filter, padding, W_std, b_std)
    layers = [conv, act] if extra_conv else []
    layers += [conv, act, AvgPool(2)] * int(depth)
    layers += [Flatten() if readout == "flatten" else GlobalAvgPool(), Dense(W_std, b_std)]
    return serial(*layers)

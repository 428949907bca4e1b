"""The one driver of every kernel: a forward walk that keeps what each VJP needs, and the reverse
walk that pulls cotangents back to the inputs.

``RULES`` maps a layer type to its ``(fwd, vjp)`` pair. Adding a layer means one value class in
``kernelkip.arch``, one pair of functions, and one line here.

The rules' contract: ``fwd(layer, state, *, engine, save) -> (new_state, saved)`` and
``vjp(layer, saved, cot, *, engine) -> cot``. ``saved`` may hold the rule's *input* arrays but
never its output arrays; hence every rule owns the arrays of the state (or cotangent) it
receives and may overwrite those it does not save. The driver hands each rule fresh arrays:
the user's cotangents are copied first.
"""
import contextlib

import numpy as np

from .. import _validation
from .._progress import progress_bar
from ..arch import ABRelu, Dense, Erf, Gelu, Serial
from ..backend import array_namespace, resolve_engine
from . import conv
from .activations import activation_fwd, activation_vjp
from .dense import dense_fwd, dense_vjp
from .inputs import input_fwd, input_vjp
from .state import KernelState

__all__ = ["RULES", "GETS", "kernel", "nngp", "ntk", "kernel_pullback", "nngp_pullback",
           "ntk_pullback", "nngp_vjp", "ntk_vjp", "kernel_rows_pullback"]

RULES = {
    Dense: (dense_fwd, dense_vjp),
    ABRelu: (activation_fwd, activation_vjp),
    Erf: (activation_fwd, activation_vjp),
    Gelu: (activation_fwd, activation_vjp),
}

GETS = ("nngp", "ntk")


def _check_arch(arch):
    """``(spatial, rest)``: the convolutional part (run by ``kernels.conv``, empty for a
    fully-connected net) and the layers the RULES walk."""
    if not isinstance(arch, Serial):
        raise TypeError(f"arch must be a kernelkip architecture (kk.serial(...) or a preset "
                        f"such as kk.FC(...)), got {type(arch).__name__}")
    spatial, rest = conv.split(arch)
    for layer in rest:
        if type(layer) not in RULES:
            raise TypeError(f"layer {layer!r} has no kernel rule")
    return spatial, rest


def _normalize_get(get):
    single = isinstance(get, str)
    names = (get,) if single else tuple(get)
    if not names:
        raise ValueError("get is empty; expected 'nngp', 'ntk' or a tuple of them")
    for name in names:
        _validation.check_choice(name, "get", GETS)
    return names, single


def _forward(x1, x2, arch, names, engine, check_finite, save, progress=None):
    spatial, rest = _check_arch(arch)
    x1, x2 = _validation.check_pair(x1, x2, finite=check_finite)
    engine = resolve_engine(engine, x1, x2)
    if spatial:
        if engine != "numba":
            raise ValueError(f"the convolutional kernels run on engine='numba' only, got "
                             f"engine={engine!r}")
        state, saved_in = conv.conv_input_fwd(x1, x2, spatial, track_ntk="ntk" in names,
                                              save=save, progress=progress)
    else:
        state, saved_in = input_fwd(x1, x2, track_ntk="ntk" in names)
    saves = []
    for layer in rest:
        state, saved = RULES[type(layer)][0](layer, state, engine=engine, save=save)
        saves.append(saved)
    return state, (x1, x2, saved_in, saves, engine, spatial, rest)


def _values(state, names, single):
    out = tuple(getattr(state, name) for name in names)
    return out[0] if single else out


def kernel(x1, x2=None, arch=None, *, get=GETS, engine="auto", check_finite=True,
           progress=False):
    """Infinite-width NNGP and/or NTK of ``arch`` between two batches.

    Parameters
    ----------
    x1 : ndarray of shape (n1, ...)
        First batch; trailing axes are flattened for fully-connected architectures.
    x2 : ndarray of shape (n2, ...), optional
        Second batch. ``None`` means ``x1`` (the result is then exactly symmetric and its
        diagonal follows the coincident-point formulas).
    arch : Serial
        Architecture, e.g. ``kk.FC(depth=2)`` or ``kk.serial(...)``.
    get : {"nngp", "ntk"} or tuple of them
        What to return; a string returns one array, a tuple returns a tuple.
    engine : {"auto", "numpy", "numba", "cupy"}
        Implementation of the elementwise recursion (see ``kernelkip.backend``).
    check_finite : bool
        Raise on NaN/inf inputs.
    progress : bool
        Show a progress bar over image pairs (convolutional architectures).

    Returns
    -------
    ndarray of shape (n1, n2), or a tuple of them
        In the dtype of the inputs (float32 or float64).

    Raises
    ------
    ValueError
        Mismatched trailing shapes, non-finite inputs, unknown ``get`` or ``engine``.

    See Also
    --------
    kernel_pullback : the same values with a function that pulls cotangents back to the inputs.

    Notes
    -----
    Neural-tangents' ``stax`` conventions (NTK parameterization; input kernel ``x1 x2ᵀ / d``).
    Recursion of Cho & Saul (2009), Jacot et al. (2018); derivations in ``docs/math/fc.md``.
    Convolutional architectures (``kk.ConvNet``) take NHWC images and compute, pair by pair of
    images, only the spatial offsets their readout needs (``docs/math/conv.md``).

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> x = np.random.default_rng(0).normal(size=(4, 3))
    >>> nngp, ntk = kk.kernel(x, None, kk.FC(depth=1))
    >>> nngp.shape, bool(np.allclose(ntk, ntk.T))
    ((4, 4), True)
    """
    names, single = _normalize_get(get)
    with _progress_bar(progress, x1, x2, arch) as bar:
        state, _ = _forward(x1, x2, arch, names, engine, check_finite, save=False,
                            progress=bar)
    return _values(state, names, single)


def _progress_bar(progress, x1, x2, arch):
    """A progress bar over image pairs when asked for and the net is convolutional."""
    if not progress or not isinstance(arch, Serial) or not conv.split(arch)[0]:
        return contextlib.nullcontext()
    n1 = len(x1)
    n2 = None if x2 is None else len(x2)
    total = n1 + n1 * (n1 - 1) // 2 if n2 is None else n1 + n2 + n1 * n2
    return progress_bar(total, "kernel (pairs)")


def nngp(x1, x2=None, arch=None, **kwargs):
    """NNGP kernel of ``arch``: ``kernel(x1, x2, arch, get="nngp", ...)``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> kk.nngp(np.eye(3), arch=kk.FC(depth=1)).shape
    (3, 3)
    """
    return kernel(x1, x2, arch, get="nngp", **kwargs)


def ntk(x1, x2=None, arch=None, **kwargs):
    """Neural tangent kernel of ``arch``: ``kernel(x1, x2, arch, get="ntk", ...)``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> kk.ntk(np.eye(3), arch=kk.FC(depth=1)).shape
    (3, 3)
    """
    return kernel(x1, x2, arch, get="ntk", **kwargs)


def kernel_pullback(x1, x2=None, arch=None, *, get=GETS, engine="auto", check_finite=True,
                    progress=False):
    """Kernel values and their pullback (vector-Jacobian product) to the inputs.

    Parameters
    ----------
    x1, x2, arch, get, engine, check_finite, progress
        As in :func:`kernel`.

    Returns
    -------
    values : ndarray or tuple of ndarray
        As :func:`kernel` returns them.
    pullback : callable
        ``pullback(*cots, wrt=(True, True)) -> (grad_x1, grad_x2)``: one cotangent of shape
        (n1, n2) per name in ``get`` (``None`` means zero), gradients of
        ``sum(cot * value)`` summed over the names, shaped like the inputs. ``wrt`` skips the
        gradient that is not needed (it is then ``None``). For a self-kernel (``x2=None``)
        ``grad_x1`` is the total derivative and ``grad_x2`` is ``None``.

    Notes
    -----
    The forward keeps only what each layer's VJP needs; the pullback walks the layers in
    reverse (``docs/math/fc.md``, section "Reverse walk"). It can be called many times.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> x1, x2 = rng.normal(size=(4, 3)), rng.normal(size=(2, 3))
    >>> K, pullback = kk.kernel_pullback(x1, x2, kk.FC(depth=1), get="ntk")
    >>> g1, g2 = pullback(np.ones_like(K))
    >>> g1.shape, g2.shape
    ((4, 3), (2, 3))
    """
    names, single = _normalize_get(get)
    with _progress_bar(progress, x1, x2, arch) as bar:
        state, (x1, x2, saved_in, saves, engine, spatial, rest) = _forward(
            x1, x2, arch, names, engine, check_finite, save=True, progress=bar)
    values = _values(state, names, single)
    shape1 = x1.shape
    shape2 = None if x2 is None else x2.shape
    layers = rest
    input_pullback = conv.conv_input_vjp if spatial else input_vjp

    def pullback(*cots, wrt=(True, True)):
        if len(cots) != len(names):
            raise ValueError(f"pullback takes {len(names)} cotangent(s) for get={names}, "
                             f"got {len(cots)}")
        fields = {"nngp": None, "ntk": None}
        for name, c in zip(names, cots):
            if c is None:
                continue
            c = array_namespace(c).array(c, dtype=state.nngp.dtype)  # a copy: rules own it
            if c.shape != state.nngp.shape:
                raise ValueError(f"cotangent for {name!r} has shape {c.shape}; "
                                 f"expected {state.nngp.shape}")
            fields[name] = c
        if "ntk" not in names:
            fields["ntk"] = None
        cot = KernelState(None, fields["nngp"], None, fields["ntk"], state.is_self)
        for layer, saved in zip(reversed(layers), reversed(saves)):
            cot = RULES[type(layer)][1](layer, saved, cot, engine=engine)
        g1, g2 = input_pullback(saved_in, cot, wrt=wrt)
        g1 = None if g1 is None else g1.reshape(shape1)
        g2 = None if g2 is None else g2.reshape(shape2)
        return g1, g2

    return values, pullback


def nngp_pullback(x1, x2=None, arch=None, **kwargs):
    """``kernel_pullback(..., get="nngp")``: ``(K, pullback)``."""
    return kernel_pullback(x1, x2, arch, get="nngp", **kwargs)


def ntk_pullback(x1, x2=None, arch=None, **kwargs):
    """``kernel_pullback(..., get="ntk")``: ``(K, pullback)``."""
    return kernel_pullback(x1, x2, arch, get="ntk", **kwargs)


def _vjp(name, x1, x2, arch, cot, kwargs):
    _, pullback = kernel_pullback(x1, x2, arch, get=name, **kwargs)
    return pullback(cot)


def nngp_vjp(x1, x2, arch, cot, **kwargs):
    """Gradients of ``sum(cot * nngp(x1, x2))`` w.r.t. ``x1`` and ``x2``.

    Returns ``(grad_x1, grad_x2)``; with ``x2=None``, ``(total gradient, None)``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> x = np.random.default_rng(0).normal(size=(3, 2))
    >>> g, none = kk.nngp_vjp(x, None, kk.FC(depth=1), np.ones((3, 3)))
    >>> g.shape, none
    ((3, 2), None)
    """
    return _vjp("nngp", x1, x2, arch, cot, kwargs)


def ntk_vjp(x1, x2, arch, cot, **kwargs):
    """Gradients of ``sum(cot * ntk(x1, x2))`` w.r.t. ``x1`` and ``x2``.

    Returns ``(grad_x1, grad_x2)``; with ``x2=None``, ``(total gradient, None)``.

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> rng = np.random.default_rng(0)
    >>> g1, g2 = kk.ntk_vjp(rng.normal(size=(3, 2)), rng.normal(size=(4, 2)), kk.FC(depth=1),
    ...                     np.ones((3, 4)))
    >>> g1.shape, g2.shape
    ((3, 2), (4, 2))
    """
    return _vjp("ntk", x1, x2, arch, cot, kwargs)


def kernel_rows_pullback(x1, x2, arch, cot_fn, *, get="ntk", wrt=(True, True), engine="auto",
                         check_finite=True, max_bytes=2**27):
    """Stream a cross kernel by blocks of rows, pulling each block back as soon as its
    cotangent is known: ``cot = cot_fn(rows, K[rows])``.

    For convolutional nets each block's pair buffers are kept from the forward to the pullback,
    so no pair is computed twice (``kernel_pullback`` must recompute them, as it cannot keep
    every pair). Blocks hold as many rows as fit in ``max_bytes`` of kept buffers (at least
    one row). Fully-connected nets run as one block.

    Parameters
    ----------
    x1, x2 : ndarray
        ``x2`` is required (a cross kernel).
    arch, get, engine, check_finite
        As in :func:`kernel`; ``get`` is one name.
    cot_fn : callable
        ``cot_fn(rows, values) -> cotangent`` of the same shape, with ``rows`` a slice of
        ``x1``'s rows and ``values = kernel(x1[rows], x2)``; it may keep what it needs (KIP
        accumulates its predictions).
    wrt : (bool, bool)
        Which gradients to return (``None`` for the other).

    Returns
    -------
    (grad_x1, grad_x2)
    """
    names, single = _normalize_get(get)
    if not single:
        raise ValueError("kernel_rows_pullback takes one kernel name in get")
    if x2 is None:
        raise ValueError("kernel_rows_pullback needs x2 (a cross kernel)")
    spatial, rest = _check_arch(arch)
    x1, x2 = _validation.check_pair(x1, x2, finite=check_finite)
    if not spatial:
        values, pullback = kernel_pullback(x1, x2, arch, get=get, engine=engine,
                                           check_finite=False)
        return pullback(cot_fn(slice(0, len(x1)), values), wrt=wrt)
    engine = resolve_engine(engine, x1, x2)
    if engine != "numba":
        raise ValueError(f"the convolutional kernels run on engine='numba' only, got "
                         f"engine={engine!r}")
    stream = conv.RowStream(x1, x2, spatial, track_ntk="ntk" in names, wrt=wrt)
    rows_per = max(1, int(max_bytes // (stream.pair_bytes * len(x2))))
    for r0 in range(0, len(x1), rows_per):
        rows = slice(r0, min(len(x1), r0 + rows_per))
        state = stream.rows_fwd(np.arange(rows.start, rows.stop))
        saves = []
        for layer in rest:
            state, saved = RULES[type(layer)][0](layer, state, engine=engine, save=True)
            saves.append(saved)
        c = np.array(cot_fn(rows, getattr(state, names[0])), dtype=state.nngp.dtype)
        if c.shape != state.nngp.shape:
            raise ValueError(f"cot_fn returned shape {c.shape}; expected {state.nngp.shape}")
        cot = KernelState(None, c if names[0] == "nngp" else None, None,
                          c if names[0] == "ntk" else None, False)
        for layer, saved in zip(reversed(rest), reversed(saves)):
            cot = RULES[type(layer)][1](layer, saved, cot, engine=engine)
        stream.rows_vjp(cot)
    return stream.finish()

"""Array-namespace and engine policy: the one place that decides where and how code runs.

The device follows the input arrays (CuPy in, CuPy out). ``engine`` picks the implementation of
the hot loops: ``"numpy"`` (readable reference, also runs on CuPy arrays through ``xp``),
``"numba"`` (fused, parallel CPU loops) or ``"cupy"`` (GPU kernels); ``"auto"`` chooses.
"""
import sys

import numpy as np

from . import _deps

__all__ = ["ENGINES", "array_namespace", "is_cupy_array", "to_numpy", "to_device", "resolve_engine"]

ENGINES = ("auto", "numpy", "numba", "cupy")


def is_cupy_array(a):
    """Whether ``a`` is a CuPy array, without importing CuPy."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_namespace(*arrays):
    """``numpy`` or ``cupy``, according to the arrays given (``None`` entries are ignored).

    Raises
    ------
    TypeError
        If CuPy and NumPy arrays are mixed.
    """
    kinds = {is_cupy_array(a) for a in arrays if a is not None and not np.isscalar(a)}
    if kinds == {True}:
        return sys.modules["cupy"]
    if kinds == {True, False}:
        raise TypeError("mixed NumPy and CuPy arrays; move them to one device first "
                        "(kernelkip.backend.to_device / to_numpy)")
    return np


def to_numpy(a):
    """A NumPy copy of ``a`` (no copy when it already is one)."""
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def to_device(a, xp):
    """``a`` moved to the namespace ``xp`` (``numpy`` or ``cupy``)."""
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


def resolve_engine(engine, *arrays):
    """The concrete engine for ``engine`` and the arrays it will run on.

    ``"auto"`` gives ``"cupy"`` for CuPy arrays, else ``"numba"`` when Numba is available, else
    ``"numpy"``. An explicit engine that cannot run on these arrays raises.

    Raises
    ------
    ValueError
        Unknown engine, or an engine that does not fit the arrays' device.
    RuntimeError
        The requested package is not available.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; expected one of {ENGINES}")
    on_gpu = array_namespace(*arrays) is not np
    if engine == "auto":
        if on_gpu:
            return "cupy"
        return "numba" if _deps.numba_available() else "numpy"
    if engine == "numba":
        if on_gpu:
            raise ValueError("engine='numba' runs on the CPU but the inputs are CuPy arrays")
        if not _deps.numba_available():
            raise RuntimeError("engine='numba' requested but Numba is not available "
                               "(not installed, or KERNELKIP_NO_NUMBA is set)")
    if engine == "cupy":
        if not _deps.cupy_available():
            raise RuntimeError("engine='cupy' requested but CuPy with a CUDA device is not "
                               "available")
        if not on_gpu:
            raise ValueError("engine='cupy' needs CuPy arrays; move the inputs with "
                             "kernelkip.backend.to_device(x, cupy)")
    return engine
